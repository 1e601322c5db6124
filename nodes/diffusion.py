"""DIFT-style matcher from the host's own U-Net: features of one output block of the model.

Defaults and where they come from:

* timestep 261 and the block: DIFT (Tang et al. 2023) for semantic correspondence with SD 2.1,
  the feature map of diffusers' ``up_ft_index`` 1, i.e. the input of LDM/ComfyUI output block 6.
  The same index is block 6 in SDXL (three up levels of three blocks: 0-2, 3-5, 6-8), where it is
  640 channels at the full latent grid; DIFT did not evaluate SDXL, so that default is the
  analogous block, not a measured optimum. SD1.5 shares SD 2.1's layout (1280 channels at half
  the latent grid).
* ensemble 1: DIFT averages 8 noise draws; each costs a U-Net pass per image, and the pack binds
  once per run, so 1 keeps CPU runs usable. Raise it on a GPU.
* empty prompt: DIFT's; unconnected, a zero context is used (see ``HostDiffusionMatcher``).
"""

from __future__ import annotations

import copy

import torch

import comfy.model_management as mm

from ..midms_core import DiffusionFeatureMatcher, FeatureCapture
from ..midms_core.diffusion_matcher import DIFT_TIMESTEP
from .common import CATEGORY, NodeInputError, node_errors
from .types import MATCHER

COND = 0  # comfy.samplers.calc_cond_uncond_batch marks cond chunks 0, uncond chunks 1
POOLED_DIM = 1280  # SDXL-family pooled CLIP-G output (zeros: the empty prompt)


def block_capture(output_block: int, record):
    """An output_block_patch that passes through and records ``h`` entering ``output_block``.

    In a sampler's batched call (``transformer_options["cond_or_uncond"]`` present) ``h`` holds
    one chunk per entry, in that order; only the cond chunks (0) are recorded, each as its own
    record (the capture averages same-shaped records, e.g. several prompts of one step).
    """

    def patch(h, hsp, transformer_options):
        if transformer_options.get("block") == ("output", output_block):
            kinds = transformer_options.get("cond_or_uncond")
            if kinds is None:
                record(h)
            else:
                for kind, chunk in zip(kinds, h.chunk(len(kinds))):
                    if kind == COND:
                        record(chunk)
        return h, hsp

    return patch


def with_output_block_patch(model_options: dict, patch) -> dict:
    """A copy of ``model_options`` with ``patch`` appended to the output block patches; the
    dicts and list on the way are copied, so the caller's model_options stay as they were."""
    options = copy.copy(model_options)
    transformer = copy.copy(options.get("transformer_options", {}))
    patches = copy.copy(transformer.get("patches", {}))
    patches["output_block_patch"] = list(patches.get("output_block_patch", [])) + [patch]
    transformer["patches"] = patches
    options["transformer_options"] = transformer
    return options


