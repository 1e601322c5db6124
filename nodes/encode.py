"""MIDMs Exemplar Encode: condition + exemplar images -> a MIDMs context (latents via the host's VAE)."""

from __future__ import annotations

import torch

from ..midms_core.images import FIT_MODES, blank_images, fit, to_rgb
from ..midms_core.validation import broadcast_batch
from .errors import NodeInputError, node_errors
from .types import CATEGORY, CONTEXT, MIDMsContext

DISPLAY = "MIDMs Exemplar Encode"


def _latent_multiple(vae) -> int:
    ratio = getattr(vae, "downscale_ratio", 8)
    return ratio if isinstance(ratio, int) and ratio > 0 else 8


def _crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop (B, H, W, C) so H and W are multiples of ``multiple`` (as the host's VAE Encode)."""
    _, h, w, _ = image.shape
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    top, left = (h - nh) // 2, (w - nw) // 2
    return image[:, top : top + nh, left : left + nw]


def _refuse_blank(image: torch.Tensor, name: str, why: str) -> None:
    """NodeInputError when an image of the batch (B, H, W, 3) is one flat colour."""
    blank = blank_images(image)
    if blank:
        i = blank[0]
        which = f"image {i + 1} of {image.shape[0]}" if image.shape[0] > 1 else "the image"
        colour = ", ".join(f"{v:.2f}" for v in image[i].flatten(0, 1).mean(0).tolist())
        raise NodeInputError(f"{DISPLAY}: '{name}' ({which}) is blank, one flat colour (RGB {colour}): {why}.")


class MIDMsExemplarEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "condition": ("IMAGE", {"tooltip": "The layout to follow: an edge map (either polarity), pose or segmentation map. Sets the output size."}),
                "exemplar": ("IMAGE", {"tooltip": "The photo whose appearance is transferred. One image for all conditions, or one per condition image."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE; both images are encoded with it."}),
                "exemplar_fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How the exemplar is brought to the condition's size: crop (cover, keep aspect), stretch, pad (fit inside, white borders), or own size (matching works across sizes)."}),
            }
        }

    RETURN_TYPES = (CONTEXT,)
    RETURN_NAMES = ("context",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes the condition and exemplar images with the VAE for MIDMs matching."

    @node_errors(DISPLAY)
    def encode(self, condition, exemplar, vae, exemplar_fit):
        cond = to_rgb(condition, DISPLAY, "condition")
        exem = to_rgb(exemplar, DISPLAY, "exemplar")
        try:
            batch = broadcast_batch(DISPLAY, condition=cond, exemplar=exem)
        except ValueError:
            raise NodeInputError(
                f"{DISPLAY}: 'condition' has {cond.shape[0]} images and 'exemplar' has {exem.shape[0]}; "
                "give one exemplar for all condition images, or exactly one per condition image"
            ) from None
        multiple = _latent_multiple(vae)
        if min(cond.shape[1:3]) < multiple or min(exem.shape[1:3]) < multiple:
            raise NodeInputError(
                f"{DISPLAY}: images must be at least {multiple} x {multiple} pixels (one latent cell); got 'condition' "
                f"{tuple(cond.shape[1:3])} and 'exemplar' {tuple(exem.shape[1:3])}; upscale the small one (e.g. Upscale Image)"
            )
        _refuse_blank(cond, "condition", "there is no layout to follow. A line drawing with transparency arrives "
                      "like this through LoadImage, which drops the alpha channel: connect LoadImage's IMAGE and MASK "
                      "to 'Join Image with Alpha' and that to 'condition' (the alpha is flattened over white), or save "
                      "the drawing on a white background")
        _refuse_blank(exem, "exemplar", "there is no appearance to transfer; connect a photo (with transparency: "
                      "through 'Join Image with Alpha', as for the condition)")
        cond = _crop_to_multiple(cond, multiple)
        exem = _crop_to_multiple(fit(exem, cond.shape[1], cond.shape[2], exemplar_fit, DISPLAY), multiple)
        cond = cond.expand(batch, -1, -1, -1)
        exem = exem.expand(batch, -1, -1, -1)
        cond_latent = vae.encode(cond)
        exem_latent = vae.encode(exem)
        context = MIDMsContext(
            condition_image=cond.movedim(-1, 1).contiguous(),
            exemplar_image=exem.movedim(-1, 1).contiguous(),
            condition_latent=cond_latent,
            exemplar_latent=exem_latent,
            vae=vae,
        )
        return (context,)
