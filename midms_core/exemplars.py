"""Several exemplars matched as ONE union, and matching restricted by region or by label.

Union: every condition position u is matched against the positions of all G exemplars at once,
one softmax over all of them (Eq. 6 with the keys of every exemplar), so each position takes
its best source. The exemplars (one size, as an IMAGE batch has) are stacked top to bottom into
one grid of G * Hy rows; flows are in that stacked grid (:func:`split_stacked` turns a position
into (exemplar, position in it)), the backward flow of the cycle check runs from every exemplar
position over the condition, and :class:`~midms_core.confidence.WarpResult` ``source`` gives
each exemplar's share of a position's weight.

Restriction (:class:`Restriction`): optional condition-side masks (which condition regions may
draw from which exemplar), exemplar-side masks (which part of an exemplar may be used at all)
and label maps (a position only matches positions of the same label). They act INSIDE the
softmax: an excluded pair's logit is -inf, so it gets no weight, in both directions of the
cycle check; a position with no allowed source is reported as not confident.

Labels are compared as integers. :func:`colour_labels` makes them from label-map images either
by exact colour (8 bits per channel; for lossless maps) or by the nearest colour of a palette
(for maps that went through lossy compression or resampling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .alignment import SpatialPrior
from .attention import AttentionSettings, PairRestriction
from .confidence import (
    DEFAULT_THRESHOLD_PX,
    WarpResult,
    check_confidence_settings,
    prepare_exemplar,
    resolve_passes,
    warp_prepared,
)
from .correspondence import check_settings
from .images import fit
from .matchers import MatchFeatures, Matcher, MatchSide
from .validation import broadcast_batch, check_tensor

__all__ = [
    "Restriction",
    "bind_union",
    "colour_labels",
    "labels_on_grid",
    "masks_on_grid",
    "pad_content_on_grid",
    "pair_restriction",
    "split_stacked",
    "stack_exemplars",
    "union_prior",
    "unite",
    "warp_stacked_with_confidence",
    "warp_union_with_confidence",
]


def stack_exemplars(where: str, name: str, tensors: Sequence[Tensor]) -> Tensor:
    """G tensors (B, C, Hy, Wy) of one shape -> (B, C, G * Hy, Wy), the exemplars top to bottom."""
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError(f"{where}: '{name}' must be a non-empty list of (B, C, H, W) tensors, one per exemplar")
    for i, t in enumerate(tensors):
        check_tensor(where, f"{name}[{i}]", t, 4, "(B, C, H, W)")
        if t.shape[1:] != tensors[0].shape[1:]:
            raise ValueError(f"{where}: every exemplar must have the shape of the first (C, H, W) = "
                             f"{tuple(tensors[0].shape[1:])}; '{name}[{i}]' has {tuple(t.shape[1:])}. "
                             "Fit the exemplar images to one size first")
    batch = broadcast_batch(where, **{f"{name}[{i}]": t for i, t in enumerate(tensors)})
    return torch.cat([t.expand(batch, -1, -1, -1) for t in tensors], dim=2)


def split_stacked(flow: Tensor, height: int) -> tuple[Tensor, Tensor]:
    """Positions (x, y) in the stacked grid -> (exemplar index (B, 1, H, W) long, (x, y) inside
    that exemplar (B, 2, H, W)). flow: (B, 2, H, W); height: one exemplar's rows."""
    index = (flow[:, 1:2].round().clamp(min=0) // height).long()
    return index, torch.cat([flow[:, :1], flow[:, 1:2] - index * height], dim=1)


def union_prior(priors: Sequence[Optional[SpatialPrior]]) -> Optional[SpatialPrior]:
    """One :class:`SpatialPrior` per exemplar -> one over the union (target (B, 2G, Hx, Wx), each
    exemplar's target in its own cells), or None when none has one. All or none: a union where
    only some exemplars are located would favour them."""
    given = [p is not None for p in priors]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("union_prior: either every exemplar has a locality prior or none has "
                         f"(got one for exemplars {[i for i, g in enumerate(given) if g]} of {len(priors)})")
    batch = max(p.target.shape[0] for p in priors)
    grid = priors[0].target.shape[-2:]
    targets, sigmas = [], []
    for p in priors:
        target = p.target.float().expand(batch, -1, -1, -1)
        targets.append(target)
        sigma = p.sigma if isinstance(p.sigma, Tensor) else target.new_full((1, 1, *grid), float(p.sigma))
        sigmas.append(sigma.float().to(target.device).expand(batch, -1, -1, -1))
    return SpatialPrior(torch.cat(targets, dim=1), torch.cat(sigmas, dim=1))


@dataclass(frozen=True)
class Restriction:
    """Which pairs may match, on the latent grids (any factor may be None).

    condition_masks:  (B, G, Hx, Wx) in [0, 1]: where on the condition each exemplar may be used
                      (> 0.5 = allowed).
    exemplar_masks:   (B, G, Hy, Wy) in [0, 1]: which part of each exemplar may be used at all.
    condition_labels: (B, 1, Hx, Wx) integer labels of the condition positions.
    exemplar_labels:  (B, G, Hy, Wy) integer labels of each exemplar's positions; positions only
                      match positions of the same label. Both label maps or neither.
    """

    condition_masks: Optional[Tensor] = None
    exemplar_masks: Optional[Tensor] = None
    condition_labels: Optional[Tensor] = None
    exemplar_labels: Optional[Tensor] = None


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


def warp_union_with_confidence(
    condition_features: Tensor,
    exemplar_features: Sequence[Tensor],
    exemplar_values: Sequence[Tensor],
    settings: AttentionSettings = AttentionSettings(),
    threshold: float = DEFAULT_THRESHOLD_PX,
    mask_mode: str = "hard",
    smooth: bool = True,
    soft_width: Optional[float] = None,
    passes: str = "auto",
    priors: Optional[Sequence[Optional[SpatialPrior]]] = None,
    restriction: Optional[Restriction] = None,
) -> WarpResult:
    """:func:`~midms_core.confidence.warp_with_confidence` against the union of G exemplars.

    condition_features: (B, C, Hx, Wx); exemplar_features: G tensors (B, C, Hy, Wy);
    exemplar_values: G tensors (B, Cv, Hy, Wy); ``priors``: one SpatialPrior (or None) per
    exemplar, each on the condition grid into its exemplar's cells; ``restriction``: which pairs
    may match (:class:`Restriction`). Results as :class:`~midms_core.confidence.WarpResult`,
    with the flows in the stacked grid (Hy -> G * Hy) and ``source`` (B, G, Hx, Wx) when G > 1.
    With G = 1 and no restriction this equals warp_with_confidence.
    """
    where = "warp_union_with_confidence"
    features = stack_exemplars(where, "exemplar_features", exemplar_features)
    values = stack_exemplars(where, "exemplar_values", exemplar_values)
    groups = len(exemplar_features)
    if len(exemplar_values) != groups or (priors is not None and len(priors) != groups):
        raise ValueError(f"{where}: give one entry per exemplar: {groups} feature maps, {len(exemplar_values)} values"
                         + ("" if priors is None else f", {len(priors)} priors"))
    prior = None if priors is None else union_prior(priors)
    return warp_stacked_with_confidence(condition_features, features, values, groups, settings, threshold, mask_mode,
                                        smooth, soft_width, passes, prior, restriction, where)


def warp_stacked_with_confidence(
    condition_features: Tensor,
    exemplar_features: Tensor,
    exemplar_values: Tensor,
    groups: int,
    settings: AttentionSettings = AttentionSettings(),
    threshold: float = DEFAULT_THRESHOLD_PX,
    mask_mode: str = "hard",
    smooth: bool = True,
    soft_width: Optional[float] = None,
    passes: str = "auto",
    prior: Optional[SpatialPrior] = None,
    restriction: Optional[Restriction] = None,
    where: str = "warp_stacked_with_confidence",
) -> WarpResult:
    """:func:`warp_union_with_confidence` on exemplars already stacked: exemplar_features
    (B, C, G * Hy, Wy), exemplar_values (B, Cv, G * Hy, Wy), ``prior`` over the union
    (:func:`union_prior`) or None."""
    check_settings(where, settings)
    check_confidence_settings(where, threshold, mask_mode, soft_width, passes)
    pairs = prepare_union(where, condition_features, exemplar_features, groups, prior, restriction)
    exemplar = prepare_exemplar(where, condition_features, exemplar_features, exemplar_values, prior, groups, pairs)
    return warp_prepared(condition_features, exemplar, settings, float(threshold), mask_mode, smooth, soft_width,
                         resolve_passes(passes, condition_features.shape[1]))


def prepare_union(where: str, condition_features: Tensor, exemplar_features: Tensor, groups: int,
                  prior: Optional[SpatialPrior], restriction: Optional[Restriction]) -> Optional[PairRestriction]:
    """Check the union's shape, prior and restriction once; the kernel's restriction (or None)."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or exemplar_features.dim() != 4 \
            or exemplar_features.shape[-2] % groups:
        raise ValueError(f"{where}: 'groups' must be a whole number >= 1 that divides the stacked exemplar height, "
                         f"got {groups!r} for shape {tuple(exemplar_features.shape)}")
    if prior is not None and isinstance(prior, SpatialPrior) and prior.groups != groups:
        raise ValueError(f"{where}: the prior has targets for {prior.groups} exemplar(s), the union has {groups}")
    if restriction is None:
        return None
    one_grid = (exemplar_features.shape[-2] // groups, exemplar_features.shape[-1])
    pairs = pair_restriction(where, restriction, groups, tuple(condition_features.shape[-2:]), one_grid)
    tensors = {f"restriction.{k}": v for k, v in vars(restriction).items() if v is not None}
    broadcast_batch(where, condition_features=condition_features, exemplar_features=exemplar_features, **tensors)
    return pairs._replace(exemplar_group=pairs.exemplar_group.to(condition_features.device))


def bind_union(matcher: Matcher, condition: MatchSide, exemplars: Sequence[MatchSide],
               restriction: Optional[Restriction] = None) -> MatchFeatures:
    """Features of a condition against G exemplars as one union, from any matcher whose condition
    features do not depend on the exemplar (every matcher here: the condition side and the x0_hat
    features are computed from the condition alone; they are taken from the first pair).
    ``Matcher.bind_each`` computes the condition side once for all G pairs.

    The exemplar maps are stacked (:func:`stack_exemplars`), the priors united
    (:func:`union_prior`); the result carries ``groups`` and ``restriction`` for every warp of
    the run (first match and re-matches alike).
    """
    if not isinstance(exemplars, (list, tuple)) or not exemplars:
        raise ValueError("bind_union: 'exemplars' must be a non-empty list of MatchSides")
    return unite(matcher.bind_each(condition, list(exemplars)), restriction)


def unite(bound: Sequence[MatchFeatures], restriction: Optional[Restriction] = None) -> MatchFeatures:
    """G pairs' features of one condition (``Matcher.bind_each``) -> their union: the exemplar
    maps stacked, the priors united, ``groups`` and ``restriction`` set."""
    where = "bind_union"
    first = bound[0]
    return dataclasses.replace(
        first,
        exemplar=stack_exemplars(where, "exemplar features", [b.exemplar for b in bound]),
        exemplar_in_domain=stack_exemplars(where, "in-domain exemplar features", [b.exemplar_in_domain for b in bound]),
        prior=union_prior([b.prior for b in bound]),
        alignment=None,
        groups=len(bound),
        restriction=restriction,
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
