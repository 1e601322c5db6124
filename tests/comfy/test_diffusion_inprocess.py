"""The DIFT-style diffusion feature matcher inside a REAL ComfyUI, in-process, with the tiny
SD1.5 and SDXL models of test_nodes_inprocess.py (2 resolution levels: output blocks 0..3; block
2 is the first block of the full-resolution level, so its input is at half the latent grid).

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_diffusion_inprocess.py -q
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    _conds,
    _fingerprint,
    _make_context,
    _noise,
    _settings,
    _sigmas,
    _like_the_executor,
    h,
    models,
    pack,
)

OUTPUT_BLOCK = 1  # input at 1/2 of the tiny U-Net's latent grid (output blocks 0, 1 at that level)


@pytest.fixture(scope="module")
def node(h):
    assert "MIDMsDiffusionFeatureMatcher" in h.nodes.NODE_CLASS_MAPPINGS
    return h.nodes.NODE_CLASS_MAPPINGS["MIDMsDiffusionFeatureMatcher"]


def _matcher(node, model, output_block=OUTPUT_BLOCK, ensemble=1):
    return node().make(model, timestep=261, output_block=output_block, ensemble=ensemble)[0]


def test_node_inputs_have_tooltips(node):
    required = node.INPUT_TYPES()["required"]
    assert list(required) == ["model", "timestep", "output_block", "ensemble"]
    assert all(spec[1].get("tooltip") for spec in required.values())
    assert required["timestep"][1]["default"] == 261 and required["output_block"][1]["default"] == 6
    assert node.CATEGORY == "MIDMs"


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_bind_gives_features_on_the_latent_grid(h, pack, node, models, family):
    model = models[family]
    before = _fingerprint(model)
    matcher = _matcher(node, model)
    context = _make_context(pack)
    cond, exem = pack.core.MatchSide(latent=context.condition_latent), pack.core.MatchSide(latent=context.exemplar_latent)
    f = matcher.bind(cond, exem)
    assert f.condition.shape[-2:] == (8, 8) and f.exemplar.shape[-2:] == (8, 8)
    assert f.condition.shape[:2] == f.exemplar.shape[:2] and f.condition.shape[1] > 4
    assert torch.isfinite(f.condition).all() and torch.isfinite(f.exemplar).all()
    assert not torch.allclose(f.condition, f.exemplar)
    assert torch.equal(matcher.bind(cond, exem).condition, f.condition)  # deterministic
    # the ensemble averages several draws: other features than one draw
    assert not torch.equal(_matcher(node, model, ensemble=3).bind(cond, exem).condition, f.condition)
    assert _fingerprint(model) == before


def test_missing_output_block_is_named(h, pack, node, models):
    matcher = _matcher(node, models["sd15"], output_block=6)  # the tiny U-Net has 4
    context = _make_context(pack)
    side = pack.core.MatchSide(latent=context.condition_latent)
    with pytest.raises(ValueError, match="output_block.*0..3"):
        matcher.bind(side, side)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_rematching_costs_no_extra_unet_pass(h, pack, node, models, family):
    import comfy.sample
    import comfy.samplers

    model = models[family]
    before = _fingerprint(model)
    context = _make_context(pack)
    settings = _settings(pack, rewarp_steps="")  # re-warp at every step but the last
    matcher = _matcher(node, model)
    extracted = []
    original_extract = matcher.extract
    matcher.extract = lambda latent, g: extracted.append(1) or original_extract(latent, g)
    match, warped = pack.MIDMsCorrespondence().correspond(context, matcher, settings)[:2]
    assert len(extracted) == 2  # condition and exemplar, once each
    sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]

    calls = []
    counted = model.clone()

    def unet_wrapper(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(unet_wrapper)

    sigmas = _sigmas(pack, model)
    latent = warped["samples"]
    positive, negative = _conds(family)
    x0_features = []
    take = matcher.capture.take

    def recording_take():
        out = take()
        x0_features.append(out)
        return out

    matcher.capture.take = recording_take

    def run(s):
        calls.clear()
        extracted.clear()
        out = comfy.sample.sample_custom(counted, _noise(latent.shape, 4), 3.0, s, sigmas, positive, negative,
                                         latent, seed=2)
        return out, list(calls), len(extracted)

    ours, our_calls, our_extracts = run(sampler)
    euler, euler_calls, _ = run(comfy.samplers.ksampler("euler"))
    steps = sigmas.shape[0] - 1
    assert len(euler_calls) == steps  # cond and uncond batched: one U-Net call per step
    assert our_calls == euler_calls
    # the sampler reuses the match's bound features (no second bind) and takes the x0 features
    # from its own U-Net calls: no extract at all while sampling
    assert our_extracts == 0
    # every re-warp step used the features captured from that step's own U-Net call
    assert len(x0_features) == steps - 1
    assert all(f is not None and f.shape[0] == 1 and f.shape[-2:] == (4, 4) for f in x0_features)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, euler)
    assert _fingerprint(model) == before


def test_capture_takes_the_cond_rows(h, node, models):
    from importlib import import_module

    from tests.comfy.host import PACK_NAME

    diffusion = import_module(f"{PACK_NAME}.nodes.diffusion")
    recorded = []
    patch = diffusion.block_capture(2, recorded.append)
    h_in = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 2, 2)
    out = patch(h_in, h_in, {"block": ("output", 2), "cond_or_uncond": [1, 0, 1]})
    assert out[0] is h_in
    assert len(recorded) == 1 and torch.equal(recorded[0], h_in[1:2])
    patch(h_in, h_in, {"block": ("output", 1), "cond_or_uncond": [0, 0, 0]})
    assert len(recorded) == 1
