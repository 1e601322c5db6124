"""The training loop, on one process or many (torchrun): from a folder of photos to the files
of a run. The command is ``scripts/train_midms.py``:

    python scripts/train_midms.py --images DIR --out models/midms/NAME.safetensors [options]
    torchrun --nproc_per_node 8 scripts/train_midms.py --images DIR --out ... [options]

:func:`train` runs alone or under ``torchrun``: with WORLD_SIZE > 1 it joins a process group
(gloo on CPU, nccl on CUDA), wraps the step (:class:`midms_core.training.step.TrainingStep`) in
DistributedDataParallel (gradients averaged over processes: the same update as one process on
the global batch) and splits every epoch's shuffled samples with a DistributedSampler; rank 0
alone logs and writes the files of :mod:`midms_core.training.run_files` (the networks and the
resume state at every ``save_every`` steps and at the end, a log line per step, the plot at
the end). Everything the user gave is checked before the first step.

One step: a batch of B pairs per process (images (B, 3, size, size)) -> latents (B, c,
size / factor, size / factor) by the frozen encoder -> the loss terms -> one AdamW update.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from ..networks.model import CorrespondenceConfig, CorrespondenceNetworks, init_networks
from .data import DataConfig, TrainingPairs, read_image
from .run_files import (
    add_spectral_norm,
    append_log,
    load_resume,
    log_path,
    plot_losses,
    plot_path,
    read_log,
    resume_path,
    run_identity,
    save_folded,
    save_resume,
)
from .step import LossWeights, TrainingStep, noise_seeds, prepare_batch, stand_in_decode, stand_in_encode

DEFAULT_LR = 1e-4
WEIGHT_DECAY = 0.05  # the paper's AdamW weight decay
WHERE = "midms_core.training.engine"  # how the trainer's messages start

__all__ = ["DEFAULT_LR", "TrainConfig", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """The schedule: ``steps`` in all, the first ``warmup`` with the correspondence losses only;
    ``batch`` pairs per process and step; AdamW's ``lr``; networks files every ``save_every``
    steps (and at the end); data loader ``workers``; the networks' ``dtype``."""

    steps: int = 1000
    warmup: int = 500
    batch: int = 4           # per process
    lr: float = DEFAULT_LR
    seed: int = 0
    save_every: int = 0      # 0: only at the end
    workers: int = 0
    dtype: str = "float32"   # "float64" for exact comparisons in tests

    def __post_init__(self) -> None:
        for name in ("steps", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig: '{name}' must be an integer >= 1, got {value!r}")
        for name in ("warmup", "save_every", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig: '{name}' must be an integer >= 0, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig: 'lr' must be a positive number, got {self.lr!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"TrainConfig: 'dtype' must be 'float32' or 'float64', got {self.dtype!r}")


# ---------------------------------------------------------------------------- checks, before any work

def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _vgg_network(vgg: Optional[Path], decode: Optional[Callable[[Tensor], Tensor]], rank: int) -> Optional[nn.Module]:
    """The VGG-19 of the feature, perceptual and contextual losses, or None (said on rank 0)."""
    if vgg is not None:
        from .vgg import load_vgg19

        if decode is None:
            raise ValueError(f"{WHERE}: the VGG losses need a differentiable decoder for these latents (the "
                             "stand-in's, or the checkpoint VAE's through scripts/train_midms.py); train without --vgg")
        return load_vgg19(vgg, WHERE)
    if rank == 0:
        print(f"{WHERE}: no VGG-19 weights (--vgg): the feature, perceptual and contextual losses are off",
              file=sys.stderr)
    return None


def _check_encoder(encode: Callable[[Tensor], Tensor], data: DataConfig, networks: CorrespondenceConfig) -> None:
    """The encoder turns a (1, 3, size, size) image into the (1, latent_channels, size / factor,
    size / factor) latent the networks take."""
    with torch.no_grad():
        probe = encode(torch.zeros(1, 3, data.size, data.size))
    grid = (data.size // data.factor, data.size // data.factor)
    if probe.dim() != 4 or tuple(probe.shape[-2:]) != grid or probe.shape[1] != networks.latent_channels:
        raise ValueError(f"{WHERE}: the encoder turns a {data.size} px image into {tuple(probe.shape)}, but the networks "
                         f"take ({networks.latent_channels}, {grid[0]}, {grid[1]}) latents (latent_channels, size / factor)")


def _checked_pairs(images: Path, data: DataConfig, files: Optional[Sequence[Path]]) -> TrainingPairs:
    """The training pairs, every photo (and condition map) read once: unreadable files and
    mismatched maps fail here, before any step."""
    dataset = TrainingPairs(images, data, files=files)
    for i, path in enumerate(dataset.files):
        photo = read_image(path, WHERE)
        if dataset.condition_files is not None:
            cond = read_image(dataset.condition_files[i], WHERE)
            if cond.shape[-2:] != photo.shape[-2:]:
                raise ValueError(f"{WHERE}: condition map '{dataset.condition_files[i]}' is {tuple(cond.shape[-2:])} "
                                 f"but its photo '{path}' is {tuple(photo.shape[-2:])} (H, W); they must match")
    return dataset


def _checked_out(out: Path) -> Path:
    """``out`` as a Path ending in .safetensors, its folder made."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{WHERE}: --out must end in .safetensors (the Learned Matcher Loader lists those), got '{out}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _device(local: int) -> torch.device:
    """This process's GPU (set current before the process group, so NCCL binds it), else the CPU."""
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# ---------------------------------------------------------------------------- the run

def train(images: Path, out: Path, data: DataConfig = DataConfig(), networks: CorrespondenceConfig = CorrespondenceConfig(latent_channels=3, label_channels=3),
          schedule: TrainConfig = TrainConfig(), weights: LossWeights = LossWeights(), resume: bool = False,
          files: Optional[Sequence[Path]] = None, progress: bool = True,
          encode: Optional[Callable[[Tensor], Tensor]] = None, decode: Optional[Callable[[Tensor], Tensor]] = None,
          vgg: Optional[Path] = None) -> dict:
    """Run the training (see the module docstring); returns {"step", "last": the last logged
    record (rank 0), "networks": the trained (spectral-normed) networks of this process}.

    Everything the user gave is checked before any work: the folder and each image (readable),
    the condition folder, the resume file, the encoder's channels. ``files`` restricts training
    to those photos (a held-out split). ``encode``: images (B, 3, H, W) in [0, 1] -> raw latents
    (B, c, H/f, W/f), run without gradients (a frozen VAE); default the stand-in. ``decode``:
    latents -> images in [0, 1], differentiable, for the VGG losses (the stand-in's: bilinear
    upsampling). ``vgg``: a VGG-19 safetensors file (:mod:`midms_core.training.vgg`); without it the
    feature, perceptual and contextual losses are off (said once on rank 0)."""
    rank, world, local = _distributed()
    if encode is None:
        encode = functools.partial(stand_in_encode, factor=data.factor)
        decode = decode or functools.partial(stand_in_decode, factor=data.factor)
    vgg_net = _vgg_network(vgg, decode, rank)
    _check_encoder(encode, data, networks)
    dataset = _checked_pairs(images, data, files)
    out = _checked_out(out)
    identity = run_identity(data, schedule, world)
    state = load_resume(resume_path(out), networks, identity, WHERE) if resume else None
    device = _device(local)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        run = _start(out, data, networks, schedule, weights, state, encode, decode, vgg_net, device, world, local,
                     identity)
        return _train_loop(run, dataset, state, rank, progress)
    finally:
        if own_group:
            dist.destroy_process_group()


@dataclass
class _Run:
    """One process's training after every check: what its steps use and write."""

    out: Path
    networks: CorrespondenceConfig
    schedule: TrainConfig
    factor: int
    identity: str                     # run_identity(): what a resumed run must share
    encode: Callable[[Tensor], Tensor]
    device: torch.device
    dtype: torch.dtype
    world: int
    nets: CorrespondenceNetworks      # spectral-normed, training mode
    optimizer: torch.optim.Optimizer
    step_module: nn.Module            # TrainingStep(nets), in DDP on several processes
    start: int                        # the step it starts after (0, or the resumed step)


def _start(out: Path, data: DataConfig, networks: CorrespondenceConfig, schedule: TrainConfig, weights: LossWeights,
           state: Optional[dict], encode: Callable[[Tensor], Tensor], decode: Optional[Callable[[Tensor], Tensor]],
           vgg_net: Optional[nn.Module], device: torch.device, world: int, local: int, identity: str) -> _Run:
    """The networks (seeded, or the resumed state), AdamW and the step module of this process."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[schedule.dtype]
    nets = add_spectral_norm(init_networks(networks, seed=schedule.seed, dtype=dtype).train(), schedule.seed).to(device)
    optimizer = torch.optim.AdamW(nets.parameters(), lr=schedule.lr, weight_decay=WEIGHT_DECAY)
    start = 0
    if state is not None:
        nets.load_state_dict(state["networks"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the saved state carries the old run's --lr
            group["lr"] = schedule.lr
        start = int(state["step"])
    if vgg_net is not None:
        vgg_net = vgg_net.to(device=device, dtype=dtype)
    step_module: nn.Module = TrainingStep(nets, weights, vgg=vgg_net, decode=decode)
    if world > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[local] if device.type == "cuda" else None, find_unused_parameters=True)
    return _Run(out, networks, schedule, data.factor, identity, encode, device, dtype, world, nets, optimizer,
                step_module, start)


def _train_loop(run: _Run, dataset: TrainingPairs, state: Optional[dict], rank: int, progress: bool) -> dict:
    """The epochs from ``run.start`` to ``schedule.steps``, then the final files (rank 0)."""
    schedule, world = run.schedule, run.world
    sampler = torch.utils.data.distributed.DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=schedule.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=schedule.batch, sampler=sampler,
                                         num_workers=schedule.workers, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{WHERE}: {len(dataset)} photos give no batch of {schedule.batch} per process on {world} "
                         "processes; lower --batch or add photos")
    log = _RunLog(run, resumed=state is not None, progress=progress) if rank == 0 else None
    step, epoch = run.start, run.start // len(loader)
    while step < schedule.steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        step = _epoch(run, loader, epoch, step, log)
        epoch += 1
    if log is not None:
        log.close()
        _save(run, step)
        plot_losses(log.records, plot_path(run.out), warmup=schedule.warmup)
    if world > 1:
        dist.barrier()
    return {"step": step, "last": log.records[-1] if log is not None and log.records else None, "networks": run.nets}


def _epoch(run: _Run, loader, epoch: int, step: int, log: Optional["_RunLog"]) -> int:
    """One epoch's batches from ``step`` on (a resumed run skips what was done), until
    ``schedule.steps``; returns the step reached."""
    skip = step - epoch * len(loader)
    for i, samples in enumerate(loader):
        if i < skip:
            continue
        if step >= run.schedule.steps:
            break
        names, values = _one_step(run, samples, epoch, step)
        step += 1
        if log is not None:
            log.add(step, names, values)
            if run.schedule.save_every and step % run.schedule.save_every == 0:
                _save(run, step)
    return step


def _one_step(run: _Run, samples: dict, epoch: int, step: int) -> tuple[list[str], Tensor]:
    """One update on a batch of collated samples; returns the terms' names and their values
    (float64, (terms,)), averaged over the processes: the loss of the GLOBAL batch."""
    seeds = noise_seeds(run.schedule.seed, epoch, samples["index"])
    samples = {k: (v.to(run.dtype) if v.is_floating_point() else v) for k, v in samples.items()}
    batch = prepare_batch(samples, run.networks, run.factor, run.encode, run.device, seeds)
    terms = run.step_module(batch, step >= run.schedule.warmup)
    run.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    run.optimizer.step()
    values = torch.stack([v.detach().to(torch.float64) for v in terms.values()])
    if run.world > 1:
        dist.all_reduce(values)
        values /= run.world
    return list(terms), values


def _save(run: _Run, step: int) -> None:
    """The networks file and the resume state, at ``step``."""
    save_folded(run.out, run.nets)
    save_resume(resume_path(run.out), step, run.nets, run.optimizer, run.networks, run.identity)


class _RunLog:
    """Rank 0's record of the run: the JSONL log, its records (for the plot), and progress: a
    tqdm bar, else (no tqdm: pip install tqdm, or the pack's "train" extra) a line on stderr
    every 1/20 of the run."""

    def __init__(self, run: _Run, resumed: bool, progress: bool) -> None:
        self.path, self.schedule, self.world, self.start = log_path(run.out), run.schedule, run.world, run.start
        self.records: list[dict] = read_log(self.path, run.start) if resumed and self.path.is_file() else []
        self.progress, self.bar = progress, None
        if progress:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=self.schedule.steps, initial=run.start, desc="train", unit="step")
            except ImportError:
                self.bar = None
        self.t0 = time.perf_counter()

    def add(self, step: int, names: list[str], values: Tensor) -> None:
        schedule = self.schedule
        record = {"step": step, **dict(zip(names, values.tolist())),
                  "seconds": time.perf_counter() - self.t0, "samples": step * schedule.batch * self.world}
        self.records.append(record)
        append_log(self.path, record, first=step == 1 and self.start == 0)
        rate = (step - self.start) * schedule.batch * self.world / max(record["seconds"], 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", samples_per_s=f"{rate:.1f}")
            self.bar.update(1)
        elif self.progress and (step % max(1, schedule.steps // 20) == 0 or step == schedule.steps):
            print(f"{WHERE}: step {step}/{schedule.steps}, loss {record['loss']:.4f}, {rate:.1f} samples/s",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
