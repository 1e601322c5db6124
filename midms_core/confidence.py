"""Cycle-consistency confidence (paper Eq. 10-11) and the fused warp + confidence operation.

A condition position u is confident when its soft-argmax match in the exemplar, p = F(u)
(forward flow, condition -> exemplar), maps back close to u under the backward flow
(exemplar -> condition): |B(F(u)) - u| < threshold. B is sampled at the continuous point F(u)
by bilinear interpolation. This is the real forward-backward check; the official code samples
the forward flow at its own target instead (``util.fbcheck``), which is not one.

Distances are in latent pixels of the condition grid. The official threshold is 0.5 in
[-1, 1] coordinates (align_corners, ``linspace(-1, 1, W)``), i.e. 0.5 * (W - 1) / 2 pixels:
15.75 latent pixels on its 64 x 64 latents, which is our default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .alignment import SpatialPrior
from .attention import (
    ONE_PASS_MIN_CHANNELS,
    AttentionSettings,
    GridLocality,
    PairRestriction,
    softmax_average,
    softmax_average_both_ways,
)
from .correspondence import (
    check_feature_pair,
    check_settings,
    coordinate_grid,
    flat_features,
    flat_values,
)
from .validation import broadcast_batch, check_bool, check_choice, check_positive, check_tensor

OFFICIAL_THRESHOLD_NORMALISED = 0.5
DEFAULT_THRESHOLD_PX = OFFICIAL_THRESHOLD_NORMALISED * (64 - 1) / 2  # 15.75 px at 64 x 64
MASK_MODES = ("hard", "soft")
PASSES = ("auto", "two", "one")


@dataclass(frozen=True)
class ConfidenceSettings:
    """How the cycle check becomes a confidence mask, and how the two directions are computed;
    validated once, here (the sampler's per-step re-match reads it unchecked).

    threshold:  cycle-consistency threshold in latent pixels of the condition grid (official 0.5
                normalised = 15.75 px at 64 x 64).
    mask_mode:  "hard" (official [distance < threshold], optionally smoothed) or "soft" (a
                sigmoid of the distance).
    smooth:     the official 2x2 clean-up of the hard mask.
    soft_width: fall-off of the soft mask in pixels; None = threshold / 4.
    passes:     "auto", "one" or "two" passes over the correlation for the two directions
                (:func:`warp_with_confidence`); the same result to float rounding.
    """

    threshold: float = DEFAULT_THRESHOLD_PX
    mask_mode: str = "hard"
    smooth: bool = True
    soft_width: Optional[float] = None
    passes: str = "auto"

    def __post_init__(self) -> None:
        where = "ConfidenceSettings"
        object.__setattr__(self, "threshold", check_positive(where, "threshold", self.threshold))
        check_choice(where, "mask_mode", self.mask_mode, MASK_MODES)
        check_bool(where, "smooth", self.smooth)
        if self.soft_width is not None:
            object.__setattr__(self, "soft_width", check_positive(where, "soft_width", self.soft_width))
        check_choice(where, "passes", self.passes, PASSES)

    def mask(self, distance: Tensor) -> Tensor:
        """Eq. 11 from the cycle distance (B, 1, H, W) pixels -> (B, 1, H, W) float32 in [0, 1]."""
        return _confidence_mask(distance, self.threshold, self.mask_mode, self.smooth, self.soft_width)

    def passes_for(self, channels: int) -> str:
        """"one" or "two": ``passes`` with "auto" resolved for features of ``channels`` channels
        (:func:`resolve_passes`)."""
        return resolve_passes(self.passes, channels)


def check_confidence(where: str, confidence: object) -> ConfidenceSettings:
    """``confidence`` must be a :class:`ConfidenceSettings` (validated when it was made)."""
    if not isinstance(confidence, ConfidenceSettings):
        raise ValueError(f"{where}: 'confidence' must be a ConfidenceSettings(threshold=..., mask_mode=..., "
                         f"smooth=..., soft_width=..., passes=...), got {type(confidence).__name__}")
    return confidence


def normalised_to_pixels(threshold: float, size: int) -> float:
    """A distance in align_corners [-1, 1] units on a grid of ``size`` pixels, in pixels."""
    return threshold * (size - 1) / 2


def sample_bilinear(field: Tensor, points: Tensor) -> Tensor:
    """Bilinearly sample ``field`` at continuous pixel positions, clamping to the border.

    field: (B, C, H, W); points: (B, 2, Hp, Wp) pixel coordinates (x, y) into field's grid.
    Returns (B, C, Hp, Wp) float32.
    """
    height, width = field.shape[-2:]
    # align_corners=True maps -1 / +1 to the centres of the first / last pixel; a size-1 axis has
    # only one position, so every point samples it.
    scale = points.new_tensor([max(width - 1, 1), max(height - 1, 1)]).view(1, 2, 1, 1)
    grid = (points.float() * 2 / scale - 1).permute(0, 2, 3, 1)
    return F.grid_sample(field.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)


def cycle_distance(forward_flow: Tensor, backward_flow: Tensor) -> Tensor:
    """Forward-backward error |B(F(u)) - u| in condition-grid pixels (Eq. 10).

    forward_flow: (B, 2, Hx, Wx) exemplar-grid positions (x, y) matched by condition positions;
    backward_flow: (B, 2, Hy, Wy) condition-grid positions matched by exemplar positions.
    Returns (B, 1, Hx, Wx) float32.
    """
    check_tensor("cycle_distance", "forward_flow", forward_flow, 4, "(B, 2, Hx, Wx)")
    check_tensor("cycle_distance", "backward_flow", backward_flow, 4, "(B, 2, Hy, Wy)")
    if forward_flow.shape[1] != 2 or backward_flow.shape[1] != 2:
        raise ValueError("cycle_distance: flows must have 2 channels (x, y)")
    broadcast_batch("cycle_distance", forward_flow=forward_flow, backward_flow=backward_flow)
    return _cycle_distance(forward_flow, backward_flow)


def _cycle_distance(forward_flow: Tensor, backward_flow: Tensor) -> Tensor:
    """:func:`cycle_distance` without the checks."""
    batch = max(forward_flow.shape[0], backward_flow.shape[0])
    back = sample_bilinear(backward_flow.expand(batch, -1, -1, -1), forward_flow.expand(batch, -1, -1, -1))
    height, width = forward_flow.shape[-2:]
    home = coordinate_grid(batch, height, width, forward_flow.device)
    return (back - home).norm(dim=1, keepdim=True)


def smooth_mask(mask: Tensor) -> Tensor:
    """The official clean-up: 2x2 average pooling, keep blocks with > 0.5, nearest upsampling.

    A 2x2 block survives only when at least 3 of its 4 positions are confident; odd sizes are
    padded by replication and cropped back. (B, 1, H, W) -> (B, 1, H, W).
    """
    height, width = mask.shape[-2:]
    padded = F.pad(mask.float(), (0, width % 2, 0, height % 2), mode="replicate")
    pooled = F.avg_pool2d(padded, 2) > 0.5
    up = pooled.float().repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return up[..., :height, :width]


def hard_confidence(distance: Tensor, threshold: float = DEFAULT_THRESHOLD_PX, smooth: bool = True) -> Tensor:
    """Eq. 11: M = [distance < threshold], optionally smoothed as the official code does.

    distance: (B, 1, H, W) pixels -> (B, 1, H, W) float32 in {0, 1}.
    """
    return _confidence_mask(distance, check_positive("hard_confidence", "threshold", threshold), "hard", smooth, None)


def soft_confidence(distance: Tensor, threshold: float = DEFAULT_THRESHOLD_PX, width: Optional[float] = None) -> Tensor:
    """A soft mask: sigmoid((threshold - distance) / width), 0.5 exactly at the threshold.

    ``width`` (pixels, default threshold / 4) sets how fast confidence falls off; the hard mask is
    its limit for width -> 0. distance: (B, 1, H, W) -> (B, 1, H, W) float32 in (0, 1).
    """
    threshold = check_positive("soft_confidence", "threshold", threshold)
    width = None if width is None else check_positive("soft_confidence", "width", width)
    return _confidence_mask(distance, threshold, "soft", False, width)


def _confidence_mask(distance: Tensor, threshold: float, mode: str, smooth: bool, width: Optional[float]) -> Tensor:
    """Eq. 11 from the cycle distance, unchecked: "hard" [distance < threshold] (smoothed as the
    official code when ``smooth``) or "soft" sigmoid((threshold - distance) / width), width
    threshold / 4 by default. (B, 1, H, W) -> (B, 1, H, W) float32."""
    if mode == "hard":
        mask = (distance < threshold).float()
        return smooth_mask(mask) if smooth else mask
    width = threshold / 4 if width is None else width
    return torch.sigmoid((threshold - distance.float()) / width)


@dataclass
class WarpResult:
    """Everything one correspondence produces.

    warped:        (B, Cv, Hx, Wx) exemplar values warped onto the condition grid (values' dtype).
    mask:          (B, 1, Hx, Wx) confidence in [0, 1] (values' dtype).
    forward_flow:  (B, 2, Hx, Wx) float32 exemplar-grid positions matched by condition positions.
    backward_flow: (B, 2, Hy, Wy) float32 condition-grid positions matched by exemplar positions.
    distance:      (B, 1, Hx, Wx) float32 forward-backward error in pixels.
    source:        (B, G, Hx, Wx) float32, for G exemplars matched as one union: each exemplar's
                   share of a position's softmax weight (the flows are then in the exemplars'
                   grids stacked top to bottom, Hy = G * one exemplar's height); None for one.

    With a restriction (:class:`~midms_core.attention.PairRestriction`), a position with no
    allowed source has mask 0, warped 0, forward flow (-1, -1) and distance inf; an exemplar
    position no condition position may use has backward flow (-1, -1).
    """

    warped: Tensor
    mask: Tensor
    forward_flow: Tensor
    backward_flow: Tensor
    distance: Tensor
    source: Optional[Tensor] = None


class ExemplarSide(NamedTuple):
    """The exemplar side of a match, validated and prepared once for any number of matches
    against it (the sampler re-matches every step against the same exemplar).

    features: (B, C, Ny) centre-normalised float32; values: (B, Ny, Cv + 2) float32, the values
    with the exemplar grid's (x, y) coordinates appended (the forward flow rides along);
    grid: (Hy, Wy); channels: Cv; dtype: the values' dtype; locality: the prior's term (points on
    the condition grid) or None; groups: G exemplars stacked top to bottom in the grid (values
    then also carry G one-hot channels: each exemplar's share); restriction: the pairs that may
    match, or None.
    """

    features: Tensor
    values: Tensor
    grid: tuple[int, int]
    channels: int
    dtype: torch.dtype
    locality: Optional[GridLocality]
    groups: int = 1
    restriction: Optional[PairRestriction] = None


def prepare_exemplar(where: str, condition_features: Tensor, exemplar_features: Tensor, exemplar_values: Tensor,
                     prior: Optional[SpatialPrior] = None, groups: int = 1,
                     restriction: Optional[PairRestriction] = None) -> ExemplarSide:
    """Validate a condition/exemplar pair once and prepare the exemplar side (:class:`ExemplarSide`).

    condition_features: (B, C, Hx, Wx) (only its shape and values are checked here);
    exemplar_features: (B, C, Hy, Wy); exemplar_values: (B, Cv, Hy, Wy); ``prior``: a
    :class:`SpatialPrior` with its target on the condition grid, or None. ``groups`` > 1: the
    exemplar side is that many exemplars stacked top to bottom (Hy = G * their height; the prior
    then has one target per exemplar, :func:`midms_core.exemplars.union.union_prior`);
    ``restriction``: which pairs may match (built and checked by :mod:`midms_core.exemplars`).
    """
    batch = check_feature_pair(where, condition_features, exemplar_features, exemplar_values,
                               "condition_features", "exemplar_features", "exemplar_values")
    locality = None
    if prior is not None:
        if not isinstance(prior, SpatialPrior) or tuple(prior.target.shape[-2:]) != tuple(condition_features.shape[-2:]):
            got = tuple(prior.target.shape) if isinstance(prior, SpatialPrior) else type(prior).__name__
            raise ValueError(f"{where}: 'prior' must be a SpatialPrior with its target on the condition grid "
                             f"(B, 2, {condition_features.shape[-2]}, {condition_features.shape[-1]}), got {got}")
        locality = prior.to(condition_features.device).locality()
        batch = broadcast_batch(where, condition_features=condition_features, exemplar_features=exemplar_features,
                                exemplar_values=exemplar_values, **{"prior.target": prior.target})
    hy, wy = exemplar_features.shape[-2:]
    values = exemplar_values.float().expand(max(batch, exemplar_values.shape[0]), -1, -1, -1)
    parts = [values, coordinate_grid(values.shape[0], hy, wy, values.device)]
    if groups > 1:  # each exemplar's share of the weight rides along too
        group = torch.arange(groups, device=values.device).repeat_interleave(hy // groups)  # (Hy,)
        one_hot = torch.nn.functional.one_hot(group, groups).float().transpose(0, 1)  # (G, Hy)
        parts.append(one_hot[None, :, :, None].expand(values.shape[0], groups, hy, wy))
    side = torch.cat(parts, dim=1)
    return ExemplarSide(flat_features(exemplar_features, False), flat_values(side), (int(hy), int(wy)),
                        int(exemplar_values.shape[1]), exemplar_values.dtype, locality, groups, restriction)


def warp_prepared(
    condition_features: Tensor,
    exemplar: ExemplarSide,
    settings: AttentionSettings,
    confidence: ConfidenceSettings = ConfidenceSettings(),
) -> WarpResult:
    """:func:`warp_with_confidence` against a prepared exemplar, WITHOUT argument checks: the
    caller validated the pair (:func:`prepare_exemplar`) once, and both settings were validated
    when they were made; this is the sampler's per-step re-match. ``confidence.passes`` "auto"
    is resolved here for the features' channels (:func:`resolve_passes`).

    condition_features: (B, C, Hx, Wx), any float dtype (normalised here).
    """
    hx, wx = condition_features.shape[-2:]
    cond = flat_features(condition_features, False)  # (B, C, Nx)
    condition_coords = flat_values(coordinate_grid(1, hx, wx, cond.device))  # (1, Nx, 2)
    locality, restriction = exemplar.locality, exemplar.restriction
    if confidence.passes_for(condition_features.shape[1]) == "one":
        forward, backward = softmax_average_both_ways(cond, exemplar.features, exemplar.values, condition_coords,
                                                      exemplar.grid, settings, locality, restriction)
        forward, backward = forward.transpose(1, 2), backward.transpose(1, 2)
    else:
        forward = softmax_average(cond, exemplar.features, exemplar.values, exemplar.grid, settings, locality,
                                  (hx, wx), restriction)
        backward = softmax_average(exemplar.features, cond, condition_coords, (hx, wx), settings,
                                   None if locality is None else locality.swapped(), exemplar.grid,
                                   None if restriction is None else restriction.swapped())
    batch = forward.shape[0]
    forward = forward.reshape(batch, -1, hx, wx)
    backward_flow = backward.reshape(backward.shape[0], 2, *exemplar.grid)
    channels = exemplar.channels
    forward_flow = forward[:, channels : channels + 2]
    if restriction is not None:
        # an exemplar position nobody may use has no backward flow: a far-away stand-in, so a
        # forward match that puts weight on it fails the cycle check (zero weight: no effect)
        far = -1e6
        distance = _cycle_distance(forward_flow.nan_to_num(far), backward_flow.nan_to_num(far))
        distance = distance.masked_fill(forward_flow[:, :1].isnan(), float("inf"))
    else:
        distance = _cycle_distance(forward_flow, backward_flow)
    mask = confidence.mask(distance)
    warped = forward[:, :channels]
    source = forward[:, channels + 2 :] if exemplar.groups > 1 else None
    if restriction is not None:  # report "no source" plainly instead of NaN
        warped, source = warped.nan_to_num(0.0), None if source is None else source.nan_to_num(0.0)
        forward_flow, backward_flow = forward_flow.nan_to_num(-1.0), backward_flow.nan_to_num(-1.0)
    return WarpResult(
        warped=warped.to(exemplar.dtype),
        mask=mask.to(exemplar.dtype),
        forward_flow=forward_flow,
        backward_flow=backward_flow,
        distance=distance,
        source=source,
    )


def resolve_passes(passes: str, channels: int) -> str:
    """"auto" -> "one" for features of at least ``ONE_PASS_MIN_CHANNELS`` channels, where one
    pass over the correlation is faster, else "two"; other values pass through."""
    if passes == "auto":
        return "one" if channels >= ONE_PASS_MIN_CHANNELS else "two"
    return passes


def warp_with_confidence(
    condition_features: Tensor,
    exemplar_features: Tensor,
    exemplar_values: Tensor,
    settings: AttentionSettings = AttentionSettings(),
    confidence: ConfidenceSettings = ConfidenceSettings(),
    prior: Optional[SpatialPrior] = None,
) -> WarpResult:
    """Warp ``exemplar_values`` onto the condition grid and mark the cycle-consistent positions.

    Streamed over the correlation: condition -> exemplar gives the warp and the forward flow
    together (the coordinates ride along as extra value channels), exemplar -> condition gives
    the backward flow. ``confidence`` (:class:`ConfidenceSettings`): the threshold, the mask and
    ``passes``: "two" computes the correlation once per direction (the kernel of
    :func:`~midms_core.correspondence.attend` twice), "one" once for both
    (:func:`~midms_core.correspondence.attend_both_ways`), "auto" picks one pass for features of
    at least ``ONE_PASS_MIN_CHANNELS`` channels, where it is faster. The results agree to float
    rounding. Memory stays linear in the number of positions.

    condition_features: (B, C, Hx, Wx); exemplar_features: (B, C, Hy, Wy);
    exemplar_values: (B, Cv, Hy, Wy). Batch sizes must match or be 1.
    ``settings``: tau, clamp, block size, fused kernel (:class:`~midms_core.attention.AttentionSettings`).
    ``prior``: a :class:`SpatialPrior` (target on the condition grid) whose locality term joins
    every logit of both directions; None matches on the features alone.
    """
    where = "warp_with_confidence"
    check_settings(where, settings)
    check_confidence(where, confidence)
    exemplar = prepare_exemplar(where, condition_features, exemplar_features, exemplar_values, prior)
    return warp_prepared(condition_features, exemplar, settings, confidence)
