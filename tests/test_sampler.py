"""The DDIM and interleaved samplers against an independent alpha-bar DDIM (Eq. 3-4), and the
interleaving behaviour (Eq. 8-11)."""

from __future__ import annotations

import dataclasses

import math

import pytest
import torch

import midms_core as mc
from tests import reference as ref
from midms_core.attention import AttentionSettings
from midms_core.confidence import ConfidenceSettings
from midms_core.sampler import ddim_step, rewarp_transform


class ToyEpsModel:
    """A fixed random epsilon predictor eps(z, t) on variance-preserving latents (float64)."""

    def __init__(self, channels: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(channels, channels, 3, 3, generator=g, dtype=torch.float64) * 0.1
        self.time = torch.randn(channels, generator=g, dtype=torch.float64) * 0.01
        self.calls = 0

    def __call__(self, z: torch.Tensor, t: float) -> torch.Tensor:
        self.calls += 1
        z = z.double()
        out = torch.nn.functional.conv2d(torch.tanh(z), self.weight, padding=1)
        return out + z * 0.3 + self.time.view(1, -1, 1, 1) * t


def sigma_denoiser(eps_model, model_sigmas: torch.Tensor):
    """Wrap eps(z, t) as ComfyUI's denoise(x, sigma) -> x0 with x = x0 + sigma * eps, z = x / sqrt(1 + sigma^2)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma[0])
        t = float(torch.argmin((model_sigmas - s).abs()))
        eps = eps_model(x / math.sqrt(1 + s * s), t)
        return (x - s * eps).to(x.dtype)

    return denoise


SCHEDULE = mc.schedules.ldm_alphas_cumprod()
MODEL_SIGMAS = mc.schedules.sigma_from_alpha_bar(SCHEDULE)


def reference_ddim(x_start, timesteps, eta, noises, model):
    """Run the alpha-bar reference from the sigma-space start x and return the sigma-space result."""
    alpha_bars = [float(SCHEDULE[t]) for t in timesteps] + [1.0]
    z0 = x_start.double() * math.sqrt(alpha_bars[0])
    return ref.ddim_alpha_bar(model, z0, alpha_bars, [float(t) for t in timesteps], eta, noises)


@pytest.mark.parametrize("steps,strength", [(4, 0.25), (10, 0.5), (25, 1.0)])
def test_deterministic_ddim_equals_alpha_bar_ddim(steps, strength):
    model = ToyEpsModel()
    timesteps = mc.strength_timesteps(1000, steps, strength)
    sigmas = mc.strength_sigmas(MODEL_SIGMAS, steps, strength)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) * float(sigmas[0])
    got = mc.sample_ddim(sigma_denoiser(model, MODEL_SIGMAS), x, sigmas)
    want = reference_ddim(x, timesteps, 0.0, None, model)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_stochastic_ddim_equals_alpha_bar_ddim_with_same_noise(eta):
    model = ToyEpsModel(seed=3)
    steps = 6
    timesteps = mc.strength_timesteps(1000, steps, 0.6)
    sigmas = mc.strength_sigmas(MODEL_SIGMAS, steps, 0.6)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64) * float(sigmas[0])
    noises = [torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64) for _ in range(steps)]
    queue = list(noises)
    got = mc.sample_ddim(sigma_denoiser(model, MODEL_SIGMAS), x, sigmas, eta=eta,
                         noise_sampler=lambda s, sn: queue.pop(0))
    want = reference_ddim(x, timesteps, eta, noises, model)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_float32_ddim_matches_reference_to_1e5():
    model = ToyEpsModel(seed=4)
    sigmas = mc.strength_sigmas(MODEL_SIGMAS, 4, 0.25).float()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * float(sigmas[0])
    got = mc.sample_ddim(sigma_denoiser(model, MODEL_SIGMAS), x, sigmas)
    want = reference_ddim(x, mc.strength_timesteps(1000, 4, 0.25), 0.0, None, model)
    assert got.dtype == torch.float32
    assert float((got.double() - want).abs().max()) < 1e-5 * float(want.abs().max())


def test_ddim_step_eta_zero_is_sigma_space_euler():
    x, x0 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out = ddim_step(x, x0, torch.tensor(2.0), torch.tensor(0.5))
    assert torch.allclose(out, x0 + 0.5 * (x - x0) / 2.0)
    assert torch.equal(ddim_step(x, x0, torch.tensor(2.0), torch.tensor(0.0), eta=1.0, noise=None), x0)


def test_stochastic_step_needs_noise():
    with pytest.raises(ValueError, match="noise"):
        ddim_step(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.tensor(2.0), torch.tensor(1.0), eta=1.0)


# ---- interleaving -------------------------------------------------------------------------------

class FixedFeatures:
    """MatchFeatures whose x0 side returns features built from the x0 latent itself, recording calls."""

    def __init__(self, exemplar_latent: torch.Tensor):
        self.calls = []
        self.exemplar_latent = exemplar_latent

    def x0_features(self, x0: torch.Tensor) -> torch.Tensor:
        self.calls.append(x0.clone())
        return x0

    def build(self, condition: torch.Tensor) -> mc.MatchFeatures:
        return mc.MatchFeatures(condition=condition, exemplar=self.exemplar_latent,
                                exemplar_in_domain=self.exemplar_latent, x0_features=self.x0_features)


def setup_interleaved(steps=4, seed=0):
    model = ToyEpsModel(seed=seed)
    denoise = sigma_denoiser(model, MODEL_SIGMAS)
    sigmas = mc.strength_sigmas(MODEL_SIGMAS, steps, 0.25).float()
    g = torch.Generator().manual_seed(seed + 10)
    exemplar = torch.randn(1, 4, 8, 8, generator=g)
    x = torch.randn(1, 4, 8, 8, generator=g) * float(sigmas[0])
    return model, denoise, sigmas, exemplar, x


def test_interleaved_without_rewarp_is_exactly_ddim():
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    feats = FixedFeatures(exemplar)
    settings = mc.WarpSettings(rewarp_steps=())
    got = mc.sample_interleaved(denoise, x, sigmas, exemplar, feats.build(exemplar), settings)
    assert torch.equal(got, mc.sample_ddim(denoise, x, sigmas))
    assert feats.calls == []
    want = reference_ddim(x, mc.strength_timesteps(1000, 4, 0.25), 0.0, None, model)
    assert float((got.double() - want).abs().max()) < 1e-5 * float(want.abs().max())


def test_all_ones_mask_feeds_the_warp_as_x0():
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    feats = FixedFeatures(exemplar)
    # A threshold far beyond the grid accepts every position: the mask is all ones.
    settings = mc.WarpSettings(confidence=ConfidenceSettings(threshold=1e6), rewarp_steps=(0, 1, 2, 3))
    seen = []
    mc.sample_interleaved(denoise, x, sigmas, exemplar, feats.build(exemplar), settings, callback=seen.append)
    assert len(seen) == 4 and len(feats.calls) == 4
    for info, x0_hat in zip(seen, feats.calls):
        assert torch.equal(info["mask"], torch.ones_like(info["mask"]))
        # the x0 fed to the update is the warp of the ORIGINAL exemplar matched against x0_hat
        want = mc.warp(x0_hat, exemplar, exemplar)
        assert torch.allclose(info["denoised"], want, atol=1e-5)
        assert torch.equal(info["x0_hat"], x0_hat)


def test_blend_and_update_follow_eq_8_to_11():
    """Step by step with a hand-made re-warp: x_next = x0 + sigma_next * (x - x0) / sigma with
    x0 = M * rewarp + (1 - M) * x0_hat."""
    model, denoise, sigmas, exemplar, x = setup_interleaved(steps=3, seed=2)
    feats = FixedFeatures(exemplar)
    confidence = ConfidenceSettings(threshold=3.0, smooth=False)
    settings = mc.WarpSettings(tau=0.05, confidence=confidence, rewarp_steps=(0, 1))
    seen = []
    out = mc.sample_interleaved(denoise, x, sigmas, exemplar, feats.build(exemplar), settings, callback=seen.append)
    xi = x
    for i, info in enumerate(seen):
        x0_hat = denoise(xi, sigmas[i] * torch.ones(1))
        assert torch.allclose(info["x0_hat"], x0_hat)
        if i in (0, 1):
            res = mc.warp_with_confidence(x0_hat, exemplar, exemplar, AttentionSettings(tau=0.05), confidence)
            x0 = res.mask * res.warped + (1 - res.mask) * x0_hat
            assert 0 < float(res.mask.mean()) < 1  # a real mix, not a trivial mask
            assert torch.allclose(info["mask"], res.mask)
        else:
            x0 = x0_hat
            assert info["mask"] is None
        assert torch.allclose(info["denoised"], x0, atol=1e-6)
        sigma_next = sigmas[i + 1]
        xi = x0 if float(sigma_next) == 0 else x0 + sigma_next * (xi - x0) / sigmas[i]
    assert torch.allclose(out, xi, atol=1e-5)


def test_rewarp_steps_past_the_end_are_an_error_before_any_step():
    settings = mc.WarpSettings(rewarp_steps=[1, 4])
    settings.check_steps(5)  # steps 0..4
    with pytest.raises(ValueError, match=r"lists step 4, but this run has 4 steps, numbered 0 to 3 \(steps count from 0\)"):
        settings.check_steps(4)
    model, denoise, sigmas, exemplar, x = setup_interleaved()  # 4 steps
    calls = []

    def counting(xt, sigma):
        calls.append(sigma)
        return denoise(xt, sigma)

    with pytest.raises(ValueError, match="sample_interleaved: 'rewarp_steps' lists step 4"):
        mc.sample_interleaved(counting, x, sigmas, exemplar, FixedFeatures(exemplar).build(exemplar), settings)
    assert calls == []  # refused before the first model call


def test_default_rewarp_skips_last_step_and_official_preset():
    assert mc.WarpSettings().steps_to_rewarp(4) == {0, 1, 2}
    assert mc.WarpSettings(skip_last=False).steps_to_rewarp(4) == {0, 1, 2, 3}
    assert mc.WarpSettings(rewarp_steps=[2, 1, 1, 9]).steps_to_rewarp(4) == {1, 2}
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    feats = FixedFeatures(exemplar)
    seen = []
    mc.sample_interleaved(denoise, x, sigmas, exemplar, feats.build(exemplar), callback=seen.append)
    assert [info["mask"] is not None for info in seen] == [True, True, True, False]


def test_callback_can_cancel():
    model, denoise, sigmas, exemplar, x = setup_interleaved()

    class Cancelled(Exception):
        pass

    def cancel(info):
        if info["i"] == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        mc.sample_interleaved(denoise, x, sigmas, exemplar, FixedFeatures(exemplar).build(exemplar), callback=cancel)
    assert model.calls == 2


def test_final_refinement_renoises_and_uses_refine_model():
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    other = ToyEpsModel(seed=9)
    refine_sigmas = mc.strength_sigmas(MODEL_SIGMAS, 5, 0.1).float()
    stages = []
    noise_calls = []
    g = torch.Generator().manual_seed(0)

    def noise_sampler(s, sn):
        noise_calls.append(float(s))
        return torch.randn(x.shape, generator=g)

    out = mc.sample_interleaved(
        denoise, x, sigmas, exemplar, FixedFeatures(exemplar).build(exemplar),
        noise_sampler=noise_sampler, callback=lambda i: stages.append(i["stage"]),
        refine_sigmas=refine_sigmas, refine_denoise=sigma_denoiser(other, MODEL_SIGMAS), refine_eta=1.0,
    )
    assert stages == ["interleaved"] * 4 + ["refine"] * 5
    assert other.calls == 5 and model.calls == 4
    assert noise_calls[0] == pytest.approx(float(refine_sigmas[0]))  # re-noise, then 4 eta noises
    assert len(noise_calls) == 1 + 4
    assert torch.isfinite(out).all()


def test_translate_starts_from_noised_first_warp():
    model, denoise, sigmas, exemplar, _ = setup_interleaved()
    condition = torch.randn(1, 4, 6, 10, generator=torch.Generator().manual_seed(3))
    feats = FixedFeatures(exemplar)
    noise = torch.randn(1, 4, 6, 10, generator=torch.Generator().manual_seed(4))
    first = []
    result = mc.translate(denoise, feats.build(condition), exemplar, sigmas, noise,
                          callback=lambda info: first.append(info["x"]) if info["i"] == 0 else None)
    initial = mc.warp(condition, exemplar, exemplar)
    assert torch.allclose(result.initial.warped, initial, atol=1e-6)
    assert torch.allclose(first[0], initial + sigmas[0] * noise, atol=1e-5)
    assert result.latent.shape == (1, 4, 6, 10)
    with pytest.raises(ValueError, match="noise"):
        mc.translate(denoise, feats.build(condition), exemplar, sigmas, torch.randn(1, 4, 8, 8))


def test_translate_and_every_re_match_use_the_match_prior():
    """MatchFeatures.prior reaches the first warp (translate) and each re-warp (rewarp_transform):
    both equal warp_with_confidence with that prior, and differ from the warp without it."""
    model, denoise, sigmas, exemplar, _ = setup_interleaved()
    condition = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    flipped = mc.correspondence.coordinate_grid(1, 8, 8).flip(-1)  # a prior that pulls every cell to its mirror
    prior = mc.SpatialPrior(flipped, 0.7)
    feats = FixedFeatures(exemplar)
    features = dataclasses.replace(feats.build(condition), prior=prior)
    confidence = ConfidenceSettings(threshold=512.0)
    settings = mc.WarpSettings(tau=0.05, confidence=confidence)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    result = mc.translate(denoise, features, exemplar, sigmas, noise, settings)
    want = mc.warp_with_confidence(condition, exemplar, exemplar, AttentionSettings(tau=0.05), confidence, prior=prior)
    assert torch.allclose(result.initial.warped, want.warped, atol=1e-6)
    assert (result.initial.warped - mc.warp(condition, exemplar, exemplar, AttentionSettings(tau=0.05))).abs().max() > 0.1

    transform = rewarp_transform(exemplar, features, settings, step_count=4)
    x0_hat = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    x0, info = transform(0, x0_hat, x0_hat, sigmas[0])
    rewarp = mc.warp_with_confidence(x0_hat, exemplar, exemplar, AttentionSettings(tau=0.05), confidence, prior=prior)
    assert torch.allclose(info["warped"], rewarp.warped, atol=1e-6)
    assert torch.allclose(x0, mc.blend(rewarp.warped, x0_hat, rewarp.mask), atol=1e-6)
    assert torch.allclose(info["flow"], rewarp.forward_flow, atol=1e-5)
    assert (info["warped"] - mc.warp(x0_hat, exemplar, exemplar, AttentionSettings(tau=0.05))).abs().max() > 0.1


def test_the_per_step_rematch_does_not_validate_the_confidence_settings_again(monkeypatch):
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    settings = mc.WarpSettings(confidence=ConfidenceSettings(threshold=3.0), rewarp_steps=(0, 1, 2, 3))
    made = []
    monkeypatch.setattr(ConfidenceSettings, "__post_init__", lambda self: made.append(self))
    feats = FixedFeatures(exemplar)
    mc.sample_interleaved(denoise, x, sigmas, exemplar, feats.build(exemplar), settings)
    assert len(feats.calls) == 4 and made == []


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(tau=0), ["WarpSettings", "tau"]),
        (dict(confidence=15.75), ["WarpSettings", "'confidence'", "ConfidenceSettings"]),
        (dict(chunk_bytes=0), ["WarpSettings", "chunk_bytes"]),
        (dict(rewarp_steps=[-1]), ["rewarp_steps"]),
        (dict(rewarp_steps=[1.5]), ["rewarp_steps"]),
    ],
)
def test_settings_validation(kwargs, words):
    with pytest.raises(ValueError) as info:
        mc.WarpSettings(**kwargs)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize(
    "sigmas, words",
    [
        (torch.tensor([1.0]), ["sigmas", "at least 2"]),
        (torch.tensor([1.0, 2.0]), ["non-increasing"]),
        (torch.tensor([0.0, 0.0]), ["start above 0"]),
        (torch.tensor([[1.0, 0.0]]), ["sigmas", "1 dimensions"]),
        (torch.tensor([1.0, float("nan")]), ["NaN"]),
    ],
)
def test_sampler_rejects_bad_sigmas(sigmas, words):
    x = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ValueError) as info:
        mc.sample_ddim(lambda x, s: x, x, sigmas)
    for w in words:
        assert w in str(info.value)


def test_exemplar_channel_mismatch():
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    with pytest.raises(ValueError, match="exemplar_latent"):
        mc.sample_interleaved(denoise, x, sigmas, exemplar[:, :3], FixedFeatures(exemplar).build(exemplar))


def test_strength_timesteps_official_numbers():
    assert mc.strength_timesteps(1000, 4, 0.25) == [249, 187, 125, 63]
    sig = mc.strength_sigmas(MODEL_SIGMAS, 4, 0.25)
    assert sig.shape == (5,) and float(sig[-1]) == 0.0
    assert float(sig[0]) == pytest.approx(float(MODEL_SIGMAS[249]))
    with pytest.raises(ValueError, match="steps"):
        mc.strength_timesteps(1000, 30, 0.01)


def test_schedule_conversions_round_trip():
    ab = mc.schedules.ldm_alphas_cumprod()
    assert torch.allclose(mc.schedules.alpha_bar_from_sigma(mc.schedules.sigma_from_alpha_bar(ab)), ab)
    # Stable Diffusion's well-known sigma range
    assert float(mc.schedules.sigma_from_alpha_bar(ab)[0]) == pytest.approx(0.0292, abs=1e-4)
    assert float(mc.schedules.sigma_from_alpha_bar(ab)[-1]) == pytest.approx(14.6146, abs=1e-3)


@pytest.mark.parametrize("bad_step", [0, 2])
def test_non_finite_x0_features_at_any_re_warp_step_are_named(bad_step):
    """The exemplar side is validated once per run, but each step's x0_hat features are still
    checked: a model that goes non-finite at a later step is named, not blended in."""
    model, denoise, sigmas, exemplar, x = setup_interleaved()
    calls = []

    def poisoned(xt, sigma):
        out = denoise(xt, sigma)
        calls.append(1)
        return out * float("nan") if len(calls) - 1 == bad_step else out

    feats = FixedFeatures(exemplar)
    with pytest.raises(ValueError, match=rf"rewarp_transform: the x0_hat features of step {bad_step} contain NaN"):
        mc.sample_interleaved(poisoned, x, sigmas, exemplar, feats.build(exemplar), mc.WarpSettings(rewarp_steps=(0, 1, 2)))
