"""Glue shared by the nodes: error naming, devices, binding a matcher to a context."""

from __future__ import annotations

import functools
from typing import Callable

import torch

import comfy.model_management as mm

from ..midms_core import MatchFeatures, MatchSide
from .types import MIDMsContext, MIDMsMatch

CATEGORY = "MIDMs"


class NodeInputError(ValueError):
    """Bad input to a MIDMs node; the message names the node, the input and what to do."""


def node_errors(display_name: str) -> Callable:
    """Prefix ValueErrors from midms_core with the node's display name, so the UI says which
    node failed; errors that already name a node pass through unchanged."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except NodeInputError:
                raise
            except ValueError as err:
                raise NodeInputError(f"{display_name}: {err}") from err

        return run

    return wrap


def match_sides(context: MIDMsContext, device: torch.device) -> tuple[MatchSide, MatchSide]:
    """The context's two sides as MatchSides on ``device`` (raw latents, channels-first images)."""
    cond = MatchSide(latent=context.condition_latent.to(device), image=context.condition_image.to(device))
    exem = MatchSide(latent=context.exemplar_latent.to(device), image=context.exemplar_image.to(device))
    return cond, exem


def bind(match: MIDMsMatch, device: torch.device) -> MatchFeatures:
    """Features of the match's pair on ``device``, computed once per match and device."""
    key = str(torch.device(device))
    if key not in match.bound:
        prepare = getattr(match.matcher, "prepare_for_host", None)
        if prepare is not None:
            prepare()  # e.g. learned networks: loaded through the host's model management
        match.bound[key] = match.matcher.bind(*match_sides(match.context, device))
    return match.bound[key]


def initial_warp(match: MIDMsMatch, device: torch.device):
    """The first, cross-domain warp of the exemplar's RAW latent, with confidence (a convex
    combination commutes with the model's affine latent scaling, so warping raw or scaled latents
    gives the same result)."""
    features = bind(match, device)
    return match.settings.rewarp.warp(features.condition, features.exemplar, match.context.exemplar_latent.to(device),
                                     features.prior)


def compute_device() -> torch.device:
    return mm.get_torch_device()


def output_device() -> torch.device:
    return mm.intermediate_device()
