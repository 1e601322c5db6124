#!/usr/bin/env bash
# The main job, from a fresh machine: installs a real ComfyUI host with this pack (see
# scripts/get_comfyui.sh), then
#  1. matches real photos with the training-free matcher -> output/demo.png + output/demo.json
#     (pixel-level warp, confidence mask, accuracy against the known deformation);
#  2. runs the shipped workflow workflows/api/midms_edge_to_photo_sd15.api.json end to end in a
#     headless ComfyUI -> output/comfyui/ (figure.png, each output image, summary.json).
# Set MIDMS_CHECKPOINT=/path/to/an/sd15.safetensors to run it with real weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/get_comfyui.sh
python_bin=$(python3 -c 'import json; print(json.load(open(".comfyui/env.json"))["python"])')
"$python_bin" -m midms_core.demo --out output/demo.png --json output/demo.json
exec "$python_bin" scripts/demo_comfyui.py "$@"
