"""Benchmark of midms_core on this machine: memory-lean vs dense matching, and the interleaved
sampler's cost per step against plain DDIM. Prints markdown tables of ratios measured side by
side in one run.

    python -m benchmarks.bench_core                 # full table (a few minutes on 2 cores)
    python -m benchmarks.bench_core --sides 32 64   # a subset

Every matching measurement runs in its own process so that freed heap cannot hide a peak.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.peak_memory import available_bytes, run_child
from benchmarks.tables import Table, machine, ratio

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
CHANNELS = 256  # feature width of the official networks


# ---- one matching measurement (child process) ----------------------------------------------------

def dense_warp_with_confidence(cond: torch.Tensor, exem: torch.Tensor, values: torch.Tensor, tau: float = 0.005):
    """The official code's evaluation: one dense correlation matrix, softmax along both axes."""
    import midms_core as mc

    q = mc.centre_normalise(cond).flatten(2)
    k = mc.centre_normalise(exem).flatten(2)
    corr = torch.einsum("bcn,bcm->bnm", q, k).clamp(min=0)  # (B, Nx, Ny)
    forward_w = torch.softmax(corr / tau, dim=2)
    grid_y = mc.coordinate_grid(1, *exem.shape[-2:]).flatten(2)
    warped = torch.einsum("bnm,bcm->bcn", forward_w, values.flatten(2))
    forward = torch.einsum("bnm,bcm->bcn", forward_w, grid_y)
    del forward_w
    backward_w = torch.softmax(corr / tau, dim=1)
    grid_x = mc.coordinate_grid(1, *cond.shape[-2:]).flatten(2)
    backward = torch.einsum("bnm,bcn->bcm", backward_w, grid_x)
    h, w = cond.shape[-2:]
    dist = mc.cycle_distance(forward.view(1, 2, h, w), backward.view(1, 2, *exem.shape[-2:]))
    return warped.view(1, -1, h, w), mc.hard_confidence(dist)


def child(side: int, method: str) -> None:
    import midms_core as mc
    from benchmarks.peak_memory import measure

    torch.manual_seed(0)
    cond = torch.randn(1, CHANNELS, side, side)
    exem = torch.randn(1, CHANNELS, side, side)
    latent = torch.randn(1, 4, side, side)
    if method == "dense":
        fn = lambda: dense_warp_with_confidence(cond, exem, latent)
    elif method == "prior":
        # the default matching path's locality prior: a similarity-aligned target, 0.03 of the grid
        prior = mc.SpatialPrior(mc.coordinate_grid(1, side, side) * 0.9 + 0.05 * side, 0.03 * side)
        fn = lambda: mc.warp_with_confidence(cond, exem, latent, prior=prior)
    else:
        fn = lambda: mc.warp_with_confidence(cond, exem, latent)
    _, extra, seconds = measure(fn)
    print(json.dumps({"extra": extra, "seconds": seconds}))


def measure_in_child(side: int, method: str) -> dict:
    return run_child("benchmarks.bench_core", ["--child", str(side), method])


def matching_table(sides: list[int]) -> Table:
    table = Table(("latent side", "positions", "dense peak MiB", "lean peak MiB", "dense / lean memory", "dense s",
                   "lean s", "lean / dense time", "lean + prior peak MiB", "lean + prior s", "prior / lean time"),
                  "r" * 11)
    budget = available_bytes() * 0.6
    for side in sides:
        n = side * side
        lean = measure_in_child(side, "lean")
        prior = measure_in_child(side, "prior")
        prior_cells = (f"{prior['extra'] / MiB:.0f}", f"{prior['seconds']:.2f}", ratio(prior["seconds"], lean["seconds"]))
        # The dense path holds the correlation, its scaled copy and a softmax at once.
        dense_estimate = 3 * 4 * n * n
        dense = measure_in_child(side, "dense") if dense_estimate < budget else None
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
    sigmas = mc.strength_sigmas(mc.sigma_from_alpha_bar(mc.ldm_alphas_cumprod()), steps, 0.25).float()
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
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.child[1])
        return 0
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
