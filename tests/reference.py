"""Plain float64 transcriptions of the paper's equations, written for clarity, not speed.

Tests compare ``midms_core`` against these. They deliberately share no code with it.
"""

from __future__ import annotations

import math

import torch


def correlation(sx: torch.Tensor, sy: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Eq. 5 for one pair: sx (C, Nx), sy (C, Ny) -> C (Nx, Ny), cosine of channel-centred vectors."""
    sx = sx.double()
    sy = sy.double()
    out = torch.empty(sx.shape[1], sy.shape[1], dtype=torch.float64)
    cx = sx - sx.mean(dim=0, keepdim=True)
    cy = sy - sy.mean(dim=0, keepdim=True)
    for u in range(sx.shape[1]):
        a = cx[:, u]
        dots = (a[:, None] * cy).sum(dim=0)
        out[u] = dots / (a.norm() * cy.norm(dim=0))
    return out.clamp(min=0) if clamp else out


def soft_warp(sx: torch.Tensor, sy: torch.Tensor, values: torch.Tensor, tau: float, clamp: bool = True) -> torch.Tensor:
    """Eq. 6 for one pair: R(u) = sum_v softmax_v(C(u, v) / tau) values(v).

    sx (C, Nx), sy (C, Ny), values (Cv, Ny) -> (Cv, Nx).
    """
    c = correlation(sx, sy, clamp)
    logits = c / tau
    weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return values.double() @ weights.T


def pixel_grid(h: int, w: int) -> torch.Tensor:
    """(2, h*w): x then y pixel coordinates, row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()])


def bilinear(field: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """field (C, H, W) at continuous (x, y), coordinates clamped into the grid first."""
    _, h, w = field.shape
    x = min(max(x, 0.0), w - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    f = field.double()
    return (
        f[:, y0, x0] * (1 - fx) * (1 - fy)
        + f[:, y0, x1] * fx * (1 - fy)
        + f[:, y1, x0] * (1 - fx) * fy
        + f[:, y1, x1] * fx * fy
    )


def cycle_distance(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Eq. 10 for one pair: forward (2, Hx, Wx), backward (2, Hy, Wy) -> (Hx, Wx) |B(F(u)) - u|."""
    _, hx, wx = forward.shape
    out = torch.empty(hx, wx, dtype=torch.float64)
    for y in range(hx):
        for x in range(wx):
            fx, fy = float(forward[0, y, x]), float(forward[1, y, x])
            back = bilinear(backward, fx, fy)
            out[y, x] = math.hypot(float(back[0]) - x, float(back[1]) - y)
    return out


def ddim_alpha_bar(eps_model, z_start: torch.Tensor, alpha_bars: list[float], timesteps: list[float], eta: float = 0.0, noises=None) -> torch.Tensor:
    """DDIM (paper Eq. 3-4, Song et al. Eq. 12) in alpha-bar form, float64.

    z_start is the variance-preserving latent at alpha_bars[0]; alpha_bars/timesteps list each
    step's level, the last alpha_bar being the target (1.0 for a clean sample).
    eps_model(z, t) predicts the noise. Returns the VP latent at the last level.
    """
    z = z_start.double()
    for i in range(len(alpha_bars) - 1):
        a, a_prev = alpha_bars[i], alpha_bars[i + 1]
        eps = eps_model(z, timesteps[i]).double()
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)  # Eq. 3
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        z = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps  # Eq. 4
        if sigma > 0:
            z = z + sigma * noises[i].double()
    return z


def soft_warp_with_locality(sx, sy, values, tau, target, sigma, grid_y, clamp=True, direction="forward"):
    """Eq. 6 with a Gaussian locality term, one pair, float64, written out per position:
    L(u, v) = C(u, v) / tau - |v - target(u)|^2 / (2 sigma(u)^2).

    sx (C, Nx), sy (C, Ny), target (2, Nx) exemplar cells, sigma a number or (Nx,), grid_y
    (Hy, Wy). "forward": softmax over v for each u, values (Cv, Ny) -> (Cv, Nx);
    "backward": softmax over u for each v, values (Cv, Nx) -> (Cv, Ny).
    """
    c = correlation(sx, sy, clamp)
    v = pixel_grid(*grid_y)  # (2, Ny)
    nx = sx.shape[1]
    sig = torch.full((nx,), float(sigma), dtype=torch.float64) if not torch.is_tensor(sigma) else sigma.double().flatten()
    logits = torch.empty_like(c)
    for u in range(nx):
        d2 = ((v - target[:, u : u + 1].double()) ** 2).sum(dim=0)
        logits[u] = c[u] / tau - d2 / (2 * sig[u] ** 2)
    if direction == "backward":
        logits = logits.T
    weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return values.double() @ weights.T
