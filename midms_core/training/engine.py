"""Train the correspondence networks on your own photos, on one process or many (torchrun).

    python -m midms_core.training.engine --images DIR --out models/midms/NAME.safetensors [options]
    torchrun --nproc_per_node 8 -m midms_core.training.engine --images DIR --out ... [options]

The same script runs alone or under ``torchrun``: with WORLD_SIZE > 1 it joins a process group
(gloo on CPU, nccl on CUDA), wraps the step in DistributedDataParallel (gradients averaged over
processes: the same update as one process on the global batch) and splits every epoch's
shuffled samples with a DistributedSampler; rank 0 alone logs and writes files.

One step (``TrainingStep``), for a batch of pairs from :mod:`midms_core.training.data`:
encodings F_X(x), F_Y(z), F_Y(y), head features, logits condition x exemplar and condition x
truth (:func:`midms_core.training.losses.correlation_logits`), then

    warm-up:  10 L_domain + L_cycle + L_latent + w_flow L_match
    after:    + the in-domain terms: the same cycle / latent / match losses on the iteration
              extractor's correlation F'(x0~, F_X(x)) x F_Y(y), x0~ = the truth latent blurred
              and noised (the stand-in x0_hat the benchmarks use), so F' -- which drives the
              re-matches inside the sampler -- learns too. (The paper trains F' through the
              unrolled DDIM steps with the U-Net; this stand-in needs no denoiser.)

Latents: the "stand-in" encoder (the image average-pooled by ``factor``, 3 channels) runs and is
tested anywhere; networks trained on it match stand-in latents (the benchmarks' setting). The
convs the official code spectral-normalises are trained under torch's spectral_norm and saved
folded (their effective weight), in the format MIDMs Learned Matcher Loader reads.

Files: ``--out`` (the networks, safetensors, written at every ``--save-every`` and at the end,
atomically), ``<out>.resume.pt`` (networks with their spectral-norm state, AdamW state, step:
tensors and numbers only, read back with ``torch.load(weights_only=True)``), ``<out>.jsonl``
(one line of losses per step) and ``<out>.png`` (their plot).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..networks.label_maps import canny_edge_map, label_map_on_grid
from ..networks.model import CorrespondenceConfig, CorrespondenceNetworks, init_networks
from .data import CONDITIONS, DataConfig, TrainingPairs, read_image
from .losses import (
    contextual_loss,
    correlation_logits,
    cycle_loss,
    domain_alignment_loss,
    feature_matching_loss,
    latent_reconstruction_loss,
    supervised_flow_loss,
    supervised_match_loss,
)

DEFAULT_LR = 1e-4
WEIGHT_DECAY = 0.05  # the paper's AdamW weight decay
TAU = 0.005          # the official correlation temperature, for every loss
X0_BLUR = 0.75       # stand-in x0_hat: blur (latent cells) and noise (share of the latent's std),
X0_NOISE = 0.2       # as benchmarks/warp_quality.py

__all__ = ["LossWeights", "TrainConfig", "TrainingStep", "evaluate", "main", "stand_in_encode", "train"]


def stand_in_encode(images: Tensor, factor: int = 8) -> Tensor:
    """The weight-free latent: (B, 3, H, W) in [0, 1] -> (B, 3, H/f, W/f), average-pooled."""
    return F.avg_pool2d(images, factor)


@dataclass(frozen=True)
class LossWeights:
    domain: float = 10.0   # official
    cycle: float = 1.0     # official
    latent: float = 1.0    # official (warm-up MSE of the truth latent warped by its own correlation)
    flow: float = 1.0      # beyond the paper: cross-entropy of the true cell on deformed self-exemplars
    in_domain: float = 1.0  # after warm-up: the F' terms (stand-in for the unrolled-steps loss)
    feature: float = 1.0     # official, with VGG weights: relu1_2..relu5_2 of the truth warped by its own match
    perceptual: float = 0.002  # official: relu4_2 of the warped exemplar against the truth
    contextual: float = 1.0  # official, after warm-up: relu5_2 x8, relu4_2 x4, pool2(relu3_2) x2, pool4(relu2_2) x1


@dataclass(frozen=True)
class TrainConfig:
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


def _gaussian_blur(latent: Tensor, sigma: float) -> Tensor:
    import kornia

    return kornia.filters.gaussian_blur2d(latent, (5, 5), (sigma, sigma), border_type="replicate")


class TrainingStep(nn.Module):
    """The networks and the loss of one step; ``forward(batch, full)`` returns {term: scalar}
    with "loss" the weighted total. Wrapped whole in DDP so every parameter's gradient is
    synchronised whichever encoder a term uses.

    batch: condition_map (B, L, h, w), exemplar_map (B, L, h, w), truth_latent z (B, c, h, w),
    exemplar_latent y (B, c, h, w), truth (B, 2, h, w), valid (B, h, w), x0 (B, c, h, w) the
    stand-in x0_hat of z.
    """

    def __init__(self, nets: CorrespondenceNetworks, weights: LossWeights = LossWeights(), tau: float = TAU,
                 vgg: Optional[nn.Module] = None, decode: Optional[Callable[[Tensor], Tensor]] = None,
                 clamp_negative: bool = False, match_tau: float = 0.05) -> None:
        super().__init__()
        self.nets = nets
        self.weights = weights
        self.tau = tau
        # The official code trains on cosines clamped at 0, as the warp uses them. Measured here:
        # a row whose cosines all fall <= 0 then gets no gradient at all, and at lr 1e-3 the
        # features collapsed that way within 100 steps (every warp uniform). Unclamped training
        # keeps every row learning; the warp clamps as before.
        self.clamp_negative = clamp_negative
        # the match cross-entropy at a softer temperature than the warp's: at 0.005 a random
        # init puts all of a row's mass on one wrong cell, and the quickest way down is to make
        # every row uniform (collapsed features), measured within 100 steps
        self.match_scale = tau / match_tau
        # frozen, and not a submodule: DDP must not treat it as trained state
        self._vgg = [vgg] if vgg is not None else []
        self.decode = decode

    def forward(self, batch: dict, full: bool) -> dict:
        nets, w = self.nets, self.weights
        cond_map, ex_map = batch["condition_map"], batch["exemplar_map"]
        z, y = batch["truth_latent"], batch["exemplar_latent"]
        cond_enc = nets.encode_condition(cond_map)
        truth_enc = nets.encode_exemplar(z)
        ex_enc = nets.encode_exemplar(y)
        s_x = nets.condition_head(cond_enc, cond_map)
        s_z = nets.exemplar_head(truth_enc, cond_map)  # official: the truth is aligned with the condition map
        s_y = nets.exemplar_head(ex_enc, ex_map)
        logits_y = correlation_logits(s_x, s_y, self.tau, self.clamp_negative)
        logits_z = correlation_logits(s_x, s_z, self.tau, self.clamp_negative)
        terms = {
            "domain": domain_alignment_loss(cond_enc, truth_enc, ex_enc),
            "cycle": cycle_loss(logits_y, y),
            "latent": latent_reconstruction_loss(logits_z, z),
            "match": supervised_match_loss(logits_y * self.match_scale, batch["truth"], batch["valid"]),
        }
        with torch.no_grad():  # logged, not trained: the soft-argmax error in cells
            terms["flow"] = supervised_flow_loss(logits_y, batch["truth"], batch["valid"])
        total = w.domain * terms["domain"] + w.cycle * terms["cycle"] + w.latent * terms["latent"] + w.flow * terms["match"]
        if full and w.in_domain > 0:
            x0_enc = nets.encode_iteration(batch["x0"], cond_enc)
            logits_in = correlation_logits(x0_enc, ex_enc, self.tau, self.clamp_negative)
            logits_in_z = correlation_logits(x0_enc, truth_enc, self.tau, self.clamp_negative)
            terms["in_cycle"] = cycle_loss(logits_in, y)
            terms["in_latent"] = latent_reconstruction_loss(logits_in_z, z)
            terms["in_match"] = supervised_match_loss(logits_in * self.match_scale, batch["truth"], batch["valid"])
            with torch.no_grad():
                terms["in_flow"] = supervised_flow_loss(logits_in, batch["truth"], batch["valid"])
            total = total + w.in_domain * (w.cycle * terms["in_cycle"] + w.latent * terms["in_latent"]
                                           + w.flow * terms["in_match"])
        if self._vgg and self.decode is not None:
            total = total + self._image_terms(terms, logits_y, logits_z, batch, full)
        terms["loss"] = total
        return terms

    def _image_terms(self, terms: dict, logits_y: Tensor, logits_z: Tensor, batch: dict, full: bool) -> Tensor:
        """The official VGG losses on decoded warps (adds them to ``terms``; returns their sum)."""
        vgg, w = self._vgg[0], self.weights
        z, y = batch["truth_latent"], batch["exemplar_latent"]
        grid = z.shape[-2:]

        def warped(logits: Tensor, latent: Tensor) -> Tensor:
            flat = torch.softmax(logits, dim=-1) @ latent.flatten(2).transpose(1, 2)
            return flat.transpose(1, 2).reshape(latent.shape[0], latent.shape[1], *grid)

        truth_image, exemplar_image = batch["truth_image"], batch["exemplar_image"]
        self_warp = vgg(self.decode(warped(logits_z, z)).clamp(0, 1))
        exemplar_warp = vgg(self.decode(warped(logits_y, y)).clamp(0, 1))
        with torch.no_grad():
            truth_feats = vgg(truth_image)
        terms["feature"] = feature_matching_loss(self_warp, truth_feats)
        terms["perceptual"] = F.l1_loss(exemplar_warp[3], truth_feats[3])
        total = w.feature * terms["feature"] + w.perceptual * terms["perceptual"]
        if full:
            with torch.no_grad():
                ex_feats = vgg(exemplar_image)
            terms["contextual"] = (8 * contextual_loss(exemplar_warp[4], ex_feats[4])
                                   + 4 * contextual_loss(exemplar_warp[3], ex_feats[3])
                                   + 2 * contextual_loss(F.avg_pool2d(exemplar_warp[2], 2), F.avg_pool2d(ex_feats[2], 2))
                                   + contextual_loss(F.avg_pool2d(exemplar_warp[1], 4), F.avg_pool2d(ex_feats[1], 4)))
            total = total + w.contextual * terms["contextual"]
        return total


def prepare_batch(samples: dict, config: CorrespondenceConfig, factor: int, encode: Callable[[Tensor], Tensor],
                  device: torch.device, x0_seeds: Tensor) -> dict:
    """Collated samples of :class:`TrainingPairs` -> the tensors :class:`TrainingStep` reads.

    Label maps as the LearnedMatcher makes them (the condition image itself, the exemplar's
    Canny edges, both through :func:`label_map_on_grid`); latents by ``encode``; x0~ per sample
    from its own seed (so a sample's noise does not depend on the process that reads it)."""
    cond_img = samples["condition_image"].to(device)
    ex_img = samples["exemplar_image"].to(device)
    truth_img = samples["truth_image"].to(device)
    grid = (truth_img.shape[-2] // factor, truth_img.shape[-1] // factor)
    with torch.no_grad():  # the encoder is frozen; clone: a host VAE may return inference-mode tensors
        z = encode(truth_img).to(device=device, dtype=truth_img.dtype).clone()
        y = encode(ex_img).to(device=device, dtype=truth_img.dtype).clone()
    x0 = _gaussian_blur(z, X0_BLUR)
    noise = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(int(s)), dtype=z.dtype)
                         for s in x0_seeds])
    x0 = x0 + X0_NOISE * z.std(dim=(1, 2, 3), keepdim=True) * noise.to(device)
    return {
        "condition_map": label_map_on_grid(cond_img, config.label_channels, grid, "train", "condition"),
        "exemplar_map": label_map_on_grid(canny_edge_map(ex_img), config.label_channels, grid, "train", "exemplar map"),
        "truth_latent": z, "exemplar_latent": y, "x0": x0, "truth_image": truth_img, "exemplar_image": ex_img,
        "truth": samples["truth"].to(device), "valid": samples["valid"].to(device),
    }


