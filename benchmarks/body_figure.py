"""Anchor fields on an articulated figure with exact ground truth: ``python -m benchmarks.body_figure``.

Does the per-part body field (``FieldSettings(body="parts")``) follow an articulated body better
than one global spline through all its joints (``body="global"``)? A synthetic 2-D figure answers
with EXACT dense correspondence:

* the figure is rigid parts hung on a COCO-18 skeleton: a convex torso polygon, capsules for
  upper arms, forearms (with a hand), thighs and shins (with a foot), and a head disc on a neck.
  A pose is the torso's place, rotation and scale, a head tilt and one angle per limb segment
  (relative to its parent, mirrored between the sides). Each part maps its own frame into the
  image by a similarity, so a figure point has a part and part-local coordinates, and the same
  coordinates placed by the other pose ARE its correspondence. Parts are drawn in the order torso,
  thighs, shins, upper arms, forearms, head: a point belongs to the last part that covers it, and
  a correspondence is visible when the same part owns the target in the other pose;
* texture: per part, a seeded base colour plus a few sinusoids of the part-local coordinates, so
  it moves with the part; the background is a fixed pattern of the image coordinates;
* six seeded pose pairs (condition pose A, exemplar pose B): a right arm raised by ~150 degrees,
  arms swapping up and down, elbows folding the forearms across the chest, a knee raised, the
  whole figure shifted / rotated / scaled, and a random pose with large angles; every angle and
  the position carry a little seeded jitter;
* images are 512 px, the grid 64 x 64 cells (8 px a cell, as an SD latent of a 512 px image);
  the 18 joints of each pose, labelled "body/<name>", become cells with :func:`to_cells`.

Scored: every condition cell whose centre lies on the figure and whose correspondence is visible
in the exemplar pose. PCK@r = share of those cells whose T(u) lies within r cells of the true
exemplar position; EPE = mean end-point error in cells; folded = share with a non-positive
Jacobian determinant of T (the field turns inside out there). Rows: identity; one robust
similarity through all joints (the global map under the spline); the global spline; the per-part
field with several ``blend`` widths (a fraction of the grid's side; 0.02 is the default).

Every part's own map is exact here (two anchors give the similarity of a limb, five the torso's,
six the head's), so what the per-part rows lose comes from blending parts by the distance to
their bones, and what the global rows lose from one smooth map bending across moved limbs.

    python -m benchmarks.body_figure                  # -> benchmarks/body_figure.md, /tmp/body_figure.png
    python -m benchmarks.body_figure --markdown ''    # print only
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.tables import Table, machine, publish
from midms_core.anchors.field import FieldSettings, anchor_field
from midms_core.anchors.fitting import robust_fit, to_cells
from midms_core.anchors.keypoints import BODY_COCO18

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = ROOT / "benchmarks" / "body_figure.md"
DEFAULT_PICTURE = Path("/tmp/body_figure.png")

IMAGE_SIDE = 512
GRID = (64, 64)
CELL_PX = IMAGE_SIDE / GRID[1]
RADII = (1, 2, 4)
LABELS = tuple(f"body/{name}" for name in BODY_COCO18)
BLENDS = (0.01, 0.02, 0.05, 0.1)

# ------------------------------------------------------------------------------ the figure
# Lengths are pixels at scale 1, in part frames whose y axis points down the image. "Right" is
# the figure's right, drawn on the image's left (the figure faces the viewer), as COCO labels it.

SHOULDER = (44.0, 12.0)  # torso frame, x mirrored per side; the neck is the torso's origin
HIP = (26.0, 140.0)
#: convex, listed clockwise on screen (see :func:`_inside_convex`)
TORSO_OUTLINE = ((-40.0, -6.0), (40.0, -6.0), (58.0, 18.0), (46.0, 150.0), (-46.0, 150.0), (-58.0, 18.0))
HEAD_CENTRE, HEAD_RADIUS, NECK_RADIUS = (0.0, -50.0), 32.0, 14.0
FACE_POINTS = {"nose": (0.0, -44.0), "right_eye": (-12.0, -56.0), "left_eye": (12.0, -56.0),
               "right_ear": (-30.0, -50.0), "left_ear": (30.0, -50.0)}  # head frame, origin at the neck


@dataclass(frozen=True)
class Limb:
    """A capsule hung from ``root`` (a joint of ``parent``) reaching ``end`` after ``length``;
    the shape runs ``reach`` past the end joint (a hand, a foot). side: -1 right, +1 left."""

    parent: str
    root: str
    end: str
    length: float
    radius: float
    reach: float
    side: int


#: in kinematic order: a limb's parent is placed before it
LIMBS = {
    "right_upper_arm": Limb("torso", "right_shoulder", "right_elbow", 76.0, 15.0, 0.0, -1),
    "left_upper_arm": Limb("torso", "left_shoulder", "left_elbow", 76.0, 15.0, 0.0, 1),
    "right_forearm": Limb("right_upper_arm", "right_elbow", "right_wrist", 66.0, 12.0, 14.0, -1),
    "left_forearm": Limb("left_upper_arm", "left_elbow", "left_wrist", 66.0, 12.0, 14.0, 1),
    "right_thigh": Limb("torso", "right_hip", "right_knee", 90.0, 19.0, 0.0, -1),
    "left_thigh": Limb("torso", "left_hip", "left_knee", 90.0, 19.0, 0.0, 1),
    "right_shin": Limb("right_thigh", "right_knee", "right_ankle", 88.0, 15.0, 12.0, -1),
    "left_shin": Limb("left_thigh", "left_knee", "left_ankle", 88.0, 15.0, 12.0, 1),
}
#: draw order: a point belongs to the last part covering it
PARTS = ("torso", "right_thigh", "left_thigh", "right_shin", "left_shin", "right_upper_arm", "left_upper_arm",
         "right_forearm", "left_forearm", "head")

#: limb angles in degrees relative to the parent segment, mirrored per side: 0 = straight on (for
#: an upper limb: down along the torso), positive = away from the body's midline / upwards
STANDING = {"right_upper_arm": 18.0, "left_upper_arm": 18.0, "right_forearm": 8.0, "left_forearm": 8.0,
            "right_thigh": 6.0, "left_thigh": 6.0, "right_shin": -4.0, "left_shin": -4.0}


@dataclass(frozen=True)
class Pose:
    """Where the figure stands: the neck (x, y) in pixels, the torso's rotation (degrees,
    clockwise on screen), its scale, the head's tilt on the torso and the limb angles."""

    neck: tuple[float, float] = (256.0, 190.0)
    rotation: float = 0.0
    scale: float = 0.8
    head_tilt: float = 0.0
    angles: dict = field(default_factory=lambda: dict(STANDING))

    def with_angles(self, **angles: float) -> "Pose":
        return replace(self, angles={**self.angles, **angles})


