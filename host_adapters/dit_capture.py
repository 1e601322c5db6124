"""Reading a DiT's features (Flux.1, Flux.2, Chroma, SD3, Qwen-Image) during the host's own
model call: a "dit" block replacement that records the block's AdaLN-normalised input (DiTF),
then runs the block.

Which transformers can be read, and how (checked against ComfyUI 0.3.75's ``comfy/ldm``):

* Flux.1 (``flux.model.Flux``): ("double_block", i) then ("single_block", j); each block
  modulates with its own ``img_mod`` / ``modulation`` from the vector ``args["vec"]``.
* Flux.2 (the same class with ``params.global_modulation``) and Chroma (``chroma.model.Chroma``):
  the same keys and blocks, but the blocks have no modulation of their own
  (``SingleStreamBlock.modulation`` is None, double blocks have no ``img_mod``): the model
  computes it once (Flux.2: its ``double_stream_modulation_img`` / ``single_stream_modulation``;
  Chroma: its distilled guidance approximator, sliced per block) and passes it AS ``args["vec"]``:
  ((img_mod1, img_mod2), (txt_mod1, txt_mod2)) to a double block, one ModulationOut to a single
  block.
* SD3 (``mmdit.MMDiT``): ("double_block", i) for its joint blocks (``x_block.adaLN_modulation``).
* Qwen-Image (``qwen_image.model.QwenImageTransformer2DModel``): ("double_block", i) for its
  transformer blocks; ``args["img"]`` holds the image tokens only (the text is ``args["txt"]``),
  ``args["vec"]`` the timestep embedding that the block's ``img_mod`` (SiLU, Linear) turns into
  shift / scale / gate twice. (Newer hosts give Qwen-Image-Edit's reference tokens a second,
  zero-timestep half of ``vec``; the image tokens use the first half.)
* Z-Image and Lumina 2 (``lumina.model.NextDiT``) are refused by name: their forward runs its
  layers without the host's block-replacement hook.
"""

from __future__ import annotations

import copy
import importlib

import torch

from ..midms_core.matchers.dit import adaln_features, fold_tokens, token_grid
from .cond_batch import record_cond
from .errors import NodeInputError
from .node_names import DIFFUSION_MATCHER

#: where a refused model can go instead
_OTHER_MATCHERS = "use the Edge Matcher (training-free) or learned networks as the matcher with it"


def _is_class(module, dotted: str) -> bool:
    """isinstance against a host class by module path, False when this host has no such class."""
    path, name = dotted.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(path), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(module, cls)


def _flux_like(diffusion_model) -> list[tuple[str, int, torch.nn.Module]]:
    skip_double = set(getattr(diffusion_model, "skip_mmdit", ()) or ())
    skip_single = set(getattr(diffusion_model, "skip_dit", ()) or ())
    return ([("double_block", i, b) for i, b in enumerate(diffusion_model.double_blocks) if i not in skip_double]
            + [("single_block", i, b) for i, b in enumerate(diffusion_model.single_blocks) if i not in skip_single])


