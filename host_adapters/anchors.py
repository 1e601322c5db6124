"""Semantic anchors on the host: the anchors node's inputs read into an AnchorSpec, the spec
turned into one prior per exemplar when a context is encoded (the keypoints carried through the
same fit and crop as the images), and the anchors preview."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..midms_core.alignment import SpatialPrior
from ..midms_core.anchors.binding import AnchorSpec, place_keypoints
from ..midms_core.anchors.field import AnchorField, anchor_prior, pairs_field
from ..midms_core.anchors.keypoints import (
    AnchorPairs,
    Keypoints,
    inside_images,
    pair_keypoints,
    parse_point_string,
    parse_pose_json,
    read_pose_keypoints,
    select_frames,
)
from ..midms_core.images import FitGeometry
from .errors import NodeInputError

#: how the encode nodes name the two sides of their 'anchors' input in errors
CONDITION_NAME = "anchors: condition keypoints"
EXEMPLAR_NAME = "anchors: exemplar keypoints"


def read_side(pose, points: Optional[str], canvas: tuple[int, int], person: int, confidence: float, where: str,
              side: str) -> tuple[Keypoints, ...]:
    """One side's keypoint sets from either a POSE_KEYPOINT value or a points string (exactly one)."""
    if points is not None and not isinstance(points, str):
        raise NodeInputError(f"{where}: '{side}_points' must be a string [{{\"x\": .., \"y\": ..}}, ...], got "
                             f"{type(points).__name__}")
    given_points = isinstance(points, str) and points.strip() != ""
    if (pose is None) == (not given_points):
        raise NodeInputError(f"{where}: give the {side}'s keypoints either as '{side}_keypoints' (POSE_KEYPOINT, from a "
                             f"pose / face detector or MIDMs Load Keypoints JSON) or as '{side}_points' (a points "
                             "string), " + ("not both" if pose is not None else "one of them"))
    if pose is not None:
        return tuple(read_pose_keypoints(pose, person=person, threshold=confidence, where=where, name=f"{side}_keypoints"))
    return (parse_point_string(points, canvas[0], canvas[1], where=where, name=f"{side}_points"),)


def check_point_counts(condition: tuple[Keypoints, ...], exemplar: tuple[Keypoints, ...], where: str) -> None:
    """Hand-placed points pair by order: both strings must hold as many points."""
    kinds = [all(label.startswith("point/") for label in side[0].labels) for side in (condition, exemplar)]
    counts = (len(condition[0].labels), len(exemplar[0].labels))
    if all(kinds) and counts[0] != counts[1]:
        raise NodeInputError(f"{where}: 'condition_points' has {counts[0]} points and 'exemplar_points' has {counts[1]}; "
                             "points pair by order, so place as many on both, in the same order")


@dataclass(frozen=True)
class PlacedAnchors:
    """What encoding made of an AnchorSpec: one prior per exemplar (batch B), the fields (per
    exemplar, per batch item) and the pairs in final-image pixels, for previews and reports."""

    priors: tuple[SpatialPrior, ...]
    fields: tuple[tuple[AnchorField, ...], ...]
    pairs: tuple[tuple[AnchorPairs, ...], ...]
    mode: str
    exemplar_grid: tuple[int, int]


