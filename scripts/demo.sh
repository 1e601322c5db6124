#!/usr/bin/env bash
# The main job: installs what it needs, then runs the MIDMs demo on photos that ship with
# scikit-image and writes output/demo.png (+ output/demo.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m midms_core.demo --out output/demo.png --json output/demo.json "$@"
