"""The learned correspondence networks of MIDMs, weight-compatible with the official checkpoint.

Architecture (from the official ``models/midms.py``, ``models/generator.py``,
``models/architecture.py``, ``models/normalization.py``); every convolution has stride 1 and
runs on the latent grid ``(h, w)``. ``L`` = label channels, ``c`` = latent channels, ``N`` =
``width`` (256), ``e`` = ``encoder_width`` (64):

* ``real_enc`` (F_Y, exemplar encoder): latent (B, c) -> conv3x3 c->e -> IN -> LReLU(0.2) ->
  conv3x3 e->4e -> IN -> LReLU -> conv3x3 4e->8e -> IN -> SPADE residual block 8e->N whose
  SPADE layers are modulated by the input latent itself.
* ``seg_enc`` (F_X, condition encoder): the same layout from the L-channel label/edge map (the
  official ``input_semantics``, resized *nearest* to the latent grid; not a VAE latent), SPADE
  modulated by that map.
* ``iter_enc`` (F', iteration extractor): the F_Y layout on x0_hat (c channels), SPADE
  modulated by the N-channel output of ``seg_enc``. Its output is correlated with
  ``real_enc(exemplar)`` directly, without the head.
* ``layer`` (shared head): 4 residual blocks (reflection pad, conv3x3, IN, PReLU shared inside
  a block) on N + L channels: ``cat[features, label map]``; the condition side concatenates
  the condition map, the exemplar side its OWN label/edge map (``ref_semantics``).
  With ``maskmix=False`` nothing is concatenated (N channels).
* ``theta`` (condition side) / ``phi`` (exemplar side): 1x1 convs N + L -> N.

IN = ``InstanceNorm2d`` without affine parameters. The three encoder convs have no bias (the
official norm helper deletes it) and zero padding; the SPADE residual block and the SPADE
MLPs use reflection padding. SPADE normalises with PONO (positional normalisation: mean and
unbiased variance over channels at each position, eps 1e-5, no parameters), 128 hidden
channels, ``out = norm * (1 + gamma) + beta``.

Checkpoint keys. The official training script saves ``{"epoch", "state_dict", ...}`` where
``state_dict`` is the whole ``MIDMs`` module; the keys of these networks start with
``real_enc.``, ``seg_enc.``, ``iter_enc.``, ``layer.``, ``theta.``, ``phi.`` (the diffusion model
sits under ``diff_model.`` and is not part of this module). :class:`CorrespondenceNetworks`
has exactly those keys, with one difference: every spectral-normed conv is stored FOLDED, as a
plain ``weight`` equal to the official effective weight ``weight_orig / sigma`` with
``sigma = weight_u . (weight_orig.flatten(1) @ weight_v)``. The official checkpoint instead has
``<prefix>.weight_orig``, ``<prefix>.weight_u``, ``<prefix>.weight_v`` for these prefixes
(``E`` in real_enc, seg_enc, iter_enc; see :meth:`CorrespondenceNetworks.spectral_weight_keys`)::

    E.layer1.0   E.layer2.0   E.layer3.0
    E.G_middle_1.conv_0   E.G_middle_1.conv_1   E.G_middle_1.conv_s

Every other key (SPADE ``E.G_middle_1.norm_{0,1,s}.mlp_shared.1`` / ``mlp_gamma`` /
``mlp_beta``, ``layer.{0-3}.conv1`` / ``conv2`` / ``prelu``, ``theta``, ``phi``) is identical.

Label channels of the official datasets (``label_channels``): CelebA-HQ edges 15 (edge map, 13
per-part distance maps, part edges), DeepFashion 20 (pose RGB + 17 distance maps), LSUN church
/ ADE20k 151 (the official code adds one channel when ``label_nc == 150``). Latent channels:
3 for the official VQ-f4 autoencoder, 4 for Stable Diffusion's KL autoencoder. Latents are RAW
VAE latents (the official code calls ``first_stage_model.encode`` without a scale factor).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matchers import MatchFeatures, Matcher, MatchSide, require_images
from .validation import broadcast_batch, check_tensor

__all__ = [
    "CorrespondenceConfig",
    "CorrespondenceNetworks",
    "LearnedMatcher",
    "canny_edge_map",
    "config_from_state_dict",
    "init_networks",
    "load_networks",
    "positional_norm",
    "save_networks",
    "to_label_channels",
]

_FORMAT = "midms-correspondence"
_META_CONFIG = "midms_config"


@dataclass(frozen=True)
class CorrespondenceConfig:
    """Sizes of the correspondence networks; the defaults are the official CelebA-HQ VQ-f4 model.

    latent_channels: c, VAE latent channels (3 official VQ-f4, 4 Stable Diffusion).
    label_channels:  L, channels of the condition / exemplar label map (15 CelebA-HQ edges,
                     20 DeepFashion, 151 ADE20k).
    maskmix:         concatenate the label map before the shared head (official default True).
    width:           N, output feature channels (official 256).
    encoder_width:   e, first encoder conv width; the encoders go e -> 4e -> 8e (official 64).
    spade_hidden:    hidden channels of the SPADE MLPs (official 128).
    """

    latent_channels: int = 3
    label_channels: int = 15
    maskmix: bool = True
    width: int = 256
    encoder_width: int = 64
    spade_hidden: int = 128

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "maskmix":
                if not isinstance(value, bool):
                    raise ValueError(f"CorrespondenceConfig: 'maskmix' must be a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CorrespondenceConfig: '{f.name}' must be an integer >= 1, got {value!r}")
        if self.width < 2:
            # PONO normalises over channels; one channel has no variance
            raise ValueError(f"CorrespondenceConfig: 'width' must be >= 2, got {self.width}")

    @property
    def head_channels(self) -> int:
        """Channels entering ``layer``/``theta``/``phi``: N + L with maskmix, else N."""
        return self.width + (self.label_channels if self.maskmix else 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "CorrespondenceConfig.from_json") -> "CorrespondenceConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: config metadata is not valid JSON ({err})") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, dict) else data
            raise ValueError(f"{where}: config metadata must be an object with keys {sorted(known)}, got extra {extra}")
        return cls(**data)


def positional_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """PONO: normalise (B, C, H, W) over C at every position (unbiased variance, as official).

    Computed in float32 because a variance over hundreds of channels in half precision is coarse.
    """
    xf = x.float()
    mean = xf.mean(dim=1, keepdim=True)
    std = (xf.var(dim=1, keepdim=True) + eps).sqrt()
    return ((xf - mean) / std).to(x.dtype)


def _spectral(conv: nn.Conv2d) -> nn.Conv2d:
    # Tag for folding and init; official wraps these convs in torch spectral_norm.
    conv._midms_spectral = True  # type: ignore[attr-defined]
    return conv


class SPADE(nn.Module):
    """PONO, then a per-position scale and shift predicted from a modulation map.

    x: (B, C, h, w); modulation: (B, M, h', w'), resized nearest to (h, w). Returns (B, C, h, w).
    """

    def __init__(self, channels: int, modulation_channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(modulation_channels, hidden, 3), nn.ReLU()
        )
        self.pad = nn.ReflectionPad2d(1)
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        if modulation.shape[-2:] != x.shape[-2:]:
            modulation = F.interpolate(modulation, size=x.shape[-2:], mode="nearest")
        actv = self.pad(self.mlp_shared(modulation))
        return positional_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """Residual block with SPADE before each conv; learned 1x1 shortcut when widths differ.

    x: (B, fin, h, w), modulation: (B, M, h, w) -> (B, fout, h, w).
    """

    def __init__(self, fin: int, fout: int, modulation_channels: int, hidden: int) -> None:
        super().__init__()
        middle = min(fin, fout)
        self.pad = nn.ReflectionPad2d(1)
        self.conv_0 = _spectral(nn.Conv2d(fin, middle, 3))
        self.conv_1 = _spectral(nn.Conv2d(middle, fout, 3))
        self.norm_0 = SPADE(fin, modulation_channels, hidden)
        self.norm_1 = SPADE(middle, modulation_channels, hidden)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = _spectral(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, modulation_channels, hidden)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        skip = self.conv_s(self.norm_s(x, modulation)) if self.learned_shortcut else x
        dx = self.conv_0(self.pad(F.leaky_relu(self.norm_0(x, modulation), 0.2)))
        dx = self.conv_1(self.pad(F.leaky_relu(self.norm_1(dx, modulation), 0.2)))
        return skip + dx


class ShallowEncoder(nn.Module):
    """Three conv+IN layers then one SPADE residual block (official ShallowAdaptiveFeatureGenerator).

    x: (B, in_channels, h, w), modulation: (B, modulation_channels, h, w) -> (B, out_channels, h, w).
    """

    def __init__(self, in_channels: int, modulation_channels: int, out_channels: int, base: int, hidden: int) -> None:
        super().__init__()

        def conv_in(cin: int, cout: int) -> nn.Sequential:
            # bias dropped: instance norm right after removes it anyway (as in the official helper)
            return nn.Sequential(
                _spectral(nn.Conv2d(cin, cout, 3, padding=1, bias=False)), nn.InstanceNorm2d(cout, affine=False)
            )

        self.layer1 = conv_in(in_channels, base)
        self.layer2 = conv_in(base, 4 * base)
        self.layer3 = conv_in(4 * base, 8 * base)
        self.G_middle_1 = SPADEResBlock(8 * base, out_channels, modulation_channels, hidden)

    def forward(self, x: Tensor, modulation: Tensor) -> Tensor:
        h = self.layer1(x)
        h = self.layer2(F.leaky_relu(h, 0.2))
        # no activation after layer3: the SPADE block normalises it first
        h = self.layer3(F.leaky_relu(h, 0.2))
        return self.G_middle_1(h, modulation)


class ResidualBlock(nn.Module):
    """Reflection pad, conv3x3, IN, PReLU, twice, with identity skip. (B, C, h, w) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.padding1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3)
        self.bn1 = nn.InstanceNorm2d(channels)
        self.prelu = nn.PReLU()
        self.padding2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(channels, channels, 3)
        self.bn2 = nn.InstanceNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.prelu(self.bn1(self.conv1(self.padding1(x))))
        out = self.bn2(self.conv2(self.padding2(out)))
        return self.prelu(out + x)


