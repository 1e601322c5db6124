"""The diffusion feature matcher on DiTs inside a REAL current ComfyUI, in-process: features of a
Flux double / single stream block or an SD3 joint block (the tiny models of
test_flow_models_inprocess), read during the model pass the host runs anyway.

* the recorded features are the block's input image tokens, LayerNorm-ed and modulated with the
  block's own AdaLN (DiTF), folded onto the token grid: checked against the block's input taken
  with a plain torch forward hook and a float64 transcription from the block's weights;
* inside the SAMPLER the x0 side costs no extra model pass (counted), the recording patch passes
  the block through unchanged (output equal to Euler with re-warping off), keeps a replacement
  another node put on the same block, and records only the cond rows of a batched call.

Run: COMFYUI_PATH=.comfyui-current/ComfyUI .venv-comfy-current/bin/python -m pytest tests/comfy/test_dit_matcher_inprocess.py -q
"""

from __future__ import annotations

from importlib import import_module

import pytest
import torch

from tests.comfy.test_flow_models_inprocess import (  # noqa: F401  (fixtures)
    CONTEXT_WIDTH,
    POOLED_WIDTH,
    _conds,
    _context,
    dit,
    flux,
    sd3,
)
from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    H,
    W,
    _fingerprint,
    _like_the_executor,
    _match,
    _noise,
    _rel_err,
    _settings,
    _sigmas,
    h,
    pack,
)

GRID = (H // 8, W // 8)  # latent cells; tokens: half of it each way (patch size 2)
HIDDEN = 64


@pytest.fixture(scope="module")
def node(h):
    return h.nodes.NODE_CLASS_MAPPINGS["MIDMsDiffusionFeatureMatcher"]


@pytest.fixture(scope="module")
def dit_capture(pack):
    return import_module(f"{pack.package}.host_adapters.dit_capture")


def _latent(seed=0, batch=1):
    return torch.randn(batch, 16, *GRID, generator=torch.Generator().manual_seed(seed))


def _matcher(node, model, dit_block=-1, **kwargs):
    return node().make(model, timestep=261, output_block=6, ensemble=1, dit_block=dit_block, **kwargs)[0]


def _blocks(model):
    dm = model.model.diffusion_model
    if hasattr(dm, "double_blocks"):
        return [("double", b) for b in dm.double_blocks] + [("single", b) for b in dm.single_blocks]
    return [("joint", b) for b in dm.joint_blocks]


def _copy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_copy(v) for v in x)
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    return x


def _reference(kind, block, args, kwargs, text_tokens):
    """float64, from the block's weights: the image tokens the block received, LayerNorm (no
    affine, eps 1e-6), (1 + scale) x + shift of its attention-input modulation, on the token
    grid (raster order)."""
    if kind == "joint":  # JointBlock(context, x, c=...)
        x, vec = args[1], kwargs["c"]
        linear = block.x_block.adaLN_modulation[1]
    elif kind == "double":  # DoubleStreamBlock(img=, txt=, vec=, pe=)
        x, vec = kwargs["img"], kwargs["vec"]
        linear = block.img_mod.lin
    else:  # SingleStreamBlock(x, vec=, pe=): text tokens first
        x, vec = args[0][:, text_tokens:], kwargs["vec"]
        linear = block.modulation.lin
    vec = vec.double().reshape(vec.shape[0], -1)
    mod = torch.nn.functional.silu(vec) @ linear.weight.double().t() + linear.bias.double()
    shift, scale = mod[:, :HIDDEN], mod[:, HIDDEN:2 * HIDDEN]
    x = x.double()
    y = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)
    y = y * (1 + scale[:, None]) + shift[:, None]
    th, tw = GRID[0] // 2, GRID[1] // 2
    return y[:, : th * tw].transpose(1, 2).reshape(x.shape[0], HIDDEN, th, tw)


def test_default_block_and_noise_level(node, dit):
    from midms_core.matchers.dit import default_block

    matcher = _matcher(node, dit)
    assert matcher.blocks is not None and matcher.dit_block == default_block(len(_blocks(dit)))
    # rectified flow: the noise share t / 1000 (DiTF), not the shifted schedule's sigma(t)
    assert float(matcher._sigma(dit)) == pytest.approx(0.261)
    assert float(dit.model.model_sampling.sigma(torch.tensor([261.0]))) != pytest.approx(0.261, abs=1e-3)


