"""Convert the official MIDMs training checkpoint into this package's correspondence networks.

The official training script saves ``{"epoch", "state_dict", "optimizer", "scheduler",
"best_loss"}`` with ``state_dict`` the whole ``MIDMs`` module. Only the keys under
``real_enc.``, ``seg_enc.``, ``iter_enc.``, ``layer.``, ``theta.``, ``phi.`` belong to the
correspondence networks; everything else (the U-Net and autoencoder under ``diff_model.``, a
``copied_diff_model.``, ...) is ignored and counted in the report.

The official spectral-normed convs (``torch.nn.utils.spectral_norm``) store
``<p>.weight_orig``, ``<p>.weight_u``, ``<p>.weight_v``; here they are folded into one plain
``<p>.weight`` equal to the weight spectral_norm uses in eval mode (no power iteration)::

    sigma  = weight_u . (weight_orig.flatten(1) @ weight_v)
    weight = weight_orig / sigma

Pickled files are only read with ``torch.load(..., weights_only=True)``; a checkpoint that
needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ..atomic_files import atomic_write
from .files import (
    NETWORK_PREFIXES,
    KeyMismatch,
    config_from_state_dict,
    expected_shapes,
    read_networks_file,
    write_networks_file,
)
from .model import CorrespondenceConfig, CorrespondenceNetworks

__all__ = [
    "NETWORK_PREFIXES",
    "ConversionReport",
    "convert_file",
    "convert_official_state_dict",
    "fold_spectral_norm",
    "load_official_checkpoint",
]

_SPECTRAL_SUFFIXES = (".weight_orig", ".weight_u", ".weight_v")
_PICKLE_EXTS = (".ckpt", ".pth", ".pt")
_SAFETENSORS_EXT = ".safetensors"
# what to do when the network keys of a checkpoint are not the official model's
_CONVERTER_HINT = ("Convert the checkpoint as the official training script saved it (its networks' spectral-norm "
                   "convs as weight_orig/_u/_v, nothing renamed or dropped); a 'config' given explicitly must be "
                   "the one it was trained with")


@dataclass
class ConversionReport:
    """What :func:`convert_official_state_dict` did.

    kept:     network tensors copied unchanged.
    folded:   spectral-norm triples (weight_orig/_u/_v) folded into one ``weight``.
    ignored:  tensors outside the network prefixes (``diff_model.*`` ...), skipped.
    ignored_prefixes: count of ignored keys per top-level module name.
    other_entries: top-level entries of the checkpoint besides ``state_dict`` (epoch, optimizer, ...).
    epoch:    the checkpoint's ``epoch`` when it has one.
    stripped_module_prefix: whether a leading ``module.`` (DataParallel/DDP) was removed.
    """

    config: CorrespondenceConfig
    kept: int = 0
    folded: int = 0
    ignored: int = 0
    ignored_prefixes: dict[str, int] = field(default_factory=dict)
    other_entries: list[str] = field(default_factory=list)
    epoch: Optional[int] = None
    stripped_module_prefix: bool = False

    @property
    def converted(self) -> int:
        """Tensors in the converted state dict."""
        return self.kept + self.folded

    def summary(self) -> str:
        lines = [
            f"config: {self.config}",
            f"network tensors: {self.converted} ({self.kept} kept, {self.folded} spectral-norm triples folded)",
            f"ignored non-network tensors: {self.ignored}"
            + (
                " (" + ", ".join(f"{k}.*: {v}" for k, v in sorted(self.ignored_prefixes.items())) + ")"
                if self.ignored_prefixes
                else ""
            ),
        ]
        if self.epoch is not None:
            lines.append(f"checkpoint epoch: {self.epoch}")
        if self.other_entries:
            lines.append(f"other checkpoint entries (not used): {', '.join(self.other_entries)}")
        if self.stripped_module_prefix:
            lines.append("stripped a leading 'module.' from the keys")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def fold_spectral_norm(weight_orig: Tensor, weight_u: Tensor, weight_v: Tensor) -> Tensor:
    """The eval-mode weight of ``torch.nn.utils.spectral_norm``: ``weight_orig / (u . W v)``.

    weight_orig: (out, ...) with W = weight_orig.flatten(1) of shape (out, k);
    weight_u: (out,); weight_v: (k,). Computed in float64, returned in weight_orig's dtype.
    """
    for name, t in (("weight_orig", weight_orig), ("weight_u", weight_u), ("weight_v", weight_v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"fold_spectral_norm: '{name}' must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"fold_spectral_norm: '{name}' must be floating point, got {t.dtype}")
    if weight_orig.dim() < 2:
        raise ValueError(f"fold_spectral_norm: 'weight_orig' must have >= 2 dims, got shape {tuple(weight_orig.shape)}")
    matrix = weight_orig.detach().to(device="cpu", dtype=torch.float64).flatten(1)
    out, k = matrix.shape
    if tuple(weight_u.shape) != (out,) or tuple(weight_v.shape) != (k,):
        raise ValueError(
            f"fold_spectral_norm: for 'weight_orig' of shape {tuple(weight_orig.shape)} expected 'weight_u' ({out},) "
            f"and 'weight_v' ({k},), got {tuple(weight_u.shape)} and {tuple(weight_v.shape)}"
        )
    u = weight_u.detach().to(device="cpu", dtype=torch.float64)
    v = weight_v.detach().to(device="cpu", dtype=torch.float64)
    sigma = torch.dot(u, torch.mv(matrix, v))
    if not torch.isfinite(sigma) or sigma == 0:
        raise ValueError(f"fold_spectral_norm: sigma = u . (W v) is {sigma.item()}; cannot fold")
    folded = (weight_orig.detach().to(device="cpu", dtype=torch.float64) / sigma).to(weight_orig.dtype)
    return folded.to(weight_orig.device)


def _network_prefix(key: str) -> Optional[str]:
    for prefix in NETWORK_PREFIXES:
        if key.startswith(prefix):
            return prefix
    return None


def _unwrap(checkpoint: Mapping) -> tuple[Mapping, list[str], Optional[int]]:
    """(state dict, other top-level entries, epoch) of a checkpoint or bare state dict."""
    inner = checkpoint.get("state_dict") if "state_dict" in checkpoint else None
    if isinstance(inner, Mapping):
        others = sorted(str(k) for k in checkpoint if k != "state_dict")
        epoch = checkpoint.get("epoch")
        epoch = int(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) else None
        return inner, others, epoch
    if "state_dict" in checkpoint:
        raise ValueError(
            f"convert_official_state_dict: the checkpoint's 'state_dict' entry is a {type(inner).__name__}, not a dict"
        )
    return checkpoint, [], None


def convert_official_state_dict(
    state_dict: Mapping[str, Any], config: Optional[CorrespondenceConfig] = None, source: str = "the checkpoint"
) -> tuple[dict[str, Tensor], CorrespondenceConfig, ConversionReport]:
    """Official checkpoint (or its bare state dict) -> (state dict for CorrespondenceNetworks, config, report).

    Keeps the network prefixes, folds every spectral-norm triple, infers the config from the
    shapes unless ``config`` is given, and raises ValueError naming every missing, unexpected
    or mis-shaped key under the network prefixes, in the official names (a :class:`KeyMismatch`,
    worded as :func:`load_networks` words it). ``source`` names the checkpoint in that error
    (:func:`convert_file` passes the file).
    """
    where = "convert_official_state_dict"
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{where}: expected a checkpoint dict or state dict, got {type(state_dict).__name__}")
    if config is not None and not isinstance(config, CorrespondenceConfig):
        raise ValueError(f"{where}: 'config' must be a CorrespondenceConfig or None, got {type(config).__name__}")
    sd, others, epoch = _unwrap(state_dict)
    network, ignored, stripped = _network_keys(sd, where)
    converted, folded_from, stray = _fold_triples(network, where)
    if config is None:
        try:
            config = config_from_state_dict(converted)
        except ValueError as err:
            raise ValueError(f"{where}: cannot infer the network sizes ({err})") from None
    mismatch = _official_mismatch(converted, folded_from, stray, config)
    if mismatch:
        raise mismatch.error(where, source, config, _CONVERTER_HINT)
    report = ConversionReport(
        config=config,
        kept=len(converted) - len(folded_from),
        folded=len(folded_from),
        ignored=sum(ignored.values()),
        ignored_prefixes=ignored,
        other_entries=others,
        epoch=epoch,
        stripped_module_prefix=stripped,
    )
    return converted, config, report


def _network_keys(sd: Mapping, where: str) -> tuple[dict[str, Tensor], dict[str, int], bool]:
    """(the tensors under the network prefixes, with a leading ``module.`` stripped; the count
    of other keys per top-level module name; whether a ``module.`` was stripped)."""
    stripped = False
    network: dict[str, Tensor] = {}
    ignored: dict[str, int] = {}
    for raw_key, value in sd.items():
        if not isinstance(raw_key, str):
            raise ValueError(f"{where}: state dict keys must be strings, got {raw_key!r}")
        key = raw_key
        if key.startswith("module."):
            key, stripped = key[len("module."):], True
        if _network_prefix(key) is None:
            top = key.split(".", 1)[0]
            ignored[top] = ignored.get(top, 0) + 1
            continue
        if not isinstance(value, Tensor):
            raise ValueError(f"{where}: network key {raw_key!r} holds a {type(value).__name__}, not a tensor")
        if key in network:
            raise ValueError(f"{where}: key {key!r} occurs twice (with and without the 'module.' prefix)")
        network[key] = value
    if not network:
        raise ValueError(
            f"{where}: no keys under {list(NETWORK_PREFIXES)}; this is not an official MIDMs training checkpoint "
            f"(top-level modules found: {sorted(ignored)[:20]})"
        )
    return network, ignored, stripped


def _fold_triples(network: dict[str, Tensor], where: str) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """(the converted state: every spectral triple folded into ``<p>.weight``, the other keys
    as they are; converted key -> the official ``weight_orig`` key it was folded from; the
    stray ``weight_u`` / ``weight_v`` keys without their ``weight_orig``). A triple is named by
    its weight_orig; every broken triple is reported in one ValueError."""
    converted: dict[str, Tensor] = {}
    used: set[str] = set()
    folded_from: dict[str, str] = {}
    problems: list[str] = []
    for key in sorted(network):
        if not key.endswith(".weight_orig"):
            continue
        base = key[: -len(".weight_orig")]
        u_key, v_key = base + ".weight_u", base + ".weight_v"
        absent = [k for k in (u_key, v_key) if k not in network]
        if absent:
            problems.append(f"missing keys {absent} (spectral-norm triple of {key!r})")
            continue
        if base + ".weight" in network:
            problems.append(f"both {base + '.weight'!r} and the spectral-norm triple {key!r} are present")
            continue
        try:
            converted[base + ".weight"] = fold_spectral_norm(network[key], network[u_key], network[v_key])
        except ValueError as err:
            problems.append(f"cannot fold {key!r}: {err}")
            continue
        folded_from[base + ".weight"] = key
        used.update((key, u_key, v_key))
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    for key, value in network.items():
        if key not in used and not key.endswith(_SPECTRAL_SUFFIXES):
            converted[key] = value
            used.add(key)
    return converted, folded_from, sorted(set(network) - used)


def _official_mismatch(converted: dict[str, Tensor], folded_from: dict[str, str], stray: list[str],
                       config: CorrespondenceConfig) -> KeyMismatch:
    """How the converted state differs from the networks of ``config``, in the checkpoint's
    names (a spectral conv as its weight_orig/_u/_v triple); falsy when it matches."""
    with torch.device("meta"):
        template = CorrespondenceNetworks(config)
    expected = expected_shapes(template)
    spectral = set(template.spectral_weight_keys())

    def official_names(key: str) -> list[str]:
        """The checkpoint's names for a key the networks have: a spectral conv is a triple."""
        base = key[: -len(".weight")]
        return [base + s for s in _SPECTRAL_SUFFIXES] if key in spectral else [key]

    def names_in_checkpoint(key: str) -> list[str]:
        """The checkpoint's names for a converted key: the triple it was folded from, else itself."""
        if key not in folded_from:
            return [key]
        base = folded_from[key][: -len(".weight_orig")]
        return [base + s for s in _SPECTRAL_SUFFIXES]

    mismatch = KeyMismatch.compare(expected, converted, missing_as=official_names, present_as=names_in_checkpoint)
    # A spectral conv must come as a triple; a plain weight there (or a triple elsewhere) is not official.
    unfolded = sorted(k for k in spectral & set(converted) if k not in folded_from)
    wrongly_folded = sorted(folded_from[k] for k in set(folded_from) & set(expected) if k not in spectral)
    other = []
    if unfolded:
        other.append(f"plain weights where the official checkpoint has spectral-norm weight_orig/_u/_v: {unfolded}")
    if wrongly_folded:
        other.append(f"spectral-norm triples on convs that have none in the official model: {wrongly_folded}")
    return replace(mismatch, unexpected=tuple(sorted(mismatch.unexpected + tuple(stray))), other=tuple(other))


