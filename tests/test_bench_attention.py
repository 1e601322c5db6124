"""The fused-attention benchmark runs end to end on a tiny size (it patches the kernel's exact
fallback to count rows, so a rename there must not break it silently)."""

from __future__ import annotations

from benchmarks import bench_attention


def test_attention_benchmark_runs_and_prints_its_rows(capsys):
    bench_attention.main(["--sides", "8", "--channels", "8", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |")]
    assert rows, "no table rows printed"
