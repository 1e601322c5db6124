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


class _NoEncode:
    """A VAE that must not be used: refusals come before anything is encoded."""

    downscale_ratio = 8

    def encode(self, pixels):
        raise AssertionError("encoded before the input was refused")


RED, GREEN, BLUE = (torch.tensor(c) for c in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]))


def _thirds(height=H, width=W):
    """A label map (1, H, W, 3): vertical red | green | blue thirds."""
    out = torch.empty(1, height, width, 3)
    third = width // 3
    out[:, :, :third], out[:, :, third : 2 * third], out[:, :, 2 * third :] = RED, GREEN, BLUE
    return out


def _black_share(preview):
    """Share of the source preview (B, H, W, 3) that is black (no exemplar may serve)."""
    return float((preview.amax(-1) < 0.01).float().mean())


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
    exemplars_mod = importlib.import_module(f"{pack.package}.midms_core.exemplars.union")
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
    (dict(condition_labels=torch.cat([_thirds()] * 2), exemplar_labels=torch.cat([_thirds()] * 2)),
     ["'condition_labels'", "one label map", "batch of 2", "ImageFromBatch"]),
    (dict(condition_labels=_thirds(), exemplar_labels=_thirds()), ["'exemplar_labels'", "one label map per exemplar (2), got 1"]),
    (dict(condition_labels=_thirds(), exemplar_labels=torch.cat([_thirds()] * 2), label_compare="nearest condition colour",
          colour_tolerance=0), ["'colour_tolerance'", ">= 1 and <= 128"]),
    (dict(condition_labels=_exemplar_image(), exemplar_labels=torch.cat([_thirds()] * 2),
          label_compare="nearest condition colour", colour_tolerance=1),
     ["'condition_labels'", "more than 256 colours", "colour_tolerance"]),
])
def test_exemplar_set_encode_refuses_bad_input_by_name(h, pack, nodes, vae, kwargs, words):
    condition, exemplars, masks = _scene()
    args = dict(condition=condition, exemplars=exemplars, vae=_NoEncode(), exemplar_fit="crop")
    args.update(kwargs)
    with pytest.raises(Exception) as info:  # refused before anything is encoded
        nodes["MIDMsExemplarSetEncode"]().encode(**args)
    text = str(info.value)
    assert text.startswith("MIDMs Exemplar Set Encode (several exemplars):"), text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("label_compare, drift, tolerance", [
    ("exact colour", 0.0, 24), ("nearest condition colour", 0.04, 24), ("nearest condition colour", 0.08, 40)])