@torch.no_grad()
def evaluate(nets: CorrespondenceNetworks, dataset: TrainingPairs, indices: Sequence[int], full: bool = False,
             epoch: int = 0, encode: Optional[Callable[[Tensor], Tensor]] = None) -> dict:
    """The loss terms of ``nets`` on fixed samples (``epoch``'s draws of ``indices``), in eval
    mode: {term: float}. Comparable across networks, unlike the per-step training log."""
    dataset.set_epoch(epoch)
    items = [dataset[i] for i in indices]
    samples = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    param = next(nets.parameters())
    samples = {k: (v.to(param.dtype) if v.is_floating_point() else v) for k, v in samples.items()}
    factor = dataset.config.factor
    encode = encode if encode is not None else (lambda im: stand_in_encode(im, factor))
    batch = prepare_batch(samples, nets.config, factor, encode, param.device,
                          _x0_seeds(dataset.config.seed, epoch, samples["index"]))
    training = nets.training
    nets.eval()
    try:
        terms = TrainingStep(nets)(batch, full)
    finally:
        nets.train(training)
    return {k: float(v) for k, v in terms.items()}


# ---------------------------------------------------------------------------- spectral norm

def spectral_convs(nets: CorrespondenceNetworks) -> list[nn.Conv2d]:
    return [m for m in nets.modules() if getattr(m, "_midms_spectral", False)]


