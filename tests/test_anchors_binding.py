"""Anchors in matching: keypoints carried exactly through every exemplar fit, the matcher bound
without its own alignment, the anchor prior in every pair, "anchors only", exemplar sets."""

from __future__ import annotations

import pytest
import torch

from midms_core.anchors.binding import FIELD_SIGMA, AnchorSpec, bind_anchored, place_keypoints
from midms_core.anchors.field import FieldSettings, anchor_field, anchor_prior
from midms_core.anchors.keypoints import Keypoints
from midms_core.confidence import warp_with_confidence
from midms_core.images import crop_geometry, fit, fit_geometry
from midms_core.matchers.base import MatchSide
from midms_core.matchers.edge import EdgeDescriptorMatcher, EdgeMatcherSettings


def bump_image(h, w, x, y, sigma=3.0):
    """(1, h, w, 1) Gaussian bump centred on the continuous point (x, y) (pixel centres at i + 0.5)."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))[None, :, :, None]


def centroid(image):
    """Intensity-weighted centre (x, y) of an (H, W) image, continuous coordinates."""
    ys, xs = torch.meshgrid(torch.arange(image.shape[0]) + 0.5, torch.arange(image.shape[1]) + 0.5, indexing="ij")
    weight = image.double().clamp_min(0)
    return torch.stack([(weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()])


@pytest.mark.parametrize("mode", ["crop", "stretch", "pad", "own size"])
@pytest.mark.parametrize("size, target", [((60, 100), (64, 64)), ((90, 40), (48, 80))])
def test_a_point_on_a_known_pixel_lands_where_fit_puts_that_pixel(mode, size, target):
    """A bump drawn around pixel (x, y) goes through the real fit and a further crop (as to the
    VAE's grid); the keypoint placed through the same geometry sits at the bump's centre."""
    h, w = size
    x, y = w // 2 - 3, h // 2 + 2  # near the centre: kept by every fit
    # a dark bump on white: pad's white border adds nothing to the centroid of 1 - image
    fitted = 1 - fit(1 - bump_image(h, w, x + 0.5, y + 0.5), *target, mode)[0, :, :, 0]
    geometry = fit_geometry(h, w, *target, mode)
    crop = crop_geometry(*fitted.shape, 2, 3, fitted.shape[0] - 4, fitted.shape[1] - 6)
    fitted = fitted[2 : fitted.shape[0] - 2, 3 : fitted.shape[1] - 3]
    points = Keypoints(torch.tensor([[x + 0.5, y + 0.5]], dtype=torch.float64), ("point/0",), float(w), float(h))
    placed = place_keypoints(points, (h, w), [geometry, crop], "Test", "points")
    assert (placed.points[0] - centroid(fitted)).abs().max() <= 0.3
    assert (placed.width, placed.height) == (float(fitted.shape[1]), float(fitted.shape[0]))


def test_canvas_scaled_to_its_image_and_aspect_checked():
    points = Keypoints(torch.tensor([[256.0, 128.0]], dtype=torch.float64), ("point/0",), 512.0, 256.0)
    placed = place_keypoints(points, (100, 200), [], "Test", "condition keypoints")
    assert placed.points[0].tolist() == [100.0, 50.0]
    with pytest.raises(ValueError, match=r"'condition keypoints' were found on a 512 x 256 canvas, which does not have the aspect of its image \(100 x 100\)"):
        place_keypoints(points, (100, 100), [], "Test", "condition keypoints")


def sides(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    cond_image = (torch.rand(1, 3, size, size, generator=g) > 0.7).float()
    exem_image = torch.rand(1, 3, size, size, generator=g)
    pool = lambda im: torch.nn.functional.avg_pool2d(im, 8)  # noqa: E731
    return MatchSide(latent=pool(cond_image), image=cond_image), MatchSide(latent=pool(exem_image), image=exem_image)


def a_prior(grid=(8, 8), shift=(1.0, -1.0)):
    src = torch.tensor([[1.0, 1.0], [6.0, 1.0], [2.0, 6.0], [6.0, 6.0]], dtype=torch.float64)
    dst = src + torch.tensor(shift, dtype=torch.float64)
    return anchor_prior([anchor_field(src, dst, tuple(f"point/{i}" for i in range(4)), grid, grid)])


def test_the_matcher_binds_without_its_alignment_and_takes_the_anchor_prior():
    cond, exem = sides()
    matcher = EdgeDescriptorMatcher()  # searches a similarity (and mirror) by default
    prior = a_prior()
    bound = bind_anchored(matcher, cond, [exem], [prior])
    plain = EdgeDescriptorMatcher(EdgeMatcherSettings(alignment="none")).bind(cond, exem)
    assert bound.prior is not None and torch.equal(bound.prior.target, prior.target) and bound.alignment is None
    assert torch.equal(bound.condition, plain.condition) and torch.equal(bound.exemplar, plain.exemplar)
    assert matcher.settings.alignment == "similarity"  # the user's matcher is not changed


def test_anchors_only_warps_along_the_field():
    cond, exem = sides(1)
    prior = a_prior(shift=(1.25, -0.5))
    bound = bind_anchored(EdgeDescriptorMatcher(), cond, [exem], [prior], mode="anchors only")
    assert bound.prior.sigma == FIELD_SIGMA
    result = warp_with_confidence(bound.condition, bound.exemplar, exem.latent, prior=bound.prior)
    inside = (slice(None), slice(None), slice(2, 7), slice(1, 5))  # cells whose target stays inside the grid
    # a Gaussian of FIELD_SIGMA on the integer lattice pulls the mean by ~0.02 cells off-centre
    assert torch.allclose(result.forward_flow[inside], prior.target[inside], atol=0.05)
    again = warp_with_confidence(bound.x0_features(cond.latent), bound.exemplar_in_domain, exem.latent, prior=bound.prior)
    assert torch.allclose(again.forward_flow, result.forward_flow)


def test_each_exemplar_of_a_set_takes_its_own_prior():
    cond, exem = sides(2)
    _, other = sides(3)
    first, second = a_prior(shift=(1.0, 0.0)), a_prior(shift=(-1.0, 0.0))
    bound = bind_anchored(EdgeDescriptorMatcher(), cond, [exem, other], [first, second])
    assert bound.groups == 2
    assert torch.equal(bound.prior.target[:, :2], first.target) and torch.equal(bound.prior.target[:, 2:], second.target)
    with pytest.raises(ValueError, match="one prior per exemplar"):
        bind_anchored(EdgeDescriptorMatcher(), cond, [exem, other], [first])


def test_anchor_spec_checks_its_mode():
    kp = Keypoints(torch.zeros(1, 2, dtype=torch.float64), ("point/0",), 8.0, 8.0)
    with pytest.raises(ValueError, match="'mode'"):
        AnchorSpec((kp,), (kp,), FieldSettings(), mode="loose")


@pytest.mark.parametrize("kind", ["learned", "diffusion", "diffusion+edge"])
def test_every_matcher_takes_the_anchor_prior(kind):
    """The learned networks and the DIFT matcher (with and without a cross-domain edge matcher)
    bind with anchors too: features as without its alignment, the prior the anchors'; a DIFT
    matcher's edge matcher is copied without its alignment, the user's left as it was."""
    from midms_core.matchers.diffusion import DiffusionFeatureMatcher
    from midms_core.matchers.learned import LearnedMatcher
    from midms_core.networks.model import CorrespondenceConfig, init_networks
    from tests.test_bind_each import _side, _ToyExtract

    config = CorrespondenceConfig(latent_channels=4, label_channels=5, width=16, encoder_width=4, spade_hidden=8)
    edge = EdgeDescriptorMatcher()
    matcher = {
        "learned": lambda: LearnedMatcher(init_networks(config, seed=0)),
        "diffusion": lambda: DiffusionFeatureMatcher(_ToyExtract()),
        "diffusion+edge": lambda: DiffusionFeatureMatcher(_ToyExtract(), cross_domain=edge),
    }[kind]()
    cond, exem = _side(0), _side(1)
    prior = a_prior()
    bound = bind_anchored(matcher, cond, [exem], [prior])
    plain = matcher.without_alignment().bind(cond, exem)
    assert bound.prior is not None and torch.equal(bound.prior.target, prior.target) and bound.alignment is None
    assert torch.equal(bound.condition, plain.condition) and torch.equal(bound.exemplar, plain.exemplar)
    if kind == "diffusion+edge":
        assert matcher.without_alignment().cross_domain.settings.alignment == "none"
        assert edge.settings.alignment == "similarity"
        assert plain.prior is None  # no search, so no prior of its own
