"""What anchors cost beside one match: ``python -m benchmarks.anchor_cost``.

At a 128 x 128 latent grid (1024 px at 8 px per cell): the time to build the anchor field and
its prior (68 face points, or 18 body joints per part) against one first warp with confidence
(``warp_with_confidence``, edge-descriptor-sized features) with the matcher's usual scalar-sigma
prior and with the anchor prior's per-cell target and sigma, measured side by side, median of
``--repeats`` runs, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional, Sequence

import torch

from midms_core.alignment import SpatialPrior, affine_targets
from midms_core.anchor_field import FieldSettings, anchor_field, anchor_prior
from midms_core.confidence import warp_with_confidence
from midms_core.keypoints import BODY_COCO18
from benchmarks.tables import Table, machine, ratio


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--channels", type=int, default=264, help="feature channels (the edge matcher's S_x / S_y: 264)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    n = args.grid
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, args.channels, n, n, generator=g)
    exem = torch.randn(1, args.channels, n, n, generator=g)
    values = torch.randn(1, 4, n, n, generator=g)
    matrix = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]]])
    scalar = SpatialPrior(affine_targets(matrix, (n, n)), 0.03 * n)
    face_src = torch.rand(68, 2, generator=g, dtype=torch.float64) * (n - 1)
    face_dst = face_src + torch.randn(68, 2, generator=g, dtype=torch.float64)
    face_labels = tuple(f"face/{i}" for i in range(68))
    body_src = torch.rand(18, 2, generator=g, dtype=torch.float64) * (n - 1)
    body_dst = body_src + torch.randn(18, 2, generator=g, dtype=torch.float64) * 3
    body_labels = tuple(f"body/{name}" for name in BODY_COCO18)
    settings = FieldSettings()
    with torch.inference_mode():
        face = lambda: anchor_prior([anchor_field(face_src, face_dst, face_labels, (n, n), (n, n), settings)])  # noqa: E731
        body = lambda: anchor_prior([anchor_field(body_src, body_dst, body_labels, (n, n), (n, n), settings)])  # noqa: E731
        anchored = face()
        t_face, t_body = timed(face, args.repeats), timed(body, args.repeats)
        t_scalar = timed(lambda: warp_with_confidence(cond, exem, values, prior=scalar), args.repeats)
        t_anchor = timed(lambda: warp_with_confidence(cond, exem, values, prior=anchored), args.repeats)
    table = Table(("step", "seconds", "/ one match (scalar prior)"), "lrr")
    table.add("one match, scalar-sigma prior", f"{t_scalar:.3f}", "1.00")
    table.add("one match, anchor prior (per-cell target, sigma)", f"{t_anchor:.3f}", ratio(t_anchor, t_scalar, 3))
    table.add("anchor field + prior, 68 face points", f"{t_face:.4f}", ratio(t_face, t_scalar, 3))
    table.add("anchor field + prior, 18 body joints (per part)", f"{t_body:.4f}", ratio(t_body, t_scalar, 3))
    print(f"# anchor cost at {n} x {n}, {args.channels} channels: {machine()}, CPU\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
