"""Tests of midms_core.networks.convert: folding spectral norm and converting the official training checkpoint.

The fake official checkpoint is built the way the official training code produces it: the
networks with ``torch.nn.utils.spectral_norm`` on the 18 convs the official code wraps
(``models/normalization.py`` get_nonspade_norm_layer("spectralinstance") for layer1-3 of each
encoder, ``models/architecture.py`` SPADEResnetBlock for conv_0/conv_1/conv_s), a few training
steps of power iteration, then ``torch.save({"epoch", "state_dict", "optimizer", ...})`` with
the diffusion model's keys beside the networks.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from midms_core.networks.convert import (
    convert_file,
    convert_official_state_dict,
    fold_spectral_norm,
    load_official_checkpoint,
)
from midms_core.networks.files import load_networks
from midms_core.networks.model import CorrespondenceConfig, CorrespondenceNetworks, init_networks

CFG = CorrespondenceConfig(latent_channels=3, label_channels=3, width=16, encoder_width=4, spade_hidden=8)
ENCODERS = ("real_enc", "seg_enc", "iter_enc")
SPECTRAL_SUFFIXES = ("layer1.0", "layer2.0", "layer3.0", "G_middle_1.conv_0", "G_middle_1.conv_1", "G_middle_1.conv_s")
OFFICIAL_SPECTRAL = sorted(f"{e}.{s}" for e in ENCODERS for s in SPECTRAL_SUFFIXES)
JUNK = ("diff_model.model.diffusion_model.input_blocks.0.0.weight", "diff_model.first_stage_model.encoder.conv_in.weight",
        "diff_model.betas")
ROOT = Path(__file__).resolve().parents[1]


class _Opaque:
    """A custom class: torch.load(weights_only=True) must refuse to unpickle it."""

    def __init__(self) -> None:
        self.payload = "anything"


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "label": torch.rand(2, CFG.label_channels, 6, 6, generator=g),
        "ref_label": torch.rand(2, CFG.label_channels, 6, 6, generator=g),
        "latent": torch.randn(2, CFG.latent_channels, 6, 6, generator=g),
        "x0": torch.randn(2, CFG.latent_channels, 6, 6, generator=g),
    }


def _outputs(nets: CorrespondenceNetworks, x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        fx = nets.encode_condition(x["label"])
        fy = nets.encode_exemplar(x["latent"])
        return [fx, fy, nets.encode_iteration(x["x0"], fx), nets.condition_head(fx, x["label"]),
                nets.exemplar_head(fy, x["ref_label"])]


@pytest.fixture(scope="module")
def official() -> tuple[CorrespondenceNetworks, dict]:
    """(the spectral-normed networks in eval mode, the checkpoint dict the official training saves)."""
    nets = init_networks(CFG, seed=7)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, key in enumerate(nets.spectral_weight_keys()):
            conv = nets.get_submodule(key[: -len(".weight")])
            conv.weight.mul_(1.5 + 0.25 * i)  # trained weights are not unit-norm: folding must matter
            torch.nn.utils.spectral_norm(conv)
        nets.train()
        for step in range(3):  # power iterations update weight_u / weight_v, as in training
            _outputs(nets, _inputs(100 + step))
    nets.eval()
    state = dict(nets.state_dict())
    for k in JUNK:
        state[k] = torch.randn(4, generator=g)
    ckpt = {"epoch": 3, "state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 3e-6}]},
            "best_loss": 0}
    return nets, ckpt


def test_fake_checkpoint_has_the_official_spectral_keys(official):
    _, ckpt = official
    sd = ckpt["state_dict"]
    orig = sorted(k[: -len(".weight_orig")] for k in sd if k.endswith(".weight_orig"))
    assert orig == OFFICIAL_SPECTRAL
    for base in OFFICIAL_SPECTRAL:
        assert {base + ".weight_u", base + ".weight_v"} <= set(sd) and base + ".weight" not in sd
    assert "real_enc.G_middle_1.conv_0.bias" in sd and "real_enc.layer1.0.bias" not in sd


def test_fold_matches_float64_transcription():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 3, 3, 3, generator=g)
    u, v = torch.randn(5, generator=g), torch.randn(27, generator=g)
    wd, ud, vd = w.double(), u.double(), v.double()
    sigma = sum(ud[i] * sum(wd.reshape(5, -1)[i, j] * vd[j] for j in range(27)) for i in range(5))
    out = fold_spectral_norm(w, u, v)
    assert out.dtype == torch.float32 and out.shape == w.shape
    torch.testing.assert_close(out.double(), wd / sigma, rtol=1e-6, atol=1e-7)
    half = fold_spectral_norm(w.half(), u.half(), v.half())
    assert half.dtype == torch.float16
    with pytest.raises(ValueError, match="weight_v"):
        fold_spectral_norm(w, u, torch.randn(26))
    with pytest.raises(ValueError, match="sigma"):
        fold_spectral_norm(w, u, torch.zeros(27))


def test_fold_equals_spectral_norm_eval_weight():
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 6, 3))
    with torch.no_grad():
        conv.weight_orig.mul_(4.0)
        conv.train()
        for _ in range(2):
            conv(torch.randn(1, 4, 5, 5))
        conv.eval()
        x = torch.randn(1, 4, 5, 5)
        y = conv(x)  # the eval hook recomputes weight from weight_orig/_u/_v without power iteration
    folded = fold_spectral_norm(conv.weight_orig, conv.weight_u, conv.weight_v)
    torch.testing.assert_close(folded, conv.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, folded, conv.bias), y, rtol=1e-5, atol=1e-6)


def test_convert_checkpoint_file_matches_official_outputs(official, tmp_path):
    nets_official, ckpt = official
    src = tmp_path / "epoch_3.pth"
    torch.save(ckpt, src)
    converted, config, report = convert_official_state_dict(load_official_checkpoint(src))
    assert config == CFG
    assert report.folded == 18 and report.epoch == 3 and report.ignored == len(JUNK)
    assert report.ignored_prefixes == {"diff_model": len(JUNK)}
    assert set(report.other_entries) == {"epoch", "optimizer", "best_loss"}
    nets = CorrespondenceNetworks(config)
    nets.load_state_dict(converted, strict=True)
    assert report.converted == len(nets.state_dict()) and report.kept == len(nets.state_dict()) - 18
    nets.eval()
    x = _inputs()
    for got, want in zip(_outputs(nets, x), _outputs(nets_official, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert "18 spectral-norm triples folded" in report.summary()


def test_bare_state_dict_with_module_prefix(official):
    _, ckpt = official
    bare = {"module." + k: v for k, v in ckpt["state_dict"].items()}
    converted, config, report = convert_official_state_dict(bare)
    assert report.stripped_module_prefix and report.epoch is None and config == CFG
    assert "real_enc.layer1.0.weight" in converted and not any(k.startswith("module.") for k in converted)


@pytest.mark.parametrize(
    "drop, pattern",
    [("real_enc.layer2.0.weight_v", "real_enc.layer2.0.weight_v"),
     ("theta.bias", "missing keys.*theta.bias"),
     ("iter_enc.G_middle_1.conv_s.weight_orig", "iter_enc.G_middle_1.conv_s.weight_orig")],
)
def test_missing_key_is_named(official, drop, pattern):
    sd = dict(official[1]["state_dict"])
    del sd[drop]
    with pytest.raises(ValueError, match=pattern):
        convert_official_state_dict(sd)


@pytest.mark.parametrize(
    "extra",
    ["seg_enc.G_middle_1.extra.weight", "layer.4.conv1.weight", "phi.weight_orig", "real_enc.layer1.0.weight"],
)
def test_unknown_key_under_network_prefix_is_named(official, extra):
    sd = dict(official[1]["state_dict"])
    sd[extra] = torch.zeros(1)
    with pytest.raises(ValueError, match=extra.replace(".", r"\.")):
        convert_official_state_dict(sd)


def test_plain_weight_instead_of_spectral_triple_is_refused(official):
    sd = dict(official[1]["state_dict"])
    base = "seg_enc.layer3.0"
    w = fold_spectral_norm(sd.pop(base + ".weight_orig"), sd.pop(base + ".weight_u"), sd.pop(base + ".weight_v"))
    sd[base + ".weight"] = w
    with pytest.raises(ValueError, match="seg_enc.layer3.0.weight"):
        convert_official_state_dict(sd)


def test_wrong_shape_and_non_network_only_checkpoint(official):
    sd = dict(official[1]["state_dict"])
    sd["phi.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="phi.bias"):
        convert_official_state_dict(sd)
    with pytest.raises(ValueError, match="no keys under"):
        convert_official_state_dict({"state_dict": {k: torch.zeros(1) for k in JUNK}})


def test_non_tensor_pickle_is_refused(official, tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"epoch": 1, "state_dict": {"theta.bias": torch.zeros(2)}, "args": _Opaque()}, path)
    with pytest.raises(ValueError, match=r"weights_only.*_Opaque"):
        load_official_checkpoint(path)
    with pytest.raises(ValueError, match="weights_only"):
        convert_file(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.ckpt, \.pth"):
        load_official_checkpoint(bad)


def _load_cli():
    spec = importlib.util.spec_from_file_location("convert_cli", ROOT / "scripts" / "convert_official_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_file_and_cli(official, tmp_path, capsys):
    nets_official, ckpt = official
    src = tmp_path / "epoch_3.pth"
    torch.save(ckpt, src)
    dst = tmp_path / "midms.safetensors"
    report = convert_file(src, dst)
    assert report.folded == 18
    nets = load_networks(dst)
    assert nets.config == CFG
    x = _inputs(5)
    for got, want in zip(_outputs(nets, x), _outputs(nets_official, x)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["epoch_3.pth", "midms.safetensors"]  # no temp file left

    before = dst.read_bytes()
    with pytest.raises(FileExistsError, match="force"):
        convert_file(src, dst)
    assert dst.read_bytes() == before

    cli = _load_cli()
    assert cli.main([str(src), str(dst)]) == 1
    assert "--force" in capsys.readouterr().err
    assert cli.main([str(src), str(dst), "--force"]) == 0
    assert "folded" in capsys.readouterr().out
    # a .safetensors source (bare state dict) also converts, into a folder the CLI creates
    st_src = tmp_path / "official.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt["state_dict"].items()}, str(st_src))
    out = tmp_path / "models" / "midms" / "from_st.safetensors"
    assert cli.main([str(st_src), str(out)]) == 0
    assert load_networks(out).config == CFG


def test_loader_and_converter_share_the_mismatch_report(official, tmp_path):
    """One theta.bias missing and one unknown theta key read the same from the converter and the
    loader (one KeyMismatch listing), each naming its file and saying what to do."""
    from midms_core.networks.files import KeyMismatch, save_networks

    listing = "missing keys ['theta.bias']; unexpected keys ['theta.extra']"
    assert str(KeyMismatch(missing=("theta.bias",), unexpected=("theta.extra",))) == listing

    def edit(state):
        state = dict(state)
        state.pop("theta.bias")
        state["theta.extra"] = torch.zeros(2)
        return state

    src = tmp_path / "edited.pth"
    torch.save({**official[1], "state_dict": edit(official[1]["state_dict"])}, src)
    with pytest.raises(ValueError) as converting:
        convert_file(src, tmp_path / "out.safetensors")
    saved = tmp_path / "saved.safetensors"
    save_networks(saved, init_networks(CFG, seed=0))
    from safetensors.torch import load_file
    edited = tmp_path / "edited.safetensors"
    save_file(edit(load_file(str(saved))), str(edited), metadata={"midms_config": CFG.to_json()})
    with pytest.raises(ValueError) as loading:
        load_networks(edited)

    for err, where, name in ((converting, "convert_official_state_dict", "edited.pth"),
                             (loading, "load_networks", "edited.safetensors")):
        message = str(err.value)
        assert message.startswith(f"{where}: '") and f"{name}' does not match {CFG}: {listing}. " in message
    assert "convert_official_checkpoint.py" in str(loading.value)  # what to do: convert again
    assert "official training script" in str(converting.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_converter_names_official_keys_in_the_shared_report(official):
    """A missing spectral conv is listed as its official triple, a mis-shaped one under weight_orig."""
    sd = dict(official[1]["state_dict"])
    for suffix in (".weight_orig", ".weight_u", ".weight_v"):
        sd.pop("seg_enc.layer2.0" + suffix)
    g = torch.Generator().manual_seed(0)
    sd["real_enc.layer1.0.weight_orig"] = torch.randn(4, 3, 2, 2, generator=g)
    sd["real_enc.layer1.0.weight_v"] = torch.randn(12, generator=g)
    with pytest.raises(ValueError) as err:
        convert_official_state_dict(sd)
    message = str(err.value)
    assert message.startswith(f"convert_official_state_dict: the checkpoint does not match {CFG}: missing keys "
                              "['seg_enc.layer2.0.weight_orig', 'seg_enc.layer2.0.weight_u', 'seg_enc.layer2.0.weight_v']")
    assert "wrong shapes [real_enc.layer1.0.weight_orig: got (4, 3, 2, 2) vs expected (4, 3, 3, 3)]" in message
