"""DDIM inversion and DDIB nodes inside a real ComfyUI, in-process, on the tiny SD1.5 / SDXL
models (both hosts) and the tiny SD3 / Flux (current hosts).

* the inversion SAMPLER through the host's SamplerCustom equals a plain inversion loop written
  in tests/comfy/reference_loops.py (epsilon and rectified-flow paths);
* SamplerCustom(inversion) -> SamplerCustom(euler), both without added noise, equals the round-
  trip node: the LATENT it passes on follows the host's convention for a noisy latent;
* the round-trip error falls monotonically with the step count (cfg 1), for every family and for
  v-prediction (the host's ModelSamplingDiscrete node on the tiny SD1.5);
* the bridge inverts with model A and regenerates with model B; inputs are not mutated;
* interrupting mid-inversion stops it; one progress callback per step;
* refusals: added noise, a flipped schedule, a flow model's full-depth LATENT, an empty latent,
  two latent spaces.
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy.reference_loops import EPSILON_ALPHA, FLOW_ALPHA, inversion_loop
from tests.comfy.test_flow_models_inprocess import _conds as _dit_conds
from tests.comfy.test_flow_models_inprocess import flux, sd3  # noqa: F401  (fixtures)
from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    _build_model, _conds, _fingerprint, _like_the_executor, _make_context, _match, _matcher, _rel_err, _settings,
    assert_interrupt_stops_at_the_next_step, h, models, pack)

FAMILIES = ["sd15", "sd15_v", "sdxl", "sd3", "flux"]


@pytest.fixture(scope="module")
def nodes(h, pack):
    mapping = h.nodes.NODE_CLASS_MAPPINGS
    for name in ("MIDMsDDIMInversionSampler", "MIDMsDDIBTranslate", "MIDMsDDIMRoundTrip"):
        assert name in mapping, f"{name} not registered by the host"
    return mapping


@pytest.fixture(params=FAMILIES)
def family(request, h, models):
    """(name, model, positive, negative, latent, alpha, scheduler) for each tiny model; sd15_v is
    the tiny SD1.5 switched to v-prediction by the host's ModelSamplingDiscrete node."""
    name = request.param
    if name in ("sd3", "flux"):
        model = request.getfixturevalue(name)
        positive, negative = _dit_conds()
        channels, alpha, scheduler = 16, FLOW_ALPHA, "simple"
    else:
        model = models["sd15" if name == "sd15_v" else name]
        if name == "sd15_v":
            model = h.nodes.NODE_CLASS_MAPPINGS["ModelSamplingDiscrete"]().patch(model, "v_prediction", False)[0]
        positive, negative = _conds("sdxl" if name == "sdxl" else "sd15")
        channels, alpha, scheduler = 4, EPSILON_ALPHA, "normal"
    latent = 0.8 * torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(3))
    return name, model, positive, negative, latent, alpha, scheduler


def _schedule(pack, model, scheduler, steps, depth):
    return pack.BasicScheduler().get_sigmas(model, scheduler, steps, depth)[0]


def _sampler_custom(pack, model, sampler, sigmas, positive, negative, latent, cfg=1.0):
    return pack.SamplerCustom().sample(model, False, 0, cfg, positive, negative, sampler, sigmas,
                                       {"samples": latent})[0]["samples"]


def _flow(name):
    return name in ("sd3", "flux")


def test_inversion_sampler_equals_a_plain_inversion_loop(pack, nodes, family):
    import comfy.samplers

    name, model, positive, negative, latent, alpha, scheduler = family
    depth = 0.7 if _flow(name) else 1.0  # a flow model's full depth has no LATENT form (refused below)
    sigmas = _schedule(pack, model, scheduler, 6, depth)
    sampler = nodes["MIDMsDDIMInversionSampler"]().get_sampler(model)[0]
    ours = _sampler_custom(pack, model, sampler, sigmas, positive, negative, latent, cfg=2.0)
    plain = _sampler_custom(pack, model, comfy.samplers.KSAMPLER(inversion_loop(alpha)), sigmas, positive,
                            negative, latent, cfg=2.0)
    assert torch.isfinite(ours).all()
    assert _rel_err(ours, plain) < 1e-5, _rel_err(ours, plain)
    assert _rel_err(ours, latent) > 0.1  # it went somewhere


