"""Every MIDMs node with the 2025 DiT families inside the newest host (0.3.75), in-process: tiny
Flux.2, Z-Image, Qwen-Image and Chroma models built from the host's own ``comfy.supported_models``
classes, each with a tiny VAE of its own latent format (harness.inprocess_models):

* Flux.2: the host's Flux.2 VAE (batch-normalised 128-channel latent, 16 pixels per cell; the
  host fixes its width, so it is seeded at full size);
* Qwen-Image: the host's Wan 2.1 video VAE, narrow (16 channels, 8 px, a 3-D latent
  (B, 16, 1, h, w));
* Z-Image and Chroma: a 16-channel TAESD (Flux's latent space, 8 px).

What is checked, per family: encode (the context's latents), the first warp and its previews,
the MIDMs SAMPLER through the host's own SamplerCustom node (re-warping off equals the host's
Euler; on, it differs), the all-in-one sampler (noise and DDIM-inversion starts), the DDIM
inversion sampler, DDIB / round trip, an exemplar set: shapes, finite values, and that every
LATENT goes back in the shape the host's own graph gives that family (its Empty Latent node,
EmptyFlux2LatentImage or EmptySD3LatentImage, made ready by the host's sampling node:
``comfy.sample.fix_empty_latent_channels``; for Qwen-Image (B, 16, 1, h, w), what its VAE Encode
and samplers give and its VAE Decode needs).

Run: COMFYUI_PATH=.comfyui-newest/ComfyUI .venv-comfy-newest/bin/python -m pytest tests/comfy/test_new_families_nodes_inprocess.py -q
"""

from __future__ import annotations

import pytest
import torch

from harness.inprocess_models import build_flux2_vae, build_vae16, build_wan21_vae, new_family_conds
from tests.comfy.test_new_families_inprocess import build
from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    _edge_image, _exemplar_image, _like_the_executor, _rel_err, _settings, h, pack)

FAMILIES = ["flux2", "zimage", "qwen_image", "chroma"]
CELL = {"flux2": 16, "zimage": 8, "qwen_image": 8, "chroma": 8}  # pixels per latent cell
CELLS = 8  # latent cells each way
EMPTY_LATENT = {"flux2": "EmptyFlux2LatentImage", "zimage": "EmptySD3LatentImage", "qwen_image": "EmptySD3LatentImage",
                "chroma": "EmptySD3LatentImage"}  # what the families' ComfyUI example workflows use
MATCHER_ARGS = dict(canny_low=0.1, canny_high=0.2, edge_blur=2.0, x0_condition_weight=0.7)


class Family:
    def __init__(self, name, model, vae):
        self.name, self.model, self.vae = name, model, vae
        self.side = CELL[name] * CELLS
        self.channels = model.model.latent_format.latent_channels


@pytest.fixture(scope="module")
def built(h):
    return {}


def _family(built, name):
    if name not in built:
        with torch.inference_mode(False):
            model = build(name)  # skips on hosts without the class
            vae = {"flux2": build_flux2_vae, "qwen_image": build_wan21_vae}.get(name, build_vae16)()
        built[name] = Family(name, model, vae)
    return built[name]


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request, built):
    return _family(built, request.param)


def _images(fam, shift=8):
    return _edge_image(_exemplar_image(fam.side, fam.side, shift=shift)), _exemplar_image(fam.side, fam.side, seed=1)


def _context(pack, fam):
    return pack.MIDMsExemplarEncode().encode(*_images(fam), fam.vae, "crop")[0]


def _edge(pack):
    return pack.MIDMsEdgeMatcher().make(**MATCHER_ARGS)[0]


def _run(h, name, **inputs):
    """The host's node ``name`` run as the host runs it, first output: a V3 node's ``execute``
    classmethod, or an older node's FUNCTION."""
    cls = h.nodes.NODE_CLASS_MAPPINGS[name]
    if hasattr(cls, "define_schema"):
        return cls.execute(**inputs)[0]
    return getattr(cls(), cls.FUNCTION)(**inputs)[0]


def _host_shape(h, fam, batch=1):
    """The shape the host's own graph samples this family in: its Empty Latent node's LATENT,
    as the sampling node makes it ready (fix_empty_latent_channels)."""
    import comfy.sample

    empty = _run(h, EMPTY_LATENT[fam.name], width=fam.side, height=fam.side, batch_size=batch)["samples"]
    return tuple(comfy.sample.fix_empty_latent_channels(fam.model, empty).shape)


