"""Gaussian noise paths (epsilon and rectified flow) against independent float64 derivations."""

from __future__ import annotations

import pytest
import torch

from midms_core.noise_paths import EPSILON, RECTIFIED_FLOW, GaussianPath
from midms_core.sampler import ddim_step

PATHS = {"epsilon": (EPSILON, lambda s: 1.0), "rectified_flow": (RECTIFIED_FLOW, lambda s: 1.0 - s)}
STEPS = {"epsilon": [(14.6, 3.2), (3.2, 0.9), (0.9, 0.03)], "rectified_flow": [(1.0, 0.75), (0.75, 0.4), (0.4, 0.02)]}


def _tensors(seed=0, shape=(2, 4, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3)]


def posterior_by_conditioning(alpha, x_t, x0, t, s):
    """Mean and variance of q(x_s | x_t, x0) by conditioning the joint Gaussian of the forward
    Markov chain x_s = alpha(s) x0 + s e1, x_t = (alpha(t) / alpha(s)) x_s + sqrt(t^2 - (alpha(t) /
    alpha(s))^2 s^2) e2 (independent of the closed form in midms_core.noise_paths)."""
    ratio = alpha(t) / alpha(s)
    cov_st = ratio * s**2            # Cov(x_s, x_t)
    var_t = ratio**2 * s**2 + (t**2 - ratio**2 * s**2)  # = t^2
    mean = alpha(s) * x0 + cov_st / var_t * (x_t - alpha(t) * x0)
    var = s**2 - cov_st**2 / var_t
    return mean, var


@pytest.mark.parametrize("kind", list(PATHS))
def test_eta_one_is_the_ddpm_posterior(kind):
    path, alpha = PATHS[kind]
    x0, eps, z = _tensors(1)
    for t, s in STEPS[kind]:
        x_t = path.noise(x0, eps, t)
        mean, var = posterior_by_conditioning(alpha, x_t, x0, t, s)
        got = path.step(x_t, x0, t, s, eta=1.0, noise=z)
        assert torch.allclose(got, mean + var**0.5 * z, rtol=0, atol=1e-12), (kind, t, s)


@pytest.mark.parametrize("kind", list(PATHS))
def test_eta_zero_is_the_hosts_euler_step(kind):
    path, _ = PATHS[kind]
    x0, eps, _ = _tensors(2)
    for t, s in STEPS[kind]:
        x_t = path.noise(x0, eps, t)
        euler = x_t + (x_t - x0) / t * (s - t)  # k-diffusion's to_d / Euler, for every model type
        assert torch.allclose(path.step(x_t, x0, t, s), euler, rtol=0, atol=1e-12)
        # and the deterministic step lands exactly on the path with the same eps
        assert torch.allclose(path.step(x_t, x0, t, s), path.noise(x0, eps, s), rtol=0, atol=1e-12)


def ddim_vp(x_t, x0, t, s, eta, z):
    """Song et al. (2021) Eq. 12 in the variance-preserving form, written in the k-diffusion
    space x = z / sqrt(alpha_bar), alpha_bar = 1 / (1 + sigma^2)."""
    a_t, a_s = 1 / (1 + t**2), 1 / (1 + s**2)
    z_t = x_t * a_t**0.5
    eps = (z_t - a_t**0.5 * x0) / (1 - a_t) ** 0.5
    var = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
    z_s = a_s**0.5 * x0 + (1 - a_s - var) ** 0.5 * eps + var**0.5 * z
    return z_s / a_s**0.5


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_epsilon_path_is_ddim_in_its_variance_preserving_form(eta):
    x0, eps, z = _tensors(3)
    for t, s in STEPS["epsilon"]:
        x_t = EPSILON.noise(x0, eps, t)
        assert torch.allclose(EPSILON.step(x_t, x0, t, s, eta, z), ddim_vp(x_t, x0, t, s, eta, z), rtol=0, atol=1e-10)
        assert torch.equal(ddim_step(x_t, x0, t, s, eta, z), EPSILON.step(x_t, x0, t, s, eta, z))  # the public alias