@dataclass(frozen=True)
class Frame:
    """A part's frame: image point = origin (2,) + matrix (2, 2) @ local point (scale x rotation)."""

    origin: Tensor
    matrix: Tensor

    def to_image(self, local: Tensor) -> Tensor:
        """(P, 2) part-local -> (P, 2) image pixels."""
        return self.origin + local @ self.matrix.t()

    def to_local(self, points: Tensor) -> Tensor:
        """(P, 2) image pixels -> (P, 2) part-local."""
        return (points - self.origin) @ torch.linalg.inv(self.matrix).t()


def _rotation(degrees: float) -> Tensor:
    """(2, 2) rotation, clockwise on screen (y down) for positive angles."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _bone_axes(phi: float) -> Tensor:
    """(2, 2) columns: the bone direction at angle ``phi`` from the torso's down axis (towards +x
    for positive phi) and that direction turned by 90 degrees; a rotation, so parts keep their
    handedness in every pose."""
    s, c = math.sin(math.radians(phi)), math.cos(math.radians(phi))
    return torch.tensor([[s, -c], [c, s]], dtype=torch.float64)


def _limb_phis(pose: Pose) -> dict[str, float]:
    """Each limb's direction in the torso frame (degrees from its down axis), its parents' angles
    summed: a forearm swings with its upper arm."""
    phis: dict[str, float] = {}
    for name, limb in LIMBS.items():
        parent = phis.get(limb.parent, 0.0)
        phis[name] = parent + limb.side * pose.angles[name]
    return phis


def part_frames(pose: Pose) -> dict[str, Frame]:
    """Forward kinematics: every part's frame. Limb frames start at their root joint with the
    x axis along the bone."""
    origin = torch.tensor(pose.neck, dtype=torch.float64)
    torso_matrix = pose.scale * _rotation(pose.rotation)
    frames = {"torso": Frame(origin, torso_matrix),
              "head": Frame(origin, pose.scale * _rotation(pose.rotation + pose.head_tilt))}
    torso_joints = _torso_joints(frames["torso"])
    phis = _limb_phis(pose)
    for name, limb in LIMBS.items():
        if limb.parent == "torso":
            root = torso_joints[limb.root]
        else:
            parent = LIMBS[limb.parent]
            root = frames[limb.parent].to_image(torch.tensor([[parent.length, 0.0]], dtype=torch.float64))[0]
        frames[name] = Frame(root, torso_matrix @ _bone_axes(phis[name]))
    return frames


def _torso_joints(torso: Frame) -> dict[str, Tensor]:
    """{joint: (2,) pixels} of the joints fixed in the torso: neck, shoulders, hips."""
    local = {"neck": (0.0, 0.0),
             "right_shoulder": (-SHOULDER[0], SHOULDER[1]), "left_shoulder": SHOULDER,
             "right_hip": (-HIP[0], HIP[1]), "left_hip": HIP}
    points = torso.to_image(torch.tensor(list(local.values()), dtype=torch.float64))
    return dict(zip(local, points))


def joints(pose: Pose) -> Tensor:
    """(18, 2) float64 pixels of the COCO-18 joints, in ``BODY_COCO18`` order (continuous
    coordinates: 0 at the image's left / top edge, pixel i's centre at i + 0.5)."""
    frames = part_frames(pose)
    found = _torso_joints(frames["torso"])
    face = frames["head"].to_image(torch.tensor(list(FACE_POINTS.values()), dtype=torch.float64))
    found.update(zip(FACE_POINTS, face))
    for name, limb in LIMBS.items():
        found[limb.end] = frames[name].to_image(torch.tensor([[limb.length, 0.0]], dtype=torch.float64))[0]
    return torch.stack([found[name] for name in BODY_COCO18])


# ------------------------------------------------------------------------------ shapes

def _capsule_distance(local: Tensor, length: float) -> Tensor:
    """Distance of (P, 2) points to the segment from (0, 0) to (length, 0): (P,)."""
    along = local[:, 0].clamp(0.0, length)
    return torch.hypot(local[:, 0] - along, local[:, 1])


def _inside_convex(local: Tensor, outline: Sequence[tuple[float, float]]) -> Tensor:
    """(P,) bool: inside the convex polygon ``outline`` (clockwise on screen, so every edge
    has the interior on the side of a non-negative cross product)."""
    vertices = torch.tensor(outline, dtype=torch.float64)
    edges = vertices.roll(-1, 0) - vertices  # (V, 2)
    offset = local[:, None, :] - vertices[None]  # (P, V, 2)
    cross = edges[None, :, 0] * offset[..., 1] - edges[None, :, 1] * offset[..., 0]
    return (cross >= 0).all(1)


def inside_part(name: str, local: Tensor) -> Tensor:
    """(P,) bool: which part-local points (P, 2) the part ``name`` covers."""
    if name == "torso":
        return _inside_convex(local, TORSO_OUTLINE)
    if name == "head":
        centre = torch.tensor(HEAD_CENTRE, dtype=torch.float64)
        # the neck: a capsule from the neck joint (the frame's origin) straight up to the head's centre
        neck = torch.hypot(local[:, 0], local[:, 1].clamp(HEAD_CENTRE[1], 0.0) - local[:, 1]) <= NECK_RADIUS
        return ((local - centre).norm(dim=1) <= HEAD_RADIUS) | neck
    limb = LIMBS[name]
    return _capsule_distance(local, limb.length + limb.reach) <= limb.radius


def locate(points: Tensor, pose: Pose) -> tuple[Tensor, Tensor]:
    """Which part owns each image point (P, 2) pixels: (part index into PARTS (P,) long, -1 on
    the background; part-local coordinates (P, 2) float64, 0 on the background)."""
    frames = part_frames(pose)
    owner = torch.full((points.shape[0],), -1, dtype=torch.long)
    local = torch.zeros(points.shape[0], 2, dtype=torch.float64)
    for index, name in enumerate(PARTS):
        part_local = frames[name].to_local(points)
        covered = inside_part(name, part_local)
        owner[covered] = index  # later parts are drawn over earlier ones
        local[covered] = part_local[covered]
    return owner, local


def correspondence(points: Tensor, condition: Pose, exemplar: Pose) -> tuple[Tensor, Tensor]:
    """The exact correspondence of condition-pose image points (P, 2) pixels: (their place in
    the exemplar pose (P, 2) pixels, NaN off the figure; visible (P,) bool: on the figure and
    owned by the same part there, i.e. not hidden behind another part)."""
    owner, local = locate(points.double(), condition)
    exemplar_frames = part_frames(exemplar)
    target = torch.full_like(local, float("nan"))
    for index, name in enumerate(PARTS):
        mine = owner == index
        target[mine] = exemplar_frames[name].to_image(local[mine])
    on_figure = owner >= 0
    there = torch.full_like(owner, -2)  # never equal to a part index nor to the background
    there[on_figure] = locate(target[on_figure], exemplar)[0]
    return target, on_figure & (there == owner)


# ------------------------------------------------------------------------------ texture and images

@dataclass(frozen=True)
class Texture:
    """Per part: base colour (parts, 3), sinusoid wave vectors (parts, K, 2) in radians per
    part-local pixel, phases (parts, K) and colour amplitudes (parts, K, 3); a fixed background."""

    base: Tensor
    waves: Tensor
    phases: Tensor
    amplitudes: Tensor


#: base hues, one per part in PARTS order, so neighbouring parts differ at a glance
_PALETTE = ((0.25, 0.40, 0.75), (0.20, 0.60, 0.30), (0.30, 0.65, 0.25), (0.15, 0.45, 0.25), (0.25, 0.50, 0.20),
            (0.80, 0.35, 0.25), (0.85, 0.50, 0.20), (0.70, 0.25, 0.40), (0.80, 0.40, 0.50), (0.90, 0.75, 0.55))


def make_texture(seed: int, waves_per_part: int = 5) -> Texture:
    """A seeded texture: wavelengths 15 to 60 px, random directions, amplitudes up to 0.12."""
    generator = torch.Generator().manual_seed(seed)
    parts = len(PARTS)

    def uniform(*shape: int, low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)

    wavelength = uniform(parts, waves_per_part, low=15.0, high=60.0)
    direction = uniform(parts, waves_per_part, low=0.0, high=2 * math.pi)
    waves = (2 * math.pi / wavelength)[..., None] * torch.stack([direction.cos(), direction.sin()], -1)
    base = torch.tensor(_PALETTE, dtype=torch.float64) + uniform(parts, 3, low=-0.05, high=0.05)
    return Texture(base=base, waves=waves, phases=uniform(parts, waves_per_part, low=0.0, high=2 * math.pi),
                   amplitudes=uniform(parts, waves_per_part, 3, low=-0.12, high=0.12))


def background(points: Tensor) -> Tensor:
    """(P, 3) colours of the fixed background at image points (P, 2): a pale, slowly varying
    pattern, so a warp that moves background shows it."""
    x, y = points[:, 0], points[:, 1]
    pattern = 0.06 * torch.sin(x / 23.0) * torch.cos(y / 31.0)
    return torch.stack([0.82 + pattern, 0.80 + pattern, 0.76 - pattern], dim=1)


def colours(points: Tensor, pose: Pose, texture: Texture) -> Tensor:
    """(P, 3) float64 colours in [0, 1] of image points (P, 2) pixels in a pose."""
    owner, local = locate(points, pose)
    out = background(points)
    on = owner >= 0
    part = owner[on]
    angle = (local[on][:, None, :] * texture.waves[part]).sum(-1) + texture.phases[part]  # (P', K)
    out[on] = texture.base[part] + (texture.amplitudes[part] * angle.sin()[..., None]).sum(1)
    return out.clamp(0.0, 1.0)


def pixel_centres(side: int = IMAGE_SIDE) -> Tensor:
    """(side * side, 2) float64 continuous coordinates (x, y) of the pixel centres, row-major."""
    centre = torch.arange(side, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centre, centre, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def render(pose: Pose, texture: Texture, side: int = IMAGE_SIDE) -> Tensor:
    """The figure in a pose: (3, side, side) float32 in [0, 1], sampled at pixel centres."""
    return colours(pixel_centres(side), pose, texture).t().reshape(3, side, side).float()


def sample(image: Tensor, points: Tensor) -> Tensor:
    """Bilinear colours (P, 3) of an image (3, H, W) at continuous pixel points (P, 2)."""
    _, height, width = image.shape
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64)
    grid = (points * scale - 1.0).float().reshape(1, 1, -1, 2)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].t()


# ------------------------------------------------------------------------------ pose pairs

@dataclass(frozen=True)
class PosePair:
    name: str
    condition: Pose
    exemplar: Pose


def _jittered(pose: Pose, generator: torch.Generator, degrees: float = 5.0, pixels: float = 6.0) -> Pose:
    """The pose with every angle moved by up to ``degrees`` and the neck by up to ``pixels``:
    no pair is built on exactly symmetric, round numbers."""

    def noise(amount: float) -> float:
        return amount * (2 * float(torch.rand((), generator=generator)) - 1)

    angles = {name: value + noise(degrees) for name, value in pose.angles.items()}
    neck = (pose.neck[0] + noise(pixels), pose.neck[1] + noise(pixels))
    return replace(pose, neck=neck, rotation=pose.rotation + noise(degrees / 2), angles=angles)


def _random_pose(generator: torch.Generator) -> Pose:
    """Large seeded angles: arms anywhere from down to up, elbows and knees bent either way."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    angles = {"right_upper_arm": uniform(0, 160), "left_upper_arm": uniform(0, 160),
              "right_forearm": uniform(-90, 90), "left_forearm": uniform(-90, 90),
              "right_thigh": uniform(0, 45), "left_thigh": uniform(0, 45),
              "right_shin": uniform(-50, 20), "left_shin": uniform(-50, 20)}
    return Pose(neck=(256.0 + uniform(-15, 15), 195.0 + uniform(-10, 10)), rotation=uniform(-10, 10),
                scale=uniform(0.72, 0.8), head_tilt=uniform(-20, 20), angles=angles)


