"""The DIFT-style diffusion feature matcher inside a REAL ComfyUI, in-process, with the tiny
SD1.5 and SDXL models of test_nodes_inprocess.py (2 resolution levels: output blocks 0..3; block
2 is the first block of the full-resolution level, so its input is at half the latent grid).

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_diffusion_inprocess.py -q
"""

from __future__ import annotations

import pytest
import torch

from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    _build_model,
    _conds,
    _fingerprint,
    _make_context,
    _noise,
    _settings,
    _sigmas,
    _unet_config,
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
    optional = node.INPUT_TYPES()["optional"]
    # new widgets only at the end of "optional": saved workflows keep their widget order
    assert list(optional) == ["cross_domain_matcher", "empty_prompt", "dit_block"]
    assert optional["dit_block"][1]["default"] == -1
    assert all(spec[1].get("tooltip") for spec in [*required.values(), *optional.values()])
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


def test_capture_takes_the_cond_rows(h, pack, node, models):
    from importlib import import_module

    unet_capture = import_module(f"{pack.package}.host_adapters.unet_capture")
    recorded = []
    patch = unet_capture.block_capture(2, recorded.append)
    h_in = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 2, 2)
    out = patch(h_in, h_in, {"block": ("output", 2), "cond_or_uncond": [1, 0, 1]})
    assert out[0] is h_in
    assert len(recorded) == 1 and torch.equal(recorded[0], h_in[1:2])
    patch(h_in, h_in, {"block": ("output", 1), "cond_or_uncond": [0, 0, 0]})
    assert len(recorded) == 1


