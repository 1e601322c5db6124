"""The pack's nodes inside a REAL ComfyUI, in-process: tiny SD1.5- and SDXL-family models built
from the host's own classes, the pack loaded by the host as the package ``midms``.

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_nodes_inprocess.py -q
Skips (with the reason) when no host exists and MIDMS_REQUIRE_COMFYUI is unset, and under an
interpreter that is not the host's (see harness/host.py: ``in_process_host``).

What is checked (the issue's acceptance list):
* re-warping off: the pack's SAMPLER through the host's ``comfy.sample.sample_custom`` equals the
  host's own Euler ("ddim" in the host is Euler too) on the same model, sigmas, noise, seed and
  conditioning, for SD1.5 and SDXL, with cfg > 1 and a non-trivial negative;
* re-warping on with an all-ones confidence mask: the x0 of every re-warp step is the warp of the
  model-scaled exemplar latent matched against the features of that step's x0_hat (recomputed
  here independently from the top-level ``midms_core``);
* the model passed in is not mutated (all-in-one node and SamplerCustom);
* same seed -> same output, other seed -> other output (both paths);
* progress: one callback per step with increasing i; the host's interrupt flag cancels;
* batches: condition batch 2 with exemplar batch 1; node output shapes; the encode node with a
  real host VAE (TAESD built through ``comfy.sd.VAE``).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import re
from types import SimpleNamespace

import pytest
import torch

from harness.host import PACK_NAME, in_process_host
from harness.inprocess_models import build_unet
from harness.inprocess_models import unet_conds as _conds
from harness.inprocess_models import unet_config as _unet_config  # noqa: F401  (imported by other tests)
from harness.tiny_models import init_tensor, taesd_shapes
from tests.comfy.reference_loops import EPSILON_ALPHA, FLOW_ALPHA, posterior_loop

H = W = 64          # image size; latents are 8 x 8
STEPS = 4


# --------------------------------------------------------------------------------------------
# host, pack and tiny models
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return in_process_host(tmp_path_factory.mktemp("inproc_nodes"))


@pytest.fixture(scope="module")
def pack(h):
    """The pack's node classes and modules as the HOST loaded them (package ``midms``)."""
    mapping = h.nodes.NODE_CLASS_MAPPINGS
    classes = {}
    for name in ("MIDMsExemplarEncode", "MIDMsEdgeMatcher", "MIDMsRewarpSettings", "MIDMsCorrespondence",
                 "MIDMsInterleavedSampler", "MIDMsSampler"):
        assert name in mapping, f"{name} not registered by the host; import failed?"
        classes[name] = mapping[name]
    # loaded as a package by the host: the 2024 host names it after the folder, current hosts
    # after its full path
    module = classes["MIDMsInterleavedSampler"].__module__
    assert module.endswith(".nodes.sampling"), module
    package = module[: -len(".nodes.sampling")]
    assert package == PACK_NAME or package.endswith(f"/custom_nodes/{PACK_NAME}"), package
    return SimpleNamespace(
        **classes,
        package=package,
        types=importlib.import_module(f"{package}.nodes.types"),
        noise_paths=importlib.import_module(f"{package}.host_adapters.noise_paths"),
        core=importlib.import_module(f"{package}.midms_core"),
        SamplerCustom=mapping["SamplerCustom"],
        BasicScheduler=mapping["BasicScheduler"],
    )


@pytest.fixture(autouse=True)
def _like_the_executor():
    """The host runs every node under torch.inference_mode(); so do these tests."""
    with torch.inference_mode():
        yield


def _build_model(h, family: str, seed: int, unet_config: dict | None = None):
    """``h`` (the in-process host fixture) only makes sure ComfyUI is imported first."""
    return build_unet(family, seed, unet_config)


@pytest.fixture(scope="module")
def models(h):
    with torch.inference_mode(False):
        return {"sd15": _build_model(h, "sd15", 1), "sdxl": _build_model(h, "sdxl", 2)}


