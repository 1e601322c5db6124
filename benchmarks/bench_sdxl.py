"""MIDMs at SDXL scale inside a real ComfyUI (issue 4, part 4): whole-run time of the interleaved
sampler against the host's own plain sampler on the same SDXL-family model, sigmas, CFG and noise,
the one-time bind, per-step U-Net and re-match costs, and peak memory of matching at 128 x 128.

    .venv-comfy/bin/python -m benchmarks.bench_sdxl            # full run (~20 min on 2 CPU cores)
    .venv-comfy/bin/python -m benchmarks.bench_sdxl --quick    # smoke test (tiny model, < 1 min)

Models are built in-process from the host's own classes with seeded random weights
(``harness.sdxl_scale``): ``tiny SDXL``, the SDXL-family U-Net of the host tests (32 channels), and
``SDXL-width``, SDXL's real widths (320 channels, mult [1, 2, 4], 2 res blocks, context 2048, adm
2816) with the transformer depth cut from [0, 2, 10] to [0, 1, 1] to keep CPU time sane. Its U-Net
is cheaper per step than the real SDXL's, so its overhead ratio is an upper bound for the real model.

Target (issue 4): re-matching adds at most 30 % over plain sampling.

The plain sampler is the host's ``euler`` (deterministic DDIM is Euler in sigma space); the MIDMs
sampler is the KSAMPLER of ``MIDMsInterleavedSampler`` with re-warp at every step but the last.
Runs are alternated (rotating order each repeat) and medians reported. The control row
"interleaved, re-warp off" is the MIDMs sampler with ``rewarp_steps = none``: its output must
equal the plain sampler's, and its time is the sampler's own overhead without matching.

Every memory measurement runs in its own process (benchmarks/matching_memory.py, VmHWM).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

import midms_core as mc
from midms_core.confidence import ConfidenceSettings
from benchmarks.matching_memory import measure_in_child
from benchmarks.peak_memory import available_bytes
from benchmarks.sdxl_report import ROW_LABEL, ROWS, RunSet, report
from benchmarks.tables import Table, publish, ratio
from benchmarks.timing import median_timed, rel_err
from harness.sdxl_scale import (TINY, WIDTH, ModelSpec, build_model, edge_matcher, load_host, make_context,
                                rewarp_settings, sdxl_conds)

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20
OFFICIAL_CHANNELS = 256
DIFT_TIMESTEP = 261


# ---- whole runs: plain host sampler vs MIDMs interleaved sampler ---------------------------------
def whole_runs(pack, model, spec: ModelSpec, params: int, side: int, steps: int, denoise: float, cfg: float,
               repeats: int, profile_repeats: int) -> RunSet:
    import comfy.sample
    import comfy.samplers

    sigmas = pack.BasicScheduler().get_sigmas(model, "normal", steps, denoise)[0]
    context = make_context(pack, side)
    on, off = rewarp_settings(pack, ""), rewarp_settings(pack, "none")
    positive, negative = sdxl_conds(side)
    rs = RunSet(model=spec.label, side=side, steps=steps, rewarps=steps - 1, params=params,
                sigmas=[round(float(s), 4) for s in sigmas], cfg=cfg)

    matchers = {
        "edge": edge_matcher(pack),
        "dift": pack.MIDMsDiffusionFeatureMatcher().make(model, timestep=DIFT_TIMESTEP, output_block=spec.dift_block,
                                                         ensemble=1)[0],
    }
    samplers: Dict[str, object] = {"plain": comfy.samplers.ksampler("euler")}
    matches = {}
    latent = None
    for name, matcher in matchers.items():
        start = time.perf_counter()  # the correspondence node: bind (features) + first warp
        match, warped = pack.MIDMsCorrespondence().correspond(context, matcher, on)[:2]
        rs.bind_s[name] = time.perf_counter() - start
        matches[name] = match
        latent = warped["samples"] if latent is None else latent  # one start latent for every run
        samplers[name] = pack.MIDMsInterleavedSampler().get_sampler(model, match)[0]
        bound = match.bound["cpu"]
        rs.channels[name] = int(bound.exemplar_in_domain.shape[1])
    control = pack.types.MIDMsMatch(context=context, matcher=matchers["edge"], settings=off)
    control.bound = matches["edge"].bound  # already bound: the control does no matching at all
    samplers["control"] = pack.MIDMsInterleavedSampler().get_sampler(model, control)[0]
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))

    def run(sampler, s=sigmas):
        return comfy.sample.sample_custom(model, noise, cfg, sampler, s, positive, negative, latent,
                                          disable_pbar=True, seed=7)

    start = time.perf_counter()
    run(samplers["plain"], sigmas[-2:])  # warm-up: one step (allocator, attention kernels)
    if time.perf_counter() - start < 2.0:  # cheap model: also warm up every MIDMs path (one re-warp)
        for row in ROWS[1:]:
            run(samplers[row], sigmas[-3:])
    outputs = {}
    for r in range(repeats):
        order = ROWS[r % len(ROWS):] + ROWS[:r % len(ROWS)]  # rotate so no row is always first
        for row in order:
            start = time.perf_counter()
            out = run(samplers[row])
            rs.times.setdefault(row, []).append(time.perf_counter() - start)
            outputs.setdefault(row, out)
            print(f"  [{spec.key} {side}] {row}: {rs.times[row][-1]:.2f} s", flush=True)
    for row in ROWS[1:]:
        assert torch.isfinite(outputs[row]).all(), row
        rs.err_vs_plain[row] = rel_err(outputs[row], outputs["plain"])

    # where the re-match time goes, on this run's own features
    base = model.model
    x0 = base.process_latent_in(latent)  # a stand-in x0_hat in the sampler's (scaled) space
    exemplar = base.process_latent_in(context.exemplar_latent)
    for name in ("edge", "dift"):
        features = matches[name].bound["cpu"]
        if name == "dift":
            captured = torch.randn(1, rs.channels["dift"], side, side)  # what the U-Net pass records

            def x0_features(x, f=features, c=captured, m=matchers["dift"]):
                m.capture.clear()
                m.capture.add(c)
                return f.x0_features(base.process_latent_out(x))
        else:
            x0_features = lambda x, f=features: f.x0_features(base.process_latent_out(x))
        rs.profiles[name] = profile_rematch(x0_features, features.exemplar_in_domain, x0, exemplar,
                                            matches[name].settings.rewarp, profile_repeats)
    return rs


# ---- per-step costs: one U-Net step, and the parts of one re-match -------------------------------
def profile_rematch(x0_features: Callable, exem_features: torch.Tensor, x0: torch.Tensor,
                    exemplar: torch.Tensor, settings, repeats: int) -> dict:
    """Median seconds of: x0 feature computation, normalisation, the forward (warp + forward flow)
    and backward correlation passes, cycle check + mask, the whole warp_with_confidence, and the
    one-pass variant (``passes="one"``, with its agreement with the two-pass one)."""
    prof = {}
    if x0.shape[-1] >= 96:  # seconds per call: first-call effects are negligible, keep it short
        repeats = 1
    else:  # one untimed pass first (lazy initialisation, allocator)
        settings.warp_with_confidence(x0_features(x0), exem_features, exemplar)
    prof["features"], feats = median_timed(lambda: x0_features(x0), repeats)
    prof["channels"] = int(feats.shape[1])
    prof["normalise"], (cn, en) = median_timed(
        lambda: (mc.correspondence.centre_normalise(feats), mc.correspondence.centre_normalise(exem_features)), repeats)
    hy, wy = exem_features.shape[-2:]
    hx, wx = feats.shape[-2:]
    values = torch.cat([exemplar.float(), mc.correspondence.coordinate_grid(1, hy, wy)], dim=1)
    # mc's own AttentionSettings: ``settings`` comes from the loaded pack, whose classes are not mc's
    kernel = mc.AttentionSettings(tau=settings.tau, clamp_negative=settings.clamp_negative, chunk_bytes=settings.chunk_bytes)
    prof["forward"], fwd = median_timed(lambda: mc.correspondence.attend(cn, en, values, kernel, normalised=True), repeats)
    prof["backward"], bwd = median_timed(lambda: mc.correspondence.attend(en, cn, mc.correspondence.coordinate_grid(1, hx, wx), kernel,
                                                           normalised=True), repeats)
    confidence = settings.confidence
    prof["mask"], _ = median_timed(lambda: mc.confidence.hard_confidence(mc.cycle_distance(fwd[:, 4:], bwd), confidence.threshold,
                                                              confidence.smooth), repeats)
    def whole(passes):
        # mc's own ConfidenceSettings, as the kernel above
        own = ConfidenceSettings(threshold=confidence.threshold, smooth=confidence.smooth, passes=passes)
        return mc.warp_with_confidence(feats, exem_features, exemplar, kernel, own)

    prof["total"], ref = median_timed(lambda: whole("two"), repeats)
    prof["fused"], fused = median_timed(lambda: whole("one"), repeats)
    prof["fused_warp_err"] = rel_err(fused.warped, ref.warped)
    prof["fused_bwd_err"] = rel_err(fused.backward_flow, ref.backward_flow)
    prof["fused_mask_agree"] = float((fused.mask == ref.mask).float().mean())
    # what the sampler runs: warp_with_confidence's passes="auto" choice for this width
    prof["sampler"] = prof["fused"] if prof["channels"] >= mc.correspondence.ONE_PASS_MIN_CHANNELS else prof["total"]
    return prof


def unet_step_seconds(pack, model, side: int, cfg: float, steps: int, denoise: float) -> float:
    """One step of the host's plain sampler (one U-Net call, cond + uncond batched)."""
    import comfy.sample
    import comfy.samplers

    sigmas = pack.BasicScheduler().get_sigmas(model, "normal", steps, denoise)[0][:2]
    positive, negative = sdxl_conds(side)
    latent = torch.zeros(1, 4, side, side)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
    start = time.perf_counter()
    comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.ksampler("euler"), sigmas, positive, negative,
                               latent, disable_pbar=True, seed=7)
    return time.perf_counter() - start


