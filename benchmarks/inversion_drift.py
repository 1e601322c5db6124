"""Round-trip error of DDIM inversion against guidance and steps, in a real ComfyUI, in-process.

For each tiny test model (SD1.5 and SDXL families; SD3 and Flux on current hosts), the node
MIDMs DDIM Round Trip inverts a fixed random latent with DDIM and regenerates it with the same
model and prompt, at cfg 1, 2 and 5 (the guidance used BOTH ways, as an inversion with a guided
prompt is run in practice) and 10 / 25 / 50 steps. The prompt differs from the negative, so
guidance changes every step. Error = relative RMS in latent space (0 = exact).

Run with the host's interpreter:  .venv-comfy/bin/python -m benchmarks.inversion_drift
Writes benchmarks/inversion_drift.md (benchmarks/README.md quotes it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.tables import Table, publish

CFGS = (1.0, 2.0, 5.0)
STEPS = (10, 25, 50)
OUT = Path(__file__).with_name("inversion_drift.md")


def families():
    """{name: (model, positive, negative, channels, scheduler)} for the tiny models this host has."""
    from harness import inprocess_models as tiny

    out = {}
    with torch.inference_mode(False):
        for name in ("sd15", "sdxl"):
            positive, negative = tiny.unet_conds(name)
            out[name] = (tiny.build_unet(name, 1 if name == "sd15" else 2), positive, negative, 4, "normal")
        if tiny.host_has("SD3"):
            positive, negative = tiny.dit_conds()
            out["sd3"] = (tiny.build_sd3(), positive, negative, 16, "simple")
            out["flux"] = (tiny.build_flux(), positive, negative, 16, "simple")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from harness.host import script_host

    host = script_host("benchmarks.inversion_drift")
    torch.set_num_threads(args.threads)  # the in-process host pins 1 thread
    round_trip = host.nodes.NODE_CLASS_MAPPINGS["MIDMsDDIMRoundTrip"]()
    rows = []
    t0 = time.monotonic()
    with torch.inference_mode():
        for name, (model, positive, negative, channels, scheduler) in families().items():
            latent = 0.8 * torch.randn(1, channels, 16, 16, generator=torch.Generator().manual_seed(3))
            for cfg in CFGS:
                errors = []
                for steps in STEPS:
                    out = round_trip.round_trip(model, positive, negative, {"samples": latent}, steps, 1.0, scheduler, cfg)
                    errors.append(out["result"][1])
                rows.append((name, cfg, errors))
                print(name, cfg, [f"{e:.3f}" for e in errors], flush=True)
    table = Table(("model", "cfg", *(f"{s} steps" for s in STEPS)), "l" * (2 + len(STEPS)))
    for name, cfg, errors in rows:
        table.add(f"tiny {name}", f"{cfg:g}", *(f"{e:.3f}" for e in errors))
    text = ("# DDIM inversion: round-trip error against guidance and steps\n\n"
            f"`python -m benchmarks.inversion_drift` ({time.monotonic() - t0:.0f} s). Relative RMS error in latent "
            "space of invert-then-regenerate with the same model and prompt (0 = exact), full depth, guidance "
            "the same both ways; a fixed random 16 x 16 latent; the tiny seeded test models.\n\n" + str(table) + "\n")
    publish(text, OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