class CorrespondenceNetworks(nn.Module):
    """real_enc, seg_enc, iter_enc, layer, theta, phi (see the module docstring for keys)."""

    def __init__(self, config: Optional[CorrespondenceConfig] = None) -> None:
        super().__init__()
        cfg = config if config is not None else CorrespondenceConfig()
        if not isinstance(cfg, CorrespondenceConfig):
            raise ValueError(f"CorrespondenceNetworks: 'config' must be a CorrespondenceConfig, got {type(cfg).__name__}")
        self.config = cfg
        c, lab, n, e, hid = cfg.latent_channels, cfg.label_channels, cfg.width, cfg.encoder_width, cfg.spade_hidden
        self.real_enc = ShallowEncoder(c, c, n, e, hid)
        self.seg_enc = ShallowEncoder(lab, lab, n, e, hid)
        self.iter_enc = ShallowEncoder(c, n, n, e, hid)
        self.layer = nn.Sequential(*(ResidualBlock(cfg.head_channels) for _ in range(4)))
        self.theta = nn.Conv2d(cfg.head_channels, n, 1)
        self.phi = nn.Conv2d(cfg.head_channels, n, 1)

    def spectral_weight_keys(self) -> list[str]:
        """Keys stored folded here and as ``weight_orig/_u/_v`` in the official checkpoint."""
        return [f"{name}.weight" for name, m in self.named_modules() if getattr(m, "_midms_spectral", False)]

    # Each method takes and returns (B, C, h, w) tensors on one latent grid.
    def encode_condition(self, label_map: Tensor) -> Tensor:
        """F_X: (B, L, h, w) label map -> (B, N, h, w)."""
        return self.seg_enc(label_map, label_map)

    def encode_exemplar(self, latent: Tensor) -> Tensor:
        """F_Y: (B, c, h, w) raw latent -> (B, N, h, w)."""
        return self.real_enc(latent, latent)

    def encode_iteration(self, x0_latent: Tensor, condition_encoding: Tensor) -> Tensor:
        """F': (B, c, h, w) x0_hat latent, modulated by (B, N, h, w) seg_enc output -> (B, N, h, w)."""
        return self.iter_enc(x0_latent, condition_encoding)

    def _head(self, features: Tensor, label_map: Tensor) -> Tensor:
        if self.config.maskmix:
            features = torch.cat([features, label_map], dim=1)
        return self.layer(features)

    def condition_head(self, condition_encoding: Tensor, label_map: Tensor) -> Tensor:
        """theta(layer(cat[F_X, condition map])): (B, N, h, w), (B, L, h, w) -> (B, N, h, w)."""
        return self.theta(self._head(condition_encoding, label_map))

    def exemplar_head(self, exemplar_encoding: Tensor, label_map: Tensor) -> Tensor:
        """phi(layer(cat[F_Y, exemplar's own map])): (B, N, h, w), (B, L, h, w) -> (B, N, h, w)."""
        return self.phi(self._head(exemplar_encoding, label_map))


