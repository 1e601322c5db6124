"""DDIM inversion and DDIB nodes: an inversion SAMPLER for SamplerCustom / SamplerCustomAdvanced,
an all-in-one bridge between two models (or two prompts), and a round-trip readout."""

from __future__ import annotations

from typing import Optional

import torch

from types import SimpleNamespace

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..midms_core import invert_ddim, inversion_sigmas, relative_error, sample_ddim
from .common import CATEGORY, NodeInputError, interruptible, node_errors, noise_path

INVERSION_WHERE = "MIDMs DDIM Inversion Sampler (run by the sampling node it is connected to)"


def _host_callback(callback, steps: int):
    """The host's interrupt check, then its progress / preview callback (k-diffusion dicts)."""

    def report(info):
        mm.throw_exception_if_processing_interrupted()
        if callback is not None:
            callback({**info, "sigma_hat": info["sigma"], "i": min(info["i"], steps - 1)})

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


def _sampling_path(model, fallback):
    """The noise path of the model a KSAMPLER function is handed (KSamplerX0Inpaint -> the host's
    model wrapper -> its BaseModel), else of ``fallback`` (a ModelPatcher)."""
    base = getattr(getattr(model, "inner_model", None), "inner_model", None)
    return noise_path(base if hasattr(base, "model_sampling") else fallback.model)


def _alpha(path, sigma) -> float:
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
    receives the raw state, which the bridge nodes use directly."""
    extra_args = {} if extra_args is None else extra_args
    where = midms_where
    if extra_args.get("denoise_mask") is not None:
        raise NodeInputError(f"{where}: a noise mask is set on the latent; invert the whole latent (remove the mask)")
    _check_descending(sigmas, where)
    path = _sampling_path(model, midms_model)
    top = sigmas[0]
    alpha_top = _alpha(path, top)
    if midms_state is None and alpha_top <= 1e-6:
        raise NodeInputError(
            f"{where}: this rectified-flow model's schedule starts at sigma {float(top):g}, where a latent is pure noise "
            "and the host cannot pass it to the next sampler as a LATENT; invert part-way (a schedule that starts below "
            "1: BasicScheduler's denoise below steps / (steps + 1), e.g. 0.9 at 20 steps) or use MIDMs DDIB "
            "Translate, which carries the full inversion itself")
    clean = _clean_latent(model, where).to(x.dtype)

    def denoise(xt, sigma):
        return model(xt, sigma, **extra_args)

    with interruptible():
        state = invert_ddim(denoise, clean, inversion_sigmas(sigmas), path, _host_callback(callback, sigmas.shape[0] - 1))
    if midms_state is not None:
        midms_state["state"] = state
        return clean  # the bridge reads midms_state; this return value is not used
    return state / alpha_top


@torch.no_grad()
def sample_from_state(model, x, sigmas, extra_args=None, callback=None, disable=None, midms_model=None,
                      midms_state: Optional[dict] = None):
    """KSAMPLER function: DDIM (eta 0) down ``sigmas`` from the raw state the inversion left in
    ``midms_state`` (internal to the bridge nodes), ignoring the host's start latent ``x``."""
    extra_args = {} if extra_args is None else extra_args
    state = midms_state["state"].to(device=x.device, dtype=x.dtype)

    def denoise(xt, sigma):
        return model(xt, sigma, **extra_args)

    with interruptible():
        return sample_ddim(denoise, state, sigmas, 0.0, callback=_host_callback(callback, sigmas.shape[0] - 1),
                           path=_sampling_path(model, midms_model))


def inversion_sampler(model, state: Optional[dict] = None, where: str = INVERSION_WHERE) -> comfy.samplers.KSAMPLER:
    """The inversion as a host SAMPLER; ``state`` (internal) receives the raw top state and
    ``where`` names the node in its errors."""
    return comfy.samplers.KSAMPLER(sample_inversion, extra_options={"midms_model": model, "midms_state": state,
                                                                      "midms_where": where})


class MIDMsDDIMInversionSampler:
    DISPLAY = "MIDMs DDIM Inversion Sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "The model the sampling node runs (for its noise path)."})}}

    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = ("A SAMPLER that runs DDIM backwards: the clean latent goes UP the schedule to the noise that "
                   "regenerates it. Connect the same SIGMAS you give the regenerating sampler (no FlipSigmas), turn "
                   "add_noise off, and keep cfg at 1 (inversion with guidance drifts). The output LATENT carries "
                   "the noise of the schedule's first sigma: feed it to SamplerCustom with add_noise off and the "
                   "same sigmas (euler or ddim) to regenerate.")

    @node_errors(DISPLAY)
    def get_sampler(self, model):
        return (inversion_sampler(model),)


