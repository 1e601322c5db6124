"""Train the correspondence networks on the latents of YOUR checkpoint's VAE.

    .venv-comfy/bin/python scripts/train_midms.py --checkpoint sd15.safetensors \
        --images photos/ --out ComfyUI/models/midms/mine.safetensors [python -m midms_core.training.engine options]
    torchrun --nproc_per_node 8 scripts/train_midms.py --checkpoint ... (the same, on 8 GPUs)

The networks work on latents, so they belong to one VAE: a file trained here matches the
checkpoint's latents (4 channels for SD1.x/SDXL, 16 for SD3/Flux) and drives MIDMs Learned
Matcher Loader with that checkpoint. ComfyUI loads the VAE (COMFYUI_PATH or the
.comfyui/env.json of scripts/get_comfyui.sh; run with that environment's python). Without
--checkpoint this is ``python -m midms_core.training.engine`` (the weight-free stand-in latents).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from midms_core.training import engine as trainer  # noqa: E402


def main(argv=None) -> int:
    parser = trainer.build_parser()
    parser.prog = "scripts/train_midms.py"
    parser.add_argument("--checkpoint", default=None, help="a ComfyUI checkpoint whose VAE makes the latents")
    args, _ = parser.parse_known_args(argv)
    if args.checkpoint is None:
        return trainer.main(argv, arg_parser=parser)
    import os

    from benchmarks.warp_quality import load_checkpoint, vae_decoder, vae_encoder

    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        # under torchrun: this process's GPU before ComfyUI picks its device (it takes the current one)
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    _, vae = load_checkpoint(args.checkpoint, "train_midms", with_model=False)  # the VAE only, on every rank
    encode = vae_encoder(vae)
    with torch.no_grad():
        channels = int(encode(torch.zeros(1, 3, args.size, args.size)).shape[1])
    print(f"train_midms: latents from the VAE of {Path(args.checkpoint).name}: {channels} channels", file=sys.stderr)
    # the VGG losses (--vgg) see the warps decoded by the same VAE, with gradients to the latents
    return trainer.main(argv, encode=encode, latent_channels=channels, arg_parser=parser, decode=vae_decoder(vae))


if __name__ == "__main__":
    raise SystemExit(main())
