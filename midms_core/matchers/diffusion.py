"""Correspondence features from a diffusion U-Net (DIFT, Tang et al. 2023), training-free.

DIFT noises an image's latent to t = 261 (of 1000), runs the U-Net once with an empty prompt and
takes the feature map entering the second up-block (diffusers ``up_ft_index`` 1, LDM/ComfyUI
output block 6); channel-centred cosine of those maps gives dense correspondence. Averaging the
features of several noise draws helps (DIFT uses an ensemble of 8).

This module is pure torch: the U-Net pass is an injected ``extract(latent_raw, generator) ->
(B, C, h', w')`` callable (the host supplies it), so tests can use any toy network.

Inside the interleaved sampler the x0_hat side need not cost an extra U-Net pass: the sampler's
own denoiser call at each step already runs the U-Net on the noisy latent x_t. A
:class:`FeatureCapture` records the chosen block's features during that call (the host installs
the recording hook), and ``x0_features`` returns them instead of calling ``extract`` again. Those
are features of x_t at the step's noise level, which is the DIFT recipe applied to the sampler's
current latent (the paper's premise: once x0_hat is photo-like, matching is in-domain).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cancellation import checkpoint
from ..validation import check_int, check_tensor
from .base import Matcher, MatchFeatures, MatchSide, SharedConditionMatcher

#: extract(latent_raw (B, c, h, w), generator) -> features (B, C, h', w')
Extract = Callable[[Tensor, torch.Generator], Tensor]

DIFT_TIMESTEP = 261
DIFT_ENSEMBLE = 8


def resize_to_grid(features: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, C, h', w') -> (B, C, h, w), bilinear (identity when the sizes already agree)."""
    features = features.float()
    if tuple(features.shape[-2:]) == tuple(grid):
        return features
    return F.interpolate(features, size=grid, mode="bilinear", align_corners=False)