def wrong_shapes(expected: dict, state: dict, name: Callable[[str], str] = lambda key: key) -> list[str]:
    """'name: got (...) vs expected (...)' for every key of both whose shape differs.

    expected: key -> shape tuple; state: key -> tensor; ``name`` shows a key as the user knows it.
    """
    return [f"{name(k)}: got {tuple(state[k].shape)} vs expected {expected[k]}"
            for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]


def _largest_singular_value(matrix: Tensor) -> Tensor:
    """Exact sigma_max via the eigenvalues of the smaller Gram matrix (a full SVD is much slower)."""
    m = matrix.double()
    m = m if m.shape[0] <= m.shape[1] else m.t()
    return torch.linalg.eigvalsh(m @ m.t())[-1].clamp_min(0).sqrt().to(matrix.dtype)


def _fill(module: nn.Module, generator: torch.Generator) -> None:
    """Uniform +-1/sqrt(fan_in) (PyTorch's default bounds) drawn from ``generator``; spectral
    convs are then divided by their largest singular value, like the official effective weight."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            bound = 1.0 / (m.weight[0].numel() ** 0.5)
            m.weight.uniform_(-bound, bound, generator=generator)
            if getattr(m, "_midms_spectral", False):
                m.weight.div_(_largest_singular_value(m.weight.flatten(1)))
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(m, nn.PReLU):
            m.weight.fill_(0.25)


def init_networks(
    config: Optional[CorrespondenceConfig] = None,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> CorrespondenceNetworks:
    """Randomly initialised networks, identical for identical ``seed`` (global RNG untouched)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"init_networks: 'seed' must be an int, got {type(seed).__name__}")
    with torch.device("meta"):
        nets = CorrespondenceNetworks(config)
    nets = nets.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _fill(nets, generator)
    return nets.to(device=device, dtype=dtype).eval()


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


