"""Rectified-flow models in-process: a tiny SD3-shaped MMDiT and a tiny Flux built from the
host's own classes (``comfy.supported_models.SD3``: 16-channel latents, CONST model sampling with
shift 3; ``comfy.supported_models.Flux``: one double and one single stream block, guidance
embedding, CONST sampling with Flux's resolution-dependent shift), seeded random weights, hidden
size 64. Current hosts only: the March-2024 host predates both.

(A Flux checkpoint FILE cannot be tiny: the host's detection fixes Flux's hidden size at 3072 and
its text width at 4096, about 0.4 B parameters for the smallest block count. The model is built
from the host's own Flux class with a small config instead; the SD3 one is also a file test.)

* re-warping off, eta 0: the pack's SAMPLER through the host's ``sample_custom`` equals the
  host's Euler sampler (as for SD1.5 / SDXL in test_nodes_inprocess);
* the SAMPLER picks the rectified-flow noise path for this model, and with re-warping on the
  whole interleaved run (16-channel matching included) stays finite and differs from Euler.
"""

from __future__ import annotations

import pytest
import torch

from harness.inprocess_models import DIT_CONTEXT_WIDTH as CONTEXT_WIDTH  # noqa: F401  (imported by other tests)
from harness.inprocess_models import DIT_POOLED_WIDTH as POOLED_WIDTH  # noqa: F401
from harness.inprocess_models import build_flux as tiny_flux
from harness.inprocess_models import build_sd3 as tiny_sd3
from harness.inprocess_models import dit_conds as _conds
from harness.inprocess_models import host_has
from harness.tiny_models import init_tensor
from tests.comfy.reference_loops import EPSILON_ALPHA, FLOW_ALPHA, posterior_loop
from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    H, W, _edge_image, _exemplar_image, _make_context, _match, _noise, _rel_err, _settings, _sigmas, h, models, pack)


@pytest.fixture(scope="module")
def sd3(h):
    return build_sd3()


def build_sd3():
    """The tiny SD3 ModelPatcher (skips on hosts without SD3)."""
    if not host_has("SD3"):
        pytest.skip("the 2024-03 host predates SD3 (checked on the current host)")
    return tiny_sd3()


@pytest.fixture(scope="module")
def flux(h):
    return build_flux()


def build_flux():
    """The tiny Flux ModelPatcher (skips on hosts without Flux)."""
    if not host_has("Flux"):
        pytest.skip("the 2024-03 host predates Flux (checked on the current host)")
    return tiny_flux()


@pytest.fixture(scope="module", params=["sd3", "flux"])
def dit(request):
    """Each tiny DiT in turn."""
    return request.getfixturevalue(request.param)


