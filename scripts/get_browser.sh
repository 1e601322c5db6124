#!/usr/bin/env bash
# Headless browser for tests/comfy/test_web_ui.py, idempotently:
#   - Debian's chromium + chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver), via apt
#     (needs root; `apt-get update` only when the package lists do not know chromium yet);
#   - selenium (PyPI) in the host's interpreter (the "python" of .comfyui/env.json, written by
#     scripts/get_comfyui.sh; COMFY_PYTHON overrides it).
# Run it after scripts/get_comfyui.sh. Nothing is downloaded when both are already there.
#
#   MIDMS_SKIP_BROWSER=1   do nothing (the web-UI test then skips, or fails under
#                          MIDMS_REQUIRE_COMFYUI)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

log() { echo "[get_browser] $*" >&2; }
[ "${MIDMS_SKIP_BROWSER:-0}" = "1" ] && { log "MIDMS_SKIP_BROWSER=1: skipped"; exit 0; }
t0=$(date +%s)

# --- 1. chromium + chromedriver (Debian) -----------------------------------------------------
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  log "chromium already installed"
else
  SUDO=()
  if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 || { log "need root (or sudo) to apt-get install chromium"; exit 1; }
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show chromium chromium-driver >/dev/null 2>&1; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq
  fi
  log "apt-get install chromium chromium-driver"
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null >&2 || { log "chromium does not run"; exit 1; }

# --- 2. selenium in the host's interpreter ---------------------------------------------------
PY="${COMFY_PYTHON:-}"
if [ -z "$PY" ]; then
  [ -f .comfyui/env.json ] || { log ".comfyui/env.json missing: run scripts/get_comfyui.sh first"; exit 1; }
  PY="$(python3 -c 'import json; print(json.load(open(".comfyui/env.json"))["python"])')"
fi
if "$PY" -c "import selenium" 2>/dev/null; then
  log "selenium already in $PY"
else
  log "pip install selenium into $PY"
  "$PY" -m pip install --quiet "selenium>=4.10" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
fi
"$PY" -c "import selenium; print('[get_browser] selenium', selenium.__version__)" >&2
log "done in $(( $(date +%s) - t0 )) s"
