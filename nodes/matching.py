"""Matcher, settings and correspondence nodes (loading the learned networks:
``host_adapters.learned_matcher``; the correspondence's warp and previews: ``host_adapters.previews``)."""

from __future__ import annotations

from ..host_adapters import MIDMsMatch, MIDMsSettings
from ..host_adapters.encode import host_latent_of_vae
from ..host_adapters.learned_matcher import load_learned_matcher, missing_networks, networks_files
from ..host_adapters.node_names import (
    CORRESPONDENCE,
    EDGE_MATCHER,
    LEARNED_MATCHER_LOADER,
    REWARP_SETTINGS,
    SOURCE_PREVIEW,
)
from ..host_adapters.previews import source_preview, warp_with_previews
from ..midms_core import (
    DEFAULT_TAU,
    DEFAULT_THRESHOLD_PX,
    EdgeDescriptorMatcher,
    WarpSettings,
    strength_timesteps,
)
from ..midms_core.alignment import ALIGNMENTS
from ..midms_core.confidence import MASK_MODES, ConfidenceSettings
from ..midms_core.matchers.edge import DEFAULT_LOCALITY, EdgeMatcherSettings
from .errors import NodeInputError, node_errors
from .types import CATEGORY, CONTEXT, MATCH, MATCHER, SETTINGS

MATCHER_OUTPUT = ("Where correspondence features come from: to the 'matcher' input of MIDMs Cross-Domain "
                  "Correspondence or MIDMs Sampler.")


class MIDMsEdgeMatcher:
    DISPLAY = EDGE_MATCHER

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "canny_low": ("FLOAT", {"default": 0.1, "min": 0.01, "max": 0.99, "step": 0.01, "tooltip": "Canny low threshold for the exemplar photo's edges."}),
                "canny_high": ("FLOAT", {"default": 0.2, "min": 0.02, "max": 1.0, "step": 0.01, "tooltip": "Canny high threshold for the exemplar photo's edges (must exceed canny_low)."}),
                "edge_blur": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 16.0, "step": 0.25, "tooltip": "Blur of both edge maps, in pixels, so thin and double lines describe alike."}),
                "x0_condition_weight": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 4.0, "step": 0.05, "tooltip": "While sampling, how much of the condition's edge features is mixed into the x0 latent's features (0 = latent only)."}),
            },
            # optional so that workflows saved before these existed still load and run (with the defaults)
            "optional": {
                "alignment": (list(ALIGNMENTS), {"default": "similarity", "tooltip": "similarity: first find the scale and shift (and mirroring) that best lay the exemplar over the condition, then match locally around it; keeps the warp coherent when the exemplar is another person or object framed differently. none: match on local features alone (the pack's earlier behaviour)."}),
                "mirror": ("BOOLEAN", {"default": True, "tooltip": "Also try the exemplar left-right mirrored (a face or object turned the other way); chosen only when clearly better."}),
                "locality": ("FLOAT", {"default": DEFAULT_LOCALITY, "min": 0.0, "max": 4.0, "step": 0.01, "tooltip": "How far a match may stray from the aligned position, as a fraction of the exemplar's size (Gaussian width); smaller = more rigid and coherent, larger = freer local matching, 0 = no locality term. Needs alignment 'similarity' (with 'none' there is no aligned position to stay near)."}),
            },
        }

    RETURN_TYPES = (MATCHER,)
    RETURN_NAMES = ("matcher",)
    OUTPUT_TOOLTIPS = (MATCHER_OUTPUT,)
    FUNCTION = "make"
    CATEGORY = CATEGORY
    DESCRIPTION = "Training-free cross-domain matching from edge maps and dense descriptors (kornia), no weights."

    @node_errors(DISPLAY)
    def make(self, canny_low, canny_high, edge_blur, x0_condition_weight, alignment="similarity", mirror=True,
             locality=DEFAULT_LOCALITY):
        if canny_high <= canny_low:
            raise NodeInputError(f"{self.DISPLAY}: 'canny_high' ({canny_high}) must be greater than 'canny_low' ({canny_low})")
        return (EdgeDescriptorMatcher(EdgeMatcherSettings(
            canny_low=canny_low, canny_high=canny_high, edge_blur=edge_blur, x0_condition_weight=x0_condition_weight,
            alignment=alignment, mirror=bool(mirror), locality=locality)),)


