"""Matcher.bind_each: one condition against G exemplars.

It must give exactly what G separate ``bind`` calls give (bit for bit: the union of several
exemplars is built from it), while computing the condition side once, not G times. The work is
counted where it is done: the condition descriptor of the edge matcher, the condition encoder of
the learned networks, the U-Net passes of the diffusion matcher.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from midms_core import DiffusionFeatureMatcher, EdgeDescriptorMatcher, MatchSide
from midms_core.exemplars.union import bind_union
from midms_core.matchers.diffusion import DiffusionMatcherSettings
from midms_core.matchers.edge import EdgeMatcherSettings
from midms_core.matchers.learned import LearnedMatcher
from midms_core.networks.model import CorrespondenceConfig, init_networks

G = 3


def _scene(seed: int, size: int = 64) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: a few filled rectangles and discs at seeded places, so
    both Canny (exemplar) and the condition's edge extraction find structure."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((1, 3, size, size), 0.15)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(4):
        colour = torch.rand(3, generator=g) * 0.7 + 0.3
        y0, x0 = (torch.randint(4, size - 24, (2,), generator=g)).tolist()
        hh, ww = (torch.randint(10, 20, (2,), generator=g)).tolist()
        inside = (ys >= y0) & (ys < y0 + hh) & (xs >= x0) & (xs < x0 + ww)
        img[0, :, inside] = colour[:, None]
    cy, cx, r = (torch.randint(16, size - 16, (2,), generator=g).tolist() + [9])
    img[0, :, (ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = 0.9
    return img


def _side(seed: int, channels: int = 4, size: int = 64) -> MatchSide:
    image = _scene(seed, size)
    latent = F.avg_pool2d(torch.cat([image, image.mean(1, keepdim=True)], 1)[:, :channels], 8)
    return MatchSide(latent=latent * 2 - 1, image=image)


class _CountingEdgeMatcher(EdgeDescriptorMatcher):
    def __init__(self, **kwargs):
        super().__init__(EdgeMatcherSettings(**kwargs))
        self.condition_calls = 0

    def condition_features(self, image, grid):
        self.condition_calls += 1
        return super().condition_features(image, grid)


class _ToyExtract:
    """Noise the latent, fixed random conv: (B, c, h, w) -> (B, 6, h, w); counts its calls."""

    def __init__(self, channels: int = 4) -> None:
        self.weight = torch.randn(6, channels, 3, 3, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def __call__(self, latent, generator):
        self.calls += 1
        noise = torch.randn(latent.shape, generator=generator)
        return F.conv2d(latent + 0.3 * noise, self.weight, padding=1)


def _assert_same_features(a, b, x0):
    for name in ("condition", "exemplar", "exemplar_in_domain"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.x0_features(x0), b.x0_features(x0))
    assert (a.prior is None) == (b.prior is None)
    if a.prior is not None:
        assert torch.equal(a.prior.target, b.prior.target)
        assert a.prior.sigma == b.prior.sigma if not torch.is_tensor(a.prior.sigma) else torch.equal(a.prior.sigma, b.prior.sigma)
    assert (a.alignment is None) == (b.alignment is None)
    if a.alignment is not None:
        assert torch.equal(a.alignment.matrix, b.alignment.matrix)
        assert torch.equal(a.alignment.mirrored, b.alignment.mirrored)


@pytest.mark.parametrize("alignment", ["none", "similarity"])
def test_edge_matcher_bind_each_equals_separate_binds_with_one_condition_descriptor(alignment):
    condition, exemplars = _side(0), [_side(s) for s in (1, 2, 3)]
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    separate = _CountingEdgeMatcher(alignment=alignment)
    expected = [separate.bind(condition, e) for e in exemplars]
    assert separate.condition_calls == G
    shared = _CountingEdgeMatcher(alignment=alignment)
    got = shared.bind_each(condition, exemplars)
    assert shared.condition_calls == 1
    assert len(got) == len(expected) == G
    for a, b in zip(got, expected):
        _assert_same_features(a, b, x0)


def test_learned_matcher_bind_each_runs_the_condition_encoder_once():
    config = CorrespondenceConfig(latent_channels=4, label_channels=5, width=16, encoder_width=4, spade_hidden=8)
    nets = init_networks(config, seed=0)
    calls = {"encode_condition": 0, "condition_head": 0}

    def counting(name):
        original = getattr(nets, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)
        return call

    for name in calls:
        setattr(nets, name, counting(name))
    matcher = LearnedMatcher(nets)
    condition, exemplars = _side(0), [_side(s) for s in (1, 2, 3)]
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    expected = [matcher.bind(condition, e) for e in exemplars]
    assert calls == {"encode_condition": G, "condition_head": G}
    got = matcher.bind_each(condition, exemplars)
    assert calls == {"encode_condition": G + 1, "condition_head": G + 1}
    assert len(got) == len(expected) == G
    for a, b in zip(got, expected):
        _assert_same_features(a, b, x0)


@pytest.mark.parametrize("cross_domain", [False, True])
def test_diffusion_matcher_bind_each_passes_the_condition_once(cross_domain):
    """Without a cross-domain matcher the condition costs `ensemble` U-Net passes, once for all
    G exemplars (it was G times); with one it costs none, as before."""
    condition, exemplars = _side(0), [_side(s) for s in (1, 2, 3)]
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    ensemble = 2

    def matcher(extract):
        return DiffusionFeatureMatcher(extract, DiffusionMatcherSettings(ensemble=ensemble, seed=4),
                                       cross_domain=EdgeDescriptorMatcher() if cross_domain else None)

    extract = _ToyExtract()
    separate = matcher(extract)
    expected = [separate.bind(condition, e) for e in exemplars]
    per_pair = (1 if cross_domain else 2) * ensemble
    assert extract.calls == G * per_pair
    extract.calls = 0
    got = matcher(extract).bind_each(condition, exemplars)
    assert extract.calls == (G if cross_domain else G + 1) * ensemble
    assert len(got) == len(expected) == G
    for a, b in zip(got, expected):
        extract.calls = 0
        _assert_same_features(a, b, x0)


def test_bind_union_uses_bind_each():
    """The union's condition side comes from one condition pass (the diffusion matcher: G + 1
    extract calls for G exemplars, not 2G), and its exemplar side stacks the G pairs' features."""
    condition, exemplars = _side(0), [_side(s) for s in (1, 2, 3)]
    extract = _ToyExtract()
    union = bind_union(DiffusionFeatureMatcher(extract), condition, exemplars)
    assert extract.calls == G + 1
    alone = [DiffusionFeatureMatcher(_ToyExtract()).bind(condition, e) for e in exemplars]
    assert union.groups == G
    assert torch.equal(union.condition, alone[0].condition)
    assert torch.equal(union.exemplar, torch.cat([a.exemplar for a in alone], dim=-2))