#: what to do with the official (pickled) checkpoint: said wherever a file is not usable networks
CONVERSION_HINT = ("Convert the official MIDMs checkpoint with `python scripts/convert_official_checkpoint.py "
                   "<official .pth/.ckpt> <models/midms/name.safetensors>`")

# key prefixes of weights people keep in other model folders: (prefixes, description)
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


def _check_safetensors_path(where: str, path: Union[str, os.PathLike]) -> str:
    path = os.fspath(path)
    if not str(path).lower().endswith(".safetensors"):
        raise ValueError(
            f"{where}: 'path' must name a .safetensors file, got {path!r}; correspondence weights are only "
            "stored as safetensors (pickled torch.save files are never loaded)"
        )
    return path


def save_networks(path: Union[str, os.PathLike], nets: CorrespondenceNetworks) -> None:
    """Write ``nets`` to a .safetensors file, the config as JSON in the metadata."""
    path = _check_safetensors_path("save_networks", path)
    if not isinstance(nets, CorrespondenceNetworks):
        raise ValueError(f"save_networks: 'nets' must be CorrespondenceNetworks, got {type(nets).__name__}")
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in nets.state_dict().items()}
    save_file(tensors, path, metadata={"format": _FORMAT, _META_CONFIG: nets.config.to_json()})


