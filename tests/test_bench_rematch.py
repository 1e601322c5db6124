"""The re-match benchmark runs and compares like with like: an earlier revision's midms_core is
imported apart from this tree's (here the committed HEAD, which every clone has), and the
default path of both gives the same blended x0 and mask."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmarks import bench_rematch


def test_rematch_benchmark_against_head_prints_one_row_per_case(capsys):
    pytest.importorskip("skimage")
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=bench_rematch.ROOT,
                                                      capture_output=True).returncode != 0:
        pytest.skip("needs the repository's git history")
    bench_rematch.main(["--baseline", "HEAD", "--sides", "16", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and " x 16 |" in line]
    assert len(rows) == 2 * 3  # printed as they come, then in the report
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[6]) < 1e-6  # HEAD's default path and this tree's agree (the same maths)
        assert float(cells[7]) < 1e-3  # two fused passes: the same result within float32 rounding
