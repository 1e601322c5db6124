"""A checkpoint's VAE loaded by ComfyUI in this process, as an encoder and a decoder of latents.

Used where latents must be those of a real checkpoint: ``scripts/train_midms.py --checkpoint``
(the networks train on the checkpoint's latents; the VGG losses decode through its VAE) and
``benchmarks/warp_quality.py --checkpoint`` (every image encoded by the VAE, the U-Net as a
DIFT matcher). Needs ComfyUI: :func:`harness.host.find_host`'s (COMFYUI_PATH, else the
``.comfyui/env.json`` of ``scripts/get_comfyui.sh``); run with that environment's python.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

import torch
from torch import Tensor

from harness.host import find_host

Encode = Callable[[Tensor], Tensor]

__all__ = ["comfyui_root", "load_checkpoint", "vae_decoder", "vae_encoder"]


def comfyui_root(where: str = "comfyui_root") -> str:
    """The ComfyUI to load checkpoints with: :func:`harness.host.find_host`'s (COMFYUI_PATH, else
    .comfyui/env.json's); SystemExit (starting with ``where``) when there is none."""
    host = find_host()
    if host is None or not (host.root / "comfy" / "sd.py").is_file():
        raise SystemExit(f"{where}: '--checkpoint' needs ComfyUI: set COMFYUI_PATH or run scripts/get_comfyui.sh "
                         "(writes .comfyui/env.json), and run this with that environment's python")
    return host.comfyui


def load_checkpoint(checkpoint: str, where: str = "load_checkpoint", with_model: bool = True):
    """ComfyUI in-process (CPU unless CUDA is there): (model or None, vae) of a checkpoint file;
    ``with_model=False`` leaves the diffusion model unloaded (the trainer needs the VAE only).
    ``where`` starts the messages (SystemExit) for a missing file, no ComfyUI or no VAE."""
    if not os.path.isfile(checkpoint):
        raise SystemExit(f"{where}: '--checkpoint' {checkpoint!r} is not a file")
    root = comfyui_root(where)
    if root not in sys.path:
        sys.path.insert(0, root)
    if "comfy.cli_args" not in sys.modules:
        import comfy.options

        saved = sys.argv
        sys.argv = [os.path.join(root, "main.py")] + ([] if torch.cuda.is_available() else ["--cpu"])
        try:
            comfy.options.enable_args_parsing()
            importlib.import_module("comfy.cli_args")  # parses sys.argv once, at import
        finally:
            sys.argv = saved
    import comfy.sd

    loaded = comfy.sd.load_checkpoint_guess_config(checkpoint, output_vae=True, output_clip=False, embedding_directory=None,
                                                   output_model=with_model)
    model, vae = loaded[0], loaded[2]
    if vae is None:
        raise SystemExit(f"{where}: {checkpoint!r} holds no VAE; latents are made with the checkpoint's VAE")
    return model, vae


def vae_encoder(vae) -> Encode:
    """(B, 3, H, W) in [0, 1] -> raw latents (B, c, H/8, W/8) float32 on the CPU, by a host VAE."""

    def encode(image: Tensor) -> Tensor:
        return vae.encode(image.permute(0, 2, 3, 1)).float().cpu()  # the VAE takes (B, H, W, 3)

    return encode


def vae_decoder(vae) -> Encode:
    """Raw latents (B, c, h, w) -> images (B, 3, f h, f w) in [0, 1] (f: the VAE's upscale, 8 for
    SD / Flux VAEs) by a host VAE's decoder, WITH gradients to the latents (the trainer's VGG
    losses); the decoder's own weights stay frozen. The result is on the latents' device and
    dtype. Backpropagating through a full SD decoder stores all its activations (at full
    image resolution), so memory grows quickly with --batch and --size when --vgg is on."""
    model = vae.first_stage_model
    model.requires_grad_(False)

    def decode(latents: Tensor) -> Tensor:
        import comfy.model_management

        comfy.model_management.load_models_gpu([vae.patcher])  # a no-op while the encoder keeps it loaded
        images = model.decode(latents.to(device=vae.device, dtype=vae.vae_dtype))
        return vae.process_output(images.float()).to(device=latents.device, dtype=latents.dtype)

    return decode
