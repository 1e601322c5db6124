"""Correspondence networks as files: safetensors save/load, the config from weight shapes, and
the key-by-key mismatch report that the loader and the official-checkpoint converter share.

Only safetensors files are ever loaded here (pickled ``torch.save`` files can run code); the
config travels as JSON in the file's metadata. A file that holds something else (a U-Net, a
LoRA, a VAE, ...) is named from its keys before any tensor is read
(:func:`describe_foreign_weights`), so a 2 GB checkpoint dropped into the wrong folder costs
nothing and says where it belongs. The official (pickled) training checkpoint is read by
:mod:`midms_core.networks.convert` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ..atomic_files import atomic_write
from .model import CorrespondenceConfig, CorrespondenceNetworks

__all__ = [
    "CONVERSION_HINT",
    "NETWORK_PREFIXES",
    "ForeignWeightsError",
    "KeyMismatch",
    "config_from_state_dict",
    "describe_foreign_weights",
    "expected_shapes",
    "load_networks",
    "read_networks_file",
    "save_networks",
    "write_networks_file",
]

FILE_FORMAT = "midms-correspondence"  # the "format" metadata of a networks file
META_CONFIG = "midms_config"  # the metadata key holding the architecture (JSON)

#: what to do with the official (pickled) checkpoint: said wherever a file is not usable networks
CONVERSION_HINT = ("Convert the official MIDMs checkpoint with `python scripts/convert_official_checkpoint.py "
                   "<official .pth/.ckpt> <models/midms/name.safetensors>`")


#: key prefixes of the networks' modules (the official checkpoint's too, less its training state)
NETWORK_PREFIXES = ("real_enc.", "seg_enc.", "iter_enc.", "layer.", "theta.", "phi.")

# Weights people keep in other model folders, tried in this order (first match wins):
# (prefixes, description). ControlNet files may carry U-Net keys, full checkpoints carry
# transformer keys, so those two come before the bare-model kinds.
_FOREIGN_KINDS = (
    (("control_model.", "input_hint_block.", "controlnet_cond_embedding.", "controlnet_"),
     "a ControlNet (it belongs in models/controlnet)"),
    (("first_stage_model.", "cond_stage_model.", "conditioner.embedders.", "text_encoders.", "vae."),
     "a Stable Diffusion / Flux / SD3 checkpoint (the model with its VAE and text encoder; it belongs in models/checkpoints)"),
    (("double_blocks.", "single_blocks.", "joint_blocks.", "model.diffusion_model.double_blocks.",
      "model.diffusion_model.joint_blocks."),
     "a diffusion transformer (Flux / SD3 weights; they belong in models/diffusion_models)"),
    (("model.diffusion_model.", "input_blocks.", "middle_block.", "output_blocks.", "down_blocks.", "up_blocks.",
      "mid_block."),
     "a diffusion U-Net (it belongs in models/diffusion_models or models/unet)"),
    (("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"),
     "a LoRA (it belongs in models/loras)"),
    (("encoder.down.", "decoder.up.", "encoder.conv_in.", "decoder.conv_in."),
     "a VAE (it belongs in models/vae)"),
    (("text_model.", "transformer.text_model.", "text_projection", "encoder.block.", "shared.weight"),
     "a text encoder (it belongs in models/clip or models/text_encoders)"),
)
_LORA_MARKERS = (".lora_up.", ".lora_down.", ".lora_A.", ".lora_B.")


class ForeignWeightsError(ValueError):
    """A weights file that holds something other than MIDMs correspondence networks."""


def describe_foreign_weights(keys: Sequence[str]) -> Optional[str]:
    """What a weights file holds when it is NOT MIDMs correspondence networks, judged by its keys.

    Returns None when any key belongs to the networks (a mismatch is then reported key by key),
    else a short description: "a Stable Diffusion checkpoint (...)", "a LoRA (...)", ...,
    "an empty safetensors file (...)" or "an unrelated safetensors file (keys such as ...)".
    """
    keys = list(keys)
    if any(k.startswith(NETWORK_PREFIXES) for k in keys):
        return None
    if not keys:
        return "an empty safetensors file (no tensors)"
    if any(marker in k for k in keys for marker in _LORA_MARKERS):
        return "a LoRA (it belongs in models/loras)"
    for prefixes, description in _FOREIGN_KINDS:
        if any(k.startswith(prefixes) for k in keys):
            return description
    sample = ", ".join(repr(k) for k in sorted(keys)[:3])
    return f"an unrelated safetensors file (keys such as {sample})"

# what to do when a file has the networks' keys but not all of them, or other shapes
_LOADER_HINT = ("Files for load_networks are written by the converter or the trainer (scripts/train_midms.py); "
                "write this one again. " + CONVERSION_HINT)


def _as_is(key: str) -> Sequence[str]:
    return (key,)


@dataclass(frozen=True)
class KeyMismatch:
    """How a file's tensors differ, key by key, from the networks of one config; falsy when none.

    missing:      keys the networks need that the file lacks, as the file would spell them;
    unexpected:   keys of the file that the networks do not have;
    wrong_shapes: ``"key: got (...) vs expected (...)"`` for keys on both sides;
    other:        further findings of a caller, already worded (the converter's spectral-norm
                  checks), listed before the shapes.

    :func:`load_networks` and :func:`midms_core.networks.convert.convert_official_state_dict` both report
    through it, so one missing key reads the same from either.
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    wrong_shapes: tuple[str, ...] = ()
    other: tuple[str, ...] = ()

    @classmethod
    def compare(
        cls,
        expected: Mapping[str, tuple[int, ...]],
        state: Mapping[str, Tensor],
        missing_as: Callable[[str], Sequence[str]] = _as_is,
        present_as: Callable[[str], Sequence[str]] = _as_is,
    ) -> "KeyMismatch":
        """Compare ``state`` (key -> tensor, the file's) with ``expected`` (key -> shape, the networks').

        missing_as / present_as: the file's name(s) for a networks key it lacks / has, for files
        that spell keys differently (the official checkpoint keeps a spectral-norm conv as a
        ``weight_orig/_u/_v`` triple); a shape is reported under the first name.
        """
        missing = sorted(name for k in set(expected) - set(state) for name in missing_as(k))
        unexpected = sorted(name for k in set(state) - set(expected) for name in present_as(k))
        shapes = [f"{present_as(k)[0]}: got {tuple(state[k].shape)} vs expected {tuple(expected[k])}"
                  for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k])]
        return cls(tuple(missing), tuple(unexpected), tuple(shapes))

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shapes or self.other)

    def __str__(self) -> str:
        """``missing keys [...]; unexpected keys [...]; <other>; wrong shapes [...]``, the parts that apply."""
        parts = []
        if self.missing:
            parts.append(f"missing keys {list(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys {list(self.unexpected)}")
        parts.extend(self.other)
        if self.wrong_shapes:
            parts.append(f"wrong shapes [{'; '.join(self.wrong_shapes)}]")
        return "; ".join(parts)

    def error(self, where: str, source: str, config: CorrespondenceConfig, hint: str) -> ValueError:
        """``"<where>: <source> does not match <config>: <listing>. <hint>"``; source names the
        file (or says what was compared), hint says what to do."""
        return ValueError(f"{where}: {source} does not match {config}: {self}. {hint}")


