"""DIFT-style matcher from the host's own model: features of one block, U-Net or DiT.

The condition / exemplar side costs one model pass per image (``_extract``); inside the sampler
the x0 side reads the same block from each step's own model call (``capture_hook``). Where the
defaults come from: ``nodes/diffusion.py``.
"""

from __future__ import annotations

import comfy.model_management as mm
import torch

from ..midms_core import DiffusionFeatureMatcher, FeatureCapture
from ..midms_core.matchers.diffusion import DiffusionMatcherSettings
from ..midms_core.matchers.dit import default_block
from .dit_capture import DitBlockCapture, dit_blocks, with_dit_replacements
from .errors import NodeInputError
from .host_matcher import CaptureHook, HostMatcher, as_host_matcher
from .latent_spaces import check_latent_space
from .node_names import DIFFUSION_MATCHER
from .noise_paths import is_rectified_flow, model_sampling
from .text_conditioning import empty_prompt_tensors, empty_text_conditions, text_widths
from .unet_capture import block_capture, with_output_block_patch


def in_model_form(base, latent: torch.Tensor) -> torch.Tensor:
    """A latent (B, c, h, w) in the form the host model takes: (B, c, 1, h, w) for a model on a
    video VAE's latents (Qwen-Image on Wan 2.1's: ``latent_format.latent_dimensions`` 3), else
    as it is (also a latent that already has that form)."""
    if getattr(base.latent_format, "latent_dimensions", 2) == 3 and latent.dim() == 4:
        return latent.unsqueeze(2)
    return latent


class HostDiffusionMatcher(DiffusionFeatureMatcher, HostMatcher):
    """DiffusionFeatureMatcher whose extract is one pass of the host model (U-Net or DiT).

    settings: the core matcher's options (ensemble, seed), a DiffusionMatcherSettings (the
    defaults when omitted). timestep, output_block and dit_block configure the model pass, and are
    checked against the model here.
    output_block: U-Nets: the output block whose input is read. dit_block: DiTs: the block (in
    run order, see :func:`~.dit_capture.dit_blocks`) whose AdaLN-normalised input is read; -1:
    the default. empty_prompt: optional CONDITIONING of the empty text (DIFT's prompt); without
    it the text context is zeros (and a pooled output of zeros where the model takes one).
    """

    def __init__(self, model, timestep: int, output_block: int, settings: DiffusionMatcherSettings | None = None,
                 cross_domain=None, empty_prompt=None, dit_block: int = -1) -> None:
        self.model = model
        self.timestep = int(timestep)
        self.output_block = int(output_block)
        base = model.model
        self.blocks = dit_blocks(base.diffusion_model)
        self.dit_block = None
        if self.blocks is not None:
            self.dit_block = default_block(len(self.blocks)) if int(dit_block) < 0 else int(dit_block)
            if self.dit_block >= len(self.blocks):
                raise NodeInputError(f"{DIFFUSION_MATCHER}: 'dit_block' {self.dit_block} is not in "
                                     f"this model, which has blocks 0..{len(self.blocks) - 1} (-1: the default)")
        self.widths = text_widths(base)
        # checked here, so a wrong prompt is reported by this node, not later by the one that binds
        self.prompt = None
        if empty_prompt is not None:
            self.prompt = empty_prompt_tensors(empty_prompt, self.widths)
        super().__init__(self._extract, settings, capture=FeatureCapture(), cross_domain=cross_domain)

    def prepare_for_host(self) -> None:
        if self.cross_domain is not None:
            as_host_matcher(self.cross_domain).prepare_for_host()  # e.g. learned networks as the first matcher

    # -- where features are read: a U-Net output block patch or a DiT block replacement --------
    def _installer(self, grid: tuple[int, int], record):
        """install(model_options) -> a copy that records this matcher's block into ``record``."""
        if self.blocks is None:
            patch = block_capture(self.output_block, record)
            return lambda options: with_output_block_patch(options, patch)
        kind, index, block = self.blocks[self.dit_block]
        capture = DitBlockCapture(kind, block, grid, int(self.model.model.diffusion_model.patch_size), record)
        return lambda options: with_dit_replacements(options, capture.replacements(index))

    # -- x0 side: the sampler's own model call (interleaved_sampler installs it per run) -------
    def capture_hook(self, grid: tuple[int, int]) -> CaptureHook:
        """The recording patch for a run on latents of ``grid`` into this matcher's capture."""
        return CaptureHook(self._installer(tuple(grid), self.capture.add), self.capture)

    # -- condition / exemplar side: one model pass with an empty prompt ------------------------
    def _sigma(self, model) -> torch.Tensor:
        """The noise level of ``timestep`` for the ModelPatcher ``model``: its own schedule for
        U-Nets (DIFT), the noise share t / 1000 without the schedule's shift for rectified-flow
        DiTs (DiTF)."""
        if self.blocks is not None and is_rectified_flow(model):
            return torch.tensor([self.timestep / 1000.0])
        return model_sampling(model).sigma(torch.tensor([float(self.timestep)]))

    def _extract(self, latent: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        check_latent_space(self.model.model, latent, DIFFUSION_MATCHER, "context")
        captured = []
        clone = self.model.clone()  # never touch the user's model or its model_options
        clone.model_options = self._installer(tuple(latent.shape[-2:]), captured.append)(clone.model_options)
        mm.load_models_gpu([clone])
        base = clone.model
        device = mm.get_torch_device()
        x0 = base.process_latent_in(in_model_form(base, latent.to(device).float()))
        sigma = self._sigma(clone).to(device).float().expand(x0.shape[0])
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x = model_sampling(clone).noise_scaling(sigma.view(-1, *([1] * (x0.dim() - 1))), noise, x0)
        conds = empty_text_conditions(base, x, self.widths, self.prompt)
        transformer_options = clone.model_options["transformer_options"]
        base.apply_model(x, sigma, transformer_options=transformer_options, **conds)
        if not captured and self.blocks is not None:
            kind, index, _ = self.blocks[self.dit_block]
            raise NodeInputError(f"{DIFFUSION_MATCHER}: the model's {kind} {index} did not run "
                                 "(another node may have replaced it without calling it); pick another 'dit_block'")
        if not captured:
            count = len(base.diffusion_model.output_blocks)
            raise NodeInputError(f"{DIFFUSION_MATCHER}: 'output_block' {self.output_block} "
                                 f"is not in this U-Net, which has output blocks 0..{count - 1}")
        return captured[-1].float()
