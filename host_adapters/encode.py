"""Condition + exemplar images -> a MIDMs context, encoded with the host's VAE: the images
checked (RGB, batches that pair up, at least one latent cell, not blank), brought to one size
and cropped to the VAE's grid as the host's own VAE Encode crops."""

from __future__ import annotations

import torch

from ..midms_core.exemplars import Restriction, colour_labels, labels_on_grid, masks_on_grid
from ..midms_core.images import FitGeometry, blank_images, crop_geometry, fit, fit_geometry, resize, to_rgb
from ..midms_core.validation import broadcast_batch
from .errors import NodeInputError
from .anchors import place_anchors
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


def multiple_crop(h: int, w: int, multiple: int) -> FitGeometry:
    """The centre crop of an (h, w) image to multiples of ``multiple`` (as the host's VAE Encode)."""
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    return crop_geometry(h, w, (h - nh) // 2, (w - nw) // 2, nh, nw)


def crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop (B, H, W, C) so H and W are multiples of ``multiple`` (:func:`multiple_crop`)."""
    crop = multiple_crop(image.shape[1], image.shape[2], multiple)
    (top, left), (nh, nw) = crop.offset, crop.output_size
    return image[:, -top : -top + nh, -left : -left + nw]


def refuse_blank(image: torch.Tensor, name: str, why: str, where: str) -> None:
    """NodeInputError naming ``where`` when an image of the batch (B, H, W, 3) is one flat colour."""
    blank = blank_images(image)
    if blank:
        i = blank[0]
        which = f"image {i + 1} of {image.shape[0]}" if image.shape[0] > 1 else "the image"
        colour = ", ".join(f"{v:.2f}" for v in image[i].flatten(0, 1).mean(0).tolist())
        raise NodeInputError(f"{where}: '{name}' ({which}) is blank, one flat colour (RGB {colour}): {why}.")


def encode_context(condition: torch.Tensor, exemplar: torch.Tensor, vae, exemplar_fit: str, where: str,
                   anchors=None) -> MIDMsContext:
    """The context of host IMAGEs ``condition`` (B, H, W, C) and ``exemplar`` (1 or B, H', W', C):
    the exemplar fitted to the condition's size (``exemplar_fit``, a ``midms_core.images.FIT_MODES``
    mode), both centre-cropped to the VAE's grid, broadcast to one batch and encoded with ``vae``.
    Images are kept as (B, 3, H, W), latents as the VAE gives them; errors name ``where``.
    ``anchors``: an AnchorSpec (MIDMs Anchors) or None; its keypoints follow the same fit and
    crop, and become the context's anchor priors (checked before anything is encoded)."""
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
    cond_size, exem_size = tuple(cond.shape[1:3]), tuple(exem.shape[1:3])
    cond_fits = [multiple_crop(*cond_size, multiple)]
    cond = crop_to_multiple(cond, multiple)
    exem_fits = [fit_geometry(*exem_size, cond.shape[1], cond.shape[2], exemplar_fit, where)]
    exem = fit(exem, cond.shape[1], cond.shape[2], exemplar_fit, where)
    exem_fits.append(multiple_crop(exem.shape[1], exem.shape[2], multiple))
    exem = crop_to_multiple(exem, multiple)
    placed = None
    if anchors is not None:
        placed = place_anchors(anchors, cond_size, cond_fits, exem_size, exem_fits,
                               (cond.shape[1] // multiple, cond.shape[2] // multiple),
                               (exem.shape[1] // multiple, exem.shape[2] // multiple), batch, 1, where)
    cond = cond.expand(batch, -1, -1, -1)
    exem = exem.expand(batch, -1, -1, -1)
    return MIDMsContext(
        condition_image=cond.movedim(-1, 1).contiguous(),
        exemplar_image=exem.movedim(-1, 1).contiguous(),
        condition_latent=vae.encode(cond),
        exemplar_latent=vae.encode(exem),
        vae=vae,
        anchors=placed,
    )


#: how label maps are compared (MIDMs Exemplar Set Encode's ``label_compare``)
LABEL_COMPARE = ("exact colour", "nearest condition colour")
_MAX_PALETTE = 64  # colours of the condition label map that serve as the palette


def condition_palette(labels_image: torch.Tensor) -> torch.Tensor:
    """The distinct colours of a condition label map (B, H, W, 3), most frequent first, at most
    64: (K, 3), the palette exemplar label colours are snapped to."""
    q = (labels_image.reshape(-1, 3).clamp(0, 1) * 255).round().long()
    colours, counts = torch.unique(q, dim=0, return_counts=True)
    return colours[counts.argsort(descending=True)[:_MAX_PALETTE]].float() / 255


def _mask_batch(mask, count: int, name: str, where: str) -> torch.Tensor:
    """A host MASK (N, H, W) with one mask per exemplar -> (count, H, W, 1) float."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mask.dim() != 3 or mask.shape[0] != count:
        raise NodeInputError(f"{where}: '{name}' must hold one mask per exemplar ({count}), got "
                             f"{mask.shape[0] if mask.dim() == 3 else tuple(mask.shape)}; batch the masks in exemplar order")
    return mask.float().unsqueeze(-1)


def encode_exemplar_set(condition: torch.Tensor, exemplars: torch.Tensor, vae, exemplar_fit: str, where: str,
                        condition_masks=None, exemplar_masks=None, condition_labels=None, exemplar_labels=None,
                        label_compare: str = "exact colour", anchors=None) -> MIDMsContext:
    """The context of one condition against G exemplars (the IMAGE batch ``exemplars``), matched
    as one union: each exemplar fitted to the condition's size and encoded, stacked top to bottom.

    Optional restriction (all on the exemplars' order): ``condition_masks`` MASK (G, H, W), where
    on the condition each exemplar may be used; ``exemplar_masks`` MASK (G, H', W'), which part of
    each exemplar may be used (fitted like the exemplars); ``condition_labels`` IMAGE (1, H, W)
    and ``exemplar_labels`` IMAGE (G, H', W') label maps, compared per ``label_compare``:
    "exact colour", or "nearest condition colour" (each exemplar label colour snapped to the
    nearest colour of the condition's map). Masks are read at the latent grid by area (a cell is
    allowed when more than half of it is), labels at each cell's centre pixel. ``anchors``: an
    AnchorSpec whose exemplar frames pair with the exemplars (one frame per exemplar, or one for
    all), or None."""
    cond = to_rgb(condition, where, "condition")
    exem = to_rgb(exemplars, where, "exemplars")
    count = exem.shape[0]  # one exemplar is fine too: label-aware or masked matching of a single photo
    if cond.shape[0] != 1:
        raise NodeInputError(f"{where}: 'condition' must be one image against the exemplar set, got a batch of "
                             f"{cond.shape[0]}; pick one with ImageFromBatch, or use one {where} node per condition")
    if label_compare not in LABEL_COMPARE:  # checked here too: some hosts do not validate optional inputs
        raise NodeInputError(f"{where}: 'label_compare' must be one of {list(LABEL_COMPARE)}, got {label_compare!r}")
    if exemplar_fit == "own size":
        raise NodeInputError(f"{where}: 'exemplar_fit' must bring the exemplars to one size (crop, stretch or pad); "
                             "'own size' is for one exemplar")
    multiple = latent_multiple(vae)
    for name, image in (("condition", cond), ("exemplars", exem)):
        if min(image.shape[1:3]) < multiple:
            raise NodeInputError(f"{where}: '{name}' is {image.shape[2]} x {image.shape[1]} pixels; images must be at "
                                 f"least {multiple} x {multiple} pixels (one latent cell): upscale it first")
    refuse_blank(cond, "condition", _BLANK_CONDITION, where)
    refuse_blank(exem, "exemplars", _BLANK_EXEMPLAR, where)
    cond_size, exem_size = tuple(cond.shape[1:3]), tuple(exem.shape[1:3])
    cond_fits = [multiple_crop(*cond_size, multiple)]
    cond = crop_to_multiple(cond, multiple)
    height, width = cond.shape[1:3]
    exem_fits = [fit_geometry(*exem_size, height, width, exemplar_fit, where)]
    exem = fit(exem, height, width, exemplar_fit, where)
    grid = (height // multiple, width // multiple)
    placed = None if anchors is None else place_anchors(anchors, cond_size, cond_fits, exem_size, exem_fits, grid, grid,
                                                        1, count, where)
    latents = [vae.encode(exem[i : i + 1]) for i in range(count)]
    restriction = None
    if any(x is not None for x in (condition_masks, exemplar_masks, condition_labels, exemplar_labels)):
        if (condition_labels is None) != (exemplar_labels is None):
            raise NodeInputError(f"{where}: label-aware matching needs both 'condition_labels' and 'exemplar_labels'")

        def on_grid_masks(mask, name, fitted):
            m = _mask_batch(mask, count, name, where)
            m = fit(m, height, width, exemplar_fit, where) if fitted else resize(m, height, width)
            return masks_on_grid(m.movedim(-1, 1)[:, 0][None], grid)  # (1, G, h, w)

        cond_masks = None if condition_masks is None else on_grid_masks(condition_masks, "condition_masks", False)
        exem_masks = None if exemplar_masks is None else on_grid_masks(exemplar_masks, "exemplar_masks", True)
        cond_labels = exem_labels = None
        if condition_labels is not None:
            cond_map = resize(to_rgb(condition_labels, where, "condition_labels")[:1], height, width, nearest=True)
            exem_map = to_rgb(exemplar_labels, where, "exemplar_labels")
            if exem_map.shape[0] != count:
                raise NodeInputError(f"{where}: 'exemplar_labels' must hold one label map per exemplar ({count}), "
                                     f"got {exem_map.shape[0]}")
            exem_map = fit(exem_map, height, width, exemplar_fit, where, nearest=True)
            palette = None if label_compare == "exact colour" else condition_palette(cond_map)
            cond_labels = labels_on_grid(colour_labels(cond_map.movedim(-1, 1), palette), grid)  # (1, 1, h, w)
            exem_labels = labels_on_grid(colour_labels(exem_map.movedim(-1, 1), palette), grid)  # (G, 1, h, w)
            exem_labels = exem_labels[:, 0][None]  # (1, G, h, w)
        restriction = Restriction(cond_masks, exem_masks, cond_labels, exem_labels)
    stacked = exem.movedim(-1, 1).reshape(1, count, 3, height, width).transpose(1, 2).reshape(1, 3, count * height, width)
    return MIDMsContext(
        condition_image=cond.movedim(-1, 1).contiguous(),
        exemplar_image=stacked.contiguous(),
        condition_latent=vae.encode(cond),
        exemplar_latent=torch.cat(latents, dim=-2),
        vae=vae,
        exemplar_count=count,
        restriction=restriction,
        anchors=placed,
    )
