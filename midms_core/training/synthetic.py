"""Known deformations: a photo and a warped copy with the exact correspondence between them.

Training pairs (:mod:`midms_core.training.data`) and the benchmarks both need a pair whose
answer is known: seeded smooth displacement fields (:func:`tps_displacement`, a thin-plate
spline through random control displacements, and :func:`smooth_displacement`, a bicubic control
grid), :func:`deform` to apply one, a photometric change (:func:`colour_shift`), and the ground
truth on the latent grid (:func:`latent_ground_truth`, :func:`pixel_truth_to_latent`).

Conventions. Displacements and flows are (B, 2, H, W) with channel 0 = x (column) and
channel 1 = y (row), in pixels of their own grid. A deformation d means
``deformed(p) = photo(p + d(p))``: the condition at p shows the photo at p + d(p), so the true
forward flow (condition -> exemplar) is p + d(p). Pixel p's centre is at p (integer coordinates);
latent cell u of an f-times-downsampled grid covers pixels [u f, (u + 1) f), centre u f + (f - 1) / 2.
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from ..correspondence import coordinate_grid
from ..validation import check_int, check_positive, check_tensor


def smooth_displacement(size: int, seed: int, mean_px: float, control: int = 3) -> Tensor:
    """Seeded smooth displacement (1, 2, size, size) in pixels (dx, dy), mean |d| = mean_px.

    Gaussian control displacements on a ``control`` x ``control`` grid, bicubic upsampling
    (corners pinned to the image corners). Kept for the numbers quoted in the edge-matcher tests
    and the demo; :func:`tps_displacement` is the benchmark's field.
    """
    size = check_int("smooth_displacement", "size", size, 2)
    control = check_int("smooth_displacement", "control", control, 2)
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
    size = check_int("tps_control_points", "size", size, 2)
    grid = check_int("tps_control_points", "grid", grid, 2)
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
    factor = check_int(where, "factor", factor, 1)
    h, w = displacement.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"{where}: the image size {(h, w)} must be divisible by 'factor' {factor}")
    if tuple(inside.shape[-2:]) != (h, w):
        raise ValueError(f"{where}: 'inside' must be on the grid of 'displacement' {(h, w)}, got {tuple(inside.shape)}")
    truth = coordinate_grid(displacement.shape[0], h // factor, w // factor, displacement.device) + F.avg_pool2d(displacement.float(), factor) / factor
    valid = F.avg_pool2d(inside.float(), factor)[:, 0] > 0.999
    return truth, valid


def colour_shift(image: Tensor, seed: int) -> Tensor:
    """A seeded photometric change: hue rotated by 60-120 degrees, saturation scaled by
    0.7-1.3, gamma 0.7-1.4. (B, 3, H, W) in [0, 1] -> same."""
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(4, generator=g)
    hsv = kornia.color.rgb_to_hsv(image.float())
    hue = torch.remainder(hsv[:, :1] + (math.pi / 3) * (1 + float(u[0])) * (1 if u[1] < 0.5 else -1), 2 * math.pi)
    saturation = (hsv[:, 1:2] * (0.7 + 0.6 * float(u[2]))).clamp(0, 1)
    rgb = kornia.color.hsv_to_rgb(torch.cat([hue, saturation, hsv[:, 2:]], dim=1)).clamp(0, 1)
    return rgb.pow(0.7 + 0.7 * float(u[3]))


def pixel_truth_to_latent(truth: Tensor, inside: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """A pixel-level forward map (1, 2, S, S) (exemplar pixels matched by condition pixels) ->
    latent-grid truth (1, 2, S/f, S/f) in exemplar latent cells and valid (1, S/f, S/f): the
    map as a displacement from each pixel, through :func:`latent_ground_truth`."""
    size = truth.shape[-2:]
    return latent_ground_truth(truth.float() - coordinate_grid(1, *size, truth.device), inside, factor)