def expected_shapes(nets: CorrespondenceNetworks) -> dict[str, tuple[int, ...]]:
    """key -> shape of the networks' state dict (what :meth:`KeyMismatch.compare` expects)."""
    return {k: tuple(v.shape) for k, v in nets.state_dict().items()}


def config_from_state_dict(state_dict: dict[str, Tensor]) -> CorrespondenceConfig:
    """Infer the config from weight shapes (for files without config metadata)."""
    try:
        real = state_dict["real_enc.layer1.0.weight"]
        seg = state_dict["seg_enc.layer1.0.weight"]
        theta = state_dict["theta.weight"]
        hidden = state_dict["real_enc.G_middle_1.norm_0.mlp_shared.1.weight"]
    except KeyError as err:
        raise ValueError(f"config_from_state_dict: 'state_dict' lacks key {err.args[0]!r} needed to infer the sizes") from None
    width = int(theta.shape[0])
    return CorrespondenceConfig(
        latent_channels=int(real.shape[1]),
        label_channels=int(seg.shape[1]),
        maskmix=int(theta.shape[1]) != width,
        width=width,
        encoder_width=int(real.shape[0]),
        spade_hidden=int(hidden.shape[0]),
    )


def _check_safetensors_path(where: str, path: Union[str, os.PathLike]) -> str:
    path = os.fspath(path)
    if not str(path).lower().endswith(".safetensors"):
        raise ValueError(
            f"{where}: 'path' must name a .safetensors file, got {path!r}; correspondence weights are only "
            "stored as safetensors (pickled torch.save files are never loaded)"
        )
    return path