def test_label_maps_restrict_the_union(h, pack, nodes, vae, label_compare, drift, tolerance):
    """Label maps in the condition's colours: the condition's left half is labelled red, its
    right half blue; exemplar 0 is all blue, exemplar 1 all red. So the left half must come from
    exemplar 1 and the right half from exemplar 0 (against what the edges alone would pick).
    With "nearest condition colour" the exemplar maps' colours are drifted (as after JPEG):
    0.04 per channel is 10 / 255, at most 17 units from the true colour (within the default
    tolerance 24); 0.08 is up to 35 units, within a tolerance of 40."""
    condition, exemplars, _ = _scene()
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    cond_labels = torch.empty(1, H, W, 3)
    cond_labels[:, :, : W // 2] = red
    cond_labels[:, :, W // 2 :] = blue
    off = torch.tensor([drift, drift, -drift])
    exem_labels = torch.stack([(blue + off).clamp(0, 1).expand(H, W, 3), (red - off).clamp(0, 1).expand(H, W, 3)])
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop", condition_labels=cond_labels,
                                                       exemplar_labels=exem_labels.clone(), label_compare=label_compare,
                                                       colour_tolerance=tolerance)[0]
    match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
    source = nodes["MIDMsSourcePreview"]().preview(match)[0]
    left, right = source[0, :, : W // 2], source[0, :, W // 2 :]
    assert float(left[..., 1].min()) > 0.99 and float(left[..., 0].max()) < 0.01  # green: exemplar 1
    assert float(right[..., 0].min()) > 0.99 and float(right[..., 1].max()) < 0.01  # red: exemplar 0


def test_noisy_label_maps_in_nearest_mode_still_match(h, pack, nodes, vae):
    """The condition's label map with +-12 uniform noise per channel (as after JPEG), the
    exemplars' the clean red | green | blue thirds: "nearest condition colour" clusters the noisy
    colours into the three labels, so every position has a source (before: 89 % black, each
    noisy pixel its own label). "exact colour" on the same maps has almost none."""
    condition, exemplars, _ = _scene()
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(-12, 13, (1, H, W, 3), generator=g).float() / 255
    cond_labels = (_thirds() + noise).clamp(0, 1)
    exem_labels = torch.cat([_thirds()] * 2)
    previews = {}
    for compare in ("nearest condition colour", "exact colour"):
        context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop",
                                                           condition_labels=cond_labels, exemplar_labels=exem_labels,
                                                           label_compare=compare)[0]
        match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
        previews[compare] = nodes["MIDMsSourcePreview"]().preview(match)[0]
        if compare == "nearest condition colour":  # the labels are the clean thirds at the cell centres
            r = context.restriction
            third = (torch.arange(W // 8) * 8 + 4) // (W // 3)  # each cell column's third (centre pixel)
            cond = r.condition_labels[0, 0]
            assert all(torch.equal(cond[:, j], cond[:1, j].expand(H // 8)) for j in range(W // 8))
            assert [int(cond[0, j]) for j in range(W // 8)] == [int(cond[0, list(third).index(t)]) for t in third]
            assert len({int(cond[0, j]) for j in range(W // 8)}) == 3
            torch.testing.assert_close(r.exemplar_labels[0, 0], cond)
    assert _black_share(previews["nearest condition colour"]) < 0.05
    assert _black_share(previews["exact colour"]) > 0.5


def test_an_exemplar_label_the_condition_lacks_matches_nothing(h, pack, nodes, vae):
    """Exemplar 0 is labelled green, a colour the condition's red | blue map does not have: in
    "nearest condition colour" it is not forced onto red or blue, so only exemplar 1 (red | blue)
    serves (the preview is exemplar 1's colour, cyan, wherever anything serves)."""
    condition, exemplars, _ = _scene()
    cond_labels = torch.empty(1, H, W, 3)
    cond_labels[:, :, : W // 2], cond_labels[:, :, W // 2 :] = RED, BLUE
    exem_labels = torch.cat([GREEN.expand(1, H, W, 3), cond_labels])
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop", condition_labels=cond_labels,
                                                       exemplar_labels=exem_labels,
                                                       label_compare="nearest condition colour")[0]
    match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
    source = nodes["MIDMsSourcePreview"]().preview(match)[0]
    assert float(source[..., 0].max()) < 0.01  # no red: exemplar 0 never serves
    assert float(source[..., 1].min()) > 0.99 and float(source[..., 2].min()) > 0.99


def _non_finite(value, index=None):
    """A copy of ``value`` with NaN (or, for index given, Inf) written into item ``index`` (or item 0)."""
    out = value.clone()
    out[0 if index is None else index].view(-1)[5] = float("nan") if index is None else float("inf")
    return out


@pytest.mark.parametrize("name, which", [
    ("condition", "the image"), ("exemplars", "image 2 of 2"), ("condition_masks", "mask 2 of 2"),
    ("exemplar_masks", "mask 1 of 2"), ("condition_labels", "the image"), ("exemplar_labels", "image 2 of 2")])
def test_exemplar_set_encode_refuses_nan_and_inf_by_name(h, pack, nodes, name, which):
    condition, exemplars, masks = _scene()
    args = dict(condition=condition, exemplars=exemplars, vae=_NoEncode(), exemplar_fit="crop", condition_masks=masks,
                exemplar_masks=masks.clone(), condition_labels=_thirds(), exemplar_labels=torch.cat([_thirds()] * 2))
    index = {"image 2 of 2": 1, "mask 2 of 2": 1}.get(which)
    args[name] = _non_finite(args[name], index)
    with pytest.raises(Exception) as info:
        nodes["MIDMsExemplarSetEncode"]().encode(**args)
    text = str(info.value)
    assert text.startswith("MIDMs Exemplar Set Encode (several exemplars): "), text
    assert f"'{name}' has NaN or infinite values ({which})" in text, text


@pytest.mark.parametrize("name", ["condition", "exemplar"])
def test_exemplar_encode_refuses_nan_and_inf_by_name(h, pack, name):
    args = dict(condition=_edge_image(_exemplar_image()), exemplar=_exemplar_image(), vae=_NoEncode(), exemplar_fit="crop")
    args[name] = _non_finite(torch.cat([args[name]] * 2), 1)  # Inf: to_rgb's clamp would hide it
    with pytest.raises(Exception) as info:
        pack.MIDMsExemplarEncode().encode(**args)
    text = str(info.value)
    assert text.startswith("MIDMs Exemplar Encode: ") and f"'{name}' has NaN or infinite values (image 2 of 2)" in text


# pad: exemplars of 32 x 64 padded into the 64 x 64 condition: content rows 16..47, so latent
# rows 2..5 are image and rows 0, 1, 6, 7 white pad border
PAD_ROWS = (2, 5)


def _wide_exemplars():
    return torch.cat([_exemplar_image(height=32, width=64, seed=0), _exemplar_image(height=32, width=64, shift=20, seed=5)])


def test_pad_border_never_serves_even_where_masks_allow_it(h, pack, nodes, vae):
    """All-zero exemplar masks allow nothing: with pad, the padded masks must not turn the white
    border into allowed content (before: fitted with white = 1, the preview was fully lit)."""
    condition, _, _ = _scene()
    exemplars = _wide_exemplars()
    zeros = torch.zeros(2, 32, 64)
    for fit in ("pad", "crop"):
        context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, fit, exemplar_masks=zeros)[0]
        assert float(context.restriction.exemplar_masks.max()) == 0.0, fit
        match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
        assert _black_share(nodes["MIDMsSourcePreview"]().preview(match)[0]) == 1.0, fit
    # masks of ones allow the image part only
    ones = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "pad", exemplar_masks=torch.ones(2, 32, 64))[0]
    want = torch.zeros(1, 2, H // 8, W // 8)
    want[..., PAD_ROWS[0] : PAD_ROWS[1] + 1, :] = 1.0
    torch.testing.assert_close(ones.restriction.exemplar_masks, want)


def _weight_on_border(pack, match, restricted=True):
    """How much of each condition position's first-warp weight lies on pad-border cells: the
    match's own warp of a border indicator (1 on the border rows of every exemplar, 0 on image
    rows) -> (B, 1, h, w). ``restricted=False``: the same warp without the context's restriction."""
    host_match = importlib.import_module(f"{pack.package}.host_adapters.match")
    features = host_match.bind(match, torch.device("cpu"))
    border = torch.ones(1, 1, H // 8, W // 8)
    border[..., PAD_ROWS[0] : PAD_ROWS[1] + 1, :] = 0.0
    values = border.repeat(features.exemplar.shape[0], 1, features.groups, 1)
    result = match.settings.rewarp.warp_with_confidence(
        features.condition, features.exemplar, values, prior=features.prior, groups=features.groups,
        restriction=features.restriction if restricted else None)
    return result.warped


def test_pad_border_never_serves_without_masks(h, pack, nodes, vae):
    """No masks at all: with pad every condition position still draws only from image cells
    (no first-warp weight on the border rows; the condition is white paper with lines, which
    the white border matches well when nothing stops it)."""
    condition, _, _ = _scene()
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, _wide_exemplars(), vae, "pad")[0]
    assert context.restriction is not None and context.restriction.condition_labels is None
    match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
    assert float(_weight_on_border(pack, match).abs().max()) < 1e-6
    assert float(_weight_on_border(pack, match, restricted=False).max()) > 0.5  # what the border would draw
    assert _black_share(nodes["MIDMsSourcePreview"]().preview(match)[0]) == 0.0
    # crop and stretch have no border: no restriction (the graph as before)
    for fit in ("crop", "stretch"):
        assert nodes["MIDMsExemplarSetEncode"]().encode(condition, _wide_exemplars(), vae, fit)[0].restriction is None


def test_single_exemplar_pad_border_never_serves_batch_of_two(h, pack, models, vae):
    """MIDMs Exemplar Encode with pad, a batch of two conditions against one wide exemplar: the
    context excludes the border (a restriction of one exemplar), the first warp and a sampler run
    draw from image rows only; crop / stretch / own size contexts stay unrestricted."""
    scene = _exemplar_image(seed=3)
    conditions = torch.cat([_edge_image(scene), _edge_image(scene.flip(2))])
    exemplar = _exemplar_image(height=32, width=64, seed=0)
    context = pack.MIDMsExemplarEncode().encode(conditions, exemplar, vae, "pad")[0]
    assert context.exemplar_count == 1
    want = torch.zeros(2, 1, H // 8, W // 8)
    want[..., PAD_ROWS[0] : PAD_ROWS[1] + 1, :] = 1.0
    torch.testing.assert_close(context.restriction.exemplar_masks, want)
    match, warped = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[:2]
    assert warped["samples"].shape == (2, 4, H // 8, W // 8)
    on_border = _weight_on_border(pack, match)
    assert on_border.shape == (2, 1, H // 8, W // 8) and float(on_border.abs().max()) < 1e-6
    assert float(_weight_on_border(pack, match, restricted=False).max()) > 0.5  # what the border would draw
    positive, negative = _conds("sd15")
    latent, _ = pack.MIDMsSampler().sample(models["sd15"], positive, negative, context, _matcher(pack), seed=3, steps=2,
                                           start_noise=0.25, cfg=3.0)
    assert latent["samples"].shape == (2, 4, H // 8, W // 8) and bool(torch.isfinite(latent["samples"]).all())
    for fit in ("crop", "stretch", "own size"):
        assert pack.MIDMsExemplarEncode().encode(conditions, exemplar, vae, fit)[0].restriction is None