ARM_SWING = "right arm raised ~150 deg"


def pose_pairs(seed: int = 0) -> list[PosePair]:
    """The six condition / exemplar pose pairs (module docstring), seeded."""
    generator = torch.Generator().manual_seed(seed)
    standing = Pose()
    cases = [
        (ARM_SWING, standing, standing.with_angles(right_upper_arm=168.0, right_forearm=0.0)),
        ("arms swap: right out -> down, left down -> up",
         standing.with_angles(right_upper_arm=95.0, right_forearm=0.0),
         replace(standing, rotation=6.0).with_angles(right_upper_arm=12.0, left_upper_arm=135.0, left_forearm=35.0)),
        ("elbows fold across the chest",
         standing.with_angles(right_upper_arm=35.0, left_upper_arm=35.0, right_forearm=0.0, left_forearm=0.0),
         replace(standing, head_tilt=12.0).with_angles(right_upper_arm=30.0, left_upper_arm=40.0,
                                                       right_forearm=-125.0, left_forearm=-110.0)),
        ("right knee raised, left elbow bent", standing,
         standing.with_angles(right_thigh=75.0, right_shin=-85.0, left_upper_arm=60.0, left_forearm=90.0)),
        ("whole figure shifted, rotated 12 deg, scaled 0.9", standing,
         replace(standing, neck=(285.0, 175.0), rotation=12.0, scale=0.72).with_angles(right_upper_arm=30.0,
                                                                                       left_upper_arm=25.0)),
        ("random large pose", standing, _random_pose(generator)),
    ]
    return [PosePair(name, _jittered(a, generator), _jittered(b, generator)) for name, a, b in cases]