def _model_sampling(model):
    """The model sampling the host will run (with a ModelSamplingDiscrete / -Flux patch applied)."""
    get = getattr(model, "get_model_object", None)
    if get is not None:
        return get("model_sampling")
    return model.object_patches.get("model_sampling", model.model.model_sampling)  # the 2024 host


def _schedule(model, scheduler: str, steps: int, depth: float) -> torch.Tensor:
    """What the host's BasicScheduler gives for (scheduler, steps, denoise = depth): ``steps``
    steps over the last ``depth`` of a schedule of int(steps / depth) steps (made here from the
    host's scheduler functions, not by calling that node, whose class is not a stable API)."""
    total = steps if depth >= 1.0 else int(steps / depth)
    sampling = _model_sampling(model)
    calculate = getattr(comfy.samplers, "calculate_sigmas", None)
    if calculate is not None:
        sigmas = calculate(sampling, scheduler, total)
    else:  # the 2024 host's scheduler functions read model.model_sampling
        sigmas = comfy.samplers.calculate_sigmas_scheduler(SimpleNamespace(model_sampling=sampling), scheduler, total)
    return sigmas.cpu()[-(steps + 1):]


def _latent_format(model) -> str:
    return type(model.model.latent_format).__name__


def run_bridge(model_a, positive_a, negative_a, cfg_a, model_b, positive_b, negative_b, cfg_b, latent: dict,
               steps: int, depth: float, scheduler: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``latent`` with model A (cfg_a) up the schedule, regenerate with model B (cfg_b).
    Returns (B's clean latent, the inverted latent), both in the host's LATENT space; the inverted
    one in the host's convention for a latent carrying the noise of the schedule's first sigma
    (what MIDMs DDIM Inversion Sampler gives), or, where that has no value (a rectified-flow
    model at sigma 1: the state is pure noise), the inverted noise itself."""
    if _latent_format(model_a) != _latent_format(model_b):
        raise NodeInputError(
            f"{where}: model_a and model_b work in different latent spaces ({_latent_format(model_a)} vs "
            f"{_latent_format(model_b)}); a bridge needs two models of one family (e.g. two SD1.5 checkpoints)")
    if noise_path(model_a.model).kind != noise_path(model_b.model).kind:
        raise NodeInputError(f"{where}: model_a and model_b sample on different noise paths; use two models of one family")
    samples = latent["samples"]
    if latent.get("noise_mask") is not None:
        raise NodeInputError(f"{where}: 'latent_image' has a noise mask; a bridge inverts the whole latent (remove the "
                             "mask: connect the latent before SetLatentNoiseMask)")
    if not bool(samples.any()):
        raise NodeInputError(f"{where}: 'latent_image' is all zeros (an empty latent); connect the VAE Encode of the "
                             "image to translate")
    sigmas = _schedule(model_a, scheduler, steps, depth)
    state: dict = {}
    zeros = torch.zeros_like(samples)
    disable = not comfy.utils.PROGRESS_BAR_ENABLED
    comfy.sample.sample_custom(model_a, zeros, cfg_a, inversion_sampler(model_a, state, where), sigmas, positive_a,
                               negative_a, samples, callback=latent_preview.prepare_callback(model_a, steps),
                               disable_pbar=disable)
    regenerate = comfy.samplers.KSAMPLER(sample_from_state, extra_options={"midms_model": model_b, "midms_state": state})
    out = comfy.sample.sample_custom(model_b, zeros, cfg_b, regenerate, sigmas, positive_b, negative_b, samples,
                                     callback=latent_preview.prepare_callback(model_b, steps), disable_pbar=disable)
    alpha_top = _alpha(noise_path(model_a.model), sigmas[0])
    inverted = state["state"] / alpha_top if alpha_top > 1e-6 else state["state"]
    inverted = model_a.model.process_latent_out(inverted).to(mm.intermediate_device())
    return out, inverted


def _bridge_inputs(steps_default: int = 20) -> dict:
    return {
        "steps": ("INT", {"default": steps_default, "min": 1, "max": 1000,
                          "tooltip": "DDIM steps each way; more steps invert more exactly."}),
        "depth": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                            "tooltip": "How far up the schedule to invert (as the scheduler's denoise): 1 = to pure "
                                       "noise (DDIB), lower keeps more of the input (SDEdit-like)."}),
        "scheduler": (comfy.samplers.SCHEDULER_NAMES, {"default": "normal" if "normal" in comfy.samplers.SCHEDULER_NAMES
                                                       else comfy.samplers.SCHEDULER_NAMES[0],
                                                       "tooltip": "The host's scheduler for the schedule."}),
    }


class MIDMsDDIBTranslate:
    DISPLAY = "MIDMs DDIB Translate"

    @classmethod
    def INPUT_TYPES(cls):
        cfg = {"min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}
        return {
            "required": {
                "model_a": ("MODEL", {"tooltip": "Source model: inverts the input to noise."}),
                "positive_a": ("CONDITIONING", {"tooltip": "Prompt describing the INPUT (source domain)."}),
                "negative_a": ("CONDITIONING", {"tooltip": "Negative prompt of the inversion (unused at cfg_a 1)."}),
                "model_b": ("MODEL", {"tooltip": "Target model: regenerates from the noise (may be model_a)."}),
                "positive_b": ("CONDITIONING", {"tooltip": "Prompt describing the OUTPUT (target domain)."}),
                "negative_b": ("CONDITIONING", {"tooltip": "Negative prompt of the regeneration."}),
                "latent_image": ("LATENT", {"tooltip": "The VAE-encoded image to translate."}),
                **_bridge_inputs(),
                "cfg_a": ("FLOAT", {"default": 1.0, **cfg, "tooltip": "Guidance of the inversion. Keep 1: above "
                                    "about 2 the inversion drifts and the structure is lost (README table)."}),
                "cfg_b": ("FLOAT", {"default": 1.0, **cfg, "tooltip": "Guidance of the regeneration (1 = the exact "
                                    "bridge; higher pushes harder towards positive_b)."}),
            }
        }

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("latent", "inverted_latent")
    FUNCTION = "translate"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Dual Diffusion Implicit Bridge (Su et al. 2023): DDIM-inverts the image with model_a / positive_a, "
                   "then regenerates the same noise with model_b / positive_b. No matching, no paired data: a whole-"
                   "domain translation (two checkpoints, or two prompts on one). inverted_latent is model_a's "
                   "inversion as MIDMs DDIM Inversion Sampler gives it (SamplerCustom with add_noise off and the same "
                   "schedule regenerates from it); a rectified-flow model inverted to sigma 1 gives its noise instead.")

    @node_errors(DISPLAY)
    def translate(self, model_a, positive_a, negative_a, model_b, positive_b, negative_b, latent_image, steps, depth,
                  scheduler, cfg_a, cfg_b):
        out, inverted = run_bridge(model_a, positive_a, negative_a, cfg_a, model_b, positive_b, negative_b, cfg_b,
                                   latent_image, steps, depth, scheduler, self.DISPLAY)
        return ({"samples": out}, {"samples": inverted})


class MIDMsDDIMRoundTrip:
    DISPLAY = "MIDMs DDIM Round Trip"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model whose inversion is checked."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt used both ways."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt used both ways (unused at cfg 1)."}),
                "latent_image": ("LATENT", {"tooltip": "The VAE-encoded image to invert and regenerate."}),
                **_bridge_inputs(),
                "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance both ways; 1 inverts best."}),
            }
        }

    RETURN_TYPES = ("LATENT", "FLOAT", "STRING")
    RETURN_NAMES = ("reconstruction", "error", "report")
    OUTPUT_NODE = True
    FUNCTION = "round_trip"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Inverts the latent with DDIM and regenerates it with the SAME model and prompt: the reconstruction "
                   "and its relative RMS error in latent space (0 = exact; the worst image of a batch), shown on the "
                   "node. Use it to check that a model, prompt, cfg and step count invert before building a DDIB or "
                   "MIDMs graph on them; it costs a full inversion and regeneration each run.")

    @node_errors(DISPLAY)
    def round_trip(self, model, positive, negative, latent_image, steps, depth, scheduler, cfg):
        out, _ = run_bridge(model, positive, negative, cfg, model, positive, negative, cfg, latent_image, steps, depth,
                            scheduler, self.DISPLAY)
        errors = relative_error(out.float().cpu(), latent_image["samples"].float().cpu())
        error = float(errors.max())
        report = (f"round-trip error {error:.4f} (relative RMS in latent space{', worst image' if errors.shape[0] > 1 else ''}; "
                  f"{steps} steps, depth {depth:g}, cfg {cfg:g}, {scheduler})")
        if errors.shape[0] > 1:
            report += "; per image " + ", ".join(f"{float(e):.4f}" for e in errors)
        print(f"[MIDMs] {report}")
        return {"ui": {"text": [report]}, "result": ({"samples": out}, error, report)}
