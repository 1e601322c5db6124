"""Train the correspondence networks on your own photos, on one process or many (torchrun).

    python scripts/train_midms.py --images DIR --out models/midms/NAME.safetensors [options]
    torchrun --nproc_per_node 8 scripts/train_midms.py --images DIR --out ... [options]
    .venv-comfy/bin/python scripts/train_midms.py --checkpoint sd15.safetensors \\
        --images photos/ --out ComfyUI/models/midms/mine.safetensors [options]

Without ``--checkpoint`` the latents are the weight-free stand-in (each photo average-pooled by
8, 3 channels: :func:`midms_core.training.step.stand_in_encode`), as the benchmarks use; this
runs anywhere with the dev environment.

With ``--checkpoint`` the networks train on the latents of YOUR checkpoint's VAE. The networks
work on latents, so they belong to one VAE: a file trained here matches the checkpoint's
latents (4 channels for SD1.x/SDXL, 16 for SD3/Flux) and drives MIDMs Learned Matcher Loader
with that checkpoint. ComfyUI loads the VAE (:mod:`harness.vae_files`: COMFYUI_PATH or the
.comfyui/env.json of scripts/get_comfyui.sh; run with that environment's python).

The run itself (the step, DDP under torchrun, the files it writes) is
:func:`midms_core.training.engine.train`; see docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from midms_core.networks.model import CorrespondenceConfig  # noqa: E402
from midms_core.training.data import CONDITIONS, DataConfig  # noqa: E402
from midms_core.training.engine import DEFAULT_LR, TrainConfig, train  # noqa: E402
from midms_core.training.step import LossWeights  # noqa: E402

DESCRIPTION = "Train the correspondence networks on your own photos, on one process or many (torchrun)."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/train_midms.py", description=DESCRIPTION)
    p.add_argument("--images", required=True, type=Path, help="folder of photos (recursive)")
    p.add_argument("--out", required=True, type=Path, help="networks file, e.g. ComfyUI/models/midms/mine.safetensors")
    p.add_argument("--condition", choices=CONDITIONS, default="canny",
                   help="canny: edges made on the fly; labels: a label map made on the fly; mixed: either per "
                        "sample; folder: your own maps")
    p.add_argument("--condition-dir", type=str, default=None, help="with --condition folder: the parallel folder of maps")
    p.add_argument("--size", type=int, default=256, help="training crop (px)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup, help="steps of correspondence losses only")
    p.add_argument("--batch", type=int, default=TrainConfig.batch, help="pairs per process and step")
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--self-exemplar", type=float, default=0.3, help="share of deformed self-exemplars (official 0.3)")
    p.add_argument("--flow-weight", type=float, default=LossWeights.flow, help="supervised flow loss weight (0: off)")
    p.add_argument("--vgg", type=Path, default=None,
                   help="VGG-19 weights (.safetensors, CoCosNet's vgg19_conv or torchvision's layout) for the "
                        "feature, perceptual and contextual losses; without it they are off")
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--resume", action="store_true", help="continue from <out>.resume.pt")
    p.add_argument("--width", type=int, default=256, help="feature channels (official 256)")
    p.add_argument("--encoder-width", type=int, default=64, help="first encoder conv width (official 64)")
    p.add_argument("--checkpoint", default=None, help="a ComfyUI checkpoint whose VAE makes the latents")
    return p


def run(args: argparse.Namespace, encode: Optional[Callable[[Tensor], Tensor]] = None, latent_channels: int = 3,
        decode: Optional[Callable[[Tensor], Tensor]] = None) -> int:
    """Train with the parsed options; ``encode`` / ``latent_channels`` / ``decode``: another
    encoder (and its differentiable decoder, for the VGG losses) than the stand-in. A user
    error is one line on stderr and exit status 2; rank 0 prints the last record as JSON."""
    try:
        data = DataConfig(size=args.size, condition=args.condition, condition_dir=args.condition_dir,
                          self_exemplar=args.self_exemplar, seed=args.seed)
        nets = CorrespondenceConfig(latent_channels=latent_channels, label_channels=3, width=args.width,
                                    encoder_width=args.encoder_width, spade_hidden=min(128, 2 * args.encoder_width))
        schedule = TrainConfig(steps=args.steps, warmup=args.warmup, batch=args.batch, lr=args.lr, seed=args.seed,
                               save_every=args.save_every, workers=args.workers)
        result = train(args.images, args.out, data, nets, schedule, LossWeights(flow=args.flow_weight), args.resume,
                       encode=encode, decode=decode, vgg=args.vgg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"step": result["step"], "out": str(args.out), **(result["last"] or {})}))
    return 0


def run_on_checkpoint(args: argparse.Namespace) -> int:
    """:func:`run` on the latents of ``--checkpoint``'s VAE (loaded by ComfyUI, on every rank)."""
    from harness.vae_files import load_checkpoint, vae_decoder, vae_encoder

    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        # under torchrun: this process's GPU before ComfyUI picks its device (it takes the current one)
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    _, vae = load_checkpoint(args.checkpoint, "train_midms", with_model=False)  # the VAE only
    encode = vae_encoder(vae)
    with torch.no_grad():
        channels = int(encode(torch.zeros(1, 3, args.size, args.size)).shape[1])
    print(f"train_midms: latents from the VAE of {Path(args.checkpoint).name}: {channels} channels", file=sys.stderr)
    # the VGG losses (--vgg) see the warps decoded by the same VAE, with gradients to the latents
    return run(args, encode=encode, latent_channels=channels, decode=vae_decoder(vae))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args) if args.checkpoint is None else run_on_checkpoint(args)


if __name__ == "__main__":
    raise SystemExit(main())