def test_bind_each_bad_exemplar_is_named():
    condition, exemplar = _side(0), _side(1)
    no_image = MatchSide(latent=exemplar.latent)
    with pytest.raises(ValueError, match=r"EdgeDescriptorMatcher\.bind: 'exemplar\.image' is required"):
        EdgeDescriptorMatcher().bind_each(condition, [exemplar, no_image])
    flat = MatchSide(latent=exemplar.latent, image=torch.full_like(exemplar.image, 0.5))
    with pytest.raises(ValueError, match=r"'exemplar' \(exemplar 2 of 2, the image\) has no edges"):
        EdgeDescriptorMatcher().bind_each(condition, [exemplar, flat])
    with pytest.raises(ValueError, match=r"'exemplar' \(the image\) has no edges"):
        EdgeDescriptorMatcher().bind(condition, flat)


@pytest.mark.parametrize("kind", ["edge", "learned", "diffusion", "diffusion+edge"])
def test_bind_each_takes_any_iterable_and_nothing_costs_nothing(kind):
    config = CorrespondenceConfig(latent_channels=4, label_channels=5, width=16, encoder_width=4, spade_hidden=8)
    extract = _ToyExtract()
    matcher = {
        "edge": lambda: EdgeDescriptorMatcher(),
        "learned": lambda: LearnedMatcher(init_networks(config, seed=0)),
        "diffusion": lambda: DiffusionFeatureMatcher(extract),
        "diffusion+edge": lambda: DiffusionFeatureMatcher(extract, cross_domain=EdgeDescriptorMatcher()),
    }[kind]()
    condition, exemplars = _side(0), [_side(s) for s in (1, 2)]
    from_generator = matcher.bind_each(condition, (e for e in exemplars))
    assert len(from_generator) == 2
    for a, b in zip(from_generator, matcher.bind_each(condition, exemplars)):
        assert torch.equal(a.exemplar, b.exemplar) and torch.equal(a.condition, b.condition)
    extract.calls = 0
    flat = MatchSide(latent=condition.latent, image=torch.full_like(condition.image, 0.5))  # no edges at all
    assert matcher.bind_each(flat, []) == []
    assert extract.calls == 0