# ------------------------------------------------------------------------------ fields

def cell_centres(grid: tuple[int, int] = GRID) -> Tensor:
    """(h * w, 2) float64 cell centres (x, y), row-major, in cells (centres at integers)."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def joint_cells(pose: Pose) -> Tensor:
    """(18, 2) float64 joint cells of the 64 x 64 grid over the image."""
    return to_cells(joints(pose), (IMAGE_SIDE, IMAGE_SIDE), GRID)


def identity_field(src: Tensor, dst: Tensor) -> Tensor:
    """T(u) = u: (2, h, w)."""
    return cell_centres().t().reshape(2, *GRID)


def similarity_field(src: Tensor, dst: Tensor) -> Tensor:
    """One robust similarity through all joints (the global map under the spline): (2, h, w)."""
    matrix, _ = robust_fit(src, dst, "similarity", FieldSettings().robust_iterations)
    mapped = cell_centres() @ matrix[:, :2].t() + matrix[:, 2]
    return mapped.t().reshape(2, *GRID)


def settings_field(settings: FieldSettings) -> Callable[[Tensor, Tensor], Tensor]:
    """The anchor field with these settings, as a (src, dst) -> (2, h, w) row."""
    return lambda src, dst: anchor_field(src, dst, LABELS, GRID, GRID, settings).target


def parts_row(blend: float) -> str:
    """The per-part field's row name for a blend width."""
    default = " (default)" if blend == FieldSettings().blend else ""
    return f"per-part field (body=parts), blend {blend}{default}"


