"""Maps through point pairs, the maths under the anchor field (:mod:`midms_core.anchors.field`).

* global maps: the weighted least-squares similarity (closed form) and affine map, and the
  robust fit of either (iteratively reweighted with Tukey's biweight, so one wrong anchor
  cannot pull it);
* the regularised thin-plate spline (TPS) through a set of centres, refused when its bordered
  system is ill-conditioned;
* the guards before a fit: coincident anchors merged, degenerate sets (tiny spread, nearly
  collinear) named;
* coordinates: pixels -> latent cells, a grid's cell centres, a (2, 3) map applied to points.

All float64 on the CPU (anchors are few); coordinates are (x, y) cells, cell centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "Spline",
    "apply_map",
    "degenerate",
    "fit_affine",
    "fit_similarity",
    "fit_tps",
    "grid_points",
    "merge_coincident",
    "robust_fit",
    "to_cells",
]


# ----------------------------------------------------------------------------- coordinates

def to_cells(points: Tensor, image_size: tuple[float, float], grid: tuple[int, int]) -> Tensor:
    """Continuous pixel points (P, 2) (0 at the image's left / top edge) of an image
    (width, height) -> (P, 2) float64 cells of a (h, w) grid covering it (centres at integers)."""
    width, height = image_size
    h, w = grid
    return points.double() * torch.tensor([w / width, h / height], dtype=torch.float64) - 0.5


def grid_points(grid: tuple[int, int]) -> Tensor:
    """(h * w, 2) float64 cell centres (x, y), row-major."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def apply_map(matrix: Tensor, points: Tensor) -> Tensor:
    """(2, 3) [A | t] applied to (P, 2) -> (P, 2)."""
    return points @ matrix[:, :2].t() + matrix[:, 2]


# ----------------------------------------------------------------------------- global maps

def fit_similarity(src: Tensor, dst: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """Weighted least-squares similarity dst ~ s R src + t (no reflection), closed form.

    src, dst: (N, 2) float64; weights: (N,) >= 0 or None. Returns (2, 3) [A | t]. One point (or
    all points at one place) gives the translation."""
    w = torch.ones(src.shape[0], dtype=torch.float64) if weights is None else weights.double()
    w = w / w.sum().clamp_min(1e-300)
    ms, md = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    s, d = src - ms, dst - md
    denom = float((w * s.square().sum(1)).sum())
    if denom < 1e-12:
        a, b = 1.0, 0.0
    else:
        a = float((w * (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1])).sum()) / denom
        b = float((w * (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])).sum()) / denom
    m = torch.tensor([[a, -b], [b, a]], dtype=torch.float64)
    return torch.cat([m, (md - m @ ms)[:, None]], dim=1)


