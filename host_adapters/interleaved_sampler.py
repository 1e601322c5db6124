"""The interleaved DDIM sampler as a host KSAMPLER (for SamplerCustom / SamplerCustomAdvanced and
any guider), and the all-in-one run: warp, noise (or DDIM-invert) to the start, sample."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..midms_core import sample_interleaved, strength_sigmas
from .devices import compute_device, interruptible
from .errors import NodeInputError
from .host_matcher import as_host_matcher
from .inversion_sampler import inversion_sampler
from .match import MIDMsMatch, MIDMsSettings, bind, initial_warp
from .node_names import CORRESPONDENCE, EXEMPLAR_ENCODE, INTERLEAVED_SAMPLER, REWARP_SETTINGS, RUN_BY_SAMPLING_NODE
from .latent_spaces import check_latent_space, process_in, process_out, to_host_latent, to_image_latent
from .noise_paths import base_in_call, model_sampling, noise_path, path_of, sampling_in_call
from .schedules import model_sigmas

SAMPLER_WHERE = f"{INTERLEAVED_SAMPLER} {RUN_BY_SAMPLING_NODE}"
START_MODES = ["noise", "ddim inversion"]  # how the all-in-one run reaches its start noise


@torch.no_grad()  # as the host's own samplers: no autograd graph through the U-Net
def sample_midms(model, x, sigmas, extra_args=None, callback=None, disable=None,
                 midms_match: Optional[MIDMsMatch] = None, midms_model=None):
    """KSAMPLER function: ``model(x, sigma, **extra_args)`` is the host's guided denoiser in the
    model's SCALED latent space; the exemplar latent is scaled the same way, and the matcher
    sees x0_hat back in raw VAE space, as it saw the exemplar.

    This runs inside the host's sampling node, so ValueErrors of midms_core are reported as
    NodeInputErrors naming this sampler; errors raised inside the host's model call pass as
    they are."""
    in_host_model = [False]
    try:
        return _sample_midms(model, x, sigmas, extra_args, callback, midms_match, midms_model, in_host_model)
    except NodeInputError:
        raise
    except ValueError as err:
        if in_host_model[0]:
            raise
        raise NodeInputError(f"{SAMPLER_WHERE}: {err}") from err


def _sample_midms(model, x, sigmas, extra_args, callback, midms_match, midms_model, in_host_model):
    extra_args = {} if extra_args is None else extra_args
    base = midms_model.model  # the host's BaseModel: latent format
    sampling = sampling_in_call(model, midms_model)
    match = midms_match
    # before any step or matching: the sampling node's model against the match, then its latent
    check_latent_space(base_in_call(model, midms_model), match.context.exemplar_latent, SAMPLER_WHERE, "match",
                       "the sampling node's 'model'")
    # a video VAE's model (Qwen-Image) samples (B, C, 1, h, w): the steps run on (B, C, h, w)
    video = x.dim() == 5
    x = to_image_latent(x, SAMPLER_WHERE, "latent_image")
    check_latent_against_match(x, match, sigmas.shape[0] - 1)
    in_sampler, exemplar = _sampler_sides(match, base, x)
    noise_sampler = _seeded_noise_sampler(x, extra_args.get("seed"))
    denoise = _host_denoiser(model, match, x, extra_args, video, in_host_model)
    settings: MIDMsSettings = match.settings
    refine_sigmas, refine_steps = None, 0
    if settings.refine_strength > 0:
        refine_steps = settings.refine_steps
        refine_sigmas = strength_sigmas(model_sigmas(sampling), refine_steps, settings.refine_strength).to(x.device)
    report = _progress_reporter(callback, sigmas.shape[0] - 1, refine_steps, video)
    with interruptible():  # re-matches inside a step stop at the interrupt button too
        out = sample_interleaved(denoise, x, sigmas, exemplar, in_sampler, settings.rewarp, eta=settings.eta,
                                 noise_sampler=noise_sampler, callback=report, refine_sigmas=refine_sigmas,
                                 path=path_of(sampling))
        return _host_form(out, video)


def _host_form(t: torch.Tensor, video: bool) -> torch.Tensor:
    """A step's (B, C, h, w) tensor in the host's form: (B, C, 1, h, w) for a video-latent model."""
    return t.unsqueeze(2) if video else t


def _sampler_sides(match: MIDMsMatch, base, x: torch.Tensor):
    """The match's features on x's device, seeing x0_hat back in raw VAE space (as the matcher saw
    the exemplar), and the exemplar latent in the model's scaled space and x's dtype."""
    device = x.device
    features = bind(match, device)
    exemplar = process_in(base, match.context.exemplar_latent.to(device)).to(x.dtype)

    def x0_features(x0: torch.Tensor) -> torch.Tensor:
        return features.x0_features(process_out(base, x0))

    return dataclasses.replace(features, x0_features=x0_features), exemplar


def _seeded_noise_sampler(x: torch.Tensor, seed):
    """The sampler's noise (eta > 0, the refinement's re-noising), shaped like x, from a CPU
    generator seeded from the host's seed."""
    # +1: a stream apart from the host's initial noise for the same seed; wraps at 2**64
    generator = torch.Generator(device="cpu").manual_seed((int(seed) + 1) % 2**64 if seed is not None else 0)

    def noise_sampler(sigma, sigma_next):
        return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)

    return noise_sampler


