"""The label / edge maps the learned correspondence networks read, prepared from images.

The networks take an L-channel label map on the latent grid (``label_channels`` of
:class:`~midms_core.networks.model.CorrespondenceConfig`): the condition's map on one side, the
exemplar's OWN map on the other. Official datasets supply real multi-channel labels; from a
plain image this module makes the closest stand-in (luminance or Canny edges, tiled to L
channels, resized nearest as official). The learned matcher and the trainer share it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..edges import canny_edges

__all__ = ["canny_edge_map", "label_map_on_grid", "to_label_channels"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def to_label_channels(x: Tensor, channels: int, where: str = "to_label_channels", name: str = "x") -> Tensor:
    """Bring a (B, k, H, W) map to (B, channels, H, W).

    k == channels: unchanged. k == 3: BT.601 luminance, then tiled to ``channels`` (so an RGB
    edge/pose image fills every label channel with the same map). k == 1: tiled. Otherwise an
    error: such a map must come from a callable that produces the right channel count. Tiling is
    an approximation of the official multi-channel labels (e.g. CelebA-HQ's 15 channels:
    edges, per-part distance maps, part edges); supply a callable for a faithful layout.
    """
    k = x.shape[1]
    if k == channels:
        return x
    if k == 3:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
        k = 1
    if k == 1:
        return x.expand(-1, channels, -1, -1)
    raise ValueError(
        f"{where}: '{name}' has {x.shape[1]} channels; expected {channels} (the configured label channels), 3 or 1"
    )


def label_map_on_grid(label_map: Tensor, channels: int, grid: tuple[int, int], where: str = "label_map_on_grid",
                      name: str = "label_map") -> Tensor:
    """A (B, k, H, W) map as the networks read it: :func:`to_label_channels`, then resized
    nearest to the latent grid (as official). The matcher and the trainer share it."""
    return F.interpolate(to_label_channels(label_map, channels, where, name), size=grid, mode="nearest")


def canny_edge_map(image: Tensor, low_threshold: float = 0.1, high_threshold: float = 0.2) -> Tensor:
    """Binary Canny edges of (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) in {0, 1}, in the image's
    dtype (computed in float32, exact hysteresis: :func:`midms_core.edges.canny_edges`).

    The default exemplar map: the official edge datasets build the exemplar's label from its
    own edges (part outlines plus Canny for the background), which a plain image only allows
    approximating with Canny.
    """
    return canny_edges(image.float(), low_threshold, high_threshold).to(image.dtype)
