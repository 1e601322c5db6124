"""Plain sampler loops written out in the tests, to compare the pack's SAMPLER against.

``posterior_loop(alpha, refine_sigmas)`` is a host KSAMPLER function: stochastic DDIM with
eta = 1 (the DDIM posterior of a Gaussian path x = alpha(sigma) x0 + sigma eps) over the host's
guided denoiser, drawing its noise from the SAMPLER's stream (seeded seed + 1); with
``refine_sigmas`` it then re-noises the result to refine_sigmas[0] and runs the same loop over
them, as the paper's final refinement does.

    alpha = 1          the epsilon / v-prediction relation in the host's sigma space
    alpha = 1 - sigma  rectified flow (the host's CONST: SD3, Flux)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

EPSILON_ALPHA: Callable[[float], float] = lambda s: 1.0  # noqa: E731
FLOW_ALPHA: Callable[[float], float] = lambda s: 1.0 - s  # noqa: E731


def posterior_loop(alpha: Callable[[float], float], refine_sigmas: Optional[torch.Tensor] = None):
    def steps(model, x, sigmas, extra_args, g):
        for i in range(len(sigmas) - 1):
            t, s = float(sigmas[i]), float(sigmas[i + 1])
            x0 = model(x, sigmas[i] * x.new_ones(x.shape[0]), **extra_args)
            if s == 0:
                x = x0
                continue
            eps = (x - alpha(t) * x0) / t
            var = (t**2 - (alpha(t) / alpha(s)) ** 2 * s**2) * s**2 / t**2  # eta = 1: the posterior
            z = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.dtype)
            x = alpha(s) * x0 + (s**2 - var) ** 0.5 * eps + var**0.5 * z
        return x

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        g = torch.Generator().manual_seed(int(extra_args["seed"]) + 1)  # the SAMPLER's noise stream
        x = steps(model, x, sigmas, extra_args, g)
        if refine_sigmas is not None:
            start = float(refine_sigmas[0])
            z = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.dtype)
            x = alpha(start) * x + start * z
            x = steps(model, x, refine_sigmas.to(x.device), extra_args, g)
        return x

    return sample


def inversion_loop(alpha: Callable[[float], float]):
    """A host KSAMPLER function: DDIM inversion written out as the ODE dx/dsigma = eps_hat + alpha'(sigma) x0_hat
    in its plain Euler form for the two paths the host samples:

        x_next = x + (s - t) * (eps_hat + alpha'(t) x0_hat),   eps_hat = (x - alpha(t) x0_hat) / t,

    alpha' = 0 (epsilon) or -1 (rectified flow), from the host's clean latent up the reversed
    schedule; from sigma 0, x0_hat is the clean latent and eps_hat is read at the next sigma.
    Returns the top state divided by alpha(top), the host's convention for a noisy LATENT."""
    slope = 0.0 if alpha(0.5) == 1.0 else -1.0

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        up = [float(s) for s in sigmas.flip(0)]
        x = model.latent_image.to(x.dtype)
        ones = x.new_ones(x.shape[0])
        for t, s in zip(up[:-1], up[1:]):
            if t == 0:
                pred = model(x, s * ones, **extra_args)
                x0_hat, eps_hat = x, (x - alpha(s) * pred) / s
            else:
                x0_hat = model(x, t * ones, **extra_args)
                eps_hat = (x - alpha(t) * x0_hat) / t
            x = x + (s - t) * (eps_hat + slope * x0_hat)
        return x / alpha(up[-1])

    return sample
