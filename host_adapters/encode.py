"""Condition + exemplar images -> a MIDMs context, encoded with the host's VAE: the images
checked (RGB, batches that pair up, at least one latent cell, not blank), brought to one size
and cropped to the VAE's grid as the host's own VAE Encode crops."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..midms_core.exemplars.label_colours import DEFAULT_TOLERANCE, TooManyColours, cluster_palette, snap_colours
from ..midms_core.exemplars.regions import colour_labels, labels_on_grid, masks_on_grid, pad_content_on_grid
from ..midms_core.images import FitGeometry, blank_images, crop_geometry, fit, fit_geometry, resize, to_rgb
from ..midms_core.matchers.base import Restriction
from ..midms_core.validation import broadcast_batch
from .anchors import place_anchors
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
    """Pixels per latent cell of the host's VAE (8 where it does not say): its spatial
    compression (16 for Flux.2's VAE; a video VAE's ``downscale_ratio`` is a (frames, h, w)
    tuple, read through ``spacial_compression_encode``)."""
    read = getattr(vae, "spacial_compression_encode", None)
    try:
        ratio = read() if callable(read) else getattr(vae, "downscale_ratio", 8)
    except Exception:  # a VAE object of another kind
        ratio = 8
    return ratio if isinstance(ratio, int) and ratio > 0 else 8


def video_vae(vae) -> bool:
    """True for a video VAE (Wan 2.1, which Qwen-Image uses): 3-D latents (B, C, T, h, w)."""
    return getattr(vae, "latent_dim", 2) == 3


def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """IMAGEs (B, H, W, 3) -> latents (B, C, h, w), the pack's working form. A video VAE reads a
    batch as the frames of ONE video, so each image is encoded alone and its latent (1, C, 1, h, w)
    loses the frame axis."""
    if not video_vae(vae):
        return vae.encode(images)
    return torch.cat([vae.encode(images[i : i + 1])[:, :, 0] for i in range(images.shape[0])])


def host_latent_of_vae(vae, latent: torch.Tensor) -> torch.Tensor:
    """A working-form latent (B, C, h, w) as the host's nodes take it for ``vae``'s family:
    (B, C, 1, h, w) for a video VAE (what its VAE Encode and its model's samplers give; VAE
    Decode needs it), else as it is (also with no VAE)."""
    return latent.unsqueeze(2) if vae is not None and video_vae(vae) and latent.dim() == 4 else latent


def decode_latents(vae, latent: torch.Tensor) -> torch.Tensor:
    """Working-form latents (B, C, h, w) -> IMAGEs (B, H, W, 3) with the host's ``vae`` (a video
    VAE's frames (B, 1, H, W, 3) flattened, as the host's VAE Decode does)."""
    images = vae.decode(host_latent_of_vae(vae, latent))
    return images.reshape(-1, *images.shape[-3:]) if images.dim() == 5 else images


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


_IMAGE_INPUTS = ("condition", "exemplar", "exemplars", "condition_labels", "exemplar_labels")


def refuse_non_finite(where: str, **inputs) -> None:
    """NodeInputError naming ``where`` and the input when an IMAGE (B, H, W, C) or MASK
    ((N, H, W) or (H, W)) input holds NaN or infinite values; None inputs are skipped. Run
    before anything is encoded: to_rgb's clamp would turn an infinity into a plain 1."""
    for name, value in inputs.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bad = ~torch.isfinite(value)
        if not bool(bad.any()):
            continue
        kind = "image" if name in _IMAGE_INPUTS else "mask"
        which = f"the {kind}"
        if value.dim() >= (4 if kind == "image" else 3) and value.shape[0] > 1:
            first = int(bad.flatten(1).any(1).nonzero()[0])
            which = f"{kind} {first + 1} of {value.shape[0]}"
        raise NodeInputError(
            f"{where}: '{name}' has NaN or infinite values ({which}), which mean nothing as pixels; fix the node "
            f"that made it (a NaN usually comes from a division by zero upstream) or connect another {kind}")


