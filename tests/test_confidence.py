"""Cycle-consistency confidence (Eq. 10-11): transcription, a known deformation, the official
smoothing, the soft variant, and the difference from the official code's check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import midms_core as mc
from tests import reference as ref
from midms_core.attention import AttentionSettings
from midms_core.confidence import ConfidenceSettings, normalised_to_pixels, sample_bilinear, smooth_mask


def smooth_random_features(channels: int, h: int, w: int, seed: int, blur: int = 2) -> torch.Tensor:
    """(1, C, h, w) random features that vary smoothly but distinctively across positions."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(1, channels, h + 4 * blur, w + 4 * blur, generator=g)
    f = F.avg_pool2d(f, 2 * blur + 1, stride=1)
    return f[..., :h, :w].contiguous()


def test_cycle_distance_equals_transcription():
    g = torch.Generator().manual_seed(0)
    forward = torch.rand(1, 2, 5, 6, generator=g) * torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # into a 5x4 (h x w) grid
    forward[0, 0, 0, 0] = -2.0  # outside: clamped to the border
    forward[0, 1, 1, 1] = 9.0
    backward = torch.rand(1, 2, 5, 4, generator=g) * torch.tensor([5.0, 4.0]).view(1, 2, 1, 1)
    got = mc.cycle_distance(forward, backward)
    want = ref.cycle_distance(forward[0], backward[0])
    assert got.shape == (1, 1, 5, 6)
    assert torch.allclose(got[0, 0].double(), want, atol=1e-5)


def test_consistent_flows_give_zero_distance():
    grid = mc.correspondence.coordinate_grid(1, 7, 9)
    shift = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    # forward moves by +shift, backward by -shift: a perfect cycle wherever it stays inside.
    dist = mc.cycle_distance(grid[..., :5, :6] + shift, grid - shift)
    assert float(dist.max()) < 1e-5


