"""DDIM in ComfyUI's sigma convention and the MIDMs interleaved sampler (paper Eq. 3-4, 7-9).

Convention (ComfyUI / k-diffusion): the noisy latent is x = x0 + sigma * eps, and a denoiser
``denoise(x, sigma) -> x0`` returns the model's clean estimate (guidance already applied), with
``sigma`` a (B,) tensor. The schedule ``sigmas`` is descending and normally ends at 0.

DDIM (Eq. 4) in this convention, with alpha_bar = 1 / (1 + sigma^2) and eps = (x - x0) / sigma:
  x_next = x0 + sqrt((1 - a_next - s^2) / a_next) * eps + (s / sqrt(a_next)) * noise,
  s^2 = eta^2 * (1 - a_next) / (1 - a) * (1 - a / a_next),
which is the alpha-bar update z_next = sqrt(a_next) x0 + sqrt(1 - a_next - s^2) eps + s noise
divided by sqrt(a_next). With eta = 0 it reduces to x_next = x0 + sigma_next * eps.

The interleaved sampler replaces x0 at chosen steps by the confidence-blended re-warp of the
ORIGINAL exemplar latent, matched against features of the model's own x0_hat (Eq. 8-11):
x0 = M * rewarp + (1 - M) * x0_hat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from .alignment import SpatialPrior
from .attention import DEFAULT_CHUNK_BYTES, DEFAULT_TAU, AttentionSettings
from .confidence import (
    ConfidenceSettings,
    WarpResult,
    check_confidence,
    prepare_exemplar,
    warp_prepared,
    warp_with_confidence,
)
from .exemplars.union import prepare_union, warp_stacked_with_confidence
from .matchers.base import MatchFeatures, Restriction
from .noise_paths import EPSILON, GaussianPath
from .validation import check_bool, check_in_range, check_int, check_positive, check_tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]
X0Transform = Callable[[int, Tensor, Tensor, Tensor], "tuple[Tensor, Dict[str, Any]]"]
Callback = Callable[[Dict[str, Any]], None]


def default_noise_sampler(x: Tensor, generator: Optional[torch.Generator] = None) -> NoiseSampler:
    """Fresh standard-normal noise shaped like ``x`` each call, from ``generator`` when given."""

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    return sample



def ddim_step(
    x: Tensor,
    x0: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    eta: float = 0.0,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """One DDIM update from sigma to sigma_next given the clean estimate x0, epsilon convention
    (:data:`~midms_core.noise_paths.EPSILON`'s ``step``; other models: ``GaussianPath.step``).

    x, x0, noise: (B, C, H, W); sigma, sigma_next: scalars (0-d tensors or floats).
    """
    return EPSILON.step(x, x0, sigma, sigma_next, eta, noise)


def _check_sigmas(where: str, x: Tensor, sigmas: Tensor) -> None:
    check_tensor(where, "x", x, 4, "(B, C, H, W)")
    check_tensor(where, "sigmas", sigmas, 1, "(steps + 1,) descending")
    if sigmas.shape[0] < 2:
        raise ValueError(f"{where}: 'sigmas' needs at least 2 values (a start and an end), got {sigmas.shape[0]}")
    if bool((sigmas < 0).any()) or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError(f"{where}: 'sigmas' must be non-negative and non-increasing, got {sigmas.tolist()}")
    if float(sigmas[0]) == 0.0:
        raise ValueError(f"{where}: 'sigmas' must start above 0")


def sample_ddim(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    eta: float = 0.0,
    noise_sampler: Optional[NoiseSampler] = None,
    callback: Optional[Callback] = None,
    x0_transform: Optional[X0Transform] = None,
    path: GaussianPath = EPSILON,
) -> Tensor:
    """DDIM from x at sigmas[0] down the schedule; returns x at sigmas[-1] (x0 when it ends at 0).

    ``path``: the model's noise path (:mod:`midms_core.noise_paths`; epsilon / v-prediction or
    rectified flow); it only matters for eta > 0 (eta = 0 is the same step on every path).

    ``x0_transform(i, x, x0_hat, sigma) -> (x0, info)`` may replace the clean estimate before
    each update (the interleaved sampler's hook); ``info`` is merged into the callback dict.
    ``callback`` gets {"i", "x", "sigma", "sigma_hat", "sigma_next", "denoised", "x0_hat", ...}
    after each step (ComfyUI's preview/progress/cancel hook; raising in it stops sampling).
    """
    _check_sigmas("sample_ddim", x, sigmas)
    check_in_range("sample_ddim", "eta", eta, 0.0, 1.0)
    if eta > 0 and noise_sampler is None:
        noise_sampler = default_noise_sampler(x)
    s_in = x.new_ones(x.shape[0])
    for i in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoise(x, sigma * s_in)
        x0, info = (x0_hat, {}) if x0_transform is None else x0_transform(i, x, x0_hat, sigma)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_hat": sigma, "sigma_next": sigma_next,
                      "denoised": x0, "x0_hat": x0_hat, **info})
        noise = noise_sampler(sigma, sigma_next) if eta > 0 and float(sigma_next) > 0 else None
        x = path.step(x, x0, sigma, sigma_next, eta, noise)
    return x


@dataclass(frozen=True)
class WarpSettings:
    """How a match becomes a warp and a confidence mask: the first warp and every re-warp of the
    interleaved sampler use these, and ``rewarp_steps`` / ``skip_last`` say when the sampler
    re-matches.

    tau:            softmax temperature of the warp (official 0.005).
    confidence:     the cycle check's threshold, the mask (hard / soft, smoothing, soft width)
                    and the passes over the correlation
                    (:class:`~midms_core.confidence.ConfidenceSettings`, validated when made).
    clamp_negative: clamp correlations at 0 as the official code does.
    rewarp_steps:   step indices (0-based) that re-warp; None means every step, less the last
                    when ``skip_last`` (paper appendix: skipping the last warp helps).
    skip_last:      only used when rewarp_steps is None.
    chunk_bytes:    memory budget for one block of correlation logits.
    """

    tau: float = DEFAULT_TAU
    confidence: ConfidenceSettings = ConfidenceSettings()
    clamp_negative: bool = True
    rewarp_steps: Optional[Sequence[int]] = None
    skip_last: bool = True
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def __post_init__(self) -> None:
        where = "WarpSettings"
        check_positive(where, "tau", self.tau)
        check_confidence(where, self.confidence)
        check_bool(where, "clamp_negative", self.clamp_negative)
        check_bool(where, "skip_last", self.skip_last)
        check_int(where, "chunk_bytes", self.chunk_bytes, 1)
        if self.rewarp_steps is not None:
            steps = tuple(self.rewarp_steps)
            if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in steps):
                raise ValueError(f"{where}: 'rewarp_steps' must be non-negative step indices, got {list(steps)}")
            object.__setattr__(self, "rewarp_steps", tuple(sorted(set(steps))))

    def check_steps(self, step_count: int, where: str = "WarpSettings") -> None:
        """Raise when ``rewarp_steps`` names a step past the end of a run of ``step_count`` steps
        (such a run would silently re-warp nothing at those steps)."""
        past = [s for s in (self.rewarp_steps or ()) if s >= step_count]
        if past and step_count < 1:
            raise ValueError(f"{where}: 'rewarp_steps' lists step {past[0]}, but this run has no steps; "
                             "give the sampler a schedule of at least 2 sigmas")
        if past:
            raise ValueError(
                f"{where}: 'rewarp_steps' lists step {past[0]}, but this run has {step_count} step"
                f"{'s' if step_count != 1 else ''}, numbered 0 to {step_count - 1} (steps count from 0); "
                f"use step numbers from 0 to {step_count - 1}, or more steps"
            )

    def steps_to_rewarp(self, step_count: int) -> frozenset[int]:
        """The step indices in ``range(step_count)`` that re-warp."""
        if self.rewarp_steps is not None:
            return frozenset(s for s in self.rewarp_steps if s < step_count)
        last = step_count - 1 if self.skip_last else step_count
        return frozenset(range(last))

    @property
    def attention(self) -> AttentionSettings:
        """The softmax part of these settings (:class:`~midms_core.attention.AttentionSettings`)."""
        return AttentionSettings(tau=self.tau, clamp_negative=self.clamp_negative, chunk_bytes=self.chunk_bytes)

    def warp_with_confidence(self, condition_features: Tensor, exemplar_features: Tensor, exemplar_values: Tensor,
                             *, prior: Optional[SpatialPrior] = None, groups: int = 1,
                             restriction: Optional[Restriction] = None) -> WarpResult:
        """:func:`~midms_core.confidence.warp_with_confidence` with these settings (and the
        match's locality prior): the warp, its flows and its confidence mask. ``groups`` > 1 or a
        ``restriction``: several stacked exemplars / restricted pairs
        (:func:`~midms_core.exemplars.union.warp_stacked_with_confidence`)."""
        if groups == 1 and restriction is None:
            return warp_with_confidence(condition_features, exemplar_features, exemplar_values, self.attention,
                                        self.confidence, prior)
        return warp_stacked_with_confidence(condition_features, exemplar_features, exemplar_values, groups,
                                            self.attention, self.confidence, prior, restriction)


def blend(rewarp: Tensor, x0_hat: Tensor, mask: Tensor) -> Tensor:
    """x0 = M * rewarp + (1 - M) * x0_hat: trust the re-warp only where it is confident."""
    return mask * rewarp + (1 - mask) * x0_hat


def rewarp_transform(
    exemplar_latent: Tensor,
    features: MatchFeatures,
    settings: WarpSettings,
    step_count: int,
) -> X0Transform:
    """The interleaving hook for :func:`sample_ddim`: at each re-warp step, match x0_hat to the
    exemplar in-domain, re-warp the ORIGINAL exemplar latent and blend by confidence.

    exemplar_latent: (B, C, Hy, Wy) in the sampler's latent space. The exemplar side (its
    in-domain features, the latent, the prior) is validated and prepared once, here; each step
    then runs the unchecked kernel on the new x0_hat features
    (:func:`~midms_core.confidence.warp_prepared`).
    """
    steps = settings.steps_to_rewarp(step_count)
    where = "rewarp_transform"
    exemplar_features = features.exemplar_in_domain
    check_tensor(where, "features.exemplar_in_domain", exemplar_features, 4, "(B, C', Hy, Wy)")
    prepared = {}  # the exemplar side, per condition grid (known at the first re-warp)
    attention, confidence = settings.attention, settings.confidence

    def transform(i: int, x: Tensor, x0_hat: Tensor, sigma: Tensor):
        if i not in steps:
            return x0_hat, {"mask": None, "warped": None}
        query = features.x0_features(x0_hat)
        grid = tuple(query.shape[-2:])
        # the exemplar side is checked once (below); the step's own features once per step, one
        # isfinite pass, so a model that produced NaN is named here rather than blended in
        if isinstance(query, Tensor) and query.dim() == 4 and not bool(torch.isfinite(query).all()):
            raise ValueError(f"{where}: the x0_hat features of step {i} contain NaN or Inf; the model's clean "
                             "estimate went non-finite (check the model, its precision and the latent)")
        if grid not in prepared:  # validates the pair once (shapes, finiteness, prior, restriction)
            pairs = prepare_union(where, query, exemplar_features, features.groups, features.prior, features.restriction)
            prepared[grid] = prepare_exemplar(where, query, exemplar_features, exemplar_latent, features.prior,
                                              features.groups, pairs)
        elif query.dim() != 4 or query.shape[1] != exemplar_features.shape[1]:
            raise ValueError(f"{where}: x0_hat features must be (B, {exemplar_features.shape[1]}, h, w), "
                             f"got {tuple(query.shape)}")
        result = warp_prepared(query, prepared[grid], attention, confidence)
        warped = result.warped.to(x0_hat.dtype)
        mask = result.mask.to(x0_hat.dtype)
        return blend(warped, x0_hat, mask), {"mask": mask, "warped": warped, "flow": result.forward_flow}

    return transform


def sample_interleaved(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    exemplar_latent: Tensor,
    features: MatchFeatures,
    settings: WarpSettings = WarpSettings(),
    eta: float = 0.0,
    noise_sampler: Optional[NoiseSampler] = None,
    callback: Optional[Callback] = None,
    refine_sigmas: Optional[Tensor] = None,
    refine_denoise: Optional[Denoiser] = None,
    refine_eta: float = 1.0,
    path: GaussianPath = EPSILON,
) -> Tensor:
    """The MIDMs interleaved DDIM sampler (Eq. 7-11), from an already-noised x at sigmas[0].

    x: (B, C, H, W) noisy latent on the condition grid; exemplar_latent: (B, C, Hy, Wy), same
    latent space as x. ``features.x0_features`` receives x0_hat in that space too.
    With ``refine_sigmas`` (e.g. a schedule starting near 10 % noise), the result is re-noised to
    refine_sigmas[0] and denoised again by ``refine_denoise`` (default ``denoise``) with
    stochastic DDIM (``refine_eta``, official 1.0); the paper uses the original, not fine-tuned,
    model there. Callback dicts carry "stage": "interleaved" or "refine". ``path``: the model's
    noise path, used by stochastic steps (eta > 0) and by the refinement's re-noising.
    """
    where = "sample_interleaved"
    _check_sigmas(where, x, sigmas)
    check_tensor(where, "exemplar_latent", exemplar_latent, 4, "(B, C, Hy, Wy)")
    if exemplar_latent.shape[1] != x.shape[1]:
        raise ValueError(
            f"{where}: 'exemplar_latent' must have the latent channels of 'x' ({x.shape[1]}), got {exemplar_latent.shape[1]}"
        )
    settings.check_steps(sigmas.shape[0] - 1, where)
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x)
    transform = rewarp_transform(exemplar_latent, features, settings, sigmas.shape[0] - 1)

    def staged(stage: str) -> Optional[Callback]:
        if callback is None:
            return None
        return lambda info: callback({**info, "stage": stage})

    x = sample_ddim(denoise, x, sigmas, eta, noise_sampler, staged("interleaved"), transform, path)
    if refine_sigmas is None:
        return x
    _check_sigmas(where, x, refine_sigmas)
    start = refine_sigmas[0]
    x = path.noise(x, noise_sampler(start, start), start)
    return sample_ddim(refine_denoise or denoise, x, refine_sigmas, refine_eta, noise_sampler, staged("refine"), path=path)
