"""Demo of the training-free matcher on real photos: ``python -m midms_core.demo --out output/demo.png``.

The exemplar is a skimage photo; the condition is the kornia Canny edge map (white on black) of
the same photo under a seeded smooth deformation, so the true correspondence is known and the
summary can report PCK. No VAE is involved: the stand-in "latent" of each side is its image
average-pooled by 8 (3 channels), which fixes the latent grid (H/8, W/8) the matcher and the
warp work on.

The figure (Pillow, four labelled panels): condition, exemplar, the exemplar warped at pixel
resolution by the upsampled latent-grid soft-argmax flow, and the cycle-consistency confidence
mask (white = confident). ``--json`` writes sizes, timings, PCK and mask coverage.

Needs the ``demo`` extras (scikit-image, pillow); the rest of ``midms_core`` does not.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .confidence import normalised_to_pixels, warp_with_confidence
from .edge_matcher import EdgeDescriptorMatcher
from .evaluation import (
    canny_condition,
    deform,
    latent_flow_to_pixels,
    latent_ground_truth,
    load_photo,
    pck,
    sample_pixels,
    smooth_displacement,
)
from .matchers import MatchSide

FACTOR = 8  # stand-in latent = image average-pooled by 8
# The official cycle threshold (a quarter of the width) passes nearly every position of a
# decent match, which makes an all-white panel; 1.5 latent px shows where the check bites.
DEFAULT_THRESHOLD = 1.5


def compose(panels: Sequence[tuple[str, Tensor]], path: str, caption: str = "") -> None:
    """Write labelled (1, 3, H, W) panels side by side as one PNG (Pillow, no matplotlib)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=14)
    pad, label_h = 6, 20
    h, w = panels[0][1].shape[-2:]
    caption_h = label_h if caption else 0
    sheet = Image.new("RGB", (len(panels) * (w + pad) + pad, h + label_h + caption_h + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, t) in enumerate(panels):
        arr = (t[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        x = pad + i * (w + pad)
        sheet.paste(Image.fromarray(arr), (x, pad + label_h))
        # a frame, so an all-white panel (e.g. a fully confident mask) stays visible
        draw.rectangle((x - 1, pad + label_h - 1, x + w, pad + label_h + h), outline="gray")
        draw.text((x, pad), label, fill="black", font=font)
    if caption:
        draw.text((pad, pad + label_h + h + 3), caption, fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)


def run(exemplar_name: str = "astronaut", size: int = 256, seed: int = 0, shift_px: float = 20.0,
        threshold: Optional[float] = None) -> tuple[list[tuple[str, Tensor]], dict]:
    """The demo computation. Returns the four panels and the JSON summary."""
    if size % FACTOR or size < 4 * FACTOR:
        raise ValueError(f"demo: '--size' must be a multiple of {FACTOR} and >= {4 * FACTOR}, got {size}")
    try:
        photo = load_photo(exemplar_name, size)
    except ValueError:
        raise ValueError(f"demo: '--exemplar' must name a skimage.data image (astronaut, coffee, chelsea, rocket, ...), got {exemplar_name!r}") from None

    timings = {}
    t0 = time.perf_counter()
    d = smooth_displacement(size, seed, shift_px)
    deformed, inside = deform(photo, d)  # deformed(p) = photo(p + d(p))
    condition = canny_condition(deformed)
    timings["inputs_s"] = time.perf_counter() - t0

    cond_side = MatchSide(F.avg_pool2d(condition, FACTOR), condition)
    exem_side = MatchSide(F.avg_pool2d(photo, FACTOR), photo)
    h, w = cond_side.grid
    official = normalised_to_pixels(0.5, w)  # 0.5 in [-1, 1] units: a quarter of the width
    if threshold is None:
        threshold = DEFAULT_THRESHOLD

    matcher = EdgeDescriptorMatcher()
    t0 = time.perf_counter()
    feats = matcher.bind(cond_side, exem_side)
    timings["bind_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = warp_with_confidence(feats.condition, feats.exemplar, exem_side.latent, threshold=threshold)
    timings["warp_with_confidence_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    warped = sample_pixels(photo, latent_flow_to_pixels(result.forward_flow, (size, size), FACTOR))
    mask = F.interpolate(result.mask.float(), size=(size, size), mode="nearest").repeat(1, 3, 1, 1)
    timings["pixel_warp_s"] = time.perf_counter() - t0

    # accuracy against the known deformation, on positions whose source lies inside the photo
    truth, valid = latent_ground_truth(d, inside, FACTOR)
    err = (result.forward_flow - truth).norm(dim=1)
    confident = result.mask[:, 0] > 0.5
    summary = {
        "exemplar": exemplar_name,
        "seed": seed,
        "mean_shift_px": shift_px,
        "image_size": [size, size],
        "latent_grid": [h, w],
        "stand_in_latent": f"image average-pooled by {FACTOR}",
        "matcher": matcher.name,
        "feature_channels": {"cross_domain": int(feats.condition.shape[1]), "in_domain": int(feats.exemplar_in_domain.shape[1])},
        "threshold_latent_px": threshold,
        "mask_coverage": float(result.mask.float().mean()),
        "official_threshold_latent_px": official,
        "mask_coverage_official_threshold": float((result.distance < official).float().mean()),
        "pck_vs_ground_truth": {f"pck@{k}": pck(result.forward_flow, truth, valid, k) for k in (1, 2)},
        "pck@1_confident": float(((err <= 1) & valid & confident).sum() / (valid & confident).sum().clamp_min(1)),
        "mean_cycle_distance_px": float(result.distance.mean()),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
    }
    panels = [
        ("condition (Canny of deformed)", condition),
        ("exemplar", photo),
        ("warped exemplar", warped),
        (f"confidence ({summary['mask_coverage']:.0%} confident)", mask),
    ]
    return panels, summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m midms_core.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/demo.png", help="PNG figure to write")
    parser.add_argument("--json", default=None, help="also write the summary (sizes, timings, mask coverage) here")
    parser.add_argument("--exemplar", default="astronaut", help="skimage.data image name")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the deformation")
    parser.add_argument("--shift", type=float, default=20.0, help="mean displacement in pixels")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"cycle-consistency threshold in latent pixels (default {DEFAULT_THRESHOLD}; "
                        "the official one, a quarter of the width, is reported too)")
    args = parser.parse_args(argv)

    panels, summary = run(args.exemplar, args.size, args.seed, args.shift, args.threshold)
    caption = (f"{summary['matcher']}: latent grid {summary['latent_grid'][0]}x{summary['latent_grid'][1]}, "
               f"PCK@1 {summary['pck_vs_ground_truth']['pck@1']:.2f}, PCK@2 {summary['pck_vs_ground_truth']['pck@2']:.2f}, "
               f"bind {summary['timings_s']['bind_s']:.2f} s")
    compose(panels, args.out, caption)
    summary["figure"] = args.out
    text = json.dumps(summary, indent=2)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
