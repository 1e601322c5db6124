#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs pytest.
#  - .venv:       midms_core and its test dependencies (scripts/setup_env.sh)
#  - .comfyui/ + .venv-comfy/: a real ComfyUI host for tests/comfy (scripts/get_comfyui.sh);
#    MIDMS_REQUIRE_COMFYUI=1 makes a missing host a failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/get_comfyui.sh
export MIDMS_REQUIRE_COMFYUI=1
exec .venv/bin/python -m pytest "$@"
