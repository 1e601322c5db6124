"""Tests of the learned networks: official key layout, shapes, PONO (midms_core.networks.model), safetensors
I/O (networks.files), label maps (networks.label_maps) and the LearnedMatcher (matchers.learned)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from midms_core.matchers.base import MatchSide
from midms_core.matchers.learned import LearnedMatcher
from midms_core.networks.files import config_from_state_dict, load_networks, save_networks
from midms_core.networks.label_maps import canny_edge_map, to_label_channels
from midms_core.networks.model import CorrespondenceConfig, CorrespondenceNetworks, init_networks, positional_norm

# Small sizes keep the tests fast; the official sizes are checked on the meta device.
SMALL = CorrespondenceConfig(latent_channels=3, label_channels=5, width=16, encoder_width=4, spade_hidden=8)

# ---------------------------------------------------------------- official checkpoint layout
# Read from the official models/midms.py, generator.py, architecture.py, normalization.py.
OFFICIAL_PREFIXES = ("real_enc.", "seg_enc.", "iter_enc.", "layer.", "theta.", "phi.")
ENCODERS = ("real_enc", "seg_enc", "iter_enc")
# Spectral-normed convs: official keys are <prefix>.weight_orig/_u/_v; stored folded as <prefix>.weight.
SPECTRAL_SUFFIXES = (
    "layer1.0", "layer2.0", "layer3.0", "G_middle_1.conv_0", "G_middle_1.conv_1", "G_middle_1.conv_s",
)
ENCODER_SUFFIXES = (
    "layer1.0.weight",
    "layer2.0.weight",
    "layer3.0.weight",
    "G_middle_1.conv_0.weight",
    "G_middle_1.conv_0.bias",
    "G_middle_1.conv_1.weight",
    "G_middle_1.conv_1.bias",
    "G_middle_1.conv_s.weight",
) + tuple(
    f"G_middle_1.{norm}.{conv}.{p}"
    for norm in ("norm_0", "norm_1", "norm_s")
    for conv in ("mlp_shared.1", "mlp_gamma", "mlp_beta")
    for p in ("weight", "bias")
)
HEAD_KEYS = tuple(
    f"layer.{i}.{name}" for i in range(4)
    for name in ("conv1.weight", "conv1.bias", "prelu.weight", "conv2.weight", "conv2.bias")
) + ("theta.weight", "theta.bias", "phi.weight", "phi.bias")
EXPECTED_KEYS = {f"{e}.{s}" for e in ENCODERS for s in ENCODER_SUFFIXES} | set(HEAD_KEYS)

# Official CelebA-HQ edge model: VQ-f4 latents (3 ch), label_nc 15, maskmix -> head 256 + 15.
OFFICIAL_SHAPES = {
    "real_enc.layer1.0.weight": (64, 3, 3, 3),
    "real_enc.layer2.0.weight": (256, 64, 3, 3),
    "real_enc.layer3.0.weight": (512, 256, 3, 3),
    "real_enc.G_middle_1.conv_0.weight": (256, 512, 3, 3),
    "real_enc.G_middle_1.conv_1.weight": (256, 256, 3, 3),
    "real_enc.G_middle_1.conv_s.weight": (256, 512, 1, 1),
    "real_enc.G_middle_1.norm_0.mlp_shared.1.weight": (128, 3, 3, 3),  # modulated by the latent
    "real_enc.G_middle_1.norm_0.mlp_gamma.weight": (512, 128, 3, 3),
    "real_enc.G_middle_1.norm_1.mlp_beta.weight": (256, 128, 3, 3),
    "real_enc.G_middle_1.norm_s.mlp_gamma.weight": (512, 128, 3, 3),
    "seg_enc.layer1.0.weight": (64, 15, 3, 3),
    "seg_enc.G_middle_1.norm_1.mlp_shared.1.weight": (128, 15, 3, 3),  # modulated by the label map
    "iter_enc.layer1.0.weight": (64, 3, 3, 3),
    "iter_enc.G_middle_1.norm_s.mlp_shared.1.weight": (128, 256, 3, 3),  # modulated by seg_enc output
    "layer.0.conv1.weight": (271, 271, 3, 3),
    "layer.3.conv2.weight": (271, 271, 3, 3),
    "layer.2.prelu.weight": (1,),
    "theta.weight": (256, 271, 1, 1),
    "phi.weight": (256, 271, 1, 1),
}


def meta_nets(config: CorrespondenceConfig | None = None) -> CorrespondenceNetworks:
    with torch.device("meta"):
        return CorrespondenceNetworks(config)


def shapes(nets: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in nets.state_dict().items()}


def test_state_dict_keys_equal_official_layout():
    sd = shapes(meta_nets())
    assert all(k.startswith(OFFICIAL_PREFIXES) for k in sd)
    assert set(sd) == EXPECTED_KEYS
    for key, shape in OFFICIAL_SHAPES.items():
        assert sd[key] == shape, key
    # the official norm helper deletes the bias of the encoder convs; conv_s is built without one
    assert not any(re.search(r"(layer[123]\.0|conv_s)\.bias$", k) for k in sd)
    assert not any(k.endswith(("weight_orig", "weight_u", "weight_v")) for k in sd)  # folded


def test_spectral_weight_keys_list_the_official_spectral_prefixes():
    expected = {f"{e}.{s}.weight" for e in ENCODERS for s in SPECTRAL_SUFFIXES}
    assert set(meta_nets().spectral_weight_keys()) == expected


def test_stable_diffusion_and_ade_layouts():
    sd = shapes(meta_nets(CorrespondenceConfig(latent_channels=4, label_channels=151)))
    assert sd["real_enc.layer1.0.weight"] == (64, 4, 3, 3)
    assert sd["real_enc.G_middle_1.norm_0.mlp_shared.1.weight"] == (128, 4, 3, 3)
    assert sd["iter_enc.layer1.0.weight"] == (64, 4, 3, 3)
    assert sd["iter_enc.G_middle_1.norm_0.mlp_shared.1.weight"] == (128, 256, 3, 3)
    assert sd["seg_enc.layer1.0.weight"] == (64, 151, 3, 3)
    assert sd["theta.weight"] == (256, 407, 1, 1)


def test_maskmix_off_head_has_no_label_channels():
    sd = shapes(meta_nets(CorrespondenceConfig(maskmix=False)))
    assert sd["layer.0.conv1.weight"] == (256, 256, 3, 3)
    assert sd["phi.weight"] == (256, 256, 1, 1)
    assert sd["seg_enc.layer1.0.weight"] == (64, 15, 3, 3)


@pytest.mark.parametrize("latent_channels", [3, 4])
def test_official_size_forward_shapes(latent_channels):
    cfg = CorrespondenceConfig(latent_channels=latent_channels)
    nets = init_networks(cfg, seed=0)
    h, w = 6, 10
    label = torch.rand(2, 15, h, w)
    latent = torch.randn(2, latent_channels, h, w)
    with torch.no_grad():
        seg = nets.encode_condition(label)
        real = nets.encode_exemplar(latent)
        assert seg.shape == real.shape == (2, 256, h, w)
        assert nets.condition_head(seg, label).shape == (2, 256, h, w)
        assert nets.exemplar_head(real, label).shape == (2, 256, h, w)
        assert nets.encode_iteration(latent, seg).shape == (2, 256, h, w)


# ---------------------------------------------------------------- init, PONO, spectral folding


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, b, c = init_networks(SMALL, seed=3), init_networks(SMALL, seed=3), init_networks(SMALL, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items() if "prelu" not in k)


def test_spectral_convs_initialised_with_unit_spectral_norm():
    nets = init_networks(SMALL, seed=0)
    sd = nets.state_dict()
    for key in nets.spectral_weight_keys():
        sigma = torch.linalg.matrix_norm(sd[key].flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 1e-4, key


def pono_transcription(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                v = x[b, :, i, j].tolist()
                mean = sum(v) / len(v)
                var = sum((t - mean) ** 2 for t in v) / (len(v) - 1)
                out[b, :, i, j] = torch.tensor([(t - mean) / (var + eps) ** 0.5 for t in v], dtype=x.dtype)
    return out


def test_positional_norm_normalises_over_channels_per_position():
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(positional_norm(x), pono_transcription(x), rtol=1e-6, atol=1e-6)
    # scale of one position does not leak into another (normalisation is per position)
    y = x.clone()
    y[:, :, 0, 0] *= 100
    torch.testing.assert_close(positional_norm(y)[:, :, 1:], positional_norm(x)[:, :, 1:])


def test_spade_with_zero_modulation_is_pono():
    nets = init_networks(SMALL, seed=0)
    spade = nets.real_enc.G_middle_1.norm_0
    with torch.no_grad():
        for conv in (spade.mlp_gamma, spade.mlp_beta):
            conv.weight.zero_()
            conv.bias.zero_()
        x = torch.randn(1, spade.mlp_gamma.out_channels, 5, 6)
        torch.testing.assert_close(spade(x, torch.randn(1, 3, 5, 6)), positional_norm(x))


# ---------------------------------------------------------------- safetensors I/O


def test_save_load_round_trip_identical_outputs(tmp_path):
    nets = init_networks(SMALL, seed=1)
    path = tmp_path / "nets.safetensors"
    save_networks(path, nets)
    loaded = load_networks(path, map_location="cpu")
    assert loaded.config == SMALL
    label, latent = torch.rand(1, 5, 8, 6), torch.randn(1, 3, 8, 6)
    with torch.no_grad():
        for f in (lambda n: n.condition_head(n.encode_condition(label), label),
                  lambda n: n.exemplar_head(n.encode_exemplar(latent), label),
                  lambda n: n.encode_iteration(latent, n.encode_condition(label))):
            assert torch.equal(f(nets), f(loaded))


def test_load_without_metadata_infers_config(tmp_path):
    cfg = CorrespondenceConfig(latent_channels=4, label_channels=2, maskmix=False, width=8, encoder_width=2, spade_hidden=4)
    nets = init_networks(cfg, seed=0)
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in nets.state_dict().items()}, str(path))
    assert load_networks(path).config == cfg
    assert config_from_state_dict(nets.state_dict()) == cfg


def _write_variant(tmp_path, edit):
    nets = init_networks(SMALL, seed=0)
    path = tmp_path / "nets.safetensors"
    save_networks(path, nets)
    tensors = load_file(str(path))
    edit(tensors)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"midms_config": SMALL.to_json()})
    return bad


def test_missing_key_raises_naming_file_and_key(tmp_path):
    bad = _write_variant(tmp_path, lambda t: t.pop("seg_enc.G_middle_1.norm_s.mlp_gamma.bias"))
    with pytest.raises(ValueError, match=r"load_networks.*bad\.safetensors.*missing.*seg_enc\.G_middle_1\.norm_s\.mlp_gamma\.bias"):
        load_networks(bad)


def test_wrong_shape_raises_naming_key(tmp_path):
    def edit(t):
        t["theta.weight"] = torch.zeros(16, 20, 1, 1)

    with pytest.raises(ValueError, match=r"bad\.safetensors.*wrong shapes.*theta\.weight"):
        load_networks(_write_variant(tmp_path, edit))


def test_unexpected_official_spectral_keys_raise(tmp_path):
    def edit(t):
        t["real_enc.layer1.0.weight_orig"] = t.pop("real_enc.layer1.0.weight")

    with pytest.raises(ValueError, match=r"missing keys \['real_enc\.layer1\.0\.weight'\].*unexpected keys \['real_enc\.layer1\.0\.weight_orig'\]"):
        load_networks(_write_variant(tmp_path, edit))


def test_torch_save_files_are_never_loaded(tmp_path, monkeypatch):
    nets = init_networks(SMALL, seed=0)
    pt = tmp_path / "nets.pt"
    torch.save(nets.state_dict(), pt)
    disguised = tmp_path / "disguised.safetensors"
    torch.save(nets.state_dict(), disguised)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be called")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(ValueError, match=r"load_networks: 'path' must name a \.safetensors file"):
        load_networks(pt)
    with pytest.raises(ValueError, match=r"disguised\.safetensors.*not a readable safetensors file"):
        load_networks(disguised)
    with pytest.raises(ValueError, match=r"save_networks: 'path' must name a \.safetensors file"):
        save_networks(tmp_path / "out.pt", nets)
    with pytest.raises(ValueError, match=r"does not exist"):
        load_networks(tmp_path / "absent.safetensors")


def test_config_validation_and_json():
    assert CorrespondenceConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(ValueError, match="label_channels"):
        CorrespondenceConfig(label_channels=0)
    with pytest.raises(ValueError, match="maskmix"):
        CorrespondenceConfig(maskmix=1)
    with pytest.raises(ValueError, match="extra"):
        CorrespondenceConfig.from_json('{"latent_channels": 3, "bogus": 1}')


# ---------------------------------------------------------------- LearnedMatcher


def sides(batch=2, cond_grid=(6, 10), ex_grid=(8, 8), channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = MatchSide(
        latent=torch.randn(batch, channels, *cond_grid, generator=g),
        image=torch.rand(batch, 3, cond_grid[0] * 4, cond_grid[1] * 4, generator=g),
    )
    ex = MatchSide(
        latent=torch.randn(batch, channels, *ex_grid, generator=g),
        image=torch.rand(batch, 3, ex_grid[0] * 4, ex_grid[1] * 4, generator=g),
    )
    return cond, ex


@pytest.mark.parametrize("channels", [3, 4])
def test_bind_shapes_on_latent_grid(channels):
    nets = init_networks(dataclasses.replace(SMALL, latent_channels=channels), seed=0)
    cond, ex = sides(channels=channels)
    feats = LearnedMatcher(nets).bind(cond, ex)
    assert feats.condition.shape == (2, 16, 6, 10)
    assert feats.exemplar.shape == (2, 16, 8, 8)
    assert feats.exemplar_in_domain.shape == (2, 16, 8, 8)
    assert feats.x0_features(torch.randn(2, channels, 6, 10)).shape == (2, 16, 6, 10)
    assert feats.x0_features(torch.randn(1, channels, 6, 10)).shape == (2, 16, 6, 10)  # batch 1 broadcasts


def test_bind_matches_the_official_composition():
    nets = init_networks(SMALL, seed=2)
    cond, ex = sides()
    ex_map = torch.rand(2, 5, 32, 32)
    feats = LearnedMatcher(nets, exemplar_map=lambda image: ex_map).bind(cond, ex)
    x0 = torch.randn(2, 3, 6, 10)
    with torch.no_grad():
        # condition map: RGB -> luminance tiled to 5 channels, nearest to the latent grid
        lum = 0.299 * cond.image[:, :1] + 0.587 * cond.image[:, 1:2] + 0.114 * cond.image[:, 2:]
        cmap = F.interpolate(lum.repeat(1, 5, 1, 1), size=(6, 10), mode="nearest")
        emap = F.interpolate(ex_map, size=(8, 8), mode="nearest")
        seg = nets.seg_enc(cmap, cmap)
        real = nets.real_enc(ex.latent, ex.latent)
        torch.testing.assert_close(feats.condition, nets.theta(nets.layer(torch.cat([seg, cmap], 1))))
        torch.testing.assert_close(feats.exemplar, nets.phi(nets.layer(torch.cat([real, emap], 1))))
        torch.testing.assert_close(feats.exemplar_in_domain, real)
        torch.testing.assert_close(feats.x0_features(x0), nets.iter_enc(x0, seg))


def test_default_exemplar_map_is_canny_edges():
    nets = init_networks(SMALL, seed=0)
    cond, ex = sides()
    seen = {}

    def spy(image):
        seen["map"] = canny_edge_map(image)
        return seen["map"]

    a = LearnedMatcher(nets).bind(cond, ex).exemplar
    b = LearnedMatcher(nets, exemplar_map=spy).bind(cond, ex).exemplar
    torch.testing.assert_close(a, b)
    assert set(seen["map"].unique().tolist()) <= {0.0, 1.0}


def test_bind_runs_without_grad_in_network_dtype():
    nets = init_networks(SMALL, seed=0, dtype=torch.float64)
    assert all(p.requires_grad for p in nets.parameters())
    feats = LearnedMatcher(nets).bind(*sides())
    for t in (feats.condition, feats.exemplar, feats.exemplar_in_domain, feats.x0_features(torch.randn(2, 3, 6, 10))):
        assert t.dtype == torch.float64 and not t.requires_grad


def test_bad_inputs_raise():
    nets = init_networks(SMALL, seed=0)
    matcher = LearnedMatcher(nets)
    cond, ex = sides()
    no_image = MatchSide(latent=cond.latent)
    with pytest.raises(ValueError, match=r"LearnedMatcher.*'condition\.image'"):
        matcher.bind(no_image, ex)
    with pytest.raises(ValueError, match=r"LearnedMatcher.*'exemplar\.image'"):
        matcher.bind(cond, MatchSide(latent=ex.latent))
    sd_cond, sd_ex = sides(channels=4)
    with pytest.raises(ValueError, match=r"LearnedMatcher.*'exemplar\.latent'.*expect 3"):
        matcher.bind(cond, sd_ex)
    with pytest.raises(ValueError, match=r"LearnedMatcher.*'condition\.latent'"):
        matcher.bind(sd_cond, ex)
    with pytest.raises(ValueError, match=r"at least 2x2"):
        matcher.bind(*sides(cond_grid=(1, 4)))
    feats = matcher.bind(cond, ex)
    with pytest.raises(ValueError, match=r"x0_features.*'x0_latent'"):
        feats.x0_features(torch.randn(2, 4, 6, 10))
    with pytest.raises(ValueError, match=r"x0_features.*'x0_latent'"):
        feats.x0_features(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"x0_features.*batch"):
        feats.x0_features(torch.randn(3, 3, 6, 10))
    with pytest.raises(ValueError, match=r"'exemplar_map' has 2 channels"):
        LearnedMatcher(nets, exemplar_map=lambda im: im[:, :2]).bind(cond, ex)
    with pytest.raises(ValueError, match=r"'exemplar_map' returned batch"):
        LearnedMatcher(nets, exemplar_map=lambda im: im[:1]).bind(cond, ex)
    with pytest.raises(ValueError, match=r"LearnedMatcher: 'nets'"):
        LearnedMatcher(object())
    with pytest.raises(ValueError, match=r"LearnedMatcher: 'condition_map' must be callable"):
        LearnedMatcher(nets, condition_map=3)


def test_to_label_channels():
    rgb = torch.rand(1, 3, 4, 4)
    out = to_label_channels(rgb, 5)
    assert out.shape == (1, 5, 4, 4)
    torch.testing.assert_close(out[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    torch.testing.assert_close(out[:, 4], out[:, 0])
    assert to_label_channels(rgb, 3) is rgb
    assert to_label_channels(rgb[:, :1], 2).shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="to_label_channels: 'x' has 2 channels"):
        to_label_channels(rgb[:, :2], 5)


@pytest.mark.parametrize("keys, says", [
    (["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight"],
     r"looks like a Stable Diffusion / Flux / SD3 checkpoint.*models/checkpoints"),
    (["model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "text_encoders.t5xxl.shared.weight"],
     r"looks like a Stable Diffusion / Flux / SD3 checkpoint.*models/checkpoints"),  # a full Flux file
    (["double_blocks.0.img_attn.qkv.weight"], r"looks like a diffusion transformer \(Flux / SD3"),
    (["model.diffusion_model.input_blocks.0.0.weight"], r"looks like a diffusion U-Net"),
    (["control_model.input_blocks.0.0.weight", "model.diffusion_model.input_blocks.0.0.weight"],
     r"looks like a ControlNet"),  # a cldm file carries the U-Net too
    (["lora_unet_down_blocks_0_attentions_0.lora_down.weight"], r"looks like a LoRA"),
    (["unet.down.lora_A.weight"], r"looks like a LoRA"),
    (["control_model.input_hint_block.0.weight"], r"looks like a ControlNet"),
    (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"], r"looks like a VAE"),
    (["text_model.encoder.layers.0.mlp.fc1.weight"], r"looks like a text encoder"),
    (["weight", "bias"], r"looks like an unrelated safetensors file \(keys such as 'bias', 'weight'\)"),
])
def test_foreign_weights_are_named_with_the_conversion_hint(tmp_path, keys, says):
    path = tmp_path / "wrong.safetensors"
    save_file({k: torch.zeros(2) for k in keys}, path)
    with pytest.raises(ValueError, match=rf"'wrong\.safetensors' {says}.*not MIDMs correspondence networks.*convert_official_checkpoint\.py"):
        load_networks(path)


def test_foreign_file_tensors_are_not_read(tmp_path, monkeypatch):
    """A multi-GB checkpoint dropped in the wrong folder is named from its keys alone."""
    import safetensors

    path = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4)}, path)
    reads = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def metadata(self):
            return self.inner.metadata()

        def get_tensor(self, key):
            reads.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    with pytest.raises(ValueError, match="looks like a diffusion U-Net"):
        load_networks(path)
    assert reads == []
    # the networks' own keys still load through the same path
    good = tmp_path / "good.safetensors"
    save_networks(good, init_networks(SMALL, seed=0))
    load_networks(good)
    assert len(reads) > 0


def test_networks_with_a_partial_mismatch_are_reported_key_by_key(tmp_path):
    """Files that are networks (their keys are there) are not called foreign: the strict check
    lists what is missing, even beside keys of another kind."""
    from midms_core.networks.files import NETWORK_PREFIXES, describe_foreign_weights

    state = {k: v for k, v in init_networks(SMALL, seed=0).state_dict().items()}
    assert {k.split(".")[0] + "." for k in state} <= set(NETWORK_PREFIXES)
    assert describe_foreign_weights(list(state)) is None
    state["model.diffusion_model.x"] = torch.zeros(1)
    state.pop("theta.weight")
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    with pytest.raises(ValueError, match=r"partial\.safetensors.*does not match.*missing keys \['theta\.weight'\].*unexpected keys \['model\.diffusion_model\.x'\]"):
        load_networks(path, config=SMALL)
    assert describe_foreign_weights([]) == "an empty safetensors file (no tensors)"


def test_empty_and_unreadable_files_name_the_file_not_its_folder(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"'empty\.safetensors' is an empty file \(0 bytes\)\. Convert the official"):
        load_networks(empty)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_text("not a safetensors file")
    with pytest.raises(ValueError, match=r"^load_networks: 'garbage\.safetensors' is not a readable safetensors file") as info:
        load_networks(garbage)
    assert str(tmp_path) not in str(info.value)
