"""Sigma schedules of a host model: its full table, and what the host's BasicScheduler gives."""

from __future__ import annotations

from types import SimpleNamespace

import torch

import comfy.samplers

from .noise_paths import model_sampling


def model_sigmas(sampling) -> torch.Tensor:
    """The full sigma table (the training timesteps, ascending) of a host model sampling object
    (:func:`~.noise_paths.model_sampling`), float32 on the CPU."""
    return sampling.sigmas.float().cpu()


def effective_depth(model, sigma_top: float) -> float:
    """The share of the ModelPatcher ``model``'s timesteps whose sigma is at most ``sigma_top``:
    the depth a schedule that starts at ``sigma_top`` really reaches (a scheduler places its steps
    on the model's own timesteps, so nearby depths can give the same schedule)."""
    table = model_sigmas(model_sampling(model))
    return float((table <= float(sigma_top) * (1 + 1e-6)).sum()) / table.shape[0]


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
