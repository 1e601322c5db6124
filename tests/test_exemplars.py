"""Several exemplars as one union, restricted by region and label, against a float64 transcription.

The transcription (``union_reference``) writes the definition out per pair: every condition
position u against every position v of every exemplar g, logit max(0, C(u, v)) / tau minus the
exemplar's locality term, -inf where the pair is not allowed, one softmax over all of them;
the backward direction the same with the roles exchanged. It shares no code with midms_core.
"""

from __future__ import annotations

import math

import pytest
import torch

import midms_core as mc
from midms_core.attention import AttentionSettings
from midms_core.confidence import ConfidenceSettings
from midms_core.exemplars.regions import colour_labels, labels_on_grid, pad_content_on_grid
from midms_core.exemplars.union import split_stacked, warp_union_with_confidence
from midms_core.matchers.base import Restriction
from tests import reference as ref


def union_reference(cond, exemplars, values, tau, targets=None, sigma=None, allowed=None):
    """float64 warp, forward flow (stacked cells), source shares and backward flow of the union.

    cond (C, Hx, Wx); exemplars / values: lists of (C, Hy, Wy) / (Cv, Hy, Wy); targets: list of
    (2, Hx, Wx) per exemplar (the prior's T_g(u)) with one sigma; allowed (Nx, G * Ny) bool.
    Returns warped (Cv, Nx), flow (2, Nx), source (G, Nx), backward (2, G * Ny) (NaN rows where
    nothing is allowed)."""
    g_count = len(exemplars)
    hy, wy = exemplars[0].shape[-2:]
    hx, wx = cond.shape[-2:]
    nx, ny = hx * wx, hy * wy
    sx = cond.flatten(1)
    logits = torch.empty(nx, g_count * ny, dtype=torch.float64)
    for g, ex in enumerate(exemplars):
        block = ref.correlation(sx, ex.flatten(1)) / tau
        if targets is not None:
            t = targets[g].double().flatten(1)  # (2, Nx)
            cells = ref.pixel_grid(hy, wy)  # (2, Ny)
            for u in range(nx):
                block[u] -= ((t[:, u : u + 1] - cells) ** 2).sum(0) / (2 * sigma**2)
        logits[:, g * ny : (g + 1) * ny] = block
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)

    def softmax_rows(x):
        out = torch.full_like(x, math.nan)
        for i in range(x.shape[0]):
            if torch.isfinite(x[i]).any():
                e = torch.exp(x[i] - x[i][torch.isfinite(x[i])].max())
                out[i] = e / e.sum()
        return out

    forward_w = softmax_rows(logits)  # (Nx, G Ny)
    backward_w = softmax_rows(logits.T.clone())  # (G Ny, Nx)
    stacked_cells = ref.pixel_grid(g_count * hy, wy)
    vals = torch.cat([v.double().flatten(1) for v in values], dim=1)  # (Cv, G Ny)
    one_hot = torch.zeros(g_count, g_count * ny, dtype=torch.float64)
    for g in range(g_count):
        one_hot[g, g * ny : (g + 1) * ny] = 1
    return (vals @ forward_w.T, stacked_cells @ forward_w.T, one_hot @ forward_w.T,
            ref.pixel_grid(hx, wx) @ backward_w.T)


def _inputs(seed=0, g_count=2, c=6, hx=5, wx=6, hy=4, wy=5):
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, c, hx, wx, generator=g)
    exemplars = [torch.randn(1, c, hy, wy, generator=g) for _ in range(g_count)]
    values = [torch.randn(1, 3, hy, wy, generator=g) for _ in range(g_count)]
    return g, cond, exemplars, values


