"""Warp quality on real photos with a known deformation: ``python -m benchmarks.warp_quality``.

For each case (a skimage photo, a seeded thin-plate-spline deformation, a condition kind) the
condition is made from the DEFORMED photo (kornia Canny edges, or a segmentation-like colour
quantisation), the exemplar is the ORIGINAL photo, and each matcher's soft-argmax warp is scored
against the known deformation:

* PCK@1/2/4: fraction of truly matchable latent positions whose forward flow lies within 1, 2,
  4 latent cells of the truth;
* PSNR (dB) of the exemplar photo warped at PIXEL level by the latent-grid flow (bilinearly
  upsampled, ``harness.metrics.latent_flow_to_pixels``) against the deformed photo, over
  the pixels with real content (source inside the photo) -- "all" -- and over those of them that
  the cycle-consistency mask calls confident -- "conf". The pixel warp is what a user sees; a
  latent warp would blur both sides by 8 and hide localisation errors below a cell;
* the confidence mask (forward-backward check, ``--threshold`` latent cells, hard with the
  official 2x2 smoothing) against the truly matchable positions (latent cells whose every pixel
  has its source inside the photo): coverage, precision, recall;
* the same after one in-domain re-match ("re-match" rows): x0_hat is stood in by the deformed
  photo's latent, blurred (0.75 cells) and noised (0.2 of its std), matched through
  ``MatchFeatures.x0_features`` against ``exemplar_in_domain`` -- the paper's central claim is
  that this in-domain match beats the cross-domain first match.

Matchers: ``naive`` (channel-centred cosine of the raw latents themselves), ``kornia_edges``
(:class:`EdgeDescriptorMatcher`), ``learned (random init)`` (:class:`LearnedMatcher` with seeded
random weights: the floor an untrained network gives), and with ``--checkpoint PATH`` the
checkpoint's own U-Net features (DIFT;
``host_adapters.diffusion_matcher.HostDiffusionMatcher``). Reference rows: ``identity`` (no
matching) and ``true flow`` (the ground truth on the latent grid: the PSNR ceiling of any
latent-grid warp).

Latents: without a checkpoint each side's "latent" is its image average-pooled by 8 (3 channels),
the grid of an f8 VAE. With ``--checkpoint`` (needs a ComfyUI: the ``.comfyui/env.json`` written
by ``scripts/get_comfyui.sh`` or ``COMFYUI_PATH``; run with that environment's python) the
checkpoint's VAE encodes every image and every matcher uses those latents.

    python -m benchmarks.warp_quality                  # full run -> benchmarks/warp_quality.md
    python -m benchmarks.warp_quality --quick          # 4 cases, prints only
    .venv-comfy/bin/python -m benchmarks.warp_quality --checkpoint sd15.safetensors --markdown out.md
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.tables import Table, machine, publish
from harness.host import PACK_NAME
from harness.metrics import degrade, latent_flow_to_pixels, mask_precision_recall, masked_psnr, pck
from harness.photos import load_photo
from harness.vae_files import load_checkpoint, vae_encoder
from midms_core.confidence import ConfidenceSettings, warp_with_confidence
from midms_core.correspondence import coordinate_grid
from midms_core.matchers.base import Matcher, MatchFeatures, MatchSide
from midms_core.matchers.edge import EdgeDescriptorMatcher
from midms_core.matchers.learned import LearnedMatcher
from midms_core.networks.model import CorrespondenceConfig, init_networks
from midms_core.training.conditions import canny_condition, quantised_condition
from midms_core.training.step import stand_in_encode  # (B, 3, H, W) -> (B, 3, H/8, W/8), the image average-pooled by 8
from midms_core.training.synthetic import deform, latent_ground_truth, sample_pixels, tps_displacement

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = ROOT / "benchmarks" / "warp_quality.md"

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
SEEDS = (0, 1, 2)
QUICK_PHOTOS = ("astronaut", "coffee")
QUICK_SEEDS = (1,)
CONDITIONS = ("canny", "quantised")
PCK_RADII = (1, 2, 4)
X0_BLUR = 0.75  # latent cells
X0_NOISE_FRACTION = 0.2  # of the clean latent's std

Encode = Callable[[Tensor], Tensor]


@dataclass
class BenchConfig:
    photos: Sequence[str] = PHOTOS
    seeds: Sequence[int] = SEEDS
    conditions: Sequence[str] = CONDITIONS
    size: int = 256
    shift_px: float = 20.0  # mean |d| of the deformation
    threshold: float = 1.5  # cycle check, latent cells (the demo's; see docs/demo.md)
    tps_grid: int = 3
    cases: Optional[int] = None  # at most this many (photo, seed) deformations

    def deformations(self) -> list[tuple[str, int]]:
        pairs = [(p, s) for s in self.seeds for p in self.photos]
        return pairs[: self.cases] if self.cases else pairs


# ------------------------------------------------------------------------------- matchers

class NaiveLatentMatcher(Matcher):
    """The raw latents as features: what matching scores with no feature extraction at all."""

    name = "naive"

    def bind(self, condition: MatchSide, exemplar: MatchSide) -> MatchFeatures:
        return MatchFeatures(condition=condition.latent, exemplar=exemplar.latent,
                             exemplar_in_domain=exemplar.latent, x0_features=lambda x0: x0)


def default_matchers(latent_channels: int) -> dict[str, Matcher]:
    nets = init_networks(CorrespondenceConfig(latent_channels=latent_channels, label_channels=3), seed=0)
    return {
        "naive": NaiveLatentMatcher(),
        "kornia_edges": EdgeDescriptorMatcher(),
        "learned (random init)": LearnedMatcher(nets),
    }


def trained_matchers(paths: Sequence[str]) -> dict[str, Matcher]:
    """A row per trained networks file (``scripts/train_midms.py``) and one for the same
    architecture untrained (seed 0): what training bought."""
    from midms_core.networks.files import load_networks

    out: dict[str, Matcher] = {}
    for path in paths:
        nets = load_networks(path)
        stem = os.path.basename(path)[: -len(".safetensors")] if path.endswith(".safetensors") else os.path.basename(path)
        out[f"learned: {stem}"] = LearnedMatcher(nets)
        out[f"learned: {stem}, untrained"] = LearnedMatcher(init_networks(nets.config, seed=0))
    return out


def make_condition(image: Tensor, kind: str) -> Tensor:
    """The condition of a photo: "canny" edges or a "quantised" segmentation-like label map."""
    if kind == "canny":
        return canny_condition(image)
    if kind == "quantised":
        return quantised_condition(image)
    raise ValueError(f"make_condition: 'kind' must be one of {list(CONDITIONS)}, got {kind!r}")


# ------------------------------------------------------------------------------- one case

def score(flow: Tensor, mask: Optional[Tensor], truth: Tensor, valid: Tensor, photo: Tensor, deformed: Tensor,
          inside: Tensor, factor: int) -> dict[str, float]:
    """Every metric of one latent-grid flow (1, 2, h, w) and its confidence mask (1, 1, h, w)
    bool or None (no mask: mask columns are NaN)."""
    size = tuple(photo.shape[-2:])
    warped = sample_pixels(photo, latent_flow_to_pixels(flow, size, factor))
    real = inside > 0.5
    row = {f"pck@{k}": pck(flow, truth, valid, k) for k in PCK_RADII}
    row["psnr_all"] = masked_psnr(warped, deformed, real)
    if mask is None:
        row.update(psnr_conf=math.nan, coverage=math.nan, precision=math.nan, recall=math.nan)
    else:
        confident_px = F.interpolate(mask.float(), size=size, mode="nearest") > 0.5
        row["psnr_conf"] = masked_psnr(warped, deformed, confident_px & real)
        row["coverage"] = float(mask.float().mean())
        row["precision"], row["recall"] = mask_precision_recall(mask[:, 0], valid)
    return row


def run_case(photo_name: str, seed: int, condition_kind: str, config: BenchConfig, matchers: dict[str, Matcher],
             encode: Encode) -> list[dict]:
    """All rows of one case: reference rows, then each matcher's first match and re-match."""
    photo = load_photo(photo_name, config.size)
    displacement = tps_displacement(config.size, seed, config.shift_px, grid=config.tps_grid)
    deformed, inside = deform(photo, displacement)
    condition = make_condition(deformed, condition_kind)

    cond_latent, exem_latent, deformed_latent = encode(condition), encode(photo), encode(deformed)
    factor = config.size // exem_latent.shape[-1]
    truth, valid = latent_ground_truth(displacement, inside, factor)
    x0 = degrade(deformed_latent, seed=100 + seed, blur_sigma=X0_BLUR,
                 noise_std=X0_NOISE_FRACTION * float(deformed_latent.std()))
    h, w = exem_latent.shape[-2:]
    base = {"photo": photo_name, "seed": seed, "condition": condition_kind, "valid_fraction": float(valid.float().mean())}

    def metrics(flow, mask):
        return score(flow, mask, truth, valid, photo, deformed, inside, factor)

    rows = [
        {**base, "matcher": "identity", "stage": "-", "seconds": 0.0, "mirrored": math.nan, **metrics(coordinate_grid(1, h, w), None)},
        {**base, "matcher": "true flow", "stage": "-", "seconds": 0.0, "mirrored": math.nan, **metrics(truth, None)},
    ]
    cond_side = MatchSide(latent=cond_latent, image=condition)
    exem_side = MatchSide(latent=exem_latent, image=photo)
    confidence = ConfidenceSettings(threshold=config.threshold)
    for name, matcher in matchers.items():
        start = time.perf_counter()
        feats = matcher.bind(cond_side, exem_side)
        first = warp_with_confidence(feats.condition, feats.exemplar, exem_latent, confidence=confidence,
                                     prior=feats.prior)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = warp_with_confidence(feats.x0_features(x0), feats.exemplar_in_domain, exem_latent, confidence=confidence,
                                     prior=feats.prior)
        again_s = time.perf_counter() - start
        mirrored = math.nan if feats.alignment is None else float(feats.alignment.mirrored.float().mean())
        for stage, result, seconds in (("first match", first, first_s), ("re-match", again, again_s)):
            rows.append({**base, "matcher": name, "stage": stage, "seconds": seconds, "mirrored": mirrored,
                         **metrics(result.forward_flow, result.mask > 0.5)})
    return rows


