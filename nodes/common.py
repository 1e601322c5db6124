"""Glue shared by the nodes: error naming, devices, binding a matcher to a context."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

import comfy.model_management as mm

from ..midms_core import EPSILON, RECTIFIED_FLOW, GaussianPath, MatchFeatures, MatchSide, cancellable
from .types import MIDMsContext, MIDMsMatch

CATEGORY = "MIDMs"


class NodeInputError(ValueError):
    """Bad input to a MIDMs node; the message names the node, the input and what to do."""


# The host reports an error's type as "<module>.<name>"; current hosts import packs under their
# folder's full path, which would put a path on screen. One stable name on every host. (No module
# "MIDMs" exists, so instances cannot be pickled; nothing in the host pickles exceptions.)
NodeInputError.__module__ = "MIDMs"


def check_widget_values(node_class, display_name: str, values: dict) -> None:
    """NodeInputError for a widget value outside what the node declares: a number beyond its
    min / max, a choice not in its list, a non-boolean BOOLEAN. Hosts check only some of this
    (the 2024 host skips optional inputs, and every input reached only through optional links),
    and an API prompt or an old saved workflow can carry anything."""
    spec = node_class.INPUT_TYPES()
    own_checks = set(getattr(node_class, "VALIDATED_BY_NODE", ()))  # inputs the node checks itself
    for group in ("required", "optional"):
        for name, declared in (spec.get(group) or {}).items():
            if name not in values or name in own_checks:
                continue
            value, kind = values[name], declared[0]
            options = declared[1] if len(declared) > 1 and isinstance(declared[1], dict) else {}
            if isinstance(kind, (list, tuple)):
                if value not in kind:
                    raise NodeInputError(f"{display_name}: '{name}' is {value!r}, not one of {list(kind)}; pick one of "
                                         "those (a workflow saved by another version of the pack may carry an old value)")
            elif kind == "BOOLEAN":
                if not isinstance(value, bool):
                    raise NodeInputError(f"{display_name}: '{name}' must be true or false, got {value!r}")
            elif kind in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                        or (kind == "INT" and not float(value).is_integer()):
                    raise NodeInputError(f"{display_name}: '{name}' must be {'a whole' if kind == 'INT' else 'a'} number, "
                                         f"got {value!r}")
                low, high = options.get("min"), options.get("max")
                if (low is not None and value < low) or (high is not None and value > high):
                    show = (lambda v: f"{int(v)}") if kind == "INT" else (lambda v: f"{v:g}")
                    allowed = " and ".join(part for part in (
                        None if low is None else f">= {show(low)}", None if high is None else f"<= {show(high)}") if part)
                    raise NodeInputError(f"{display_name}: '{name}' is {show(value)}, but it must be {allowed}; "
                                         "set it within that range")


def node_errors(display_name: str) -> Callable:
    """Check the widget values against the node's declaration (:func:`check_widget_values`),
    then prefix ValueErrors from midms_core with the node's display name, so the UI says which
    node failed; errors that already name a node pass through unchanged."""

    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(self, *args, **kwargs):
            try:
                # hosts pass inputs by keyword; scripts and tests may pass them by position
                values = signature.bind_partial(self, *args, **kwargs).arguments
                check_widget_values(type(self), display_name, values)
                return fn(self, *args, **kwargs)
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
        with interruptible():
            match.bound[key] = match.matcher.bind(*match_sides(match.context, device))
    return match.bound[key]


def interruptible():
    """Context in which midms_core's streamed loops honour the host's interrupt button."""
    return cancellable(mm.throw_exception_if_processing_interrupted)


def initial_warp(match: MIDMsMatch, device: torch.device):
    """The first, cross-domain warp of the exemplar's RAW latent, with confidence (a convex
    combination commutes with the model's affine latent scaling, so warping raw or scaled latents
    gives the same result)."""
    features = bind(match, device)
    with interruptible():
        return match.settings.rewarp.warp(features.condition, features.exemplar, match.context.exemplar_latent.to(device),
                                         features.prior)


def compute_device() -> torch.device:
    return mm.get_torch_device()


def output_device() -> torch.device:
    return mm.intermediate_device()


def is_rectified_flow(base_model) -> bool:
    """True for a host model sampled as rectified flow (the host's CONST: SD3.x, Flux). Hosts
    before CONST existed (2024-03) have none."""
    import comfy.model_sampling

    const = getattr(comfy.model_sampling, "CONST", None)
    return const is not None and isinstance(base_model.model_sampling, const)


def noise_path(base_model) -> GaussianPath:
    """The model's noise path from the host's model sampling: CONST (SD3.x, Flux: rectified
    flow, x = (1 - sigma) x0 + sigma eps) or the epsilon / v-prediction relation x = x0 + sigma
    eps (every other model the host samples in its sigma space). Hosts before CONST existed
    (2024-03) have only the latter."""
    return RECTIFIED_FLOW if is_rectified_flow(base_model) else EPSILON