GLOBAL_ROW = "global spline (body=global)"
PARTS_ROW = parts_row(FieldSettings().blend)


def field_rows() -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """{row: (src (18, 2), dst (18, 2) cells) -> target (2, h, w) exemplar cells}."""
    rows = {"identity": identity_field, "similarity (robust, all joints)": similarity_field,
            GLOBAL_ROW: settings_field(FieldSettings(body="global")),
            "global spline, smoothing 0": settings_field(FieldSettings(body="global", smoothing=0.0))}
    for blend in BLENDS:
        rows[parts_row(blend)] = settings_field(FieldSettings(body="parts", blend=blend))
    return rows


# ------------------------------------------------------------------------------ scoring

def grid_truth(pair: PosePair) -> tuple[Tensor, Tensor]:
    """The true field on the condition grid: (exemplar cells (2, h, w), NaN where unscored;
    scored (h, w) bool: the cell centre is on the figure and its correspondence is visible)."""
    centres_px = (cell_centres() + 0.5) * CELL_PX
    target_px, visible = correspondence(centres_px, pair.condition, pair.exemplar)
    truth = to_cells(target_px, (IMAGE_SIDE, IMAGE_SIDE), GRID)
    truth[~visible] = float("nan")
    return truth.t().reshape(2, *GRID), visible.reshape(GRID)