@pytest.fixture(scope="module")
def vae(h):
    import comfy.sd

    with torch.inference_mode(False):
        sd = {k: init_tensor("first_stage_model." + k, shape, 3) for k, shape in taesd_shapes().items()}
        return comfy.sd.VAE(sd=sd)


# --------------------------------------------------------------------------------------------
# images and contexts
# --------------------------------------------------------------------------------------------
def _exemplar_image(height=H, width=W, shift=0, seed=0):
    """A photo stand-in (1, H, W, 3): colour gradient, a disc and a bar."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    xs = (xs - shift / width) % 1.0
    img = torch.stack([0.2 + 0.5 * xs, 0.3 + 0.4 * ys, 0.6 - 0.3 * xs * ys], dim=-1)
    disc = ((xs - 0.35) ** 2 + (ys - 0.4) ** 2) < 0.18 ** 2
    bar = (xs > 0.6) & (xs < 0.8) & (ys > 0.2) & (ys < 0.85)
    img[disc] = torch.tensor([0.9, 0.15, 0.1])
    img[bar] = torch.tensor([0.1, 0.2, 0.85])
    g = torch.Generator().manual_seed(seed)
    return (img + 0.02 * torch.randn(img.shape, generator=g)).clamp(0, 1)[None]


def _edge_image(image):
    """Black lines on white (1, H, W, 3) from an image's gradient magnitude."""
    gray = image.mean(-1, keepdim=True).movedim(-1, 1)
    gx = gray[..., :, 1:] - gray[..., :, :-1]
    gy = gray[..., 1:, :] - gray[..., :-1, :]
    mag = torch.nn.functional.pad(gx.abs(), (0, 1, 0, 0)) + torch.nn.functional.pad(gy.abs(), (0, 0, 0, 1))
    lines = (mag > 0.15).float()
    return (1 - lines).movedim(1, -1).expand(-1, -1, -1, 3).contiguous()


