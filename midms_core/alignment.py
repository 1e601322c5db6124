"""Global alignment and the locality prior: matching that stays coherent across instances.

Local descriptors alone cannot tell one eye from the other, or a jaw line from a collar, when
the exemplar is ANOTHER person: a per-position soft-argmax then jumps between look-alikes and
the warp is shredded. Two steps fix the layout first and leave the detail to the local match:

1. :func:`search_similarity`: a robust global alignment. Every similarity transform of a grid
   (scale, translation, optionally mirrored) is scored by the mean cosine between the condition
   features and the exemplar features sampled at the transformed positions, on a coarse grid;
   the best one wins. A dense search, not a fit to matches, so one bad match cannot pull it.
   :func:`refine_affine` can then fit an affine map to the confident matches of a first
   prior-guided match (weighted least squares).
2. :class:`SpatialPrior`: a Gaussian locality term around the aligned position T(u) added to
   every warp logit, L(u, v) = C(u, v) / tau - |v - T(u)|^2 / (2 sigma^2). It is a rank-4 inner
   product of per-position vectors (``bias``), so the correlation is still streamed in blocks
   and each row's softmax is exact; the backward direction (for the cycle check) uses the same
   logits, softmaxed over condition positions.

Coordinates: (x, y) in cells of each side's grid; a transform maps condition cells to exemplar
cells, ``T(u) = A u + t`` with A (2, 2) and t (2,), stored as a (B, 2, 3) matrix [A | t].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .correspondence import centre_normalise, coordinate_grid
from .validation import check_positive, check_tensor

#: global alignment choices of a matcher: a similarity search first, or none (features alone)
ALIGNMENTS = ("similarity", "none")

__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "SpatialPrior",
    "affine_targets",
    "identity_transform",
    "refine_affine",
    "search_similarity",
]


@dataclass(frozen=True)
class SpatialPrior:
    """Gaussian locality term of the warp logits: -|v - target(u)|^2 / (2 sigma^2).

    target: (B, 2, Hx, Wx) float32, the expected exemplar cell (x, y) of each condition cell;
    sigma:  width in exemplar cells (> 0), one number or one per condition cell (B, 1, Hx, Wx);
            larger is weaker.
    """

    target: Tensor
    sigma: Union[float, Tensor]

    def __post_init__(self) -> None:
        check_tensor("SpatialPrior", "target", self.target, 4, "(B, 2, Hx, Wx)")
        if self.target.shape[1] != 2:
            raise ValueError(f"SpatialPrior: 'target' must have 2 channels (x, y), got {tuple(self.target.shape)}")
        if isinstance(self.sigma, Tensor):
            check_tensor("SpatialPrior", "sigma", self.sigma, 4, "(B, 1, Hx, Wx)")
            if self.sigma.shape[1] != 1 or self.sigma.shape[-2:] != self.target.shape[-2:] or not bool((self.sigma > 0).all()):
                raise ValueError(f"SpatialPrior: a per-cell 'sigma' must be (B, 1, {self.target.shape[-2]}, {self.target.shape[-1]}) "
                                 f"and > 0, got {tuple(self.sigma.shape)}")
        else:
            check_positive("SpatialPrior", "sigma", self.sigma)

    def bias(self, exemplar_grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The pair term as (condition_bias (B, 4, Hx, Wx), exemplar_bias (1, 4, Hy, Wy)) with
        <condition_bias(u), exemplar_bias(v)> = -|v - target(u)|^2 / (2 sigma^2).

        Written as [a / s^2, -|a|^2 / (2 s^2), 1 / s^2] . [v, 1, |v|^2 / 2] with a = target(u) and
        s = sigma(u), both measured from the exemplar grid's centre so that float32 keeps the small
        distances.
        """
        hy, wy = exemplar_grid
        centre = self.target.new_tensor([(wy - 1) / 2, (hy - 1) / 2]).view(1, 2, 1, 1)
        a = self.target.float() - centre
        sigma = self.sigma.float().to(a.device) if isinstance(self.sigma, Tensor) else torch.full_like(a[:, :1], float(self.sigma))
        inv = 1.0 / sigma.square()  # (B, 1, Hx, Wx)
        v = coordinate_grid(1, hy, wy, self.target.device) - centre
        cond = torch.cat([a * inv, -0.5 * inv * a.square().sum(1, keepdim=True), inv], dim=1)
        exem = torch.cat([v, torch.ones_like(v[:, :1]), -0.5 * v.square().sum(1, keepdim=True)], dim=1)
        return cond, exem

    def to(self, device) -> "SpatialPrior":
        sigma = self.sigma.to(device) if isinstance(self.sigma, Tensor) else self.sigma
        return SpatialPrior(self.target.to(device), sigma)


