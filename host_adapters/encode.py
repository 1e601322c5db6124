"""Condition + exemplar images -> a MIDMs context, encoded with the host's VAE: the images
checked (RGB, batches that pair up, at least one latent cell, not blank), brought to one size
and cropped to the VAE's grid as the host's own VAE Encode crops."""

from __future__ import annotations

import torch

from ..midms_core.images import blank_images, fit, to_rgb
from ..midms_core.validation import broadcast_batch
from .errors import NodeInputError
from .match import MIDMsContext

# why a blank image is refused, per input (the node's error text goes on with this)
_BLANK_CONDITION = ("there is no layout to follow. A line drawing with transparency arrives like this through "
                    "LoadImage, which drops the alpha channel: connect LoadImage's IMAGE and MASK to 'Join Image "
                    "with Alpha' and that to 'condition' (the alpha is flattened over white), or save the drawing on "
                    "a white background")
_BLANK_EXEMPLAR = ("there is no appearance to transfer; connect a photo (with transparency: through 'Join Image "
                   "with Alpha', as for the condition)")


def latent_multiple(vae) -> int:
    """Pixels per latent cell of the host's VAE (8 where it does not say)."""
    ratio = getattr(vae, "downscale_ratio", 8)
    return ratio if isinstance(ratio, int) and ratio > 0 else 8


def crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop (B, H, W, C) so H and W are multiples of ``multiple`` (as the host's VAE Encode)."""
    _, h, w, _ = image.shape
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    top, left = (h - nh) // 2, (w - nw) // 2
    return image[:, top : top + nh, left : left + nw]


def refuse_blank(image: torch.Tensor, name: str, why: str, where: str) -> None:
    """NodeInputError naming ``where`` when an image of the batch (B, H, W, 3) is one flat colour."""
    blank = blank_images(image)
    if blank:
        i = blank[0]
        which = f"image {i + 1} of {image.shape[0]}" if image.shape[0] > 1 else "the image"
        colour = ", ".join(f"{v:.2f}" for v in image[i].flatten(0, 1).mean(0).tolist())
        raise NodeInputError(f"{where}: '{name}' ({which}) is blank, one flat colour (RGB {colour}): {why}.")


def encode_context(condition: torch.Tensor, exemplar: torch.Tensor, vae, exemplar_fit: str, where: str) -> MIDMsContext:
    """The context of host IMAGEs ``condition`` (B, H, W, C) and ``exemplar`` (1 or B, H', W', C):
    the exemplar fitted to the condition's size (``exemplar_fit``, a ``midms_core.images.FIT_MODES``
    mode), both centre-cropped to the VAE's grid, broadcast to one batch and encoded with ``vae``.
    Images are kept as (B, 3, H, W), latents as the VAE gives them; errors name ``where``."""
    cond = to_rgb(condition, where, "condition")
    exem = to_rgb(exemplar, where, "exemplar")
    try:
        batch = broadcast_batch(where, condition=cond, exemplar=exem)
    except ValueError:
        raise NodeInputError(
            f"{where}: 'condition' has {cond.shape[0]} images and 'exemplar' has {exem.shape[0]}; "
            "give one exemplar for all condition images, or exactly one per condition image"
        ) from None
    multiple = latent_multiple(vae)
    if min(cond.shape[1:3]) < multiple or min(exem.shape[1:3]) < multiple:
        raise NodeInputError(
            f"{where}: images must be at least {multiple} x {multiple} pixels (one latent cell); got 'condition' "
            f"{tuple(cond.shape[1:3])} and 'exemplar' {tuple(exem.shape[1:3])}; upscale the small one (e.g. Upscale Image)"
        )
    refuse_blank(cond, "condition", _BLANK_CONDITION, where)
    refuse_blank(exem, "exemplar", _BLANK_EXEMPLAR, where)
    cond = crop_to_multiple(cond, multiple)
    exem = crop_to_multiple(fit(exem, cond.shape[1], cond.shape[2], exemplar_fit, where), multiple)
    cond = cond.expand(batch, -1, -1, -1)
    exem = exem.expand(batch, -1, -1, -1)
    return MIDMsContext(
        condition_image=cond.movedim(-1, 1).contiguous(),
        exemplar_image=exem.movedim(-1, 1).contiguous(),
        condition_latent=vae.encode(cond),
        exemplar_latent=vae.encode(exem),
        vae=vae,
    )