def empty_prompt_tensors(conditioning, context_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(cross_attn (1, T, context_dim), pooled_output (1, P) or None) of a CONDITIONING's first
    entry, checked against the model's cross-attention width."""
    where = f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: 'empty_prompt'"
    try:
        cross, extra = conditioning[0][0], conditioning[0][1]
    except (TypeError, IndexError, KeyError):
        raise NodeInputError(f"{where} must be a CONDITIONING (connect a CLIP Text Encode with an empty text)") from None
    if not isinstance(cross, torch.Tensor) or cross.ndim != 3:
        raise NodeInputError(f"{where} must be a CONDITIONING (connect a CLIP Text Encode with an empty text)")
    if cross.shape[-1] != context_dim:
        raise NodeInputError(f"{where} has width {cross.shape[-1]} but the model's cross-attention takes "
                             f"{context_dim}: encode it with this checkpoint's CLIP")
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    return cross[:1], (None if pooled is None else pooled[:1])


class HostDiffusionMatcher(DiffusionFeatureMatcher):
    """DiffusionFeatureMatcher whose extract is one pass of the host model's U-Net.

    empty_prompt: optional CONDITIONING of the empty text (DIFT's prompt); without it the
    cross-attention context is zeros and SDXL's pooled output is zeros of POOLED_DIM.
    """

    def __init__(self, model, timestep: int, output_block: int, ensemble: int, cross_domain=None,
                 empty_prompt=None) -> None:
        self.model = model
        self.timestep = int(timestep)
        self.output_block = int(output_block)
        # checked here, so a wrong prompt is reported by this node, not later by the one that binds
        self.prompt = None
        if empty_prompt is not None:
            self.prompt = empty_prompt_tensors(empty_prompt, self._context_dim(model.model))
        super().__init__(self._extract, ensemble=ensemble, capture=FeatureCapture(), cross_domain=cross_domain)

    def prepare_for_host(self) -> None:
        prepare = getattr(self.cross_domain, "prepare_for_host", None)
        if prepare is not None:
            prepare()  # e.g. learned networks as the first matcher

    # -- x0 side: the sampler's own U-Net call (nodes/sampling.py installs it per run) --------
    def capture_hook(self):
        """(output_block_patch, capture): the patch records into the capture; clear the capture
        before each denoiser call."""
        return block_capture(self.output_block, self.capture.add), self.capture

    # -- condition / exemplar side: one U-Net pass with an empty prompt -----------------------
    @staticmethod
    def _context_dim(base) -> int:
        context_dim = base.model_config.unet_config.get("context_dim")
        if context_dim is None:
            raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: the model has no cross-attention "
                                 "(context_dim); only text-conditioned U-Nets (SD1.5, SDXL, ...) are supported")
        return int(context_dim)

    def _conditioning(self, base, x: torch.Tensor) -> dict:
        batch, height, width = x.shape[0], x.shape[-2] * 8, x.shape[-1] * 8
        cross, pooled = torch.zeros(1, 77, self._context_dim(base)), torch.zeros(1, POOLED_DIM)
        if self.prompt is not None:
            cross, given = self.prompt
            pooled = pooled if given is None else given
        extra = base.extra_conds(cross_attn=cross.float().expand(batch, -1, -1),
                                 pooled_output=pooled.float().expand(batch, -1), width=width, height=height,
                                 target_width=width, target_height=height, device=x.device, noise=x,
                                 latent_image=x)
        return {key: cond.cond.to(x.device) for key, cond in extra.items()}

    def _extract(self, latent: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        captured = []
        clone = self.model.clone()  # never touch the user's model or its model_options
        clone.set_model_output_block_patch(block_capture(self.output_block, captured.append))
        mm.load_models_gpu([clone])
        base = clone.model
        device = mm.get_torch_device()
        x0 = base.process_latent_in(latent.to(device).float())
        sigma = base.model_sampling.sigma(torch.tensor([float(self.timestep)])).to(device).float()
        sigma = sigma.expand(x0.shape[0])
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x = base.model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, x0)
        conds = self._conditioning(base, x)
        transformer_options = clone.model_options["transformer_options"]
        base.apply_model(x, sigma, transformer_options=transformer_options, **conds)
        if not captured:
            count = len(base.diffusion_model.output_blocks)
            raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: 'output_block' {self.output_block} "
                                 f"is not in this U-Net, which has output blocks 0..{count - 1}")
        return captured[-1].float()


class MIDMsDiffusionFeatureMatcher:
    DISPLAY = "MIDMs Diffusion Feature Matcher (DIFT)"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The checkpoint's model whose U-Net features are matched (usually the one you sample with; then re-matching inside the sampler reuses its U-Net pass)."}),
                "timestep": ("INT", {"default": DIFT_TIMESTEP, "min": 0, "max": 999, "tooltip": "Noise level (of 1000) the condition and exemplar latents are noised to before the U-Net pass (DIFT: 261 for semantic matching)."}),
                "output_block": ("INT", {"default": 6, "min": 0, "max": 64, "tooltip": "U-Net output block whose INPUT features are matched, in LDM/ComfyUI numbering. 6 = the output of DIFT's up_ft_index 1 in every SD layout: SD1.5/2.x 1280 channels at half the latent grid, SDXL 640 channels at the latent grid. Features are resized to the latent grid."}),
                "ensemble": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Noise draws averaged per image (DIFT uses 8; each costs one U-Net pass)."}),
            },
            "optional": {
                "cross_domain_matcher": (MATCHER, {"tooltip": "Optional matcher for the FIRST, cross-domain match (condition against exemplar), e.g. the Edge Matcher: U-Net features of an edge or label map are not photo features. The re-matches while sampling still use this node's U-Net features. Unconnected: U-Net features of the condition's latent."}),
                "empty_prompt": ("CONDITIONING", {"tooltip": "Optional: CLIP Text Encode of an empty text with this checkpoint's CLIP (DIFT's prompt). Unconnected: an all-zero context (and zero pooled output for SDXL), which is close but not identical."}),
            },
        }

    RETURN_TYPES = (MATCHER,)
    RETURN_NAMES = ("matcher",)
    FUNCTION = "make"
    CATEGORY = CATEGORY
    DESCRIPTION = "Training-free matching with the model's own U-Net features (DIFT): no extra weights; inside the sampler the x0 side reuses each step's U-Net pass."

    @node_errors(DISPLAY)
    def make(self, model, timestep, output_block, ensemble, cross_domain_matcher=None, empty_prompt=None):
        return (HostDiffusionMatcher(model, timestep, output_block, ensemble, cross_domain=cross_domain_matcher,
                                     empty_prompt=empty_prompt),)
