"""The DIFT-style matcher node: the host's own model's features of one block, U-Net or DiT.

Defaults and where they come from:

* U-Nets (SD1.x/2.x, SDXL): timestep 261 and the block: DIFT (Tang et al. 2023) for semantic
  correspondence with SD 2.1, the feature map of diffusers' ``up_ft_index`` 1, i.e. the input of
  LDM/ComfyUI output block 6. The same index is block 6 in SDXL (three up levels of three
  blocks: 0-2, 3-5, 6-8), where it is 640 channels at the full latent grid; DIFT did not evaluate
  SDXL, so that default is the analogous block, not a measured optimum. SD1.5 shares SD 2.1's
  layout (1280 channels at half the latent grid).
* DiTs (Flux, SD3.x): DiTF (Gan et al. 2025; ``midms_core.matchers.dit``): the input of block 28
  of Flux-dev's 57 (double blocks counted first: single block 9), normalised by that block's
  own AdaLN, massive channels zeroed, at noise share t / 1000 = 0.26 (the widget's 261 is within
  one step of DiTF's 260), guidance 3.5 (the host's default). No published choice exists for SD3
  that we could find; its default is the block at the same share of the stack (SD3 medium: 12
  of 24, SD3.5 large: 19 of 38), an analogy, not a measurement (no real weights here).
* ensemble 1: DIFT averages 8 noise draws; each costs a model pass per image, and the pack binds
  once per run, so 1 keeps CPU runs usable. Raise it on a GPU.
* empty prompt: DIFT's; unconnected, a zero context is used (see
  ``host_adapters.text_conditioning``).

The matcher itself (model passes, block capture): ``host_adapters.diffusion_matcher``.
"""

from __future__ import annotations

from ..host_adapters import HostDiffusionMatcher
from ..host_adapters.node_names import DIFFUSION_MATCHER
from ..midms_core.matchers.diffusion import DIFT_TIMESTEP, DiffusionMatcherSettings
from .errors import node_errors
from .types import CATEGORY, MATCHER


class MIDMsDiffusionFeatureMatcher:
    DISPLAY = DIFFUSION_MATCHER  # its errors while sampling name it too

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The checkpoint's model whose features are matched (usually the one you sample with; then re-matching inside the sampler reuses its model pass). U-Nets (SD1.x/2.x, SDXL) and DiTs (Flux, SD3.x)."}),
                "timestep": ("INT", {"default": DIFT_TIMESTEP, "min": 0, "max": 999, "tooltip": "Noise level (of 1000) the condition and exemplar latents are noised to before the model pass. U-Nets: a step of the model's schedule (DIFT: 261). Flux / SD3: the noise share t / 1000 without the schedule's shift (DiTF: 260)."}),
                "output_block": ("INT", {"default": 6, "min": 0, "max": 64, "tooltip": "U-Nets only: the output block whose INPUT features are matched, in LDM/ComfyUI numbering. 6 = the output of DIFT's up_ft_index 1 in every SD layout: SD1.5/2.x 1280 channels at half the latent grid, SDXL 640 channels at the latent grid. Features are resized to the latent grid."}),
                "ensemble": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Noise draws averaged per image (DIFT uses 8; each costs one model pass)."}),
            },
            "optional": {
                "cross_domain_matcher": (MATCHER, {"tooltip": "Optional matcher for the FIRST, cross-domain match (condition against exemplar), e.g. the Edge Matcher: model features of an edge or label map are not photo features. The re-matches while sampling still use this node's model features. Unconnected: model features of the condition's latent."}),
                "empty_prompt": ("CONDITIONING", {"tooltip": "Optional: the checkpoint's text encoding of an empty text (DIFT's prompt). Unconnected: an all-zero text context (and zero pooled output where the model takes one), which is close but not identical."}),
                "dit_block": ("INT", {"default": -1, "min": -1, "max": 255, "tooltip": "DiTs only (Flux, SD3.x): the transformer block whose input image tokens are matched, counted in the order they run (Flux: its double blocks first, then its single blocks; SD3: its joint blocks), normalised by that block's own AdaLN (DiTF). -1: the default, DiTF's block 28 of Flux-dev's 57 (single block 9) and the block at the same share of the stack for other depths (SD3 medium: 12 of 24)."}),
            },
        }

    RETURN_TYPES = (MATCHER,)
    RETURN_NAMES = ("matcher",)
    OUTPUT_TOOLTIPS = ("Features from this model's own block: to the 'matcher' input of MIDMs Cross-Domain "
                       "Correspondence or MIDMs Sampler.",)
    FUNCTION = "make"
    CATEGORY = CATEGORY
    DESCRIPTION = "Training-free matching with the model's own features (DIFT for U-Nets, DiTF for Flux / SD3): no extra weights; inside the sampler the x0 side reuses each step's model pass."

    @node_errors(DISPLAY)
    def make(self, model, timestep, output_block, ensemble, cross_domain_matcher=None, empty_prompt=None, dit_block=-1):
        return (HostDiffusionMatcher(model, timestep, output_block, DiffusionMatcherSettings(ensemble=ensemble),
                                     cross_domain=cross_domain_matcher, empty_prompt=empty_prompt, dit_block=dit_block),)
