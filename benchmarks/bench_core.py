"""Benchmark of midms_core on this machine: memory-lean vs dense matching, and the interleaved
sampler's cost per step against plain DDIM. Prints markdown tables of ratios measured side by
side in one run.

    python -m benchmarks.bench_core                 # full table (a few minutes on 2 cores)
    python -m benchmarks.bench_core --sides 32 64   # a subset

Every matching measurement runs in its own process so that freed heap cannot hide a peak.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.matching_memory import measure_in_child
from benchmarks.peak_memory import available_bytes
from benchmarks.tables import Table, machine, ratio

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
CHANNELS = 256  # feature width of the official networks


# ---- matching: each measurement in its own process (benchmarks/matching_memory.py) ------------------

def matching_table(sides: list[int]) -> Table:
    table = Table(("latent side", "positions", "dense peak MiB", "lean peak MiB", "dense / lean memory", "dense s",
                   "lean s", "lean / dense time", "lean + prior peak MiB", "lean + prior s", "prior / lean time"),
                  "r" * 11)
    budget = available_bytes() * 0.6
    for side in sides:
        n = side * side
        lean = measure_in_child(side, CHANNELS, "auto")
        prior = measure_in_child(side, CHANNELS, "prior")
        prior_cells = (f"{prior['extra'] / MiB:.0f}", f"{prior['seconds']:.2f}", ratio(prior["seconds"], lean["seconds"]))
        # The dense path holds the correlation, its scaled copy and a softmax at once.
        dense_estimate = 3 * 4 * n * n
        dense = measure_in_child(side, CHANNELS, "dense") if dense_estimate < budget else None
        lean_mib = lean["extra"] / MiB
        if dense is None or "error" in dense:
            why = "skipped (needs ~%.0f GiB)" % (dense_estimate / 2**30) if dense is None else dense["error"]
            table.add(side, n, why, f"{lean_mib:.0f}", "-", "-", f"{lean['seconds']:.2f}", "-", *prior_cells)
            continue
        dense_mib = dense["extra"] / MiB
        print(table.add(side, n, f"{dense_mib:.0f}", f"{lean_mib:.0f}", ratio(dense_mib, lean_mib, 1),
                        f"{dense['seconds']:.2f}", f"{lean['seconds']:.2f}", ratio(lean["seconds"], dense["seconds"]),
                        *prior_cells), flush=True)
    return table


# ---- sampler cost per step -----------------------------------------------------------------------

class ToyDenoiser(torch.nn.Module):
    """A small conv net standing in for a U-Net: denoise(x, sigma) -> x0."""

    def __init__(self, channels: int = 4, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, hidden, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(hidden, hidden, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(hidden, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        scale = (1 + sigma.view(-1, 1, 1, 1) ** 2).rsqrt()
        return x - sigma.view(-1, 1, 1, 1) * self.net(x * scale)


def sampler_table(sides: list[int], steps: int = 4, repeats: int = 3) -> Table:
    import midms_core as mc

    table = Table(("latent side", "matcher", "plain DDIM ms/step", "interleaved ms/step", "interleaved / plain"),
                  "rlrrr")
    torch.manual_seed(0)
    denoiser = ToyDenoiser().eval()
    sigmas = mc.strength_sigmas(mc.schedules.sigma_from_alpha_bar(mc.schedules.ldm_alphas_cumprod()), steps, 0.25).float()
    nets = mc.init_networks(mc.CorrespondenceConfig(latent_channels=4, label_channels=3), seed=0)
    for side in sides:
        latent = torch.randn(1, 4, side, side)
        image = torch.rand(1, 3, side * 8, side * 8)
        side_c = mc.MatchSide(latent=latent, image=image)
        projection = torch.nn.Conv2d(4, CHANNELS, 1)
        matchers = {"1x1 projection (correspondence only)": None, "learned networks (random init)": mc.LearnedMatcher(nets)}
        for name, matcher in matchers.items():
            with torch.inference_mode():
                if matcher is None:
                    feats = mc.MatchFeatures(condition=projection(latent), exemplar=projection(latent),
                                             exemplar_in_domain=projection(latent), x0_features=projection)
                else:
                    feats = matcher.bind(side_c, side_c)
                x = latent + sigmas[0] * torch.randn_like(latent)
                timings = {"plain": [], "interleaved": []}
                for _ in range(repeats):  # interleave the two so machine noise hits both alike
                    start = time.perf_counter()
                    mc.sample_ddim(denoiser, x, sigmas)
                    timings["plain"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    mc.sample_interleaved(denoiser, x, sigmas, latent, feats, mc.WarpSettings())
                    timings["interleaved"].append(time.perf_counter() - start)
            plain = min(timings["plain"]) / steps * 1000
            inter = min(timings["interleaved"]) / steps * 1000
            print(table.add(side, name, f"{plain:.1f}", f"{inter:.1f}", ratio(inter, plain, 1)), flush=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256])
    parser.add_argument("--sampler-sides", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args(argv)
    print(f"# midms_core benchmark: {machine(torch.get_num_threads())}, {CHANNELS}-channel features, CPU\n")
    print("## Matching: warp + cycle-consistency mask, extra peak RSS and time\n")
    matching = matching_table(args.sides)
    print("\n## Interleaved sampler vs plain DDIM (4 steps, re-warp at 3, toy denoiser)\n")
    sampler = sampler_table(args.sampler_sides)
    print("\n## Summary\n")
    print(matching)
    print()
    print(sampler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
