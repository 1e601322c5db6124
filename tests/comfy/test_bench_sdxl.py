"""Smoke test of the SDXL-scale benchmark (benchmarks/bench_sdxl.py --quick) in a real ComfyUI.

The benchmark imports ComfyUI in-process, so it runs as a subprocess under the host's interpreter
(one host per process); this test only reads its markdown and JSON. About 45 s on 2 CPU cores.

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_bench_sdxl.py -q
"""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from harness.host import REPO, require_host

ROW_LABELS = ("host euler (plain)", "MIDMs, re-warp off (control)", "MIDMs + edge matcher",
              "MIDMs + diffusion matcher (DIFT)")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    host = require_host()
    out = tmp_path_factory.mktemp("bench_sdxl")
    md, js = out / "quick.md", out / "quick.json"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([host.python, "-m", "benchmarks.bench_sdxl", "--quick", "--out", str(md), "--json", str(js)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return md.read_text(), json.loads(js.read_text())


def test_tables_have_the_expected_rows(quick):
    text, data = quick
    assert text.startswith("# MIDMs at SDXL scale:") and "threads" in text and "torch " in text
    for section in ("## Whole run", "## Per step", "## Where one re-match goes", "## Matching memory"):
        assert section in text, section
    whole = [line for line in text.splitlines() if line.startswith("| tiny SDXL (tests) | 16 |")]
    for label in ROW_LABELS:
        assert sum(label in line for line in whole) == 1, label
    assert data["params"]["tiny"] > 1e6
    memory = [line for line in text.splitlines() if line.startswith("| 32 |")]
    assert len(memory) == 2 and not any("error" in line.lower() for line in memory)


def test_times_are_finite_and_positive(quick):
    _, data = quick
    (run,) = data["runs"]
    assert set(run["medians"]) == {"plain", "control", "edge", "dift"}
    assert all(_positive(t) for times in run["times"].values() for t in times)
    assert all(_positive(v) for v in run["bind_s"].values()) and set(run["bind_s"]) == {"edge", "dift"}
    assert run["channels"]["edge"] > run["channels"]["dift"] > 4
    alone = [e for e in data["per_step"] if e["source"] == "re-match timed alone"]
    assert len(alone) == 2 and all(_positive(e["rematch_s"]) and _positive(e["unet_s"]) for e in alone)
    for entry in data["profiles"]:
        prof = entry["profile"]
        assert all(_positive(prof[k]) or prof[k] == 0 for k in ("features", "forward", "backward", "total", "fused"))
        # one correlation pass for both directions agrees with two (midms_core's passes="one")
        assert prof["fused_warp_err"] < 1e-5 and prof["fused_bwd_err"] < 1e-5 and prof["fused_mask_agree"] == 1.0


def test_rewarp_off_control_equals_the_host_plain_sampler(quick):
    _, data = quick
    (run,) = data["runs"]
    assert run["err_vs_plain"]["control"] < 1e-5
    # re-warping changes the result, so the comparison above is not vacuous
    assert run["err_vs_plain"]["edge"] > 1e-3 and run["err_vs_plain"]["dift"] > 1e-3
