"""benchmarks/warp_quality.py with ``--checkpoint``: the checkpoint's VAE makes the latents and its
U-Net adds the diffusion-feature (DIFT) row, through a real ComfyUI.

No real checkpoint exists here, so a tiny seeded SD1.5-shaped one (harness/tiny_models.py;
its one-level U-Net has output blocks 0 and 1 only, hence ``--output-block 1``) stands in. Its
numbers are what random weights give and mean nothing; this checks only that the path runs end
to end under the host's interpreter and that every row exists with finite values in range.

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_warp_quality_host.py -q
(the benchmark runs in a subprocess with the host's interpreter, so any interpreter can run this).
"""

from __future__ import annotations

import json
import math
import os
import subprocess

from harness.host import REPO, require_host
from harness.tiny_models import write_tiny_sd15_checkpoint


def test_checkpoint_run_has_a_finite_diffusion_row(tmp_path):
    host = require_host()
    checkpoint = write_tiny_sd15_checkpoint(tmp_path / "tiny_sd15.safetensors", seed=0)["path"]
    out, markdown = tmp_path / "warp_quality.json", tmp_path / "warp_quality.md"
    env = {**os.environ, "COMFYUI_PATH": host.comfyui, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [host.python, "-m", "benchmarks.warp_quality", "--checkpoint", checkpoint, "--output-block", "1",
           "--photos", "astronaut", "--seeds", "1", "--conditions", "canny", "--size", "64",
           "--json", str(out), "--markdown", str(markdown)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    data = json.loads(out.read_text())
    assert data["latents"] == "VAE of tiny_sd15.safetensors (4 channels)"
    rows = data["rows"]
    diffusion = [r for r in rows if r["matcher"].startswith("diffusion")]
    assert [r["stage"] for r in diffusion] == ["first match", "re-match"]
    assert "block 1" in diffusion[0]["matcher"]
    matchers = {r["matcher"] for r in rows}
    assert {"naive", "kornia_edges", "learned (random init)", "identity", "true flow"} <= matchers
    for r in rows:
        for k in (1, 2, 4):
            assert 0 <= r[f"pck@{k}"] <= 1, r
        assert math.isfinite(r["psnr_all"]) and 0 < r["psnr_all"] < 60, r
        if r["stage"] != "-":
            assert 0 <= r["coverage"] <= 1 and 0 <= r["recall"] <= 1, r
            assert math.isnan(r["precision"]) or 0 <= r["precision"] <= 1, r
    assert "| diffusion (t 261, block 1, ensemble 1) | first match |" in markdown.read_text()