@pytest.mark.parametrize("passes", ["one", "two"])
@pytest.mark.parametrize("fused", [True, False])
def test_union_with_masks_and_labels_equals_the_transcription(passes, fused):
    g, cond, exemplars, values = _inputs()
    tau = 0.05
    hx, wx, hy, wy = 5, 6, 4, 5
    cond_masks = (torch.rand(1, 2, hx, wx, generator=g) > 0.3).float()
    cond_masks[0, :, 0, 0] = 0  # a fully masked row: no exemplar may serve (0, 0)
    exem_masks = (torch.rand(1, 2, hy, wy, generator=g) > 0.2).float()
    cond_labels = torch.randint(0, 2, (1, 1, hx, wx), generator=g)
    exem_labels = torch.randint(0, 2, (1, 2, hy, wy), generator=g)
    restriction = Restriction(cond_masks, exem_masks, cond_labels, exem_labels)
    allowed = torch.zeros(hx * wx, 2 * hy * wy, dtype=torch.bool)
    for u in range(hx * wx):
        for gi in range(2):
            for v in range(hy * wy):
                allowed[u, gi * hy * wy + v] = bool(cond_masks[0, gi].flatten()[u] > 0.5) and \
                    bool(exem_masks[0, gi].flatten()[v] > 0.5) and \
                    int(cond_labels.flatten()[u]) == int(exem_labels[0, gi].flatten()[v])
    warped, flow, source, backward = union_reference(cond[0].double(), [e[0] for e in exemplars],
                                                     [v[0] for v in values], tau, allowed=allowed)
    got = warp_union_with_confidence(cond, exemplars, values, AttentionSettings(tau=tau, fused=fused, chunk_bytes=4 * 40 * 7),
                                     ConfidenceSettings(threshold=1.5, smooth=False, passes=passes),
                                     restriction=restriction)
    has_source = allowed.any(1)
    assert not bool(has_source[0]) and bool(has_source[1:].all()) or bool((~has_source).sum() >= 1)
    ok = has_source
    assert torch.allclose(got.warped[0].flatten(1)[:, ok].double(), warped[:, ok], atol=2e-5)
    assert torch.allclose(got.forward_flow[0].flatten(1)[:, ok].double(), flow[:, ok], atol=2e-4)
    assert torch.allclose(got.source[0].flatten(1)[:, ok].double(), source[:, ok], atol=2e-5)
    used = allowed.any(0)
    assert torch.allclose(got.backward_flow[0].flatten(1)[:, used].double(), backward[:, used], atol=2e-4)
    # no source: reported plainly, never confident
    for u in torch.nonzero(~has_source).flatten().tolist():
        y, x = divmod(u, wx)
        assert float(got.mask[0, 0, y, x]) == 0.0 and float(got.distance[0, 0, y, x]) == math.inf
        assert torch.equal(got.warped[0, :, y, x], torch.zeros(3))
        assert torch.equal(got.forward_flow[0, :, y, x], torch.tensor([-1.0, -1.0]))
    assert torch.equal(got.backward_flow[0].flatten(1)[:, ~used], torch.full((2, int((~used).sum())), -1.0))
    # the cycle check: the reference's backward flow sampled at the forward flow
    back = backward.view(2, 2 * hy, wy)
    for u in torch.nonzero(has_source).flatten().tolist()[:10]:
        y, x = divmod(u, wx)
        bx = ref.bilinear(back.nan_to_num(math.nan), float(flow[0, u]), float(flow[1, u]))
        want = math.hypot(float(bx[0]) - x, float(bx[1]) - y)
        if math.isfinite(want):
            assert float(got.distance[0, 0, y, x]) == pytest.approx(want, abs=2e-3)


def test_union_with_per_exemplar_priors_equals_the_transcription():
    g, cond, exemplars, values = _inputs(seed=3)
    tau, sigma = 0.05, 1.5
    targets = [torch.rand(1, 2, 5, 6, generator=g) * torch.tensor([4.0, 3.0]).view(1, 2, 1, 1) for _ in range(2)]
    priors = [mc.SpatialPrior(t, sigma) for t in targets]
    warped, flow, source, backward = union_reference(cond[0].double(), [e[0] for e in exemplars],
                                                     [v[0] for v in values], tau, [t[0] for t in targets], sigma)
    for passes in ("one", "two"):
        got = warp_union_with_confidence(cond, exemplars, values, AttentionSettings(tau=tau, chunk_bytes=4 * 40 * 5),
                                         ConfidenceSettings(threshold=1.5, smooth=False, passes=passes), priors=priors)
        assert torch.allclose(got.warped[0].flatten(1).double(), warped, atol=2e-5), passes
        assert torch.allclose(got.forward_flow[0].flatten(1).double(), flow, atol=2e-4), passes
        assert torch.allclose(got.source[0].flatten(1).double(), source, atol=2e-5), passes
        assert torch.allclose(got.backward_flow[0].flatten(1).double(), backward, atol=2e-4), passes


