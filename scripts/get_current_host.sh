#!/usr/bin/env bash
# The current ComfyUI as the second test host (the first is the March-2024 snapshot of
# scripts/get_comfyui.sh), idempotently.
#
# ComfyUI is on no package registry. Its source tarball sits beside the project at
# ../shared/hosts/comfyui-<version>.tar.gz (MIDMS_CURRENT_HOST_TARBALL overrides). This script
# unpacks it into <repo>/.comfyui-current/ (gitignored, never committed) and builds its
# environment <repo>/.venv-comfy-current with scripts/get_comfyui.sh (the host's own
# requirements.txt from the registry, the same torch build as the 2024 host; the pack is linked
# into custom_nodes by the test harness, not pip-installed).
#
# Prints "python=..." and "comfyui=..." like get_comfyui.sh. Exits 3, with a line on stderr,
# when there is no tarball (the caller decides whether that is an error).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$REPO/.comfyui-current"
log() { echo "[get_current_host] $*" >&2; }

tarball="${MIDMS_CURRENT_HOST_TARBALL:-}"
if [ -z "$tarball" ]; then
  tarball="$(ls -1 "$REPO"/../shared/hosts/comfyui-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "$tarball" ] || [ ! -f "$tarball" ]; then
  log "no current ComfyUI tarball (looked for ${MIDMS_CURRENT_HOST_TARBALL:-$REPO/../shared/hosts/comfyui-*.tar.gz})"
  exit 3
fi

sum="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ -f "$DEST/ComfyUI/main.py" ] && [ "$(cat "$DEST/.source" 2>/dev/null)" = "$sum" ]; then
  log "ComfyUI from $(basename "$tarball") already in $DEST"
else
  log "unpacking $(basename "$tarball") into $DEST"
  rm -rf "$DEST/ComfyUI"
  mkdir -p "$DEST"
  tar xzf "$tarball" -C "$DEST"
  [ -f "$DEST/ComfyUI/main.py" ] || { log "$tarball has no ComfyUI/main.py"; exit 1; }
  echo "$sum" > "$DEST/.source"
fi

COMFYUI_PATH="$DEST/ComfyUI" MIDMS_COMFY_VENV="${MIDMS_CURRENT_VENV:-$REPO/.venv-comfy-current}" \
  MIDMS_COMFY_STATE_DIR="$DEST" bash "$REPO/scripts/get_comfyui.sh"
