"""The Diffusion Feature Matcher on the 2025 DiT families inside the newest host (0.3.75),
in-process: tiny Flux.2, Qwen-Image and Chroma models built from the host's own
``comfy.supported_models`` classes (harness.inprocess_models.build_new_family), and Z-Image,
which the node refuses by name.

For each readable family, the features are checked against a float64 recomputation written here
from the model's weights, not through the pack's code:

* which tokens: the image tokens the block received (taken with a plain torch forward pre-hook):
  a double stream block's ``img`` (Qwen-Image: ``hidden_states``), a single stream block's LAST
  h x w tokens (its input is text then image), on the token grid in raster order;
* which modulation: Flux.2's from its global ``double_stream_modulation_img`` /
  ``single_stream_modulation`` weights applied to the model's vector (read at those modules'
  input); Chroma's sliced out of its approximator's output by the layout the host documents
  (single blocks 3 rows each, then double image 6 each, then double text, then final);
  Qwen-Image's from the block's ``img_mod`` Linear on the timestep embedding;
* LayerNorm without affine (eps 1e-6), then (1 + scale) x + shift (DiTF),

both in the condition / exemplar pass (the node's extract) and in the capture during a
SamplerCustom run of the MIDMs SAMPLER (the cond rows of each batched model call).

Run: COMFYUI_PATH=.comfyui-newest/ComfyUI .venv-comfy-newest/bin/python -m pytest tests/comfy/test_new_families_inprocess.py -q
"""

from __future__ import annotations

import pytest
import torch

from harness.inprocess_models import DIT_CONTEXT_WIDTH, NEW_FAMILIES, build_new_family, host_has, new_family_conds
from tests.comfy.test_dit_matcher_inprocess import _copy
from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    _edge_image,
    _exemplar_image,
    _like_the_executor,
    _noise,
    _rel_err,
    _settings,
    h,
    pack,
)

HIDDEN = 64
READABLE = ["flux2", "qwen_image", "chroma"]
GRID = (8, 8)  # latent cells of the extract tests


def build(family: str):
    """The tiny model of ``family`` (skips on hosts without its class)."""
    class_name = NEW_FAMILIES[family][0]
    if not host_has(class_name):
        pytest.skip(f"this host has no {class_name} (checked on ComfyUI 0.3.75)")
    return build_new_family(family)


@pytest.fixture(scope="module")
def models(h):
    return {}


def model_of(models, family):
    if family not in models:
        with torch.inference_mode(False):
            models[family] = build(family)
    return models[family]


@pytest.fixture(scope="module")
def node(h):
    return h.nodes.NODE_CLASS_MAPPINGS["MIDMsDiffusionFeatureMatcher"]


def _matcher(node, model, dit_block=-1, **kwargs):
    return node().make(model, timestep=261, output_block=6, ensemble=1, dit_block=dit_block, **kwargs)[0]


def _latent(model, seed=0, grid=GRID):
    channels = model.model.latent_format.latent_channels
    return torch.randn(1, channels, *grid, generator=torch.Generator().manual_seed(seed))


def _blocks(model):
    """(kind, index, module) in run order, written out per class (not the pack's dit_blocks)."""
    dm = model.model.diffusion_model
    if hasattr(dm, "transformer_blocks"):
        return [("double", i, b) for i, b in enumerate(dm.transformer_blocks)]
    return ([("double", i, b) for i, b in enumerate(dm.double_blocks)]
            + [("single", i, b) for i, b in enumerate(dm.single_blocks)])


