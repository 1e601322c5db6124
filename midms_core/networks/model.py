"""The learned correspondence networks of MIDMs, weight-compatible with the official checkpoint.

This module is the architecture and its random initialisation. Beside it:
:mod:`midms_core.networks.files` (safetensors save/load, config from weight shapes, key
mismatch reports), :mod:`midms_core.networks.label_maps` (the label/edge maps the networks read),
:mod:`midms_core.matchers.learned` (the networks as a :class:`~midms_core.matchers.base.Matcher`) and
:mod:`midms_core.networks.convert` (the official checkpoint).

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
from dataclasses import asdict, dataclass, fields
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CorrespondenceConfig",
    "CorrespondenceNetworks",
    "init_networks",
    "positional_norm",
]


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

