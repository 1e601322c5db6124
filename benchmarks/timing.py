"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Tuple

import torch


def median_timed(fn: Callable[[], Any], repeats: int) -> Tuple[float, Any]:
    """(median seconds of ``repeats`` calls of ``fn()``, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float32 (``b`` the reference)."""
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))