class Recorder:
    """Forward pre-hooks on a block and on the model's modulation sources; one record per call."""

    def __init__(self, model, block):
        self.dm = model.model.diffusion_model
        self.calls, self.sources = [], []
        self.hooks = [block.register_forward_pre_hook(
            lambda m, a, k: self.calls.append((_copy(a), _copy(k))), with_kwargs=True)]
        if getattr(getattr(self.dm, "params", None), "global_modulation", False):  # Flux.2: the vector at the modulation's input
            self.hooks.append(self.dm.single_stream_modulation.register_forward_pre_hook(
                lambda m, a: self.sources.append(_copy(a[0]))))
        elif hasattr(self.dm, "distilled_guidance_layer"):  # Chroma: the approximator's output
            self.hooks.append(self.dm.distilled_guidance_layer.register_forward_hook(
                lambda m, a, out: self.sources.append(_copy(out))))

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def _modulation(model, kind, index, block, call, source):
    """float64 (shift, scale) (B, D) of a block's image-token attention input, from weights."""
    dm = model.model.diffusion_model
    args, kwargs = call
    if hasattr(dm, "transformer_blocks"):  # Qwen-Image: img_mod = (SiLU, Linear) on temb
        linear = block.img_mod[1]
        temb = kwargs["temb"].double()
        mod = torch.nn.functional.silu(temb) @ linear.weight.double().t() + linear.bias.double()
        return mod[:, :HIDDEN], mod[:, HIDDEN:2 * HIDDEN]
    if getattr(getattr(dm, "params", None), "global_modulation", False):  # Flux.2: one modulation for all blocks
        lin = (dm.double_stream_modulation_img if kind == "double" else dm.single_stream_modulation).lin
        assert lin.bias is None
        mod = torch.nn.functional.silu(source.double()) @ lin.weight.double().t()
        return mod[:, :HIDDEN], mod[:, HIDDEN:2 * HIDDEN]
    # Chroma: rows of the approximator output: 3 per single block, then 6 per double block (image)
    singles = len(dm.single_blocks)
    row = 3 * index if kind == "single" else 3 * singles + 6 * index
    return source[:, row].double(), source[:, row + 1].double()


def _reference(model, kind, index, block, call, source, tokens):
    args, kwargs = call
    if kind == "double":
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else kwargs["img"]
        x = x[:, : tokens[0] * tokens[1]]
    else:  # a single block's input: text tokens, then the image's
        x = args[0][:, -tokens[0] * tokens[1]:]
    shift, scale = _modulation(model, kind, index, block, call, source)
    x = x.double()
    y = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)
    y = y * (1 + scale[:, None]) + shift[:, None]
    return y.transpose(1, 2).reshape(x.shape[0], HIDDEN, *tokens)