def test_two_sampler_custom_nodes_chain_like_the_round_trip_node(pack, nodes, family):
    import comfy.samplers

    name, model, positive, negative, latent, alpha, scheduler = family
    steps, depth = 5, (0.8 if _flow(name) else 1.0)
    sigmas = _schedule(pack, model, scheduler, steps, depth)
    inverted = _sampler_custom(pack, model, nodes["MIDMsDDIMInversionSampler"]().get_sampler(model)[0], sigmas,
                               positive, negative, latent)
    chained = _sampler_custom(pack, model, comfy.samplers.ksampler("euler"), sigmas, positive, negative, inverted)
    out = nodes["MIDMsDDIMRoundTrip"]().round_trip(model, positive, negative, {"samples": latent}, steps, depth,
                                                  scheduler, 1.0)
    reconstruction, error, report = out["result"]
    assert _rel_err(chained, reconstruction["samples"]) < 1e-4, _rel_err(chained, reconstruction["samples"])
    assert error == pytest.approx(_rel_err(reconstruction["samples"], latent), rel=1e-4)
    assert out["ui"]["text"] == [report] and f"{error:.4f}" in report


def test_round_trip_error_falls_with_steps(pack, nodes, family):
    name, model, positive, negative, latent, alpha, scheduler = family
    errors = []
    for steps in (2, 4, 8, 16, 32):
        out = nodes["MIDMsDDIMRoundTrip"]().round_trip(model, positive, negative, {"samples": latent}, steps, 1.0,
                                                      scheduler, 1.0)
        errors.append(out["result"][1])
    print(name, [round(e, 4) for e in errors])
    assert all(b < a for a, b in zip(errors, errors[1:])), (name, errors)
    assert errors[-1] < 0.5 * errors[0], (name, errors)


def test_bridge_inverts_with_a_and_regenerates_with_b(h, pack, nodes, models):
    import comfy.samplers

    model_a = models["sd15"]
    with torch.inference_mode(False):
        model_b = _build_model(h, "sd15", 5)
    positive, negative = _conds("sd15")
    latent = 0.8 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    before_a, before_b = _fingerprint(model_a), _fingerprint(model_b)
    latent_before = latent.clone()

    out, noise, report = nodes["MIDMsDDIBTranslate"]().translate(model_a, positive, negative, model_b, positive,
                                                                 negative, {"samples": latent}, 6, 1.0, "normal", 1.0, 3.0)
    assert "6 steps each way" in report and "depth 1.000 of 1 asked" in report, report
    sigmas = _schedule(pack, model_a, "normal", 6, 1.0)
    inverted = _sampler_custom(pack, model_a, nodes["MIDMsDDIMInversionSampler"]().get_sampler(model_a)[0], sigmas,
                               positive, negative, latent)
    want = _sampler_custom(pack, model_b, comfy.samplers.ksampler("euler"), sigmas, positive, negative, inverted,
                           cfg=3.0)
    assert _rel_err(out["samples"], want) < 1e-4
    # the inverted latent is the inversion SAMPLER's, in the host's convention
    assert _rel_err(noise["samples"], inverted) < 1e-5
    same = nodes["MIDMsDDIBTranslate"]().translate(model_a, positive, negative, model_a, positive, negative,
                                                   {"samples": latent}, 6, 1.0, "normal", 1.0, 3.0)[0]
    assert _rel_err(out["samples"], same["samples"]) > 0.05  # model B matters
    assert _fingerprint(model_a) == before_a and _fingerprint(model_b) == before_b
    assert torch.equal(latent, latent_before)