@dataclass(frozen=True)
class Alignment:
    """A global alignment: matrix (B, 2, 3) condition cells -> exemplar cells, mirrored (B,) bool
    (the transform flips x; the matcher's mirrored exemplar features apply), score (B,) the
    search's mean cosine."""

    matrix: Tensor
    mirrored: Tensor
    score: Tensor


def identity_transform(batch: int, condition_grid: tuple[int, int], exemplar_grid: tuple[int, int]) -> Tensor:
    """The transform that maps the condition grid onto the exemplar grid edge to edge (pure
    scaling per axis; the identity when the grids agree): (B, 2, 3) float32."""
    (hx, wx), (hy, wy) = condition_grid, exemplar_grid
    sx, sy = wy / wx, hy / hx
    m = torch.tensor([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2]])
    return m.expand(batch, 2, 3).clone()


def affine_targets(matrix: Tensor, condition_grid: tuple[int, int]) -> Tensor:
    """T(u) for every condition cell: (B, 2, 3) -> (B, 2, Hx, Wx) exemplar cells (x, y)."""
    check_tensor("affine_targets", "matrix", matrix, 3, "(B, 2, 3)")
    hx, wx = condition_grid
    u = coordinate_grid(1, hx, wx, matrix.device).flatten(2)  # (1, 2, N)
    out = matrix[:, :, :2].float() @ u + matrix[:, :, 2:].float()
    return out.view(matrix.shape[0], 2, hx, wx)


def _similarity(scale: float, shift: tuple[float, float], mirrored: bool, condition_grid, exemplar_grid) -> Tensor:
    """(2, 3): condition centre -> exemplar centre + shift (exemplar cells), scaled by ``scale``
    relative to the edge-to-edge map, x flipped when ``mirrored``."""
    (hx, wx), (hy, wy) = condition_grid, exemplar_grid
    base = min(wy / wx, hy / hx) * scale
    a = torch.tensor([[-base if mirrored else base, 0.0], [0.0, base]], dtype=torch.float64)
    cx = torch.tensor([(wx - 1) / 2, (hx - 1) / 2], dtype=torch.float64)
    cy = torch.tensor([(wy - 1) / 2 + shift[0], (hy - 1) / 2 + shift[1]], dtype=torch.float64)
    return torch.cat([a, (cy - a @ cx).unsqueeze(1)], dim=1)


def _pool_to(features: Tensor, cells: int) -> tuple[Tensor, int]:
    """Average-pool so that the larger side is at most ``cells``; returns (pooled, factor)."""
    factor = max(1, math.ceil(max(features.shape[-2:]) / cells))
    return (F.avg_pool2d(features, factor, ceil_mode=True) if factor > 1 else features), factor


def _scores(cond: Tensor, exem: Tensor, matrices: Tensor, factor_x: int, factor_y: int) -> Tensor:
    """Mean over coarse condition cells of the cosine with the exemplar sampled at T(u).

    cond: (C, hx', wx') normalised coarse condition features; exem: (C, hy', wy'); matrices:
    (K, 2, 3) in FINE cells. Returns (K,). Positions mapped outside the exemplar score 0.
    """
    hx, wx = cond.shape[-2:]
    hy, wy = exem.shape[-2:]
    # coarse cell centres in fine cells: (i + 0.5) * f - 0.5
    u = coordinate_grid(1, hx, wx, cond.device).flatten(2)[0]  # (2, N)
    u = (u + 0.5) * factor_x - 0.5
    fine = matrices[:, :, :2] @ u + matrices[:, :, 2:]  # (K, 2, N) fine exemplar cells
    coarse = (fine + 0.5) / factor_y - 0.5
    grid = torch.stack([(coarse[:, 0] + 0.5) / wy * 2 - 1, (coarse[:, 1] + 0.5) / hy * 2 - 1], dim=-1)  # (K, N, 2)
    sampled = F.grid_sample(exem.unsqueeze(0).expand(matrices.shape[0], -1, -1, -1), grid.unsqueeze(1),
                            mode="bilinear", padding_mode="zeros", align_corners=False)  # (K, C, 1, N)
    return (sampled[:, :, 0] * cond.flatten(1).unsqueeze(0)).sum(1).mean(1)


