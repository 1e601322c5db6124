"""Peak extra resident memory of a call, on Linux, for CPU benchmarks and memory tests.

torch's CPU allocations are invisible to tracemalloc, so this reads the kernel's high-water mark:
writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS, and VmHWM after the call is
the peak. Extra memory = peak - RSS just before the call (inputs already allocated).
Run each measurement in a fresh process: freed heap kept by the allocator would hide new peaks.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]


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


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 when unknown): what a dense baseline may use."""
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_child(module: str, args: Sequence[str], env: Dict[str, str] | None = None) -> dict:
    """``python -m module args`` in a fresh process (repo on PYTHONPATH); the JSON object on the
    last line of its stdout, or {"error": last line of stderr}."""
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])