def official_buggy_check(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """What ``util.fbcheck`` computes on a square grid of the same size: it samples the
    FORWARD displacement at the forward target and adds the forward displacement again,
    never looking at the backward flow. Pixel units, for comparison."""
    h, w = forward.shape[-2:]
    grid = mc.correspondence.coordinate_grid(1, h, w)
    disp = forward - grid
    sampled = sample_bilinear(disp, forward)
    return (sampled + disp).norm(dim=1, keepdim=True)


def test_real_check_uses_backward_flow_unlike_official_bug():
    """Forward is the identity but the backward flow sends everything 6 px away: no position is
    cycle-consistent. The official check accepts all of them; ours rejects all of them."""
    grid = mc.correspondence.coordinate_grid(1, 12, 12)
    forward = grid.clone()
    backward = grid + torch.tensor([6.0, 0.0]).view(1, 2, 1, 1)
    ours = mc.confidence.hard_confidence(mc.cycle_distance(forward, backward), threshold=2.0, smooth=False)
    buggy = (official_buggy_check(forward, backward) < 2.0).float()
    # columns 6.. are clamped at the border and come back at most 5 px off; the rest 6 px.
    assert float(ours[..., :6].max()) == 0.0
    assert float(buggy.min()) == 1.0


def make_deformed_pair(size: int = 32, shift=(6, 5), hole=(10, 22, 10, 22), channels: int = 48, seed: int = 0):
    """Exemplar features on a size x size grid; the condition sees the exemplar shifted by
    ``shift`` (x, y) plus a square ``hole`` (y0, y1, x0, x1) of content found nowhere in the
    exemplar. Returns condition, exemplar features, and a bool (size, size) map of condition
    positions that truly have a match."""
    big = smooth_random_features(channels, size + 16, size + 16, seed)
    exemplar = big[..., 8 : 8 + size, 8 : 8 + size]
    sx, sy = shift
    condition = big[..., 8 + sy : 8 + sy + size, 8 + sx : 8 + sx + size].clone()
    novel = smooth_random_features(channels, size, size, seed + 1000)
    y0, y1, x0, x1 = hole
    condition[..., y0:y1, x0:x1] = novel[..., y0:y1, x0:x1]
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    matched = (xs + sx < size) & (ys + sy < size)  # the shifted view leaves the exemplar here
    matched[y0:y1, x0:x1] = False
    return condition, exemplar, matched


def far_from(region: torch.Tensor, pixels: int) -> torch.Tensor:
    """Positions more than ``pixels`` (Chebyshev) away from every True position of ``region``."""
    near = F.max_pool2d(region.float()[None, None], 2 * pixels + 1, stride=1, padding=pixels)[0, 0]
    return near == 0


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_mask_rejects_content_missing_from_exemplar_and_accepts_the_rest(seed):
    threshold = 2.0
    condition, exemplar, matched = make_deformed_pair(seed=seed)
    values = torch.randn(1, 4, 32, 32)
    result = mc.warp_with_confidence(condition, exemplar, values, confidence=ConfidenceSettings(threshold, smooth=False))
    mask = result.mask[0, 0].bool()
    recall = float(mask[matched].float().mean())
    # A position within about the threshold of real content can come back consistent by
    # matching that content's edge; judge rejection on the region's core. Measured over seeds
    # 0-5: 4-18 % of the core is still accepted, by mutual best matches between novel content and
    # exemplar content that the hole hides (no cycle check can tell those apart); all of the
    # matched region is accepted.
    core = far_from(matched, int(threshold) + 1)
    false_accept = float(mask[core].float().mean())
    assert int(core.sum()) >= 60
    assert recall > 0.95, recall
    assert false_accept < 0.25, false_accept
    # Where the match is real, the forward flow recovers the shift.
    true_target = mc.correspondence.coordinate_grid(1, 32, 32)[0] + torch.tensor([6.0, 5.0]).view(2, 1, 1)
    flow_err = (result.forward_flow[0] - true_target).norm(dim=0)
    assert float(flow_err[matched].median()) < 0.5


def test_warp_with_confidence_matches_separate_computations():
    g = torch.Generator().manual_seed(3)
    cond = torch.randn(2, 16, 6, 7, generator=g)
    exem = torch.randn(1, 16, 5, 5, generator=g)
    values = torch.randn(2, 3, 5, 5, generator=g)
    res = mc.warp_with_confidence(cond, exem, values, AttentionSettings(tau=0.05, chunk_bytes=100),
                                  ConfidenceSettings(threshold=1.5, smooth=False))
    assert torch.allclose(res.warped, mc.warp(cond, exem, values, AttentionSettings(tau=0.05)), atol=1e-5)
    assert torch.allclose(res.forward_flow, mc.correspondence.soft_argmax_flow(cond, exem, AttentionSettings(tau=0.05)), atol=1e-4)
    backward = mc.correspondence.soft_argmax_flow(exem, cond, AttentionSettings(tau=0.05))
    assert torch.allclose(res.backward_flow, backward, atol=1e-4)
    for b in range(2):
        want = ref.cycle_distance(res.forward_flow[b].double(), backward[b].double())
        assert torch.allclose(res.distance[b, 0].double(), want, atol=1e-4)
    assert torch.equal(res.mask, (res.distance < 1.5).float())
    assert res.warped.shape == (2, 3, 6, 7) and res.mask.shape == (2, 1, 6, 7)


@pytest.mark.parametrize("mask_mode", ["hard", "soft"])
def test_one_pass_equals_two_passes(mask_mode):
    g = torch.Generator().manual_seed(8)
    cond = torch.randn(2, 24, 9, 7, generator=g)
    exem = torch.randn(1, 24, 6, 8, generator=g)
    values = torch.randn(2, 4, 6, 8, generator=g)
    settings = AttentionSettings(tau=0.02, chunk_bytes=2 * 4 * 48 * 5)
    one = mc.warp_with_confidence(cond, exem, values, settings, ConfidenceSettings(2.0, mask_mode, passes="one"))
    two = mc.warp_with_confidence(cond, exem, values, settings, ConfidenceSettings(2.0, mask_mode, passes="two"))
    for name in ("warped", "forward_flow", "backward_flow", "distance", "mask"):
        assert torch.allclose(getattr(one, name), getattr(two, name), atol=1e-4), name
    assert 0 < float(two.mask.mean()) < 1 or mask_mode == "soft"  # the masks compared are not trivial


def test_auto_takes_one_pass_for_wide_features_only(monkeypatch):
    import midms_core.confidence as confidence

    calls = []
    real = confidence.softmax_average_both_ways
    monkeypatch.setattr(confidence, "softmax_average_both_ways", lambda *a, **k: calls.append(a[0].shape[1]) or real(*a, **k))
    g = torch.Generator().manual_seed(9)
    values = torch.randn(1, 4, 3, 3, generator=g)
    for channels in (confidence.ONE_PASS_MIN_CHANNELS - 1, confidence.ONE_PASS_MIN_CHANNELS):
        feats = torch.randn(1, channels, 3, 3, generator=g)
        mc.warp_with_confidence(feats, feats, values)
    assert calls == [confidence.ONE_PASS_MIN_CHANNELS]
    with pytest.raises(ValueError, match="ConfidenceSettings: 'passes' must be one of"):
        ConfidenceSettings(passes="three")


def test_default_threshold_is_official_half_unit_at_64():
    assert mc.DEFAULT_THRESHOLD_PX == pytest.approx(normalised_to_pixels(0.5, 64)) == pytest.approx(15.75)


def official_smoothing(mask: torch.Tensor) -> torch.Tensor:
    """Transcription of the official clean-up for even sizes."""
    return (F.interpolate(F.avg_pool2d(mask, 2), scale_factor=2, mode="nearest") > 0.5).float()


@pytest.mark.parametrize("h,w", [(8, 8), (6, 10), (7, 9), (1, 1), (5, 2)])
def test_smoothing_matches_official_and_handles_odd_sizes(h, w):
    g = torch.Generator().manual_seed(h * 31 + w)
    raw = (torch.rand(2, 1, h, w, generator=g) > 0.4).float()
    got = smooth_mask(raw)
    assert got.shape == raw.shape
    he, we = h + h % 2, w + w % 2
    padded = F.pad(raw, (0, we - w, 0, he - h), mode="replicate")
    assert torch.equal(got, official_smoothing(padded)[..., :h, :w])


def test_smoothing_keeps_blocks_with_three_of_four():
    raw = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]).view(1, 1, 2, 4)
    assert torch.equal(smooth_mask(raw), torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2).view(1, 1, 2, 4))


