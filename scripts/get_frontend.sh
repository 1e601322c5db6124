#!/usr/bin/env bash
# A newer ComfyUI web front end for tests/comfy/test_web_ui.py, idempotently.
#
# The front end is published on PyPI as comfyui-frontend-package; its wheel carries the built
# site in comfyui_frontend_package/static, which ComfyUI serves with `--front-end-root DIR`.
# This downloads the wheel (pip download, no dependencies, nothing installed), unpacks that
# folder into <repo>/.cache/frontend/<version>/static (gitignored, never committed) and prints
#   frontend=<that folder>
# Nothing is downloaded when the folder is already there.
#
#   MIDMS_FRONTEND_VERSION=1.58.1   which release (default below)
#   MIDMS_SKIP_FRONTEND=1           do nothing, print nothing (the browser test then skips the
#                                   newer front end, or fails under MIDMS_REQUIRE_COMFYUI;
#                                   MIDMS_FRONTENDS=host runs the host's own front end only)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="${MIDMS_FRONTEND_VERSION:-1.58.1}"
DEST="$REPO/.cache/frontend/$VERSION"
PYTHON="${PYTHON:-python3}"
log() { echo "[get_frontend] $*" >&2; }

[ "${MIDMS_SKIP_FRONTEND:-0}" = "1" ] && { log "MIDMS_SKIP_FRONTEND=1: skipped"; exit 0; }
if [ -f "$DEST/static/index.html" ]; then
  log "comfyui-frontend-package $VERSION already in $DEST"
else
  log "fetching comfyui-frontend-package==$VERSION"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
    "comfyui-frontend-package==$VERSION" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  whl="$(ls "$tmp"/comfyui_frontend_package-*.whl)"
  rm -rf "$DEST" "$DEST.part"
  mkdir -p "$(dirname "$DEST")"
  "$PYTHON" - "$whl" "$DEST.part" <<'EOF'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "comfyui_frontend_package/static/"
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            target = os.path.join(dest, "static", info.filename[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
EOF
  [ -f "$DEST.part/static/index.html" ] || { log "$whl has no static/index.html"; exit 1; }
  mv "$DEST.part" "$DEST"
fi
echo "frontend=$DEST/static"
