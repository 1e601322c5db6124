"""Reading a DiT's features (Flux, SD3) during the host's own model call: a "dit" block
replacement that records the block's AdaLN-normalised input (DiTF), then runs the block."""

from __future__ import annotations

import copy
import importlib

import torch

from ..midms_core.dit_features import adaln_features, fold_tokens, token_grid
from .cond_batch import record_cond
from .errors import NodeInputError
from .node_names import DIFFUSION_MATCHER


def _is_class(module, dotted: str) -> bool:
    """isinstance against a host class by module path, False when this host has no such class."""
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
    raise NodeInputError(f"{DIFFUSION_MATCHER}: this model's {type(diffusion_model).__name__} is "
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
    raise NodeInputError(f"{DIFFUSION_MATCHER}: a {type(block).__name__} block is not a Flux or "
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
        record_cond(self.record, features, (args.get("transformer_options") or {}).get("cond_or_uncond"))
        return self.previous(args, extra) if self.previous is not None else extra["original_block"](args)

    def replacements(self, index: int) -> dict:
        out = {(self.kind, index): self}
        if self.kind == "single_block":
            out[("double_block", 0)] = self.text_length()
        return out


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