def _sigmas(pack, model, steps=4, denoise=0.6):
    return pack.BasicScheduler().get_sigmas(model, "simple", steps, denoise)[0]


def _sampler_custom(h, model, sampler, sigmas, latent, add_noise=True, cfg=3.0, conds=None, seed=7):
    """The host's own SamplerCustom node (it readies the latent: fix_empty_latent_channels)."""
    positive, negative = conds
    return _run(h, "SamplerCustom", model=model, add_noise=add_noise, noise_seed=seed, cfg=cfg, positive=positive,
                negative=negative, sampler=sampler, sigmas=sigmas, latent_image={"samples": latent})["samples"]


def _decoded(h, fam, latent):
    images = _run(h, "VAEDecode", vae=fam.vae, samples={"samples": latent})
    assert images.shape == (latent.shape[0], fam.side, fam.side, 3) and torch.isfinite(images).all()
    return images


def test_encode_and_first_warp(h, pack, fam):
    """Encode: the context holds (B, C, h, w) latents of the family's channels and cell size;
    the correspondence's warped latent comes back in the host's shape for the family, decodes
    with the family's VAE, and its previews are at the condition's size."""
    context = _context(pack, fam)
    assert context.condition_latent.shape == (1, fam.channels, CELLS, CELLS) == context.exemplar_latent.shape
    assert torch.isfinite(context.exemplar_latent).all()
    match, warped, mask, preview, flow = pack.MIDMsCorrespondence().correspond(context, _edge(pack), _settings(pack))
    assert tuple(warped["samples"].shape) == _host_shape(h, fam)
    assert torch.isfinite(warped["samples"]).all()
    assert mask.shape == (1, fam.side, fam.side) and preview.shape == (1, fam.side, fam.side, 3) == flow.shape
    assert torch.isfinite(preview).all()
    _decoded(h, fam, warped["samples"])


def test_sampler_in_sampler_custom(h, pack, fam):
    """The SAMPLER in the host's SamplerCustom node, cfg 3: re-warping off equals the host's
    Euler (eta 0); on, the run differs (the re-warp is applied); shapes as the host's own."""
    import comfy.samplers

    context = _context(pack, fam)
    conds = new_family_conds(fam.name)
    sigmas = _sigmas(pack, fam.model)
    out = {}
    for steps in ("none", ""):
        match, warped = pack.MIDMsCorrespondence().correspond(context, _edge(pack), _settings(pack, rewarp_steps=steps))[:2]
        sampler = pack.MIDMsInterleavedSampler().get_sampler(fam.model, match)[0]
        out[steps] = _sampler_custom(h, fam.model, sampler, sigmas, warped["samples"], conds=conds)
    euler = _sampler_custom(h, fam.model, comfy.samplers.ksampler("euler"), sigmas, warped["samples"], conds=conds)
    for result in (out["none"], out[""], euler):
        assert tuple(result.shape) == _host_shape(h, fam) and torch.isfinite(result).all()
    assert _rel_err(out["none"], euler) < 1e-5, _rel_err(out["none"], euler)
    assert _rel_err(euler, warped["samples"].reshape(euler.shape)) > 1e-2  # the model acts: not vacuous
    assert _rel_err(out[""], out["none"]) > 1e-3  # the re-warp acts
    _decoded(h, fam, out[""])


@pytest.mark.parametrize("start", ["noise", "ddim inversion"])
def test_all_in_one_sampler(h, pack, fam, start):
    """MIDMs Sampler (all-in-one), both starts: the result and the warp in the host's shape,
    finite, decodable; re-warping changes the result."""
    context = _context(pack, fam)
    positive, negative = new_family_conds(fam.name)
    results = {}
    for steps in ("none", ""):
        latent, warped = pack.MIDMsSampler().sample(fam.model, positive, negative, context, _edge(pack), seed=3, steps=2,
                                                    start_noise=0.5, cfg=2.0, settings=_settings(pack, rewarp_steps=steps),
                                                    start=start)
        assert tuple(latent["samples"].shape) == _host_shape(h, fam) == tuple(warped["samples"].shape)
        assert torch.isfinite(latent["samples"]).all()
        results[steps] = latent["samples"]
    assert _rel_err(results[""], results["none"]) > 1e-3
    _decoded(h, fam, results[""])