class MIDMsLearnedMatcherLoader:
    DISPLAY = LEARNED_MATCHER_LOADER

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "networks_name": (networks_files(), {"tooltip": "Converted MIDMs correspondence networks (.safetensors) in models/midms."}),
            }
        }

    RETURN_TYPES = (MATCHER,)
    RETURN_NAMES = ("matcher",)
    OUTPUT_TOOLTIPS = (MATCHER_OUTPUT,)
    FUNCTION = "load"
    VALIDATED_BY_NODE = ("networks_name",)  # a file list: a missing file gets its own message

    @classmethod
    def VALIDATE_INPUTS(cls, networks_name):
        # replaces the host's bare "value not in list" with where the file must go
        return missing_networks(networks_name, cls.DISPLAY) or True

    CATEGORY = CATEGORY
    DESCRIPTION = "Loads the paper's learned correspondence networks (F_X, F_Y, F') from models/midms."

    @node_errors(DISPLAY)
    def load(self, networks_name):
        return (load_learned_matcher(networks_name, self.DISPLAY),)


def parse_steps(text: str, where: str) -> tuple[int, ...] | None:
    """'' -> None (default choice), 'none' -> (), '1, 2' -> (1, 2)."""
    text = text.strip().lower()
    if text in ("", "default", "auto"):
        return None
    if text == "none":
        return ()
    try:
        steps = tuple(int(part) for part in text.replace(";", ",").split(",") if part.strip())
    except ValueError:
        raise NodeInputError(
            f"{where}: 'rewarp_steps' must be empty (every step but the last), 'none', or step numbers like '1, 2'; got {text!r}"
        ) from None
    if any(s < 0 for s in steps):
        raise NodeInputError(f"{where}: 'rewarp_steps' must be step numbers >= 0 (0 is the first step); got {text!r}")
    return steps


class MIDMsRewarpSettings:
    DISPLAY = REWARP_SETTINGS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tau": ("FLOAT", {"default": DEFAULT_TAU, "min": 0.0005, "max": 1.0, "step": 0.0005, "tooltip": "Softmax temperature of the warp; lower is sharper (official 0.005)."}),
                "threshold": ("FLOAT", {"default": DEFAULT_THRESHOLD_PX, "min": 0.1, "max": 512.0, "step": 0.05, "tooltip": "Cycle-consistency threshold in latent pixels: a position is confident when matching there and back lands within it (official 15.75 at 64x64 latents)."}),
                "mask_mode": (list(MASK_MODES), {"default": "hard", "tooltip": "hard: 0/1 mask (official); soft: falls off smoothly around the threshold."}),
                "smooth_mask": ("BOOLEAN", {"default": True, "tooltip": "Official clean-up of the hard mask: keep 2x2 blocks with at least 3 confident positions."}),
                "rewarp_steps": ("STRING", {"default": "", "tooltip": "Steps (0-based) that re-match and re-warp: empty = every step but the last, 'none' = never (plain DDIM), or a list like '1, 2' (the official choice for 4 steps)."}),
                "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "DDIM stochasticity: 0 deterministic, 1 ancestral-like."}),
                "refine_strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Final refinement: re-noise the result to this level and denoise again (0 = off; paper about 0.1)."}),
                "refine_steps": ("INT", {"default": 20, "min": 1, "max": 200, "tooltip": "Steps of the final refinement (stochastic DDIM, eta 1)."}),
            }
        }

    RETURN_TYPES = (SETTINGS,)
    RETURN_NAMES = ("settings",)
    OUTPUT_TOOLTIPS = ("Re-warp schedule, confidence and refinement: to the 'settings' input of MIDMs Cross-Domain "
                       "Correspondence or MIDMs Sampler.",)
    FUNCTION = "make"
    CATEGORY = CATEGORY
    DESCRIPTION = "How the interleaved sampler re-matches, masks and blends the exemplar at each step."

    @node_errors(DISPLAY)
    def make(self, tau, threshold, mask_mode, smooth_mask, rewarp_steps, eta, refine_strength, refine_steps):
        if not isinstance(smooth_mask, bool):  # the 2024 host passes a BOOLEAN input's value as it came
            raise NodeInputError(f"{self.DISPLAY}: 'smooth_mask' must be true or false, got {smooth_mask!r}")
        confidence = ConfidenceSettings(threshold=threshold, mask_mode=mask_mode, smooth=smooth_mask)
        rewarp = WarpSettings(tau=tau, confidence=confidence, rewarp_steps=parse_steps(rewarp_steps, self.DISPLAY))
        if refine_strength > 0:
            # checked here, not mid-sampling: the refinement's steps must fit in its noise range
            # (the host models' 1000-step schedules)
            try:
                strength_timesteps(1000, refine_steps, refine_strength)
            except ValueError:
                raise NodeInputError(
                    f"{self.DISPLAY}: 'refine_steps' {refine_steps} do not fit in 'refine_strength' {refine_strength} "
                    f"of a 1000-step schedule; use at most {max(int(refine_strength * 1000), 1)} steps or a higher strength"
                ) from None
        return (MIDMsSettings(rewarp=rewarp, eta=eta, refine_strength=refine_strength, refine_steps=refine_steps),)


