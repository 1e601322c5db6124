"""Canny edges of a photo: the one wrapper of kornia's Canny that every part of the package uses.

Three callers read a photo as its Canny edges, with different needs kept at the call site:

* :func:`midms_core.networks.label_maps.canny_edge_map` (the learned matcher's default exemplar map):
  computed in float32, returned in the image's dtype, exact hysteresis;
* :func:`midms_core.matchers.edge.exemplar_edge_map` (the edge matcher): computed in float32,
  configurable blur, hysteresis cut short after a few growth steps (much faster, same PCK);
* :func:`midms_core.training.conditions.canny_condition` (training and benchmark conditions): computed in the image's
  own dtype, exact hysteresis, tiled to RGB.
"""

from __future__ import annotations

import math
from typing import Optional

import kornia
import torch.nn.functional as F
from torch import Tensor

__all__ = ["canny_edges"]


def canny_edges(
    image: Tensor,
    low: float = 0.1,
    high: float = 0.2,
    sigma: float = 1.0,
    hysteresis_steps: Optional[int] = None,
) -> Tensor:
    """Binary Canny edges of the luminance of an RGB photo.

    image: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) in {0, 1}, in the image's dtype (kornia runs
    half precision in float32 inside; the luminance is taken in the image's dtype, so a caller
    that wants float32 throughout passes ``image.float()``).

    low / high:  kornia's thresholds on its unnormalised Sobel magnitude (defaults = kornia's).
    sigma:       Gaussian blur before the gradient, kernel ``2 * ceil(2 * sigma) + 1`` (sigma 1
                 gives kornia's default 5 x 5).
    hysteresis_steps: None runs kornia's exact hysteresis (weak edges joined to strong ones until
                 nothing changes: ~50 sequential steps on a 512 px photo); n >= 0 grows the strong
                 edges n pixels along weak chains instead (8-neighbour), 0 keeps the strong only.
    """
    gray = kornia.color.rgb_to_grayscale(image)
    k = 2 * math.ceil(2 * sigma) + 1
    exact = hysteresis_steps is None
    _, edges = kornia.filters.canny(gray, low, high, kernel_size=(k, k), sigma=(sigma, sigma), hysteresis=exact)
    if exact:
        return edges
    weak = (edges > 0).to(edges.dtype)  # without hysteresis kornia marks weak 0.5, strong 1
    strong = (edges == 1).to(edges.dtype)
    for _ in range(hysteresis_steps):
        strong = F.max_pool2d(strong, 3, stride=1, padding=1) * weak  # 8-neighbour growth
    return strong
