"""The files a training run writes, and the spectral-norm state behind its weights file.

For ``out`` = ``NAME.safetensors``, every file written through
:func:`midms_core.atomic_files.atomic_write` (a reader sees the old file or the new one):

* ``NAME.safetensors``: the networks in the format MIDMs Learned Matcher Loader reads
  (:func:`save_folded`). The convs the official code spectral-normalises are trained under
  torch's spectral_norm (:func:`add_spectral_norm`) and saved folded: their effective weight
  (out, in, k, k) in place of the parametrisation (:func:`folded_state`);
* ``NAME.safetensors.resume.pt`` (:func:`save_resume`, :func:`load_resume`): networks with
  their spectral-norm state, AdamW state, step, the networks' config and the run's identity
  (:func:`run_identity`): tensors, numbers and strings only, read back with
  ``torch.load(weights_only=True)``;
* ``NAME.jsonl`` (:func:`append_log`, :func:`read_log`): one JSON line of loss terms per step;
* ``NAME.png`` (:func:`plot_losses`): their plot.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..atomic_files import atomic_write
from ..networks.files import write_networks_file
from ..networks.model import CorrespondenceConfig, CorrespondenceNetworks
from .data import DataConfig

if TYPE_CHECKING:
    from .engine import TrainConfig

__all__ = ["add_spectral_norm", "append_log", "folded_state", "load_resume", "log_path", "plot_losses", "plot_path",
           "read_log", "resume_path", "run_identity", "save_folded", "save_resume", "spectral_convs"]


# ---------------------------------------------------------------------------- spectral norm

def spectral_convs(nets: CorrespondenceNetworks) -> list[nn.Conv2d]:
    """The convs the official code spectral-normalises (marked ``_midms_spectral`` by the model)."""
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
    with atomic_write(path) as tmp:
        write_networks_file(tmp, folded_state(nets), nets.config)


# ---------------------------------------------------------------------------- resume state

def resume_path(out: Path) -> Path:
    """``<out>.resume.pt`` beside the networks file."""
    return out.with_name(out.name + ".resume.pt")


def save_resume(path: Path, step: int, nets: CorrespondenceNetworks, optimizer, config: CorrespondenceConfig,
                run: str) -> None:
    """Tensors, numbers and strings only (readable with weights_only=True); atomic. ``run``: the
    options a resumed run must share (:func:`run_identity`)."""
    state = {"step": int(step), "config": config.to_json(), "run": run, "networks": nets.state_dict(),
             "optimizer": optimizer.state_dict()}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def run_identity(data: DataConfig, schedule: "TrainConfig", world: int) -> str:
    """What fixes the order of the samples and the numbers: a resumed run must match it."""
    return json.dumps({"batch": schedule.batch, "world": world, "seed": schedule.seed, "dtype": schedule.dtype,
                       "data": asdict(data)}, sort_keys=True)


def load_resume(path: Path, config: CorrespondenceConfig, run: str, where: str = "train") -> dict:
    """The state :func:`save_resume` wrote, read with ``weights_only=True``; ValueError when it
    is unreadable, not this trainer's, or of other networks or another ``run``."""
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


# ---------------------------------------------------------------------------- log and plot

def log_path(out: Path) -> Path:
    """``<out minus .safetensors>.jsonl``: one JSON line of losses per step."""
    return out.with_name(out.name[: -len(".safetensors")] + ".jsonl")


def plot_path(out: Path) -> Path:
    """``<out minus .safetensors>.png``: :func:`plot_losses` of the log."""
    return out.with_name(out.name[: -len(".safetensors")] + ".png")


def append_log(path: Path, record: dict, first: bool) -> None:
    """One line of the log. The ``first`` line of a run replaces any older log (atomically);
    the others are appended: an append costs one line, not the whole log, and a line torn by a
    crash is dropped by :func:`read_log` when the run resumes."""
    line = json.dumps(record) + "\n"
    if first:
        with atomic_write(path) as tmp:
            tmp.write_text(line)
    else:
        with open(path, "a") as f:
            f.write(line)


def read_log(path: Path, start: int) -> list[dict]:
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
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


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
        _save_png(image, path)
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
    _save_png(image, path)


def _save_png(image, path: Path) -> None:
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")  # the temporary name has no .png to tell Pillow
