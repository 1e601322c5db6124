"""Conditions drawn from a photo, for training pairs and benchmarks: :func:`canny_condition`
(an edge drawing) and :func:`quantised_condition` (a segmentation-like label map).
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from ..edges import canny_edges
from ..validation import check_int, check_tensor


def canny_condition(image: Tensor) -> Tensor:
    """kornia Canny (its defaults) of the luminance, white lines on black, as RGB.

    image: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in {0, 1}, computed in the image's dtype
    (:func:`midms_core.edges.canny_edges` with its defaults: exact hysteresis).
    """
    check_tensor("canny_condition", "image", image, 4, "(B, 3, H, W)")
    if image.shape[1] != 3:
        raise ValueError(f"canny_condition: 'image' must be RGB (B, 3, H, W), got {tuple(image.shape)}")
    return canny_edges(image).repeat(1, 3, 1, 1)


def label_palette(count: int) -> Tensor:
    """``count`` distinct label colours (count, 3) in [0, 1]: hues spaced by the golden ratio
    (neighbouring label indices get far-apart hues), saturation and value alternating so that
    hue-adjacent labels still differ in brightness."""
    count = check_int("label_palette", "count", count, 1)
    k = torch.arange(count, dtype=torch.float32)
    hue = torch.remainder(k * 0.6180339887, 1.0) * 2 * math.pi
    saturation = torch.where(k % 2 == 0, 0.85, 0.55)
    value = torch.where(k % 3 == 0, 0.95, torch.where(k % 3 == 1, 0.75, 0.55))
    hsv = torch.stack([hue, saturation, value]).view(1, 3, count, 1)
    return kornia.color.hsv_to_rgb(hsv).view(3, count).t().contiguous()


def quantised_labels(image: Tensor, levels: int = 3, blur_sigma: float = 2.0, mode_window: int = 5) -> Tensor:
    """Coarse label map of a photo: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) int64 in [0, levels^3).

    Gaussian blur (``blur_sigma`` px) so labels follow regions, not texture; each RGB channel
    quantised to ``levels`` equal bins; label = r * levels^2 + g * levels + b; then a mode filter
    (majority label in a ``mode_window`` square) removes speckles along bin boundaries.
    """
    where = "quantised_labels"
    check_tensor(where, "image", image, 4, "(B, 3, H, W)")
    if image.shape[1] != 3:
        raise ValueError(f"{where}: 'image' must be RGB (B, 3, H, W), got {tuple(image.shape)}")
    levels = check_int(where, "levels", levels, 2)
    mode_window = check_int(where, "mode_window", mode_window, 1)
    if mode_window % 2 == 0:
        raise ValueError(f"{where}: 'mode_window' must be odd (centred window), got {mode_window}")
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or not 0 <= blur_sigma < 64:
        raise ValueError(f"{where}: 'blur_sigma' must be a number in [0, 64) pixels, got {blur_sigma!r}")
    x = image.float()
    if blur_sigma > 0:
        k = 2 * math.ceil(3 * blur_sigma) + 1
        x = kornia.filters.gaussian_blur2d(x, (k, k), (blur_sigma, blur_sigma), border_type="reflect")
    bins = (x.clamp(0, 1) * levels).floor().clamp(max=levels - 1).long()
    labels = bins[:, 0] * levels * levels + bins[:, 1] * levels + bins[:, 2]  # (B, H, W)
    if mode_window > 1:
        votes = F.one_hot(labels, levels**3).permute(0, 3, 1, 2).float()
        votes = F.avg_pool2d(votes, mode_window, stride=1, padding=mode_window // 2, count_include_pad=False)
        labels = votes.argmax(dim=1)
    return labels.unsqueeze(1)


def quantised_condition(image: Tensor, levels: int = 3, blur_sigma: float = 2.0, mode_window: int = 5) -> Tensor:
    """A segmentation-like condition: :func:`quantised_labels` painted with :func:`label_palette`.

    image: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1]. The colours are arbitrary per label
    (as in a segmentation map), so only the region layout carries information about the photo.
    """
    labels = quantised_labels(image, levels, blur_sigma, mode_window)
    palette = label_palette(levels**3).to(image.device)
    return palette[labels[:, 0]].permute(0, 3, 1, 2).to(image.dtype)
