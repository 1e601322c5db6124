"""Where the host wants tensors, and how its interrupt button reaches midms_core's loops."""

from __future__ import annotations

import torch

import comfy.model_management as mm

from ..midms_core.cancellation import cancellable


def compute_device() -> torch.device:
    """The host's device for model passes and matching."""
    return mm.get_torch_device()


def output_device() -> torch.device:
    """The host's device for tensors handed to the next node."""
    return mm.intermediate_device()


def empty_cache() -> None:
    """Give the device memory of finished work back (the host's own clean-up)."""
    mm.soft_empty_cache()


def interruptible():
    """Context in which midms_core's streamed loops honour the host's interrupt button."""
    return cancellable(mm.throw_exception_if_processing_interrupted)
