#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with everything the demo and
# the tests need. Idempotent: re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${MIDMS_VENV:-.venv}
# torch is pinned to a CPU-friendly release installed first, so that the unpinned "torch>=2.1"
# of pyproject.toml does not pull the newest CUDA build (several GB) on a CPU machine.
TORCH_SPEC=${MIDMS_TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.midms-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
  # the distribution was called comfyui-midms before it took its registry node id (midms):
  # drop that editable install, or both would stay installed side by side
  if "$VENV/bin/python" -m pip show --quiet comfyui-midms >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall --quiet -y comfyui-midms
  fi
  "$VENV/bin/python" -m pip install --quiet -e ".[test,demo]"
  echo "$want" > "$stamp"
fi
