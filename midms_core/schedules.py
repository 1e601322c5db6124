"""Noise schedules in the two conventions MIDMs meets: alpha-bar (the paper, LDM) and sigma
(ComfyUI / k-diffusion, where x = x0 + sigma * eps).

For the discrete epsilon-prediction models both use, the two are one-to-one:
sigma = sqrt((1 - alpha_bar) / alpha_bar) and alpha_bar = 1 / (1 + sigma^2); the variance-
preserving latent z = sqrt(alpha_bar) * x.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .validation import check_in_range, check_positive, check_tensor


def ldm_alphas_cumprod(
    beta_start: float = 0.00085, beta_end: float = 0.012, timesteps: int = 1000
) -> Tensor:
    """alpha_bar for LDM's "linear" schedule (linear in sqrt(beta)), float64 (T,).

    Defaults are Stable Diffusion's; the MIDMs CelebA-HQ model uses 0.0015 -> 0.0195.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def sigma_from_alpha_bar(alpha_bar: Tensor) -> Tensor:
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def alpha_bar_from_sigma(sigma: Tensor) -> Tensor:
    return 1 / (1 + sigma**2)


def strength_timesteps(timesteps: int, steps: int, strength: float = 0.25) -> list[int]:
    """Descending timesteps for ``steps`` DDIM steps that start ``strength`` of the way into a
    ``timesteps``-long schedule, with an integer spacing of (start + 1) // steps as in DDIM's
    uniform grid.

    strength 0.25, 4 steps of 1000 gives [249, 187, 125, 63]: the official MIDMs timesteps,
    without its off-by-one (it noises to t = 311 but denoises from 249).
    """
    check_in_range("strength_timesteps", "strength", strength, 1e-6, 1.0)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"strength_timesteps: 'steps' must be an integer >= 1, got {steps!r}")
    start = max(int(round(strength * timesteps)) - 1, 0)
    if steps > start + 1:
        raise ValueError(
            f"strength_timesteps: {steps} steps do not fit in the first {start + 1} timesteps "
            f"(strength {strength} of {timesteps}); use fewer steps or a higher strength"
        )
    spacing = (start + 1) // steps
    return [start - k * spacing for k in range(steps)]


def strength_sigmas(model_sigmas: Tensor, steps: int, strength: float = 0.25) -> Tensor:
    """The sigma schedule for a partial run: ``steps`` sigmas from :func:`strength_timesteps`
    followed by 0, as ComfyUI samplers expect.

    model_sigmas: (T,) the model's sigma for each discrete timestep, ascending.
    Returns (steps + 1,) in model_sigmas' dtype.
    """
    check_tensor("strength_sigmas", "model_sigmas", model_sigmas, 1, "(T,)")
    check_positive("strength_sigmas", "strength", strength, upper=1.0)
    ts = strength_timesteps(model_sigmas.shape[0], steps, strength)
    return torch.cat([model_sigmas[ts], model_sigmas.new_zeros(1)])
