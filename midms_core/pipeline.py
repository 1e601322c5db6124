"""The whole MIDMs inference path on one page: first cross-domain warp, noise, interleave."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from .confidence import WarpResult
from .matchers.base import MatchFeatures
from .noise_paths import EPSILON, GaussianPath
from .sampler import Callback, Denoiser, NoiseSampler, WarpSettings, sample_interleaved
from .validation import check_tensor


@dataclass
class TranslationResult:
    """latent: (B, C, Hx, Wx) the translated latent; initial: the first, cross-domain warp."""

    latent: Tensor
    initial: WarpResult


def translate(
    denoise: Denoiser,
    features: MatchFeatures,
    exemplar_latent: Tensor,
    sigmas: Tensor,
    noise: Tensor,
    settings: WarpSettings = WarpSettings(),
    eta: float = 0.0,
    noise_sampler: Optional[NoiseSampler] = None,
    callback: Optional[Callback] = None,
    refine_sigmas: Optional[Tensor] = None,
    refine_denoise: Optional[Denoiser] = None,
    path: GaussianPath = EPSILON,
) -> TranslationResult:
    """Warp the exemplar onto the condition (Eq. 5-6), noise the warp to sigmas[0] (Eq. 7) and
    denoise it with the interleaved sampler (Eq. 8-11).

    exemplar_latent: (B, C, Hy, Wy) in the denoiser's latent space; noise: (B, C, Hx, Wx)
    standard normal on the condition grid (``features.condition``'s grid); ``path``: the
    model's noise path (epsilon / v-prediction, or rectified flow for SD3 / Flux).
    """
    check_tensor("translate", "noise", noise, 4, "(B, C, Hx, Wx)")
    initial = settings.warp_with_confidence(features.condition, features.exemplar, exemplar_latent,
                                            prior=features.prior, groups=features.groups,
                                            restriction=features.restriction)
    if noise.shape[1:] != initial.warped.shape[1:]:
        raise ValueError(
            f"translate: 'noise' must have shape (B, {initial.warped.shape[1]}, "
            f"{initial.warped.shape[2]}, {initial.warped.shape[3]}) on the condition grid, got {tuple(noise.shape)}"
        )
    x = path.noise(initial.warped, noise, sigmas[0])
    latent = sample_interleaved(
        denoise, x, sigmas, exemplar_latent, features, settings, eta, noise_sampler, callback,
        refine_sigmas, refine_denoise, path=path,
    )
    return TranslationResult(latent=latent, initial=initial)