@pytest.mark.parametrize("kind", list(PATHS))
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_marginal_is_kept_with_an_exact_x0(kind, eta):
    """x_t on the path and the exact x0: x_s - alpha(s) x0 has variance s^2 for every eta."""
    path, alpha = PATHS[kind]
    g = torch.Generator().manual_seed(4)
    n = 400_000
    x0 = torch.randn(n, generator=g, dtype=torch.float64).view(n, 1, 1, 1)
    eps = torch.randn(n, generator=g, dtype=torch.float64).view(n, 1, 1, 1)
    z = torch.randn(n, generator=g, dtype=torch.float64).view(n, 1, 1, 1)
    t, s = STEPS[kind][1]
    out = path.step(path.noise(x0, eps, t), x0, t, s, eta, z) - alpha(s) * x0
    assert abs(float(out.var()) / s**2 - 1) < 0.01
    assert abs(float(out.mean())) < 0.01 * s


def test_rectified_flow_noise_ends():
    x0, eps, _ = _tensors(5)
    assert torch.equal(RECTIFIED_FLOW.noise(x0, eps, 1.0), eps)
    assert torch.equal(RECTIFIED_FLOW.noise(x0, eps, 0.0), x0)
    assert torch.allclose(EPSILON.noise(x0, eps, 2.0), x0 + 2 * eps)
    # to sigma 0: the clean estimate, whatever eta
    assert torch.equal(RECTIFIED_FLOW.step(eps, x0, 1.0, 0.0, eta=1.0), x0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="GaussianPath: 'kind' must be one of"):
        GaussianPath("cosine")
    x0, eps, _ = _tensors(6)
    with pytest.raises(ValueError, match="eta > 0 needs 'noise'"):
        EPSILON.step(eps, x0, 2.0, 1.0, eta=0.5)
    with pytest.raises(ValueError, match="'eta'"):
        EPSILON.step(eps, x0, 2.0, 1.0, eta=1.5)


def test_the_samplers_step_and_renoise_on_the_given_path():
    """sample_ddim / sample_interleaved take their stochastic steps and the refinement's
    re-noising on the model's path (rectified flow differs from epsilon there)."""
    import midms_core as mc

    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(1, 4, 6, 6, generator=g)
    z = torch.randn(1, 4, 6, 6, generator=g)
    x = RECTIFIED_FLOW.noise(x0, torch.randn(1, 4, 6, 6, generator=g), 0.8)
    sigmas = torch.tensor([0.8, 0.5, 0.0])
    seen = []
    out = mc.sample_ddim(lambda xt, s: x0, x, sigmas, eta=1.0, noise_sampler=lambda a, b: z,
                         callback=lambda info: seen.append(info["x"]), path=RECTIFIED_FLOW)
    expected = RECTIFIED_FLOW.step(x, x0, 0.8, 0.5, 1.0, z)
    assert torch.allclose(seen[1], expected, atol=1e-6)
    assert not torch.allclose(seen[1], EPSILON.step(x, x0, 0.8, 0.5, 1.0, z), atol=1e-3)
    assert torch.equal(out, x0)

    # the refinement re-noises on the path too: its first x is (1 - s) x + s z
    feats = mc.MatchFeatures(condition=torch.ones(1, 3, 6, 6), exemplar=torch.ones(1, 3, 6, 6),
                             exemplar_in_domain=torch.ones(1, 3, 6, 6), x0_features=lambda t: torch.ones(1, 3, 6, 6))
    seen = []
    mc.sample_interleaved(lambda xt, s: x0, x, sigmas, x0, feats, mc.WarpSettings(rewarp_steps=()),
                          noise_sampler=lambda a, b: z, callback=lambda info: seen.append((info["stage"], info["x"])),
                          refine_sigmas=torch.tensor([0.3, 0.0]), path=RECTIFIED_FLOW)
    (stage, first_refine), = [(st, xi) for st, xi in seen if st == "refine"]
    assert torch.allclose(first_refine, 0.7 * x0 + 0.3 * z, atol=1e-6)