def place_anchors(spec: AnchorSpec, condition_size: tuple[int, int], condition_fits: Sequence[FitGeometry],
                  exemplar_size: tuple[int, int], exemplar_fits: Sequence[FitGeometry], condition_grid: tuple[int, int],
                  exemplar_grid: tuple[int, int], batch: int, exemplar_count: int, where: str) -> PlacedAnchors:
    """The spec's priors for a context of ``batch`` condition images against ``exemplar_count``
    exemplars (1: the exemplar frames pair with batch items; G > 1: with the exemplars).

    condition_size / exemplar_size: (height, width) of the node's input images; *_fits: the fits
    that brought each to its final size (:class:`~midms_core.images.FitGeometry`, in order)."""
    if not isinstance(spec, AnchorSpec):
        raise NodeInputError(f"{where}: 'anchors' must come from MIDMs Anchors, got {type(spec).__name__}")
    if exemplar_count > 1:
        conditions = select_frames(spec.condition, 1, where, CONDITION_NAME) * batch
        exemplars = select_frames(spec.exemplar, exemplar_count, where, EXEMPLAR_NAME, "exemplar")
    else:
        conditions = select_frames(spec.condition, batch, where, CONDITION_NAME, "condition image")
        exemplars = select_frames(spec.exemplar, batch, where, EXEMPLAR_NAME, "condition image")
    priors, fields, pairs = [], [], []
    for g in range(exemplar_count):
        per_batch_fields, per_batch_pairs = [], []
        for b in range(batch):
            exemplar_points = exemplars[g] if exemplar_count > 1 else exemplars[b]
            cond = place_keypoints(conditions[b], condition_size, condition_fits, where, CONDITION_NAME)
            exem = place_keypoints(exemplar_points, exemplar_size, exemplar_fits, where, EXEMPLAR_NAME)
            which = ", ".join(part for part in (f"exemplar {g + 1} of {exemplar_count}" if exemplar_count > 1 else "",
                                                f"image {b + 1} of {batch}" if batch > 1 else "") if part)
            at = f"{where} ({which})" if which else where
            pair, dropped = inside_images(pair_keypoints(cond, exem, at))
            if not len(pair):
                raise NodeInputError(f"{at}: every keypoint pair has a point outside its image after the fit "
                                     f"('exemplar_fit' crops or the images are framed differently): {', '.join(dropped)}; "
                                     "use exemplar_fit 'pad' or 'stretch', or keypoints inside both images")
            field = pairs_field(pair, condition_grid, exemplar_grid, spec.settings)
            if dropped:
                field = dataclasses.replace(field, notes=field.notes + (
                    f"{len(dropped)} pair(s) outside the images after the fit, not used: {', '.join(dropped)}",))
            per_batch_pairs.append(pair)
            per_batch_fields.append(field)
        priors.append(anchor_prior(per_batch_fields))
        fields.append(tuple(per_batch_fields))
        pairs.append(tuple(per_batch_pairs))
    return PlacedAnchors(tuple(priors), tuple(fields), tuple(pairs), spec.mode, tuple(exemplar_grid))


def field_report(placed: PlacedAnchors) -> str:
    """One line per exemplar (and batch item): how many anchors, how the field was made, notes."""
    lines = []
    for g, (fields, pairs) in enumerate(zip(placed.fields, placed.pairs)):
        for b, (field, pair) in enumerate(zip(fields, pairs)):
            who = (f"exemplar {g + 1}" if len(placed.fields) > 1 else "") + (f" image {b + 1}" if len(fields) > 1 else "")
            line = f"{who.strip() or 'anchors'}: {len(pair)} anchors, {field.method}"
            if field.notes:
                line += "; " + "; ".join(field.notes)
            lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- files

def input_directory() -> str:
    """The host's input folder."""
    import folder_paths  # the host's module

    return folder_paths.get_input_directory()


def load_input_keypoints(file: str, where: str) -> list:
    """POSE_KEYPOINT from ``file``, a path relative to the host's input folder (and inside it)."""
    root = os.path.realpath(input_directory())
    path = os.path.realpath(os.path.join(root, file))
    if os.path.commonpath([root, path]) != root:
        raise NodeInputError(f"{where}: 'file' must lie inside ComfyUI's input folder, got {file!r}")
    return load_keypoints_file(path, where)


def preview_context(context, exemplar: int, where: str) -> tuple[torch.Tensor, str]:
    """The anchors preview IMAGE and report of a context's exemplar ``exemplar`` (1-based)."""
    placed = getattr(context, "anchors", None)
    if placed is None:
        raise NodeInputError(f"{where}: the context has no anchors; connect MIDMs Anchors to the encode node's 'anchors' input")
    count = len(placed.priors)
    if exemplar > count:
        raise NodeInputError(f"{where}: 'exemplar' is {exemplar} but the context has {count} exemplar(s)")
    images = context.exemplar_image.chunk(context.exemplar_count, dim=-2)[exemplar - 1]
    batch = max(images.shape[0], context.condition_image.shape[0])
    image = anchors_preview(context.condition_image.expand(batch, -1, -1, -1), images.expand(batch, -1, -1, -1),
                            placed, exemplar - 1)
    return image, field_report(placed)