def _make_context(pack, cond_batch=1, exem_batch=1, seed=0):
    """A MIDMsContext built directly (no VAE): images channels-first, random RAW latents."""
    cond = torch.cat([_edge_image(_exemplar_image(shift=8 + 4 * b)) for b in range(cond_batch)])
    exem = torch.cat([_exemplar_image(seed=b) for b in range(exem_batch)])
    g = torch.Generator().manual_seed(seed)
    return pack.types.MIDMsContext(
        condition_image=cond.movedim(-1, 1).contiguous(),
        exemplar_image=exem.movedim(-1, 1).contiguous(),
        condition_latent=torch.randn(cond_batch, 4, H // 8, W // 8, generator=g),
        exemplar_latent=2.0 * torch.randn(exem_batch, 4, H // 8, W // 8, generator=g),
    )


def _settings(pack, rewarp_steps="", threshold=15.75, eta=0.0, refine_strength=0.0):
    return pack.MIDMsRewarpSettings().make(tau=0.005, threshold=threshold, mask_mode="hard", smooth_mask=True,
                                           rewarp_steps=rewarp_steps, eta=eta, refine_strength=refine_strength,
                                           refine_steps=3)[0]


MATCHER_ARGS = dict(canny_low=0.1, canny_high=0.2, edge_blur=2.0, x0_condition_weight=0.7)


def _matcher(pack):
    return pack.MIDMsEdgeMatcher().make(**MATCHER_ARGS)[0]


def _match(pack, context, settings):
    return pack.MIDMsCorrespondence().correspond(context, _matcher(pack), settings)


def _sigmas(pack, model, steps=STEPS, denoise=0.5):
    return pack.BasicScheduler().get_sigmas(model, "normal", steps, denoise)[0]


def _noise(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_rewarp_off_equals_host_euler(h, pack, models, family):
    import comfy.sample
    import comfy.samplers

    model = models[family]
    context = _make_context(pack)
    match, warped = _match(pack, context, _settings(pack, rewarp_steps="none"))[:2]
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
    assert isinstance(sampler, comfy.samplers.KSAMPLER)
    sigmas = _sigmas(pack, model)
    latent = warped["samples"]
    noise = _noise(latent.shape, 5)
    positive, negative = _conds(family)

    def run(s, neg=negative):
        return comfy.sample.sample_custom(model, noise, 3.0, s, sigmas, positive, neg, latent, seed=7)

    ours = run(sampler)
    euler = run(comfy.samplers.ksampler("euler"))
    ddim = run(comfy.samplers.sampler_object("ddim"))  # the host's "ddim" is Euler
    assert ours.shape == latent.shape and torch.isfinite(ours).all()
    assert _rel_err(ours, euler) < 1e-5, _rel_err(ours, euler)
    assert _rel_err(ours, ddim) < 1e-5, _rel_err(ours, ddim)
    # the comparison is not vacuous: the model, the guidance and the negative all matter
    assert _rel_err(ours, latent) > 1e-2
    assert _rel_err(run(comfy.samplers.ksampler("euler"), neg=positive), euler) > 3e-3


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_rewarp_x0_is_the_warp_with_all_ones_mask(h, pack, models, family):
    import midms_core  # the top-level library, independent of the pack's loaded copy
    import comfy.sample
    from midms_core.confidence import ConfidenceSettings
    from midms_core.matchers.edge import EdgeMatcherSettings

    model = models[family]
    base = model.model
    context = _make_context(pack)
    settings = _settings(pack, rewarp_steps="", threshold=512.0)  # every step but the last
    match, warped = _match(pack, context, settings)[:2]
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]

    x0_hats, x0s = [], []
    probe = model.clone()  # record the guided x0_hat the sampler sees at each step

    def post_cfg(args):
        x0_hats.append(args["denoised"].clone())
        return args["denoised"]

    probe.set_model_sampler_post_cfg_function(post_cfg)
    sigmas = _sigmas(pack, model)
    latent = warped["samples"]
    positive, negative = _conds(family)
    comfy.sample.sample_custom(probe, _noise(latent.shape, 9), 2.5, sampler, sigmas, positive, negative, latent,
                               callback=lambda i, x0, x, total: x0s.append((i, x0.clone())), seed=3)
    assert [i for i, _ in x0s] == list(range(STEPS))
    assert len(x0_hats) == STEPS

    # independent features: the top-level library's matcher on the same pair
    features = midms_core.EdgeDescriptorMatcher(EdgeMatcherSettings(**MATCHER_ARGS)).bind(
        midms_core.MatchSide(latent=context.condition_latent, image=context.condition_image),
        midms_core.MatchSide(latent=context.exemplar_latent, image=context.exemplar_image))
    exemplar_scaled = base.process_latent_in(context.exemplar_latent)
    scale = float(exemplar_scaled.abs().max())
    for (i, x0), x0_hat in zip(x0s, x0_hats):
        if i == STEPS - 1:  # the last step does not re-warp
            assert torch.equal(x0, x0_hat)
            continue
        query = features.x0_features(base.process_latent_out(x0_hat))
        # the default edge matcher carries a locality prior: the sampler must use it at every re-match
        assert features.prior is not None
        expected = midms_core.warp(query, features.exemplar_in_domain, exemplar_scaled,  # default tau 0.005
                                   locality=features.prior.locality())
        mask = midms_core.warp_with_confidence(query, features.exemplar_in_domain, exemplar_scaled,
                                               confidence=ConfidenceSettings(threshold=512.0), prior=features.prior).mask
        assert torch.equal(mask, torch.ones_like(mask))
        torch.testing.assert_close(x0, expected, rtol=1e-4, atol=1e-5 * scale)
        assert _rel_err(x0, x0_hat) > 1e-2  # the warp replaced the model's estimate


def _fingerprint(model):
    digest = hashlib.sha256()
    for key, value in sorted(model.model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return {
        "state_dict": digest.hexdigest(),
        "model_options": copy.deepcopy(model.model_options),
        "patches": {k: list(v) for k, v in model.patches.items()},
        "object_patches": dict(model.object_patches),
        "backup": dict(model.backup),
        "model": model.model,
    }


def _context_fingerprint(context):
    return [t.clone() for t in (context.condition_image, context.exemplar_image,
                                 context.condition_latent, context.exemplar_latent)]


def test_model_and_context_not_mutated(h, pack, models):
    model = models["sd15"]
    context = _make_context(pack)
    settings = _settings(pack, eta=0.3, refine_strength=0.05)  # exercise every branch
    before, ctx_before = _fingerprint(model), _context_fingerprint(context)
    positive, negative = _conds("sd15")

    latent, warped = pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=1,
                                                steps=STEPS, start_noise=0.3, cfg=3.0, settings=settings)
    assert latent["samples"].shape == (1, 4, 8, 8) and torch.isfinite(latent["samples"]).all()
    assert _fingerprint(model) == before

    match, warped = _match(pack, context, settings)[:2]
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
    out = pack.SamplerCustom().sample(model, True, 1, 3.0, positive, negative, sampler, _sigmas(pack, model), warped)
    assert out[0]["samples"].shape == (1, 4, 8, 8)
    assert _fingerprint(model) == before
    for a, b in zip(_context_fingerprint(context), ctx_before):
        assert torch.equal(a, b)


def test_same_seed_same_output_all_in_one(h, pack, models):
    model = models["sd15"]
    context = _make_context(pack)
    settings = _settings(pack, eta=0.5)  # stochastic DDIM: the pack's own noise is seeded too
    positive, negative = _conds("sd15")

    def run(seed):
        return pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=seed,
                                          steps=STEPS, start_noise=0.3, cfg=3.0, settings=settings)[0]["samples"]

    a, b, c = run(4), run(4), run(5)
    assert torch.equal(a, b)
    assert _rel_err(a, c) > 1e-3


def test_same_seed_same_output_sampler_custom(h, pack, models):
    model = models["sdxl"]
    context = _make_context(pack)
    match, warped = _match(pack, context, _settings(pack, eta=0.5))[:2]
    positive, negative = _conds("sdxl")
    sigmas = _sigmas(pack, model)

    def run(seed):
        sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
        return pack.SamplerCustom().sample(model, True, seed, 3.0, positive, negative, sampler, sigmas,
                                           warped)[0]["samples"]

    a, b, c = run(4), run(4), run(5)
    assert torch.equal(a, b)
    assert _rel_err(a, c) > 1e-3

    # with add_noise off only the sampler's own (eta) noise depends on the seed
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
    d = pack.SamplerCustom().sample(model, False, 4, 3.0, positive, negative, sampler, sigmas, warped)[0]["samples"]
    e = pack.SamplerCustom().sample(model, False, 5, 3.0, positive, negative, sampler, sigmas, warped)[0]["samples"]
    assert _rel_err(d, e) > 1e-4


def assert_interrupt_stops_at_the_next_step(run) -> None:
    """``run(callback)`` samples with the host's progress callback; the interrupt flag set at
    step 1 must raise the host's InterruptProcessingException before step 2 reports."""
    import comfy.model_management as mm

    seen = []

    def interrupting(i, x0, x, total):
        seen.append(i)
        if i == 1:
            mm.interrupt_current_processing(True)

    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(interrupting)
    finally:
        mm.interrupt_current_processing(False)
    assert seen == [0, 1]
    assert not mm.processing_interrupted()


def test_callback_once_per_step_and_interrupt(h, pack, models):
    import comfy.model_management as mm
    import comfy.sample
    import comfy.utils

    model = models["sd15"]
    context = _make_context(pack)
    match, warped = _match(pack, context, _settings(pack))[:2]
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
    positive, negative = _conds("sd15")
    sigmas = _sigmas(pack, model)
    latent = warped["samples"]
    noise = _noise(latent.shape, 1)

    calls = []
    comfy.sample.sample_custom(model, noise, 2.0, sampler, sigmas, positive, negative, latent,
                               callback=lambda i, x0, x, total: calls.append((i, total)), seed=1)
    assert calls == [(i, STEPS) for i in range(STEPS)]

    # cancel: the host's interrupt flag, set while sampling, stops the run at the next step
    assert_interrupt_stops_at_the_next_step(lambda callback: comfy.sample.sample_custom(
        model, noise, 2.0, sampler, sigmas, positive, negative, latent, callback=callback, seed=1))
    assert not mm.processing_interrupted()

    # the all-in-one node drives the host's progress bar once per step
    updates = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, **_: updates.append((value, total)))  # current hosts pass node_id=
    try:
        pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=1, steps=STEPS,
                                   start_noise=0.3, cfg=2.0, settings=_settings(pack))
        assert updates == [(i + 1, STEPS) for i in range(STEPS)]

        def interrupt_hook(value, total, preview, **_):
            updates.append((value, total))
            mm.interrupt_current_processing(True)

        updates.clear()
        comfy.utils.set_progress_bar_global_hook(interrupt_hook)
        with pytest.raises(mm.InterruptProcessingException):
            pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=1, steps=STEPS,
                                       start_noise=0.3, cfg=2.0, settings=_settings(pack))
        assert updates == [(1, STEPS)]
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)


