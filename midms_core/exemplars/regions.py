"""Restricting a match by region or by label: which condition regions may draw from which
exemplar, which part of an exemplar may be used, and which labels may meet.

A :class:`~midms_core.matchers.base.Restriction` acts INSIDE the softmax: an excluded pair's
logit is -inf, so it gets no weight, in both directions of the cycle check; a position with no
allowed source is reported as not confident. This module checks one against the grids
(:func:`pair_restriction`) and makes its maps from images: masks and label maps on the latent
grid, the pad border of a fitted exemplar.

Labels are compared as integers. :func:`colour_labels` makes them from label-map images either
by exact colour (8 bits per channel; for lossless maps) or by the nearest colour of a palette
(for maps that went through lossy compression or resampling).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import PairRestriction
from ..images import fit
from ..matchers.base import Restriction
from ..validation import check_tensor


def _check_map(where: str, name: str, value: Optional[Tensor], channels: int, grid: tuple[int, int],
               integer: bool) -> None:
    if value is None:
        return
    layout = f"(B, {channels}, {grid[0]}, {grid[1]})"
    if not isinstance(value, Tensor) or value.dim() != 4 or value.shape[1] != channels or tuple(value.shape[-2:]) != grid:
        raise ValueError(f"{where}: 'restriction.{name}' must be {layout} on its latent grid, got "
                         f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
    if integer and (value.is_floating_point() or value.is_complex()):
        raise ValueError(f"{where}: 'restriction.{name}' must hold integer labels, got {value.dtype}")
    if not integer:
        check_tensor(where, f"restriction.{name}", value, 4, layout)


def pair_restriction(where: str, restriction: Restriction, groups: int, condition_grid: tuple[int, int],
                     exemplar_grid: tuple[int, int]) -> PairRestriction:
    """Check a :class:`Restriction` against G exemplars of ``exemplar_grid`` (one exemplar's
    (Hy, Wy)) and the condition grid, and flatten it for the kernel."""
    if not isinstance(restriction, Restriction):
        raise ValueError(f"{where}: 'restriction' must be a Restriction or None, got {type(restriction).__name__}")
    r = restriction
    _check_map(where, "condition_masks", r.condition_masks, groups, condition_grid, False)
    _check_map(where, "exemplar_masks", r.exemplar_masks, groups, exemplar_grid, False)
    _check_map(where, "condition_labels", r.condition_labels, 1, condition_grid, True)
    _check_map(where, "exemplar_labels", r.exemplar_labels, groups, exemplar_grid, True)
    if (r.condition_labels is None) != (r.exemplar_labels is None):
        raise ValueError(f"{where}: label-aware matching needs both 'restriction.condition_labels' and "
                         "'restriction.exemplar_labels' (or neither)")
    device = next(t.device for t in (r.condition_masks, r.exemplar_masks, r.condition_labels, r.exemplar_labels, torch.zeros(()))
                  if t is not None)
    hy = exemplar_grid[0]
    group = torch.arange(groups, device=device).repeat_interleave(hy * exemplar_grid[1])  # (G * Ny,)

    def stacked(t: Tensor) -> Tensor:  # (B, G, Hy, Wy) -> (B, G * Ny), the stacked grid's order
        return t.flatten(1)

    return PairRestriction(
        exemplar_group=group,
        condition_allowed=None if r.condition_masks is None else (r.condition_masks > 0.5).flatten(2),
        exemplar_allowed=None if r.exemplar_masks is None else stacked(r.exemplar_masks > 0.5),
        condition_label=None if r.condition_labels is None else r.condition_labels.long().flatten(1),
        exemplar_label=None if r.exemplar_labels is None else stacked(r.exemplar_labels.long()),
    )


def masks_on_grid(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Masks at image size (B, G, H, W) in [0, 1] -> the latent grid (B, G, h, w): the share of
    each cell's pixels that is masked (area average), so > 0.5 means mostly inside."""
    return F.adaptive_avg_pool2d(masks.float(), grid)


def pad_content_on_grid(size: tuple[int, int], height: int, width: int, mode: str,
                        grid: tuple[int, int]) -> Optional[Tensor]:
    """Which latent cells of an image of ``size`` (h, w), fitted to (height, width) by ``mode``
    (:func:`~midms_core.images.fit`), are mostly image and not pad border: (1, 1, gh, gw) float,
    1 where more than half of the cell is image (as :func:`masks_on_grid` reads masks), else 0.
    None when nothing is padded (crop, stretch, own size, or pad at the same aspect ratio)."""
    if mode != "pad":
        return None
    image = fit(torch.ones(1, size[0], size[1], 1), height, width, mode, "pad_content_on_grid", fill=0.0)
    if bool((image > 0.5).all()):
        return None
    return (masks_on_grid(image.movedim(-1, 1), grid) > 0.5).float()


def labels_on_grid(labels: Tensor, grid: tuple[int, int]) -> Tensor:
    """Integer label maps (B, K, H, W) -> (B, K, h, w): the label at each cell's centre pixel."""
    h, w = labels.shape[-2:]
    ys = ((torch.arange(grid[0], device=labels.device) + 0.5) * h / grid[0]).long().clamp(max=h - 1)
    xs = ((torch.arange(grid[1], device=labels.device) + 0.5) * w / grid[1]).long().clamp(max=w - 1)
    return labels[:, :, ys][:, :, :, xs]


def colour_labels(image: Tensor, palette: Optional[Tensor] = None) -> Tensor:
    """Label indices of a label-map image (B, 3, H, W) in [0, 1] -> (B, 1, H, W) int64.

    Without ``palette``: the exact colour, 8 bits per channel (r * 65536 + g * 256 + b), so two
    positions share a label iff their colours are equal. With ``palette`` (K, 3): the index of the
    nearest palette colour (Euclidean in RGB), for maps whose colours drifted.
    """
    check_tensor("colour_labels", "image", image, 4, "(B, 3, H, W)")
    if image.shape[1] != 3:
        raise ValueError(f"colour_labels: 'image' must be RGB (B, 3, H, W), got {tuple(image.shape)}")
    if palette is None:
        q = (image.float().clamp(0, 1) * 255).round().long()
        return (q[:, 0] * 65536 + q[:, 1] * 256 + q[:, 2]).unsqueeze(1)
    check_tensor("colour_labels", "palette", palette, 2, "(K, 3)")
    d = (image.float().permute(0, 2, 3, 1)[..., None, :] - palette.float().to(image.device)).square().sum(-1)
    return d.argmin(-1).unsqueeze(1)
