"""DDIM inversion and DDIB nodes: an inversion SAMPLER for SamplerCustom / SamplerCustomAdvanced,
an all-in-one bridge between two models (or two prompts), and a round-trip readout (the
samplers and the bridge themselves: ``host_adapters.inversion_sampler`` and ``.bridge``)."""

from __future__ import annotations

import comfy.samplers

from ..host_adapters import inversion_sampler, run_bridge
from ..host_adapters.latent_spaces import to_image_latent
from ..host_adapters.node_names import DDIB_TRANSLATE, DDIM_INVERSION_SAMPLER, DDIM_ROUND_TRIP
from ..midms_core.inversion import relative_error
from .errors import node_errors
from .types import CATEGORY


class MIDMsDDIMInversionSampler:
    DISPLAY = DDIM_INVERSION_SAMPLER

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "The model the sampling node runs (for its noise path)."})}}

    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("DDIM run backwards: to the 'sampler' input of SamplerCustom / SamplerCustomAdvanced "
                       "(add_noise off, the regenerating run's sigmas).",)
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


def _bridge_inputs(steps_default: int = 20) -> dict:
    """The schedule inputs both bridge nodes declare."""
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
    DISPLAY = DDIB_TRANSLATE

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
                                    "about 2 the inversion drifts and the structure is lost (table in benchmarks/README.md)."}),
                "cfg_b": ("FLOAT", {"default": 1.0, **cfg, "tooltip": "Guidance of the regeneration (1 = the exact "
                                    "bridge; higher pushes harder towards positive_b)."}),
            }
        }

    RETURN_TYPES = ("LATENT", "LATENT", "STRING")
    RETURN_NAMES = ("latent", "inverted_latent", "report")
    OUTPUT_TOOLTIPS = ("The translated latent (model_b's regeneration): to VAE Decode.",
                       "model_a's inversion, as MIDMs DDIM Inversion Sampler gives it: to SamplerCustom (add_noise "
                       "off, same schedule) to regenerate it another way.",
                       "The steps and the depth the schedule really reached: to a text display node.")
    FUNCTION = "translate"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Dual Diffusion Implicit Bridge (Su et al. 2023): DDIM-inverts the image with model_a / positive_a, "
                   "then regenerates the same noise with model_b / positive_b. No matching, no paired data: a whole-"
                   "domain translation (two checkpoints, or two prompts on one). inverted_latent is model_a's "
                   "inversion as MIDMs DDIM Inversion Sampler gives it (SamplerCustom with add_noise off and the same "
                   "schedule regenerates from it); a rectified-flow model inverted to sigma 1 gives its noise instead. report: the "
                   "steps and the depth the schedule really reaches.")

    @node_errors(DISPLAY)
    def translate(self, model_a, positive_a, negative_a, model_b, positive_b, negative_b, latent_image, steps, depth,
                  scheduler, cfg_a, cfg_b):
        out, inverted, ran = run_bridge(model_a, positive_a, negative_a, cfg_a, model_b, positive_b, negative_b, cfg_b,
                                        latent_image, steps, depth, scheduler, self.DISPLAY)
        report = f"DDIB: {ran}"
        print(f"[MIDMs] {report}")
        return ({"samples": out}, {"samples": inverted}, report)


class MIDMsDDIMRoundTrip:
    DISPLAY = DDIM_ROUND_TRIP

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
    OUTPUT_TOOLTIPS = ("The latent inverted and regenerated by the same model: to VAE Decode to compare with the "
                       "input.",
                       "Relative RMS error of the reconstruction in latent space (0 = exact; the worst image): to "
                       "any FLOAT input.",
                       "The error with the settings that gave it (also shown on the node): to a text display node.")
    OUTPUT_NODE = True
    FUNCTION = "round_trip"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Inverts the latent with DDIM and regenerates it with the SAME model and prompt: the reconstruction "
                   "and its relative RMS error in latent space (0 = exact; the worst image of a batch), shown on the "
                   "node. Use it to check that a model, prompt, cfg and step count invert before building a DDIB or "
                   "MIDMs graph on them; it costs a full inversion and regeneration each run.")

    @node_errors(DISPLAY)
    def round_trip(self, model, positive, negative, latent_image, steps, depth, scheduler, cfg):
        out, _, ran = run_bridge(model, positive, negative, cfg, model, positive, negative, cfg, latent_image, steps,
                                 depth, scheduler, self.DISPLAY)
        errors = relative_error(to_image_latent(out, self.DISPLAY, "latent_image").float().cpu(),
                                to_image_latent(latent_image["samples"], self.DISPLAY, "latent_image").float().cpu())
        error = float(errors.max())
        report = (f"round-trip error {error:.4f} (relative RMS in latent space{', worst image' if errors.shape[0] > 1 else ''}); "
                  f"cfg {cfg:g}, {ran}")
        if errors.shape[0] > 1:
            report += "; per image " + ", ".join(f"{float(e):.4f}" for e in errors)
        print(f"[MIDMs] {report}")
        return {"ui": {"text": [report]}, "result": ({"samples": out}, error, report)}
