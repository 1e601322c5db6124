"""Evaluation helpers: real photos under known deformations, conditions made from them, metrics.

Everything a correspondence benchmark needs to score a matcher against a KNOWN answer:

* inputs: :func:`load_photo` (a skimage photo, square), seeded smooth displacement fields
  (:func:`tps_displacement`, a thin-plate spline through random control displacements, and
  :func:`smooth_displacement`, a bicubic control grid), :func:`deform`, and two condition kinds
  made from the deformed photo: :func:`canny_condition` (edge drawing) and
  :func:`quantised_condition` (a segmentation-like label map);
* ground truth on the latent grid (:func:`latent_ground_truth`) and the stand-in x0_hat of the
  interleaved sampler (:func:`degrade`);
* pixel-level warping by a latent-grid flow (:func:`latent_flow_to_pixels`, :func:`sample_pixels`);
* metrics: :func:`pck`, :func:`masked_psnr`, :func:`mask_precision_recall`.

Conventions. Displacements and flows are (B, 2, H, W) with channel 0 = x (column) and
channel 1 = y (row), in pixels of their own grid. A deformation d means
``deformed(p) = photo(p + d(p))``: the condition at p shows the photo at p + d(p), so the true
forward flow (condition -> exemplar) is p + d(p). Pixel p's centre is at p (integer coordinates);
latent cell u of an f-times-downsampled grid covers pixels [u f, (u + 1) f), centre u f + (f - 1) / 2.

Metrics return Python floats; "no positions to score" (an empty mask) gives NaN, not an error,
because an empty confidence mask is a legitimate (bad) outcome a benchmark must report.

Pure torch + kornia; scikit-image is imported only inside :func:`load_photo`.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from .correspondence import coordinate_grid
from .edges import canny_edges
from .validation import check_positive, check_tensor

__all__ = [
    "canny_condition",
    "deform",
    "degrade",
    "incoherence",
    "latent_flow_to_pixels",
    "latent_ground_truth",
    "load_photo",
    "mask_precision_recall",
    "masked_psnr",
    "pck",
    "quantised_condition",
    "sample_pixels",
    "smooth_displacement",
    "thin_plate_spline",
    "tps_displacement",
]


def _check_int(where: str, name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: '{name}' must be an integer >= {low}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- inputs

def load_photo(name: str, size: int) -> Tensor:
    """Centre square crop of ``skimage.data.<name>()`` -> (1, 3, size, size) float32 in [0, 1].

    Grayscale photos are repeated to RGB, alpha is dropped; resizing is area averaging.
    """
    import numpy as np
    import skimage.data

    size = _check_int("load_photo", "size", size, 1)
    loader = getattr(skimage.data, name, None) if isinstance(name, str) and not name.startswith("_") else None
    if not callable(loader):
        raise ValueError(f"load_photo: 'name' must name a skimage.data image (astronaut, coffee, chelsea, rocket, ...), got {name!r}")
    img = np.asarray(loader())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] < 3 or img.dtype != np.uint8:
        raise ValueError(f"load_photo: 'name' {name!r} is not an 8-bit photo (shape {img.shape}, {img.dtype})")
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = np.ascontiguousarray(img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    t = torch.from_numpy(img).permute(2, 0, 1).float().unsqueeze(0) / 255
    return F.interpolate(t, size=(size, size), mode="area")


def smooth_displacement(size: int, seed: int, mean_px: float, control: int = 3) -> Tensor:
    """Seeded smooth displacement (1, 2, size, size) in pixels (dx, dy), mean |d| = mean_px.

    Gaussian control displacements on a ``control`` x ``control`` grid, bicubic upsampling
    (corners pinned to the image corners). Kept for the numbers quoted in the edge-matcher tests
    and the demo; :func:`tps_displacement` is the benchmark's field.
    """
    size = _check_int("smooth_displacement", "size", size, 2)
    control = _check_int("smooth_displacement", "control", control, 2)
    mean_px = check_positive("smooth_displacement", "mean_px", mean_px)
    g = torch.Generator().manual_seed(int(seed))
    coarse = torch.randn(1, 2, control, control, generator=g)
    d = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return d / d.norm(dim=1).mean().clamp_min(1e-6) * mean_px


def _tps_kernel(squared_distance: Tensor) -> Tensor:
    """U(r) = r^2 log r written in r^2: 0.5 r^2 log(r^2), with U(0) = 0 (its limit)."""
    safe = torch.where(squared_distance > 0, squared_distance, torch.ones_like(squared_distance))
    return 0.5 * squared_distance * torch.log(safe)


def thin_plate_spline(points: Tensor, values: Tensor, query: Tensor) -> Tensor:
    """The 2-D thin-plate spline through ``values`` at ``points``, evaluated at ``query``.

    points: (N, 2) control positions (N >= 3, not all on one line); values: (N, D);
    query: (M, 2) -> (M, D) float64.

    f(q) = a0 + a1 q_x + a2 q_y + sum_i w_i U(|q - p_i|), U(r) = r^2 log r, with the weights
    solving the exact interpolation system [K P; P^T 0] [w; a] = [values; 0] (K_ij =
    U(|p_i - p_j|), P = [1, x, y]), in float64. It interpolates exactly, reproduces affine
    values exactly and has the least bending energy among such interpolants. Coordinates are
    centred and scaled before solving (TPS is invariant to that; it only helps conditioning).
    """
    where = "thin_plate_spline"
    check_tensor(where, "points", points, 2, "(N, 2)")
    check_tensor(where, "values", values, 2, "(N, D)")
    check_tensor(where, "query", query, 2, "(M, 2)")
    if points.shape[1] != 2 or query.shape[1] != 2:
        raise ValueError(f"{where}: 'points' and 'query' must be (N, 2) / (M, 2) (x, y), got {tuple(points.shape)} and {tuple(query.shape)}")
    n = points.shape[0]
    if values.shape[0] != n:
        raise ValueError(f"{where}: 'values' must have one row per control point ({n}), got {tuple(values.shape)}")
    if n < 3:
        raise ValueError(f"{where}: 'points' needs at least 3 control points (not on one line), got {n}")
    p = points.double()
    centre = p.mean(dim=0, keepdim=True)
    scale = (p - centre).abs().max().clamp_min(1e-12)
    p = (p - centre) / scale
    q = (query.double() - centre) / scale
    affine_p = torch.cat([torch.ones(n, 1, dtype=torch.float64), p], dim=1)  # (N, 3)
    if torch.linalg.matrix_rank(affine_p) < 3:
        raise ValueError(f"{where}: 'points' all lie on one line; a thin-plate spline needs 3 non-collinear points")
    system = torch.zeros(n + 3, n + 3, dtype=torch.float64)
    system[:n, :n] = _tps_kernel(torch.cdist(p, p).square())
    system[:n, n:] = affine_p
    system[n:, :n] = affine_p.t()
    rhs = torch.cat([values.double(), torch.zeros(3, values.shape[1], dtype=torch.float64)])
    try:
        coefficients = torch.linalg.solve(system, rhs)
    except RuntimeError:  # torch raises _LinAlgError (a RuntimeError) for a singular system
        raise ValueError(f"{where}: the interpolation system is singular; are two 'points' identical?") from None
    weights, affine = coefficients[:n], coefficients[n:]
    affine_q = torch.cat([torch.ones(q.shape[0], 1, dtype=torch.float64), q], dim=1)
    return _tps_kernel(torch.cdist(q, p).square()) @ weights + affine_q @ affine


def tps_control_points(size: int, seed: int, grid: int = 3, jitter: float = 0.8) -> tuple[Tensor, Tensor]:
    """Seeded TPS controls: one point per cell of a ``grid`` x ``grid`` tiling of the image,
    uniform in the central ``jitter`` fraction of its cell (random but never clumped, which would
    make the spline bend sharply between two close points), and a standard-normal (dx, dy) each.

    Returns points (grid^2, 2) in pixels (x, y) and displacements (grid^2, 2), float64.
    """
    size = _check_int("tps_control_points", "size", size, 2)
    grid = _check_int("tps_control_points", "grid", grid, 2)
    jitter = check_positive("tps_control_points", "jitter", jitter, upper=1.0)
    g = torch.Generator().manual_seed(int(seed))
    cells = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="xy"), dim=-1).reshape(-1, 2)
    offset = 0.5 + jitter * (torch.rand(grid * grid, 2, generator=g, dtype=torch.float64) - 0.5)
    points = (cells.double() + offset) / grid * (size - 1)
    displacements = torch.randn(grid * grid, 2, generator=g, dtype=torch.float64)
    return points, displacements


def tps_displacement(size: int, seed: int, mean_px: float, grid: int = 3, jitter: float = 0.8) -> Tensor:
    """Seeded thin-plate-spline displacement (1, 2, size, size) float32 in pixels (dx, dy).

    The spline through :func:`tps_control_points` (``grid`` x ``grid`` jittered points, Gaussian
    displacements), evaluated at every pixel, then scaled so that the mean |d| over the image is
    ``mean_px`` (the spline is linear in its values, so the scaled field is the spline through
    the scaled control displacements).
    """
    mean_px = check_positive("tps_displacement", "mean_px", mean_px)
    points, displacements = tps_control_points(size, seed, grid, jitter)
    pixels = coordinate_grid(1, size, size, dtype=torch.float64)[0].flatten(1).t()  # (size^2, 2) x, y
    field = thin_plate_spline(points, displacements, pixels).t().reshape(1, 2, size, size)
    field = field / field.norm(dim=1).mean().clamp_min(1e-12) * mean_px
    return field.float()


def sample_pixels(image: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of ``image`` at pixel positions, border-clamped.

    image: (B, C, H, W); points: (B, 2, H', W') pixel coordinates (x, y) into image's grid.
    Returns (B, C, H', W').
    """
    check_tensor("sample_pixels", "image", image, 4, "(B, C, H, W)")
    check_tensor("sample_pixels", "points", points, 4, "(B, 2, H', W')")
    h, w = image.shape[-2:]
    grid = torch.stack([(points[:, 0] + 0.5) / w * 2 - 1, (points[:, 1] + 0.5) / h * 2 - 1], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def deform(image: Tensor, displacement: Tensor) -> tuple[Tensor, Tensor]:
    """deformed(p) = image(p + d(p)), bilinear, border-clamped.

    image: (B, C, H, W); displacement: (B or 1, 2, H, W) pixels (dx, dy).
    Returns (deformed (B, C, H, W), inside (B, 1, H, W) float in {0, 1}: 1 where p + d(p) lies
    inside the image, i.e. where the deformed picture shows real content).
    """
    check_tensor("deform", "image", image, 4, "(B, C, H, W)")
    check_tensor("deform", "displacement", displacement, 4, "(B, 2, H, W)")
    h, w = image.shape[-2:]
    if displacement.shape[1] != 2 or tuple(displacement.shape[-2:]) != (h, w):
        raise ValueError(f"deform: 'displacement' must be (B, 2, {h}, {w}) like 'image', got {tuple(displacement.shape)}")
    source = coordinate_grid(1, h, w, image.device, displacement.dtype) + displacement
    source = source.expand(image.shape[0], -1, -1, -1)
    deformed = sample_pixels(image, source)
    inside = ((source[:, 0] >= 0) & (source[:, 0] <= w - 1) & (source[:, 1] >= 0) & (source[:, 1] <= h - 1))
    return deformed, inside.unsqueeze(1).to(image.dtype)


# ----------------------------------------------------------------------------- conditions

def canny_condition(image: Tensor) -> Tensor:
    """kornia Canny (its defaults) of the luminance, white lines on black, as RGB.

    image: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in {0, 1}, computed in the image's dtype
    (:func:`midms_core.edges.canny_edges` with its defaults: exact hysteresis).
    """
    check_tensor("canny_condition", "image", image, 4, "(B, 3, H, W)")
    if image.shape[1] != 3:
        raise ValueError(f"canny_condition: 'image' must be RGB (B, 3, H, W), got {tuple(image.shape)}")
    return canny_edges(image).repeat(1, 3, 1, 1)


def label_palette(count: int) -> Tensor:
    """``count`` distinct label colours (count, 3) in [0, 1]: hues spaced by the golden ratio
    (neighbouring label indices get far-apart hues), saturation and value alternating so that
    hue-adjacent labels still differ in brightness."""
    count = _check_int("label_palette", "count", count, 1)
    k = torch.arange(count, dtype=torch.float32)
    hue = torch.remainder(k * 0.6180339887, 1.0) * 2 * math.pi
    saturation = torch.where(k % 2 == 0, 0.85, 0.55)
    value = torch.where(k % 3 == 0, 0.95, torch.where(k % 3 == 1, 0.75, 0.55))
    hsv = torch.stack([hue, saturation, value]).view(1, 3, count, 1)
    return kornia.color.hsv_to_rgb(hsv).view(3, count).t().contiguous()


def quantised_labels(image: Tensor, levels: int = 3, blur_sigma: float = 2.0, mode_window: int = 5) -> Tensor:
    """Coarse label map of a photo: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) int64 in [0, levels^3).

    Gaussian blur (``blur_sigma`` px) so labels follow regions, not texture; each RGB channel
    quantised to ``levels`` equal bins; label = r * levels^2 + g * levels + b; then a mode filter
    (majority label in a ``mode_window`` square) removes speckles along bin boundaries.
    """
    where = "quantised_labels"
    check_tensor(where, "image", image, 4, "(B, 3, H, W)")
    if image.shape[1] != 3:
        raise ValueError(f"{where}: 'image' must be RGB (B, 3, H, W), got {tuple(image.shape)}")
    levels = _check_int(where, "levels", levels, 2)
    mode_window = _check_int(where, "mode_window", mode_window, 1)
    if mode_window % 2 == 0:
        raise ValueError(f"{where}: 'mode_window' must be odd (centred window), got {mode_window}")
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or not 0 <= blur_sigma < 64:
        raise ValueError(f"{where}: 'blur_sigma' must be a number in [0, 64) pixels, got {blur_sigma!r}")
    x = image.float()
    if blur_sigma > 0:
        k = 2 * math.ceil(3 * blur_sigma) + 1
        x = kornia.filters.gaussian_blur2d(x, (k, k), (blur_sigma, blur_sigma), border_type="reflect")
    bins = (x.clamp(0, 1) * levels).floor().clamp(max=levels - 1).long()
    labels = bins[:, 0] * levels * levels + bins[:, 1] * levels + bins[:, 2]  # (B, H, W)
    if mode_window > 1:
        votes = F.one_hot(labels, levels**3).permute(0, 3, 1, 2).float()
        votes = F.avg_pool2d(votes, mode_window, stride=1, padding=mode_window // 2, count_include_pad=False)
        labels = votes.argmax(dim=1)
    return labels.unsqueeze(1)


def quantised_condition(image: Tensor, levels: int = 3, blur_sigma: float = 2.0, mode_window: int = 5) -> Tensor:
    """A segmentation-like condition: :func:`quantised_labels` painted with :func:`label_palette`.

    image: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1]. The colours are arbitrary per label
    (as in a segmentation map), so only the region layout carries information about the photo.
    """
    labels = quantised_labels(image, levels, blur_sigma, mode_window)
    palette = label_palette(levels**3).to(image.device)
    return palette[labels[:, 0]].permute(0, 3, 1, 2).to(image.dtype)


# ----------------------------------------------------------------------------- latent grid

def latent_ground_truth(displacement: Tensor, inside: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """The true forward flow on the latent grid and where it is defined.

    displacement: (B, 2, H, W) pixels; inside: (B, 1, H, W) from :func:`deform`; factor: pixels
    per latent cell (H, W divisible by it). Returns truth (B, 2, h, w) in latent cells, u +
    mean_cell(d) / factor, and valid (B, h, w) bool: every pixel of the cell has its source
    inside the photo (a truly matchable position).
    """
    where = "latent_ground_truth"
    check_tensor(where, "displacement", displacement, 4, "(B, 2, H, W)")
    check_tensor(where, "inside", inside, 4, "(B, 1, H, W)")
    factor = _check_int(where, "factor", factor, 1)
    h, w = displacement.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"{where}: the image size {(h, w)} must be divisible by 'factor' {factor}")
    if tuple(inside.shape[-2:]) != (h, w):
        raise ValueError(f"{where}: 'inside' must be on the grid of 'displacement' {(h, w)}, got {tuple(inside.shape)}")
    truth = coordinate_grid(displacement.shape[0], h // factor, w // factor, displacement.device) + F.avg_pool2d(displacement.float(), factor) / factor
    valid = F.avg_pool2d(inside.float(), factor)[:, 0] > 0.999
    return truth, valid


def latent_flow_to_pixels(flow: Tensor, size: tuple[int, int], factor: int) -> Tensor:
    """A latent-grid flow (B, 2, h, w) in latent cells -> (B, 2, H, W) in image pixels.

    Cell u's centre is pixel (u + 0.5) * factor - 0.5; the flow is upsampled bilinearly with the
    same convention (align_corners=False), so the pixel warp agrees with the latent warp at cell
    centres and interpolates smoothly between them.
    """
    check_tensor("latent_flow_to_pixels", "flow", flow, 4, "(B, 2, h, w)")
    factor = _check_int("latent_flow_to_pixels", "factor", factor, 1)
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


# ----------------------------------------------------------------------------- metrics

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
