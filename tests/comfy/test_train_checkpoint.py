"""Training on a real checkpoint's VAE with the VGG losses: ``scripts/train_midms.py
--checkpoint --vgg`` in the host's python, on the tiny SD1.5 checkpoint (its TAESD VAE) and a
VGG-19 file of seeded random weights. The warps are decoded by the checkpoint's own VAE with
gradients to the latents, so the feature and perceptual terms (and the contextual one after the
warm-up) join the loss and the networks still train."""

from __future__ import annotations

import json
import math
import os
import subprocess

import numpy as np
import torch

from harness.host import REPO, require_host
from harness.tiny_models import write_tiny_sd15_checkpoint


def test_vgg_losses_through_the_checkpoint_vae(tmp_path):
    import skimage.data
    from PIL import Image
    from safetensors.torch import save_file

    from midms_core.networks.files import load_networks
    from midms_core.training.vgg import vgg19_shapes

    host = require_host()
    ckpt = write_tiny_sd15_checkpoint(tmp_path / "tiny.safetensors", seed=0)["path"]
    g = torch.Generator().manual_seed(0)
    save_file({k: 0.05 * torch.randn(s, generator=g) for k, s in vgg19_shapes("cocosnet").items()},
              str(tmp_path / "vgg.safetensors"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(photos / f"{name}.png")
    out = tmp_path / "nets.safetensors"
    done = subprocess.run(
        [host.python, str(REPO / "scripts" / "train_midms.py"), "--checkpoint", str(ckpt), "--images", str(photos),
         "--out", str(out), "--size", "64", "--steps", "2", "--warmup", "1", "--batch", "2", "--width", "16",
         "--encoder-width", "4", "--vgg", str(tmp_path / "vgg.safetensors")],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "COMFYUI_PATH": host.comfyui, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 channels" in done.stderr and "losses are off" not in done.stderr
    records = [json.loads(line) for line in out.with_name("nets.jsonl").read_text().splitlines()]
    assert {"feature", "perceptual"} <= set(records[0]) and "contextual" not in records[0]
    assert all(math.isfinite(records[1][k]) and records[1][k] > 0 for k in ("feature", "perceptual", "contextual"))
    assert load_networks(out).config.latent_channels == 4


def test_vae_decoder_passes_gradients_to_the_latents_only(tmp_path):
    """The decoder the trainer gets: images in [0, 1] like the host's own VAE Decode, gradients
    reach the latents, none reach (or are kept for) the VAE's weights."""
    from harness.host import in_process_host

    in_process_host(tmp_path / "host")
    import comfy.sd

    from harness.vae_files import vae_decoder

    ckpt = write_tiny_sd15_checkpoint(tmp_path / "tiny.safetensors", seed=0)["path"]
    vae = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=True, output_clip=False,
                                                embedding_directory=None, output_model=False)[2]
    decode = vae_decoder(vae)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    images = decode(latents)
    with torch.no_grad():
        host = vae.decode(latents.detach()).movedim(-1, 1)  # the host's VAE Decode: (B, H, W, 3) -> channels first
    assert images.shape == (2, 3, 64, 64) and torch.allclose(images.detach(), host, atol=1e-5)
    (images * torch.linspace(0, 1, 64)).sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vae.first_stage_model.parameters())
