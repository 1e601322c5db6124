"""DDIM inversion and DDIB (midms_core.inversion) against independent float64 transcriptions,
exact round trips with a toy denoiser whose clean estimate is constant along DDIM's lines, and
a round-trip error that falls with the step count on a denoiser whose ODE is curved."""

from __future__ import annotations

import math

import pytest
import torch

from midms_core.inversion import bridge, invert_ddim, inversion_sigmas, relative_error
from midms_core.noise_paths import EPSILON, RECTIFIED_FLOW
from midms_core.sampler import sample_ddim

SHAPE = (2, 3, 4, 5)


def _latent(seed: int) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def curved_denoiser(scale: float = 1.0):
    """A smooth nonlinear stand-in for a network: its x0 estimate changes along DDIM's lines."""
    mix = torch.randn(3, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.5

    def denoise(x, sigma):
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        mixed = torch.einsum("dc,bchw->bdhw", mix, torch.tanh(x / (1 + s)))
        return scale * (x / (1 + s**2) + mixed * s / (1 + s))

    return denoise


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)])


def flow_sigmas(n: int, top: float = 1.0) -> torch.Tensor:
    return torch.cat([torch.linspace(top, top / n, n, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])


# ---------------------------------------------------------------------------------------------
# independent transcriptions
# ---------------------------------------------------------------------------------------------
def inverse_ddim_alpha_bar(denoise, x0, ascending):
    """The epsilon model's DDIM inversion written in the variance-preserving alpha-bar form,
    the denoiser read at the start of each step: z_next = sqrt(a_next) x0_pred + sqrt(1 - a_next) eps_pred,
    with z = sqrt(a) x, a = 1 / (1 + sigma^2); from a clean latent x0_pred is the latent itself
    and eps_pred is read at the next timestep."""
    x = x0.clone()
    batch = torch.ones(x.shape[0], dtype=torch.float64)
    for i in range(len(ascending) - 1):
        s, s_next = float(ascending[i]), float(ascending[i + 1])
        a_next = 1 / (1 + s_next**2)
        if s == 0:
            pred = denoise(x, s_next * batch)
            eps = (x - pred) / s_next   # eps-prediction: x = x0 + sigma eps
            x0_pred = x
        else:
            a = 1 / (1 + s**2)
            z = x * a**0.5
            x0_pred = denoise(x, s * batch)
            eps = (z - a**0.5 * x0_pred) / (1 - a) ** 0.5
        z_next = a_next**0.5 * x0_pred + (1 - a_next) ** 0.5 * eps
        x = z_next / a_next**0.5
    return x


def inverse_flow_euler(denoise, x0, ascending):
    """The rectified-flow ODE dx/dsigma = eps_hat - x0_hat (x = (1 - sigma) x0 + sigma eps),
    integrated with Euler from low to high sigma, the velocity read at the start of each step
    (from a clean latent: x0_hat = x, eps_hat read at the next sigma)."""
    x = x0.clone()
    batch = torch.ones(x.shape[0], dtype=torch.float64)
    for i in range(len(ascending) - 1):
        s, s_next = float(ascending[i]), float(ascending[i + 1])
        if s == 0:
            pred = denoise(x, s_next * batch)
            x0_hat, eps_hat = x, (x - (1 - s_next) * pred) / s_next
        else:
            x0_hat = denoise(x, s * batch)
            eps_hat = (x - (1 - s) * x0_hat) / s
        x = x + (s_next - s) * (eps_hat - x0_hat)
    return x


def test_epsilon_inversion_equals_the_alpha_bar_transcription():
    denoise = curved_denoiser()
    x0 = _latent(1)
    ascending = inversion_sigmas(karras(6, 0.03, 14.6))
    got = invert_ddim(denoise, x0, ascending, EPSILON)
    want = inverse_ddim_alpha_bar(denoise, x0, ascending)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # and from a noisy start part-way up (no clean first step)
    start = ascending[2:]
    assert torch.allclose(invert_ddim(denoise, x0, start, EPSILON), inverse_ddim_alpha_bar(denoise, x0, start),
                          rtol=1e-12, atol=1e-12)


def test_flow_inversion_equals_the_velocity_euler_transcription():
    denoise = curved_denoiser(0.8)
    x0 = _latent(2)
    ascending = inversion_sigmas(flow_sigmas(5, top=0.9))
    got = invert_ddim(denoise, x0, ascending, RECTIFIED_FLOW)
    assert torch.allclose(got, inverse_flow_euler(denoise, x0, ascending), rtol=1e-12, atol=1e-12)
    # the paths differ: an epsilon inversion of the same run is another result
    assert not torch.allclose(invert_ddim(denoise, x0, ascending, EPSILON), got, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# exact round trips and convergence
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,sigmas", [(EPSILON, karras(5, 0.1, 14.6)[:-1]), (RECTIFIED_FLOW, flow_sigmas(5, 0.95)[:-1])])
def test_round_trip_is_exact_when_x0_hat_is_constant_along_ddim_lines(path, sigmas):
    """A single-point data set: D(x, sigma) = mu is the exact denoiser, every DDIM line keeps it,
    so inverting from a noisy state and regenerating lands on that state to rounding."""
    mu = _latent(3)

    def denoise(x, sigma):
        return mu.expand_as(x)

    start = path.noise(mu, _latent(4), sigmas[-1])  # a state at the lowest sigma of the run
    top = invert_ddim(denoise, start, sigmas.flip(0), path)
    assert not torch.allclose(top, start, atol=1e-3)
    back = sample_ddim(denoise, top, sigmas, 0.0, path=path)
    assert torch.allclose(back, start, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", [EPSILON, RECTIFIED_FLOW])
def test_round_trip_error_falls_with_steps(path):
    denoise = curved_denoiser()
    x0 = 0.5 * _latent(5)
    errors = []
    for n in (2, 4, 8, 16, 32, 64):
        sigmas = karras(n, 0.03, 14.6) if path is EPSILON else flow_sigmas(n, top=0.98)
        errors.append(float(relative_error(bridge(denoise, denoise, x0, sigmas, path), x0).max()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25 * errors[0], errors


def ddim_alpha_bar(denoise, x, descending):
    """Deterministic DDIM down a schedule in the alpha-bar form (Song et al. Eq. 12, eta 0):
    z_next = sqrt(a_next) x0_pred + sqrt(1 - a_next) eps_pred, z = sqrt(a) x; at sigma 0 the
    result is x0_pred."""
    batch = torch.ones(x.shape[0], dtype=torch.float64)
    for i in range(len(descending) - 1):
        s, s_next = float(descending[i]), float(descending[i + 1])
        a, a_next = 1 / (1 + s**2), 1 / (1 + s_next**2)
        x0_pred = denoise(x, s * batch)
        eps = (x * a**0.5 - a**0.5 * x0_pred) / (1 - a) ** 0.5
        x = x0_pred if s_next == 0 else (a_next**0.5 * x0_pred + (1 - a_next) ** 0.5 * eps) / a_next**0.5
    return x


def test_bridge_inverts_with_the_source_and_regenerates_with_the_target():
    source, target = curved_denoiser(), curved_denoiser(0.5)
    x0 = _latent(6)
    sigmas = karras(4, 0.03, 3.0)
    stages = []
    got = bridge(source, target, x0, sigmas, EPSILON, callback=lambda info: stages.append(info["stage"]))
    want = ddim_alpha_bar(target, inverse_ddim_alpha_bar(source, x0, inversion_sigmas(sigmas)), sigmas)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert stages == ["invert"] * 4 + ["regenerate"] * 4
    assert not torch.allclose(got, bridge(source, source, x0, sigmas, EPSILON), atol=1e-3)


def test_inversion_from_a_clean_latent_converges_to_the_exact_ode_on_gaussian_data():
    """Data N(0, I): the exact denoiser is D(x, sigma) = x / (1 + sigma^2) and the probability-
    flow ODE dx/dsigma = (x - D) / sigma has the solution x(sigma) = x(0) sqrt(1 + sigma^2). The
    inversion from sigma 0 (its clean first step included) converges to it as steps grow."""
    def denoise(x, sigma):
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    x0 = _latent(12)
    errors = []
    for n in (4, 8, 16, 32, 64):
        ascending = inversion_sigmas(karras(n, 0.002, 14.6))
        top = invert_ddim(denoise, x0, ascending, EPSILON)
        exact = x0 * (1 + float(ascending[-1]) ** 2) ** 0.5
        errors.append(float(relative_error(top, exact).max()))
    # first order: each doubling of the steps about halves the error
    assert all(b < 0.6 * a for a, b in zip(errors, errors[1:])), errors


def test_one_denoiser_call_per_inversion_step():
    calls = []
    base = curved_denoiser()

    def denoise(x, sigma):
        calls.append(float(sigma[0]))
        return base(x, sigma)

    ascending = inversion_sigmas(karras(5, 0.03, 14.6))
    invert_ddim(denoise, _latent(7), ascending, EPSILON)
    # the clean first step reads the denoiser at the next sigma; every later step at its start
    assert calls == pytest.approx([float(ascending[1])] + [float(s) for s in ascending[1:-1]])


# ---------------------------------------------------------------------------------------------
# schedules, errors, readout
# ---------------------------------------------------------------------------------------------
def test_inversion_sigmas_flips_and_drops_repeats():
    sigmas = torch.tensor([14.6, 3.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert inversion_sigmas(sigmas).tolist() == [0.0, 0.5, 3.0, 14.6]


@pytest.mark.parametrize("bad,message", [
    (torch.tensor([1.0, 0.5, 0.0]), "strictly increasing"),
    (torch.tensor([0.0, 0.5, 0.5]), "strictly increasing"),
    (torch.tensor([-0.1, 0.5]), "non-negative"),
    (torch.tensor([0.5]), "at least 2"),
])
def test_bad_schedules_are_named(bad, message):
    with pytest.raises(ValueError, match=f"invert_ddim: 'sigmas'.*{message}"):
        invert_ddim(curved_denoiser(), _latent(0).float(), bad)


def test_bridge_needs_a_schedule_ending_at_zero():
    with pytest.raises(ValueError, match="bridge: 'sigmas' must end at 0"):
        bridge(curved_denoiser(), curved_denoiser(), _latent(0), torch.tensor([3.0, 0.5], dtype=torch.float64))


def test_relative_error_per_sample():
    ref = _latent(8)
    noisy = ref.clone()
    noisy[1] += 0.1 * _latent(9)[1]
    err = relative_error(noisy, ref)
    assert err[0] == 0
    want = (0.1 * _latent(9)[1]).norm() / ref[1].norm()
    assert math.isclose(float(err[1]), float(want), rel_tol=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(ref[:1], ref)
