"""What flows between MIDMs nodes (a context, settings, a match) and binding a match's matcher
on a device: the features once per match and device, then the first, cross-domain warp."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from ..midms_core import Matcher, MatchFeatures, MatchSide, WarpSettings
from ..midms_core.anchors.binding import bind_anchored
from ..midms_core.exemplars.union import bind_union
from ..midms_core.matchers.base import Restriction
from .devices import interruptible
from .host_matcher import as_host_matcher


@dataclass
class MIDMsContext:
    """Both sides of a translation, encoded once.

    condition_image / exemplar_image: (B, 3, H, W) float [0, 1], channels first;
    condition_latent / exemplar_latent: (B, c, h, w) RAW VAE latents (ComfyUI LATENT space);
    the model-scaled latents are made where the model is known (``process_latent_in``).
    vae: the host's VAE, kept for previews.
    exemplar_count: G exemplars matched as one union (MIDMs Exemplar Set Encode); with G > 1 the
        exemplar image and latent hold them stacked top to bottom, (B, 3, G * H, W) and
        (B, c, G * h, w), the layout the union match and the sampler's re-warps use.
    restriction: which condition regions, exemplar parts and labels may match
        (:class:`~midms_core.matchers.base.Restriction` on the latent grids), or None.
    anchors: semantic anchors (:class:`~host_adapters.anchors.PlacedAnchors`: one prior per
        exemplar, replacing the matcher's own alignment in every warp), or None.
    """

    condition_image: Tensor
    exemplar_image: Tensor
    condition_latent: Tensor
    exemplar_latent: Tensor
    vae: Any = None
    exemplar_count: int = 1
    restriction: Optional[Restriction] = None
    anchors: Any = None


@dataclass(frozen=True)
class MIDMsSettings:
    """Everything the interleaved sampler needs besides the model and the match.

    rewarp: how to re-match and blend (tau, threshold, mask, which steps).
    eta: DDIM stochasticity of the main run (0 = deterministic).
    refine_strength: re-noise the result to this fraction of the schedule and denoise again
        (0 = off; paper appendix about 0.1); refine_steps steps with eta = 1 (official).
    """

    rewarp: WarpSettings = field(default_factory=WarpSettings)
    eta: float = 0.0
    refine_strength: float = 0.0
    refine_steps: int = 20


@dataclass
class MIDMsMatch:
    """A context and the matcher that relates its sides, with the settings to sample with.

    ``bound`` caches the matcher's features per device (see :func:`bind`), so the
    correspondence node and the sampler that follows compute them once (with the diffusion
    matcher, each bind costs U-Net passes).
    """

    context: MIDMsContext
    matcher: Matcher
    settings: MIDMsSettings = field(default_factory=MIDMsSettings)
    bound: dict = field(default_factory=dict, repr=False, compare=False)


def match_sides(context: MIDMsContext, device: torch.device) -> tuple[MatchSide, MatchSide]:
    """The context's two sides as MatchSides on ``device`` (raw latents, channels-first images)."""
    cond = MatchSide(latent=context.condition_latent.to(device), image=context.condition_image.to(device))
    exem = MatchSide(latent=context.exemplar_latent.to(device), image=context.exemplar_image.to(device))
    return cond, exem


def exemplar_sides(context: MIDMsContext, device: torch.device) -> list[MatchSide]:
    """The context's exemplars one by one (the stacked image and latent split into G parts)."""
    g = context.exemplar_count
    images = context.exemplar_image.to(device).chunk(g, dim=-2)
    latents = context.exemplar_latent.to(device).chunk(g, dim=-2)
    return [MatchSide(latent=latent, image=image) for latent, image in zip(latents, images)]


def _restriction_on(restriction: Optional[Restriction], device: torch.device) -> Optional[Restriction]:
    if restriction is None:
        return None
    values = {f.name: getattr(restriction, f.name) for f in dataclasses.fields(restriction)}
    return Restriction(**{k: None if v is None else v.to(device) for k, v in values.items()})


def bind(match: MIDMsMatch, device: torch.device) -> MatchFeatures:
    """Features of the match's pair on ``device``, computed once per match and device; a context
    of several exemplars binds the condition against their union."""
    key = str(torch.device(device))
    if key not in match.bound:
        matcher = as_host_matcher(match.matcher)
        matcher.prepare_for_host()  # e.g. learned networks: loaded through the host's model management
        context = match.context
        with interruptible():
            condition, exemplar = match_sides(context, device)
            if context.anchors is not None:
                match.bound[key] = bind_anchored(matcher, condition, exemplar_sides(context, device),
                                                 context.anchors.priors, context.anchors.mode,
                                                 _restriction_on(context.restriction, device))
            elif context.exemplar_count == 1 and context.restriction is None:
                match.bound[key] = matcher.bind(condition, exemplar)
            else:
                match.bound[key] = bind_union(matcher, condition, exemplar_sides(context, device),
                                              _restriction_on(context.restriction, device))
    return match.bound[key]


def initial_warp(match: MIDMsMatch, device: torch.device):
    """The first, cross-domain warp of the exemplar's RAW latent, with confidence (a convex
    combination commutes with the model's affine latent scaling, so warping raw or scaled latents
    gives the same result)."""
    features = bind(match, device)
    with interruptible():
        return match.settings.rewarp.warp_with_confidence(features.condition, features.exemplar,
                                                          match.context.exemplar_latent.to(device), prior=features.prior,
                                                          groups=features.groups, restriction=features.restriction)
