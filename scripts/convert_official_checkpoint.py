"""Convert an official MIDMs training checkpoint into correspondence networks for ComfyUI.

    python scripts/convert_official_checkpoint.py SRC DST [--force]

SRC: the official checkpoint (.pth/.ckpt/.pt, read with torch.load(weights_only=True) only;
     or a .safetensors state dict). Only the correspondence networks (real_enc, seg_enc,
     iter_enc, layer, theta, phi) are kept; spectral-norm weights are folded.
DST: a .safetensors file; put it in ComfyUI/models/midms/ for the learned matcher loader
     ("MIDMs Learned Matcher"). Its folder is created if missing. An existing DST is only
     overwritten with --force.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from midms_core.networks.convert import convert_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert the official MIDMs training checkpoint into a .safetensors file for ComfyUI/models/midms/."
    )
    parser.add_argument("src", help="official checkpoint (.pth/.ckpt/.pt loaded weights_only, or .safetensors)")
    parser.add_argument("dst", help="output .safetensors, e.g. ComfyUI/models/midms/midms_celebahq.safetensors")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    args = parser.parse_args(argv)

    folder = os.path.dirname(os.path.abspath(args.dst))
    try:
        os.makedirs(folder, exist_ok=True)
        report = convert_file(args.src, args.dst, force=args.force)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