def test_one_exemplar_without_restriction_is_warp_with_confidence():
    _, cond, exemplars, values = _inputs(seed=5, g_count=1)
    got = warp_union_with_confidence(cond, exemplars, values, confidence=ConfidenceSettings(threshold=2.0))
    want = mc.warp_with_confidence(cond, exemplars[0], values[0], confidence=ConfidenceSettings(threshold=2.0))
    for name in ("warped", "mask", "forward_flow", "backward_flow", "distance"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.source is None


def test_each_position_takes_its_region_from_the_exemplar_that_holds_it():
    """The condition's left half is exemplar 0's content, its right half exemplar 1's: the union
    match draws each half from the right exemplar."""
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(1, 16, 6, 8, generator=g), torch.randn(1, 16, 6, 8, generator=g)
    cond = torch.cat([a[..., :4], b[..., 4:]], dim=-1) + 0.05 * torch.randn(1, 16, 6, 8, generator=g)
    got = warp_union_with_confidence(cond, [a, b], [a[:, :3], b[:, :3]], confidence=ConfidenceSettings(threshold=1.0))
    index, local = split_stacked(got.forward_flow, 6)
    assert bool((index[..., :4] == 0).all()) and bool((index[..., 4:] == 1).all())
    assert float(got.source[:, 0, :, :4].mean()) > 0.99 and float(got.source[:, 1, :, 4:].mean()) > 0.99
    home = mc.correspondence.coordinate_grid(1, 6, 8)
    assert float((local - home).abs().max()) < 0.05  # and from the same place
    assert float(got.mask.mean()) == 1.0


def test_a_masked_out_exemplar_region_is_never_used():
    g = torch.Generator().manual_seed(9)
    a = torch.randn(1, 16, 6, 8, generator=g)
    # the exemplar's right half may not be used: the condition (a copy) must take it from elsewhere
    allowed = torch.ones(1, 1, 6, 8)
    allowed[..., 4:] = 0
    got = warp_union_with_confidence(a, [a], [a[:, :3]], confidence=ConfidenceSettings(threshold=1.0),
                                     restriction=Restriction(exemplar_masks=allowed))
    assert float(got.forward_flow[:, 0].max()) < 3.5 + 1e-4  # soft-argmax x stays in columns 0..3
    assert float(got.mask[..., :4].min()) == 1.0  # the allowed half is still confident


def test_label_aware_matching_only_pairs_equal_labels():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(1, 8, 4, 4, generator=g)
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[..., 2:] = 1
    cond_labels = 1 - labels  # swapped labels: each side of the condition must match the other side
    got = warp_union_with_confidence(a, [a], [mc.correspondence.coordinate_grid(1, 4, 4)], AttentionSettings(tau=0.05),
                                     restriction=Restriction(condition_labels=cond_labels, exemplar_labels=labels))
    x = got.warped[:, 0]
    assert float(x[..., :2].min()) >= 2 - 1e-4 and float(x[..., 2:].max()) <= 1 + 1e-4


def test_colour_labels_exact_and_nearest_palette():
    img = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.98, 0.02, 0.0]]).T.reshape(1, 3, 1, 3)
    exact = colour_labels(img)
    assert int(exact[0, 0, 0, 0]) == 255 * 65536 and int(exact[0, 0, 0, 1]) == 255 * 256
    assert int(exact[0, 0, 0, 2]) != int(exact[0, 0, 0, 0])  # a drifted colour is another label
    near = colour_labels(img, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert near.flatten().tolist() == [1, 0, 1]
    grid = labels_on_grid(torch.arange(16).view(1, 1, 4, 4), (2, 2))
    assert grid.flatten().tolist() == [5, 7, 13, 15]  # the centre pixel of each 2 x 2 cell (rounded down-right)


@pytest.mark.parametrize("kwargs, words", [
    (dict(exemplar_features=[torch.randn(1, 6, 4, 5), torch.randn(1, 6, 4, 4)]), ["shape of the first", "Fit"]),
    (dict(restriction=Restriction(condition_labels=torch.zeros(1, 1, 5, 6, dtype=torch.long))), ["both"]),
    (dict(restriction=Restriction(condition_masks=torch.ones(1, 3, 5, 6))), ["condition_masks", "(B, 2, 5, 6)"]),
    (dict(restriction=Restriction(condition_labels=torch.zeros(1, 1, 5, 6), exemplar_labels=torch.zeros(1, 2, 4, 5))),
     ["integer labels"]),
    (dict(priors=[mc.SpatialPrior(torch.zeros(1, 2, 5, 6), 1.0), None]), ["every exemplar", "none"]),
    (dict(restriction="left"), ["Restriction"]),
    (dict(confidence=1.5), ["warp_union_with_confidence", "'confidence'", "ConfidenceSettings"]),
])
def test_bad_input_names_the_argument(kwargs, words):
    _, cond, exemplars, values = _inputs()
    args = dict(condition_features=cond, exemplar_features=exemplars, exemplar_values=values)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        warp_union_with_confidence(**args)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_split_scene_from_real_photos_union_beats_either_exemplar_alone():
    """Acceptance on real photos (skimage astronaut, the other half coffee): each exemplar holds
    half of the scene; the union takes each region from the right exemplar and beats matching
    either exemplar alone on PCK and on warped PSNR."""
    pytest.importorskip("skimage")
    from benchmarks.several_exemplars import split_scene_case

    row = split_scene_case("astronaut", "coffee", seed=0, size=256)
    assert row["union right share"] > 0.9, row
    for alone in ("A alone", "B alone"):
        assert row["union pck@2"] > row[f"{alone} pck@2"] + 0.3, row
        assert row["union psnr"] > row[f"{alone} psnr"] + 3.0, row


def test_label_aware_matching_improves_pck_on_the_label_map_condition():
    pytest.importorskip("skimage")
    from benchmarks.several_exemplars import label_case

    row = label_case("astronaut", seed=0, size=256)
    assert row["label-aware pck@1"] > row["unrestricted pck@1"], row
    assert row["label-aware pck@2"] >= row["unrestricted pck@2"], row


def test_pad_content_on_grid_allows_only_cells_that_are_mostly_image():
    """A 40 x 100 image padded into 64 x 64: scaled to 26 x 64 at rows 19..44 (round(40 * 0.64)
    = 26, top (64 - 26) // 2 = 19). On the 8 x 8 grid of 8 px cells: rows 19..23 of cell 2 are
    5 of 8 (> half: allowed), rows 40..44 of cell 5 are 5 of 8 (allowed), cells 0, 1, 6, 7 are
    all border."""
    got = pad_content_on_grid((40, 100), 64, 64, "pad", (8, 8))
    want = torch.zeros(1, 1, 8, 8)
    want[..., 2:6, :] = 1.0
    torch.testing.assert_close(got, want)
    # a tall image: side borders; cell 2 holds columns 19..23 of the content 19..44
    torch.testing.assert_close(pad_content_on_grid((100, 40), 64, 64, "pad", (8, 8)), want.transpose(-1, -2))
    # nothing padded: no restriction
    for mode in ("crop", "stretch", "own size"):
        assert pad_content_on_grid((40, 100), 64, 64, mode, (8, 8)) is None
    assert pad_content_on_grid((32, 32), 64, 64, "pad", (8, 8)) is None
