"""Several exemplars through the real host (in process): MIDMs Exemplar Set Encode with the
host's VAE, the union match of the correspondence node, the source preview, and both samplers.

The condition is the edges of a scene whose left half is exemplar 0's and right half exemplar
1's; the region masks say the same. The nodes must take each half from its exemplar."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    H, W, _conds, _edge_image, _exemplar_image, _like_the_executor, _matcher, _settings, h, models, pack, vae)


@pytest.fixture(scope="module")
def nodes(h, pack):
    mapping = h.nodes.NODE_CLASS_MAPPINGS
    for name in ("MIDMsExemplarSetEncode", "MIDMsSourcePreview"):
        assert name in mapping, f"{name} not registered"
    return mapping


def _scene():
    """Two exemplars and a condition whose left half is exemplar 0's scene, right half exemplar 1's."""
    a, b = _exemplar_image(seed=0), _exemplar_image(shift=20, seed=5).flip(1)
    scene = torch.cat([a[:, :, : W // 2], b[:, :, W // 2 :]], dim=2)
    masks = torch.zeros(2, H, W)
    masks[0, :, : W // 2] = 1
    masks[1, :, W // 2 :] = 1
    return _edge_image(scene), torch.cat([a, b]), masks


def test_exemplar_set_encode_union_match_preview_and_samplers(h, pack, nodes, models, vae):
    condition, exemplars, masks = _scene()
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop", condition_masks=masks)[0]
    assert context.exemplar_count == 2
    assert context.exemplar_image.shape == (1, 3, 2 * H, W)
    assert context.exemplar_latent.shape == (1, 4, 2 * (H // 8), W // 8)
    torch.testing.assert_close(context.exemplar_latent[..., : H // 8, :], vae.encode(exemplars[:1]))
    assert context.restriction.condition_masks.shape == (1, 2, H // 8, W // 8)

    match, warped, mask, preview, flow = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))
    assert warped["samples"].shape == (1, 4, H // 8, W // 8)
    source = nodes["MIDMsSourcePreview"]().preview(match)[0]
    assert source.shape == (1, H, W, 3)
    # the masks decide the source: red (exemplar 0) on the left, green (exemplar 1) on the right
    assert float(source[0, :, : W // 2, 0].min()) > 0.99 and float(source[0, :, : W // 2, 1].max()) < 0.01
    assert float(source[0, :, W // 2 :, 1].min()) > 0.99 and float(source[0, :, W // 2 :, 0].max()) < 0.01

    model = models["sd15"]
    positive, negative = _conds("sd15")
    latent, warped_out = pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=3,
                                                    steps=2, start_noise=0.25, cfg=3.0)
    assert latent["samples"].shape == (1, 4, H // 8, W // 8) and bool(torch.isfinite(latent["samples"]).all())
    torch.testing.assert_close(warped_out["samples"], warped["samples"])


def test_the_union_warp_equals_the_library_on_the_stacked_exemplars(h, pack, nodes, vae):
    """The node's first warp is midms_core's union warp of the same features (no host logic in
    between changes it)."""
    condition, exemplars, masks = _scene()
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop", condition_masks=masks)[0]
    match, warped = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[:2]
    core = pack.core
    exemplars_mod = importlib.import_module(f"{pack.package}.midms_core.exemplars")
    host_match = importlib.import_module(f"{pack.package}.host_adapters.match")
    features = host_match.bind(match, torch.device("cpu"))
    want = exemplars_mod.warp_stacked_with_confidence(
        features.condition, features.exemplar, context.exemplar_latent, 2, core.AttentionSettings(),
        prior=features.prior, restriction=context.restriction)
    torch.testing.assert_close(warped["samples"], want.warped)


@pytest.mark.parametrize("kwargs, words", [
    (dict(condition_masks=torch.ones(3, H, W)), ["condition_masks", "one mask per exemplar (2)"]),
    (dict(condition_labels=_exemplar_image()), ["both 'condition_labels' and 'exemplar_labels'"]),
    (dict(exemplar_fit="own size"), ["exemplar_fit", "'own size'"]),
])
def test_exemplar_set_encode_refuses_bad_input_by_name(h, pack, nodes, vae, kwargs, words):
    condition, exemplars, masks = _scene()
    args = dict(condition=condition, exemplars=exemplars, vae=vae, exemplar_fit="crop")
    args.update(kwargs)
    with pytest.raises(Exception) as info:
        nodes["MIDMsExemplarSetEncode"]().encode(**args)
    text = str(info.value)
    assert text.startswith("MIDMs Exemplar Set Encode (several exemplars):"), text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("label_compare, drift", [("exact colour", 0.0), ("nearest condition colour", 0.08)])
def test_label_maps_restrict_the_union(h, pack, nodes, vae, label_compare, drift):
    """Label maps in the condition's colours: the condition's left half is labelled red, its
    right half blue; exemplar 0 is all blue, exemplar 1 all red. So the left half must come from
    exemplar 1 and the right half from exemplar 0 (against what the edges alone would pick).
    With "nearest condition colour" the exemplar maps' colours are drifted (as after JPEG)."""
    condition, exemplars, _ = _scene()
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    cond_labels = torch.empty(1, H, W, 3)
    cond_labels[:, :, : W // 2] = red
    cond_labels[:, :, W // 2 :] = blue
    off = torch.tensor([drift, drift, -drift])
    exem_labels = torch.stack([(blue + off).clamp(0, 1).expand(H, W, 3), (red - off).clamp(0, 1).expand(H, W, 3)])
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop", condition_labels=cond_labels,
                                                       exemplar_labels=exem_labels.clone(), label_compare=label_compare)[0]
    match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
    source = nodes["MIDMsSourcePreview"]().preview(match)[0]
    left, right = source[0, :, : W // 2], source[0, :, W // 2 :]
    assert float(left[..., 1].min()) > 0.99 and float(left[..., 0].max()) < 0.01  # green: exemplar 1
    assert float(right[..., 0].min()) > 0.99 and float(right[..., 1].max()) < 0.01  # red: exemplar 0