def test_inversion_ddib_and_round_trip(h, pack, fam):
    """The DDIM inversion SAMPLER in SamplerCustom (add_noise off) and the regeneration from its
    output; DDIB Translate (same model, two prompts) and the round trip: host shapes, finite."""
    import comfy.samplers

    context = _context(pack, fam)
    warped = pack.MIDMsCorrespondence().correspond(context, _edge(pack), _settings(pack))[1]["samples"]
    conds = new_family_conds(fam.name)
    sigmas = _sigmas(pack, fam.model, steps=3, denoise=0.5)
    inverted = _sampler_custom(h, fam.model, h.nodes.NODE_CLASS_MAPPINGS["MIDMsDDIMInversionSampler"]().get_sampler(fam.model)[0], sigmas, warped,
                               add_noise=False, cfg=1.0, conds=conds)
    assert tuple(inverted.shape) == _host_shape(h, fam) and torch.isfinite(inverted).all()
    assert _rel_err(inverted, warped.reshape(inverted.shape)) > 1e-3
    back = _sampler_custom(h, fam.model, comfy.samplers.ksampler("euler"), sigmas, inverted, add_noise=False, cfg=1.0,
                           conds=conds)
    assert tuple(back.shape) == _host_shape(h, fam) and torch.isfinite(back).all()
    positive, negative = conds
    out, inv, report = h.nodes.NODE_CLASS_MAPPINGS["MIDMsDDIBTranslate"]().translate(fam.model, positive, negative, fam.model, negative, positive,
                                                           {"samples": warped}, steps=3, depth=0.5, scheduler="simple",
                                                           cfg_a=1.0, cfg_b=1.0)
    assert tuple(out["samples"].shape) == _host_shape(h, fam) == tuple(inv["samples"].shape)
    assert torch.isfinite(out["samples"]).all() and torch.isfinite(inv["samples"]).all() and "3 steps" in report
    round_trip = h.nodes.NODE_CLASS_MAPPINGS["MIDMsDDIMRoundTrip"]().round_trip(fam.model, positive, negative, {"samples": warped}, steps=3,
                                                      depth=0.5, scheduler="simple", cfg=1.0)
    result = round_trip["result"] if isinstance(round_trip, dict) else round_trip
    assert tuple(result[0]["samples"].shape) == _host_shape(h, fam)
    assert 0.0 <= float(result[1]) < float("inf")


def test_exemplar_set(h, pack, fam):
    """Two exemplars matched as one union: the stacked exemplar latent (1, C, 2 h, w), and the
    warp back in the host's shape, finite."""
    condition, exemplar = _images(fam)
    exemplars = torch.cat([exemplar, _exemplar_image(fam.side, fam.side, shift=16, seed=2)])
    context = h.nodes.NODE_CLASS_MAPPINGS["MIDMsExemplarSetEncode"]().encode(condition, exemplars, fam.vae, "crop")[0]
    assert context.exemplar_latent.shape == (1, fam.channels, 2 * CELLS, CELLS)
    warped = pack.MIDMsCorrespondence().correspond(context, _edge(pack), _settings(pack))[1]["samples"]
    assert tuple(warped.shape) == _host_shape(h, fam) and torch.isfinite(warped).all()


def test_video_latents_of_several_frames_are_refused(h, pack, built):
    """A video latent of 2 frames into the SAMPLER of a video-latent model (Qwen-Image): refused
    by name, before any step."""
    fam = _family(built, "qwen_image")
    error = __import__(f"{pack.package}.host_adapters.errors", fromlist=["NodeInputError"]).NodeInputError
    context = _context(pack, fam)
    match = pack.MIDMsCorrespondence().correspond(context, _edge(pack), _settings(pack))[0]
    sampler = pack.MIDMsInterleavedSampler().get_sampler(fam.model, match)[0]
    latent = torch.randn(1, 16, 2, CELLS, CELLS)
    with pytest.raises(error, match=r"MIDMs Interleaved DDIM Sampler.*video latent of 2 frames"):
        _sampler_custom(h, fam.model, sampler, _sigmas(pack, fam.model), latent, conds=new_family_conds(fam.name))
