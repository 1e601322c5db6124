"""Semantic anchors in matching: keypoints on both sides set the layout, features add detail.

The steps, host-free:

1. :func:`place_keypoints`: a side's keypoints, given on their detector's canvas, are carried
   onto the image the side was encoded from (the canvas stretched onto the image, whose aspect
   must agree) and through the resize / crop / pad that brought it to its final size
   (:class:`~midms_core.images.FitGeometry`).
2. :func:`pair_keypoints` (in :mod:`midms_core.anchors.keypoints`) keeps the points both sides have;
   :func:`~midms_core.anchors.field.pairs_field` interpolates them into a dense field and a trust
   width on the latent grids.
3. :func:`bind_anchored`: the matcher binds WITHOUT its own global alignment (the anchors
   replace it; a mirrored feature layout would contradict them) and every pair's prior becomes
   the anchor field's (:func:`~midms_core.anchors.field.anchor_prior`). The prior rides in
   ``MatchFeatures.prior``, so the first warp and every re-match of the interleaved sampler use
   it, for every matcher and every exemplar of a set.

Mode "anchors only": the field itself is the warp. Every feature is constant, so the warp's
logits are the prior's alone, with one width (``FIELD_SIGMA`` exemplar cells) that samples the
exemplar at T(u) smoothly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..alignment import SpatialPrior
from ..exemplars.union import unite
from ..images import FitGeometry
from ..matchers.base import Matcher, MatchFeatures, MatchSide, Restriction
from .field import FieldSettings
from .keypoints import Keypoints

__all__ = [
    "ANCHOR_MODES",
    "ASPECT_TOLERANCE",
    "AnchorSpec",
    "FIELD_SIGMA",
    "bind_anchored",
    "field_only_features",
    "place_keypoints",
]

#: "prior": the field is the locality prior of the feature match; "anchors only": the field is the warp
ANCHOR_MODES = ("prior", "anchors only")
#: width (exemplar cells) of the warp in "anchors only" mode: smooth sub-cell sampling at T(u)
FIELD_SIGMA = 0.5
#: how far a keypoint canvas's aspect may differ from its image's (relative) before it is refused
ASPECT_TOLERANCE = 0.03


@dataclass(frozen=True)
class AnchorSpec:
    """What an anchors node hands to the encode nodes.

    condition: keypoint sets of the condition, one per frame (1 serves every image);
    exemplar:  keypoint sets of the exemplar(s), one per frame (1 serves every image), in the
               exemplars' order for an exemplar set;
    settings:  how the field is made; mode: one of :data:`ANCHOR_MODES`.
    """

    condition: tuple[Keypoints, ...]
    exemplar: tuple[Keypoints, ...]
    settings: FieldSettings = FieldSettings()
    mode: str = "prior"

    def __post_init__(self) -> None:
        if self.mode not in ANCHOR_MODES:
            raise ValueError(f"AnchorSpec: 'mode' must be one of {list(ANCHOR_MODES)}, got {self.mode!r}")
        if not self.condition or not self.exemplar:
            raise ValueError("AnchorSpec: both sides need at least one keypoint set")


def place_keypoints(points: Keypoints, image_size: tuple[int, int], geometries: Sequence[FitGeometry],
                    where: str, name: str) -> Keypoints:
    """Keypoints on their canvas -> the same points on the final image.

    image_size: (height, width) of the image the canvas shows (the node's input image);
    geometries: the fits applied to that image, in order (each maps continuous pixel
    coordinates, 0 at the left / top edge). Refuses a canvas whose aspect differs from the
    image's by more than :data:`ASPECT_TOLERANCE`."""
    height, width = image_size
    canvas_aspect, image_aspect = points.width / points.height, width / height
    if abs(math.log(canvas_aspect / image_aspect)) > math.log1p(ASPECT_TOLERANCE):
        raise ValueError(f"{where}: '{name}' were found on a {points.width:g} x {points.height:g} canvas, which does not "
                         f"have the aspect of its image ({width} x {height}); give the keypoints of this very image "
                         "(run the detector on it, or set the point editor's width and height to the image's)")
    placed = points.scaled_to(width, height).points
    size = (height, width)
    for geometry in geometries:
        if tuple(geometry.input_size) != tuple(size):
            raise ValueError(f"place_keypoints: a fit of {geometry.input_size} applied to an image of {size}")
        placed = geometry.apply(placed)
        size = geometry.output_size
    return Keypoints(placed, points.labels, float(size[1]), float(size[0]))


def field_only_features(condition: MatchSide, exemplar: MatchSide) -> MatchFeatures:
    """Constant features: every cosine is 0, so a warp follows its prior alone. Condition
    (B, 1, hx, wx), exemplar (B, 1, hy, wy); x0_hat features constant too (re-matches repeat
    the field)."""
    batch = max(condition.latent.shape[0], exemplar.latent.shape[0])
    device = condition.latent.device
    cond = torch.zeros(batch, 1, *condition.grid, device=device)
    exem = torch.zeros(batch, 1, *exemplar.grid, device=device)

    def x0_features(x0: Tensor) -> Tensor:
        """x0_hat (B, c, hx, wx) -> zeros (B, 1, hx, wx)."""
        return torch.zeros(x0.shape[0], 1, *x0.shape[-2:], device=x0.device)

    return MatchFeatures(condition=cond, exemplar=exem, exemplar_in_domain=exem, x0_features=x0_features)


def _field_prior(prior: SpatialPrior) -> SpatialPrior:
    return SpatialPrior(prior.target, FIELD_SIGMA)


def bind_anchored(matcher: Matcher, condition: MatchSide, exemplars: Sequence[MatchSide], priors: Sequence[SpatialPrior],
                  mode: str = "prior", restriction: Optional[Restriction] = None) -> MatchFeatures:
    """Features of a condition against G exemplars with one anchor prior each.

    ``priors``: G :class:`SpatialPrior` (target (B, 2, hx, wx) in that exemplar's cells). In
    mode "prior" the matcher binds without its own alignment and each pair takes its anchor
    prior; in "anchors only" the features are constant (:func:`field_only_features`). One
    exemplar without restriction gives its features as they are, several their union
    (:func:`~midms_core.exemplars.union.unite`)."""
    exemplars = list(exemplars)
    if mode not in ANCHOR_MODES:
        raise ValueError(f"bind_anchored: 'mode' must be one of {list(ANCHOR_MODES)}, got {mode!r}")
    if not exemplars or len(priors) != len(exemplars):
        raise ValueError(f"bind_anchored: one prior per exemplar, got {len(priors)} for {len(exemplars)}")
    if mode == "anchors only":
        bound = [field_only_features(condition, e) for e in exemplars]
        priors = [_field_prior(p) for p in priors]
    else:
        bound = matcher.without_alignment().bind_each(condition, exemplars)
    bound = [dataclasses.replace(b, prior=p.to(b.condition.device), alignment=None) for b, p in zip(bound, priors)]
    if len(bound) == 1 and restriction is None:
        return bound[0]
    return unite(bound, restriction)