def test_batch_two_conditions_one_exemplar_direct_context(h, pack, models):
    import comfy.sample

    model = models["sd15"]
    context = _make_context(pack, cond_batch=2, exem_batch=1)
    match, warped, mask, preview, flow = _match(pack, context, _settings(pack))
    assert warped["samples"].shape == (2, 4, 8, 8)
    assert mask.shape == (2, H, W)
    assert flow.shape == (2, H, W, 3) and preview.shape == (2, H, W, 3)  # no VAE: preview is the flow
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
    positive, negative = _conds("sd15")
    out = comfy.sample.sample_custom(model, _noise((2, 4, 8, 8), 2), 3.0, sampler, _sigmas(pack, model),
                                     positive, negative, warped["samples"], seed=2)
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    assert _rel_err(out[0], out[1]) > 1e-3  # two different conditions, two different results


def test_sampler_checks_the_start_latent_before_any_step(h, pack, models):
    """Non-empty latents of another family (16 channels) or size, or a 1-latent batch against a
    match of 2, are refused before the first model call, naming the sampler and the input; a
    match of 1 pair drives any batch. (Over HTTP a current host replaces an EMPTY latent of other
    channels by one of the model's, so the channel case is checked here with a filled latent.)"""
    import comfy.sample

    model = models["sd15"]
    match, warped, _, _, _ = _match(pack, _make_context(pack, cond_batch=2, exem_batch=1), _settings(pack))
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
    calls = []
    options = {"model_function_wrapper": lambda apply, args: calls.append(1) or apply(args["input"], args["timestep"], **args["c"])}
    patched = model.clone()
    patched.model_options.update(options)
    positive, negative = _conds("sd15")
    bad = {
        "has shape (2, 16, 8, 8) but the match's latents have 4 channels": torch.ones(2, 16, 8, 8),
        "is 16 x 8 latent cells, width x height": torch.ones(2, 4, 8, 16),
        "has 1 latent but the match has 2 condition / exemplar pairs": warped["samples"][:1],
    }
    for says, latent in bad.items():
        with pytest.raises(ValueError, match=r"MIDMs Interleaved DDIM Sampler.*'latent_image' " + re.escape(says)):
            comfy.sample.sample_custom(patched, torch.zeros_like(latent), 3.0, sampler, _sigmas(pack, model),
                                       positive, negative, latent, seed=2)
    assert calls == []
    out = comfy.sample.sample_custom(patched, _noise((2, 4, 8, 8), 2), 3.0, sampler, _sigmas(pack, model),
                                     positive, negative, warped["samples"], seed=2)
    assert calls and torch.isfinite(out).all()  # the counter counts: the same graph with the match's own latent
    one_pair, one_warped, _, _, _ = _match(pack, _make_context(pack, cond_batch=1, exem_batch=1), _settings(pack))
    one_sampler = pack.MIDMsInterleavedSampler().get_sampler(model, one_pair)[0]
    three = one_warped["samples"].repeat(3, 1, 1, 1)
    out = comfy.sample.sample_custom(model, _noise((3, 4, 8, 8), 2), 3.0, one_sampler, _sigmas(pack, model),
                                     positive, negative, three, seed=2)
    assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()