def _layout_config(family: str) -> dict:
    """The real SD1.5 / SDXL block layout (levels, res blocks, where the transformers are), but
    narrow: 32 base channels and transformers one deep (from comfy/model_detection.py's SD15 and
    SDXL configs)."""
    if family == "sd15":
        return {**_unet_config("sd15"), "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
                "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]}
    return {**_unet_config("sdxl"), "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
            "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1]}


@pytest.fixture(scope="module")
def layout_models(h):
    with torch.inference_mode(False):
        return {family: _build_model(h, family, 3, _layout_config(family)) for family in ("sd15", "sdxl")}


# the input of output block 6 = the output of DIFT's up_ft_index 1, per layout, for a 16 x 16
# latent and 32 base channels: SD1.5 4 * 32 channels at half the grid (real: 1280 at 32 x 32 for
# 512 px), SDXL 2 * 32 at the full grid (real: 640 at 128 x 128 for 1024 px)
DEFAULT_BLOCK_FEATURES = {"sd15": (128, 8, 8), "sdxl": (64, 16, 16)}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_default_block_is_difts_in_the_real_layouts(h, node, layout_models, family):
    model = layout_models[family]
    assert len(model.model.diffusion_model.output_blocks) == (12 if family == "sd15" else 9)
    defaults = {k: v[1]["default"] for k, v in node.INPUT_TYPES()["required"].items() if k != "model"}
    matcher = node().make(model, **defaults)[0]
    latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    raw = matcher.extract(latent, torch.Generator().manual_seed(1))
    assert tuple(raw.shape) == (2, *DEFAULT_BLOCK_FEATURES[family])
    features = matcher.features(latent)
    assert features.shape == (2, raw.shape[1], 16, 16) and torch.isfinite(features).all()
    # the features distinguish the two latents of the batch
    assert not torch.allclose(features[0], features[1])


def _empty_prompt(width: int, pooled: int | None, scale: float, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    extra = {} if pooled is None else {"pooled_output": scale * torch.randn(1, pooled, generator=g)}
    return [[scale * torch.randn(1, 77, width, generator=g), extra]]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_empty_prompt_conditioning_is_used(h, node, models, family):
    model = models[family]
    width, pooled = (768, None) if family == "sd15" else (2048, 1280)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def features(empty_prompt):
        return node().make(model, 261, OUTPUT_BLOCK, 1, empty_prompt=empty_prompt)[0].features(latent)

    default = features(None)
    torch.testing.assert_close(features(_empty_prompt(width, pooled, 0.0)), default, rtol=0, atol=0)
    assert not torch.allclose(features(_empty_prompt(width, pooled, 1.0)), default, atol=1e-4)
    if family == "sdxl":  # the pooled output alone reaches the U-Net too (through y)
        cross_zero = [[torch.zeros(1, 77, width), {"pooled_output": torch.ones(1, pooled)}]]
        assert not torch.allclose(features(cross_zero), default, atol=1e-4)
    wrong = _empty_prompt(1024, pooled, 1.0)
    with pytest.raises(ValueError, match="DIFT.*empty_prompt.*1024.*" + str(width)):
        node().make(model, 261, OUTPUT_BLOCK, 1, empty_prompt=wrong)  # the node itself says so


def test_cross_domain_matcher_makes_the_first_match(h, pack, node, models):
    model = models["sd15"]
    context = _make_context(pack)
    settings = _settings(pack)
    edges = h.nodes.NODE_CLASS_MAPPINGS["MIDMsEdgeMatcher"]().make(0.1, 0.2, 2.0, 0.7)[0]
    matcher = node().make(model, 261, OUTPUT_BLOCK, 1, cross_domain_matcher=edges)[0]
    extracted = []
    original_extract = matcher.extract
    matcher.extract = lambda latent, g: extracted.append(latent.shape[0]) or original_extract(latent, g)
    match, warped, mask = pack.MIDMsCorrespondence().correspond(context, matcher, settings)[:3]
    assert extracted == [1]  # the exemplar only: the condition's first match is the edge matcher's
    edge_match, edge_warped, edge_mask = pack.MIDMsCorrespondence().correspond(context, edges, settings)[:3]
    torch.testing.assert_close(warped["samples"], edge_warped["samples"], rtol=0, atol=0)
    torch.testing.assert_close(mask, edge_mask, rtol=0, atol=0)
    bound = next(iter(match.bound.values()))
    assert bound.exemplar_in_domain.shape[1] != bound.exemplar.shape[1]  # U-Net vs edge features


def test_host_matcher_interface(pack, node, models):
    """Host-side code calls prepare_for_host / capture_hook on every matcher through
    ``as_host_matcher``: the DIFT matcher implements both (and prepares its cross-domain matcher);
    a plain midms_core matcher gets the defaults (nothing to load, no capture) and binds as itself."""
    from importlib import import_module

    host_matcher = import_module(f"{pack.package}.host_adapters.host_matcher")
    edge = pack.MIDMsEdgeMatcher().make(canny_low=0.1, canny_high=0.2, edge_blur=2.0, x0_condition_weight=0.7)[0]
    plain = host_matcher.as_host_matcher(edge)
    assert isinstance(plain, host_matcher.HostMatcher) and plain.matcher is edge and plain.name == edge.name
    assert plain.prepare_for_host() is None and plain.capture_hook((8, 8)) is None
    context = _make_context(pack)
    sides = [pack.core.MatchSide(latent=getattr(context, f"{s}_latent"), image=getattr(context, f"{s}_image"))
             for s in ("condition", "exemplar")]
    assert torch.equal(plain.bind(*sides).condition, edge.bind(*sides).condition)

    prepared = []

    class Learned(host_matcher.HostMatcher):  # stands in for the learned networks
        def bind(self, condition, exemplar):
            return edge.bind(condition, exemplar)

        def prepare_for_host(self):
            prepared.append(True)

    matcher = node().make(models["sd15"], timestep=261, output_block=OUTPUT_BLOCK, ensemble=1,
                          cross_domain_matcher=Learned())[0]
    assert host_matcher.as_host_matcher(matcher) is matcher
    matcher.prepare_for_host()
    assert prepared == [True]
    hook = matcher.capture_hook((8, 8))
    assert isinstance(hook, host_matcher.CaptureHook) and hook.capture is matcher.capture
    options = {"transformer_options": {}}
    installed = hook.install(options)
    assert options == {"transformer_options": {}}  # the caller's dict is left as it was
    assert len(installed["transformer_options"]["patches"]["output_block_patch"]) == 1