def test_interrupt_mid_inversion_and_progress(pack, nodes, models):
    import comfy.sample

    model = models["sd15"]
    positive, negative = _conds("sd15")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = _schedule(pack, model, "normal", 5, 1.0)
    sampler = nodes["MIDMsDDIMInversionSampler"]().get_sampler(model)[0]
    zeros = torch.zeros_like(latent)
    calls = []
    comfy.sample.sample_custom(model, zeros, 1.0, sampler, sigmas, positive, negative, latent,
                               callback=lambda i, x0, x, total: calls.append((i, total)))
    assert calls == [(i, 5) for i in range(5)]

    assert_interrupt_stops_at_the_next_step(lambda callback: comfy.sample.sample_custom(
        model, zeros, 1.0, sampler, sigmas, positive, negative, latent, callback=callback))


def _error_type(pack):
    import importlib

    return importlib.import_module(f"{pack.package}.host_adapters.errors").NodeInputError


def test_schedule_is_the_hosts_basic_scheduler(h, pack, nodes, models):
    """The bridge nodes make their schedule from the host's scheduler functions; it is what the
    host's BasicScheduler node gives, for every scheduler and depths below 1 (also with a
    ModelSamplingDiscrete patch, which only takes effect when the host loads the model)."""
    import importlib

    schedule = importlib.import_module(f"{pack.package}.host_adapters.schedules").basic_schedule
    import comfy.samplers

    v_model = h.nodes.NODE_CLASS_MAPPINGS["ModelSamplingDiscrete"]().patch(models["sd15"], "v_prediction", True)[0]
    for model in (models["sd15"], models["sdxl"], v_model):
        for scheduler in comfy.samplers.SCHEDULER_NAMES:
            for steps, depth in ((7, 1.0), (5, 0.6), (20, 0.95), (3, 0.05)):
                want = pack.BasicScheduler().get_sigmas(model, scheduler, steps, depth)[0]
                assert torch.equal(schedule(model, scheduler, steps, depth), want), (scheduler, steps, depth)


def test_bad_inversion_setups_are_named(pack, nodes, models):
    error = _error_type(pack)
    model = models["sd15"]
    positive, negative = _conds("sd15")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    sampler = nodes["MIDMsDDIMInversionSampler"]().get_sampler(model)[0]
    sigmas = _schedule(pack, model, "normal", 4, 1.0)
    with pytest.raises(error, match="add_noise"):
        pack.SamplerCustom().sample(model, True, 0, 1.0, positive, negative, sampler, sigmas, {"samples": latent})
    flipped = sigmas.flip(0).clone()
    flipped[0] = 1e-4  # what the host's FlipSigmas makes
    with pytest.raises(error, match="FlipSigmas"):
        _sampler_custom(pack, model, sampler, flipped, positive, negative, latent)
    with pytest.raises(error, match="all zeros"):
        _sampler_custom(pack, model, sampler, sigmas, positive, negative, torch.zeros_like(latent))
    with pytest.raises(error, match="MIDMs DDIB Translate: model_a and model_b work in different latent spaces"):
        nodes["MIDMsDDIBTranslate"]().translate(model, positive, negative, models["sdxl"], *_conds("sdxl"),
                                                {"samples": latent}, 4, 1.0, "normal", 1.0, 1.0)
    with pytest.raises(error, match="MIDMs DDIM Round Trip: 'steps' is 0"):
        nodes["MIDMsDDIMRoundTrip"]().round_trip(model, positive, negative, {"samples": latent}, 0, 1.0, "normal", 1.0)
    # numerically broken and foreign latents: named at the node, not by an internal function
    broken = latent.clone()
    broken[0, 0, 0, 0] = float("nan")
    with pytest.raises(error, match="MIDMs DDIM Inversion Sampler.*'latent_image' holds NaN") as raised:
        _sampler_custom(pack, model, sampler, sigmas, positive, negative, broken)
    assert "invert_ddim" not in str(raised.value)
    with pytest.raises(error, match="MIDMs DDIB Translate: 'latent_image' holds NaN"):
        nodes["MIDMsDDIBTranslate"]().translate(model, positive, negative, model, positive, negative,
                                                {"samples": broken}, 4, 1.0, "normal", 1.0, 1.0)
    sixteen = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    with pytest.raises(error, match=r"MIDMs DDIM Inversion Sampler.*'latent_image' holds 16-channel latents, but "
                                    r"'model' \(SD15\) works on 4-channel latents"):
        _sampler_custom(pack, model, sampler, sigmas, positive, negative, sixteen)
    with pytest.raises(error, match=r"MIDMs DDIB Translate: 'latent_image' holds 16-channel.*'model_a' \(SD15\)"):
        nodes["MIDMsDDIBTranslate"]().translate(model, positive, negative, model, positive, negative,
                                                {"samples": sixteen}, 4, 1.0, "normal", 1.0, 1.0)