def test_noise_path_follows_the_models_sampling(h, pack, models):
    """Stochastic steps and the refinement use the model's own noise path: the epsilon relation
    for SD1.5 / SDXL, rectified flow for the host's CONST sampling (SD3.x, Flux)."""
    import comfy.model_sampling as ms

    assert pack.noise_paths.noise_path(models["sd15"]).kind == "epsilon"
    assert pack.noise_paths.noise_path(models["sdxl"]).kind == "epsilon"
    if not hasattr(ms, "CONST"):
        pytest.skip("the 2024-03 host predates rectified-flow model sampling (CONST); checked on the current host")

    class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):  # how the host builds SD3 / Flux sampling
        pass

    flow = SimpleNamespace(model_sampling=FlowSampling(None))
    path = pack.noise_paths.path_of(flow.model_sampling)
    assert path.kind == "rectified_flow"
    # and it is the host's own relation: its noise_scaling is alpha(sigma) x0 + sigma eps
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    sigma = torch.tensor([0.6])
    host = flow.model_sampling.noise_scaling(sigma, eps, x0)
    assert torch.allclose(path.noise(x0, eps, 0.6), host, atol=1e-6)
    eps_host = models["sd15"].model.model_sampling.noise_scaling(sigma, eps, x0)
    assert torch.allclose(pack.noise_paths.noise_path(models["sd15"]).noise(x0, eps, 0.6), eps_host, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
def test_stochastic_steps_and_refinement_on_eps_and_v_models(h, pack, models, prediction):
    """eta = 1 and the final refinement, re-warping off, on the tiny SD1.5 as an epsilon model
    and switched to v-prediction by the host's own ModelSamplingDiscrete node: the SAMPLER picks
    the epsilon relation (v-prediction is x = x0 + sigma eps in the host's sigma space too) and
    equals the plain posterior loop of tests/comfy/reference_loops.py; the flow loop differs."""
    import comfy.sample
    import comfy.samplers


    model = h.nodes.NODE_CLASS_MAPPINGS["ModelSamplingDiscrete"]().patch(models["sd15"], prediction, False)[0]
    import comfy.model_sampling as ms

    sampling = model.object_patches["model_sampling"]  # applied when the host loads the model
    assert isinstance(sampling, ms.V_PREDICTION if prediction == "v_prediction" else ms.EPS)
    assert pack.noise_paths.model_sampling(model) is sampling and pack.noise_paths.noise_path(model).kind == "epsilon"
    context = _make_context(pack)
    match, warped = _match(pack, context, _settings(pack, rewarp_steps="none", eta=1.0, refine_strength=0.2))[:2]
    latent = warped["samples"]
    sigmas = _sigmas(pack, model)
    refine_sigmas = pack.core.strength_sigmas(model.model.model_sampling.sigmas.float().cpu(), 3, 0.2)
    positive, negative = _conds("sd15")

    def run(sampler):
        return comfy.sample.sample_custom(model, _noise(latent.shape, 5), 3.0, sampler, sigmas, positive, negative,
                                          latent, seed=7)

    ours = run(pack.MIDMsInterleavedSampler().get_sampler(model, match)[0])
    reference = run(comfy.samplers.KSAMPLER(posterior_loop(EPSILON_ALPHA, refine_sigmas)))
    assert torch.isfinite(ours).all()
    assert _rel_err(ours, reference) < 1e-5, _rel_err(ours, reference)
    assert _rel_err(ours, run(comfy.samplers.KSAMPLER(posterior_loop(EPSILON_ALPHA)))) > 1e-3  # refinement acts
    assert _rel_err(ours, run(comfy.samplers.KSAMPLER(posterior_loop(FLOW_ALPHA, refine_sigmas)))) > 1e-3


def test_encode_node_with_host_vae_and_batches(h, pack, models, vae):
    model = models["sd15"]
    exemplar = _exemplar_image(72, 96)                         # other size: fit "crop"
    cond = torch.cat([_edge_image(_exemplar_image(shift=s)) for s in (6, 12)])
    alpha = torch.ones(2, H, W, 1)
    cond = torch.cat([cond, alpha], dim=-1)                    # RGBA condition
    context = pack.MIDMsExemplarEncode().encode(cond, exemplar, vae, "crop")[0]
    assert isinstance(context, pack.types.MIDMsContext)
    assert context.condition_image.shape == (2, 3, H, W)
    assert context.exemplar_image.shape == (2, 3, H, W)
    assert context.condition_latent.shape == (2, 4, H // 8, W // 8)
    assert context.exemplar_latent.shape == (2, 4, H // 8, W // 8)
    assert context.vae is vae
    # the encode node's latents are the host VAE's own encoding of its prepared images
    torch.testing.assert_close(context.exemplar_latent, vae.encode(context.exemplar_image.movedim(1, -1)))

    match, warped, mask, preview, flow = _match(pack, context, _settings(pack))
    assert warped["samples"].shape == (2, 4, H // 8, W // 8)
    assert mask.shape == (2, H, W) and set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    assert preview.shape == (2, H, W, 3) and flow.shape == (2, H, W, 3)   # preview: VAE-decoded warp
    assert 0 <= float(preview.min()) <= float(preview.max()) <= 1
    assert 0 <= float(flow.min()) <= float(flow.max()) <= 1

    positive, negative = _conds("sd15")
    latent, warped_out = pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=3,
                                                    steps=2, start_noise=0.25, cfg=3.0)
    assert latent["samples"].shape == (2, 4, H // 8, W // 8) and torch.isfinite(latent["samples"]).all()
    torch.testing.assert_close(warped_out["samples"], warped["samples"])


# --------------------------------------------------------------------------------------------
# regressions: no autograd graph, progress with refinement, refinement settings checked early
# --------------------------------------------------------------------------------------------
def test_sampler_builds_no_autograd_graph_outside_inference_mode(h, pack, models):
    import comfy.sample
    import comfy.samplers

    model = models["sd15"]
    context = _make_context(pack)
    match, warped = _match(pack, context, _settings(pack))[:2]
    positive, negative = _conds("sd15")
    sigmas = _sigmas(pack, model)
    latent = warped["samples"]
    with torch.inference_mode(False):
        assert torch.is_grad_enabled()
        noise = _noise(latent.shape, 1)
        latent = latent.clone()
        euler = comfy.sample.sample_custom(model, noise, 2.0, comfy.samplers.ksampler("euler"), sigmas,
                                           positive, negative, latent, seed=1)
        assert not euler.requires_grad  # the host's own sampler
        sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
        ours = comfy.sample.sample_custom(model, noise, 2.0, sampler, sigmas, positive, negative, latent, seed=1)
        assert not ours.requires_grad


def test_progress_with_refinement_reaches_total_only_at_the_end(h, pack, models):
    import comfy.utils

    model = models["sd15"]
    positive, negative = _conds("sd15")
    updates = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, **_: updates.append((value, total)))  # current hosts pass node_id=
    try:
        pack.MIDMsSampler().sample(model, positive, negative, _make_context(pack), _matcher(pack), seed=1,
                                   steps=STEPS, start_noise=0.3, cfg=2.0,
                                   settings=_settings(pack, refine_strength=0.05))  # 3 refine steps
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    assert len(updates) == STEPS + 3
    values = [v for v, _ in updates]
    assert values == sorted(values) and updates[-1][0] == updates[-1][1]
    assert all(v < t for v, t in updates[:-1]), updates


def test_refinement_that_cannot_fit_is_rejected_by_the_settings_node(h, pack):
    """20 refinement steps cannot fit in the first 1 % of the schedule: the settings node says so,
    naming itself and the inputs, instead of a bare error in the middle of sampling."""
    with pytest.raises(ValueError) as info:
        pack.MIDMsRewarpSettings().make(tau=0.005, threshold=15.75, mask_mode="hard", smooth_mask=True,
                                        rewarp_steps="", eta=0.0, refine_strength=0.01, refine_steps=20)
    message = str(info.value)
    assert message.startswith("MIDMs Rewarp Settings:") and "refine_steps" in message and "refine_strength" in message
