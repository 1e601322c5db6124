"""DIFT-style matcher from the host's own model: features of one block, U-Net or DiT.

Defaults and where they come from:

* U-Nets (SD1.x/2.x, SDXL): timestep 261 and the block: DIFT (Tang et al. 2023) for semantic
  correspondence with SD 2.1, the feature map of diffusers' ``up_ft_index`` 1, i.e. the input of
  LDM/ComfyUI output block 6. The same index is block 6 in SDXL (three up levels of three
  blocks: 0-2, 3-5, 6-8), where it is 640 channels at the full latent grid; DIFT did not evaluate
  SDXL, so that default is the analogous block, not a measured optimum. SD1.5 shares SD 2.1's
  layout (1280 channels at half the latent grid).
* DiTs (Flux, SD3.x): DiTF (Gan et al. 2025; ``midms_core.dit_features``): the input of block 28
  of Flux-dev's 57 (double blocks counted first: single block 9), normalised by that block's
  own AdaLN, massive channels zeroed, at noise share t / 1000 = 0.26 (the widget's 261 is within
  one step of DiTF's 260), guidance 3.5 (the host's default). No published choice exists for SD3
  that we could find; its default is the block at the same share of the stack (SD3 medium: 12
  of 24, SD3.5 large: 19 of 38), an analogy, not a measurement (no real weights here).
* ensemble 1: DIFT averages 8 noise draws; each costs a model pass per image, and the pack binds
  once per run, so 1 keeps CPU runs usable. Raise it on a GPU.
* empty prompt: DIFT's; unconnected, a zero context is used (see ``HostDiffusionMatcher``).
"""

from __future__ import annotations

import copy

import torch

import comfy.model_management as mm

from ..midms_core import DiffusionFeatureMatcher, FeatureCapture
from ..midms_core.diffusion_matcher import DIFT_TIMESTEP
from ..midms_core.dit_features import adaln_features, default_block, fold_tokens, token_grid
from .common import CATEGORY, NodeInputError, is_rectified_flow, node_errors
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


def with_dit_replacements(model_options: dict, replacements: dict) -> dict:
    """A copy of ``model_options`` with "dit" block replacements {(kind, index): patch}. A patch
    already there (another node's) is kept and called inside ours (``patch.previous``)."""
    options = copy.copy(model_options)
    transformer = copy.copy(options.get("transformer_options", {}))
    replace = copy.copy(transformer.get("patches_replace", {}))
    dit = dict(replace.get("dit", {}))
    for key, patch in replacements.items():
        previous = dit.get(key)
        if previous is not patch:  # installing the same patch twice must not make it call itself
            patch.previous = previous
        dit[key] = patch
    replace["dit"] = dit
    transformer["patches_replace"] = replace
    options["transformer_options"] = transformer
    return options


# ---------------------------------------------------------------------------------- DiT blocks

def _is_class(module, dotted: str) -> bool:
    """isinstance against a host class by module path, False when this host has no such class."""
    import importlib

    path, name = dotted.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(path), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(module, cls)


def dit_blocks(diffusion_model) -> list[tuple[str, int, torch.nn.Module]] | None:
    """The transformer blocks of a DiT in the order they run, as the host's "dit" replace keys:
    Flux: ("double_block", i) then ("single_block", j); SD3 (MMDiT): ("double_block", i) for its
    joint blocks. None for a U-Net. Other DiTs with Flux-like blocks (HunyuanVideo and Chroma
    order or modulate their tokens differently) are refused by name rather than misread."""
    if type(diffusion_model).__name__ == "Flux" and _is_class(diffusion_model, "comfy.ldm.flux.model.Flux"):
        return ([("double_block", i, b) for i, b in enumerate(diffusion_model.double_blocks)]
                + [("single_block", i, b) for i, b in enumerate(diffusion_model.single_blocks)])
    if _is_class(diffusion_model, "comfy.ldm.modules.diffusionmodules.mmdit.MMDiT"):
        return [("double_block", i, b) for i, b in enumerate(diffusion_model.joint_blocks)]
    if hasattr(diffusion_model, "output_blocks"):
        return None
    raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: this model's {type(diffusion_model).__name__} is "
                         "neither a U-Net (SD1.x/2.x, SDXL) nor a Flux or SD3 transformer, the families this node "
                         "reads features from; use the Edge Matcher or learned networks with it")


def block_modulation(kind: str, block: torch.nn.Module, vec: torch.Tensor, hidden: int):
    """(shift or None, scale, norm) that ``block`` applies to its image tokens (width ``hidden``)
    before attention."""
    if kind == "single_block" and hasattr(block, "modulation"):  # Flux single stream
        mod = block.modulation(vec)[0]
        return mod.shift, mod.scale, block.pre_norm
    if hasattr(block, "img_mod"):  # Flux double stream
        mod = block.img_mod(vec)[0]
        return mod.shift, mod.scale, block.img_norm1
    if hasattr(block, "x_block"):  # SD3 joint block: x_block.adaLN_modulation chunks start msa
        x_block = block.x_block
        out = x_block.adaLN_modulation(vec)
        chunks = out.split(hidden, dim=-1)  # 6, 9 (x_block self-attention) or 4 (scale only)
        if getattr(x_block, "scale_mod_only", False):
            return None, chunks[0], x_block.norm1
        return chunks[0], chunks[1], x_block.norm1
    raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: a {type(block).__name__} block is not a Flux or "
                         "SD3 block this node knows how to read")


