"""Peak extra resident memory of a call, on Linux, for CPU benchmarks and memory tests.

torch's CPU allocations are invisible to tracemalloc, so this reads the kernel's high-water mark:
writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS, and VmHWM after the call is
the peak. Extra memory = peak - RSS just before the call (inputs already allocated).
Run each measurement in a fresh process: freed heap kept by the allocator would hide new peaks.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Tuple


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def measure(fn: Callable[[], Any]) -> Tuple[Any, int, float]:
    """Run ``fn()`` and return (its result, peak extra bytes, seconds)."""
    gc.collect()
    baseline = _status_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return result, (peak - baseline) * 1024, seconds