def search_similarity(
    condition_features: Tensor,
    exemplar_features: Tensor,
    mirrored_exemplar_features: Optional[Tensor] = None,
    scales: Sequence[float] = tuple(2.0 ** (k / 4) for k in range(-3, 4)),
    max_shift: float = 0.35,
    coarse_cells: int = 16,
    mirror_margin: float = 0.06,
) -> Alignment:
    """The similarity transform (scale, translation, optionally mirror) that best aligns the
    condition's features with the exemplar's.

    condition_features: (B, C, Hx, Wx); exemplar_features: (B, C, Hy, Wy) on the latent grids;
    mirrored_exemplar_features: (B, C, Hy, Wy) or None: features of the left-right flipped
    exemplar, flipped back (so a mirrored layout describes like the condition); with them the
    mirrored transforms are searched too and win only by more than ``mirror_margin`` (mean
    cosine), because near-symmetric subjects (faces) score alike both ways.

    Both sides are channel-centred, normalised and average-pooled to at most ``coarse_cells``
    per side (coarse: robust to local look-alikes, cheap). Candidates: every scale in ``scales``
    (relative to edge-to-edge) and every translation within ``max_shift`` of the exemplar's size
    in steps of one coarse cell. Score: mean cosine over condition cells; cells mapped outside
    the exemplar count 0. The best candidate is refined once at half the step.
    """
    where = "search_similarity"
    check_tensor(where, "condition_features", condition_features, 4, "(B, C, Hx, Wx)")
    check_tensor(where, "exemplar_features", exemplar_features, 4, "(B, C, Hy, Wy)")
    if mirrored_exemplar_features is not None:
        check_tensor(where, "mirrored_exemplar_features", mirrored_exemplar_features, 4, "(B, C, Hy, Wy)")
        if mirrored_exemplar_features.shape != exemplar_features.shape:
            raise ValueError(f"{where}: 'mirrored_exemplar_features' must be shaped like 'exemplar_features' {tuple(exemplar_features.shape)}")
    if condition_features.shape[1] != exemplar_features.shape[1]:
        raise ValueError(f"{where}: both sides need the same channel count, got {condition_features.shape[1]} and {exemplar_features.shape[1]}")
    if not scales or any(not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0) for s in scales):
        raise ValueError(f"{where}: 'scales' must be positive numbers, got {scales!r}")
    check_positive(where, "max_shift", max_shift, upper=1.0)
    batch = max(condition_features.shape[0], exemplar_features.shape[0])
    grid_x, grid_y = tuple(condition_features.shape[-2:]), tuple(exemplar_features.shape[-2:])

    def coarse(f: Tensor) -> tuple[Tensor, int]:
        pooled, factor = _pool_to(centre_normalise(f), coarse_cells)
        return centre_normalise(pooled), factor

    cond, fx = coarse(condition_features)
    sides = [(False, coarse(exemplar_features))]
    if mirrored_exemplar_features is not None:
        sides.append((True, coarse(mirrored_exemplar_features)))
    fy = sides[0][1][1]
    step = float(fy)  # one coarse exemplar cell, in fine cells
    hy, wy = grid_y
    reach_x, reach_y = max_shift * wy, max_shift * hy
    shifts = [(dx * step, dy * step)
              for dy in range(-int(reach_y // step), int(reach_y // step) + 1)
              for dx in range(-int(reach_x // step), int(reach_x // step) + 1)]

    matrices, mirrored, scores = [], [], []
    for b in range(batch):
        cb = cond[min(b, cond.shape[0] - 1)]
        best = {}
        for flip, (exem, _) in sides:
            eb = exem[min(b, exem.shape[0] - 1)]
            cands = [(s, t) for s in scales for t in shifts]
            mats = torch.stack([_similarity(s, t, flip, grid_x, grid_y) for s, t in cands]).float()
            sc = torch.cat([_scores(cb, eb, mats[i : i + 512], fx, fy) for i in range(0, len(cands), 512)])
            k = int(sc.argmax())
            s0, (tx, ty) = cands[k]
            # one refinement at half the steps around the winner
            ratios = sorted(scales)
            ds = (ratios[1] / ratios[0]) ** 0.5 if len(ratios) > 1 else 1.0
            fine = [(s0 * r, (tx + dx * step / 2, ty + dy * step / 2))
                    for r in (1 / ds, 1.0, ds) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            fmats = torch.stack([_similarity(s, t, flip, grid_x, grid_y) for s, t in fine]).float()
            fsc = _scores(cb, eb, fmats, fx, fy)
            j = int(fsc.argmax())
            best[flip] = (float(fsc[j]), fmats[j])
        flip = True in best and best[True][0] > best[False][0] + mirror_margin
        score, matrix = best[flip]
        matrices.append(matrix)
        mirrored.append(flip)
        scores.append(score)
    return Alignment(matrix=torch.stack(matrices).to(condition_features.device),
                     mirrored=torch.tensor(mirrored, device=condition_features.device),
                     score=torch.tensor(scores, device=condition_features.device))


def refine_affine(matrix: Tensor, forward_flow: Tensor, weights: Tensor, pull: float = 1.0) -> Tensor:
    """An affine map fitted to matches, by weighted least squares, regularised towards ``matrix``.

    matrix: (B, 2, 3) the current alignment; forward_flow: (B, 2, Hx, Wx) matched exemplar cells;
    weights: (B, 1, Hx, Wx) >= 0 (e.g. the confidence mask). Minimises
    sum_u w(u) |M [u; 1] - F(u)|^2 + pull * N * |M - matrix|^2-ish (a ridge towards the current
    transform on the normalised coordinates), so that few or degenerate matches keep it.
    Returns (B, 2, 3) float32.
    """
    check_tensor("refine_affine", "matrix", matrix, 3, "(B, 2, 3)")
    check_tensor("refine_affine", "forward_flow", forward_flow, 4, "(B, 2, Hx, Wx)")
    check_tensor("refine_affine", "weights", weights, 4, "(B, 1, Hx, Wx)")
    b, _, hx, wx = forward_flow.shape
    u = coordinate_grid(1, hx, wx, forward_flow.device, torch.float64).flatten(2)[0]  # (2, N)
    centre = u.mean(1, keepdim=True)
    spread = (u - centre).abs().max().clamp_min(1.0)
    un = (u - centre) / spread
    design = torch.cat([un, torch.ones_like(un[:1])], dim=0).t()  # (N, 3) in normalised coords
    out = []
    for i in range(b):
        m0 = matrix[min(i, matrix.shape[0] - 1)].double()
        # current transform in normalised coordinates: F = A (spread un + centre) + t
        a0 = m0[:, :2] * spread
        t0 = m0[:, :2] @ centre[:, 0] + m0[:, 2]
        prior = torch.cat([a0, t0.unsqueeze(1)], dim=1).t()  # (3, 2)
        w = weights[min(i, weights.shape[0] - 1)].double().flatten()  # (N,)
        target = forward_flow[i].double().flatten(1).t()  # (N, 2)
        lam = pull * max(float(w.sum()), 1.0) * 0.05
        lhs = design.t() @ (w[:, None] * design) + lam * torch.eye(3, dtype=torch.float64)
        rhs = design.t() @ (w[:, None] * target) + lam * prior
        sol = torch.linalg.solve(lhs, rhs).t()  # (2, 3) in normalised coords
        a = sol[:, :2] / spread
        t = sol[:, 2] - a @ centre[:, 0]
        out.append(torch.cat([a, t.unsqueeze(1)], dim=1))
    return torch.stack(out).float().to(forward_flow.device)