class DitBlockCapture:
    """A "dit" replace patch that records the DiTF features of its block's input, then runs the
    block (or the replacement that was there before) unchanged.

    grid: the latent grid (h, w) of the run; the first ceil(h/p) x ceil(w/p) image tokens are
    folded back onto it. In a sampler's batched call only the cond chunks (0) are recorded. For a
    Flux single block the text tokens come first; their count is read by ``text_length``, a
    pass-through on double block 0.
    """

    def __init__(self, kind: str, block: torch.nn.Module, grid: tuple[int, int], patch_size: int, record) -> None:
        self.kind, self.block, self.record = kind, block, record
        self.tokens = token_grid(grid, patch_size)
        self.text = [0]
        self.previous = None

    def text_length(self):
        def patch(args, extra):
            self.text[0] = args["txt"].shape[1]
            return patch.previous(args, extra) if patch.previous is not None else extra["original_block"](args)

        patch.previous = None
        return patch

    def __call__(self, args, extra):
        tokens = args["img"]
        start = self.text[0] if self.kind == "single_block" else 0
        count = self.tokens[0] * self.tokens[1]
        image = tokens[:, start : start + count]
        shift, scale, norm = block_modulation(self.kind, self.block, args["vec"], tokens.shape[-1])
        features = fold_tokens(adaln_features(image, shift, scale, norm), self.tokens)
        kinds = (args.get("transformer_options") or {}).get("cond_or_uncond")
        if kinds is None:
            self.record(features)
        else:
            for kind, chunk in zip(kinds, features.chunk(len(kinds))):
                if kind == COND:
                    self.record(chunk)
        return self.previous(args, extra) if self.previous is not None else extra["original_block"](args)

    def replacements(self, index: int) -> dict:
        out = {(self.kind, index): self}
        if self.kind == "single_block":
            out[("double_block", 0)] = self.text_length()
        return out