def test_the_depth_a_schedule_reaches_is_reported(pack, nodes, models):
    """ddim_uniform places 10 steps on the model's own timesteps: depth 0.01 and 0.019 give one
    schedule (a total of 1000 or 526 steps both land on every timestep), so the same result; the
    report says which depth was used (the top timestep's share of the table), for both."""
    model = models["sd15"]
    positive, negative = _conds("sd15")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    runs = {d: nodes["MIDMsDDIBTranslate"]().translate(model, positive, negative, model, positive, negative,
                                                      {"samples": latent}, 10, d, "ddim_uniform", 1.0, 1.0)
            for d in (0.01, 0.019)}
    assert torch.equal(runs[0.01][0]["samples"], runs[0.019][0]["samples"])
    sigmas = _schedule(pack, model, "ddim_uniform", 10, 0.019)
    table = model.model.model_sampling.sigmas
    top = int(torch.argmin((table - sigmas[0]).abs()))  # the schedule's top timestep, 0-based
    want = f"depth {(top + 1) / table.shape[0]:.3f} of"
    for depth, (_, _, report) in runs.items():
        assert want in report and f"of {depth:g} asked" in report, report
    assert want == "depth 0.011 of"  # ddim_uniform at stride 1 takes timesteps 1..10 (of 0..999)


def test_flow_model_full_depth_latent_is_refused_but_the_bridge_runs(pack, nodes, sd3):
    error = _error_type(pack)
    positive, negative = _dit_conds()
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    sigmas = _schedule(pack, sd3, "simple", 4, 1.0)
    assert float(sigmas[0]) == pytest.approx(1.0)
    sampler = nodes["MIDMsDDIMInversionSampler"]().get_sampler(sd3)[0]
    with pytest.raises(error, match="pure noise.*MIDMs DDIB Translate"):
        _sampler_custom(pack, sd3, sampler, sigmas, positive, negative, latent)
    out, noise, _ = nodes["MIDMsDDIBTranslate"]().translate(sd3, positive, negative, sd3, negative, positive,
                                                            {"samples": latent}, 4, 1.0, "simple", 1.0, 1.0)
    assert torch.isfinite(out["samples"]).all() and torch.isfinite(noise["samples"]).all()