def test_soft_mask_properties():
    d = torch.linspace(0, 10, 101).view(1, 1, 1, 101)
    soft = mc.confidence.soft_confidence(d, threshold=4.0)
    assert float(soft[..., 40]) == pytest.approx(0.5)
    assert bool((soft[..., 1:] < soft[..., :-1]).all())
    sharp = mc.confidence.soft_confidence(d, threshold=4.0, width=1e-3)
    hard = mc.confidence.hard_confidence(d, threshold=4.0, smooth=False)
    off = (d - 4.0).abs() > 0.05
    assert torch.allclose(sharp[off], hard[off], atol=1e-6)


def test_soft_mode_through_fused_op():
    condition, exemplar, matched = make_deformed_pair(seed=5)
    res = mc.warp_with_confidence(condition, exemplar, torch.randn(1, 4, 32, 32),
                                  confidence=ConfidenceSettings(threshold=2.0, mask_mode="soft"))
    assert float(res.mask.min()) >= 0 and float(res.mask.max()) <= 1
    assert float(res.mask[0, 0][matched].mean()) > float(res.mask[0, 0][~matched].mean()) + 0.5


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(settings=0.005), ["settings", "AttentionSettings"]),
        (dict(confidence=2.0), ["'confidence'", "ConfidenceSettings"]),
        (dict(exemplar_values=torch.randn(1, 3, 5, 5)), ["exemplar_values", "grid"]),
    ],
)
def test_bad_arguments(kwargs, words):
    args = dict(condition_features=torch.randn(1, 4, 3, 3), exemplar_features=torch.randn(1, 4, 4, 4),
                exemplar_values=torch.randn(1, 3, 4, 4))
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        mc.warp_with_confidence(**args)
    assert str(info.value).startswith("warp_with_confidence:")
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(threshold=0.0), "ConfidenceSettings: 'threshold' must be > 0 and finite, got 0.0"),
        (dict(threshold=float("inf")), "ConfidenceSettings: 'threshold' must be > 0 and finite, got inf"),
        (dict(threshold="2"), "ConfidenceSettings: 'threshold' must be a number, got str"),
        (dict(mask_mode="fuzzy"), "ConfidenceSettings: 'mask_mode' must be one of ['hard', 'soft'], got 'fuzzy'"),
        (dict(soft_width=-1.0), "ConfidenceSettings: 'soft_width' must be > 0 and finite, got -1.0"),
        (dict(passes="three"), "ConfidenceSettings: 'passes' must be one of ['auto', 'two', 'one'], got 'three'"),
    ],
)
def test_confidence_settings_are_validated_once_when_made(kwargs, message):
    with pytest.raises(ValueError) as info:
        ConfidenceSettings(**kwargs)
    assert str(info.value) == message


def test_confidence_settings_are_frozen_and_normalised():
    settings = ConfidenceSettings(threshold=3, soft_width=1)
    assert settings.threshold == 3.0 and isinstance(settings.threshold, float)
    assert settings.soft_width == 1.0 and isinstance(settings.soft_width, float)
    assert ConfidenceSettings() == ConfidenceSettings(mc.DEFAULT_THRESHOLD_PX, "hard", True, None, "auto")
    with pytest.raises(AttributeError):
        settings.threshold = 2.0