def empty_prompt_tensors(conditioning, widths: tuple[int, int | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(cross_attn (1, T, context width), pooled_output (1, P) or None) of a CONDITIONING's first
    entry, checked against the model's text widths (context, pooled or None)."""
    where = f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: 'empty_prompt'"
    try:
        cross, extra = conditioning[0][0], conditioning[0][1]
    except (TypeError, IndexError, KeyError):
        raise NodeInputError(f"{where} must be a CONDITIONING (connect a CLIP Text Encode with an empty text)") from None
    if not isinstance(cross, torch.Tensor) or cross.ndim != 3:
        raise NodeInputError(f"{where} must be a CONDITIONING (connect a CLIP Text Encode with an empty text)")
    context_dim, pooled_dim = widths
    if cross.shape[-1] != context_dim:
        raise NodeInputError(f"{where} has width {cross.shape[-1]} but the model's text input takes "
                             f"{context_dim}: encode it with this checkpoint's CLIP / text encoders")
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    if pooled is not None and pooled_dim is not None and pooled.shape[-1] != pooled_dim:
        raise NodeInputError(f"{where} has a pooled output of width {pooled.shape[-1]} but the model takes "
                             f"{pooled_dim}: encode it with this checkpoint's CLIP / text encoders")
    return cross[:1], (None if pooled is None else pooled[:1])


def text_widths(base) -> tuple[int, int | None]:
    """(context width, pooled width or None) of a host model: U-Nets' cross-attention (pooled:
    SDXL's CLIP-G), Flux's T5 / CLIP-L inputs, SD3's context embedder / pooled (adm) input."""
    config = base.model_config.unet_config
    if config.get("context_dim"):  # a U-Net; SDXL's adm input takes the pooled CLIP-G output
        return int(config["context_dim"]), (POOLED_DIM if config.get("adm_in_channels") else None)
    if config.get("context_in_dim"):
        return int(config["context_in_dim"]), int(config.get("vec_in_dim") or 768)
    embedder = config.get("context_embedder_config")
    if embedder:
        adm = config.get("adm_in_channels")
        return int(embedder["params"]["in_features"]), (None if adm is None else int(adm))
    raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: the model takes no text this node knows how to "
                         "feed; supported: text-conditioned U-Nets (SD1.x/2.x, SDXL) and Flux / SD3 DiTs")


class HostDiffusionMatcher(DiffusionFeatureMatcher):
    """DiffusionFeatureMatcher whose extract is one pass of the host model (U-Net or DiT).

    output_block: U-Nets: the output block whose input is read. dit_block: DiTs: the block (in
    run order, see :func:`dit_blocks`) whose AdaLN-normalised input is read; -1: the default.
    empty_prompt: optional CONDITIONING of the empty text (DIFT's prompt); without it the text
    context is zeros (and a pooled output of zeros where the model takes one).
    """

    def __init__(self, model, timestep: int, output_block: int, ensemble: int, cross_domain=None,
                 empty_prompt=None, dit_block: int = -1) -> None:
        self.model = model
        self.timestep = int(timestep)
        self.output_block = int(output_block)
        base = model.model
        self.blocks = dit_blocks(base.diffusion_model)
        self.dit_block = None
        if self.blocks is not None:
            self.dit_block = default_block(len(self.blocks)) if int(dit_block) < 0 else int(dit_block)
            if self.dit_block >= len(self.blocks):
                raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: 'dit_block' {self.dit_block} is not in "
                                     f"this model, which has blocks 0..{len(self.blocks) - 1} (-1: the default)")
        self.widths = text_widths(base)
        # checked here, so a wrong prompt is reported by this node, not later by the one that binds
        self.prompt = None
        if empty_prompt is not None:
            self.prompt = empty_prompt_tensors(empty_prompt, self.widths)
        super().__init__(self._extract, ensemble=ensemble, capture=FeatureCapture(), cross_domain=cross_domain)

    def prepare_for_host(self) -> None:
        prepare = getattr(self.cross_domain, "prepare_for_host", None)
        if prepare is not None:
            prepare()  # e.g. learned networks as the first matcher

    # -- where features are read: a U-Net output block patch or a DiT block replacement --------
    def _installer(self, grid: tuple[int, int], record):
        """install(model_options) -> a copy that records this matcher's block into ``record``."""
        if self.blocks is None:
            patch = block_capture(self.output_block, record)
            return lambda options: with_output_block_patch(options, patch)
        kind, index, block = self.blocks[self.dit_block]
        capture = DitBlockCapture(kind, block, grid, int(self.model.model.diffusion_model.patch_size), record)
        return lambda options: with_dit_replacements(options, capture.replacements(index))

    # -- x0 side: the sampler's own model call (nodes/sampling.py installs it per run) ---------
    def capture_hook(self, grid: tuple[int, int]):
        """(install, capture) for a run on latents of ``grid``: ``install(model_options)`` gives
        the run's model_options with the recording patch; clear the capture before each call."""
        return self._installer(tuple(grid), self.capture.add), self.capture

    # -- condition / exemplar side: one model pass with an empty prompt ------------------------
    def _conditioning(self, base, x: torch.Tensor) -> dict:
        batch, height, width = x.shape[0], x.shape[-2] * 8, x.shape[-1] * 8
        context_dim, pooled_dim = self.widths
        cross = torch.zeros(1, 77, context_dim)
        pooled = None if pooled_dim is None else torch.zeros(1, pooled_dim)
        if self.prompt is not None:
            cross, given = self.prompt
            pooled = pooled if given is None else given
        kwargs = {}
        if pooled is not None:
            kwargs["pooled_output"] = pooled.float().expand(batch, -1)
        extra = base.extra_conds(cross_attn=cross.float().expand(batch, -1, -1), width=width, height=height,
                                 target_width=width, target_height=height, device=x.device, noise=x,
                                 latent_image=x, **kwargs)
        return {key: cond.cond.to(x.device) for key, cond in extra.items()}

    def _sigma(self, base) -> torch.Tensor:
        """The noise level of ``timestep``: the model's own schedule for U-Nets (DIFT), the noise
        share t / 1000 without the schedule's shift for rectified-flow DiTs (DiTF)."""
        if self.blocks is not None and is_rectified_flow(base):
            return torch.tensor([self.timestep / 1000.0])
        return base.model_sampling.sigma(torch.tensor([float(self.timestep)]))

    def _extract(self, latent: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        captured = []
        clone = self.model.clone()  # never touch the user's model or its model_options
        clone.model_options = self._installer(tuple(latent.shape[-2:]), captured.append)(clone.model_options)
        mm.load_models_gpu([clone])
        base = clone.model
        device = mm.get_torch_device()
        x0 = base.process_latent_in(latent.to(device).float())
        sigma = self._sigma(base).to(device).float().expand(x0.shape[0])
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x = base.model_sampling.noise_scaling(sigma.view(-1, 1, 1, 1), noise, x0)
        conds = self._conditioning(base, x)
        transformer_options = clone.model_options["transformer_options"]
        base.apply_model(x, sigma, transformer_options=transformer_options, **conds)
        if not captured and self.blocks is not None:
            kind, index, _ = self.blocks[self.dit_block]
            raise NodeInputError(f"{MIDMsDiffusionFeatureMatcher.DISPLAY}: the model's {kind} {index} did not run "
                                 "(another node may have replaced it without calling it); pick another 'dit_block'")
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
    FUNCTION = "make"
    CATEGORY = CATEGORY
    DESCRIPTION = "Training-free matching with the model's own features (DIFT for U-Nets, DiTF for Flux / SD3): no extra weights; inside the sampler the x0 side reuses each step's model pass."

    @node_errors(DISPLAY)
    def make(self, model, timestep, output_block, ensemble, cross_domain_matcher=None, empty_prompt=None, dit_block=-1):
        return (HostDiffusionMatcher(model, timestep, output_block, ensemble, cross_domain=cross_domain_matcher,
                                     empty_prompt=empty_prompt, dit_block=dit_block),)
