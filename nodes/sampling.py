"""The interleaved DDIM sampler nodes: a host SAMPLER (for SamplerCustom / SamplerCustomAdvanced
and any guider) and an all-in-one sampler; the sampling itself: ``host_adapters.interleaved_sampler``."""

from __future__ import annotations

from ..host_adapters import (
    START_MODES,
    MIDMsMatch,
    MIDMsSettings,
    midms_sampler,
    sample_all_in_one,
)
from ..host_adapters.node_names import INTERLEAVED_SAMPLER, SAMPLER
from .errors import node_errors
from .types import CATEGORY, CONTEXT, MATCHER, SETTINGS


class MIDMsInterleavedSampler:
    DISPLAY = INTERLEAVED_SAMPLER

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The same model the sampler runs; used for its latent scaling."}),
                "match": ("MIDMS_MATCH", {"tooltip": "From MIDMs Cross-Domain Correspondence."}),
            }
        }

    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("The interleaved DDIM sampler for this match: to the 'sampler' input of SamplerCustom / "
                       "SamplerCustomAdvanced.",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = "A SAMPLER for SamplerCustom: DDIM that re-matches x0 to the exemplar at each step and blends the confident re-warp into x0. Feed the correspondence node's warped latent as latent_image and a partial schedule (e.g. denoise 0.25)."

    @node_errors(DISPLAY)
    def get_sampler(self, model, match):
        return (midms_sampler(model, match),)


class MIDMsSampler:
    DISPLAY = SAMPLER

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Any checkpoint's model (SD1.5, SDXL, ...), with LoRAs if you like."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt (and ControlNets) for the result."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt."}),
                "context": (CONTEXT, {"tooltip": "From MIDMs Exemplar Encode."}),
                "matcher": (MATCHER, {"tooltip": "Where correspondence features come from."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Noise seed."}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 1000, "tooltip": "Denoising steps from the start noise level (official 4)."}),
                "start_noise": ("FLOAT", {"default": 0.25, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "How far the warped exemplar is noised, as a fraction of the schedule (paper: 0.25 best)."}),
                "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01, "tooltip": "Classifier-free guidance scale."}),
            },
            "optional": {
                "settings": (SETTINGS, {"tooltip": "Re-warp settings; paper defaults when absent."}),
                "start": (START_MODES, {"default": "noise", "tooltip": "How the warped exemplar reaches start_noise: "
                          "'noise' adds seeded random noise (the paper); 'ddim inversion' runs DDIM backwards from "
                          "it with this model at cfg 1: deterministic (the seed only matters with eta > 0 or a "
                          "refinement), and with re-warping off at cfg 1 it regenerates the warp itself (within the "
                          "inversion error)."}),
            },
        }

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("latent", "warped_latent")
    OUTPUT_TOOLTIPS = ("The result: to VAE Decode.",
                       "The first warp before noising (what the run started from): to VAE Decode to compare.")
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = "Warps the exemplar onto the condition, noises it to start_noise and denoises it with the interleaved DDIM sampler."

    @node_errors(DISPLAY)
    def sample(self, model, positive, negative, context, matcher, seed, steps, start_noise, cfg, settings=None,
               start="noise"):
        match = MIDMsMatch(context=context, matcher=matcher, settings=settings or MIDMsSettings())
        samples, warped = sample_all_in_one(model, positive, negative, match, seed, steps, start_noise, cfg, start,
                                            self.DISPLAY)
        return ({"samples": samples}, {"samples": warped})
