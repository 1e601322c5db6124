"""VGG-19 features (midms_core.training.vgg) from user-supplied safetensors, both layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from midms_core.training.vgg import OUTPUTS, load_vgg19, vgg19_shapes


def _weights(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(shape, generator=g) * (2 / (shape[1] * 9)) ** 0.5 if len(shape) == 4
                else 0.01 * torch.randn(shape, generator=g)) for k, shape in vgg19_shapes(layout).items()}


def test_both_layouts_load_and_give_the_named_relus(tmp_path):
    caffe = _weights("cocosnet")
    save_file(caffe, str(tmp_path / "vgg_caffe.safetensors"))
    torchvision = {f"features.{i}.{p}": caffe[f"{name}.{p}"]
                   for (name, i) in zip([k[: -len(".weight")] for k in caffe if k.endswith(".weight")],
                                        (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34))
                   for p in ("weight", "bias")}
    save_file(torchvision, str(tmp_path / "vgg_tv.safetensors"))
    a, b = load_vgg19(tmp_path / "vgg_caffe.safetensors"), load_vgg19(tmp_path / "vgg_tv.safetensors")
    assert a.layout == "cocosnet" and b.layout == "torchvision"
    assert not any(p.requires_grad for p in a.parameters())
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = a(images)
    assert [f.shape[1:] for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    # relu1_2 written out: Caffe preprocessing, two 3x3 convs
    x = images.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    x = F.relu(F.conv2d(x, caffe["conv1_1.weight"], caffe["conv1_1.bias"], padding=1))
    x = F.relu(F.conv2d(x, caffe["conv1_2.weight"], caffe["conv1_2.bias"], padding=1))
    torch.testing.assert_close(feats[0], x)
    # the same weights in torchvision's layout read the image the torchvision way
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    y = F.relu(F.conv2d((images - mean) / std, caffe["conv1_1.weight"], caffe["conv1_1.bias"], padding=1))
    y = F.relu(F.conv2d(y, caffe["conv1_2.weight"], caffe["conv1_2.bias"], padding=1))
    torch.testing.assert_close(b(images, ("r12",))[0], y)
    assert OUTPUTS == ("r12", "r22", "r32", "r42", "r52")


def test_wrong_files_are_named(tmp_path):
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not VGG-19 features"):
        load_vgg19(tmp_path / "other.safetensors")
    short = _weights("cocosnet")
    del short["conv5_4.weight"]
    save_file(short, str(tmp_path / "short.safetensors"))
    with pytest.raises(ValueError, match="lacks .*conv5_4.weight"):
        load_vgg19(tmp_path / "short.safetensors")
    bad = _weights("cocosnet")
    bad["conv2_1.weight"] = torch.zeros(128, 32, 3, 3)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="wrong shape.*conv2_1"):
        load_vgg19(tmp_path / "bad.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read"):
        load_vgg19(tmp_path / "garbage.safetensors")
    with pytest.raises(ValueError, match="existing .safetensors"):
        load_vgg19(tmp_path / "missing.pth")