def fit_affine(src: Tensor, dst: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """Weighted least-squares affine map dst ~ A src + t. (N, 2), (N, 2), (N,) -> (2, 3).
    Needs 3 points not on one line (the caller checks)."""
    w = torch.ones(src.shape[0], dtype=torch.float64) if weights is None else weights.double()
    design = torch.cat([src, torch.ones(src.shape[0], 1, dtype=torch.float64)], dim=1) * w.sqrt()[:, None]
    solution = torch.linalg.lstsq(design, dst * w.sqrt()[:, None], driver="gelsd").solution  # (3, 2)
    return solution.t().contiguous()


def robust_fit(src: Tensor, dst: Tensor, transform: str = "similarity", iterations: int = 10,
               min_scale: float = 0.5) -> tuple[Tensor, Tensor]:
    """The global map by iteratively reweighted least squares with Tukey's biweight.

    src, dst: (N, 2) float64 cells. Residual scale = 1.4826 * median residual (at least
    ``min_scale`` cells), cut-off 4.685 scales. Returns ((2, 3) map, (N,) final weights)."""
    fit = fit_affine if transform == "affine" else fit_similarity
    weights = torch.ones(src.shape[0], dtype=torch.float64)
    matrix = fit(src, dst)
    for _ in range(iterations):
        residual = (apply_map(matrix, src) - dst).norm(dim=1)
        scale = max(1.4826 * float(residual.median()), min_scale)
        ratio = residual / (4.685 * scale)
        new = torch.where(ratio < 1, (1 - ratio.square()).square(), torch.zeros_like(ratio))
        if int((new > 0).sum()) < (3 if transform == "affine" else 2):
            break
        weights = new
        matrix = fit(src, dst, weights)
    return matrix, weights


# ----------------------------------------------------------------------------- thin-plate spline

#: above this condition number the spline's system is not solved (the caller keeps its global map)
_MAX_CONDITION = 1e10


def _tps_kernel(r: Tensor) -> Tensor:
    """U(r) = r^2 log r, 0 at r = 0."""
    return torch.where(r > 0, r.square() * torch.log(r.clamp_min(1e-300)), torch.zeros_like(r))


@dataclass(frozen=True)
class Spline:
    """A fitted thin-plate spline: centres (N, 2), kernel weights (N, 2), affine part (3, 2),
    coordinates divided by ``unit`` before evaluation."""

    centres: Tensor
    weights: Tensor
    affine: Tensor
    unit: float

    def __call__(self, points: Tensor) -> Tensor:
        """(P, 2) cells -> (P, 2) spline values."""
        p, c = points / self.unit, self.centres / self.unit
        kernel = _tps_kernel(torch.cdist(p, c))
        return kernel @ self.weights + torch.cat([p, torch.ones(p.shape[0], 1, dtype=torch.float64)], 1) @ self.affine


def fit_tps(centres: Tensor, values: Tensor, smoothing: float, unit: float) -> tuple[Optional[Spline], float]:
    """The regularised thin-plate spline f with f(centres) ~ values.

    centres: (N, 2) float64, N >= 3 not collinear; values: (N, 2); smoothing: lambda >= 0
    added to the kernel's diagonal; unit: coordinates are divided by it (so lambda does not
    depend on the grid size). Solves [[K + lambda I, P], [P^T, 0]] [w; a] = [values; 0].
    Returns (spline, the system's condition number); the spline is None when that number is
    above ``_MAX_CONDITION`` (coincident centres without smoothing, say)."""
    n = centres.shape[0]
    c = centres / unit
    kernel = _tps_kernel(torch.cdist(c, c)) + smoothing * torch.eye(n, dtype=torch.float64)
    poly = torch.cat([c, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    system = torch.zeros(n + 3, n + 3, dtype=torch.float64)
    system[:n, :n], system[:n, n:], system[n:, :n] = kernel, poly, poly.t()
    rhs = torch.cat([values, torch.zeros(3, 2, dtype=torch.float64)])
    condition = float(torch.linalg.cond(system))
    if not math.isfinite(condition) or condition > _MAX_CONDITION:
        return None, condition  # solving would be meaningless (or raise): the caller keeps its global map
    solution = torch.linalg.solve(system, rhs)
    return Spline(centres, solution[:n], solution[n:], unit), condition


# ----------------------------------------------------------------------------- guards

#: below these, a set of 3+ anchors is degenerate for a spline or an affine map
_MIN_SPREAD_CELLS = 1.0
_MIN_ASPECT = 0.05


def degenerate(src: Tensor) -> Optional[str]:
    """Why a set of (N >= 3) condition anchors cannot carry a spline / affine map, or None."""
    centred = src - src.mean(0)
    singular = torch.linalg.svdvals(centred) / math.sqrt(src.shape[0])
    if float(singular[0]) < _MIN_SPREAD_CELLS:
        return f"anchors within {float(singular[0]):.2f} cells of each other"
    if float(singular[1]) < _MIN_ASPECT * float(singular[0]):
        return "anchors (nearly) on one line"
    return None


def merge_coincident(src: Tensor, dst: Tensor, tolerance: float = 1e-6) -> tuple[Tensor, Tensor, int]:
    """Condition anchors at one place (two points clicked on one pixel, collapsed detections)
    become one, at the mean of their exemplar points: (N, 2), (N, 2) -> (M, 2), (M, 2), and how
    many were merged away."""
    keep_src, keep_dst, taken = [], [], torch.zeros(src.shape[0], dtype=torch.bool)
    for i in range(src.shape[0]):
        if taken[i]:
            continue
        same = ((src - src[i]).abs().amax(dim=1) <= tolerance) & ~taken
        taken |= same
        keep_src.append(src[i])
        keep_dst.append(dst[same].mean(0))
    return torch.stack(keep_src), torch.stack(keep_dst), src.shape[0] - len(keep_src)