def add_spectral_norm(nets: CorrespondenceNetworks, seed: int = 0) -> CorrespondenceNetworks:
    """Train the convs the official code spectral-normalises under torch's spectral_norm. Its
    power-iteration vectors start from ``seed`` (torch draws them from the global generator,
    which would make every process and run start elsewhere); the global generator is left as
    it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for conv in spectral_convs(nets):
            torch.nn.utils.parametrizations.spectral_norm(conv)
    return nets


def folded_state(nets: CorrespondenceNetworks) -> dict[str, Tensor]:
    """The networks' state with every spectral-normed weight replaced by its effective weight
    (what the forward pass used): the plain-conv format of :func:`save_networks`."""
    out: dict[str, Tensor] = {}
    parametrised = {name for name, m in nets.named_modules() if getattr(m, "_midms_spectral", False)}
    training = nets.training
    nets.eval()  # in training mode reading a spectral-normed weight runs (and stores) a power iteration
    try:
        _fold_into(out, nets, parametrised)
    finally:
        nets.train(training)
    return out


def _fold_into(out: dict, nets: CorrespondenceNetworks, parametrised: set) -> None:
    with torch.no_grad():
        for key, value in nets.state_dict().items():
            if ".parametrizations." not in key:
                out[key] = value.detach().clone()
        for name, m in nets.named_modules():
            if name in parametrised:
                out[f"{name}.weight"] = m.weight.detach().clone()


def save_folded(path: Path, nets: CorrespondenceNetworks) -> None:
    """Atomically write the networks (folded) where the Learned Matcher Loader reads them."""
    from safetensors.torch import save_file

    from ..networks.files import FILE_FORMAT, META_CONFIG

    tmp = path.with_name(path.name + ".partial")
    tensors = {k: v.to("cpu").contiguous() for k, v in folded_state(nets).items()}
    save_file(tensors, str(tmp), metadata={"format": FILE_FORMAT, META_CONFIG: nets.config.to_json()})
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- resume state

def resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume.pt")


def save_resume(path: Path, step: int, nets: CorrespondenceNetworks, optimizer, config: CorrespondenceConfig,
                run: str) -> None:
    """Tensors, numbers and strings only (readable with weights_only=True); atomic. ``run``: the
    options a resumed run must share (:func:`_run_identity`)."""
    state = {"step": int(step), "config": config.to_json(), "run": run, "networks": nets.state_dict(),
             "optimizer": optimizer.state_dict()}
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _run_identity(data: DataConfig, schedule: "TrainConfig", world: int) -> str:
    """What fixes the order of the samples and the numbers: a resumed run must match it."""
    return json.dumps({"batch": schedule.batch, "world": world, "seed": schedule.seed, "dtype": schedule.dtype,
                       "data": asdict(data)}, sort_keys=True)


def load_resume(path: Path, config: CorrespondenceConfig, run: str, where: str = "train") -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file is the same user error)
        raise ValueError(f"{where}: cannot read the resume file '{path}' ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not {"step", "config", "networks", "optimizer"} <= set(state):
        raise ValueError(f"{where}: '{path}' is not a resume file of this trainer")
    if state["config"] != config.to_json():
        raise ValueError(f"{where}: the resume file '{path}' is for networks {state['config']}, not {config.to_json()}; "
                         "use the same network options or another --out")
    if state.get("run") != run:
        raise ValueError(f"{where}: the resume file '{path}' was written by a run with other data or batch options "
                         f"({state.get('run')}); resuming needs the same ({run}), or another --out")
    return state


def _read_log(path: Path, start: int) -> list[dict]:
    """The log's records up to ``start`` (a crash may leave a half line or steps past the saved
    state), the file rewritten to hold exactly those."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= start:
            records.append(record)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
    return records


