"""Several exemplars and label-aware matching, measured on real photos with known ground truth.

    python -m benchmarks.several_exemplars            # the table (a few minutes on 2 CPUs)
    python -m benchmarks.several_exemplars --quick    # one photo, one seed
    python -m benchmarks.several_exemplars --quick --rematch-sides 64   # a shorter timing

Split scene: a photo is deformed by a seeded thin-plate spline and its Canny edges are the
condition; exemplar A holds the photo's LEFT half (its right half is another photo), exemplar B
its RIGHT half. Matching the condition against the union of A and B should take each region
from the exemplar that holds it. A match counts as correct (PCK at k latent cells) only when it
lands in the exemplar that holds that scene point, within k of the true position; PSNR is of the
warped pixels (taken from whichever exemplar each position matched) against the deformed photo.

Labels: the condition is the benchmark's label map of the deformed photo (``quantised_condition``:
quantised colours painted with a palette), the exemplar is the undeformed photo with the label
map of the same quantiser; label-aware matching (labels compared by nearest palette colour) is
measured against unrestricted matching on the same pair.

Latents are weight-free stand-ins (the image average-pooled by 8, as ``warp_quality``); the
matcher is the training-free edge matcher with its defaults.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional, Sequence

import torch

from benchmarks.tables import Table, machine, publish
from midms_core.training.step import stand_in_encode
from harness.metrics import latent_flow_to_pixels, masked_psnr
from harness.photos import load_photo
from midms_core import EdgeDescriptorMatcher, MatchSide, WarpSettings, warp_with_confidence
from midms_core.exemplars.regions import colour_labels, labels_on_grid
from midms_core.exemplars.union import bind_union, split_stacked
from midms_core.matchers.base import Restriction
from midms_core.training.conditions import canny_condition, label_palette, quantised_condition, quantised_labels
from midms_core.training.synthetic import deform, latent_ground_truth, sample_pixels, tps_displacement

SHIFT_PX = 6.0  # mean TPS displacement at 256 px, as warp_quality's default cases
PCK_K = (1, 2)
PHOTOS = (("astronaut", "coffee"), ("chelsea", "rocket"), ("coffee", "astronaut"))


def _pck_in(flow: Tensor, index: Tensor, expected: Tensor, truth: Tensor, valid: Tensor, k: float) -> float:
    """Share of valid positions matched into the right exemplar within k cells of the truth."""
    right = (index == expected) & ((flow - truth).norm(dim=1, keepdim=True) <= k)
    return float((right & valid).sum() / valid.sum().clamp(min=1))


Tensor = torch.Tensor


def split_scene_case(photo_name: str, filler_name: str, seed: int, size: int = 256) -> dict:
    """Union of the two half-exemplars against each alone: PCK, PSNR and the union's share of
    positions taken from the right exemplar."""
    photo, filler = load_photo(photo_name, size), load_photo(filler_name, size)
    displacement = tps_displacement(size, seed, SHIFT_PX)
    deformed, inside = deform(photo, displacement)
    condition = canny_condition(deformed)
    half = size // 2
    left, right = photo.clone(), photo.clone()
    left[..., half:] = filler[..., half:]
    right[..., :half] = filler[..., :half]
    exemplars = [left, right]
    latents = [stand_in_encode(e) for e in exemplars]
    factor = 8
    truth, valid = latent_ground_truth(displacement, inside, factor)  # (1, 2, h, w), (1, 1, h, w)
    h, w = latents[0].shape[-2:]
    expected = (truth[:, :1] >= w / 2).long()  # the exemplar holding each position's scene point
    matcher = EdgeDescriptorMatcher()
    cond_side = MatchSide(latent=stand_in_encode(condition), image=condition)
    real = inside > 0.5
    row = {"photo": photo_name, "seed": seed}

    def measure(name: str, flow: Tensor, index: Tensor, images: Sequence[Tensor]) -> None:
        stacked_image = torch.cat(list(images), dim=2)
        stacked_flow = torch.cat([flow[:, :1], flow[:, 1:2] + index * h], dim=1)
        warped = sample_pixels(stacked_image, latent_flow_to_pixels(stacked_flow, (size, size), factor))
        for k in PCK_K:
            row[f"{name} pck@{k}"] = _pck_in(flow, index, expected, truth, valid, k)
        row[f"{name} psnr"] = masked_psnr(warped, deformed, real)

    start = time.perf_counter()
    feats = bind_union(matcher, cond_side, [MatchSide(latent=l, image=e) for l, e in zip(latents, exemplars)])
    union = WarpSettings().warp_with_confidence(feats.condition, feats.exemplar, torch.cat(latents, dim=2),
                                                prior=feats.prior, groups=feats.groups)
    row["union seconds"] = time.perf_counter() - start
    index, local = split_stacked(union.forward_flow, h)
    measure("union", local, index, exemplars)
    row["union right share"] = float(((index == expected) & valid).sum() / valid.sum())
    row["union confident"] = float(union.mask.mean())
    for g, name in enumerate(("A alone", "B alone")):
        alone = matcher.bind(cond_side, MatchSide(latent=latents[g], image=exemplars[g]))
        result = warp_with_confidence(alone.condition, alone.exemplar, latents[g], prior=alone.prior)
        measure(name, result.forward_flow, torch.full_like(expected, g), [exemplars[g]])
    return row


def label_case(photo_name: str, seed: int, size: int = 256) -> dict:
    """The label-map condition against the photo: unrestricted vs label-aware PCK."""
    photo = load_photo(photo_name, size)
    displacement = tps_displacement(size, seed, SHIFT_PX)
    deformed, inside = deform(photo, displacement)
    condition = quantised_condition(deformed)
    truth, valid = latent_ground_truth(displacement, inside, 8)
    exem_latent = stand_in_encode(photo)
    grid = tuple(exem_latent.shape[-2:])
    palette = label_palette(27)
    restriction = Restriction(condition_labels=labels_on_grid(colour_labels(condition, palette), grid),
                              exemplar_labels=labels_on_grid(quantised_labels(photo), grid))
    feats = EdgeDescriptorMatcher().bind(MatchSide(latent=stand_in_encode(condition), image=condition),
                                         MatchSide(latent=exem_latent, image=photo))
    row = {"photo": photo_name, "seed": seed}
    for name, r in (("unrestricted", None), ("label-aware", restriction)):
        result = WarpSettings().warp_with_confidence(feats.condition, feats.exemplar, exem_latent,
                                                     prior=feats.prior, restriction=r)
        zero = torch.zeros_like(valid, dtype=torch.long)
        for k in PCK_K:
            row[f"{name} pck@{k}"] = _pck_in(result.forward_flow, zero, zero, truth, valid, k)
        row[f"{name} confident"] = float(result.mask.mean())
    return row


def rematch_table(sides: Sequence[int], repeats: int, channels: int = 1164) -> Table:
    """Time per re-match against the union of two exemplars and against one, side by side
    (alternating), on smooth seeded feature maps of the edge matcher's re-match width."""
    from benchmarks.bench_rematch import smooth_field

    table = Table(("latent grid", "one exemplar (s)", "union of two (s)", "union / one"), "lrrr")
    for side in sides:
        g = torch.Generator().manual_seed(side)
        a, b = smooth_field(channels, side, g), smooth_field(channels, side, g)
        x0 = torch.cat([a[..., : side // 2], b[..., side // 2 :]], dim=-1) + 0.3 * torch.randn(a.shape, generator=g)
        latent = torch.randn(1, 4, side, side, generator=g)
        settings = WarpSettings()
        one = lambda: settings.warp_with_confidence(x0, a, latent)
        union = lambda: settings.warp_with_confidence(x0, torch.cat([a, b], dim=2), torch.cat([latent, latent], dim=2),
                                                      groups=2)
        one(), union()  # warm-up
        times = {"one": [], "union": []}
        for _ in range(repeats):
            for name, fn in (("one", one), ("union", union)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        t1, t2 = statistics.median(times["one"]), statistics.median(times["union"])
        print(table.add(f"{side} x {side}", f"{t1:.3f}", f"{t2:.3f}", f"{t2 / t1:.2f}x"), flush=True)
    return table


def _mean(rows: list[dict], key: str) -> str:
    return f"{statistics.mean(r[key] for r in rows):.3f}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one photo, one seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--markdown", help="also write the report here (e.g. benchmarks/several_exemplars.md)")
    parser.add_argument("--rematch-sides", type=int, nargs="*", default=[64, 128],
                        help="latent grids of the re-match timing (none: skip it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    photos = PHOTOS[:1] if args.quick else PHOTOS
    seeds = args.seeds[:1] if args.quick else args.seeds
    split_rows = [split_scene_case(p, f, s, args.size) for p, f in photos for s in seeds]
    label_rows = [label_case(p, s, args.size) for p, _ in photos for s in seeds]

    split = Table(("matching", "PCK@1", "PCK@2", "PSNR (dB)", "from the right exemplar"), "lrrrr")
    for name in ("A alone", "B alone", "union"):
        share = _mean(split_rows, "union right share") if name == "union" else "-"
        split.add(name, _mean(split_rows, f"{name} pck@1"), _mean(split_rows, f"{name} pck@2"),
                  f"{statistics.mean(r[f'{name} psnr'] for r in split_rows):.2f}", share)
    labels = Table(("matching", "PCK@1", "PCK@2", "confident"), "lrrr")
    for name in ("unrestricted", "label-aware"):
        labels.add(name, _mean(label_rows, f"{name} pck@1"), _mean(label_rows, f"{name} pck@2"),
                   _mean(label_rows, f"{name} confident"))
    cases = f"{len(split_rows)} cases ({', '.join(p for p, _ in photos)}; seeds {seeds}), {args.size} px, latent grid {args.size // 8}"
    text = "\n".join([
        f"# Several exemplars and label-aware matching: {machine(torch.get_num_threads())}", "",
        f"Split scene, {cases}: each exemplar holds half of the scene.", "", str(split), "",
        f"Label-map condition, {cases}.", "", str(labels), "",
        f"Union match time (edge matcher bind of both + warp): {_mean(split_rows, 'union seconds')} s per case.",
        ""])
    if args.rematch_sides:
        table = rematch_table(args.rematch_sides, args.repeats)
        text += ("\nTime per re-match (warp + both flows + confidence, 1164-channel features as the edge matcher's "
                 f"re-match, no prior; median of {args.repeats}, alternating):\n\n" + str(table) + "\n")
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
