"""Deterministic DDIM inversion and dual diffusion implicit bridges (DDIB, Su et al., ICLR 2023).

DDIM with eta = 0 follows the probability-flow ODE of the model's Gaussian path
x = alpha(sigma) x0 + sigma eps (:mod:`midms_core.noise_paths`). Run from low to high sigma it
maps a clean latent to the noise that regenerates it (Song et al. 2021, section 4.3):

    x0_hat = D(x_i, sigma_i),  eps_hat = (x_i - alpha_i x0_hat) / sigma_i,
    x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} eps_hat,          sigma_{i+1} > sigma_i,

the same update as the descending DDIM step, with the clean estimate read at the START of the
step: explicit Euler on the ODE, exact when x0_hat does not change along the step's line.
(diffusers' DDIMInverseScheduler pipelines read the denoiser on x_i at the NEXT timestep
instead; both are first order, their numbers differ.)

The first step of an inversion that starts from a clean latent (sigma_0 = 0) cannot read eps at
sigma 0. As in diffusers' DDIM inversion, the clean latent is its own x0_hat there, and eps_hat
is read from the denoiser evaluated on the clean latent at the next sigma:

    eps_hat = (x0 - alpha_1 D(x0, sigma_1)) / sigma_1,  x_1 = alpha_1 x0 + sigma_1 eps_hat.

DDIB: invert with the source denoiser up to the top of a schedule, then run DDIM down the same
schedule with the target denoiser. With the same denoiser both ways it is the round trip whose
error says whether the settings invert.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from .noise_paths import EPSILON, GaussianPath
from .sampler import Callback, Denoiser, sample_ddim
from .validation import check_tensor

__all__ = ["inversion_sigmas", "invert_ddim", "bridge", "relative_error"]


def _check_ascending(where: str, x: Tensor, sigmas: Tensor) -> None:
    check_tensor(where, "x", x, 4, "(B, C, H, W)")
    check_tensor(where, "sigmas", sigmas, 1, "(steps + 1,) ascending")
    if sigmas.shape[0] < 2:
        raise ValueError(f"{where}: 'sigmas' needs at least 2 values (a start and an end), got {sigmas.shape[0]}")
    if bool((sigmas < 0).any()) or bool((sigmas[1:] <= sigmas[:-1]).any()):
        raise ValueError(f"{where}: 'sigmas' must be non-negative and strictly increasing (an inversion runs from "
                         f"low to high noise), got {sigmas.tolist()}")


def inversion_sigmas(sigmas: Tensor) -> Tensor:
    """The ascending schedule that inverts a sampling schedule: (n + 1,) descending (normally
    ending at 0) -> the same values from last to first. Repeated values (some schedulers end
    with two zeros) are dropped, since a zero-length step does nothing."""
    check_tensor("inversion_sigmas", "sigmas", sigmas, 1, "(steps + 1,) descending")
    flipped = sigmas.flip(0)
    keep = torch.ones_like(flipped, dtype=torch.bool)
    keep[1:] = flipped[1:] != flipped[:-1]
    return flipped[keep]


@torch.no_grad()
def invert_ddim(
    denoise: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    path: GaussianPath = EPSILON,
    callback: Optional[Callback] = None,
) -> Tensor:
    """DDIM inversion of ``x`` at sigmas[0] (0 = a clean latent) up the ascending schedule
    ``sigmas``; returns x at sigmas[-1]. One denoiser call per step (module docstring).

    denoise(x, sigma) -> x0_hat with sigma (B,); x: (B, C, H, W); sigmas: (n + 1,) ascending.
    ``callback`` gets {"i", "x", "sigma", "sigma_next", "denoised"} after each step.
    """
    where = "invert_ddim"
    _check_ascending(where, x, sigmas)
    s_in = x.new_ones(x.shape[0])
    for i in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if float(sigma) == 0.0:
            # from a clean latent: x0_hat = x, eps read at the next sigma (module docstring)
            at_next = denoise(x, sigma_next * s_in)
            alpha = path.alpha(torch.tensor(float(sigma_next), dtype=torch.float64)).to(x.dtype)
            eps = (x - alpha * at_next) / sigma_next.to(x.dtype)
            x0_hat = at_next
            x = alpha * x + sigma_next.to(x.dtype) * eps
        else:
            x0_hat = denoise(x, sigma * s_in)
            x = path.step(x, x0_hat, sigma, sigma_next)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": x0_hat})
    return x


def bridge(
    denoise_source: Denoiser,
    denoise_target: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    path: GaussianPath = EPSILON,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Tensor:
    """DDIB: invert the clean latent ``x`` with ``denoise_source`` up the sampling schedule
    ``sigmas`` (descending, ending at 0; its first value is how deep the bridge goes), then
    regenerate with ``denoise_target`` down the same schedule (DDIM, eta 0). Both denoisers
    work in the same latent space on the same noise path. Returns the target's clean latent.

    Callback dicts carry "stage": "invert" or "regenerate".
    """
    check_tensor("bridge", "sigmas", sigmas, 1, "(steps + 1,) descending, ending at 0")
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"bridge: 'sigmas' must end at 0 (the bridge starts and ends at clean latents), "
                         f"got {sigmas.tolist()}")

    def staged(stage: str) -> Optional[Callback]:
        return None if callback is None else (lambda info: callback({**info, "stage": stage}))

    top = invert_ddim(denoise_source, x, inversion_sigmas(sigmas), path, staged("invert"))
    return sample_ddim(denoise_target, top, sigmas, 0.0, callback=staged("regenerate"), path=path)


def relative_error(result: Tensor, reference: Tensor) -> Tensor:
    """Per-sample relative RMS error ||result - reference|| / ||reference||, (B,) float64:
    the reconstruction readout of a round trip (0 = exact)."""
    check_tensor("relative_error", "result", result, 4, "(B, C, H, W)")
    check_tensor("relative_error", "reference", reference, 4, "(B, C, H, W)")
    if result.shape != reference.shape:
        raise ValueError(f"relative_error: shapes differ: {tuple(result.shape)} vs {tuple(reference.shape)}")
    diff = (result.double() - reference.double()).flatten(1).norm(dim=1)
    return diff / reference.double().flatten(1).norm(dim=1).clamp_min(1e-12)
