"""Keypoints from the user's graph: detector output and hand-placed points, read into one form.

Two formats reach a ComfyUI graph:

* ``POSE_KEYPOINT`` (comfyui_controlnet_aux's DWPose / OpenPose nodes, core ComfyUI's SDPose):
  a list with one dict per batch frame, ``{"people": [person, ...], "canvas_width": W,
  "canvas_height": H}``; a person holds ``pose_keypoints_2d`` (body, 18 COCO or 25 BODY_25
  points), ``face_keypoints_2d`` (68 iBUG points, or 70: two more eye points, read as
  "face/68" and "face/69") and
  ``hand_left_keypoints_2d`` / ``hand_right_keypoints_2d`` (21 each), each a flat list of
  x, y, c triplets, or None / absent. The OpenPose-JSON file a detector writes is the same
  list (or one frame dict) as text (:func:`parse_pose_json`).
* point strings (KJNodes' Points Editor): JSON ``[{"x": .., "y": ..}, ...]`` in pixels of the
  editor's canvas, whose size the user states.

Units rule (``units="auto"``), decided per frame: the coordinates are NORMALISED to the canvas
(the OpenPose node) when every present coordinate lies in [0, 1]; otherwise they are canvas
PIXELS (DWPose, SDPose). A real pose in pixels never fits in one pixel, and a normalised one
never leaves [0, 1]. ``units="pixels"`` / ``"normalised"`` overrides the guess.

A point is missing when its part is None, absent or empty, when its confidence is 0 or below
the threshold (DWPose writes [0, 0, 0] for a dropped point), or when a coordinate is negative
(OpenPose writes -1, i.e. -1 / W once normalised). Normalised coordinates that overshoot 1 a
little (every point within 1.5 px of the corner when read as pixels) are refused, not guessed. A present point that is NaN, infinite or off
the canvas is an error, not a silent drop.

Coordinates: (x, y) continuous image coordinates, 0 at the left / top EDGE of the image and
W / H at the right / bottom edge (a pixel's centre is at i + 0.5). Every point carries a label
that says what it is ("body/left_elbow", "face/30", "hand_right/4", "point/2"); two sides pair
by label, so a BODY_25 pose pairs with a COCO-18 pose on their common joints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "BODY_COCO18",
    "DEFAULT_CONFIDENCE",
    "UNITS",
    "AnchorPairs",
    "Keypoints",
    "inside_images",
    "pair_keypoints",
    "parse_point_string",
    "parse_pose_json",
    "read_pose_keypoints",
    "select_frames",
]

#: confidence below which a detected point counts as missing (DWPose's own cut)
DEFAULT_CONFIDENCE = 0.3
UNITS = ("auto", "pixels", "normalised")

#: OpenPose COCO-18 body order
BODY_COCO18 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
               "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
               "right_eye", "left_eye", "right_ear", "left_ear")
#: OpenPose BODY_25 order (COCO-18's joints, a mid hip and six foot points)
BODY_25 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
           "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
           "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
           "right_big_toe", "right_small_toe", "right_heel")
_BODY_NAMES = {18: BODY_COCO18, 25: BODY_25}
#: POSE_KEYPOINT part key -> (label prefix, allowed point counts)
_PARTS = {
    "pose_keypoints_2d": ("body", (18, 25)),
    "face_keypoints_2d": ("face", (68, 70)),
    "hand_left_keypoints_2d": ("hand_left", (21,)),
    "hand_right_keypoints_2d": ("hand_right", (21,)),
}
#: frame keys of keypoint layouts that are not supported, with their name for the error
_UNSUPPORTED_LAYOUTS = {"animals": "AP10K animal keypoints (the AnimalPose node)"}
#: how far (pixels) a present point may lie outside its canvas before it is an error
_CANVAS_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class Keypoints:
    """Labelled points of one image.

    points: (P, 2) float64 (x, y), continuous pixel coordinates of an image ``width`` x
            ``height`` (0 at the left / top edge); only present points are kept.
    labels: P distinct names, e.g. "body/left_elbow", "face/30", "point/0".
    """

    points: Tensor
    labels: tuple[str, ...]
    width: float
    height: float

    def __post_init__(self) -> None:
        if not isinstance(self.points, Tensor) or self.points.dim() != 2 or self.points.shape[1] != 2:
            raise ValueError(f"Keypoints: 'points' must be a (P, 2) tensor, got {getattr(self.points, 'shape', self.points)!r}")
        if len(self.labels) != self.points.shape[0] or len(set(self.labels)) != len(self.labels):
            raise ValueError("Keypoints: 'labels' must name every point once")
        if not (self.width > 0 and self.height > 0):
            raise ValueError(f"Keypoints: the canvas must have a positive size, got {self.width} x {self.height}")

    def parts(self) -> dict[str, int]:
        """How many points each part (label prefix) has: {"body": 14, "face": 68, ...}."""
        out: dict[str, int] = {}
        for label in self.labels:
            part = label.split("/", 1)[0]
            out[part] = out.get(part, 0) + 1
        return out

    def scaled_to(self, width: float, height: float) -> "Keypoints":
        """The same points in an image of ``width`` x ``height`` showing the same canvas
        (the canvas stretched onto the image)."""
        scale = torch.tensor([width / self.width, height / self.height], dtype=torch.float64)
        return Keypoints(self.points * scale, self.labels, float(width), float(height))


@dataclass(frozen=True)
class AnchorPairs:
    """Points present on both sides, paired by label.

    condition: (N, 2) float64 in condition pixels; exemplar: (N, 2) float64 in exemplar pixels;
    labels: N names; condition_size / exemplar_size: (width, height) of each side's image.
    """

    condition: Tensor
    exemplar: Tensor
    labels: tuple[str, ...]
    condition_size: tuple[float, float]
    exemplar_size: tuple[float, float]

    def __len__(self) -> int:
        return len(self.labels)


def _describe_parts(points: Keypoints) -> str:
    parts = points.parts()
    return ", ".join(f"{name} ({count} point{'s' if count != 1 else ''})" for name, count in parts.items()) or "no point"


def inside_images(pairs: AnchorPairs, margin: float = 1.0) -> tuple[AnchorPairs, tuple[str, ...]]:
    """The pairs whose points lie inside both images (within ``margin`` pixels), and the labels
    of those that do not (e.g. cut away by a crop fit)."""
    def inside(points: Tensor, size: tuple[float, float]) -> Tensor:
        low, high = -margin, torch.tensor(size, dtype=torch.float64) + margin
        return ((points >= low) & (points <= high)).all(1)

    keep = inside(pairs.condition, pairs.condition_size) & inside(pairs.exemplar, pairs.exemplar_size)
    dropped = tuple(label for label, k in zip(pairs.labels, keep.tolist()) if not k)
    index = torch.nonzero(keep).flatten()
    kept = AnchorPairs(pairs.condition[index], pairs.exemplar[index], tuple(pairs.labels[i] for i in index.tolist()),
                       pairs.condition_size, pairs.exemplar_size)
    return kept, dropped


def pair_keypoints(condition: Keypoints, exemplar: Keypoints, where: str = "pair_keypoints") -> AnchorPairs:
    """The points both sides have, in the condition's order. Raises when there are none,
    saying which parts each side has."""
    index = {label: i for i, label in enumerate(exemplar.labels)}
    common = [(i, index[label]) for i, label in enumerate(condition.labels) if label in index]
    if not common:
        raise ValueError(f"{where}: no keypoint is present on both sides. The condition has {_describe_parts(condition)}; "
                         f"the exemplar has {_describe_parts(exemplar)}. Give both sides the same kind of points "
                         "(e.g. a face detector on both images, or two point editors with as many points)")
    ci = torch.tensor([c for c, _ in common], dtype=torch.long)
    ei = torch.tensor([e for _, e in common], dtype=torch.long)
    return AnchorPairs(condition=condition.points[ci], exemplar=exemplar.points[ei],
                       labels=tuple(condition.labels[c] for c, _ in common),
                       condition_size=(condition.width, condition.height), exemplar_size=(exemplar.width, exemplar.height))


# ---------------------------------------------------------------------------------- POSE_KEYPOINT

def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def _canvas(frame: dict, where: str, name: str) -> tuple[float, float]:
    try:
        width = _number(frame.get("canvas_width"), where, f"'{name}' canvas_width")
        height = _number(frame.get("canvas_height"), where, f"'{name}' canvas_height")
    except ValueError:
        raise ValueError(f"{where}: '{name}' has no canvas_width / canvas_height numbers; POSE_KEYPOINT frames carry "
                         "the size of the image the points were detected on") from None
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise ValueError(f"{where}: '{name}' canvas must be a positive size, got {width} x {height}")
    return width, height


def _triplets(values: Any, where: str, what: str) -> Optional[Tensor]:
    """A flat x, y, c list -> (P, 3) float64, or None for a part that is not there."""
    if values is None:
        return None
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}: {what} must be a flat list of x, y, c numbers, got {type(values).__name__}")
    if len(values) == 0:
        return None
    flat = [_number(v, where, f"every value of {what}") for v in values]
    if len(flat) % 3:
        raise ValueError(f"{where}: {what} must hold x, y, c triplets; its length {len(flat)} is not a multiple of 3")
    return torch.tensor(flat, dtype=torch.float64).view(-1, 3)


def _part_labels(prefix: str, count: int) -> tuple[str, ...]:
    if prefix == "body":
        return tuple(f"body/{name}" for name in _BODY_NAMES[count])
    return tuple(f"{prefix}/{i}" for i in range(count))


def _present(values: Tensor, threshold: float) -> Tensor:
    """Which rows of (P, 3) x, y, c triplets are present: confidence above 0 and at least the
    threshold (DWPose's dropped point is [0, 0, 0] whatever the threshold), coordinates not
    negative (OpenPose's -1). NaN coordinates count as present, so that they are reported."""
    confident = (values[:, 2] >= threshold) & (values[:, 2] > 0)
    return confident & ((values[:, :2] >= 0).all(1) | ~torch.isfinite(values[:, :2]).all(1))


def _frame_units(parts: dict[str, Tensor], threshold: float, units: str, canvas: tuple[float, float], where: str,
                 name: str) -> str:
    if units != "auto":
        return units
    coords = [t[_present(t, threshold), :2] for t in parts.values()]
    coords = [c[torch.isfinite(c).all(1)] for c in coords]
    coords = [c for c in coords if c.numel()]
    if not coords:
        return "pixels"
    present = torch.cat(coords)
    if bool((present <= 1.0).all()):
        return "normalised"
    if present.shape[0] > 1 and bool((present <= 1.5).all()) and max(canvas) > 16:
        # every point within 1.5 px of the corner: normalised coordinates that overshoot 1 a little
        raise ValueError(f"{where}: '{name}' coordinates all lie in [0, {float(present.max()):.3g}]: they look normalised "
                         "to the canvas, but some exceed 1, so they cannot be read as either normalised or pixels; "
                         "clamp them to [0, 1] or give pixels")
    return "pixels"


def _read_person(person: Any, canvas: tuple[float, float], threshold: float, units: str, where: str, name: str) -> Keypoints:
    if not isinstance(person, dict):
        raise ValueError(f"{where}: '{name}' people must be dicts of keypoint lists, got {type(person).__name__}")
    parts: dict[str, Tensor] = {}
    for key, (prefix, counts) in _PARTS.items():
        values = _triplets(person.get(key), where, f"'{name}' {key}")
        if values is None:
            continue
        if values.shape[0] not in counts:
            raise ValueError(f"{where}: '{name}' {key} has {values.shape[0]} points; supported are "
                             f"{' or '.join(str(c) for c in counts)} ({prefix})")
        parts[prefix] = values
    frame_units = _frame_units(parts, threshold, units, canvas, where, name)
    width, height = canvas
    points, labels = [], []
    for prefix, values in parts.items():
        xy = values[:, :2].clone()
        present = _present(values, threshold)  # a NaN point with a confidence is an error below
        if frame_units == "normalised":
            xy = xy * torch.tensor([width, height], dtype=torch.float64)
        for i, label in enumerate(_part_labels(prefix, values.shape[0])):
            if not bool(present[i]):
                continue
            x, y = float(xy[i, 0]), float(xy[i, 1])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"{where}: '{name}' point {label} is not a finite number ({x}, {y}); fix or drop it")
            tol = _CANVAS_TOLERANCE_PX
            if not (-tol <= x <= width + tol and -tol <= y <= height + tol):
                raise ValueError(f"{where}: '{name}' point {label} at ({x:g}, {y:g}) lies outside its {width:g} x "
                                 f"{height:g} canvas ({frame_units}); the keypoints do not belong to this canvas")
            points.append((x, y))
            labels.append(label)
    tensor = torch.tensor(points, dtype=torch.float64).view(-1, 2)
    return Keypoints(tensor, tuple(labels), width, height)


def read_pose_keypoints(frames: Any, person: int = 0, threshold: float = DEFAULT_CONFIDENCE, units: str = "auto",
                        where: str = "read_pose_keypoints", name: str = "keypoints") -> list[Keypoints]:
    """A POSE_KEYPOINT value (a list of frame dicts, or one frame dict) -> one :class:`Keypoints`
    per frame, of person ``person`` (0 = the first), in canvas pixels.

    A frame whose person index is out of range is an error (not an empty set): the user picked
    a person that is not there. Errors name ``where`` and the input ``name``.
    """
    if units not in UNITS:
        raise ValueError(f"{where}: 'units' must be one of {list(UNITS)}, got {units!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"{where}: the confidence threshold must be in [0, 1], got {threshold!r}")
    if isinstance(person, bool) or not isinstance(person, int) or person < 0:
        raise ValueError(f"{where}: the person index must be an integer >= 0, got {person!r}")
    if isinstance(frames, dict):
        frames = [frames]
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError(f"{where}: '{name}' must be POSE_KEYPOINT (a list of frames, each "
                         "{{'people': [...], 'canvas_width', 'canvas_height'}}), got "
                         f"{type(frames).__name__ if not isinstance(frames, (list, tuple)) else 'an empty list'}")
    out = []
    for f, frame in enumerate(frames):
        label = f"{name} frame {f + 1} of {len(frames)}" if len(frames) > 1 else name
        if not isinstance(frame, dict):
            raise ValueError(f"{where}: '{label}' must be a dict with 'people', got {type(frame).__name__}")
        for key, layout in _UNSUPPORTED_LAYOUTS.items():
            if key in frame:
                raise ValueError(f"{where}: '{label}' holds {layout}, which is not supported; give body, face or "
                                 "hand keypoints (DWPose / OpenPose), or hand-placed points")
        people = frame.get("people")
        if not isinstance(people, (list, tuple)):
            raise ValueError(f"{where}: '{label}' has no 'people' list; is it POSE_KEYPOINT?")
        canvas = _canvas(frame, where, label)
        if not people:
            raise ValueError(f"{where}: '{label}' has nobody detected; check the detector's output for this image")
        if person >= len(people):
            raise ValueError(f"{where}: '{label}' has {len(people)} person{'s' if len(people) > 1 else ''} detected, so "
                             f"person index {person} does not exist; use 0 to {len(people) - 1}")
        out.append(_read_person(people[person], canvas, threshold, units, where, label))
    return out


def parse_pose_json(text: str, where: str = "parse_pose_json", name: str = "keypoints file") -> list:
    """An OpenPose-JSON text -> the POSE_KEYPOINT list it holds (one frame dict becomes a list
    of one). Only the structure is read here; :func:`read_pose_keypoints` checks the values."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{where}: '{name}' is not JSON ({e})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: '{name}' must hold a frame dict or a list of them, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------- point strings

def parse_point_string(text: str, width: float, height: float, where: str = "parse_point_string",
                       name: str = "points") -> Keypoints:
    """A points-editor string ``[{"x": .., "y": ..}, ...]`` in pixels of a ``width`` x ``height``
    canvas -> :class:`Keypoints` labelled "point/0", "point/1", ... (paired by index)."""
    for arg, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{where}: the canvas {arg} of '{name}' must be a positive number, got {value!r}")
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: '{name}' is not JSON ({e}); expected [{{\"x\": .., \"y\": ..}}, ...]") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: '{name}' must be a non-empty list [{{\"x\": .., \"y\": ..}}, ...]")
    points = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or "x" not in item or "y" not in item:
            raise ValueError(f"{where}: '{name}' item {i} must be {{\"x\": .., \"y\": ..}}, got {item!r}")
        x = _number(item["x"], where, f"'{name}' item {i} x")
        y = _number(item["y"], where, f"'{name}' item {i} y")
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"{where}: '{name}' item {i} is not a finite number ({x}, {y})")
        if not (-_CANVAS_TOLERANCE_PX <= x <= width + _CANVAS_TOLERANCE_PX and -_CANVAS_TOLERANCE_PX <= y <= height + _CANVAS_TOLERANCE_PX):
            raise ValueError(f"{where}: '{name}' item {i} at ({x:g}, {y:g}) lies outside the stated {width:g} x {height:g} "
                             "canvas; set the width and height of the editor the points come from")
        points.append((x, y))
    return Keypoints(torch.tensor(points, dtype=torch.float64), tuple(f"point/{i}" for i in range(len(points))),
                     float(width), float(height))


# ---------------------------------------------------------------------------------- batches

def select_frames(sets: Sequence[Keypoints], batch: int, where: str, name: str, items: str = "image") -> list[Keypoints]:
    """One keypoint set per batch item: 1 set serves every item, B sets pair with B items
    (``items`` names them in the error: "image", "exemplar")."""
    if len(sets) == 1:
        return list(sets) * batch
    if len(sets) != batch:
        plural = lambda n, word: f"{n} {word}" + ("" if n == 1 else "s")  # noqa: E731
        raise ValueError(f"{where}: '{name}' has {plural(len(sets), 'frame')} for {plural(batch, items)}; give one "
                         f"frame for all {items}s or exactly one per {items}")
    return list(sets)