def test_midms_sampler_can_start_from_the_inverted_warp(pack, nodes, models):
    """start 'ddim inversion': the all-in-one node inverts the warp to its start sigma instead of
    adding noise. The result does not depend on the seed (eta 0), equals the same two steps made
    with SamplerCustom, and with re-warping off at cfg 1 it regenerates the warp."""

    model = models["sd15"]
    positive, negative = _conds("sd15")
    context = _make_context(pack)
    settings = _settings(pack, rewarp_steps="none")

    def run(seed, start, cfg=1.0, steps=8, rewarp=settings):
        return pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=seed, steps=steps,
                                          start_noise=0.5, cfg=cfg, settings=rewarp, start=start)

    inverted, warped = run(1, "ddim inversion")
    noised = run(1, "noise")[0]
    assert torch.equal(inverted["samples"], run(2, "ddim inversion")[0]["samples"])
    assert not torch.equal(noised["samples"], run(2, "noise")[0]["samples"])
    # with re-warping off at cfg 1 the round trip gives the warp back, within the inversion error
    back, away = _rel_err(inverted["samples"], warped["samples"]), _rel_err(noised["samples"], warped["samples"])
    print(f"inverted start {back:.4f}, noised start {away:.4f}")
    assert back < 0.25 * away, (back, away)
    # the same as inverting with the SAMPLER node and running the interleaved SAMPLER on it
    match = _match(pack, context, settings)[0]
    sigmas = pack.core.strength_sigmas(model.model.model_sampling.sigmas.float().cpu(), 8, 0.5)
    start = _sampler_custom(pack, model, nodes["MIDMsDDIMInversionSampler"]().get_sampler(model)[0], sigmas,
                            positive, negative, warped["samples"])
    chained = _sampler_custom(pack, model, pack.MIDMsInterleavedSampler().get_sampler(model, match)[0], sigmas,
                              positive, negative, start, cfg=1.0)
    assert _rel_err(inverted["samples"], chained) < 1e-4
    # re-warping on: still deterministic, and it runs
    rewarping = run(3, "ddim inversion", cfg=2.0, steps=4, rewarp=_settings(pack))[0]["samples"]
    assert torch.equal(rewarping, run(4, "ddim inversion", cfg=2.0, steps=4, rewarp=_settings(pack))[0]["samples"])


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_guidance_makes_the_inversion_drift(pack, nodes, models, name):
    """The README's table in small: with a prompt that differs from the negative, the round trip
    at cfg 2 and 5 ends further from the input than at cfg 1 (the default on the inversion side)."""
    model = models[name]
    positive, negative = _conds(name)
    latent = 0.8 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    errors = [nodes["MIDMsDDIMRoundTrip"]().round_trip(model, positive, negative, {"samples": latent}, 16, 1.0,
                                                       "normal", cfg)["result"][1] for cfg in (1.0, 2.0, 5.0)]
    assert errors[0] < errors[1] < errors[2], errors
    assert errors[2] > 3 * errors[0], errors


def test_inversion_sampler_in_sampler_custom_advanced(h, pack, nodes, models):
    """SamplerCustomAdvanced with DisableNoise and a CFGGuider (current hosts) gives the same
    inverted latent as SamplerCustom with add_noise off; RandomNoise is refused."""
    mapping = h.nodes.NODE_CLASS_MAPPINGS
    if "SamplerCustomAdvanced" not in mapping:
        pytest.skip("the 2024-03 host has no SamplerCustomAdvanced (checked on current hosts)")
    model = models["sd15"]
    positive, negative = _conds("sd15")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    sigmas = _schedule(pack, model, "normal", 5, 1.0)
    sampler = nodes["MIDMsDDIMInversionSampler"]().get_sampler(model)[0]
    guider = mapping["CFGGuider"]().get_guider(model, positive, negative, 1.0)[0]
    advanced = mapping["SamplerCustomAdvanced"]()
    out = advanced.sample(mapping["DisableNoise"]().get_noise()[0], guider, sampler, sigmas, {"samples": latent})[0]
    want = _sampler_custom(pack, model, sampler, sigmas, positive, negative, latent)
    assert _rel_err(out["samples"], want) < 1e-6
    with pytest.raises(_error_type(pack), match="DisableNoise"):
        advanced.sample(mapping["RandomNoise"]().get_noise(3)[0], guider, sampler, sigmas, {"samples": latent})