def _host_denoiser(model, match: MIDMsMatch, x: torch.Tensor, extra_args: dict, video: bool, in_host_model: list):
    """denoise(xt, sigma) -> x0 through the host's guided model, with the matcher's feature
    capture installed when it records during the model call; ``in_host_model[0]`` is True while
    the host's model runs."""
    capture = None
    hook = as_host_matcher(match.matcher).capture_hook(tuple(x.shape[-2:]))
    if hook is not None:
        # The matcher records its features during the sampler's own model call (no extra pass
        # per step): a per-run copy of model_options with the recording patch installed; the
        # user's model and its model_options are never changed.
        install, capture = hook
        extra_args = {**extra_args, "model_options": install(extra_args.get("model_options", {}))}

    def denoise(xt, sigma):
        if capture is not None:
            capture.clear()  # x0_features then sees only this step's records
        in_host_model[0] = True
        out = model(_host_form(xt, video), sigma, **extra_args)
        in_host_model[0] = False
        return out[:, :, 0] if video else out

    return denoise


def _progress_reporter(callback, main_steps: int, refine_steps: int, video: bool):
    """The sampler's callback: stops at the interrupt button and reports progress to the host.
    The host sizes its progress bar to the main schedule; the refinement's extra steps
    (``refine_steps``, 0 without one) are spread over it so the bar only reaches the end with
    the last step."""
    total_steps = main_steps + refine_steps

    def report(info):
        mm.throw_exception_if_processing_interrupted()
        if callback is not None:
            done = info["i"] + 1 + (main_steps if info.get("stage") == "refine" else 0)
            shown = {k: _host_form(info[k], video) for k in ("x", "denoised") if k in info} if video else {}
            callback({**info, **shown, "i": max(done * main_steps // total_steps - 1, 0)})

    return report


def check_latent_against_match(x: torch.Tensor, match: MIDMsMatch, step_count: int, where: str = SAMPLER_WHERE) -> None:
    """NodeInputError unless the sampler's start latent x (B, C, H, W; a video-latent model's
    without its frame axis) fits the match: the same
    latent channels and grid as the exemplar / condition, and the same batch, or a match of one
    pair for any batch of latents (a latent batch of 1 against a match of several is refused: the
    blend would silently turn it into several images). Also the re-warp steps against the run."""
    context = match.context
    cells = tuple(context.condition_latent.shape[-2:])
    pixels = tuple(context.condition_image.shape[-2:])
    channels = context.exemplar_latent.shape[1]
    pairs = context.condition_latent.shape[0]
    warped_hint = (f"connect the 'warped_latent' output of {CORRESPONDENCE} (made from this match) "
                   "as 'latent_image'")
    if x.dim() != 4 or x.shape[1] != channels:
        raise NodeInputError(
            f"{where}: 'latent_image' has shape {tuple(x.shape)} but the match's latents have {channels} channels "
            f"(B, {channels}, {cells[0]}, {cells[1]}): it comes from another model family's VAE; {warped_hint}"
        )
    if tuple(x.shape[-2:]) != cells:
        factor = pixels[0] // cells[0] if cells[0] else 8
        raise NodeInputError(
            f"{where}: 'latent_image' is {x.shape[-1]} x {x.shape[-2]} latent cells, width x height "
            f"({x.shape[-1] * factor} x {x.shape[-2] * factor} px), but the match was made at {cells[1]} x {cells[0]} "
            f"cells ({pixels[1]} x {pixels[0]} px, the condition's size); {warped_hint}, or make the latent "
            f"{pixels[1]} x {pixels[0]} px (width x height)"
        )
    if x.shape[0] != pairs and pairs != 1:
        raise NodeInputError(
            f"{where}: 'latent_image' has {x.shape[0]} latent{'s' if x.shape[0] != 1 else ''} but the match has {pairs} "
            f"condition / exemplar pairs: {warped_hint} ({pairs} latents), or repeat the latent to {pairs} "
            f"(RepeatLatentBatch), or give {EXEMPLAR_ENCODE} as many pairs as latents"
        )
    try:
        match.settings.rewarp.check_steps(step_count, REWARP_SETTINGS)
    except ValueError as err:
        raise NodeInputError(f"{where}: {err} (the run's steps are the 'sigmas' input's length minus 1, "
                             "e.g. the scheduler's steps)") from None


def midms_sampler(model, match: MIDMsMatch) -> comfy.samplers.KSAMPLER:
    """The interleaved sampler as a host SAMPLER for ``match``; ``model`` gives the latent scaling."""
    check_latent_space(model.model, match.context.exemplar_latent, INTERLEAVED_SAMPLER, "match")
    return comfy.samplers.KSAMPLER(sample_midms, extra_options={"midms_match": match, "midms_model": model})


def sample_all_in_one(model, positive, negative, match: MIDMsMatch, seed: int, steps: int, start_noise: float,
                      cfg: float, start: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp the exemplar, bring it to ``start_noise`` of the model's schedule (``start``: seeded
    noise, or DDIM inversion with this model at cfg 1), then run ``steps`` interleaved steps.
    Returns (samples, the warped latent), both raw LATENTs; errors name ``where``."""
    check_latent_space(model.model, match.context.exemplar_latent, where, "context")
    try:
        match.settings.rewarp.check_steps(steps, f"{REWARP_SETTINGS} (connected to 'settings')")
    except ValueError as err:
        raise NodeInputError(f"{where}: {err} (this node's 'steps' input)") from None
    sigmas_of_model = model_sigmas(model_sampling(model))
    fit = max(int(round(start_noise * sigmas_of_model.shape[0])), 1)  # as strength_timesteps counts
    if steps > fit:
        raise NodeInputError(
            f"{where}: 'steps' {steps} do not fit in 'start_noise' {start_noise:g} (the first {fit} of the "
            f"model's {sigmas_of_model.shape[0]} timesteps); use at most {fit} steps or a higher start_noise"
        )
    sigmas = strength_sigmas(sigmas_of_model, steps, start_noise)
    # the model's own latent form: (B, C, 1, h, w) for a video-latent model (Qwen-Image)
    warped = to_host_latent(model.model, initial_warp(match, compute_device()).warped.to(mm.intermediate_device()))
    start_latent, noise = warped, comfy.sample.prepare_noise(warped, seed)
    if start == "ddim inversion":
        start_latent, noise = _inverted_start(model, positive, negative, warped, sigmas, where), torch.zeros_like(warped)
    callback = latent_preview.prepare_callback(model, sigmas.shape[0] - 1)
    samples = comfy.sample.sample_custom(
        model, noise, cfg, midms_sampler(model, match), sigmas, positive, negative, start_latent,
        callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )
    return samples, warped


def _inverted_start(model, positive, negative, warped, sigmas, where: str):
    """The warp DDIM-inverted (this model, cfg 1) to sigmas[0], as a LATENT the run starts
    from without added noise."""
    if float(noise_path(model).alpha(torch.tensor(float(sigmas[0]), dtype=torch.float64))) <= 1e-6:
        raise NodeInputError(f"{where}: start 'ddim inversion' needs a start_noise whose sigma is below 1 on "
                             "this rectified-flow model (pure noise has no LATENT form); lower start_noise")
    return comfy.sample.sample_custom(model, torch.zeros_like(warped), 1.0, inversion_sampler(model, where=where),
                                      sigmas, positive, negative, warped,
                                      callback=latent_preview.prepare_callback(model, sigmas.shape[0] - 1),
                                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)