def random_profile(channels: int, side: int, settings, repeats: int) -> dict:
    """Re-match profile on random features of a given width (sides where nothing was bound)."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, channels, side, side, generator=g)
    exem = torch.randn(1, channels, side, side, generator=g)
    exemplar = torch.randn(1, 4, side, side, generator=g)
    return profile_rematch(lambda x: feats, exem, exemplar, exemplar, settings, repeats)


# ---- per-step entries: derived from the whole runs, or measured alone (SDXL-width at large sides) ---
def entries_from_runs(rs: RunSet, steps: int):
    """(per-step entries, profile entries) of one RunSet: the re-match cost per step derived from
    the whole runs (difference to plain) and timed alone, for both matchers."""
    step_entries, profile_entries = [], []
    unet = rs.median("plain") / steps
    for name in ("edge", "dift"):
        derived = (rs.median(name) - rs.median("plain")) / rs.rewarps
        prof = rs.profiles[name]
        base = dict(model=rs.model, side=rs.side, matcher=ROW_LABEL[name].split("+ ")[1],
                    channels=rs.channels[name], unet_s=unet, steps=steps, rewarps=rs.rewarps)
        step_entries.append({**base, "rematch_s": derived, "source": "whole runs (difference)"})
        step_entries.append({**base, "rematch_s": prof["features"] + prof["sampler"], "source": "re-match timed alone"})
        profile_entries.append({**base, "profile": prof})
    return step_entries, profile_entries


def entries_step_alone(pack, model, spec: ModelSpec, side: int, steps: int, cfg: float, denoise: float,
                       dift_channels: int, repeats: int):
    """(per-step entries, profile entries) at a side too slow for whole runs: one U-Net step, the
    edge matcher's re-match on its own features, DIFT's on random features of its captured width."""
    unet = unet_step_seconds(pack, model, side, cfg, steps, denoise)
    print(f"  [{spec.key} {side}] one U-Net step: {unet:.1f} s", flush=True)
    settings = rewarp_settings(pack, "").rewarp
    context = make_context(pack, side)
    edge = edge_matcher(pack)
    start = time.perf_counter()
    side_cls = importlib.import_module(type(edge).__module__).MatchSide  # the pack's copy
    bound = edge.bind(side_cls(latent=context.condition_latent, image=context.condition_image),
                      side_cls(latent=context.exemplar_latent, image=context.exemplar_image))
    bind_s = time.perf_counter() - start
    edge_prof = profile_rematch(bound.x0_features, bound.exemplar_in_domain, context.condition_latent,
                                context.exemplar_latent, settings, repeats)
    dift_prof = random_profile(dift_channels, side, settings, repeats)
    step_entries, profile_entries = [], []
    for name, prof in (("edge matcher", edge_prof), ("diffusion matcher (DIFT)", dift_prof)):
        entry = dict(model=spec.label, side=side, matcher=name, channels=prof["channels"], unet_s=unet, steps=steps,
                     rewarps=steps - 1)
        src = ("one U-Net step + re-match timed alone" if name == "edge matcher" else
               "one U-Net step + re-match on random features of the captured width")
        step_entries.append({**entry, "rematch_s": prof["features"] + prof["sampler"], "source": src})
        profile_entries.append({**entry, "profile": prof})
    print(f"  [{spec.key} {side}] edge bind {bind_s:.1f} s; re-match edge "
          f"{edge_prof['features'] + edge_prof['total']:.1f} s, DIFT {dift_prof['total']:.1f} s", flush=True)
    return step_entries, profile_entries


# ---- matching memory at SDXL widths, each measurement in a fresh process -----------------
def memory_table(side: int, widths: Dict[str, int], threads: int, dense: bool) -> Table:
    table = Table(("latent", "features", "channels", "two passes peak MiB", "two passes s", "one pass peak MiB",
                   "one pass s", "dense peak MiB", "dense s", "dense / lean memory"), "rl" + "r" * 8)
    n = side * side
    budget = available_bytes() * 0.6
    for label, channels in widths.items():
        lean = measure_in_child(side, channels, "two", threads)
        fused = measure_in_child(side, channels, "one", threads)
        estimate = 3 * 4 * n * n + 3 * 4 * n * channels
        dense_res = measure_in_child(side, channels, "dense", threads) if dense and estimate < budget else None

        def cell(res, key):
            if res is None:
                return "skipped (needs ~%.1f GiB)" % (estimate / 2**30) if key == "extra" else "-"
            if "error" in res:
                return res["error"][:60] if key == "extra" else "-"
            return f"{res[key] / MiB:.0f}" if key == "extra" else f"{res[key]:.2f}"

        dense_ratio = "-"
        if dense_res and "error" not in dense_res and "error" not in lean:
            dense_ratio = ratio(dense_res["extra"], lean["extra"], 1)
        print(table.add(side, label, channels, cell(lean, "extra"), cell(lean, "seconds"), cell(fused, "extra"),
                        cell(fused, "seconds"), cell(dense_res, "extra"), cell(dense_res, "seconds"), dense_ratio),
              flush=True)
    return table


def memory_widths(sets: List[RunSet], quick: bool) -> Dict[str, int]:
    """Feature widths of the memory table: the official networks', the edge matcher's (first match
    and re-match), DIFT's at SDXL output block 6."""
    edge_cross = 8 * (1 + 8 * 4)  # EdgeDescriptorMatcher defaults: orientations * (1 + points * rings)
    edge_rematch = next((r.channels["edge"] for r in sets), None)
    widths = {"official networks": OFFICIAL_CHANNELS, "edge matcher, first match": edge_cross}
    if edge_rematch:
        widths["edge matcher, re-match (x0_hat)"] = edge_rematch
    widths["DIFT SDXL output block 6"] = next((r.channels["dift"] for r in sets if r.model == WIDTH.label), 640)
    return dict(list(widths.items())[:2]) if quick else widths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny SDXL only, small sides, 1 repeat")
    parser.add_argument("--sides", type=int, nargs="+", default=None,
                        help="latent sides of the tiny SDXL whole runs (default 64 128)")
    parser.add_argument("--width-sides", type=int, nargs="*", default=None,
                        help="latent sides of the SDXL-width whole runs (default 64; none to skip the model)")
    parser.add_argument("--step-sides", type=int, nargs="*", default=None,
                        help="SDXL-width sides measured per step only: one U-Net step and re-match (default 128)")
    parser.add_argument("--memory-side", type=int, default=None, help="latent side of the memory table (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 4)")
    parser.add_argument("--denoise", type=float, default=0.25, help="BasicScheduler denoise (default 0.25)")
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=None, help="alternated repeats of every whole run (default 2)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense baseline in the memory table")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None, help="markdown output (default benchmarks/sdxl_latest.md; none with --quick)")
    parser.add_argument("--json", default=None, help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    q = args.quick
    sides = args.sides if args.sides is not None else ([16] if q else [64, 128])
    width_sides = args.width_sides if args.width_sides is not None else ([] if q else [64])
    step_sides = args.step_sides if args.step_sides is not None else ([] if q else [128])
    memory_side = args.memory_side or (32 if q else 128)
    steps = args.steps or (3 if q else 4)
    repeats = args.repeats or (1 if q else 2)
    profile_repeats = 1 if q else 3
    out_path = args.out if args.out is not None else (None if q else str(ROOT / "benchmarks" / "sdxl_latest.md"))
    wall = time.perf_counter()
    load_start = os.getloadavg()

    _, pack = load_host("benchmarks.bench_sdxl", args.threads)
    sets: List[RunSet] = []
    step_entries: List[dict] = []
    profile_entries: List[dict] = []
    params: Dict[str, int] = {}
    # (model, sides of whole runs, sides measured per step only); SDXL-width only when it has sides
    specs = [(TINY, sides, [])] + ([(WIDTH, width_sides, step_sides)] if (width_sides or step_sides) else [])
    with torch.inference_mode():  # as the host's executor runs nodes
        for spec, run_sides, alone_sides in specs:
            start = time.perf_counter()
            model, params[spec.key] = build_model(spec, seed=2)
            print(f"{spec.label}: {params[spec.key] / 1e6:.1f} M U-Net parameters, built in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            entries = []
            for side in run_sides:
                sets.append(whole_runs(pack, model, spec, params[spec.key], side, steps, args.denoise, args.cfg,
                                       repeats, profile_repeats))
                entries.append(entries_from_runs(sets[-1], steps))
            for side in alone_sides:
                dift_ch = next((r.channels["dift"] for r in sets if r.model == spec.label), 640)
                entries.append(entries_step_alone(pack, model, spec, side, steps, args.cfg, args.denoise, dift_ch,
                                                  profile_repeats))
            for more_steps, more_profiles in entries:
                step_entries += more_steps
                profile_entries += more_profiles
            del model

    print("\nmemory children:", flush=True)
    memory = memory_table(memory_side, memory_widths(sets, q), args.threads, not args.no_dense)

    load_end = os.getloadavg()
    total = time.perf_counter() - wall
    run_line = (f"Run: {time.strftime('%Y-%m-%d %H:%M')}, {total / 60:.1f} min; load average (1 min) at start "
                f"{load_start[0]:.2f}, at end {load_end[0]:.2f} (other work on the machine shows here). "
                f"Sigmas: BasicScheduler normal, {steps} steps, denoise {args.denoise}; CFG {args.cfg} "
                f"(cond + uncond batched: one U-Net call of batch 2 per step); re-warp at every step but the last.")
    text = report(args.threads, run_line, params, sets, step_entries, profile_entries, memory_side, memory)
    print()
    publish(text, out_path)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "params": params, "steps": steps, "threads": args.threads, "total_s": total,
            "runs": [{**vars(rs), "medians": {r: rs.median(r) for r in ROWS}} for rs in sets],
            "per_step": step_entries, "profiles": profile_entries, "memory": memory.lines(),
        }, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