def load_networks(
    path: Union[str, os.PathLike],
    map_location: Union[str, torch.device] = "cpu",
    config: Optional[CorrespondenceConfig] = None,
) -> CorrespondenceNetworks:
    """Strictly load networks from a .safetensors file written by :func:`save_networks`.

    The config comes from ``config``, else the file's metadata, else the weight shapes.
    Raises ValueError naming the file and any missing, unexpected or mis-shaped keys.
    """
    path = _check_safetensors_path("load_networks", path)
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
        text = metadata.get(_META_CONFIG)
        config = (
            CorrespondenceConfig.from_json(text, f"load_networks ({path!r})") if text else config_from_state_dict(state)
        )
    with torch.device("meta"):
        nets = CorrespondenceNetworks(config)
    expected = {k: tuple(v.shape) for k, v in nets.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = wrong_shapes(expected, state)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"wrong shapes [{'; '.join(shapes)}]")
        raise ValueError(f"load_networks: {path!r} does not match {config}: " + "; ".join(parts))
    nets.load_state_dict(state, strict=True, assign=True)
    return nets.to(map_location).eval()


# ----------------------------------------------------------------------------- label maps

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def to_label_channels(x: Tensor, channels: int, where: str = "to_label_channels", name: str = "x") -> Tensor:
    """Bring a (B, k, H, W) map to (B, channels, H, W).

    k == channels: unchanged. k == 3: BT.601 luminance, then tiled to ``channels`` (so an RGB
    edge/pose image fills every label channel with the same map). k == 1: tiled. Otherwise an
    error: such a map must come from a callable that produces the right channel count. Tiling is
    an approximation of the official multi-channel labels (e.g. CelebA-HQ's 15 channels:
    edges, per-part distance maps, part edges); supply a callable for a faithful layout.
    """
    k = x.shape[1]
    if k == channels:
        return x
    if k == 3:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
        k = 1
    if k == 1:
        return x.expand(-1, channels, -1, -1)
    raise ValueError(
        f"{where}: '{name}' has {x.shape[1]} channels; expected {channels} (the configured label channels), 3 or 1"
    )


def label_map_on_grid(label_map: Tensor, channels: int, grid: tuple[int, int], where: str = "label_map_on_grid",
                      name: str = "label_map") -> Tensor:
    """A (B, k, H, W) map as the networks read it: :func:`to_label_channels`, then resized
    nearest to the latent grid (as official). The matcher and the trainer share it."""
    return F.interpolate(to_label_channels(label_map, channels, where, name), size=grid, mode="nearest")


def canny_edge_map(image: Tensor, low_threshold: float = 0.1, high_threshold: float = 0.2) -> Tensor:
    """Binary Canny edges of (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) in {0, 1} (kornia).

    The default exemplar map: the official edge datasets build the exemplar's label from its
    own edges (part outlines plus Canny for the background), which a plain image only allows
    approximating with Canny.
    """
    import kornia

    _, edges = kornia.filters.canny(image.float(), low_threshold=low_threshold, high_threshold=high_threshold)
    return edges.to(image.dtype)


# ----------------------------------------------------------------------------- matcher

MapFn = Callable[[Tensor], Tensor]