def keypoint_files(input_dir: str) -> list[str]:
    """The .json files of the host's input folder (sub-folders included), sorted."""
    found = []
    for root, _, files in os.walk(input_dir):
        for name in files:
            if name.lower().endswith(".json"):
                found.append(os.path.relpath(os.path.join(root, name), input_dir).replace(os.sep, "/"))
    return sorted(found)


def load_keypoints_file(path: str, where: str) -> list:
    """An OpenPose-JSON file -> POSE_KEYPOINT (checked as keypoints, so a wrong file fails here)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as e:
        raise NodeInputError(f"{where}: cannot read '{os.path.basename(path)}' ({e.strerror}); put the file in "
                             "ComfyUI's input folder") from None
    frames = parse_pose_json(text, where, os.path.basename(path))
    read_pose_keypoints(frames, where=where, name=os.path.basename(path))  # every frame checked once
    return frames


# ---------------------------------------------------------------------------------- preview

_COLOURS = ((1.0, 0.2, 0.2), (0.2, 0.9, 0.2), (0.3, 0.5, 1.0), (1.0, 0.85, 0.1), (1.0, 0.3, 1.0), (0.1, 0.9, 0.9))


def anchors_preview(condition: torch.Tensor, exemplar: torch.Tensor, placed: PlacedAnchors, exemplar_index: int = 0,
                    grid_lines: int = 12) -> torch.Tensor:
    """condition (B, 3, H, W) | exemplar (B, 3, H', W') side by side as a host IMAGE (B, max H,
    W + W', 3): the anchor pairs numbered in both images with a line between them, and on the
    exemplar the field drawn as the condition's regular grid deformed by T(u)."""
    import numpy as np
    from PIL import Image, ImageDraw

    out = []
    for b in range(condition.shape[0]):
        cond = (condition[b].movedim(0, -1).clamp(0, 1) * 255).byte().cpu().numpy()
        exem = (exemplar[b].movedim(0, -1).clamp(0, 1) * 255).byte().cpu().numpy()
        h, w = cond.shape[:2]
        he, we = exem.shape[:2]
        field = placed.fields[exemplar_index][b]
        hx, wx = field.target.shape[-2:]
        hy, wy = placed.exemplar_grid
        # the field: the condition's grid lines carried into the exemplar (cells -> pixels), drawn
        # on the exemplar alone so that lines mapped outside it are clipped there
        exemplar_image = Image.fromarray(exem)
        grid_draw = ImageDraw.Draw(exemplar_image)
        px = (field.target[0] + 0.5) * (we / wy)
        py = (field.target[1] + 0.5) * (he / hy)
        step_y, step_x = max(1, hx // grid_lines), max(1, wx // grid_lines)
        for i in range(0, hx, step_y):
            grid_draw.line(list(zip(px[i].tolist(), py[i].tolist())), fill=(255, 255, 255), width=1)
        for j in range(0, wx, step_x):
            grid_draw.line(list(zip(px[:, j].tolist(), py[:, j].tolist())), fill=(255, 255, 255), width=1)
        canvas = Image.new("RGB", (w + we, max(h, he)), (0, 0, 0))
        canvas.paste(Image.fromarray(cond), (0, 0))
        canvas.paste(exemplar_image, (w, 0))
        draw = ImageDraw.Draw(canvas)
        pair = placed.pairs[exemplar_index][b]
        radius = max(2, round(min(h, w) / 128))
        for k, ((cx, cy), (ex, ey)) in enumerate(zip(pair.condition.tolist(), pair.exemplar.tolist())):
            colour = tuple(int(255 * c) for c in _COLOURS[k % len(_COLOURS)])
            draw.line([(cx, cy), (ex + w, ey)], fill=colour, width=1)
            for x, y in ((cx, cy), (ex + w, ey)):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
                draw.text((x + radius + 1, y - radius - 1), str(k), fill=colour)
        out.append(torch.from_numpy(np.asarray(canvas).copy()).float() / 255)
    return torch.stack(out)
