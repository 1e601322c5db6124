"""Memory acceptance: matching grows linearly, not quadratically, with the number of positions.

Each measurement runs in a fresh Python process (see ``benchmarks/peak_memory.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")


def run_measured(body: str, timeout: int = 900) -> dict:
    """Run ``body`` (which defines ``inputs()`` and ``call(*inputs)``) in a fresh process and
    return {"extra": peak extra bytes, "seconds": ..., "finite": ...}."""
    script = textwrap.dedent(
        """
        import json, torch
        import midms_core as mc
        from benchmarks.peak_memory import measure
        torch.manual_seed(0)
        """
    ) + textwrap.dedent(body) + textwrap.dedent(
        """
        args = inputs()
        out, extra, seconds = measure(lambda: call(*args))
        finite = all(bool(torch.isfinite(t).all()) for t in (out if isinstance(out, (tuple, list)) else [out]))
        print(json.dumps({"extra": extra, "seconds": seconds, "finite": finite}))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_meter_sees_a_known_allocation():
    got = run_measured(
        """
        def inputs():
            return ()
        def call():
            return torch.ones(128 * 2**20 // 4)
        """
    )
    assert 120 * MiB < got["extra"] < 200 * MiB


@pytest.mark.parametrize("passes,prior", [("two", False), ("one", False), ("two", True), ("one", True)])
def test_128_latent_warp_and_confidence_within_512_mb(passes, prior):
    """SDXL at 1024 px: 128 x 128 latent, 256-channel features, warp + confidence mask, with the
    correlation streamed once per direction or once for both, with and without the locality
    prior of the default matching path (the edge matcher's global alignment)."""
    got = run_measured(
        """
        from midms_core.alignment import SpatialPrior
        from midms_core.confidence import ConfidenceSettings
        def inputs():
            return torch.randn(1, 256, 128, 128), torch.randn(1, 256, 128, 128), torch.randn(1, 4, 128, 128)
        def call(cond, exem, latent):
            prior = SpatialPrior(mc.correspondence.coordinate_grid(1, 128, 128) * 0.9 + 6, 0.03 * 128) if %r else None
            res = mc.warp_with_confidence(cond, exem, latent, confidence=ConfidenceSettings(passes=%r), prior=prior)
            return res.warped, res.mask
        """ % (prior, passes)
    )
    assert got["finite"]
    assert got["extra"] < 512 * MiB, got


def test_128_latent_warp_with_an_anchor_prior_within_512_mb():
    """The same warp with the per-cell target and sigma of a 68-anchor field (semantic anchors):
    the prior adds two small tables per row block, nothing of N x N size."""
    got = run_measured(
        """
        from midms_core.anchors.field import anchor_field, anchor_prior
        def inputs():
            g = torch.Generator().manual_seed(1)
            src = torch.rand(68, 2, generator=g, dtype=torch.float64) * 127
            prior = anchor_prior([anchor_field(src, src * 0.9 + 6, tuple(f"face/{i}" for i in range(68)), (128, 128), (128, 128))])
            return torch.randn(1, 256, 128, 128), torch.randn(1, 256, 128, 128), torch.randn(1, 4, 128, 128), prior
        def call(cond, exem, latent, prior):
            res = mc.warp_with_confidence(cond, exem, latent, prior=prior)
            return res.warped, res.mask
        """
    )
    assert got["finite"]
    assert got["extra"] < 512 * MiB, got


@pytest.mark.parametrize("passes", ["two", "one"])
def test_128_latent_union_of_two_exemplars_with_masks_within_512_mb(passes):
    """Two exemplars matched as one union (twice the keys) with a prior per exemplar, region
    masks and label maps: still streamed, still within the budget."""
    got = run_measured(
        """
        from midms_core.alignment import SpatialPrior
        from midms_core.matchers.base import Restriction
        from midms_core.exemplars.union import warp_union_with_confidence
        from midms_core.confidence import ConfidenceSettings
        def inputs():
            g = torch.Generator().manual_seed(0)
            cond = torch.randn(1, 256, 128, 128, generator=g)
            exemplars = [torch.randn(1, 256, 128, 128, generator=g) for _ in range(2)]
            latents = [torch.randn(1, 4, 128, 128, generator=g) for _ in range(2)]
            masks = torch.zeros(1, 2, 128, 128); masks[:, 0, :, :64] = 1; masks[:, 1, :, 48:] = 1
            labels = torch.randint(0, 3, (1, 1, 128, 128), generator=g)
            restriction = Restriction(condition_masks=masks, exemplar_masks=torch.ones(1, 2, 128, 128),
                                      condition_labels=labels, exemplar_labels=labels.expand(1, 2, 128, 128))
            return cond, exemplars, latents, restriction
        def call(cond, exemplars, latents, restriction):
            priors = [SpatialPrior(mc.correspondence.coordinate_grid(1, 128, 128) * 0.9 + 6, 0.03 * 128) for _ in range(2)]
            res = warp_union_with_confidence(cond, exemplars, latents, confidence=ConfidenceSettings(passes=%r),
                                             priors=priors, restriction=restriction)
            return res.warped, res.mask, res.source
        """ % passes
    )
    assert got["finite"]
    assert got["extra"] < 512 * MiB, got


def test_dense_evaluation_would_not_fit_the_same_budget():
    """The same problem through the dense path needs the full 16384^2 matrix (1 GiB in float32);
    this keeps the budget test honest: the meter does see the quadratic term."""
    got = run_measured(
        """
        def inputs():
            return torch.randn(1, 256, 128, 128), torch.randn(1, 256, 128, 128), torch.randn(1, 4, 128, 128)
        def call(cond, exem, latent):
            return mc.correspondence.attend_dense(cond, exem, latent)
        """
    )
    assert got["extra"] > 1024 * MiB, got


@pytest.mark.slow
def test_256_latent_completes_within_this_machine():
    """A 256 x 256 latent (65536 positions; the dense matrix alone would be 16 GiB)."""
    got = run_measured(
        """
        def inputs():
            return torch.randn(1, 256, 256, 256), torch.randn(1, 256, 256, 256), torch.randn(1, 4, 256, 256)
        def call(cond, exem, latent):
            res = mc.warp_with_confidence(cond, exem, latent)
            return res.warped, res.mask
        """
    )
    assert got["finite"]
    assert got["extra"] < 1024 * MiB, got