def folded(target: Tensor) -> Tensor:
    """(h, w) bool: where the field (2, h, w) turns inside out (Jacobian determinant <= 0, by
    central differences)."""
    dx_dx, dx_dy = torch.gradient(target[0], dim=(1, 0))
    dy_dx, dy_dy = torch.gradient(target[1], dim=(1, 0))
    return dx_dx * dy_dy - dx_dy * dy_dx <= 0


@dataclass
class Errors:
    """End-point errors (cells) and fold flags of the scored cells, pooled over cases."""

    epe: list = field(default_factory=list)
    folds: list = field(default_factory=list)

    def add(self, target: Tensor, truth: Tensor, scored: Tensor) -> None:
        self.epe.append((target - truth).norm(dim=0)[scored])
        self.folds.append(folded(target)[scored])

    def pck(self, radius: float) -> float:
        return float((torch.cat(self.epe) <= radius).double().mean())

    def mean_epe(self) -> float:
        return float(torch.cat(self.epe).mean())

    def folded_share(self) -> float:
        return float(torch.cat(self.folds).double().mean())


def evaluate(pairs: Sequence[PosePair], rows: dict[str, Callable[[Tensor, Tensor], Tensor]]) -> dict:
    """{"all": {row: Errors}, "per pair": {pair name: {row: Errors}}, "cells": {pair name: scored}}."""
    pooled = {row: Errors() for row in rows}
    per_pair: dict[str, dict[str, Errors]] = {}
    cells: dict[str, int] = {}
    for pair in pairs:
        truth, scored = grid_truth(pair)
        src, dst = joint_cells(pair.condition), joint_cells(pair.exemplar)
        per_pair[pair.name] = {}
        cells[pair.name] = int(scored.sum())
        for row, make in rows.items():
            target = make(src, dst)
            pooled[row].add(target, truth, scored)
            per_pair[pair.name][row] = Errors()
            per_pair[pair.name][row].add(target, truth, scored)
    return {"all": pooled, "per pair": per_pair, "cells": cells}


