"""The matcher interface: where correspondence features come from.

Correlation, warping and confidence (``correspondence``, ``confidence``) only ever see feature
maps. A matcher turns the two inputs of MIDMs into those maps:

* the condition side ``S_x`` (edge map, pose, segmentation) and the exemplar side ``S_y``, for the
  first, cross-domain match (paper Eq. 5);
* the x0_hat side ``S'_x`` inside the interleaved sampler (Eq. 8), which is correlated with an
  in-domain exemplar feature ``S_y'``. In the official networks ``S'_x`` (from ``iter_enc``) is
  correlated with the exemplar encoder's output *before* the shared head, so the exemplar has
  two feature maps; matchers whose two are the same return the same tensor twice.

Every feature map lies on the latent grid ``(h, w)`` of its side, so a warp computed from it
applies directly to latents.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from torch import Tensor

from ..validation import check_tensor

if TYPE_CHECKING:
    from ..alignment import Alignment, SpatialPrior


@dataclass(frozen=True)
class MatchSide:
    """One side of a match.

    latent: (B, c, h, w) the side's VAE latent in RAW VAE space; (h, w) is the feature grid.
    image:  (B, 3, H, W) float RGB in [0, 1], channels first, or None when only latents exist
            (matchers that need pixels say so in their error).
    """

    latent: Tensor
    image: Optional[Tensor] = None

    def __post_init__(self) -> None:
        check_tensor("MatchSide", "latent", self.latent, 4, "(B, c, h, w)")
        if self.image is not None:
            check_tensor("MatchSide", "image", self.image, 4, "(B, 3, H, W)")
            if self.image.shape[1] != 3:
                raise ValueError(
                    f"MatchSide: 'image' must have 3 channels (B, 3, H, W) in [0, 1], got shape {tuple(self.image.shape)}"
                )
            if self.image.shape[0] != self.latent.shape[0]:
                raise ValueError(
                    f"MatchSide: 'image' batch {self.image.shape[0]} differs from 'latent' batch {self.latent.shape[0]}"
                )

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.latent.shape[-2]), int(self.latent.shape[-1])


@dataclass(frozen=True)
class Restriction:
    """Which pairs may match (a :class:`MatchFeatures` field), on the latent grids (any factor may
    be None); :func:`midms_core.exemplars.regions.pair_restriction` checks it for the kernel.

    condition_masks:  (B, G, Hx, Wx) in [0, 1]: where on the condition each exemplar may be used
                      (> 0.5 = allowed).
    exemplar_masks:   (B, G, Hy, Wy) in [0, 1]: which part of each exemplar may be used at all.
    condition_labels: (B, 1, Hx, Wx) integer labels of the condition positions.
    exemplar_labels:  (B, G, Hy, Wy) integer labels of each exemplar's positions; positions only
                      match positions of the same label. Both label maps or neither.
    """

    condition_masks: Optional[Tensor] = None
    exemplar_masks: Optional[Tensor] = None
    condition_labels: Optional[Tensor] = None
    exemplar_labels: Optional[Tensor] = None


@dataclass
class MatchFeatures:
    """Features of one condition/exemplar pair, computed once per run.

    condition:          (B, C, hx, wx) S_x, cross-domain condition features.
    exemplar:           (B, C, hy, wy) S_y, cross-domain exemplar features (pairs with ``condition``).
    exemplar_in_domain: (B, C', hy, wy) exemplar features that pair with ``x0_features``.
    x0_features:        x0_hat latent (B, c, hx, wx), in the space the caller documents
                        (``midms_core`` itself passes whatever the sampler holds) -> (B, C', hx, wx).
    prior:              a :class:`~midms_core.alignment.SpatialPrior` on the condition grid, or
                        None: the locality term every warp of this pair uses (first match and
                        re-matches alike), from the matcher's global alignment.
    alignment:          the :class:`~midms_core.alignment.Alignment` behind ``prior`` (or None),
                        for previews and reports.
    groups:             how many exemplars ``exemplar`` / ``exemplar_in_domain`` stack top to
                        bottom (1: one exemplar; :func:`midms_core.exemplars.union.bind_union`).
    restriction:        which pairs may match (:class:`Restriction`), or None.
    """

    condition: Tensor
    exemplar: Tensor
    exemplar_in_domain: Tensor
    x0_features: Callable[[Tensor], Tensor]
    prior: Optional["SpatialPrior"] = None
    alignment: Optional["Alignment"] = None
    groups: int = 1
    restriction: Optional[Restriction] = None


class Matcher(abc.ABC):
    """Computes :class:`MatchFeatures` for a condition/exemplar pair.

    Matchers whose condition side costs real work derive from :class:`SharedConditionMatcher`
    instead, which computes it once for several exemplars.
    """

    #: short, stable identifier (used by nodes and benchmarks)
    name: str = "matcher"

    @abc.abstractmethod
    def bind(self, condition: MatchSide, exemplar: MatchSide) -> MatchFeatures:
        """Features of this pair: condition, exemplar, and an x0_hat feature function."""

    def bind_each(self, condition: MatchSide, exemplars: Sequence[MatchSide]) -> list[MatchFeatures]:
        """Features of one condition against each of G exemplars, in order: the same features as
        ``[self.bind(condition, e) for e in exemplars]``. A :class:`SharedConditionMatcher`
        computes the condition side once, not G times; it checks every input before computing
        anything, so with several bad inputs the first error raised may differ from that of
        separate binds."""
        return [self.bind(condition, exemplar) for exemplar in exemplars]

    def without_alignment(self) -> "Matcher":
        """This matcher with its own global alignment (and the mirrored features and locality
        prior that come with it) turned off: where semantic anchors give the layout
        (:mod:`midms_core.anchors.binding`), the features must describe the exemplar as it is.
        Default: the matcher itself (it has no alignment)."""
        return self


class SharedConditionMatcher(Matcher):
    """A matcher that computes the condition side once for any number of exemplars.

    It implements :meth:`bind_all` for a non-empty list of exemplars; ``bind`` (one exemplar) and
    ``bind_each`` (any iterable, empty included) both go through it, so a subclass changes what
    it computes in ``bind_all``.
    """

    def bind(self, condition: MatchSide, exemplar: MatchSide) -> MatchFeatures:
        return self.bind_all(condition, [exemplar])[0]

    def bind_each(self, condition: MatchSide, exemplars: Sequence[MatchSide]) -> list[MatchFeatures]:
        exemplars = list(exemplars)
        return self.bind_all(condition, exemplars) if exemplars else []

    @abc.abstractmethod
    def bind_all(self, condition: MatchSide, exemplars: list[MatchSide]) -> list[MatchFeatures]:
        """Features of the condition against each exemplar of a non-empty list, in order."""


def require_images(where: str, condition: MatchSide, exemplar: MatchSide, why: str) -> None:
    """Both arguments must be MatchSides carrying their image; ``why`` tells the user what for."""
    for arg, side in (("condition", condition), ("exemplar", exemplar)):
        if not isinstance(side, MatchSide):
            raise ValueError(f"{where}: '{arg}' must be a MatchSide, got {type(side).__name__}")
        if side.image is None:
            raise ValueError(f"{where}: '{arg}.image' is required (B, 3, H, W) RGB in [0, 1]; {why}")
