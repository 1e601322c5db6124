"""Scoring a correspondence against a KNOWN answer, for benchmarks, tests and the demo.

* pixel-level warping by a latent-grid flow (:func:`latent_flow_to_pixels`) and the stand-in
  x0_hat of the interleaved sampler (:func:`degrade`);
* metrics: :func:`pck`, :func:`masked_psnr`, :func:`mask_precision_recall`, :func:`incoherence`,
  and for landmarks :func:`transfer_points` and :func:`landmark_pck`.

Conventions as in :mod:`midms_core.training.synthetic` (flows in pixels of their own grid, (x, y)).
Metrics return Python floats; "no positions to score" (an empty mask) gives NaN, not an error,
because an empty confidence mask is a legitimate (bad) outcome a benchmark must report.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from midms_core.correspondence import coordinate_grid
from midms_core.training.synthetic import sample_pixels
from midms_core.validation import check_int, check_positive, check_tensor


def latent_flow_to_pixels(flow: Tensor, size: tuple[int, int], factor: int) -> Tensor:
    """A latent-grid flow (B, 2, h, w) in latent cells -> (B, 2, H, W) in image pixels.

    Cell u's centre is pixel (u + 0.5) * factor - 0.5; the flow is upsampled bilinearly with the
    same convention (align_corners=False), so the pixel warp agrees with the latent warp at cell
    centres and interpolates smoothly between them.
    """
    check_tensor("latent_flow_to_pixels", "flow", flow, 4, "(B, 2, h, w)")
    factor = check_int("latent_flow_to_pixels", "factor", factor, 1)
    up = F.interpolate(flow.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return (up + 0.5) * factor - 0.5


def degrade(latent: Tensor, seed: int, blur_sigma: float = 0.75, noise_std: float = 0.05) -> Tensor:
    """The stand-in x0_hat: a latent blurred (``blur_sigma`` latent cells, 5 x 5 kernel,
    replicated border) plus Gaussian noise of std ``noise_std`` (latent units) drawn from
    ``seed``. What a partly denoised sample looks like: the right layout, soft and noisy.
    (B, c, h, w) -> (B, c, h, w)."""
    check_tensor("degrade", "latent", latent, 4, "(B, c, h, w)")
    blur_sigma = check_positive("degrade", "blur_sigma", blur_sigma)
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not 0 <= noise_std < math.inf:
        raise ValueError(f"degrade: 'noise_std' must be a finite number >= 0, got {noise_std!r}")
    g = torch.Generator().manual_seed(int(seed))
    x0 = kornia.filters.gaussian_blur2d(latent, (5, 5), (blur_sigma, blur_sigma), border_type="replicate")
    return x0 + noise_std * torch.randn(x0.shape, generator=g).to(x0)


def pck(flow: Tensor, truth: Tensor, valid: Tensor, k: float) -> float:
    """Percentage of correct keypoints: the fraction of ``valid`` positions whose flow lies
    within distance ``k`` (inclusive, same units as the flows) of the truth.

    flow, truth: (B, 2, h, w); valid: (B, h, w) bool. NaN when nothing is valid.
    """
    check_tensor("pck", "flow", flow, 4, "(B, 2, h, w)")
    check_tensor("pck", "truth", truth, 4, "(B, 2, h, w)")
    if flow.shape != truth.shape or flow.shape[1] != 2:
        raise ValueError(f"pck: 'flow' and 'truth' must both be (B, 2, h, w), got {tuple(flow.shape)} and {tuple(truth.shape)}")
    valid = _check_mask("pck", "valid", valid, (flow.shape[0], *flow.shape[-2:]))
    k = check_positive("pck", "k", k)
    count = int(valid.sum())
    if count == 0:
        return math.nan
    err = (flow.float() - truth.float()).norm(dim=1)
    return float(((err <= k) & valid).sum()) / count


def masked_psnr(estimate: Tensor, reference: Tensor, mask: Optional[Tensor] = None, peak: float = 1.0) -> float:
    """PSNR in dB over the masked pixels: 10 log10(peak^2 / MSE), the MSE over every channel of
    the pixels where ``mask`` is true (all pixels when None).

    estimate, reference: (B, C, H, W); mask: (B, 1, H, W) bool. Inf for a perfect estimate,
    NaN when the mask is empty.
    """
    check_tensor("masked_psnr", "estimate", estimate, 4, "(B, C, H, W)")
    check_tensor("masked_psnr", "reference", reference, 4, "(B, C, H, W)")
    if estimate.shape != reference.shape:
        raise ValueError(f"masked_psnr: 'estimate' and 'reference' must have the same shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}")
    peak = check_positive("masked_psnr", "peak", peak)
    squared = (estimate.double() - reference.double()).square()
    if mask is None:
        mse = float(squared.mean())
    else:
        mask = _check_mask("masked_psnr", "mask", mask, (estimate.shape[0], 1, *estimate.shape[-2:]))
        count = int(mask.sum()) * estimate.shape[1]
        if count == 0:
            return math.nan
        mse = float((squared * mask).sum()) / count
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def mask_precision_recall(predicted: Tensor, actual: Tensor) -> tuple[float, float]:
    """Precision |P and A| / |P| and recall |P and A| / |A| of a predicted mask against the
    actual one. Both bool tensors of one shape; NaN where the denominator is 0."""
    predicted = _check_mask("mask_precision_recall", "predicted", predicted, None)
    actual = _check_mask("mask_precision_recall", "actual", actual, tuple(predicted.shape))
    hits = int((predicted & actual).sum())
    n_predicted, n_actual = int(predicted.sum()), int(actual.sum())
    precision = hits / n_predicted if n_predicted else math.nan
    recall = hits / n_actual if n_actual else math.nan
    return precision, recall


def _check_mask(where: str, name: str, mask: object, shape: Union[tuple, None]) -> Tensor:
    """A bool tensor (of ``shape`` when given). Float masks are refused rather than thresholded:
    the caller knows whether 0.5 or 0.999 is the right cut."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        described = f"{mask.dtype} tensor" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{where}: '{name}' must be a bool tensor (threshold float masks first), got {described}")
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{where}: '{name}' must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    return mask