def load_official_checkpoint(path: Union[str, os.PathLike]) -> Mapping[str, Any]:
    """Read a .ckpt/.pth/.pt file with ``torch.load(weights_only=True)`` or a .safetensors file.

    Never unpickles arbitrary objects: a file that weights_only loading refuses raises ValueError.
    """
    where = "load_official_checkpoint"
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{where}: {path!r} does not exist or is not a file")
    lower = str(path).lower()
    if lower.endswith(_SAFETENSORS_EXT):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{where}: {path!r} is not a readable safetensors file ({err})") from None
    if not lower.endswith(_PICKLE_EXTS):
        raise ValueError(
            f"{where}: {path!r} must be a .ckpt, .pth, .pt or .safetensors file"
        )
    try:
        try:
            # mmap avoids holding the whole training checkpoint (U-Net, optimizer) in memory
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as err:
        # torch's message names the refused global ("Unsupported global: GLOBAL x.Y ..."); keep that part
        detail = next((line.strip() for line in str(err).splitlines() if "global" in line.lower()), "")
        detail = detail.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
        raise ValueError(
            f"{where}: {path!r} contains pickled objects other than tensors and plain containers, so "
            "torch.load(weights_only=True) refuses it; only weights_only-loadable checkpoints are accepted "
            "(arbitrary unpickling can run code). If you trust the file, re-save just its tensors, e.g. "
            "torch.save(ckpt['state_dict'], 'weights.pth'), and convert that."
            + (f" ({detail})" if detail else "")
        ) from None
    except Exception as err:
        raise ValueError(f"{where}: {path!r} is not a readable torch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: {path!r} holds a {type(data).__name__}, expected a checkpoint dict")
    return data


