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