# ------------------------------------------------------------------------------- run + summary

METRICS = ("pck@1", "pck@2", "pck@4", "psnr_conf", "psnr_all", "coverage", "precision", "recall", "mirrored", "seconds")


def _mean(values: list[float]) -> tuple[float, int]:
    """Mean over the finite values and how many there were (NaN = undefined for that case,
    e.g. PSNR over an empty confidence mask)."""
    kept = [v for v in values if math.isfinite(v)]
    return (sum(kept) / len(kept) if kept else math.nan), len(kept)


def summarise(rows: list[dict]) -> list[dict]:
    """Means per (condition, matcher, stage) in first-seen order, plus an 'all' condition."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for condition in [*dict.fromkeys(r["condition"] for r in rows), "all"]:
        for r in rows:
            if condition in ("all", r["condition"]):
                groups.setdefault((condition, r["matcher"], r["stage"]), []).append(r)
    out = []
    for (condition, matcher, stage), members in groups.items():
        entry = {"condition": condition, "matcher": matcher, "stage": stage, "cases": len(members)}
        for m in METRICS:
            entry[m], entry[f"{m}_n"] = _mean([r[m] for r in members])
        out.append(entry)
    return out


def run_benchmark(config: BenchConfig, matchers: Optional[dict[str, Matcher]] = None, encode: Encode = stand_in_encode,
                  progress: Optional[Callable[[str], None]] = None) -> dict:
    """Every case of ``config``: {"config", "rows" (one per case x matcher x stage), "summary"}."""
    if matchers is None:
        probe = encode(torch.zeros(1, 3, config.size, config.size))
        matchers = default_matchers(int(probe.shape[1]))
    rows = []
    with torch.inference_mode():
        for photo_name, seed in config.deformations():
            for kind in config.conditions:
                start = time.perf_counter()
                rows.extend(run_case(photo_name, seed, kind, config, matchers, encode))
                if progress:
                    progress(f"{photo_name}/{seed}/{kind}: {time.perf_counter() - start:.1f} s")
    return {"config": asdict(config), "rows": rows, "summary": summarise(rows)}


# ------------------------------------------------------------------------------- tables

def _fmt(value: float, digits: int, n: int, cases: int) -> str:
    if not math.isfinite(value):
        return "inf" if value == math.inf else "-"
    text = f"{value:.{digits}f}"
    return text if n == cases else f"{text} ({n}/{cases})"  # mean over fewer cases than the group


def summary_table(summary: list[dict], condition: str) -> str:
    table = Table(("matcher", "stage", "PCK@1", "PCK@2", "PCK@4", "PSNR conf dB", "PSNR all dB", "mask coverage",
                   "mask precision", "mask recall", "aligned mirrored", "s/case"), "ll" + "r" * 10)
    for e in summary:
        if e["condition"] != condition:
            continue
        n = e["cases"]
        cells = [_fmt(e["pck@1"], 2, e["pck@1_n"], n), _fmt(e["pck@2"], 2, e["pck@2_n"], n), _fmt(e["pck@4"], 2, e["pck@4_n"], n),
                 _fmt(e["psnr_conf"], 2, e["psnr_conf_n"], n), _fmt(e["psnr_all"], 2, e["psnr_all_n"], n),
                 _fmt(e["coverage"], 2, e["coverage_n"], n), _fmt(e["precision"], 2, e["precision_n"], n),
                 _fmt(e["recall"], 2, e["recall_n"], n), _fmt(e["mirrored"], 2, e["mirrored_n"], e["mirrored_n"]),
                 "-" if e["stage"] == "-" else f"{e['seconds']:.2f}"]
        table.add(e["matcher"], e["stage"], *cells)
    return str(table)


def per_case_table(rows: list[dict]) -> str:
    table = Table(("case", "matcher", "stage", "PCK@1", "PCK@2", "PCK@4", "PSNR conf", "PSNR all", "precision",
                   "recall"), "lll" + "r" * 7)
    for r in rows:
        if r["stage"] == "-" and r["matcher"] != "identity":
            continue
        cells = [_fmt(r[m], 2, 1, 1) for m in ("pck@1", "pck@2", "pck@4", "psnr_conf", "psnr_all", "precision", "recall")]
        table.add(f"{r['photo']}/{r['seed']}/{r['condition']}", r["matcher"], r["stage"], *cells)
    return str(table)


def report(result: dict, latents: str, elapsed: float, per_case: bool = False) -> str:
    cfg = result["config"]
    conditions = [*dict.fromkeys(r["condition"] for r in result["rows"])]
    n_def = len({(r["photo"], r["seed"]) for r in result["rows"]})
    photos = ", ".join(dict.fromkeys(r["photo"] for r in result["rows"]))
    parts = [
        f"# warp quality benchmark: {machine(torch.get_num_threads())}, CPU",
        "",
        f"{n_def} deformations ({photos}; seeds {', '.join(map(str, dict.fromkeys(r['seed'] for r in result['rows'])))}) x "
        f"{len(conditions)} condition kinds, {cfg['size']} px photos, thin-plate-spline deformation "
        f"({cfg['tps_grid']} x {cfg['tps_grid']} jittered control points, mean |d| {cfg['shift_px']:g} px), latents: {latents}, "
        f"cycle threshold {cfg['threshold']:g} latent cells. Means over cases; '(n/N)' marks a mean over "
        f"the n cases where it is defined (PSNR conf and precision need a non-empty mask). "
        f"Run time {elapsed:.0f} s. Produced by `python -m benchmarks.warp_quality` "
        "(see its docstring for the definitions).",
    ]
    for condition in [*conditions, "all"] if len(conditions) > 1 else conditions:
        title = "all conditions" if condition == "all" else f"condition: {condition}"
        parts += ["", f"## {title}", "", summary_table(result["summary"], condition)]
    if per_case:
        parts += ["", "## per case", "", per_case_table(result["rows"])]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------- host (--checkpoint)

def import_pack(package: str = PACK_NAME):
    """This repository imported as a package (its ``nodes`` use relative imports), as ComfyUI
    imports a custom node folder. Needs ComfyUI on sys.path."""
    if package in sys.modules:
        return sys.modules[package]
    spec = importlib.util.spec_from_file_location(package, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)
    return module


def host_setup(checkpoint: str, timestep: int, output_block: int, ensemble: int) -> tuple[Encode, Matcher]:
    """ComfyUI in-process: the checkpoint's VAE as the encoder and its U-Net as a DIFT matcher."""
    model, vae = load_checkpoint(checkpoint, "warp_quality")
    pack = import_pack()
    diffusion = importlib.import_module(f"{pack.__name__}.host_adapters.diffusion_matcher")
    settings = importlib.import_module(f"{pack.__name__}.midms_core.matchers.diffusion").DiffusionMatcherSettings
    matcher = diffusion.HostDiffusionMatcher(model, timestep, output_block, settings(ensemble=ensemble))
    return vae_encoder(vae), matcher


