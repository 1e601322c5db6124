"""How a model's noisy latent relates to its clean latent: one Gaussian path per model family.

Every model ComfyUI samples is trained on a Gaussian path x = alpha(sigma) * x0 + sigma * eps
(in the host's sampling space, where the schedule is given as sigmas):

* epsilon and v-prediction models (SD1.5, SD2, SDXL): alpha = 1, so x = x0 + sigma * eps (the
  k-diffusion space; a VP latent z = x / sqrt(1 + sigma^2));
* rectified-flow models (SD3.x, Flux; the host's CONST sampling): alpha = 1 - sigma,
  x = (1 - sigma) * x0 + sigma * eps, sigma in (0, 1].

The stochastic DDIM step from sigma_t to sigma_s < sigma_t, given the clean estimate x0 and
eps = (x - alpha_t x0) / sigma_t, is the DDIM posterior of Song et al. (2021, Eq. 12) written for
a general Gaussian path (Kingma et al. 2021, "Variational Diffusion Models", Eq. 28-30):

    var_{t|s}  = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2        (forward transition s -> t)
    var_post   = var_{t|s} * sigma_s^2 / sigma_t^2                  (posterior q(x_s | x_t, x0))
    var        = eta^2 * var_post
    x_s        = alpha_s x0 + sqrt(sigma_s^2 - var) * eps + sqrt(var) * noise.

For alpha = 1 this is exactly the DDIM update of ``sampler.ddim_step`` (alpha_bar = 1 / (1 +
sigma^2)); with eta = 0 it is the host's Euler step for both paths. With an exact x0 and
eps ~ N(0, I) it keeps the path's marginal at sigma_s for every eta (the eps and noise
coefficients' squares sum to sigma_s^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .validation import check_choice, check_in_range

#: the Gaussian paths a host model can sample on
PATH_KINDS = ("epsilon", "rectified_flow")

__all__ = ["PATH_KINDS", "GaussianPath", "EPSILON", "RECTIFIED_FLOW"]


@dataclass(frozen=True)
class GaussianPath:
    """x = alpha(sigma) * x0 + sigma * eps, with alpha = 1 ("epsilon") or 1 - sigma
    ("rectified_flow"). Sigmas are floats or 0-d tensors; latents (B, C, H, W)."""

    kind: str = "epsilon"

    def __post_init__(self) -> None:
        check_choice("GaussianPath", "kind", self.kind, PATH_KINDS)

    def alpha(self, sigma: Tensor) -> Tensor:
        """Signal coefficient at ``sigma`` (float64 0-d tensor in, same out)."""
        return torch.ones_like(sigma) if self.kind == "epsilon" else 1 - sigma

    def noise(self, x0: Tensor, eps: Tensor, sigma: float | Tensor) -> Tensor:
        """A clean latent noised to ``sigma``: alpha(sigma) * x0 + sigma * eps."""
        s = torch.tensor(float(sigma), dtype=torch.float64)
        return x0 * self.alpha(s).to(x0.dtype) + eps * s.to(x0.dtype)

    def step(self, x: Tensor, x0: Tensor, sigma: float | Tensor, sigma_next: float | Tensor,
             eta: float = 0.0, noise: Optional[Tensor] = None) -> Tensor:
        """One DDIM update from ``sigma`` to ``sigma_next`` (module docstring) given the clean
        estimate ``x0``; ``noise`` (like x) is needed when eta > 0 and sigma_next > 0."""
        check_in_range("GaussianPath.step", "eta", eta, 0.0, 1.0)
        t = torch.tensor(float(sigma), dtype=torch.float64)  # on the CPU: some devices (MPS) have no float64
        s = torch.tensor(float(sigma_next), dtype=torch.float64)
        if float(s) == 0.0:
            return x0
        a_t, a_s = self.alpha(t), self.alpha(s)
        eps = (x - x0 * a_t.to(x.dtype)) / t.to(x.dtype)
        if eta == 0.0:
            return x0 * a_s.to(x.dtype) + eps * s.to(x.dtype)
        if noise is None:
            raise ValueError("GaussianPath.step: eta > 0 needs 'noise' shaped like 'x'")
        transition = t**2 - (a_t / a_s) ** 2 * s**2
        # a step up in noise (s > t) has no posterior; clamp so the square roots stay real
        var = (eta**2 * transition * s**2 / t**2).clamp(min=0.0, max=float(s**2))
        return x0 * a_s.to(x.dtype) + eps * (s**2 - var).sqrt().to(x.dtype) + noise * var.sqrt().to(x.dtype)


EPSILON = GaussianPath("epsilon")
RECTIFIED_FLOW = GaussianPath("rectified_flow")
