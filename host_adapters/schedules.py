"""Sigma schedules of a host model: its full table, and what the host's BasicScheduler gives."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import comfy.samplers


def model_sigmas(base_model) -> torch.Tensor:
    """The model's full sigma table (its training timesteps, ascending), float32 on the CPU."""
    return base_model.model_sampling.sigmas.float().cpu()


def model_sampling(model):
    """The model sampling the host will run (with a ModelSamplingDiscrete / -Flux patch applied)."""
    get = getattr(model, "get_model_object", None)
    if get is not None:
        return get("model_sampling")
    return model.object_patches.get("model_sampling", model.model.model_sampling)  # the 2024 host


def basic_schedule(model, scheduler: str, steps: int, depth: float) -> torch.Tensor:
    """What the host's BasicScheduler gives for (scheduler, steps, denoise = depth): ``steps``
    steps over the last ``depth`` of a schedule of int(steps / depth) steps (made here from the
    host's scheduler functions, not by calling that node, whose class is not a stable API)."""
    total = steps if depth >= 1.0 else int(steps / depth)
    sampling = model_sampling(model)
    calculate = getattr(comfy.samplers, "calculate_sigmas", None)
    if calculate is not None:
        sigmas = calculate(sampling, scheduler, total)
    else:  # the 2024 host's scheduler functions read model.model_sampling
        sigmas = comfy.samplers.calculate_sigmas_scheduler(SimpleNamespace(model_sampling=sampling), scheduler, total)
    return sigmas.cpu()[-(steps + 1):]
