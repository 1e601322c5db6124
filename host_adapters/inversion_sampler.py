"""DDIM inversion as a host KSAMPLER (up the run's schedule), and its counterpart that samples
down from the state an inversion left (the bridge's second half)."""

from __future__ import annotations

from typing import Optional

import torch

import comfy.model_management as mm
import comfy.samplers

from ..midms_core import inversion_sigmas, invert_ddim, sample_ddim
from .devices import interruptible
from .errors import NodeInputError
from .node_names import DDIB_TRANSLATE, DDIM_INVERSION_SAMPLER, RUN_BY_SAMPLING_NODE
from .latent_spaces import check_finite_latent, check_latent_space, to_image_latent
from .noise_paths import base_in_call, sampling_path

INVERSION_WHERE = f"{DDIM_INVERSION_SAMPLER} {RUN_BY_SAMPLING_NODE}"


def host_callback(callback, steps: int, video: bool = False):
    """The host's interrupt check, then its progress / preview callback (k-diffusion dicts; with
    ``video`` the latents get back the frame axis of a video-latent model's form)."""

    def report(info):
        mm.throw_exception_if_processing_interrupted()
        if callback is not None:
            shown = {k: info[k].unsqueeze(2) for k in ("x", "denoised") if k in info} if video else {}
            callback({**info, **shown, "sigma_hat": info["sigma"], "i": min(info["i"], steps - 1)})

    return report


def _clean_latent(model, where: str) -> torch.Tensor:
    """The clean latent the host handed the sampler (model-scaled), refused when the host added
    noise to it or when it is an empty latent."""
    clean = getattr(model, "latent_image", None)
    noise = getattr(model, "noise", None)
    if clean is None:
        raise NodeInputError(f"{where}: the host gave no latent_image; connect the latent to invert")
    if noise is not None and bool((noise != 0).any()):
        raise NodeInputError(
            f"{where}: the sampling node added noise to the latent; an inversion starts from the clean latent: set "
            "'add_noise' to disable (SamplerCustom) or connect DisableNoise as 'noise' (SamplerCustomAdvanced)")
    if not bool(clean.any()):
        raise NodeInputError(f"{where}: 'latent_image' is all zeros (an empty latent); connect the VAE Encode of the "
                             "image to invert")
    return clean


def _check_descending(sigmas: torch.Tensor, where: str) -> None:
    if sigmas.shape[0] < 2:
        raise NodeInputError(f"{where}: 'sigmas' has {sigmas.shape[0]} value(s); connect a schedule with at least 1 step")
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise NodeInputError(
            f"{where}: 'sigmas' go up ({[round(float(s), 4) for s in sigmas[:4]]}...); connect the ordinary sampling "
            "schedule (e.g. BasicScheduler, the same one the regenerating sampler gets) without FlipSigmas: this "
            "sampler walks it upward itself")
    if float(sigmas[-1]) != 0.0:
        raise NodeInputError(f"{where}: 'sigmas' end at {float(sigmas[-1]):.4g}, not 0; the inversion starts from a "
                             "clean latent, so connect a schedule that ends at 0 (any scheduler with its own steps)")


def alpha_at(path, sigma) -> float:
    """The path's alpha(sigma) as a float (x = alpha x0 + sigma eps)."""
    return float(path.alpha(torch.tensor(float(sigma), dtype=torch.float64)))  # float64 on the CPU (not on MPS)


@torch.no_grad()
def sample_inversion(model, x, sigmas, extra_args=None, callback=None, disable=None, midms_model=None,
                     midms_state: Optional[dict] = None, midms_where: str = INVERSION_WHERE):
    """KSAMPLER function: DDIM-inverts the host's clean latent up the run's (descending) schedule
    to sigmas[0] with the host's guided denoiser ``model``.

    Returns the inverted state in the host's convention for a latent that still carries noise at
    sigmas[0], so that a sampler given the same schedule without added noise starts exactly
    there: the host scales such a latent by alpha(sigma) (1 for epsilon / v-prediction models,
    1 - sigma for rectified flow), so it is stored divided by alpha. ``midms_state`` (internal)
    receives the raw state, which the bridge nodes use directly.

    This runs inside the host's sampling node, so ValueErrors of midms_core are reported as
    NodeInputErrors naming this sampler; errors raised inside the host's model call pass as
    they are."""
    in_host_model = [False]
    try:
        return _sample_inversion(model, x, sigmas, extra_args, callback, midms_model, midms_state, midms_where,
                                 in_host_model)
    except NodeInputError:
        raise
    except ValueError as err:
        if in_host_model[0]:
            raise
        raise NodeInputError(f"{midms_where}: {err}") from err