def incoherence(flow: Tensor, jump: float = 2.0) -> float:
    """Share of neighbouring cell pairs (4-neighbourhood) whose flows differ by more than
    ``jump`` cells: 0 for a smooth warp, high for a shredded one. flow: (B, 2, h, w)."""
    check_tensor("incoherence", "flow", flow, 4, "(B, 2, h, w)")
    jump = check_positive("incoherence", "jump", jump)
    f = flow.float()
    dx = (f[..., :, 1:] - f[..., :, :-1]).norm(dim=1)
    dy = (f[..., 1:, :] - f[..., :-1, :]).norm(dim=1)
    pairs = dx.numel() + dy.numel()
    return float((dx > jump).sum() + (dy > jump).sum()) / max(pairs, 1)


def transfer_points(points: Tensor, flow: Tensor, factor: int) -> Tensor:
    """Carry pixel points of the condition through a latent-grid flow into exemplar pixels.

    points: (P, 2) condition pixels (x, y); flow: (1, 2, h, w) exemplar latent cells matched by
    each condition cell; factor: pixels per latent cell. The displacement (flow minus the cell's
    own position) is sampled bilinearly at each point's latent position (p + 0.5) / factor - 0.5
    (border-clamped, so points beyond the outer cell centres keep the outer displacement) and
    the result mapped back to pixels the same way. Returns (P, 2) float64.
    """
    check_tensor("transfer_points", "flow", flow, 4, "(1, 2, h, w)")
    cells = (points.double() + 0.5) / factor - 0.5
    h, w = flow.shape[-2:]
    displacement = flow.double() - coordinate_grid(1, h, w, flow.device, torch.float64)
    sampled = sample_pixels(displacement, cells.t().reshape(1, 2, 1, -1))  # (1, 2, 1, P)
    return (cells + sampled[0, :, 0].t() + 0.5) * factor - 0.5


def landmark_pck(flow: Tensor, points_a: Tensor, points_b: Tensor, size: int, factor: int) -> tuple[float, float, int]:
    """PCK at 5 % and 10 % of a ``size`` px crop for condition landmarks ``points_a`` (P, 2)
    carried by a latent-grid ``flow`` (1, 2, h, w) (:func:`transfer_points`) against the
    exemplar's ``points_b`` (P, 2), over landmarks inside both crops; and how many were scored."""
    inside = ((points_a >= 0) & (points_a <= size - 1)).all(1) & ((points_b >= 0) & (points_b <= size - 1)).all(1)
    err = (transfer_points(points_a[inside], flow, factor) - points_b[inside]).norm(dim=1)
    return float((err <= 0.05 * size).double().mean()), float((err <= 0.10 * size).double().mean()), int(inside.sum())