# ------------------------------------------------------------------------------- CLI

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warp_quality", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_PHOTOS)} photos x 1 seed (for tests); prints only")
    parser.add_argument("--size", type=int, default=256, help="photo side in pixels (multiple of 8)")
    parser.add_argument("--cases", type=int, default=None, help="at most this many (photo, seed) deformations")
    parser.add_argument("--photos", nargs="+", default=None, help=f"skimage.data names (default {' '.join(PHOTOS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="deformation seeds (default 0 1 2)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--shift", type=float, default=20.0, help="mean displacement in pixels")
    parser.add_argument("--threshold", type=float, default=1.5, help="cycle-consistency threshold in latent cells")
    parser.add_argument("--checkpoint", default=None, help="a diffusion checkpoint: its VAE makes the latents and its U-Net adds the DIFT row (needs ComfyUI)")
    parser.add_argument("--timestep", type=int, default=261, help="DIFT noise level (of 1000)")
    parser.add_argument("--output-block", type=int, default=6, help="DIFT U-Net output block (LDM numbering)")
    parser.add_argument("--ensemble", type=int, default=1, help="DIFT noise draws per image")
    parser.add_argument("--json", default=None, help="write config, per-case rows and summary here")
    parser.add_argument("--markdown", default=None,
                        help=f"write the tables here (default {DEFAULT_MARKDOWN.relative_to(ROOT)} for a full stand-in run; "
                        "quick, --checkpoint and --networks runs write only when asked)")
    parser.add_argument("--per-case", action="store_true", help="also tabulate every case")
    parser.add_argument("--networks", nargs="+", default=[],
                        help="trained networks files (scripts/train_midms.py) to add as rows, each with its untrained init")
    args = parser.parse_args(argv)
    if args.size % 8 or args.size < 64:
        parser.error(f"'--size' must be a multiple of 8 and >= 64, got {args.size}")
    if args.cases is not None and args.cases < 1:
        parser.error(f"'--cases' must be >= 1, got {args.cases}")

    config = BenchConfig(
        photos=tuple(args.photos or (QUICK_PHOTOS if args.quick else PHOTOS)),
        seeds=tuple(args.seeds or (QUICK_SEEDS if args.quick else SEEDS)),
        conditions=tuple(args.conditions), size=args.size, shift_px=args.shift, threshold=args.threshold,
        cases=args.cases,
    )
    encode, matchers, latents = stand_in_encode, None, "stand-ins (each image average-pooled by 8, 3 channels)"
    if args.networks:
        matchers = {**default_matchers(3), **trained_matchers(args.networks)}
    if args.checkpoint:
        encode, diffusion = host_setup(args.checkpoint, args.timestep, args.output_block, args.ensemble)
        with torch.inference_mode():
            channels = int(encode(torch.zeros(1, 3, config.size, config.size)).shape[1])
        matchers = {**default_matchers(channels),
                    f"diffusion (t {args.timestep}, block {args.output_block}, ensemble {args.ensemble})": diffusion}
        latents = f"VAE of {os.path.basename(args.checkpoint)} ({channels} channels)"

    start = time.perf_counter()
    result = run_benchmark(config, matchers, encode, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    elapsed = time.perf_counter() - start
    text = report(result, latents, elapsed, per_case=args.per_case)
    publish(text, args.markdown if args.markdown is not None else (
        None if args.quick or args.checkpoint or args.networks or args.photos or args.seeds or args.cases
        else str(DEFAULT_MARKDOWN)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        result["latents"], result["elapsed_s"] = latents, elapsed
        Path(args.json).write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