def dit_blocks(diffusion_model) -> list[tuple[str, int, torch.nn.Module]] | None:
    """The transformer blocks of a DiT in the order they run, as the host's "dit" replace keys:
    Flux.1 / Flux.2 / Chroma: ("double_block", i) then ("single_block", j) (Chroma's skipped
    blocks left out: they do not run); SD3 (MMDiT): ("double_block", i) for its joint blocks;
    Qwen-Image: ("double_block", i) for its transformer blocks. None for a U-Net. Z-Image /
    Lumina 2 and every other transformer are refused by name (NodeInputError) rather than
    misread."""
    name = type(diffusion_model).__name__
    if name == "Flux" and _is_class(diffusion_model, "comfy.ldm.flux.model.Flux"):
        return _flux_like(diffusion_model)  # Flux.1 and Flux.2 (global modulation)
    if name == "Chroma" and _is_class(diffusion_model, "comfy.ldm.chroma.model.Chroma"):
        return _flux_like(diffusion_model)
    if _is_class(diffusion_model, "comfy.ldm.modules.diffusionmodules.mmdit.MMDiT"):
        return [("double_block", i, b) for i, b in enumerate(diffusion_model.joint_blocks)]
    if name == "QwenImageTransformer2DModel" and _is_class(
            diffusion_model, "comfy.ldm.qwen_image.model.QwenImageTransformer2DModel"):
        return [("double_block", i, b) for i, b in enumerate(diffusion_model.transformer_blocks)]
    if hasattr(diffusion_model, "output_blocks"):
        return None
    if _is_class(diffusion_model, "comfy.ldm.lumina.model.NextDiT"):
        raise NodeInputError(
            f"{DIFFUSION_MATCHER}: 'model' is a Z-Image / Lumina 2 transformer (NextDiT), whose layers this "
            "ComfyUI runs without the block-replacement hook ('dit' patches_replace) that this node reads "
            "features through, during the sampler's own model call; this node cannot read Z-Image or Lumina 2: "
            f"{_OTHER_MATCHERS}")
    raise NodeInputError(f"{DIFFUSION_MATCHER}: 'model' ({name}) is neither a U-Net (SD1.x/2.x, SDXL) nor a "
                         "Flux.1, Flux.2, Chroma, SD3 or Qwen-Image transformer, the families this node reads "
                         f"features from; {_OTHER_MATCHERS}")


def _first_half(vec: torch.Tensor, batch: int | None) -> torch.Tensor:
    """``vec`` with twice the tokens' batch (newer hosts' zero-timestep references): its first half."""
    if batch is not None and vec.shape[0] == 2 * batch:
        return vec[:batch]
    return vec


def block_modulation(kind: str, block: torch.nn.Module, vec, hidden: int, batch: int | None = None):
    """(shift or None, scale, norm) that ``block`` applies to its image tokens (width ``hidden``,
    ``batch`` rows) before attention; ``vec``: the block's ``args["vec"]`` (a vector, or, for
    blocks without modulation of their own, the modulation itself: module docstring)."""
    if kind == "single_block" and hasattr(block, "pre_norm"):  # Flux / Chroma single stream
        modulation = getattr(block, "modulation", None)
        mod = modulation(vec)[0] if modulation is not None else vec  # Flux.2 / Chroma: vec IS it
        return mod.shift, mod.scale, block.pre_norm
    if hasattr(block, "img_norm1") and hasattr(block, "txt_norm1"):
        img_mod = getattr(block, "img_mod", None)
        if img_mod is None:  # Flux.2 / Chroma double stream: vec = ((img1, img2), (txt1, txt2))
            mod = vec[0][0]
            return mod.shift, mod.scale, block.img_norm1
        if isinstance(img_mod, torch.nn.Sequential):  # Qwen-Image: (SiLU, Linear) -> 2 x (shift, scale, gate)
            params = img_mod(_first_half(vec, batch))
            shift, scale = params.chunk(6, dim=-1)[:2]
            return shift, scale, block.img_norm1
        mod = img_mod(vec)[0]  # Flux.1 double stream
        return mod.shift, mod.scale, block.img_norm1
    if hasattr(block, "x_block"):  # SD3 joint block: x_block.adaLN_modulation chunks start msa
        x_block = block.x_block
        out = x_block.adaLN_modulation(vec)
        chunks = out.split(hidden, dim=-1)  # 6, 9 (x_block self-attention) or 4 (scale only)
        if getattr(x_block, "scale_mod_only", False):
            return None, chunks[0], x_block.norm1
        return chunks[0], chunks[1], x_block.norm1
    raise NodeInputError(f"{DIFFUSION_MATCHER}: a {type(block).__name__} block is not a Flux, Chroma, SD3 or "
                         f"Qwen-Image block this node knows how to read; {_OTHER_MATCHERS}")


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
        shift, scale, norm = block_modulation(self.kind, self.block, args["vec"], tokens.shape[-1], tokens.shape[0])
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
