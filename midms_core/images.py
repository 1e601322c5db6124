"""Image preparation and visualisation shared by hosts: channel handling, fitting sizes, flow and
mask pictures. Images here are channels-last (B, H, W, C) float in [0, 1], ComfyUI's IMAGE
layout, unless a docstring says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .validation import check_choice, check_tensor

FIT_MODES = ("crop", "stretch", "pad", "own size")


def to_rgb(image: Tensor, where: str = "to_rgb", name: str = "image") -> Tensor:
    """(B, H, W, C) with C in {1, 2, 3, 4} -> (B, H, W, 3).

    Grayscale is repeated; an alpha channel is composited over white, so black line art on a
    transparent background stays visible (the edge matcher is polarity-free either way).
    """
    check_tensor(where, name, image, 4, "(B, H, W, C)")
    channels = image.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"{where}: '{name}' must have 1-4 channels (gray, gray+alpha, RGB, RGBA), got {channels}")
    image = image.float()
    if channels in (2, 4):
        alpha = image[..., -1:].clamp(0, 1)
        image = image[..., :-1] * alpha + (1 - alpha)
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image.clamp(0, 1).contiguous()


#: an image whose pixel values all lie within this range (about 2 grey levels of 8 bits) is blank
BLANK_RANGE = 2.0 / 255.0


def blank_images(image: Tensor, tolerance: float = BLANK_RANGE) -> list[int]:
    """Indices of the images of a batch (B, H, W, C) that are one flat colour: max - min over
    every pixel and channel below ``tolerance``."""
    flat = image.float().flatten(1)
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    return [i for i, s in enumerate(spread.tolist()) if not s >= tolerance]


def round_to_multiple(size: int, multiple: int) -> int:
    """The nearest multiple of ``multiple`` that is at least ``multiple``."""
    return max(multiple, int(round(size / multiple)) * multiple)


def resize(image: Tensor, height: int, width: int, nearest: bool = False) -> Tensor:
    """(B, H, W, C) -> (B, height, width, C), area filter when shrinking, bicubic when growing;
    ``nearest``: nearest neighbour (label maps, whose colours must not blend)."""
    if image.shape[1:3] == (height, width):
        return image
    x = image.movedim(-1, 1)
    if nearest:
        return F.interpolate(x, size=(height, width), mode="nearest").movedim(1, -1)
    shrinking = height < image.shape[1] and width < image.shape[2]
    if shrinking:
        x = F.interpolate(x, size=(height, width), mode="area")
    else:
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    return x.movedim(1, -1)


@dataclass(frozen=True)
class FitGeometry:
    """Where :func:`fit` puts an image of ``input_size`` (height, width) in an output of
    ``output_size``: the scaled image is ``scaled`` (height, width) and its top-left corner
    lands at ``offset`` (top, left) of the output (negative when cropped).
    A continuous point (x, y) (0 at the left / top edge) of the input lands at
    (x * scaled_w / w + left, y * scaled_h / h + top)."""

    input_size: tuple[int, int]
    scaled: tuple[int, int]
    offset: tuple[int, int]
    output_size: tuple[int, int]

    def apply(self, points: Tensor) -> Tensor:
        """(P, 2) (x, y) input coordinates -> output coordinates, float64."""
        (h, w), (sh, sw), (top, left) = self.input_size, self.scaled, self.offset
        scale = torch.tensor([sw / w, sh / h], dtype=torch.float64)
        return points.double() * scale + torch.tensor([left, top], dtype=torch.float64)


def fit_geometry(h: int, w: int, height: int, width: int, mode: str, where: str = "fit") -> FitGeometry:
    """The geometry :func:`fit` applies to an (h, w) image brought to (height, width)."""
    check_choice(where, "mode", mode, FIT_MODES)
    if mode == "own size":
        return FitGeometry((h, w), (h, w), (0, 0), (h, w))
    if mode == "stretch":
        return FitGeometry((h, w), (height, width), (0, 0), (height, width))
    cover = mode == "crop"
    scale = (max if cover else min)(height / h, width / w)
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    if cover:
        return FitGeometry((h, w), (sh, sw), (-((sh - height) // 2), -((sw - width) // 2)), (height, width))
    return FitGeometry((h, w), (sh, sw), ((height - sh) // 2, (width - sw) // 2), (height, width))


def crop_geometry(h: int, w: int, top: int, left: int, height: int, width: int) -> FitGeometry:
    """The geometry of cutting the (height, width) window at (top, left) out of an (h, w) image."""
    return FitGeometry((h, w), (h, w), (-top, -left), (height, width))


def fit(image: Tensor, height: int, width: int, mode: str, where: str = "fit", nearest: bool = False,
        fill: float = 1.0) -> Tensor:
    """Bring (B, H, W, C) to (B, height, width, C) (``nearest``: see :func:`resize`).

    crop:     scale to cover, centre-crop (keeps the aspect ratio, loses borders);
    stretch:  scale each axis independently;
    pad:      scale to fit inside, pad with ``fill`` (keeps everything, adds borders): 1 = white
              for images, 0 for masks (a pad border is never "allowed");
    own size: return the image unchanged (correspondence works between different sizes).
    Where the pixels go: :func:`fit_geometry`.
    """
    geometry = fit_geometry(image.shape[1], image.shape[2], height, width, mode, where)
    if mode == "own size":
        return image
    (sh, sw), (top, left) = geometry.scaled, geometry.offset
    scaled = resize(image, sh, sw, nearest)
    if mode in ("crop", "stretch"):
        return scaled[:, -top : -top + height, -left : -left + width]
    out = image.new_full((image.shape[0], height, width, image.shape[-1]), float(fill))
    out[:, top : top + sh, left : left + sw] = scaled
    return out


def flow_to_rgb(flow: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Colour-code a correspondence map for people: hue = direction of the displacement,
    brightness = its length (full at a quarter of the grid).

    flow: (B, 2, h, w) positions (x, y) in a grid of ``grid_size`` (h', w') that each position
    matched; returns (B, h, w, 3) in [0, 1].
    """
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=torch.float32) * (grid_size[0] / h),
        torch.arange(w, device=flow.device, dtype=torch.float32) * (grid_size[1] / w),
        indexing="ij",
    )
    dx = flow[:, 0].float() - xs
    dy = flow[:, 1].float() - ys
    angle = torch.atan2(dy, dx)  # (B, h, w)
    length = (dx**2 + dy**2).sqrt() / (0.25 * max(grid_size))
    value = length.clamp(0, 1)
    # hue wheel from the angle: three phase-shifted cosines give a smooth RGB circle
    rgb = torch.stack([0.5 + 0.5 * torch.cos(angle - k * 2 * math.pi / 3) for k in range(3)], dim=-1)
    return (1 - value.unsqueeze(-1)) + value.unsqueeze(-1) * rgb


def upsample_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """(B, 1, h, w) latent-grid mask -> (B, height, width) nearest upsampling (ComfyUI MASK)."""
    return F.interpolate(mask.float(), size=(height, width), mode="nearest")[:, 0]


def exemplar_colours(count: int) -> Tensor:
    """``count`` distinct, saturated colours (count, 3) in [0, 1], one per exemplar: hues spaced
    evenly around the colour wheel starting at red."""
    hue = torch.arange(count, dtype=torch.float32) / max(count, 1) * 6.0
    k = (torch.tensor([5.0, 3.0, 1.0])[None, :] + hue[:, None]) % 6.0
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)  # HSV -> RGB at s = v = 1


def source_to_rgb(source: Tensor) -> Tensor:
    """Which exemplar each position came from, as colours: (B, G, h, w) shares -> (B, h, w, 3),
    the exemplars' colours (:func:`exemplar_colours`) mixed by share (a split position shows a
    mix; a position with no source is black)."""
    colours = exemplar_colours(source.shape[1]).to(source.device)
    return torch.einsum("bghw,gc->bhwc", source.float(), colours).clamp(0, 1)
