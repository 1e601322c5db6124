"""DDIB through the host: invert a latent with one model, regenerate it with another (or the same)."""

from __future__ import annotations

import torch

import comfy.model_management as mm
import comfy.sample
import comfy.utils
import latent_preview

from .errors import NodeInputError
from .inversion_sampler import alpha_at, from_state_sampler, inversion_sampler
from .latent_spaces import check_finite_latent, check_latent_space, process_out, to_host_latent, to_image_latent
from .noise_paths import noise_path
from .schedules import basic_schedule, effective_depth


_PATH_NAMES = {"epsilon": "epsilon / v-prediction", "rectified_flow": "rectified-flow"}


def _latent_format(model) -> str:
    return type(model.model.latent_format).__name__


def run_bridge(model_a, positive_a, negative_a, cfg_a, model_b, positive_b, negative_b, cfg_b, latent: dict,
               steps: int, depth: float, scheduler: str, where: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Invert ``latent`` with model A (cfg_a) up the schedule, regenerate with model B (cfg_b).
    Returns (B's clean latent, the inverted latent, what ran), the latents in the host's LATENT
    space; the inverted one in the host's convention for a latent carrying the noise of the
    schedule's first sigma (what MIDMs DDIM Inversion Sampler gives), or, where that has no value
    (a rectified-flow model at sigma 1: the state is pure noise), the inverted noise itself. What
    ran: the steps, the top sigma and the depth it reaches (:func:`~.schedules.effective_depth`)."""
    if _latent_format(model_a) != _latent_format(model_b):
        raise NodeInputError(
            f"{where}: model_a and model_b work in different latent spaces ({_latent_format(model_a)} vs "
            f"{_latent_format(model_b)}); a bridge needs two models of one family (e.g. two SD1.5 checkpoints)")
    path_a, path_b = noise_path(model_a), noise_path(model_b)
    if path_a.kind != path_b.kind:
        raise NodeInputError(
            f"{where}: 'model_a' samples on the {_PATH_NAMES[path_a.kind]} noise path and 'model_b' on the "
            f"{_PATH_NAMES[path_b.kind]} one (a ModelSampling node on one of them changes it); a bridge needs two "
            "models on one path: give both the same ModelSampling patch, or none")
    # the model's own form: (B, C, 1, h, w) for Qwen-Image, as the host's sampling nodes make it
    samples = to_host_latent(model_a.model, to_image_latent(latent["samples"], where, "latent_image"))
    if latent.get("noise_mask") is not None:
        raise NodeInputError(f"{where}: 'latent_image' has a noise mask; a bridge inverts the whole latent (remove the "
                             "mask: connect the latent before SetLatentNoiseMask)")
    if not bool(samples.any()):
        raise NodeInputError(f"{where}: 'latent_image' is all zeros (an empty latent); connect the VAE Encode of the "
                             "image to translate")
    check_finite_latent(samples, where, "latent_image")
    check_latent_space(model_a.model, samples, where, "latent_image", "'model_a'")
    sigmas = basic_schedule(model_a, scheduler, steps, depth)
    state: dict = {}
    zeros = torch.zeros_like(samples)
    disable = not comfy.utils.PROGRESS_BAR_ENABLED
    comfy.sample.sample_custom(model_a, zeros, cfg_a, inversion_sampler(model_a, state, where), sigmas, positive_a,
                               negative_a, samples, callback=latent_preview.prepare_callback(model_a, steps),
                               disable_pbar=disable)
    out = comfy.sample.sample_custom(model_b, zeros, cfg_b, from_state_sampler(model_b, state), sigmas, positive_b,
                                     negative_b, samples, callback=latent_preview.prepare_callback(model_b, steps),
                                     disable_pbar=disable)
    alpha_top = alpha_at(path_a, sigmas[0])
    inverted = state["state"] / alpha_top if alpha_top > 1e-6 else state["state"]
    inverted = to_host_latent(model_a.model, process_out(model_a.model, inverted)).to(mm.intermediate_device())
    used = effective_depth(model_a, float(sigmas[0]))
    ran = (f"{sigmas.shape[0] - 1} steps each way to sigma {float(sigmas[0]):.4g}, depth {used:.3f} of {depth:g} "
           f"asked ({scheduler} scheduler)")
    return out, inverted, ran
