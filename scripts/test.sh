#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs pytest.
# It runs in the real ComfyUI host's environment (.venv-comfy, built by scripts/get_comfyui.sh
# with a March-2024 ComfyUI snapshot in .comfyui/, or the checkout named by COMFYUI_PATH), so
# the in-process node tests run too. midms_core never imports the host; a test checks that.
# Then the host suite (tests/comfy) runs again on the current ComfyUI when its source tarball is
# beside the project (scripts/get_current_host.sh: ../shared/hosts/comfyui-*.tar.gz), so the
# nodes the 2024 host lacks (SamplerCustomAdvanced, the template browser) are checked too. There
# the web-UI test also opens the workflows in the newest front end from the registry
# (scripts/get_frontend.sh: comfyui-frontend-package, cached in .cache/frontend/), served with
# --front-end-root, besides the host's own.
# MIDMS_REQUIRE_COMFYUI=1 makes a missing host a failure, never a silent skip;
# MIDMS_REQUIRE_CURRENT_HOST=1 does the same for the current host's tarball.
# Arguments go to both pytest runs; without test paths among them the second run is tests/comfy.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/get_comfyui.sh
bash scripts/get_browser.sh   # chromium + chromedriver (apt) and selenium, for tests/comfy/test_web_ui.py
export MIDMS_REQUIRE_COMFYUI=1
python_bin=$(python3 -c 'import json; print(json.load(open(".comfyui/env.json"))["python"])')
status=0
"$python_bin" -m pytest "$@" || status=$?
echo "[test] March-2024 host: pytest exit $status after $(( $(date +%s) - t0 )) s" >&2

t1=$(date +%s)
set +e
current="$(bash scripts/get_current_host.sh)"
got=$?
set -e
if [ "$got" -eq 0 ]; then
  cur_py="$(printf '%s\n' "$current" | sed -n 's/^python=//p')"
  cur_root="$(printf '%s\n' "$current" | sed -n 's/^comfyui=//p')"
  COMFY_PYTHON="$cur_py" bash scripts/get_browser.sh   # selenium in that interpreter too
  # the newest front end for test_web_ui (it fails, under MIDMS_REQUIRE_COMFYUI, without it)
  PYTHON="$cur_py" bash scripts/get_frontend.sh >/dev/null || echo "[test] scripts/get_frontend.sh failed" >&2
  echo "[test] the host suite again on the current ComfyUI ($cur_root)" >&2
  cur_status=0
  # the host suite only, unless the arguments name test paths themselves
  names_path=0
  for arg in "$@"; do [ -e "${arg%%::*}" ] && names_path=1; done
  [ "$names_path" -eq 1 ] || set -- "$@" tests/comfy
  COMFYUI_PATH="$cur_root" COMFY_PYTHON="$cur_py" "$cur_py" -m pytest "$@" || cur_status=$?
  echo "[test] current host: pytest exit $cur_status after $(( $(date +%s) - t1 )) s" >&2
  [ "$cur_status" -eq 0 ] || status=$cur_status
elif [ "$got" -eq 3 ] && [ "${MIDMS_REQUIRE_CURRENT_HOST:-0}" != "1" ]; then
  echo "[test] no current ComfyUI tarball: the host suite ran on the March-2024 host only" >&2
else
  echo "[test] the current host could not be set up (exit $got)" >&2
  status=1
fi
exit $status