def _sample_inversion(model, x, sigmas, extra_args, callback, midms_model, midms_state, where, in_host_model):
    extra_args = {} if extra_args is None else extra_args
    if extra_args.get("denoise_mask") is not None:
        raise NodeInputError(f"{where}: a noise mask is set on the latent; invert the whole latent (remove the mask)")
    _check_descending(sigmas, where)
    path = sampling_path(model, midms_model)
    top = sigmas[0]
    alpha_top = alpha_at(path, top)
    if midms_state is None and alpha_top <= 1e-6:
        raise NodeInputError(
            f"{where}: this rectified-flow model's schedule starts at sigma {float(top):g}, where a latent is pure noise "
            "and the host cannot pass it to the next sampler as a LATENT; invert part-way (a schedule that starts below "
            f"1: BasicScheduler's denoise below steps / (steps + 1), e.g. 0.9 at 20 steps) or use {DDIB_TRANSLATE}, "
            "which carries the full inversion itself")
    clean = _clean_latent(model, where).to(x.dtype)
    check_finite_latent(clean, where, "latent_image")
    check_latent_space(base_in_call(model, midms_model), clean, where, "latent_image")
    # a video VAE's model (Qwen-Image) samples (B, C, 1, h, w): the steps run on (B, C, h, w)
    video = clean.dim() == 5
    clean = to_image_latent(clean, where, "latent_image")

    def denoise(xt, sigma):
        in_host_model[0] = True
        out = model(xt.unsqueeze(2) if video else xt, sigma, **extra_args)
        in_host_model[0] = False
        return out[:, :, 0] if video else out

    print(f"[MIDMs] {where}: DDIM inversion, {sigmas.shape[0] - 1} steps up to sigma {float(top):.4g}")
    with interruptible():
        state = invert_ddim(denoise, clean, inversion_sigmas(sigmas), path,
                            host_callback(callback, sigmas.shape[0] - 1, video))
    if midms_state is not None:
        midms_state["state"] = state  # (B, C, h, w)
        return clean.unsqueeze(2) if video else clean  # the bridge reads midms_state; this value is not used
    out = state / alpha_top
    return out.unsqueeze(2) if video else out


@torch.no_grad()
def sample_from_state(model, x, sigmas, extra_args=None, callback=None, disable=None, midms_model=None,
                      midms_state: Optional[dict] = None):
    """KSAMPLER function: DDIM (eta 0) down ``sigmas`` from the raw state the inversion left in
    ``midms_state`` (internal to the bridge nodes), ignoring the host's start latent ``x``."""
    extra_args = {} if extra_args is None else extra_args
    state = midms_state["state"].to(device=x.device, dtype=x.dtype)  # (B, C, h, w)
    video = x.dim() == 5  # a video VAE's model (Qwen-Image) samples (B, C, 1, h, w)

    def denoise(xt, sigma):
        out = model(xt.unsqueeze(2) if video else xt, sigma, **extra_args)
        return out[:, :, 0] if video else out

    with interruptible():
        out = sample_ddim(denoise, state, sigmas, 0.0, callback=host_callback(callback, sigmas.shape[0] - 1, video),
                          path=sampling_path(model, midms_model))
    return out.unsqueeze(2) if video else out


def inversion_sampler(model, state: Optional[dict] = None, where: str = INVERSION_WHERE) -> comfy.samplers.KSAMPLER:
    """The inversion as a host SAMPLER; ``state`` (internal) receives the raw top state and
    ``where`` names the node in its errors."""
    return comfy.samplers.KSAMPLER(sample_inversion, extra_options={"midms_model": model, "midms_state": state,
                                                                      "midms_where": where})


def from_state_sampler(model, state: dict) -> comfy.samplers.KSAMPLER:
    """DDIM down from ``state["state"]`` (what :func:`inversion_sampler` left there) as a host SAMPLER."""
    return comfy.samplers.KSAMPLER(sample_from_state, extra_options={"midms_model": model, "midms_state": state})