def convert_file(
    src: Union[str, os.PathLike],
    dst: Union[str, os.PathLike],
    force: bool = False,
    config: Optional[CorrespondenceConfig] = None,
) -> ConversionReport:
    """Convert the official checkpoint ``src`` into a .safetensors file ``dst`` for :func:`load_networks`.

    Refuses to overwrite an existing ``dst`` (FileExistsError) unless ``force``; writes a temp
    file in dst's folder (:func:`midms_core.atomic_files.atomic_write`), checks it loads, then
    renames it, so ``dst`` is never half-written.
    """
    where = "convert_file"
    src, dst = os.fspath(src), os.fspath(dst)
    if not str(dst).lower().endswith(_SAFETENSORS_EXT):
        raise ValueError(f"{where}: 'dst' must name a .safetensors file, got {dst!r}")
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"{where}: 'src' and 'dst' are the same file {src!r}")
    if os.path.exists(dst) and not force:
        raise FileExistsError(f"{where}: {dst!r} already exists; pass force=True (--force) to overwrite it")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise ValueError(f"{where}: the folder of 'dst' {folder!r} does not exist")

    converted, config, report = convert_official_state_dict(load_official_checkpoint(src), config, repr(src))
    nets = CorrespondenceNetworks(config)
    nets.load_state_dict(converted, strict=True)
    nets.eval()

    try:
        with atomic_write(dst, overwrite=force) as tmp:
            write_networks_file(tmp, nets.state_dict(), nets.config)
            read_networks_file(tmp)  # the file reads back strictly before it takes dst's name
    except FileExistsError:  # dst appeared meanwhile: never overwritten without force
        raise FileExistsError(f"{where}: {dst!r} already exists; pass force=True (--force) to overwrite it") from None
    return report