def _context(pack, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pack.types.MIDMsContext(
        condition_image=_edge_image(_exemplar_image(shift=8)).movedim(-1, 1).contiguous(),
        exemplar_image=_exemplar_image(seed=0).movedim(-1, 1).contiguous(),
        condition_latent=torch.randn(1, 16, H // 8, W // 8, generator=g),
        exemplar_latent=2.0 * torch.randn(1, 16, H // 8, W // 8, generator=g),
    )


def test_dits_use_the_rectified_flow_path(dit, pack):
    assert pack.noise_paths.noise_path(dit).kind == "rectified_flow"


def test_dit_rewarp_off_equals_host_euler_and_rewarp_on_runs(dit, pack):
    import comfy.sample
    import comfy.samplers

    context = _context(pack)
    positive, negative = _conds()
    sigmas = _sigmas(pack, dit)
    assert float(sigmas[0]) <= 1.0  # a flow schedule
    results = {}
    for steps in ("none", ""):
        match, warped = _match(pack, context, _settings(pack, rewarp_steps=steps))[:2]
        latent = warped["samples"]
        assert latent.shape == (1, 16, H // 8, W // 8)
        sampler = pack.MIDMsInterleavedSampler().get_sampler(dit, match)[0]
        results[steps] = comfy.sample.sample_custom(dit, _noise(latent.shape, 5), 3.0, sampler, sigmas,
                                                    positive, negative, latent, seed=7)
    euler = comfy.sample.sample_custom(dit, _noise(latent.shape, 5), 3.0, comfy.samplers.ksampler("euler"), sigmas,
                                       positive, negative, latent, seed=7)
    assert torch.isfinite(results["none"]).all() and torch.isfinite(results[""]).all()
    assert _rel_err(results["none"], euler) < 1e-5, _rel_err(results["none"], euler)
    assert _rel_err(euler, latent) > 1e-2  # the model changes the latent: the comparison is not vacuous
    assert _rel_err(results[""], euler) > 1e-3  # re-warping acts


@pytest.mark.parametrize("refine", [False, True])
def test_dit_stochastic_steps_follow_the_flow_posterior(dit, pack, refine):
    """eta = 1, re-warping off (and the final refinement, re-noising included): the SAMPLER
    equals a plain loop over the host's guided denoiser with the rectified-flow DDIM posterior
    written out in tests/comfy/reference_loops.py (alpha = 1 - sigma), drawing the same noise;
    the epsilon-path loop would differ."""
    import comfy.sample
    import comfy.samplers


    context = _context(pack)
    positive, negative = _conds()
    sigmas = _sigmas(pack, dit)
    settings = _settings(pack, rewarp_steps="none", eta=1.0, refine_strength=0.2 if refine else 0.0)
    match, warped = _match(pack, context, settings)[:2]
    latent = warped["samples"]
    refine_sigmas = None
    if refine:  # the schedule the SAMPLER builds: refine_steps (3) from 20 % of the model's sigmas
        refine_sigmas = pack.core.strength_sigmas(dit.model.model_sampling.sigmas.float().cpu(), 3, 0.2)

    def run(sampler):
        return comfy.sample.sample_custom(dit, _noise(latent.shape, 5), 3.0, sampler, sigmas, positive, negative,
                                          latent, seed=7)

    ours = run(pack.MIDMsInterleavedSampler().get_sampler(dit, match)[0])
    flow = run(comfy.samplers.KSAMPLER(posterior_loop(FLOW_ALPHA, refine_sigmas)))
    epsilon = run(comfy.samplers.KSAMPLER(posterior_loop(EPSILON_ALPHA, refine_sigmas)))
    assert torch.isfinite(ours).all()
    assert _rel_err(ours, flow) < 1e-5, _rel_err(ours, flow)
    assert _rel_err(ours, epsilon) > 1e-3  # the path matters here
    if refine:
        plain = run(comfy.samplers.KSAMPLER(posterior_loop(FLOW_ALPHA)))
        assert _rel_err(flow, plain) > 1e-3  # the refinement acts


@pytest.fixture(scope="module")
def vae16(sd3):
    """A tiny TAESD with 16 latent channels (SD3 / Flux latent space), seeded."""
    import comfy.sd

    from harness.tiny_models import taesd_shapes

    with torch.inference_mode(False):
        sd = {k: init_tensor("first_stage_model." + k, shape, 5) for k, shape in taesd_shapes(16).items()}
        vae = comfy.sd.VAE(sd=sd)
    assert vae.latent_channels == 16
    return vae


def test_16_channel_latents_through_every_node(sd3, vae16, pack, h):
    """Encode with a 16-channel VAE, correspondence (warp, mask, decoded preview, flow preview),
    the SAMPLER in SamplerCustom and the all-in-one sampler: shapes and finite values."""
    import comfy.sample

    condition = _edge_image(_exemplar_image(shift=8))
    exemplar = _exemplar_image(seed=1)
    context = pack.MIDMsExemplarEncode().encode(condition, exemplar, vae16, "crop")[0]
    assert context.condition_latent.shape == (1, 16, H // 8, W // 8) == context.exemplar_latent.shape
    match, warped, mask, preview, flow = _match(pack, context, _settings(pack))
    assert warped["samples"].shape == (1, 16, H // 8, W // 8) and torch.isfinite(warped["samples"]).all()
    assert mask.shape == (1, H, W) and preview.shape == (1, H, W, 3) and flow.shape == (1, H, W, 3)
    assert torch.isfinite(preview).all()
    positive, negative = _conds()
    sampler = pack.MIDMsInterleavedSampler().get_sampler(sd3, match)[0]
    out = comfy.sample.sample_custom(sd3, _noise(warped["samples"].shape, 5), 3.0, sampler, _sigmas(pack, sd3),
                                     positive, negative, warped["samples"], seed=7)
    assert out.shape == (1, 16, H // 8, W // 8) and torch.isfinite(out).all()
    latent, start = pack.MIDMsSampler().sample(sd3, positive, negative, context, pack.MIDMsEdgeMatcher().make(
        canny_low=0.1, canny_high=0.2, edge_blur=2.0, x0_condition_weight=0.7)[0], seed=3, steps=2, start_noise=0.25,
        cfg=2.0)
    assert latent["samples"].shape == (1, 16, H // 8, W // 8) and torch.isfinite(latent["samples"]).all()
    decoded = vae16.decode(latent["samples"])
    assert decoded.shape == (1, H, W, 3) and torch.isfinite(decoded).all()


def test_latents_of_another_family_are_refused_where_they_meet_a_model(sd3, vae16, models, pack, h):
    """A 16-channel context with an SD1.5 model, and a 4-channel one with SD3 DIFT: each node that
    meets the model refuses by name, naming both sides and the fix, before the model runs (it
    would fail deep inside a convolution with a shape traceback)."""
    import importlib

    import comfy.sample

    error = importlib.import_module(f"{pack.package}.host_adapters.errors").NodeInputError
    sd15 = models["sd15"]
    context = pack.MIDMsExemplarEncode().encode(_edge_image(_exemplar_image(shift=8)), _exemplar_image(seed=1),
                                                vae16, "crop")[0]
    match, warped = _match(pack, context, _settings(pack))[:2]
    fix = "Encode the images with the VAE of the model's own family"
    with pytest.raises(error, match=r"MIDMs Interleaved DDIM Sampler: 'match' holds 16-channel latents, but "
                                    r"'model' \(SD15\) works on 4-channel latents") as raised:
        pack.MIDMsInterleavedSampler().get_sampler(sd15, match)
    assert fix in str(raised.value)
    positive, negative = _conds()
    with pytest.raises(error, match=r"MIDMs Sampler \(all-in-one\): 'context' holds 16-channel.*'model' \(SD15\)"):
        pack.MIDMsSampler().sample(sd15, positive, negative, context, pack.MIDMsEdgeMatcher().make(
            canny_low=0.1, canny_high=0.2, edge_blur=2.0, x0_condition_weight=0.7)[0], seed=3, steps=2,
            start_noise=0.25, cfg=2.0)
    # the SAMPLER made for SD3 but run by a sampling node given the SD1.5 model
    sampler = pack.MIDMsInterleavedSampler().get_sampler(sd3, match)[0]
    with pytest.raises(error, match=r"run by the sampling node.*'match' holds 16-channel.*the sampling node's "
                                    r"'model' \(SD15\)"):
        comfy.sample.sample_custom(sd15, _noise(warped["samples"].shape, 5), 3.0, sampler, _sigmas(pack, sd15),
                                   positive, negative, warped["samples"], seed=7)
    # DIFT on SD3 against a context of SD1.5's 4-channel latents
    dift = h.nodes.NODE_CLASS_MAPPINGS["MIDMsDiffusionFeatureMatcher"]().make(
        sd3, timestep=261, output_block=6, ensemble=1, dit_block=-1)[0]
    with pytest.raises(error, match=r"MIDMs Diffusion Feature Matcher \(DIFT\): 'context' holds 4-channel latents, "
                                    r"but 'model' \(SD3\) works on 16-channel"):
        pack.MIDMsCorrespondence().correspond(_make_context(pack), dift, _settings(pack))