class FeatureCapture:
    """Features recorded from a forward pass someone else runs (the sampler's own U-Net).

    ``clear()`` before the pass, ``add()`` from the hook (possibly several times when the host
    splits a step's batch; same-shaped records are averaged, others ignored), ``take()`` after it:
    the average, or None when nothing was recorded. ``take`` clears, so stale features of an
    earlier step are never returned.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._sum: Optional[Tensor] = None
        self._count = 0

    def add(self, features: Tensor) -> None:
        features = features.detach().float()
        if self._sum is None:
            self._sum, self._count = features.clone(), 1
        elif self._sum.shape == features.shape:
            self._sum += features
            self._count += 1

    def take(self) -> Optional[Tensor]:
        out = None if self._sum is None else self._sum / self._count
        self.clear()
        return out


@dataclass(frozen=True)
class DiffusionMatcherSettings:
    """The options of :class:`DiffusionFeatureMatcher`, validated once, here.

    ensemble: noise draws averaged per side (DIFT: 8; 1 keeps CPU runs cheap).
    seed:     seed of the noise draws; the same input always gives the same features.
    """

    ensemble: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        where = "DiffusionFeatureMatcher"
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise ValueError(f"{where}: 'ensemble' must be >= 1 noise draws (a whole number), got {self.ensemble!r}")
        check_int(where, "seed", self.seed, -(2**63))


class DiffusionFeatureMatcher(SharedConditionMatcher):
    """DIFT-style matcher: features of a diffusion U-Net block, on each side's latent grid.

    extract:  the U-Net pass, ``extract(latent_raw, generator) -> (B, C, h', w')``; it draws its
              noise from ``generator``.
    settings: its options (ensemble, seed), a :class:`DiffusionMatcherSettings`; the defaults
              when omitted.
    capture:  optional :class:`FeatureCapture` filled by the host during the sampler's own U-Net
              call; when it holds features of x0's batch, ``x0_features`` returns them.
    cross_domain: optional matcher for the first, cross-domain match (condition against
              exemplar). U-Net features of an edge map or a label map are themselves far from the
              photo domain, so a purpose-built cross-domain matcher (e.g. the edge matcher) can
              make the first warp, while the in-domain re-matches inside the sampler use the
              U-Net features. Then the condition costs no U-Net pass.
    """

    name = "diffusion"

    def __init__(self, extract: Extract, settings: Optional[DiffusionMatcherSettings] = None,
                 capture: Optional[FeatureCapture] = None, cross_domain: Optional[Matcher] = None) -> None:
        if not callable(extract):
            raise ValueError(f"DiffusionFeatureMatcher: 'extract' must be callable, got {type(extract).__name__}")
        settings = DiffusionMatcherSettings() if settings is None else settings
        if not isinstance(settings, DiffusionMatcherSettings):
            raise ValueError(f"DiffusionFeatureMatcher: 'settings' must be a DiffusionMatcherSettings, got {type(settings).__name__}")
        self.extract = extract
        self.settings = settings
        if cross_domain is not None and not isinstance(cross_domain, Matcher):
            raise ValueError(f"DiffusionFeatureMatcher: 'cross_domain' must be a Matcher, got {type(cross_domain).__name__}")
        self.capture = capture
        self.cross_domain = cross_domain

    def features(self, latent: Tensor) -> Tensor:
        """(B, c, h, w) raw latent -> (B, C, h, w) features averaged over ``ensemble`` draws."""
        check_tensor("DiffusionFeatureMatcher", "latent", latent, 4, "(B, c, h, w)")
        ensemble = self.settings.ensemble
        generator = torch.Generator(device="cpu").manual_seed(self.settings.seed)
        total = None
        for _ in range(ensemble):
            checkpoint()  # each draw costs a U-Net pass: a host's interrupt is honoured between them
            out = self.extract(latent, generator)
            check_tensor("DiffusionFeatureMatcher", "extract output", out, 4, "(B, C, h', w')")
            if out.shape[0] != latent.shape[0]:
                raise ValueError(
                    f"DiffusionFeatureMatcher: extract returned batch {out.shape[0]} for a latent batch {latent.shape[0]}"
                )
            out = resize_to_grid(out, tuple(latent.shape[-2:]))
            total = out if total is None else total + out
        return total / ensemble

    def x0_features(self, x0: Tensor) -> Tensor:
        """Features for x0_hat: the captured ones of the current step if any fit, else extract."""
        if self.capture is not None:
            captured = self.capture.take()
            if captured is not None and captured.shape[0] == x0.shape[0]:
                return resize_to_grid(captured, tuple(x0.shape[-2:])).to(x0.device)
        return self.features(x0)

    def without_alignment(self) -> "DiffusionFeatureMatcher":
        if self.cross_domain is None:
            return self
        plain = copy.copy(self)
        plain.cross_domain = self.cross_domain.without_alignment()
        return plain

    def bind_all(self, condition: MatchSide, exemplars: list[MatchSide]) -> list[MatchFeatures]:
        """One U-Net pass set for the condition (or none, with ``cross_domain``), one per exemplar."""
        if self.cross_domain is not None:
            firsts = self.cross_domain.bind_each(condition, exemplars)
            return [self._in_domain_of(first, exemplar) for first, exemplar in zip(firsts, exemplars, strict=True)]
        cond = self.features(condition.latent)
        out = []
        for exemplar in exemplars:
            exem = self.features(exemplar.latent)
            out.append(MatchFeatures(condition=cond, exemplar=exem, exemplar_in_domain=exem,
                                     x0_features=self.x0_features))
        return out

    def _in_domain_of(self, first: MatchFeatures, exemplar: MatchSide) -> MatchFeatures:
        """The cross-domain matcher's features of a pair, with this matcher's in-domain side."""
        exem = self.features(exemplar.latent)
        if first.alignment is not None and bool(first.alignment.mirrored.any()):
            # the first match laid the exemplar mirrored: its in-domain features must describe
            # the mirrored layout too (features of the flipped exemplar, flipped back)
            flip = first.alignment.mirrored.to(exem.device).view(-1, 1, 1, 1)
            exem = torch.where(flip, self.features(exemplar.latent.flip(-1)).flip(-1), exem)
        # the first matcher's global alignment and locality prior hold for the re-matches too
        return MatchFeatures(condition=first.condition, exemplar=first.exemplar, exemplar_in_domain=exem,
                             x0_features=self.x0_features, prior=first.prior, alignment=first.alignment)
