"""The learned MIDMs correspondence networks as a matcher (features for the correlation).

The networks themselves are :mod:`midms_core.networks.model`; the maps they read are
:mod:`midms_core.networks.label_maps`; loading them from a file is :mod:`midms_core.networks.files`.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..networks.label_maps import canny_edge_map, label_map_on_grid
from ..networks.model import CorrespondenceNetworks
from ..validation import broadcast_batch, check_tensor
from .base import MatchFeatures, MatchSide, SharedConditionMatcher, require_images

__all__ = ["LearnedMatcher"]

MapFn = Callable[[Tensor], Tensor]


class LearnedMatcher(SharedConditionMatcher):
    """Features from the (official or converted) MIDMs correspondence networks.

    condition_map: image (B, 3, H, W) in [0, 1] -> (B, k, H', W') condition label map; default
                   the image itself (an edge/pose drawing). k is L, 3 or 1 (see
                   :func:`~midms_core.networks.label_maps.to_label_channels`); the map is resized nearest to the latent grid.
    exemplar_map:  the same for the exemplar's OWN label map; default :func:`canny_edge_map`.

    Features are returned as the networks produce them; centring and L2 normalisation over
    channels are the correlation module's job. Latents are raw VAE latents (as official).
    Runs without autograd, on the networks' device and dtype.
    """

    name = "learned"

    def __init__(
        self,
        nets: CorrespondenceNetworks,
        condition_map: Optional[MapFn] = None,
        exemplar_map: Optional[MapFn] = None,
    ) -> None:
        if not isinstance(nets, CorrespondenceNetworks):
            raise ValueError(f"LearnedMatcher: 'nets' must be CorrespondenceNetworks, got {type(nets).__name__}")
        for arg, fn in (("condition_map", condition_map), ("exemplar_map", exemplar_map)):
            if fn is not None and not callable(fn):
                raise ValueError(f"LearnedMatcher: '{arg}' must be callable (image -> map) or None, got {type(fn).__name__}")
        self.nets = nets
        self.condition_map = condition_map if condition_map is not None else (lambda image: image)
        self.exemplar_map = exemplar_map if exemplar_map is not None else canny_edge_map

    def _param(self) -> Tensor:
        return next(self.nets.parameters())

    def _check_latent(self, name: str, latent: Tensor) -> None:
        cfg = self.nets.config
        if latent.shape[1] != cfg.latent_channels:
            raise ValueError(
                f"LearnedMatcher.bind: '{name}' has {latent.shape[1]} channels, but the networks expect "
                f"{cfg.latent_channels}-channel latents (3 = VQ-f4, 4 = Stable Diffusion)"
            )
        if min(latent.shape[-2:]) < 2:
            raise ValueError(f"LearnedMatcher.bind: '{name}' grid must be at least 2x2, got {tuple(latent.shape[-2:])}")

    def _label_map(self, name: str, fn: MapFn, image: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, 3, H, W) image -> (B, L, h, w) label map on the latent grid (nearest, as official)."""
        out = fn(image)
        check_tensor("LearnedMatcher.bind", name, out, 4, "(B, k, H, W)")
        if out.shape[0] != image.shape[0]:
            raise ValueError(f"LearnedMatcher.bind: '{name}' returned batch {out.shape[0]}, expected {image.shape[0]}")
        return label_map_on_grid(out, self.nets.config.label_channels, grid, "LearnedMatcher.bind", name)

    def bind_all(self, condition: MatchSide, exemplars: list[MatchSide]) -> list[MatchFeatures]:
        """:meth:`bind` for each exemplar, with the condition encoder and head run once."""
        for exemplar in exemplars:
            require_images("LearnedMatcher.bind", condition, exemplar,
                           "the learned networks read the label/edge map derived from it")
        self._check_latent("condition.latent", condition.latent)
        for exemplar in exemplars:
            self._check_latent("exemplar.latent", exemplar.latent)
        p = self._param()
        like = dict(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            cond_map = self._label_map("condition_map", self.condition_map, condition.image.to(**like), condition.grid)
            cond_enc = self.nets.encode_condition(cond_map)
            cond_feat = self.nets.condition_head(cond_enc, cond_map)
        return [self._bind_to(condition.grid, cond_enc, cond_feat, exemplar, like) for exemplar in exemplars]

    def _bind_to(self, cond_grid: tuple[int, int], cond_enc: Tensor, cond_feat: Tensor, exemplar: MatchSide,
                 like: dict) -> MatchFeatures:
        """The pair's features, given the condition's encoding and head output."""
        nets = self.nets
        with torch.no_grad():
            ex_map = self._label_map("exemplar_map", self.exemplar_map, exemplar.image.to(**like), exemplar.grid)
            ex_enc = nets.encode_exemplar(exemplar.latent.to(**like))
            ex_feat = nets.exemplar_head(ex_enc, ex_map)

        def x0_features(x0_latent: Tensor) -> Tensor:
            """(B, c, hx, wx) raw x0_hat latent -> (B, N, hx, wx) F' features."""
            where = "LearnedMatcher.x0_features"
            check_tensor(where, "x0_latent", x0_latent, 4, "(B, c, h, w)")
            if x0_latent.shape[1] != nets.config.latent_channels or tuple(x0_latent.shape[-2:]) != cond_grid:
                raise ValueError(
                    f"{where}: 'x0_latent' must have shape (B, {nets.config.latent_channels}, {cond_grid[0]}, "
                    f"{cond_grid[1]}) (latent channels, condition grid), got {tuple(x0_latent.shape)}"
                )
            batch = broadcast_batch(where, x0_latent=x0_latent, condition=cond_enc)
            with torch.no_grad():
                x0 = x0_latent.to(**like).expand(batch, -1, -1, -1)
                return nets.encode_iteration(x0, cond_enc.expand(batch, -1, -1, -1))

        return MatchFeatures(condition=cond_feat, exemplar=ex_feat, exemplar_in_domain=ex_enc, x0_features=x0_features)