def test_every_block_gives_its_adaln_normalised_input(node, dit):
    latent = _latent()
    before = _fingerprint(dit)
    for index, (kind, block) in enumerate(_blocks(dit)):
        seen = []
        # copies: a block may add to its input in place (Flux's single block does)
        hook = block.register_forward_pre_hook(lambda m, a, k: seen.append((_copy(a), _copy(k))), with_kwargs=True)
        try:
            features = _matcher(node, dit, dit_block=index).extract(latent, torch.Generator().manual_seed(3))
        finally:
            hook.remove()
        assert len(seen) == 1, (kind, len(seen))
        expected = _reference(kind, block, *seen[0], text_tokens=77)
        assert features.shape == (1, HIDDEN, GRID[0] // 2, GRID[1] // 2)
        torch.testing.assert_close(features.double(), expected, rtol=1e-4, atol=1e-4, msg=lambda m: f"{kind} {index}: {m}")
    assert _fingerprint(dit) == before


def test_bind_gives_features_on_the_latent_grid(node, dit, pack):
    context = _context(pack)
    matcher = _matcher(node, dit)
    cond, exem = pack.core.MatchSide(latent=context.condition_latent), pack.core.MatchSide(latent=context.exemplar_latent)
    f = matcher.bind(cond, exem)
    assert f.condition.shape == (1, HIDDEN, *GRID) == f.exemplar.shape
    assert torch.isfinite(f.condition).all() and not torch.allclose(f.condition, f.exemplar)
    assert torch.equal(matcher.bind(cond, exem).condition, f.condition)  # deterministic


def test_rematching_costs_no_extra_model_pass(node, dit, pack):
    import comfy.sample
    import comfy.samplers

    context = _context(pack)
    settings = _settings(pack, rewarp_steps="")  # re-warp at every step but the last
    matcher = _matcher(node, dit)
    extracted = []
    original = matcher.extract
    matcher.extract = lambda latent, g: extracted.append(1) or original(latent, g)
    match, warped = pack.MIDMsCorrespondence().correspond(context, matcher, settings)[:2]
    assert len(extracted) == 2  # condition and exemplar, once each
    sampler = pack.MIDMsInterleavedSampler().get_sampler(dit, match)[0]
    calls = []
    counted = dit.clone()

    def wrapper(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    taken = []
    take = matcher.capture.take
    matcher.capture.take = lambda: taken.append(take()) or taken[-1]
    sigmas = _sigmas(pack, dit)
    positive, negative = _conds()
    latent = warped["samples"]

    def run(s):
        calls.clear()
        extracted.clear()
        out = comfy.sample.sample_custom(counted, _noise(latent.shape, 4), 3.0, s, sigmas, positive, negative,
                                         latent, seed=2)
        return out, list(calls), len(extracted)

    ours, our_calls, our_extracts = run(sampler)
    euler, euler_calls, _ = run(comfy.samplers.ksampler("euler"))
    steps = sigmas.shape[0] - 1
    assert len(euler_calls) == steps and our_calls == euler_calls
    assert our_extracts == 0
    assert len(taken) == steps - 1
    assert all(f is not None and f.shape == (1, HIDDEN, GRID[0] // 2, GRID[1] // 2) for f in taken)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, euler)


def test_recording_leaves_the_run_and_other_patches_as_they_were(node, dit, pack, dit_capture):
    """Re-warping off: the sampler with the DiT matcher's recording patch installed equals the
    host's Euler, with cfg > 1 (cond and uncond batched); a replacement another node put on
    the same block still runs inside ours, and the result equals Euler with that patch alone."""
    import comfy.sample
    import comfy.samplers

    context = _context(pack)
    matcher = _matcher(node, dit)
    match, warped = pack.MIDMsCorrespondence().correspond(context, matcher, _settings(pack, rewarp_steps="none"))[:2]
    kind, index, _ = matcher.blocks[matcher.dit_block]
    other_calls = []

    def other(args, extra):
        other_calls.append(1)
        out = extra["original_block"](args)
        # a per-channel offset (a scale or a constant would vanish in the next LayerNorm)
        return {**out, "img": out["img"] + 0.2 * torch.linspace(-1, 1, out["img"].shape[-1])}

    patched = dit.clone()
    patched.set_model_patch_replace(other, "dit", kind, index)
    latent = warped["samples"]
    positive, negative = _conds()
    sigmas = _sigmas(pack, dit)

    def run(model, s):
        return comfy.sample.sample_custom(model, _noise(latent.shape, 4), 3.0, s, sigmas, positive, negative,
                                          latent, seed=2)

    sampler = pack.MIDMsInterleavedSampler().get_sampler(patched, match)[0]
    ours = run(patched, sampler)
    assert len(other_calls) == sigmas.shape[0] - 1
    other_calls.clear()
    euler = run(patched, comfy.samplers.ksampler("euler"))
    assert len(other_calls) == sigmas.shape[0] - 1
    assert _rel_err(ours, euler) < 1e-6, _rel_err(ours, euler)
    plain = run(dit, comfy.samplers.ksampler("euler"))
    assert _rel_err(plain, euler) > 1e-4  # the other patch acts: the comparison is not vacuous
    assert dit_capture.dit_blocks(dit.model.diffusion_model)[matcher.dit_block][:2] == (kind, index)


def test_capture_takes_the_cond_rows(node, dit, dit_capture):
    kind, block = "double_block", _blocks(dit)[0][1]
    recorded = []
    capture = dit_capture.DitBlockCapture(kind, block, GRID, 2, recorded.append)
    tokens = torch.randn(3, (GRID[0] // 2) * (GRID[1] // 2), HIDDEN, generator=torch.Generator().manual_seed(0))
    vec = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(1))
    passed = []
    args = {"img": tokens, "txt": torch.zeros(3, 4, HIDDEN), "vec": vec, "pe": None,
            "transformer_options": {"cond_or_uncond": [1, 0, 1]}}
    out = capture(args, {"original_block": lambda a: passed.append(a) or {"img": a["img"], "txt": a["txt"]}})
    assert passed == [args] and out["img"] is tokens
    assert len(recorded) == 1
    args["transformer_options"] = {}
    capture(args, {"original_block": lambda a: {"img": a["img"], "txt": a["txt"]}})
    assert recorded[1].shape[0] == 3
    torch.testing.assert_close(recorded[0], recorded[1][1:2])


def test_wrong_block_and_prompt_are_named(node, dit):
    count = len(_blocks(dit))
    with pytest.raises(ValueError, match=f"dit_block.*{count}.*0..{count - 1}"):
        _matcher(node, dit, dit_block=count)
    g = torch.Generator().manual_seed(5)
    wrong = [[torch.randn(1, 8, 32, generator=g), {"pooled_output": torch.randn(1, POOLED_WIDTH, generator=g)}]]
    with pytest.raises(ValueError, match=f"empty_prompt.*width 32.*{CONTEXT_WIDTH}"):
        _matcher(node, dit, empty_prompt=wrong)
    latent = _latent()
    prompt = [[torch.randn(1, 8, CONTEXT_WIDTH, generator=g), {"pooled_output": torch.randn(1, POOLED_WIDTH, generator=g)}]]
    zero = [[torch.zeros(1, 77, CONTEXT_WIDTH), {"pooled_output": torch.zeros(1, POOLED_WIDTH)}]]
    default = _matcher(node, dit).features(latent)
    torch.testing.assert_close(_matcher(node, dit, empty_prompt=zero).features(latent), default, rtol=0, atol=0)
    assert not torch.allclose(_matcher(node, dit, empty_prompt=prompt).features(latent), default, atol=1e-4)


def test_other_transformers_are_refused_by_name(node, dit):
    """A model whose transformer is none of the families the node reads nor a U-Net (here a
    stand-in module with Flux-like block lists, as HunyuanVideo has) is refused when the node
    runs, not misread (the 2025 families: test_new_families_inprocess.py)."""
    from types import SimpleNamespace

    class LooksLikeFlux(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.double_blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
            self.single_blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    fake = SimpleNamespace(model=SimpleNamespace(diffusion_model=LooksLikeFlux(), model_config=dit.model.model_config))
    with pytest.raises(ValueError, match=r"LooksLikeFlux\) is neither a U-Net .* nor a Flux\.1, Flux\.2, Chroma, SD3 or "
                                         r"Qwen-Image transformer.*Edge Matcher"):
        _matcher(node, fake)
