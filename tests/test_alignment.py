"""Global alignment and the locality prior (midms_core.alignment): the prior's pair term, the
streamed warp with it against a float64 transcription (both directions, a batch of priors), and
the similarity search on known transforms (off the coarse lattice, mirrored too). The edge
matcher's use of them is measured in tests/test_cross_instance.py."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import midms_core as mc
from midms_core.alignment import SpatialPrior, affine_targets, search_similarity
from midms_core.confidence import ConfidenceSettings, warp_with_confidence
from midms_core.attention import locality_tables, subtract_locality
from midms_core.correspondence import attend_dense, coordinate_grid
from tests import reference as ref
from midms_core.attention import AttentionSettings


def smooth_features(channels, h, w, seed, blur=2):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(1, channels, h + 4 * blur, w + 4 * blur, generator=g)
    return F.avg_pool2d(f, 2 * blur + 1, stride=1)[..., :h, :w].contiguous()


def resample(features, matrix):
    """features sampled so that out(u) = features(M u): (1, C, h, w) exemplar -> condition grid."""
    h, w = features.shape[-2:]
    t = affine_targets(matrix, (h, w))
    grid = torch.stack([(t[:, 0] + 0.5) / w * 2 - 1, (t[:, 1] + 0.5) / h * 2 - 1], dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize("per_cell", [False, True])
def test_prior_pair_term_is_the_gaussian_distance(per_cell):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 2, 3, 4, generator=g) * 6 - 1
    sigma = (torch.rand(2, 1, 3, 4, generator=g) + 0.5) if per_cell else 1.7
    loc = SpatialPrior(target, sigma).locality()
    # one block holding every row: the subtracted term is the Gaussian distance, and swapped
    # (exemplar rows, condition columns) it is its transpose; the swapped one also in blocks of
    # whole grid rows (6 exemplar cells each)
    logits = torch.zeros(2, 12, 30)
    back = torch.zeros(2, 30, 12)
    for b in range(2):
        subtract_locality(logits[b], locality_tables(loc, (5, 6), b), "query", (5, 6), 0)
        tables = locality_tables(loc.swapped(), (5, 6), b)
        for start in range(0, 30, 12):
            subtract_locality(back[b, start : start + 12], tables, "key", (5, 6), start)
    v = ref.pixel_grid(5, 6)
    for b in range(2):
        for u in range(12):
            s = float(sigma[b].flatten()[u]) if per_cell else sigma
            want = -((v - target[b].flatten(1)[:, u : u + 1].double()) ** 2).sum(0) / (2 * s * s)
            assert torch.allclose(logits[b, u].double(), want, atol=1e-5, rtol=1e-5)
            assert torch.allclose(back[b, :, u].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("passes", ["one", "two"])
@pytest.mark.parametrize("per_cell", [False, True])
def test_warp_with_prior_equals_transcription_both_ways(passes, per_cell):
    hx, wx, hy, wy, c = 6, 7, 5, 8, 16
    sx, sy = smooth_features(c, hx, wx, 1), smooth_features(c, hy, wy, 2)
    values = torch.randn(1, 3, hy, wy, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    target = torch.rand(1, 2, hx, wx, generator=g) * torch.tensor([wy - 1.0, hy - 1.0]).view(1, 2, 1, 1)
    sigma = torch.rand(1, 1, hx, wx, generator=g) + 0.8 if per_cell else 1.3
    tau = 0.05
    prior = SpatialPrior(target, sigma)
    # a tiny block budget: several blocks of rows, so the streaming is exercised
    res = warp_with_confidence(sx, sy, values, AttentionSettings(tau=tau, chunk_bytes=4 * hy * wy * 3),
                               ConfidenceSettings(passes=passes), prior=prior)
    args = (sx[0].flatten(1), sy[0].flatten(1))
    t = target[0].flatten(1)
    s = sigma[0, 0] if per_cell else sigma
    want_warp = ref.soft_warp_with_locality(*args, values[0].flatten(1), tau, t, s, (hy, wy))
    want_flow = ref.soft_warp_with_locality(*args, ref.pixel_grid(hy, wy), tau, t, s, (hy, wy))
    want_back = ref.soft_warp_with_locality(*args, ref.pixel_grid(hx, wx), tau, t, s, (hy, wy), direction="backward")
    assert torch.allclose(res.warped[0].flatten(1).double(), want_warp, atol=2e-5)
    assert torch.allclose(res.forward_flow[0].flatten(1).double(), want_flow, atol=2e-4)
    assert torch.allclose(res.backward_flow[0].flatten(1).double(), want_back, atol=2e-4)
    # and the prior matters: without it the answer differs
    plain = warp_with_confidence(sx, sy, values, AttentionSettings(tau=tau), ConfidenceSettings(passes=passes))
    assert (plain.forward_flow - res.forward_flow).abs().max() > 0.1


def test_dense_and_streamed_agree_with_locality_and_realistic_tau():
    sx, sy = smooth_features(32, 16, 16, 5), smooth_features(32, 16, 16, 6)
    prior = SpatialPrior(coordinate_grid(1, 16, 16) + 1.5, 2.0)
    locality = prior.locality()
    values = coordinate_grid(1, 16, 16)
    dense = attend_dense(sx, sy, values, AttentionSettings(tau=0.005), locality=locality)
    streamed = mc.correspondence.attend(sx, sy, values, AttentionSettings(tau=0.005, chunk_bytes=4 * 256 * 10), locality=locality)
    assert torch.allclose(dense, streamed, atol=1e-4)
    # the backward orientation: blocks of whole query-grid rows even for a budget of 10 rows
    back_dense = attend_dense(sy, sx, values, AttentionSettings(tau=0.005), locality=locality.swapped())
    back_streamed = mc.correspondence.attend(sy, sx, values, AttentionSettings(tau=0.005, chunk_bytes=4 * 256 * 10), locality=locality.swapped())
    assert torch.allclose(back_dense, back_streamed, atol=1e-4)


def test_a_batch_of_priors_gives_a_batch_of_warps():
    # features and values of batch 1, a prior of batch 2: two different warps, each equal to its own
    sx, sy = smooth_features(16, 8, 8, 1), smooth_features(16, 8, 8, 2)
    values = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.cat([coordinate_grid(1, 8, 8), coordinate_grid(1, 8, 8).flip(-1)])
    both = warp_with_confidence(sx, sy, values, AttentionSettings(tau=0.05), prior=SpatialPrior(targets, 1.0))
    assert both.warped.shape[0] == 2 and both.backward_flow.shape[0] == 2
    for b in range(2):
        one = warp_with_confidence(sx, sy, values, AttentionSettings(tau=0.05), prior=SpatialPrior(targets[b : b + 1], 1.0))
        assert torch.allclose(both.warped[b], one.warped[0], atol=1e-6)
        assert torch.allclose(both.backward_flow[b], one.backward_flow[0], atol=1e-5)
    assert (both.forward_flow[0] - both.forward_flow[1]).abs().max() > 1


def test_prior_needs_the_condition_grid():
    sx, sy = smooth_features(8, 4, 4, 0), smooth_features(8, 5, 5, 1)
    with pytest.raises(ValueError, match="warp_with_confidence: 'prior'"):
        warp_with_confidence(sx, sy, sy, prior=SpatialPrior(coordinate_grid(1, 5, 5), 1.0))
    with pytest.raises(ValueError, match="SpatialPrior: 'sigma'"):
        SpatialPrior(coordinate_grid(1, 4, 4), 0.0)


@pytest.mark.parametrize("side,scale,shift", [
    (32, 1.0, (0.0, 0.0)), (32, 0.8, (3.0, -2.0)), (32, 1.25, (-2.0, 1.0)),
    # off the coarse lattice (16 cells: steps of 4 and 8 cells at 64 and 128)
    (64, 1.0, (2.0, -6.0)), (64, 1.1, (-3.0, 5.0)), (128, 1.1, (2.0, -5.0)), (128, 0.9, (6.0, 3.0))])
def test_search_recovers_a_known_similarity(side, scale, shift):
    exemplar = smooth_features(24, side, side, 7, blur=side // 32)
    c = (side - 1) / 2
    truth = torch.tensor([[[scale, 0.0, c * (1 - scale) + shift[0]], [0.0, scale, c * (1 - scale) + shift[1]]]])
    condition = resample(exemplar, truth)
    found = search_similarity(condition, exemplar)
    assert not bool(found.mirrored[0])
    err = (affine_targets(found.matrix, (side, side)) - affine_targets(truth, (side, side))).norm(dim=1)
    # well within the default prior width (0.03 of the grid: 1, 1.9, 3.8 cells)
    assert float(err.mean()) < 0.5 + side / 128, found.matrix


def test_search_finds_a_mirror_only_when_offered_and_clearly_better():
    exemplar = smooth_features(24, 32, 32, 8, blur=1)
    condition = exemplar.flip(-1)  # the exemplar's layout is the condition's, left-right reversed
    found = search_similarity(condition, exemplar, mirrored_exemplar_features=exemplar)
    assert bool(found.mirrored[0])
    want = torch.tensor([[[-1.0, 0.0, 31.0], [0.0, 1.0, 0.0]]])
    assert float((affine_targets(found.matrix, (32, 32)) - affine_targets(want, (32, 32))).norm(dim=1).mean()) < 1.0
    plain = search_similarity(exemplar, exemplar, mirrored_exemplar_features=exemplar)
    assert not bool(plain.mirrored[0])