def _tokens(model, grid=GRID):
    p = int(model.model.diffusion_model.patch_size)
    return (-(-grid[0] // p), -(-grid[1] // p))


@pytest.mark.parametrize("family", READABLE)
def test_every_block_gives_its_adaln_normalised_input(node, models, family):
    """The condition / exemplar pass (the node's extract, as correspondence runs it): block by
    block in run order, the features are that block's image tokens with its own modulation."""
    from midms_core.matchers.dit import default_block

    model = model_of(models, family)
    blocks = _blocks(model)
    matcher = _matcher(node, model)
    assert len(matcher.blocks) == len(blocks) and matcher.dit_block == default_block(len(blocks))
    assert [(k, i) for k, i, _ in matcher.blocks] == [(f"{k}_block", i) for k, i, _ in blocks]
    latent = _latent(model)
    tokens = _tokens(model)
    results = []
    for index, (kind, i, block) in enumerate(blocks):
        rec = Recorder(model, block)
        try:
            features = _matcher(node, model, dit_block=index).extract(latent, torch.Generator().manual_seed(3))
        finally:
            rec.remove()
        assert len(rec.calls) == 1, (kind, i, len(rec.calls))
        source = rec.sources[0] if rec.sources else None
        expected = _reference(model, kind, i, block, rec.calls[0], source, tokens)
        assert features.shape == (1, HIDDEN, *tokens)
        torch.testing.assert_close(features.double(), expected, rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"{family} {kind} {i}: {m}")
        results.append(features)
    # the blocks differ, so reading the wrong one would fail the comparison above
    assert not torch.allclose(results[0], results[1], atol=1e-3)


@pytest.mark.parametrize("family", READABLE)
def test_capture_in_the_sampler_reads_the_cond_rows_of_the_block(node, models, family, pack):
    """SamplerCustom with the MIDMs SAMPLER (cfg 3: cond and uncond rows batched, re-warping on):
    every model call records one feature map, the cond rows' features of the matcher's block,
    equal to the recomputation from that call's block input; the re-warp uses them (the result
    differs from the same run with re-warping off)."""
    import comfy.sample
    import comfy.samplers

    model = model_of(models, family)
    matcher = _matcher(node, model)
    kind, index, block = _blocks(model)[matcher.dit_block]
    side = 8 * GRID[0] * (2 if family == "flux2" else 1)  # Flux.2: 16 px per cell
    context = pack.types.MIDMsContext(
        condition_image=_edge_image(_exemplar_image(side, side, shift=8)).movedim(-1, 1).contiguous(),
        exemplar_image=_exemplar_image(side, side, seed=0).movedim(-1, 1).contiguous(),
        condition_latent=_latent(model, 1), exemplar_latent=2.0 * _latent(model, 2))
    positive, negative = new_family_conds(family)
    sigmas = pack.BasicScheduler().get_sigmas(model, "simple", 4, 0.6)[0]
    outputs = {}
    for steps in ("none", ""):
        match, warped = pack.MIDMsCorrespondence().correspond(context, matcher, _settings(pack, rewarp_steps=steps))[:2]
        latent = comfy.sample.fix_empty_latent_channels(model, warped["samples"])  # as SamplerCustom does
        sampler = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
        rec = Recorder(model, block)
        recorded = []
        add = matcher.capture.add
        matcher.capture.add = lambda f: recorded.append(f.clone()) or add(f)
        try:
            outputs[steps] = comfy.sample.sample_custom(model, _noise(latent.shape, 5), 3.0, sampler, sigmas, positive,
                                                        negative, latent, seed=7)
        finally:
            rec.remove()
            matcher.capture.add = add
        calls = [(c, s) for c, s in zip(rec.calls, rec.sources or [None] * len(rec.calls))
                 if (c[1].get("transformer_options") or {}).get("cond_or_uncond") is not None]
        assert len(calls) == sigmas.shape[0] - 1 == len(recorded), (len(calls), len(recorded))
        for (call, source), features in zip(calls, recorded):
            expected = _reference(model, kind, index, block, call, source, _tokens(model))
            kinds = call[1]["transformer_options"]["cond_or_uncond"]
            assert len(kinds) == 2  # cond and uncond in one call: the rows must be picked
            cond = expected.chunk(len(kinds))[kinds.index(0)]
            torch.testing.assert_close(features.double(), cond, rtol=1e-4, atol=1e-4)
    assert outputs[""].shape == outputs["none"].shape and torch.isfinite(outputs[""]).all()
    assert _rel_err(outputs[""], outputs["none"]) > 1e-3  # the re-warp acts


def test_zimage_is_refused_by_name(node, models, pack):
    """Z-Image (Lumina 2 NextDiT) runs its layers without the host's "dit" block replacement:
    the node refuses it when it runs, naming the family and what to use instead."""
    error = __import__(f"{pack.package}.host_adapters.errors", fromlist=["NodeInputError"]).NodeInputError
    model = model_of(models, "zimage")
    with pytest.raises(error, match=r"MIDMs Diffusion Feature Matcher \(DIFT\): 'model' is a Z-Image / Lumina 2 "
                                    r"transformer.*block-replacement hook.*Edge Matcher"):
        _matcher(node, model)


@pytest.mark.parametrize("family", READABLE)
def test_text_widths_and_empty_prompt(node, models, family):
    """The empty prompt is checked against the family's text width; none of these families takes
    a pooled vector, so a prompt without one is accepted and a wrong width is named."""
    model = model_of(models, family)
    g = torch.Generator().manual_seed(5)
    prompt = [[torch.randn(1, 8, DIT_CONTEXT_WIDTH, generator=g), {"pooled_output": None}]]
    latent = _latent(model)
    default = _matcher(node, model).features(latent)
    given = _matcher(node, model, empty_prompt=prompt).features(latent)
    assert torch.isfinite(given).all() and not torch.allclose(given, default, atol=1e-4)
    zero = [[torch.zeros(1, 77, DIT_CONTEXT_WIDTH), {"pooled_output": None}]]
    torch.testing.assert_close(_matcher(node, model, empty_prompt=zero).features(latent), default, rtol=0, atol=0)
    wrong = [[torch.randn(1, 8, 32, generator=g), {}]]
    with pytest.raises(ValueError, match=f"empty_prompt.*width 32.*{DIT_CONTEXT_WIDTH}"):
        _matcher(node, model, empty_prompt=wrong)


def test_qwen_image_reference_tokens_half_of_the_embedding(models, pack):
    """Newer hosts (Qwen-Image-Edit's zero-timestep references) give a Qwen-Image block a
    timestep embedding of twice the tokens' batch; the image tokens are modulated by its first
    half, so that is what the matcher reads (and a plain embedding reads as before)."""
    from importlib import import_module

    dit_capture = import_module(f"{pack.package}.host_adapters.dit_capture")
    model = model_of(models, "qwen_image")
    block = model.model.diffusion_model.transformer_blocks[0]
    g = torch.Generator().manual_seed(9)
    temb = torch.randn(2, HIDDEN, generator=g)
    doubled = torch.cat([temb, torch.randn(2, HIDDEN, generator=g)])
    plain = dit_capture.block_modulation("double_block", block, temb, HIDDEN, 2)
    halved = dit_capture.block_modulation("double_block", block, doubled, HIDDEN, 2)
    for a, b in zip(plain[:2], halved[:2]):
        assert a.shape == (2, HIDDEN)
        torch.testing.assert_close(a, b)
    assert plain[2] is block.img_norm1


def test_samplings_that_do_not_noise_plainly_are_refused(h, pack):
    """ComfyUI 0.38's image-to-image samplings (IMG_TO_IMG_FLOW / IMG_TO_IMG_VELOCITY: CONST
    subclasses whose noise_scaling returns the input image) and a noise_scale other than 1 do not
    noise as x0 plus unit noise: the noise path refuses them (read from 0.38's source; these
    hosts have neither, so both are made here as subclasses of this host's own classes). The
    host's own samplings, and a noise_scale of exactly 1, pass."""
    import comfy.model_sampling as ms

    noise_paths = pack.noise_paths
    const = getattr(ms, "CONST", None)
    if const is None:
        pytest.skip("this host has no CONST sampling (2024-03)")

    class IMG_TO_IMG_FLOW(ms.ModelSamplingDiscreteFlow, const):
        pass

    class Scaled(ms.ModelSamplingDiscreteFlow, const):
        noise_scale = 0.5

    class Unit(ms.ModelSamplingDiscreteFlow, const):
        noise_scale = 1.0

    with pytest.raises(ValueError, match="IMG_TO_IMG_FLOW: it starts from an input image"):
        noise_paths.path_of(IMG_TO_IMG_FLOW())
    with pytest.raises(ValueError, match=r"scales its noise by 0\.5 \(noise_scale\)"):
        noise_paths.path_of(Scaled())
    assert noise_paths.path_of(Unit()).kind == pack.core.RECTIFIED_FLOW.kind
    for family in ("flux2", "zimage", "qwen_image", "chroma"):
        if host_has(NEW_FAMILIES[family][0]):
            model = build(family)
            assert noise_paths.noise_path(model).kind == pack.core.RECTIFIED_FLOW.kind, family
