"""Time per re-match of the interleaved sampler, this tree against an earlier revision, in one run.

One re-match is what a run with one re-warp step does: build the sampler's interleaving hook
(:func:`midms_core.sampler.rewarp_transform`; the new code validates and prepares the exemplar
side there, once per run) and call it at the re-warp step (the x0_hat features, the warp with its
forward and backward flows, the cycle check and the blend). Later re-matches of a longer run skip
the preparation, so they cost a little less than this. Both versions run the same inputs alternately in this process, so the
machine's load hits both alike; the table gives medians and their ratio.

    python -m benchmarks.bench_rematch                      # against the revision before issue 9
    python -m benchmarks.bench_rematch --baseline HEAD~3 --sides 64 --repeats 5

Cases: the edge matcher's own re-match features (1164 channels, with its alignment prior, on
real photos from scikit-image) and feature maps of DIFT's widths (SD1.5 1280, SDXL 640
channels; smooth seeded random fields, the x0_hat side a shifted noisy copy, no prior). The
earlier revision's ``midms_core`` is read with ``git show`` into a temporary folder and imported
under another name; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import midms_core as mc
from benchmarks.tables import Table, machine, publish, ratio
from midms_core.confidence import ConfidenceSettings
from midms_core.networks.label_maps import canny_edge_map

ROOT = Path(__file__).resolve().parents[1]
BEFORE_ISSUE_9 = "3dca661"  # the tree before the structural pass


def load_revision(rev: str, into: Path):
    """``midms_core`` as it was at ``rev``, imported as the package ``midms_core_at_<rev>``."""
    name = "midms_core_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "midms_core/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    target = into / name
    target.mkdir(parents=True)
    for path in files:
        if path.endswith(".py"):  # with its sub-packages (matchers/, exemplars/, ...)
            text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True).stdout
            out = target / Path(path).relative_to("midms_core")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def smooth_field(channels: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """(1, C, side, side) spatially smooth random features (a blurred seeded field)."""
    field = torch.randn(1, channels, side // 4 + 1, side // 4 + 1, generator=generator)
    return F.interpolate(field, size=(side, side), mode="bicubic", align_corners=False)


def dift_like(channels: int, side: int):
    """Exemplar features, x0_hat features (the exemplar's shifted by 3 cells plus noise) and a latent."""
    g = torch.Generator().manual_seed(channels + side)
    exemplar = smooth_field(channels, side, g)
    x0 = torch.roll(exemplar, shifts=(3, -2), dims=(2, 3)) + 0.3 * torch.randn(exemplar.shape, generator=g)
    latent = torch.randn(1, 4, side, side, generator=g)
    return exemplar, (lambda _x0_hat: x0), latent, None


def edge_matcher_case(side: int):
    """The edge matcher bound on two photos (the astronaut's Canny edges as the condition, the
    cat photo "chelsea" as the exemplar) at a latent grid of ``side``: its in-domain exemplar
    features, x0 feature function (on the astronaut photo's stand-in latent) and prior."""
    from skimage import data

    def image(array) -> torch.Tensor:
        t = torch.from_numpy(array).float().div(255).permute(2, 0, 1).unsqueeze(0)
        return F.interpolate(t, size=(side * 8, side * 8), mode="bilinear", align_corners=False)

    condition_photo, exemplar_photo = image(data.astronaut()), image(data.chelsea())
    edges = canny_edge_map(condition_photo)
    edges = edges.expand(-1, 3, -1, -1) if edges.shape[1] == 1 else edges

    def latent(img: torch.Tensor) -> torch.Tensor:  # a stand-in latent: the photo at the latent grid
        small = F.avg_pool2d(img, 8)
        return torch.cat([small, small.mean(1, keepdim=True)], dim=1) * 2 - 1

    features = mc.EdgeDescriptorMatcher().bind(mc.MatchSide(latent(edges), edges),
                                               mc.MatchSide(latent(exemplar_photo), exemplar_photo))
    x0 = latent(condition_photo)
    return features.exemplar_in_domain, (lambda _x0_hat: features.x0_features(x0)), latent(exemplar_photo), features.prior


def hook(package, exemplar, x0_features, latent, prior, **settings):
    """One re-match of the version, as a run with a single re-warp step makes it: the sampler's
    interleaving hook is built (the new code validates and prepares the exemplar side there, once
    per run) and called at step 0. Both parts are timed, so the preparation is not hidden."""
    base_prior = None if prior is None else package.SpatialPrior(prior.target, prior.sigma)
    features = package.MatchFeatures(condition=exemplar, exemplar=exemplar, exemplar_in_domain=exemplar,
                                     x0_features=x0_features, prior=base_prior)
    settings_class = getattr(package, "WarpSettings", None) or getattr(package, "RewarpSettings")
    run_settings = settings_class(rewarp_steps=(0,), **settings)
    x = torch.zeros_like(latent)

    def rematch():
        transform = package.sampler.rewarp_transform(latent, features, run_settings, 2)
        return transform(0, x, x, torch.tensor(1.0))

    return rematch


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BEFORE_ISSUE_9, help="git revision to compare against")
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", help="also write the report to this file (e.g. benchmarks/rematch.md)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    table = Table(("case", "latent grid", f"{args.baseline} (s)", "now (s)", "now / before",
                   "two fused passes / before", "now: max |diff|", "two fused: max |diff|"), "llrrrrrr")
    print("\n".join(table.head()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        before = load_revision(args.baseline, Path(tmp))
        cases = [("edge matcher (1164 ch, prior)", edge_matcher_case),
                 ("DIFT SD1.5 width (1280 ch)", lambda s: dift_like(1280, s)),
                 ("DIFT SDXL width (640 ch)", lambda s: dift_like(640, s))]
        for label, make in cases:
            for side in args.sides:
                inputs = make(side)
                versions = [hook(before, *inputs), hook(mc, *inputs),
                            hook(mc, *inputs, confidence=ConfidenceSettings(passes="two"))]
                outs = [run() for run in versions]  # warm-up, and the results to compare
                gaps = [max(float((o[0] - outs[0][0]).abs().max()), float((o[1]["mask"] - outs[0][1]["mask"]).abs().max()))
                        for o in outs[1:]]
                times = [[] for _ in versions]
                for _ in range(args.repeats):  # alternate, so load hits all alike
                    for run, t in zip(versions, times):
                        t.append(median_seconds(run, 1))
                m_old, m_new, m_two = (statistics.median(t) for t in times)
                print(table.add(label, f"{side} x {side}", f"{m_old:.3f}", f"{m_new:.3f}", ratio(m_new, m_old) + "x",
                                ratio(m_two, m_old) + "x", f"{gaps[0]:.1e}", f"{gaps[1]:.1e}"), flush=True)
    title = (f"# Time per re-match: {args.baseline} against this tree\n\n{machine(torch.get_num_threads())}, "
             f"{'cuda' if torch.cuda.is_available() else 'cpu'}; median of {args.repeats}, the versions alternating; "
             "'now' is the default (passes auto: one pass at these widths); the differences are of the blended x0 "
             "and the mask, against the earlier revision.\n")
    publish(title + "\n" + str(table) + "\n", args.markdown)


if __name__ == "__main__":
    main()