def encode_context(condition: torch.Tensor, exemplar: torch.Tensor, vae, exemplar_fit: str, where: str,
                   anchors=None) -> MIDMsContext:
    """The context of host IMAGEs ``condition`` (B, H, W, C) and ``exemplar`` (1 or B, H', W', C):
    the exemplar fitted to the condition's size (``exemplar_fit``, a ``midms_core.images.FIT_MODES``
    mode), both centre-cropped to the VAE's grid, broadcast to one batch and encoded with ``vae``.
    Images are kept as (B, 3, H, W), latents as the VAE gives them; errors name ``where``.
    ``anchors``: an AnchorSpec (MIDMs Anchors) or None; its keypoints follow the same fit and
    crop, and become the context's anchor priors (checked before anything is encoded).
    With ``exemplar_fit`` "pad" the context's restriction excludes the exemplar's pad border
    (cells less than half image never serve; :func:`~midms_core.exemplars.regions.pad_content_on_grid`).
    Both images are checked for NaN / Inf first."""
    refuse_non_finite(where, condition=condition, exemplar=exemplar)
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
    content = pad_content_on_grid(exem_size, cond.shape[1], cond.shape[2], exemplar_fit,
                                  (cond.shape[1] // multiple, cond.shape[2] // multiple))  # (1, 1, h, w) or None
    cond = cond.expand(batch, -1, -1, -1)
    exem = exem.expand(batch, -1, -1, -1)
    return MIDMsContext(
        condition_image=cond.movedim(-1, 1).contiguous(),
        exemplar_image=exem.movedim(-1, 1).contiguous(),
        condition_latent=encode_images(vae, cond),
        exemplar_latent=encode_images(vae, exem),
        vae=vae,
        restriction=None if content is None else Restriction(exemplar_masks=content.expand(batch, -1, -1, -1)),
        anchors=placed,
    )


#: how label maps are compared (MIDMs Exemplar Set Encode's ``label_compare``)
LABEL_COMPARE = ("exact colour", "nearest condition colour")
#: MIDMs Exemplar Set Encode's ``colour_tolerance`` (8-bit units): default, min, max
COLOUR_TOLERANCE = (DEFAULT_TOLERANCE, 1.0, 128.0)


def _mask_batch(mask, count: int, name: str, where: str) -> torch.Tensor:
    """A host MASK (N, H, W) with one mask per exemplar -> (count, H, W, 1) float."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mask.dim() != 3 or mask.shape[0] != count:
        raise NodeInputError(f"{where}: '{name}' must hold one mask per exemplar ({count}), got "
                             f"{mask.shape[0] if mask.dim() == 3 else tuple(mask.shape)}; batch the masks in exemplar order")
    return mask.float().unsqueeze(-1)


def label_restriction(cond_map: torch.Tensor, exem_map: torch.Tensor, grid: tuple[int, int], label_compare: str,
                      colour_tolerance: float, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer labels at the latent cells' centre pixels of a condition label map (1, H, W, 3)
    and G exemplar label maps (G, H, W, 3), both at the condition's size -> (1, 1, h, w) and
    (1, G, h, w). "exact colour": the 8-bit colour; "nearest condition colour": both snapped to
    the palette of the condition map's colours clustered within ``colour_tolerance``
    (:mod:`midms_core.exemplars.label_colours`), an exemplar colour further than that from every palette
    colour matching nothing."""
    cond_cells = labels_on_grid(cond_map.movedim(-1, 1), grid)  # (1, 3, h, w): the centre pixels' colours
    exem_cells = labels_on_grid(exem_map.movedim(-1, 1), grid)  # (G, 3, h, w)
    if label_compare == "exact colour":
        cond_labels, exem_labels = colour_labels(cond_cells), colour_labels(exem_cells)
    else:
        try:
            palette = cluster_palette(cond_map.movedim(-1, 1), colour_tolerance)
        except TooManyColours as e:
            raise NodeInputError(
                f"{where}: 'condition_labels' has more than {e.limit} colours further than colour_tolerance "
                f"{e.tolerance:g} apart, so it is no label map (a photo or a shaded picture?); connect a segmentation "
                "or label map of flat colours, or raise 'colour_tolerance' if the map is only noisy") from None
        cond_labels = snap_colours(cond_cells, palette)
        exem_labels = snap_colours(exem_cells, palette, colour_tolerance)
    return cond_labels, exem_labels[:, 0][None]


def encode_exemplar_set(condition: torch.Tensor, exemplars: torch.Tensor, vae, exemplar_fit: str, where: str,
                        condition_masks=None, exemplar_masks=None, condition_labels=None, exemplar_labels=None,
                        label_compare: str = "exact colour", anchors=None,
                        colour_tolerance: float = DEFAULT_TOLERANCE) -> MIDMsContext:
    """The context of one condition against G exemplars (the IMAGE batch ``exemplars``), matched
    as one union: each exemplar fitted to the condition's size and encoded, stacked top to bottom.

    Optional restriction (all on the exemplars' order): ``condition_masks`` MASK (G, H, W), where
    on the condition each exemplar may be used; ``exemplar_masks`` MASK (G, H', W'), which part of
    each exemplar may be used (fitted like the exemplars); ``condition_labels`` IMAGE (1, H, W)
    and ``exemplar_labels`` IMAGE (G, H', W') label maps, compared per ``label_compare``:
    "exact colour", or "nearest condition colour" (the condition map's colours clustered into
    label colours within ``colour_tolerance`` 8-bit units, both maps snapped to them, an
    exemplar colour further than the tolerance from all of them matching nothing:
    :func:`label_restriction`). Masks are read at the latent grid by area (a cell is allowed
    when more than half of it is), labels at each cell's centre pixel. With ``exemplar_fit``
    "pad" the exemplars' pad borders never serve: masks are padded with 0, and cells less than
    half image are excluded, masks given or not. ``anchors``: an AnchorSpec whose exemplar
    frames pair with the exemplars (one frame per exemplar, or one for all), or None. Every
    IMAGE / MASK input is checked for NaN / Inf, and everything else, before anything is encoded."""
    refuse_non_finite(where, condition=condition, exemplars=exemplars, condition_masks=condition_masks,
                      exemplar_masks=exemplar_masks, condition_labels=condition_labels, exemplar_labels=exemplar_labels)
    cond, exem, multiple = _checked_set_images(condition, exemplars, vae, exemplar_fit, label_compare,
                                               colour_tolerance, where)
    geometry = _fit_set(cond, exem, multiple, exemplar_fit, where)
    count, (height, width), grid = exem.shape[0], geometry.condition.shape[1:3], geometry.grid
    placed = None if anchors is None else place_anchors(anchors, geometry.condition_size, geometry.condition_fits,
                                                        geometry.exemplar_size, geometry.exemplar_fits, grid, grid,
                                                        1, count, where)
    content = pad_content_on_grid(geometry.exemplar_size, height, width, exemplar_fit, grid)  # (1, 1, h, w) or None
    restriction = None
    if content is not None or any(x is not None for x in (condition_masks, exemplar_masks, condition_labels,
                                                           exemplar_labels)):
        restriction = _set_restriction(geometry, content, exemplar_fit, where, condition_masks, exemplar_masks,
                                       condition_labels, exemplar_labels, label_compare, colour_tolerance)
    return _encode_set(vae, geometry, restriction, placed)  # everything is checked: encode


def _checked_set_images(condition: torch.Tensor, exemplars: torch.Tensor, vae, exemplar_fit: str, label_compare: str,
                        colour_tolerance: float, where: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`encode_exemplar_set`'s images as RGB (the condition one image, each side at least one
    latent cell, none blank) and its settings checked: (condition, exemplars, pixels per latent cell)."""
    cond = to_rgb(condition, where, "condition")
    exem = to_rgb(exemplars, where, "exemplars")
    if cond.shape[0] != 1:
        raise NodeInputError(f"{where}: 'condition' must be one image against the exemplar set, got a batch of "
                             f"{cond.shape[0]}; pick one with ImageFromBatch, or use one {where} node per condition")
    if label_compare not in LABEL_COMPARE:  # checked here too: some hosts do not validate optional inputs
        raise NodeInputError(f"{where}: 'label_compare' must be one of {list(LABEL_COMPARE)}, got {label_compare!r}")
    low, high = COLOUR_TOLERANCE[1:]
    if isinstance(colour_tolerance, bool) or not isinstance(colour_tolerance, (int, float)) \
            or not low <= colour_tolerance <= high:
        raise NodeInputError(f"{where}: 'colour_tolerance' must be a number from {low:g} to {high:g} (8-bit colour "
                             f"units), got {colour_tolerance!r}")
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
    return cond, exem, multiple


class _SetGeometry(NamedTuple):
    """An exemplar set brought to one size: the condition (1, H, W, 3) centre-cropped to the VAE's
    grid and the exemplars (G, H, W, 3) fitted to it; both sides' sizes before and the fits
    applied (anchors follow them); the latent grid (H / cell, W / cell)."""

    condition: torch.Tensor
    exemplars: torch.Tensor
    condition_size: tuple[int, int]
    exemplar_size: tuple[int, int]
    condition_fits: list[FitGeometry]
    exemplar_fits: list[FitGeometry]
    grid: tuple[int, int]


def _fit_set(cond: torch.Tensor, exem: torch.Tensor, multiple: int, exemplar_fit: str, where: str) -> _SetGeometry:
    """The condition cropped to multiples of ``multiple``, the exemplars fitted to its size."""
    cond_size, exem_size = tuple(cond.shape[1:3]), tuple(exem.shape[1:3])
    cond_fits = [multiple_crop(*cond_size, multiple)]
    cond = crop_to_multiple(cond, multiple)
    height, width = cond.shape[1:3]
    exem_fits = [fit_geometry(*exem_size, height, width, exemplar_fit, where)]
    exem = fit(exem, height, width, exemplar_fit, where)
    grid = (height // multiple, width // multiple)
    return _SetGeometry(cond, exem, cond_size, exem_size, cond_fits, exem_fits, grid)


def _set_restriction(geometry: _SetGeometry, content, exemplar_fit: str, where: str, condition_masks, exemplar_masks,
                     condition_labels, exemplar_labels, label_compare: str, colour_tolerance: float) -> Restriction:
    """The set's restriction on the latent grid: masks read by area (fitted like the exemplars
    for ``exemplar_masks``), the pad border's cells (``content``) excluded, labels compared."""
    if (condition_labels is None) != (exemplar_labels is None):
        raise NodeInputError(f"{where}: label-aware matching needs both 'condition_labels' and 'exemplar_labels'")
    count, (height, width), grid = geometry.exemplars.shape[0], geometry.condition.shape[1:3], geometry.grid

    def on_grid_masks(mask, name, fitted):
        m = _mask_batch(mask, count, name, where)
        m = fit(m, height, width, exemplar_fit, where, fill=0.0) if fitted else resize(m, height, width)
        return masks_on_grid(m.movedim(-1, 1)[:, 0][None], grid)  # (1, G, h, w)

    cond_masks = None if condition_masks is None else on_grid_masks(condition_masks, "condition_masks", False)
    exem_masks = None if exemplar_masks is None else on_grid_masks(exemplar_masks, "exemplar_masks", True)
    if content is not None:  # pad borders never serve, whatever the masks say
        exem_masks = content.expand(1, count, -1, -1) if exem_masks is None else exem_masks * content
    cond_labels = exem_labels = None
    if condition_labels is not None:
        cond_labels, exem_labels = _set_labels(geometry, condition_labels, exemplar_labels, exemplar_fit,
                                               label_compare, colour_tolerance, where)
    return Restriction(cond_masks, exem_masks, cond_labels, exem_labels)


def _set_labels(geometry: _SetGeometry, condition_labels: torch.Tensor, exemplar_labels: torch.Tensor,
                exemplar_fit: str, label_compare: str, colour_tolerance: float,
                where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The label maps checked (one for the condition, one per exemplar), brought to the set's size
    (nearest neighbour) and compared (:func:`label_restriction`)."""
    count, (height, width) = geometry.exemplars.shape[0], geometry.condition.shape[1:3]
    cond_map = to_rgb(condition_labels, where, "condition_labels")
    if cond_map.shape[0] != 1:
        raise NodeInputError(f"{where}: 'condition_labels' must be one label map, the one condition's, got a "
                             f"batch of {cond_map.shape[0]}; pick the condition's map with ImageFromBatch")
    exem_map = to_rgb(exemplar_labels, where, "exemplar_labels")
    if exem_map.shape[0] != count:
        raise NodeInputError(f"{where}: 'exemplar_labels' must hold one label map per exemplar ({count}), "
                             f"got {exem_map.shape[0]}")
    cond_map = resize(cond_map, height, width, nearest=True)
    exem_map = fit(exem_map, height, width, exemplar_fit, where, nearest=True)
    return label_restriction(cond_map, exem_map, geometry.grid, label_compare, colour_tolerance, where)


def _encode_set(vae, geometry: _SetGeometry, restriction, placed) -> MIDMsContext:
    """The context: each exemplar encoded alone, latents and images stacked top to bottom."""
    cond, exem = geometry.condition, geometry.exemplars
    count, (height, width) = exem.shape[0], cond.shape[1:3]
    latents = [encode_images(vae, exem[i : i + 1]) for i in range(count)]
    stacked = exem.movedim(-1, 1).reshape(1, count, 3, height, width).transpose(1, 2).reshape(1, 3, count * height, width)
    return MIDMsContext(
        condition_image=cond.movedim(-1, 1).contiguous(),
        exemplar_image=stacked.contiguous(),
        condition_latent=encode_images(vae, cond),
        exemplar_latent=torch.cat(latents, dim=-2),
        vae=vae,
        exemplar_count=count,
        restriction=restriction,
        anchors=placed,
    )
