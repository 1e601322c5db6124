"""A training run for tests/test_training_engine.py, started alone or under torchrun (not a test itself).

    python tests/train_worker.py IMAGES OUT_DIR BATCH STEPS WARMUP DTYPE
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train_worker.py ...

Each process writes its final networks (folded) to OUT_DIR/rank<R>.safetensors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors.torch import save_file  # noqa: E402

from midms_core.networks.model import CorrespondenceConfig  # noqa: E402
from midms_core.training.data import DataConfig  # noqa: E402
from midms_core.training.engine import TrainConfig, train  # noqa: E402
from midms_core.training.run_files import folded_state  # noqa: E402

TINY = CorrespondenceConfig(latent_channels=3, label_channels=3, width=16, encoder_width=8, spade_hidden=16)


def run(images: str, out_dir: str, batch: int, steps: int, warmup: int, dtype: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = train(Path(images), out / "nets.safetensors", DataConfig(size=64, self_exemplar=0.5, seed=3), TINY,
                   TrainConfig(steps=steps, warmup=warmup, batch=batch, lr=1e-3, seed=3, dtype=dtype), progress=False)
    rank = int(os.environ.get("RANK", "0"))
    save_file({k: v.cpu().contiguous() for k, v in folded_state(result["networks"]).items()},
              str(out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    images, out_dir, batch, steps, warmup, dtype = sys.argv[1:7]
    run(images, out_dir, int(batch), int(steps), int(warmup), dtype)
