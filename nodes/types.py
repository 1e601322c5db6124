"""The pack's own ComfyUI types: plain containers passed between MIDMs nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..midms_core import Matcher, RewarpSettings

CONTEXT = "MIDMS_CONTEXT"
MATCHER = "MIDMS_MATCHER"
SETTINGS = "MIDMS_SETTINGS"
MATCH = "MIDMS_MATCH"


@dataclass
class MIDMsContext:
    """Both sides of a translation, encoded once.

    condition_image / exemplar_image: (B, 3, H, W) float [0, 1], channels first;
    condition_latent / exemplar_latent: (B, c, h, w) RAW VAE latents (ComfyUI LATENT space);
    the model-scaled latents are made where the model is known (``process_latent_in``).
    vae: the host's VAE, kept for previews.
    """

    condition_image: Tensor
    exemplar_image: Tensor
    condition_latent: Tensor
    exemplar_latent: Tensor
    vae: Any = None


@dataclass(frozen=True)
class MIDMsSettings:
    """Everything the interleaved sampler needs besides the model and the match.

    rewarp: how to re-match and blend (tau, threshold, mask, which steps).
    eta: DDIM stochasticity of the main run (0 = deterministic).
    refine_strength: re-noise the result to this fraction of the schedule and denoise again
        (0 = off; paper appendix about 0.1); refine_steps steps with eta = 1 (official).
    """

    rewarp: RewarpSettings = field(default_factory=RewarpSettings)
    eta: float = 0.0
    refine_strength: float = 0.0
    refine_steps: int = 20


@dataclass
class MIDMsMatch:
    """A context and the matcher that relates its sides, with the settings to sample with.

    ``bound`` caches the matcher's features per device (see ``nodes.common.bind``), so the
    correspondence node and the sampler that follows compute them once (with the diffusion
    matcher, each bind costs U-Net passes).
    """

    context: MIDMsContext
    matcher: Matcher
    settings: MIDMsSettings = field(default_factory=MIDMsSettings)
    bound: dict = field(default_factory=dict, repr=False, compare=False)
