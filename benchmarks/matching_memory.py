"""One matching call on random features, its peak extra memory and time, in a fresh process.

Shared by ``bench_core`` (matching table) and ``bench_sdxl`` (matching memory at SDXL widths):

    measure_in_child(128, 256, "two", threads=2)  # -> {"extra": bytes, "seconds": s} or {"error": ...}

runs ``python -m benchmarks.matching_memory 128 256 two --threads 2``, which builds seeded random
features cond, exem (1, C, side, side) and a latent (1, 4, side, side), runs one method of
:data:`METHODS` under :func:`benchmarks.peak_memory.measure` and prints the JSON line. A fresh
process per measurement, because freed heap kept by the allocator would hide a new peak.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

import torch

import midms_core as mc
from midms_core.confidence import ConfidenceSettings
from benchmarks.peak_memory import measure, run_child


def dense_warp_with_confidence(cond: torch.Tensor, exem: torch.Tensor, values: torch.Tensor, tau: float = 0.005):
    """The official code's evaluation: one dense correlation matrix, softmax along both axes."""
    q = mc.correspondence.centre_normalise(cond).flatten(2)
    k = mc.correspondence.centre_normalise(exem).flatten(2)
    corr = torch.einsum("bcn,bcm->bnm", q, k).clamp(min=0)  # (B, Nx, Ny)
    forward_w = torch.softmax(corr / tau, dim=2)
    grid_y = mc.correspondence.coordinate_grid(1, *exem.shape[-2:]).flatten(2)
    warped = torch.einsum("bnm,bcm->bcn", forward_w, values.flatten(2))
    forward = torch.einsum("bnm,bcm->bcn", forward_w, grid_y)
    del forward_w
    backward_w = torch.softmax(corr / tau, dim=1)
    grid_x = mc.correspondence.coordinate_grid(1, *cond.shape[-2:]).flatten(2)
    backward = torch.einsum("bnm,bcn->bcm", backward_w, grid_x)
    h, w = cond.shape[-2:]
    dist = mc.cycle_distance(forward.view(1, 2, h, w), backward.view(1, 2, *exem.shape[-2:]))
    return warped.view(1, -1, h, w), mc.confidence.hard_confidence(dist)


METHODS = ("auto", "two", "one", "prior", "dense")


def method_call(method: str, cond: torch.Tensor, exem: torch.Tensor, latent: torch.Tensor):
    """The call to measure, its set-up done: the lean warp with ``passes`` "auto" / "two" / "one",
    with the default path's locality prior ("prior": a similarity-aligned target, 0.03 of the
    grid), or the dense baseline ("dense")."""
    if method == "dense":
        return lambda: dense_warp_with_confidence(cond, exem, latent)
    side = cond.shape[-1]
    kwargs = ({"prior": mc.SpatialPrior(mc.correspondence.coordinate_grid(1, side, side) * 0.9 + 0.05 * side, 0.03 * side)}
              if method == "prior" else {"confidence": ConfidenceSettings(passes=method)})
    return lambda: mc.warp_with_confidence(cond, exem, latent, **kwargs)


def child(side: int, channels: int, method: str) -> dict:
    """Measure :func:`method_call` on seeded random inputs in THIS process."""
    torch.manual_seed(0)
    cond = torch.randn(1, channels, side, side)
    exem = torch.randn(1, channels, side, side)
    latent = torch.randn(1, 4, side, side)
    _, extra, seconds = measure(method_call(method, cond, exem, latent))
    return {"extra": extra, "seconds": seconds}


def measure_in_child(side: int, channels: int, method: str, threads: Optional[int] = None) -> dict:
    """:func:`child` in a fresh process (``threads``: torch and OpenMP threads there; default torch's)."""
    args = [str(side), str(channels), method] + (["--threads", str(threads)] if threads else [])
    return run_child("benchmarks.matching_memory", args, env={"OMP_NUM_THREADS": str(threads)} if threads else None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("side", type=int)
    parser.add_argument("channels", type=int)
    parser.add_argument("method", choices=METHODS)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(child(args.side, args.channels, args.method)))
