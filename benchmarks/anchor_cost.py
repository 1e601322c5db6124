"""What anchors cost beside one match: ``python -m benchmarks.anchor_cost``.

At a 128 x 128 latent grid (the shipped example pair at 1024 px, 8 px per cell, edge matcher):
the time to build the anchor field and its prior (68 face points, or 18 body joints per part)
against one first warp with confidence (``warp_with_confidence``) with the matcher's own
scalar-sigma prior and with the anchor prior's per-cell target and sigma, and the two binds
(the default's similarity search, none with anchors), side by side, median of ``--repeats``
runs, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.tables import Table, machine, publish, ratio
from midms_core.anchors.binding import bind_anchored
from midms_core.anchors.field import FieldSettings, anchor_field, anchor_prior
from midms_core.anchors.keypoints import BODY_COCO18
from midms_core.confidence import warp_with_confidence
from midms_core.matchers.base import MatchSide
from midms_core.matchers.edge import EdgeDescriptorMatcher

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "workflows" / "inputs"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def photos(size: int) -> tuple[Tensor, Tensor]:
    """The shipped example pair (re-posed astronaut edges, astronaut photo) at ``size`` px, (1, 3, S, S)."""
    import numpy as np
    from PIL import Image

    def load(name: str) -> Tensor:
        image = Image.open(INPUTS / name).convert("RGB").resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255

    return load("midms_condition_edges.png"), load("midms_exemplar.png")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "anchor_cost.md",
                        help="write the report here too")
    args = parser.parse_args(argv)
    n = args.grid
    condition, exemplar = photos(8 * n)
    cond_side = MatchSide(latent=F.avg_pool2d(condition, 8), image=condition)
    exem_side = MatchSide(latent=F.avg_pool2d(exemplar, 8), image=exemplar)
    g = torch.Generator().manual_seed(0)
    face_src = torch.rand(68, 2, generator=g, dtype=torch.float64) * (n - 1)
    face_dst = face_src + torch.randn(68, 2, generator=g, dtype=torch.float64)
    face_labels = tuple(f"face/{i}" for i in range(68))
    body_src = torch.rand(18, 2, generator=g, dtype=torch.float64) * (n - 1)
    body_dst = body_src + torch.randn(18, 2, generator=g, dtype=torch.float64) * 3
    body_labels = tuple(f"body/{name}" for name in BODY_COCO18)
    settings = FieldSettings()
    matcher = EdgeDescriptorMatcher()
    with torch.inference_mode():
        face = lambda: anchor_prior([anchor_field(face_src, face_dst, face_labels, (n, n), (n, n), settings)])  # noqa: E731
        body = lambda: anchor_prior([anchor_field(body_src, body_dst, body_labels, (n, n), (n, n), settings)])  # noqa: E731
        t_face, t_body = timed(face, args.repeats), timed(body, args.repeats)
        plain = matcher.bind(cond_side, exem_side)
        anchored = bind_anchored(matcher, cond_side, [exem_side], [face()])
        t_bind = timed(lambda: matcher.bind(cond_side, exem_side), 1)
        t_bind_anchored = timed(lambda: bind_anchored(matcher, cond_side, [exem_side], [face()]), 1)
        t_scalar = timed(lambda: warp_with_confidence(plain.condition, plain.exemplar, exem_side.latent,
                                                      prior=plain.prior), args.repeats)
        t_anchor = timed(lambda: warp_with_confidence(anchored.condition, anchored.exemplar, exem_side.latent,
                                                      prior=anchored.prior), args.repeats)
    table = Table(("step", "seconds", "/ one first warp without anchors"), "lrr")
    table.add("first warp, the matcher's own prior (scalar sigma)", f"{t_scalar:.3f}", "1.00")
    table.add("first warp, anchor prior (per-cell target and sigma)", f"{t_anchor:.3f}", ratio(t_anchor, t_scalar, 3))
    table.add("anchor field + prior, 68 face points", f"{t_face:.4f}", ratio(t_face, t_scalar, 3))
    table.add("anchor field + prior, 18 body joints (per part)", f"{t_body:.4f}", ratio(t_body, t_scalar, 3))
    table.add("bind, default (similarity search + mirror)", f"{t_bind:.3f}", ratio(t_bind, t_scalar, 3))
    table.add("bind with anchors (no search)", f"{t_bind_anchored:.3f}", ratio(t_bind_anchored, t_scalar, 3))
    text = (f"# anchor cost at {n} x {n} (edge matcher, the shipped example pair at {8 * n} px): {machine()}, CPU\n\n"
            f"Produced by `python -m benchmarks.anchor_cost --repeats {args.repeats}` (median of the repeats; the binds "
            f"once each).\n\n{table}\n")
    publish(text, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
