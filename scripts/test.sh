#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs pytest.
# It runs in the real ComfyUI host's environment (.venv-comfy, built by scripts/get_comfyui.sh
# with a March-2024 ComfyUI snapshot in .comfyui/, or the checkout named by COMFYUI_PATH), so
# the in-process node tests run too. midms_core never imports the host; a test checks that.
# MIDMS_REQUIRE_COMFYUI=1 makes a missing host a failure, never a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/get_comfyui.sh
bash scripts/get_browser.sh   # chromium + chromedriver (apt) and selenium, for tests/comfy/test_web_ui.py
export MIDMS_REQUIRE_COMFYUI=1
python_bin=$(python3 -c 'import json; print(json.load(open(".comfyui/env.json"))["python"])')
exec "$python_bin" -m pytest "$@"
