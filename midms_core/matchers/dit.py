"""Correspondence features from a diffusion transformer block (Flux, SD3): tokens -> feature map.

A DiT block reads image tokens (B, L, D). DIFT's recipe (noise the latent, one pass, take an
intermediate map) carries over, with one catch measured by DiTF (Gan et al. 2025, "Unleashing
Diffusion Transformers for Visual Correspondence by Modulating Massive Activations"): a few
channels of a DiT's hidden state are hundreds of times larger than the rest at every token
("massive activations"), so the raw hidden state matches poorly (SPair-71k PCK 29.9 with Flux);
normalising it the way the block itself does before its attention, LayerNorm then the block's
AdaLN (1 + scale) x + shift, lifts that to 65.3, and zeroing the massive channels first to 67.1.
DiTF's Flux default: the input of block 28 counting the 19 double blocks first (single block 9),
t = 260 of 1000 as the noise share, guidance 3.5.

This module is the host-free part: which channels are massive, the block's normalisation, and
folding image tokens back onto the latent grid. The host adapter (``host_adapters/dit_capture.py``)
supplies the block's own norm and modulation.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor

from ..validation import check_tensor

#: a channel is "massive" when its mean |activation| over the image tokens exceeds this many
#: times the median channel's. DiTF zeroes two fixed channels of Flux-dev (154 and 1446), whose
#: values are orders of magnitude above the rest; a ratio test finds such channels in any DiT
#: without a per-model list (and finds none in an ordinary hidden state).
MASSIVE_RATIO = 100.0

#: DiTF's block for Flux as a share of the stack: 28 of 57 blocks (19 double + 38 single)
FLUX_DEFAULT_DEPTH = 28 / 57

__all__ = [
    "FLUX_DEFAULT_DEPTH",
    "MASSIVE_RATIO",
    "adaln_features",
    "default_block",
    "fold_tokens",
    "massive_channels",
    "token_grid",
]


def token_grid(latent_grid: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(h, w) latent cells -> (ceil(h / p), ceil(w / p)) tokens: the host pads to the patch size."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"token_grid: 'patch_size' must be an integer >= 1, got {patch_size!r}")
    return math.ceil(latent_grid[0] / patch_size), math.ceil(latent_grid[1] / patch_size)


def fold_tokens(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Image tokens in raster order back onto their grid.

    tokens: (B, L, D) with L >= h * w; the first h * w are the image's (a host may append
    reference-image tokens after them). Returns (B, D, h, w).
    """
    check_tensor("fold_tokens", "tokens", tokens, 3, "(B, L, D)")
    h, w = grid
    if tokens.shape[1] < h * w:
        raise ValueError(f"fold_tokens: {tokens.shape[1]} tokens cannot fill a {h} x {w} grid")
    return tokens[:, : h * w].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def massive_channels(tokens: Tensor, ratio: float = MASSIVE_RATIO) -> Tensor:
    """Channels whose mean |value| over the tokens exceeds ``ratio`` times the median channel's.

    tokens: (B, L, D) -> (B, D) bool, per image.
    """
    check_tensor("massive_channels", "tokens", tokens, 3, "(B, L, D)")
    level = tokens.float().abs().mean(dim=1)  # (B, D)
    median = level.median(dim=1, keepdim=True).values
    return level > ratio * median


def adaln_features(
    tokens: Tensor,
    shift: Optional[Tensor],
    scale: Tensor,
    norm: Optional[Callable[[Tensor], Tensor]] = None,
    ratio: Optional[float] = MASSIVE_RATIO,
) -> Tensor:
    """DiTF features of a block's input: (1 + scale) * norm(x with massive channels zeroed) + shift.

    tokens: (B, L, D) the block's image-token input; shift, scale: (B, D) or (B, 1, D), the
    block's own AdaLN modulation of its attention input (shift None: scale-only modulation);
    norm: the block's own normalisation (default LayerNorm without affine, eps 1e-6, as Flux's
    and SD3's blocks use); ratio: :func:`massive_channels` threshold, None keeps every channel.
    Returns (B, L, D) float32.
    """
    check_tensor("adaln_features", "tokens", tokens, 3, "(B, L, D)")
    x = tokens.float()
    if ratio is not None:
        x = x.masked_fill(massive_channels(x, ratio).unsqueeze(1), 0.0)
    x = F.layer_norm(x, x.shape[-1:], eps=1e-6) if norm is None else norm(x.to(tokens.dtype)).float()

    def per_token(m: Tensor) -> Tensor:
        m = m.float()
        return m.unsqueeze(1) if m.dim() == 2 else m

    out = x * (1 + per_token(scale))
    return out if shift is None else out + per_token(shift)


def default_block(blocks: int, share: float = FLUX_DEFAULT_DEPTH) -> int:
    """The block at ``share`` of a stack of ``blocks`` (rounded): Flux-dev's 57 give DiTF's 28."""
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"default_block: 'blocks' must be an integer >= 1, got {blocks!r}")
    return min(blocks - 1, int(math.floor(share * blocks + 0.5)))
