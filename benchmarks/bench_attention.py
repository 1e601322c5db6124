"""The warp's attention: the fused kernel path of ``attend`` (scaled_dot_product_attention with
the per-row clamp certificate) against the exact block loop, measured side by side in one run.

    python -m benchmarks.bench_attention                  # CPU, sides 32 64 128
    python -m benchmarks.bench_attention --device cuda    # the same on a GPU

Features are realistic for the certificate: the condition's are the exemplar's shifted by a few
cells plus noise (peaked rows, as real matches are); a second row set makes a quarter of the
query rows adversarial (every cosine negative: the clamp changes them and they fall back). With
"prior", the edge matcher's default locality prior (sigma 0.03 of the side) joins the logits
(in the kernel as its additive mask).
Columns: time of each path (median of repeats), the ratio, the largest difference between
them, and the share of rows the certificate sent to the exact loop.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import midms_core.attention as kernel
import midms_core.correspondence as corr
from benchmarks.tables import Table, ratio
from midms_core.attention import AttentionSettings


def features(side: int, channels: int, adversarial: bool, device) -> tuple:
    g = torch.Generator().manual_seed(side + channels)
    d = torch.randn(channels, 1, 1, generator=g)
    key = d + torch.randn(1, channels, side, side, generator=g)
    query = key.roll(3, dims=-1) + 0.5 * torch.randn(1, channels, side, side, generator=g)
    if adversarial:
        flat = query.view(channels, -1)
        rows = torch.arange(0, side * side, 4)
        flat[:, rows] = -3 * d.view(channels, 1) + 0.05 * torch.randn(channels, rows.numel(), generator=g)
    values = torch.randn(1, 4, side, side, generator=g)
    return query.to(device), key.to(device), values.to(device)


def prior_locality(side: int, device):
    """The edge matcher's default locality prior: around the true shift, sigma 0.03 of the side."""
    from midms_core.alignment import SpatialPrior

    grid = corr.coordinate_grid(1, side, side, device).clone()
    grid[:, 0] = (grid[:, 0] - 3) % side
    return SpatialPrior(grid, max(0.03 * side, 0.5)).locality()


def timed(fn, repeats: int, device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fallback_share(query, key, values, locality=None) -> float:
    """Share of query rows the certificate recomputes exactly (counted by wrapping the loop)."""
    counted = []
    exact = kernel.exact_rows_subset

    def spy(q_rows, unsafe, *args, **kwargs):
        counted.append(unsafe.numel())
        return exact(q_rows, unsafe, *args, **kwargs)

    kernel.exact_rows_subset = spy  # the fused path looks it up in its module at each call
    try:
        corr.attend(query, key, values, locality=locality)
    finally:
        kernel.exact_rows_subset = exact
    return sum(counted) / (query.shape[-1] * query.shape[-2])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {device}\n")
    table = Table(("latent side", "channels", "prior", "rows", "loop (s)", "fused (s)", "fused / loop", "max difference",
                   "rows to the loop"), "l" * 9)
    print("\n".join(table.head()))
    for side in args.sides:
        for channels in args.channels:
            for with_prior in (False, True):
                locality = prior_locality(side, device) if with_prior else None
                for adversarial in (False, True):
                    query, key, values = features(side, channels, adversarial, device)
                    loop = corr.attend(query, key, values, AttentionSettings(fused=False), locality=locality)
                    fused = corr.attend(query, key, values, locality=locality)
                    t_loop = timed(lambda: corr.attend(query, key, values, AttentionSettings(fused=False), locality=locality),
                                   args.repeats, device)
                    t_fused = timed(lambda: corr.attend(query, key, values, locality=locality), args.repeats, device)
                    share = fallback_share(query, key, values, locality)
                    print(table.add(side, channels, "yes" if with_prior else "no",
                                    "1/4 adversarial" if adversarial else "peaked", f"{t_loop:.3f}", f"{t_fused:.3f}",
                                    ratio(t_fused, t_loop), f"{float((loop - fused).abs().max()):.1e}", f"{share:.1%}"),
                          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
