"""VGG-19 features for the trainer's image losses, from weights the user supplies (safetensors).

No weights ship or download here. Two layouts are read:

* CoCosNet's ``vgg19_conv`` (what the official MIDMs and CoCosNet trainers load): keys
  ``conv1_1.weight`` ... ``conv5_4.bias``, Caffe-converted, so inputs are preprocessed the Caffe
  way: RGB -> BGR, x 255, minus the BGR means 103.939 / 116.779 / 123.68, no std division;
* torchvision's ``vgg19`` ``features.<i>.*`` keys (a ``state_dict`` saved with safetensors),
  preprocessed the torchvision way: (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225].

Outputs are the ReLU activations named as the official code names them: r12 (relu1_2), r22,
r32, r42, r52 (relu5_2). Max pooling between blocks, as both layouts were trained with.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

#: (name, in, out) of the 16 convolutions, in order; a max pool follows each block's last conv
VGG19_CONVS: tuple[tuple[str, int, int], ...] = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
)
#: torchvision ``features`` index of each conv above
TORCHVISION_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
OUTPUTS = ("r12", "r22", "r32", "r42", "r52")
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["OUTPUTS", "VGG19Features", "load_vgg19", "vgg19_shapes"]


def vgg19_shapes(layout: str = "cocosnet") -> dict[str, tuple[int, ...]]:
    """Key -> shape of a VGG-19 feature file in ``layout`` ("cocosnet" or "torchvision")."""
    out = {}
    for (name, cin, cout), index in zip(VGG19_CONVS, TORCHVISION_INDEX):
        key = name if layout == "cocosnet" else f"features.{index}"
        out[f"{key}.weight"] = (cout, cin, 3, 3)
        out[f"{key}.bias"] = (cout,)
    return out


class VGG19Features(nn.Module):
    """VGG-19's convolutions; ``forward(images, names)`` -> the named ReLU outputs.

    images: (B, 3, H, W) RGB in [0, 1]; preprocessing per ``layout`` (module docstring).
    """

    def __init__(self, layout: str = "cocosnet") -> None:
        super().__init__()
        if layout not in ("cocosnet", "torchvision"):
            raise ValueError(f"VGG19Features: 'layout' must be 'cocosnet' or 'torchvision', got {layout!r}")
        self.layout = layout
        self.convs = nn.ModuleDict({name: nn.Conv2d(cin, cout, 3, padding=1) for name, cin, cout in VGG19_CONVS})

    def preprocess(self, images: Tensor) -> Tensor:
        if self.layout == "cocosnet":
            bgr = images.flip(1) * 255.0
            return bgr - torch.tensor(CAFFE_BGR_MEANS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward(self, images: Tensor, names: Sequence[str] = OUTPUTS) -> list[Tensor]:
        unknown = [n for n in names if n not in OUTPUTS]
        if unknown:
            raise ValueError(f"VGG19Features: unknown outputs {unknown}; choose from {list(OUTPUTS)}")
        wanted = {f"conv{n[1]}_{n[2]}": n for n in names}  # r42 -> conv4_2
        out: dict[str, Tensor] = {}
        x = self.preprocess(images)
        last = max(int(n[1]) for n in names)
        for name, _, _ in VGG19_CONVS:
            block = int(name[4])
            if block > last:
                break
            x = F.relu(self.convs[name](x))
            if name in wanted:
                out[wanted[name]] = x
            if name in ("conv1_2", "conv2_2", "conv3_4", "conv4_4"):
                x = F.max_pool2d(x, 2)
        return [out[n] for n in names]


def load_vgg19(path: Union[str, os.PathLike], where: str = "load_vgg19") -> VGG19Features:
    """A frozen :class:`VGG19Features` from a safetensors file in either layout; the layout is
    recognised by its keys. A wrong file is refused with what it holds and what is expected."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        raise ValueError(f"{where}: the VGG-19 weights must be an existing .safetensors file, got '{path}'")
    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            layout = "cocosnet" if "conv1_1.weight" in keys else "torchvision" if "features.0.weight" in keys else None
            if layout is None:
                raise ValueError(f"{where}: '{os.path.basename(path)}' is not VGG-19 features (keys such as "
                                 f"{sorted(keys)[:3]}); expected CoCosNet's conv1_1.weight ... or torchvision's "
                                 "features.0.weight ...")
            expected = vgg19_shapes(layout)
            missing = sorted(set(expected) - set(keys))
            if missing:
                raise ValueError(f"{where}: '{os.path.basename(path)}' lacks {missing[:4]} of VGG-19 ({layout} layout)")
            tensors = {k: f.get_tensor(k) for k in expected}
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001  (unreadable file)
        raise ValueError(f"{where}: cannot read '{path}' as safetensors ({err})") from None
    wrong = [f"{k}: {tuple(t.shape)} vs {expected[k]}" for k, t in tensors.items() if tuple(t.shape) != expected[k]]
    if wrong:
        raise ValueError(f"{where}: '{os.path.basename(path)}' has VGG-19 keys of the wrong shape: {wrong[:4]}")
    net = VGG19Features(layout)
    state = {}
    for (name, _, _), index in zip(VGG19_CONVS, TORCHVISION_INDEX):
        key = name if layout == "cocosnet" else f"features.{index}"
        state[f"convs.{name}.weight"] = tensors[f"{key}.weight"].float()
        state[f"convs.{name}.bias"] = tensors[f"{key}.bias"].float()
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)