# ---------------------------------------------------------------------------- logging

def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_losses(records: Sequence[dict], path: Path,
                keys: Sequence[str] = ("loss", "domain", "cycle", "latent", "match", "flow"),
                warmup: Optional[int] = None) -> None:
    """A PNG (Pillow) of the logged terms against the step: each a moving average over 1/40 of
    the run (single steps are noisy: a batch holds a varying number of self-exemplars), scaled
    to its own range and labelled with its first and last smoothed value; a grey line marks the
    end of the warm-up."""
    from PIL import Image, ImageDraw

    width, height, margin, top = 960, 460, 50, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    colours = [(0, 0, 0), (214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
    steps = [r["step"] for r in records]
    if not steps:
        image.save(path)
        return
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    x_of = lambda s: margin + (s - s0) / (s1 - s0) * (width - 2 * margin)  # noqa: E731
    draw.rectangle([margin, top, width - margin, height - margin], outline="gray")
    if warmup is not None and s0 < warmup < s1:
        draw.line([(x_of(warmup), top), (x_of(warmup), height - margin)], fill=(170, 170, 170), width=1)
        draw.text((x_of(warmup) + 4, height - margin - 14), "end of warm-up", fill=(120, 120, 120))
    window = max(1, len(records) // 40)
    shown = [k for k in keys if any(k in r for r in records)]
    for i, key in enumerate(shown):
        pts = [(r["step"], r[key]) for r in records if key in r and math.isfinite(r[key])]
        if not pts:
            continue
        smooth = _moving_average([v for _, v in pts], window)
        lo, hi = min(smooth), max(smooth)
        hi = hi if hi > lo else lo + 1e-12
        xy = [(x_of(s), height - margin - (v - lo) / (hi - lo) * (height - margin - top)) for (s, _), v in zip(pts, smooth)]
        colour = colours[i % len(colours)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        draw.text((margin + 150 * (i % 6), 12 + 18 * (i // 6)), f"{key}: {smooth[0]:.3g} -> {smooth[-1]:.3g}", fill=colour)
    draw.text((margin, 44), f"moving average over {window} steps; each curve scaled to its own range", fill=(90, 90, 90))
    draw.text((margin, height - margin + 10), f"step {s0}", fill="black")
    draw.text((width - margin - 80, height - margin + 10), f"step {s1}", fill="black")
    image.save(path)


# ---------------------------------------------------------------------------- the loop

def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


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
    where = "midms_core.training.engine"
    if encode is None:
        encode = lambda images: stand_in_encode(images, data.factor)  # noqa: E731
        decode = decode or (lambda latents: F.interpolate(latents, scale_factor=data.factor, mode="bilinear",
                                                          align_corners=False))
    vgg_net = None
    if vgg is not None:
        from .vgg import load_vgg19

        if decode is None:
            raise ValueError(f"{where}: the VGG losses need a differentiable decoder for these latents (the "
                             "stand-in's, or the checkpoint VAE's through scripts/train_midms.py); train without --vgg")
        vgg_net = load_vgg19(vgg, where)
    elif rank == 0:
        print(f"{where}: no VGG-19 weights (--vgg): the feature, perceptual and contextual losses are off",
              file=sys.stderr)
    with torch.no_grad():
        probe = encode(torch.zeros(1, 3, data.size, data.size))
    grid = (data.size // data.factor, data.size // data.factor)
    if probe.dim() != 4 or tuple(probe.shape[-2:]) != grid or probe.shape[1] != networks.latent_channels:
        raise ValueError(f"{where}: the encoder turns a {data.size} px image into {tuple(probe.shape)}, but the networks "
                         f"take ({networks.latent_channels}, {grid[0]}, {grid[1]}) latents (latent_channels, size / factor)")
    dataset = TrainingPairs(images, data, files=files)
    for i, path in enumerate(dataset.files):  # unreadable files and mismatched maps fail here, before any step
        photo = read_image(path, where)
        if dataset.condition_files is not None:
            cond = read_image(dataset.condition_files[i], where)
            if cond.shape[-2:] != photo.shape[-2:]:
                raise ValueError(f"{where}: condition map '{dataset.condition_files[i]}' is {tuple(cond.shape[-2:])} "
                                 f"but its photo '{path}' is {tuple(photo.shape[-2:])} (H, W); they must match")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{where}: --out must end in .safetensors (the Learned Matcher Loader lists those), got '{out}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    run = _run_identity(data, schedule, world)
    state = load_resume(resume_path(out), networks, run, where) if resume else None

    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group, so NCCL binds this process's GPU
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _train_loop(dataset, out, data, networks, schedule, weights, state, encode, decode, vgg_net, device,
                           rank, world, local, run, progress, where)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train_loop(dataset, out, data, networks, schedule, weights, state, encode, decode, vgg_net, device, rank, world,
                local, run, progress, where) -> dict:
    """:func:`train` after every check, inside its process group."""
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

    sampler = torch.utils.data.distributed.DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=schedule.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=schedule.batch, sampler=sampler,
                                         num_workers=schedule.workers, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"{where}: {len(dataset)} photos give no batch of {schedule.batch} per process on {world} "
                         "processes; lower --batch or add photos")
    log_path = out.with_name(out.name[: -len(".safetensors")] + ".jsonl")
    records: list[dict] = []
    if rank == 0 and state is not None and log_path.is_file():
        records = _read_log(log_path, start)
    bar = None
    if rank == 0 and progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=schedule.steps, initial=start, desc="train", unit="step")
        except ImportError:  # plain lines instead (pip install tqdm, or the pack's "train" extra)
            bar = None
    step, epoch = start, start // len(loader)
    batches_per_epoch = len(loader)
    t0 = time.perf_counter()
    while step < schedule.steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        skip = step - epoch * batches_per_epoch  # resuming mid-epoch: skip what was done
        for i, samples in enumerate(loader):
            if i < skip:
                continue
            if step >= schedule.steps:
                break
            seeds = _x0_seeds(schedule.seed, epoch, samples["index"])
            samples = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in samples.items()}
            batch = prepare_batch(samples, networks, data.factor, encode, device, seeds)
            terms = step_module(batch, step >= schedule.warmup)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            step += 1
            values = torch.stack([v.detach().to(torch.float64) for v in terms.values()])
            if world > 1:  # the log shows the loss of the GLOBAL batch: the mean over the processes
                dist.all_reduce(values)
                values /= world
            if rank == 0:
                record = {"step": step, **dict(zip(terms, values.tolist())),
                          "seconds": time.perf_counter() - t0, "samples": step * schedule.batch * world}
                records.append(record)
                with open(log_path, "a" if (step > 1 or start > 0) else "w") as f:
                    f.write(json.dumps(record) + "\n")
                rate = (step - start) * schedule.batch * world / max(record["seconds"], 1e-9)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", samples_per_s=f"{rate:.1f}")
                    bar.update(1)
                elif progress and (step % max(1, schedule.steps // 20) == 0 or step == schedule.steps):
                    print(f"{where}: step {step}/{schedule.steps}, loss {record['loss']:.4f}, {rate:.1f} samples/s",
                          file=sys.stderr, flush=True)
                if schedule.save_every and step % schedule.save_every == 0:
                    save_folded(out, nets)
                    save_resume(resume_path(out), step, nets, optimizer, networks, run)
        epoch += 1
    if bar is not None:
        bar.close()
    if rank == 0:
        save_folded(out, nets)
        save_resume(resume_path(out), step, nets, optimizer, networks, run)
        plot_losses(records, out.with_name(out.name[: -len(".safetensors")] + ".png"), warmup=schedule.warmup)
    if world > 1:
        dist.barrier()
    return {"step": step, "last": records[-1] if records else None, "networks": nets}


def _x0_seeds(seed: int, epoch: int, indices: Tensor) -> Tensor:
    return torch.tensor([(seed * 7919 + epoch * 104_729 + int(i)) % (2**62) for i in indices])


# ---------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m midms_core.training.engine", description=__doc__.splitlines()[0])
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
    return p


def main(argv: Optional[Sequence[str]] = None, encode: Optional[Callable[[Tensor], Tensor]] = None,
         latent_channels: int = 3, arg_parser: Optional[argparse.ArgumentParser] = None,
         decode: Optional[Callable[[Tensor], Tensor]] = None) -> int:
    """The command line; ``encode`` / ``latent_channels`` / ``decode``: another encoder (and its
    differentiable decoder, for the VGG losses) than the stand-in (``scripts/train_midms.py
    --checkpoint`` passes a checkpoint's VAE)."""
    args = (arg_parser or build_parser()).parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