class LearnedMatcher(Matcher):
    """Features from the (official or converted) MIDMs correspondence networks.

    condition_map: image (B, 3, H, W) in [0, 1] -> (B, k, H', W') condition label map; default
                   the image itself (an edge/pose drawing). k is L, 3 or 1 (see
                   :func:`to_label_channels`); the map is resized nearest to the latent grid.
    exemplar_map:  the same for the exemplar's OWN label map; default :func:`canny_edge_map`.

    Features are returned as the networks produce them; centring and L2 normalisation over
    channels are the correlation module's job. Latents are raw VAE latents (as official).
    Runs without autograd, on the networks' device and dtype.
    """

    name = "learned"

    def __init__(
        self,
        nets: CorrespondenceNetworks,
        condition_map: Optional[MapFn] = None,
        exemplar_map: Optional[MapFn] = None,
    ) -> None:
        if not isinstance(nets, CorrespondenceNetworks):
            raise ValueError(f"LearnedMatcher: 'nets' must be CorrespondenceNetworks, got {type(nets).__name__}")
        for arg, fn in (("condition_map", condition_map), ("exemplar_map", exemplar_map)):
            if fn is not None and not callable(fn):
                raise ValueError(f"LearnedMatcher: '{arg}' must be callable (image -> map) or None, got {type(fn).__name__}")
        self.nets = nets
        self.condition_map = condition_map if condition_map is not None else (lambda image: image)
        self.exemplar_map = exemplar_map if exemplar_map is not None else canny_edge_map

    def _param(self) -> Tensor:
        return next(self.nets.parameters())

    def _check_latent(self, name: str, latent: Tensor) -> None:
        cfg = self.nets.config
        if latent.shape[1] != cfg.latent_channels:
            raise ValueError(
                f"LearnedMatcher.bind: '{name}' has {latent.shape[1]} channels, but the networks expect "
                f"{cfg.latent_channels}-channel latents (3 = VQ-f4, 4 = Stable Diffusion)"
            )
        if min(latent.shape[-2:]) < 2:
            raise ValueError(f"LearnedMatcher.bind: '{name}' grid must be at least 2x2, got {tuple(latent.shape[-2:])}")

    def _label_map(self, name: str, fn: MapFn, image: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, 3, H, W) image -> (B, L, h, w) label map on the latent grid (nearest, as official)."""
        out = fn(image)
        check_tensor("LearnedMatcher.bind", name, out, 4, "(B, k, H, W)")
        if out.shape[0] != image.shape[0]:
            raise ValueError(f"LearnedMatcher.bind: '{name}' returned batch {out.shape[0]}, expected {image.shape[0]}")
        return label_map_on_grid(out, self.nets.config.label_channels, grid, "LearnedMatcher.bind", name)

    def bind(self, condition: MatchSide, exemplar: MatchSide) -> MatchFeatures:
        require_images("LearnedMatcher.bind", condition, exemplar,
                       "the learned networks read the label/edge map derived from it")
        for arg, side in (("condition", condition), ("exemplar", exemplar)):
            self._check_latent(f"{arg}.latent", side.latent)
        p = self._param()
        like = dict(device=p.device, dtype=p.dtype)
        nets = self.nets
        with torch.no_grad():
            cond_grid = condition.grid
            cond_map = self._label_map("condition_map", self.condition_map, condition.image.to(**like), cond_grid)
            ex_map = self._label_map("exemplar_map", self.exemplar_map, exemplar.image.to(**like), exemplar.grid)
            cond_enc = nets.encode_condition(cond_map)
            ex_enc = nets.encode_exemplar(exemplar.latent.to(**like))
            cond_feat = nets.condition_head(cond_enc, cond_map)
            ex_feat = nets.exemplar_head(ex_enc, ex_map)

        def x0_features(x0_latent: Tensor) -> Tensor:
            """(B, c, hx, wx) raw x0_hat latent -> (B, N, hx, wx) F' features."""
            where = "LearnedMatcher.x0_features"
            check_tensor(where, "x0_latent", x0_latent, 4, "(B, c, h, w)")
            if x0_latent.shape[1] != nets.config.latent_channels or tuple(x0_latent.shape[-2:]) != cond_grid:
                raise ValueError(
                    f"{where}: 'x0_latent' must have shape (B, {nets.config.latent_channels}, {cond_grid[0]}, "
                    f"{cond_grid[1]}) (latent channels, condition grid), got {tuple(x0_latent.shape)}"
                )
            batch = broadcast_batch(where, x0_latent=x0_latent, condition=cond_enc)
            with torch.no_grad():
                x0 = x0_latent.to(**like).expand(batch, -1, -1, -1)
                return nets.encode_iteration(x0, cond_enc.expand(batch, -1, -1, -1))

        return MatchFeatures(condition=cond_feat, exemplar=ex_feat, exemplar_in_domain=ex_enc, x0_features=x0_features)
