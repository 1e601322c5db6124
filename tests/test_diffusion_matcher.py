"""DiffusionFeatureMatcher with a toy extract (a fixed random conv at half resolution)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from midms_core import DiffusionFeatureMatcher, FeatureCapture, Matcher, MatchSide
from midms_core.matchers.diffusion import DiffusionMatcherSettings


class ToyExtract:
    """Noise the latent, fixed random 3x3 conv, stride 2: (B, 4, h, w) -> (B, 6, h/2, w/2)."""

    def __init__(self, noise_scale: float = 0.5) -> None:
        g = torch.Generator().manual_seed(0)
        self.weight = torch.randn(6, 4, 3, 3, generator=g)
        self.noise_scale = noise_scale
        self.calls = 0

    def __call__(self, latent, generator):
        self.calls += 1
        noise = torch.randn(latent.shape, generator=generator)
        return F.conv2d(latent + self.noise_scale * noise, self.weight, stride=2, padding=1)


def _latent(b=2, h=8, w=12, seed=1):
    return torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(seed))


def test_bind_shapes_on_each_latent_grid():
    extract = ToyExtract()
    m = DiffusionFeatureMatcher(extract)
    cond, exem = MatchSide(latent=_latent(2, 8, 12)), MatchSide(latent=_latent(2, 10, 6, seed=2))
    f = m.bind(cond, exem)
    assert f.condition.shape == (2, 6, 8, 12)
    assert f.exemplar.shape == (2, 6, 10, 6)
    assert f.exemplar_in_domain is f.exemplar
    assert f.x0_features(_latent(2, 8, 12, seed=3)).shape == (2, 6, 8, 12)
    assert extract.calls == 3


def test_resizing_is_bilinear_from_extract_grid():
    extract = ToyExtract(noise_scale=0.0)
    m = DiffusionFeatureMatcher(extract)
    lat = _latent()
    raw = extract(lat, torch.Generator())
    expected = F.interpolate(raw, size=(8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(m.features(lat), expected)


def test_ensemble_averages_noise_draws():
    extract = ToyExtract()
    lat = _latent()
    m = DiffusionFeatureMatcher(extract, DiffusionMatcherSettings(ensemble=4, seed=5))
    g = torch.Generator().manual_seed(5)
    draws = [F.interpolate(extract(lat, g), size=(8, 12), mode="bilinear", align_corners=False) for _ in range(4)]
    torch.testing.assert_close(m.features(lat), torch.stack(draws).mean(0))
    # averaging shrinks the noise: closer to the noise-free features than a single draw
    clean = DiffusionFeatureMatcher(ToyExtract(noise_scale=0.0)).features(lat)
    single = DiffusionFeatureMatcher(extract, DiffusionMatcherSettings(ensemble=1, seed=5)).features(lat)
    many = DiffusionFeatureMatcher(extract, DiffusionMatcherSettings(ensemble=16, seed=5)).features(lat)
    assert (many - clean).norm() < (single - clean).norm()


def test_deterministic_and_seed_dependent():
    lat = _latent()
    a = DiffusionFeatureMatcher(ToyExtract(), DiffusionMatcherSettings(seed=3)).features(lat)
    b = DiffusionFeatureMatcher(ToyExtract(), DiffusionMatcherSettings(seed=3)).features(lat)
    c = DiffusionFeatureMatcher(ToyExtract(), DiffusionMatcherSettings(seed=4)).features(lat)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    m = DiffusionFeatureMatcher(ToyExtract(), DiffusionMatcherSettings(seed=3))
    assert torch.equal(m.features(lat), m.features(lat))  # repeated calls do not drift


def test_x0_features_use_capture_once_then_fall_back():
    extract = ToyExtract()
    capture = FeatureCapture()
    m = DiffusionFeatureMatcher(extract, capture=capture)
    x0 = _latent()
    f = m.bind(MatchSide(latent=x0), MatchSide(latent=x0))
    calls = extract.calls
    recorded = torch.randn(2, 6, 4, 6)
    capture.clear()
    capture.add(recorded[:, :, :, :] * 2)
    capture.add(recorded * 0)  # averaged with the first record
    out = f.x0_features(x0)
    assert extract.calls == calls  # no extra pass
    expected = F.interpolate(recorded, size=(8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)
    # consumed: the next call without a new capture extracts
    assert torch.equal(f.x0_features(x0), m.features(x0))
    assert extract.calls > calls
    # a capture of another batch size is not used
    capture.add(torch.randn(4, 6, 4, 6))
    assert torch.equal(f.x0_features(x0), m.features(x0))


def test_cross_domain_matcher_makes_the_first_match_only():
    """With a cross-domain matcher the first match is its features; the re-matches pair the
    U-Net features of x0_hat with those of the exemplar; the condition costs no extract."""
    from midms_core import EdgeDescriptorMatcher

    g = torch.Generator().manual_seed(7)
    cond_img, exem_img = torch.rand(1, 3, 64, 96, generator=g), torch.rand(1, 3, 64, 96, generator=g)
    cond = MatchSide(latent=F.avg_pool2d(cond_img, 8).repeat(1, 2, 1, 1)[:, :4], image=cond_img)
    exem = MatchSide(latent=F.avg_pool2d(exem_img, 8).repeat(1, 2, 1, 1)[:, :4], image=exem_img)
    edges = EdgeDescriptorMatcher()
    extract = ToyExtract()
    m = DiffusionFeatureMatcher(extract, cross_domain=edges)
    f = m.bind(cond, exem)
    alone = edges.bind(cond, exem)
    assert torch.equal(f.condition, alone.condition) and torch.equal(f.exemplar, alone.exemplar)
    assert extract.calls == 1  # the exemplar only
    torch.testing.assert_close(f.exemplar_in_domain, DiffusionFeatureMatcher(ToyExtract()).features(exem.latent))
    x0 = _latent(1, 8, 12, seed=4)
    torch.testing.assert_close(f.x0_features(x0), DiffusionFeatureMatcher(ToyExtract()).features(x0))
    with pytest.raises(ValueError, match="cross_domain"):
        DiffusionFeatureMatcher(ToyExtract(), cross_domain=lambda c, e: None)


class StubCrossDomain(Matcher):
    """A cross-domain matcher with a known prior and alignment (mirrored or not)."""

    name = "stub"

    def __init__(self, mirrored: bool) -> None:
        self.mirrored = mirrored

    def bind(self, condition, exemplar):
        from midms_core import Alignment, MatchFeatures, SpatialPrior
        from midms_core.correspondence import coordinate_grid

        prior = SpatialPrior(coordinate_grid(1, *condition.grid) + 0.5, 2.0)
        alignment = Alignment(matrix=torch.eye(2, 3).unsqueeze(0), mirrored=torch.tensor([self.mirrored]),
                              score=torch.tensor([0.5]))
        side = torch.ones(1, 5, *condition.grid)
        return MatchFeatures(condition=side, exemplar=torch.ones(1, 5, *exemplar.grid), exemplar_in_domain=side,
                             x0_features=lambda x0: x0, prior=prior, alignment=alignment)


@pytest.mark.parametrize("mirrored", [False, True])
def test_cross_domain_prior_and_mirror_carry_into_the_re_matches(mirrored):
    cond, exem = MatchSide(latent=_latent(1, 8, 12, seed=2)), MatchSide(latent=_latent(1, 8, 12, seed=3))
    stub = StubCrossDomain(mirrored)
    f = DiffusionFeatureMatcher(ToyExtract(), cross_domain=stub).bind(cond, exem)
    first = stub.bind(cond, exem)
    assert torch.equal(f.prior.target, first.prior.target) and f.prior.sigma == first.prior.sigma
    assert bool(f.alignment.mirrored[0]) == mirrored
    plain = DiffusionFeatureMatcher(ToyExtract()).features(exem.latent)
    flipped = DiffusionFeatureMatcher(ToyExtract()).features(exem.latent.flip(-1)).flip(-1)
    torch.testing.assert_close(f.exemplar_in_domain, flipped if mirrored else plain)
    assert not torch.allclose(plain, flipped)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="DiffusionFeatureMatcher: 'ensemble' must be >= 1"):
        DiffusionMatcherSettings(ensemble=0)
    with pytest.raises(ValueError, match="'settings' must be a DiffusionMatcherSettings"):
        DiffusionFeatureMatcher(ToyExtract(), 4)
    with pytest.raises(ValueError, match="extract"):
        DiffusionFeatureMatcher(None)
    m = DiffusionFeatureMatcher(lambda latent, g: latent[:1])
    with pytest.raises(ValueError, match="batch"):
        m.features(_latent())