class MIDMsCorrespondence:
    DISPLAY = CORRESPONDENCE

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "context": (CONTEXT, {"tooltip": "From MIDMs Exemplar Encode."}),
                "matcher": (MATCHER, {"tooltip": "Where correspondence features come from (edge matcher or learned networks)."}),
            },
            "optional": {
                "settings": (SETTINGS, {"tooltip": "Temperature, threshold and sampling settings; defaults as in the paper when absent."}),
            },
        }

    RETURN_TYPES = (MATCH, "LATENT", "MASK", "IMAGE", "IMAGE")
    RETURN_NAMES = ("match", "warped_latent", "confidence", "warped_preview", "flow_preview")
    OUTPUT_TOOLTIPS = ("The matched pair with its matcher and settings: to MIDMs Interleaved DDIM Sampler or "
                       "MIDMs Exemplar Source Preview.",
                       "The exemplar's latent warped onto the condition: the 'latent_image' of the sampling node.",
                       "Where the warp is cycle-consistent (white) and kept: to a mask node or Preview as mask.",
                       "The warped latent decoded: to Preview Image.",
                       "Where each position came from (hue: direction, brightness: distance): to Preview Image.")
    FUNCTION = "correspond"
    CATEGORY = CATEGORY
    DESCRIPTION = "Matches the exemplar to the condition, warps the exemplar's latent onto the condition's layout and marks the cycle-consistent regions."

    @node_errors(DISPLAY)
    def correspond(self, context, matcher, settings=None):
        match = MIDMsMatch(context=context, matcher=matcher, settings=settings or MIDMsSettings())
        warped, mask, preview, flow = warp_with_previews(match)
        return (match, {"samples": host_latent_of_vae(context.vae, warped)}, mask, preview, flow)


class MIDMsSourcePreview:
    DISPLAY = SOURCE_PREVIEW

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"match": (MATCH, {"tooltip": "From MIDMs Cross-Domain Correspondence."})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("source_preview",)
    OUTPUT_TOOLTIPS = ("Which exemplar each position comes from, one colour each (black: none may serve): to "
                       "Preview Image.",)
    FUNCTION = "preview"
    CATEGORY = CATEGORY
    DESCRIPTION = "Which exemplar each condition position takes its appearance from: a colour per exemplar (hues spaced around the colour wheel from red: two exemplars are red and cyan), mixed where a position draws on several, black where none may serve."

    @node_errors(DISPLAY)
    def preview(self, match):
        return (source_preview(match),)