def save_networks(path: Union[str, os.PathLike], nets: CorrespondenceNetworks) -> None:
    """Write ``nets`` to a .safetensors file (atomically), the config as JSON in the metadata."""
    path = _check_safetensors_path("save_networks", path)
    if not isinstance(nets, CorrespondenceNetworks):
        raise ValueError(f"save_networks: 'nets' must be CorrespondenceNetworks, got {type(nets).__name__}")
    with atomic_write(path) as tmp:
        write_networks_file(tmp, nets.state_dict(), nets.config)


def write_networks_file(path: Union[str, os.PathLike], state: Mapping[str, Tensor],
                        config: CorrespondenceConfig) -> None:
    """The networks file format: ``state`` (key -> tensor, any device) as safetensors, the
    config as JSON in the metadata. Written where ``path`` says, as is: the callers
    (:func:`save_networks`, the converter, the trainer's folded weights) pass the temporary
    path of :func:`midms_core.atomic_files.atomic_write`."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"format": FILE_FORMAT, META_CONFIG: config.to_json()})


def load_networks(
    path: Union[str, os.PathLike],
    map_location: Union[str, torch.device] = "cpu",
    config: Optional[CorrespondenceConfig] = None,
) -> CorrespondenceNetworks:
    """Strictly load networks from a .safetensors file written by :func:`save_networks`.

    The config comes from ``config``, else the file's metadata, else the weight shapes.
    Raises ValueError naming the file and any missing, unexpected or mis-shaped keys.
    """
    return read_networks_file(_check_safetensors_path("load_networks", path), map_location, config)


def read_networks_file(
    path: Union[str, os.PathLike],
    map_location: Union[str, torch.device] = "cpu",
    config: Optional[CorrespondenceConfig] = None,
) -> CorrespondenceNetworks:
    """:func:`load_networks` of any file name (the converter reads its temporary file back
    before it takes the .safetensors name); errors are worded as load_networks's."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"load_networks: 'path' {path!r} does not exist or is not a file")
    from safetensors import safe_open

    name = os.path.basename(path)  # what a user sees in a list; the folder may be a host path
    if os.path.getsize(path) == 0:
        raise ForeignWeightsError(f"load_networks: {name!r} is an empty file (0 bytes). {CONVERSION_HINT}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            # the keys first: a foreign file (e.g. a 2 GB diffusion checkpoint) is named, not read
            foreign = describe_foreign_weights(keys)
            if foreign is None:
                state = {k: f.get_tensor(k) for k in keys}
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise ForeignWeightsError(
            f"load_networks: {name!r} is not a readable safetensors file ({err}); only safetensors weights "
            f"are accepted. {CONVERSION_HINT}"
        ) from None
    if foreign is not None:
        raise ForeignWeightsError(
            f"load_networks: {name!r} looks like {foreign}, not MIDMs correspondence networks. "
            f"The midms model folder takes the paper's networks as safetensors: {CONVERSION_HINT}"
        )
    if config is None:
        text = metadata.get(META_CONFIG)
        config = (
            CorrespondenceConfig.from_json(text, f"load_networks ({path!r})") if text else config_from_state_dict(state)
        )
    with torch.device("meta"):
        nets = CorrespondenceNetworks(config)
    mismatch = KeyMismatch.compare(expected_shapes(nets), state)
    if mismatch:
        raise mismatch.error("load_networks", repr(path), config, _LOADER_HINT)
    nets.load_state_dict(state, strict=True, assign=True)
    return nets.to(map_location).eval()