def summary_table(pooled: dict[str, Errors]) -> Table:
    table = Table(["field"] + [f"PCK@{r}" for r in RADII] + ["EPE (cells)", "folded"], "l" + "r" * (len(RADII) + 2))
    for row, errors in pooled.items():
        table.add(row, *(f"{100 * errors.pck(r):.1f} %" for r in RADII), f"{errors.mean_epe():.2f}",
                  f"{100 * errors.folded_share():.1f} %")
    return table


def pair_table(per_pair: dict[str, dict[str, Errors]], cells: dict[str, int], rows: Sequence[str]) -> Table:
    table = Table(["pose pair", "scored cells"] + [f"PCK@2 {row}" for row in rows], "lr" + "r" * len(rows))
    for name, errors in per_pair.items():
        table.add(name, cells[name], *(f"{100 * errors[row].pck(2):.1f} %" for row in rows))
    return table


# ------------------------------------------------------------------------------ picture

def warp_exemplar(exemplar: Tensor, target: Tensor) -> Tensor:
    """The exemplar image (3, H, W) pulled onto the condition layout by a cell field (2, h, w):
    the field is bilinearly upsampled to pixels (cell centres at pixel (u + 0.5) * CELL_PX, as
    :func:`to_cells` places them), then the image sampled there. (3, H, W)."""
    side = exemplar.shape[-1]
    cells = F.interpolate(target[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
    pixels = (cells + 0.5) * CELL_PX  # (2, H, W)
    return sample(exemplar, pixels.reshape(2, -1).t().double()).t().reshape(3, side, side)


def true_warp(pair: PosePair, exemplar: Tensor) -> Tensor:
    """The exemplar pulled by the exact correspondence (black where none is visible): (3, H, W)."""
    side = exemplar.shape[-1]
    target, visible = correspondence(pixel_centres(side), pair.condition, pair.exemplar)
    out = torch.zeros(side * side, 3)
    out[visible] = sample(exemplar, target[visible])
    return out.t().reshape(3, side, side)


def save_picture(pairs: Sequence[PosePair], texture: Texture, path: Path, tile: int = 256) -> None:
    """Rows of condition | exemplar | true warp | global-spline warp | per-part warp, joints
    dotted on the first two, as a PNG."""
    from PIL import Image, ImageDraw

    columns = ("condition (pose A)", "exemplar (pose B)", "exemplar, true warp", "warped: global spline",
               "warped: per-part field")
    header, gap = 16, 4
    sheet = Image.new("RGB", (len(columns) * (tile + gap), header + len(pairs) * (tile + header)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((c * (tile + gap) + 4, 2), title, fill="gray")
    rows = field_rows()
    for r, pair in enumerate(pairs):
        condition, exemplar = render(pair.condition, texture), render(pair.exemplar, texture)
        src, dst = joint_cells(pair.condition), joint_cells(pair.exemplar)
        panels = [condition, exemplar, true_warp(pair, exemplar), warp_exemplar(exemplar, rows[GLOBAL_ROW](src, dst)),
                  warp_exemplar(exemplar, rows[PARTS_ROW](src, dst))]
        top = header + r * (tile + header)
        draw.text((4, top + 2), pair.name, fill="black")
        for c, panel in enumerate(panels):
            small = F.interpolate(panel[None], size=(tile, tile), mode="area")[0]
            pixels = (small.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            left = c * (tile + gap)
            sheet.paste(Image.fromarray(pixels), (left, top + header))
            if c < 2:
                for x, y in joints(pair.condition if c == 0 else pair.exemplar).tolist():
                    x, y = left + x * tile / IMAGE_SIDE, top + header + y * tile / IMAGE_SIDE
                    draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# ------------------------------------------------------------------------------ main

def report(result: dict, seconds: float, seed: int) -> str:
    rows = [GLOBAL_ROW, PARTS_ROW]
    return "\n".join([
        f"# anchor fields on an articulated figure: {machine(torch.get_num_threads())}, CPU", "",
        f"Produced by `python -m benchmarks.body_figure` (definitions in its docstring), seed {seed}: "
        f"6 pose pairs, {IMAGE_SIDE} px images, a {GRID[0]} x {GRID[1]} grid, the 18 COCO-18 joints as anchors; "
        f"scored over {sum(result['cells'].values())} condition cells on the figure whose correspondence is "
        f"visible (pooled). PCK@r: T(u) within r cells of the truth. Run time {seconds:.0f} s.", "",
        str(summary_table(result["all"])), "",
        "## per pose pair", "",
        str(pair_table(result["per pair"], result["cells"], rows)), ""])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=str, default=str(DEFAULT_MARKDOWN), help="'' to print only")
    parser.add_argument("--picture", type=str, default=str(DEFAULT_PICTURE), help="'' for none")
    args = parser.parse_args(argv)
    # every tensor here is small (at most 512 x 512 points): thread hand-offs cost more than they
    # save (about 3x the run time with 2 threads on a 2-CPU machine)
    torch.set_num_threads(1)
    start = time.perf_counter()
    pairs = pose_pairs(args.seed)
    result = evaluate(pairs, field_rows())
    if args.picture:
        save_picture(pairs, make_texture(args.seed), Path(args.picture))
        print(f"picture: {args.picture}")
    publish(report(result, time.perf_counter() - start, args.seed), args.markdown or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
