"""The shipped UI workflows in the host's own web UI, driven by headless Chromium (selenium).

For each UI-format workflow (``workflows/*.json``, ``example_workflows/*.json``; the API-format
files in ``workflows/api/`` are not UI workflows) this loads it in the page with
``app.loadGraphData`` and checks what a person dragging the file in would see:

* every node type registered with LiteGraph, and no dialog (the 2024 UI's "the following node
  types were not found" one, or any other) after loading;
* every node gets back its saved widget values, one widget per value, and every combo value
  (checkpoint, image, sampler, mode...) is among the widget's choices;
* no SEVERE entry in the browser console (network noise that is not about the workflow aside:
  favicon, optional user files, requests to other hosts);
* then it presses the UI's queue button ("Queue Prompt" in the 2024 UI, "Run" in current front
  ends), takes the prompt_id from the page's own POST /prompt and waits (over ``/history``) for
  it to finish successfully, with every SaveImage writing its file.

Workflows that need nodes the 2024 host lacks (SamplerCustomAdvanced, guiders, noise nodes)
are skipped there with the reason; they are checked against current hosts (``COMFYUI_PATH`` +
``COMFY_PYTHON``; also verified with ComfyUI 0.3.64 and its frontend package 1.27.10).

The server gets a tiny seeded SD1.5 checkpoint (with a random full-size CLIP, so
CLIPTextEncode works) under every name the workflows' CheckpointLoaderSimple nodes use (the
SDXL workflow's name included: the UI and the graph do not care what the file holds), a tiny
seeded SD1.5 ControlNet under every name their ControlNetLoader nodes use, and images
under every name their LoadImage nodes use: the one the repository ships under that name
(``workflows/inputs/``), else a generated edge map for images feeding a ``condition`` input and
a photo otherwise. CPU time: prompts run on 128 px copies of the images (swapped in after the
page has shown the full-size ones), and ImageScale / EmptyLatentImage / LatentUpscale sizes are
capped at 128 px in the page before queueing (the SDXL workflow scales to 1024 px); the diffusion
matcher's output_block is set to 1 there (the tiny U-Net has output blocks 0..1).

A screenshot of the loaded edge->photo workflow goes to ``docs/workflow_sd15.png`` when that
file is missing or ``MIDMS_UPDATE_SCREENSHOT=1`` (always to the test's tmp dir).

Needs ``bash scripts/get_browser.sh`` (Debian chromium + chromium-driver, selenium in the host's
venv). Without them it skips, or fails when ``MIDMS_REQUIRE_COMFYUI`` is set.
``MIDMS_UI_WORKFLOWS=DIR`` checks DIR/*.json instead of the shipped workflows;
``MIDMS_CHROMIUM`` / ``MIDMS_CHROMEDRIVER`` name the browser and driver.
Run: .venv-comfy/bin/python -m pytest tests/comfy/test_web_ui.py -q   (~30 s on 2 cores)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from harness.host import (REPO, REQUIRE_ENV, ComfyServer, execution_error, require_host,
                              succeeded)
from harness.tiny_models import write_tiny_sd15_checkpoint, write_tiny_sd15_controlnet

WORKFLOW_DIRS = ("workflows", "example_workflows")
# Where a workflow's LoadImage file may ship in the repo (used before generating one).
IMAGE_DIRS = ("workflows", "workflows/input", "workflows/inputs", "example_workflows",
              "example_workflows/input", "example_workflows/inputs", "examples", "assets", "docs")
SCREENSHOT = REPO / "docs" / "workflow_sd15.png"
VIEWPORT = (1600, 1000)
TINY_LAST_OUTPUT_BLOCK = 1      # the tiny SD1.5 checkpoint's U-Net has output blocks 0..1
SCREENSHOT_SCALE = 0.75          # graph zoom in the screenshot (widget text needs >= 0.6)
SCREENSHOT_MAX = (2400, 1800)
# Nodes that current ComfyUI has and the 2024-03 snapshot does not.
NEWER_HOST_NODES = {"SamplerCustomAdvanced", "BasicGuider", "CFGGuider", "DualCFGGuider",
                    "RandomNoise", "DisableNoise", "AddNoise", "SamplerCFGPP", "ModelSamplingSD3",
                    "FluxGuidance"}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio")
# Prompts run on input images of this size (longer side): the shipped 512 px ones make the tiny
# checkpoint's 64 x 64-latent U-Net run for minutes on 2 CPU cores. The page shows the full-size
# ones (screenshot); small copies replace them just before the first prompt is queued.
INPUT_SIZE = 128
PAGE_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------
# the workflows
# --------------------------------------------------------------------------------------------
def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def ui_workflows() -> List[Path]:
    """The shipped UI workflows (``MIDMS_UI_WORKFLOWS=DIR`` checks DIR/*.json instead)."""
    dirs = [Path(os.environ["MIDMS_UI_WORKFLOWS"])] if os.environ.get("MIDMS_UI_WORKFLOWS") \
        else [REPO / d for d in WORKFLOW_DIRS]
    found = []
    for d in dirs:
        for path in sorted(d.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                found.append(path)  # reported as a failure by the test
                continue
            if is_ui_workflow(data):
                found.append(path)
    return found


WORKFLOWS = ui_workflows()


def screenshot_workflow(paths: List[Path]) -> Optional[Path]:
    """The edge->photo SD1.5 workflow the README shows."""
    def score(p: Path):
        n = p.stem.lower()
        return ("edge" in n and "photo" in n, "edge" in n, "sd15" in n or "sd1" in n, "custom" not in n)
    return max(paths, key=score) if paths else None


def _load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def _nodes_of(wf: Dict[str, Any], node_type: str) -> List[Dict[str, Any]]:
    return [n for n in wf["nodes"] if n.get("type") == node_type]


def image_roles(wf: Dict[str, Any]) -> Dict[str, str]:
    """``{LoadImage file name: "condition" | "exemplar"}``, following links downstream from each
    LoadImage to the MIDMs Exemplar Encode input it ends up in (file name as a fallback)."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    out_links: Dict[Any, List[list]] = {}
    for link in wf.get("links") or []:
        out_links.setdefault(link[1], []).append(link)
    roles = {}
    for node in _nodes_of(wf, "LoadImage"):
        name = (node.get("widgets_values") or [None])[0]
        if not isinstance(name, str):
            continue
        role = None
        seen, todo = {node["id"]}, deque([node["id"]])
        while todo and role is None:
            for link in out_links.get(todo.popleft(), []):
                target = nodes.get(link[3])
                if target is None or target["id"] in seen:
                    continue
                if target.get("type") == "MIDMsExemplarEncode":
                    slots = target.get("inputs") or []
                    slot = slots[link[4]]["name"] if link[4] < len(slots) else ""
                    if slot in ("condition", "exemplar"):
                        role = slot
                        break
                seen.add(target["id"])
                todo.append(target["id"])
        if role is None:
            low = name.lower()
            role = "condition" if any(k in low for k in ("edge", "cond", "canny", "sketch", "pose",
                                                          "seg", "line")) else "exemplar"
        roles[name] = role
    return roles


def _write_test_images(directory: Path) -> Dict[str, Path]:
    """A 128 px photo (skimage's astronaut) and the edge map of its mirror image."""
    import numpy as np
    import skimage.color
    import skimage.data
    import skimage.feature
    import skimage.transform
    from PIL import Image

    photo = skimage.transform.resize(skimage.data.astronaut(), (INPUT_SIZE, INPUT_SIZE),
                                     anti_aliasing=True)
    edges = skimage.feature.canny(skimage.color.rgb2gray(photo[:, ::-1]), sigma=1.5)
    paths = {"exemplar": directory / "exemplar.png", "condition": directory / "condition.png"}
    Image.fromarray((photo * 255).astype(np.uint8)).save(paths["exemplar"])
    Image.fromarray((np.stack([edges] * 3, -1) * 255).astype(np.uint8)).save(paths["condition"])
    return paths


def _small_copy(src: Path, dest: Path, size: int = None) -> None:
    """``src`` scaled so that its longer side is INPUT_SIZE (CPU time: the tiny U-Net's
    attention grows with the square of the latent's area)."""
    from PIL import Image

    size = size or INPUT_SIZE
    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = size / max(im.size)
        if scale < 1:
            im = im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))),
                           Image.LANCZOS)
        im.save(dest)


def _shipped_image(name: str) -> Optional[Path]:
    for d in IMAGE_DIRS:
        p = REPO / d / name
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------------------------
def _find_exe(env: str, candidates) -> Optional[str]:
    if os.environ.get(env):
        candidates = (os.environ[env],)
    for c in candidates:
        p = c if os.path.isabs(c) else shutil.which(c)
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def require_browser():
    """(selenium webdriver module, chromium path, chromedriver path), or skip/fail."""
    problems = []
    try:
        from selenium import webdriver  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed in this interpreter")
    chromium = _find_exe("MIDMS_CHROMIUM", ("/usr/lib/chromium/chromium", "/usr/bin/chromium",
                                            "chromium", "chromium-browser", "google-chrome"))
    driver = _find_exe("MIDMS_CHROMEDRIVER", ("/usr/bin/chromedriver", "chromedriver"))
    if chromium is None:
        problems.append("no chromium binary (MIDMS_CHROMIUM)")
    if driver is None:
        problems.append("no chromedriver (MIDMS_CHROMEDRIVER)")
    if problems:
        reason = "; ".join(problems) + ": run `bash scripts/get_browser.sh`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    return webdriver, chromium, driver


def start_browser(chromium: str, chromedriver: str, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}")
    opts.add_argument(f"--user-data-dir={profile / 'profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Chromium leaves its singleton-socket dirs in TMPDIR: keep them in the profile's folder.
    tmpdir = profile / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir))
    drv = webdriver.Chrome(service=Service(chromedriver, env=env), options=opts)
    drv.set_script_timeout(PAGE_TIMEOUT)
    # The viewport itself (not the window, which includes browser chrome) is VIEWPORT.
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
    return drv


# Console noise that is not about the workflow: the 2024 host has no favicon.ico; newer front
# ends probe optional user files (user.css, /api/userdata/...) and reach out to api.comfy.org,
# which this offline machine cannot resolve.
BENIGN_NETWORK = ("/favicon.ico", "/user.css", "/api/userdata")


def severe_console_entries(driver, server_url: str) -> List[Dict[str, Any]]:
    """SEVERE browser-console entries since the last call (the log drains on read), without
    network noise (BENIGN_NETWORK, requests to other hosts than ``server_url``)."""
    out = []
    for e in driver.get_log("browser"):
        msg = e.get("message", "")
        if e.get("level") != "SEVERE":
            continue
        if e.get("source") == "network":
            url = msg.split(" ", 1)[0]
            if not url.startswith(server_url) or any(b in url for b in BENIGN_NETWORK):
                continue
        out.append(e)
    return out


# Runs in the page (async script: the last argument is selenium's callback).
JS_LOAD = r"""
const [workflow, done] = arguments;
(async () => {
  const types = workflow.nodes.map(n => n.type);
  const unregistered = [...new Set(types.filter(t => !(t in LiteGraph.registered_node_types)))];
  const dialog = app.ui?.dialog;  // the 2024 UI's ComfyDialog (newer front ends keep one)
  dialog?.close();
  await app.loadGraphData(workflow);
  const visible = !!dialog && dialog.element.style.display !== "none";
  const nodes = app.graph._nodes.map(node => ({
    id: node.id, type: node.type, title: node.title,
    widgets: (node.widgets || []).map(w => ({
      name: w.name, type: w.type, value: w.value,
      choices: w.type === "combo" ? (typeof w.options.values === "function"
        ? w.options.values() : w.options.values) : null,
    })),
  }));
  done({unregistered, dialog: visible ? dialog.textElement.innerText : null,
        missingDialog: !!document.querySelector(".comfy-missing-nodes") && visible,
        nodes, links: Object.keys(app.graph.links || {}).length});
})().catch(e => done({exception: String(e && e.stack || e)}));
"""

# Capture what the page's api.queuePrompt answers (the prompt_id), then press "Queue Prompt".
JS_HOOK_QUEUE = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const { api } = await import("/scripts/api.js");
  window.__midmsQueued = [];
  if (!api.__midmsHooked) {
    const orig = api.queuePrompt.bind(api);
    api.queuePrompt = async (number, prompt) => {
      try {
        const res = await orig(number, prompt);
        window.__midmsQueued.push({ok: true, res});
        return res;
      } catch (e) {
        window.__midmsQueued.push({ok: false, error: String(e), response: e.response || null});
        throw e;
      }
    };
    api.__midmsHooked = true;
  }
  done(true);
})().catch(e => done(String(e)));
"""

# The visible "Queue Prompt" button: the 2024 UI's side menu (#queue-button), or the "Run"
# button of newer front ends (which keep a hidden legacy #queue-button).
JS_QUEUE_BUTTON = r"""
const shown = (b) => b && b.offsetParent !== null && b.getBoundingClientRect().width > 0;
const legacy = document.getElementById("queue-button");
if (shown(legacy)) return legacy;
for (const label of ["Run", "Queue", "Queue Prompt"]) {
  const b = [...document.querySelectorAll(`button[aria-label="${label}"]`)].find(shown);
  if (b) return b;
}
return null;
"""

# CPU-time and tiny-model overrides, applied in the page after the load checks and before
# queueing: image and latent sizes are capped at INPUT_SIZE px (the SDXL workflow scales its
# condition to 1024 px), and the diffusion matcher's output_block at the tiny U-Net's last one.
JS_CAP_SIZES = r"""
const cap = arguments[0], lastBlock = arguments[1];
const changed = [];
for (const node of app.graph._nodes) {
  if (node.type === "MIDMsDiffusionFeatureMatcher") {
    for (const w of node.widgets || []) {
      if (w.name === "output_block" && w.value > lastBlock) {
        changed.push(`${node.id} ${node.type}.${w.name}: ${w.value} -> ${lastBlock}`);
        w.value = lastBlock;
      }
    }
  }
  if (!["ImageScale", "EmptyLatentImage", "LatentUpscale"].includes(node.type)) continue;
  for (const w of node.widgets || []) {
    if (["width", "height"].includes(w.name) && typeof w.value === "number" && w.value > cap) {
      changed.push(`${node.id} ${node.type}.${w.name}: ${w.value} -> ${cap}`);
      w.value = cap;
    }
  }
}
return changed;
"""

JS_BBOX = r"""
const title = LiteGraph.NODE_TITLE_HEIGHT;
let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
for (const n of app.graph._nodes) {
  x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
  x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
}
for (const g of app.graph._groups || []) {
  x0 = Math.min(x0, g.pos[0]); y0 = Math.min(y0, g.pos[1]);
  x1 = Math.max(x1, g.pos[0] + g.size[0]); y1 = Math.max(y1, g.pos[1] + g.size[1]);
}
return [x0, y0, x1 - x0, y1 - y0];
"""

# Centre the graph's bounding box in a width x height canvas at the given scale
# (LiteGraph: screen = (graph + ds.offset) * ds.scale).
JS_FIT = r"""
const [bbox, width, height, scale] = arguments;
const [x0, y0, bw, bh] = bbox;
const ds = app.canvas.ds;
ds.scale = scale;
ds.offset[0] = (width / scale - bw) / 2 - x0;
ds.offset[1] = (height / scale - bh) / 2 - y0;
app.canvas.setDirty(true, true);
app.canvas.draw(true, true);
return [app.canvas.canvas.width, app.canvas.canvas.height];
"""


def _wait_js(driver, expr: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + expr)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready in {timeout:.0f} s")


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_exes():
    _, chromium, driver = require_browser()
    return chromium, driver


@pytest.fixture(scope="module")
def web_host(browser_exes):
    return require_host()


@pytest.fixture(scope="module")
def ui_server(web_host, tmp_path_factory):
    assert WORKFLOWS, ("no UI workflow found in " + ", ".join(f"{d}/*.json" for d in WORKFLOW_DIRS)
                       + ": the pack must ship its workflows")
    tmp = tmp_path_factory.mktemp("webui")
    ckpt = controlnet = None
    generated = _write_test_images(tmp)
    small_inputs: Dict[Path, Path] = {}
    with ComfyServer(web_host) as srv:
        for path in WORKFLOWS:
            try:
                wf = _load(path)
            except ValueError:
                continue
            if not is_ui_workflow(wf):
                continue
            for node in _nodes_of(wf, "CheckpointLoaderSimple"):
                name = (node.get("widgets_values") or [None])[0]
                if isinstance(name, str):
                    if ckpt is None:
                        ckpt = write_tiny_sd15_checkpoint(tmp / "tiny_sd15_clip.safetensors",
                                                          seed=0, with_clip=True)["path"]
                    srv.add_model("checkpoints", ckpt, name=name)
            for node in _nodes_of(wf, "ControlNetLoader"):  # the tiny SD1.5 ControlNet
                name = (node.get("widgets_values") or [None])[0]
                if isinstance(name, str):
                    if controlnet is None:
                        controlnet = write_tiny_sd15_controlnet(tmp / "tiny_sd15_controlnet.safetensors",
                                                                seed=0)["path"]
                    srv.add_model("controlnet", controlnet, name=name)
            for name, role in image_roles(wf).items():
                dest = srv.input_dir / name
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shipped = _shipped_image(name)
                    if shipped is None:
                        srv.add_input_image(generated[role], name=name)
                    else:
                        shutil.copyfile(shipped, dest)
                        small = tmp / "small" / name
                        small.parent.mkdir(parents=True, exist_ok=True)
                        _small_copy(shipped, small)
                        small_inputs[dest] = small
            for node in _nodes_of(wf, "MIDMsLoadKeypoints"):  # keypoint files ship beside the images
                name = (node.get("widgets_values") or [None])[0]
                if isinstance(name, str) and not (srv.input_dir / name).exists():
                    shutil.copyfile(REPO / "workflows" / "inputs" / name, srv.input_dir / name)
        srv.midms_small_inputs = small_inputs
        yield srv


def _serve_small_inputs(server: ComfyServer) -> None:
    """Swap the full-size input images for their small copies (once, before the first run)."""
    for dest, small in server.midms_small_inputs.items():
        shutil.copyfile(small, dest)
    server.midms_small_inputs = {}


@pytest.fixture(scope="module")
def page(ui_server, web_host, browser_exes):
    chromium, chromedriver = browser_exes
    profile = Path(tempfile.mkdtemp(prefix="midms-chromium-"))
    driver = start_browser(chromium, chromedriver, profile)
    try:
        driver.get(ui_server.url)
        _wait_js(driver, "!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph)",
                 PAGE_TIMEOUT, "window.app")
        startup_errors = severe_console_entries(driver, ui_server.url)
        if web_host.is_2024_snapshot or any("midms" in e["message"].lower() for e in startup_errors):
            assert not startup_errors, f"browser console errors while the UI started: {startup_errors}"
        elif startup_errors:  # a newer front end's own start-up trouble: report, do not fail
            warnings.warn(f"browser console errors while the host's UI started: {startup_errors}")
        hooked = driver.execute_async_script(JS_HOOK_QUEUE)
        assert hooked is True, hooked
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def widget_problems(wf: Dict[str, Any], loaded: List[Dict[str, Any]]) -> List[str]:
    """Saved widgets_values vs the widgets the page built for each node."""
    by_id = {n["id"]: n for n in loaded}
    problems = []
    for node in wf["nodes"]:
        got = by_id.get(node["id"])
        where = f"node {node['id']} ({node.get('type')})"
        if got is None:
            problems.append(f"{where}: not in the loaded graph")
            continue
        saved = node.get("widgets_values")
        widgets = got["widgets"]
        if saved is None:
            saved = []
        if isinstance(saved, dict):  # some front-end nodes save {name: value}
            saved = [saved.get(w["name"]) for w in widgets]
        if len(saved) != len(widgets):
            problems.append(f"{where}: {len(saved)} saved widget values {saved!r} but the UI built "
                            f"{len(widgets)} widgets {[w['name'] for w in widgets]}")
            continue
        for value, w in zip(saved, widgets):
            if not _same(value, w["value"]):
                problems.append(f"{where}: widget {w['name']!r} is {w['value']!r} after loading, "
                                f"saved {value!r}")
            if w["type"] == "combo" and w["choices"] is not None and w["value"] not in w["choices"]:
                problems.append(f"{where}: combo {w['name']!r} value {w['value']!r} is not among "
                                f"its choices {w['choices'][:12]!r}")
    return problems


def _set_viewport(driver, width: int, height: int) -> List[int]:
    """Resize the page; returns the graph canvas's CSS size once it has followed."""
    before = driver.execute_script("return [app.canvas.canvas.clientWidth, app.canvas.canvas.clientHeight]")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.execute_script("window.dispatchEvent(new Event('resize'));")
    if [width, height] != before:
        try:
            _wait_js(driver, f"app.canvas.canvas.clientWidth !== {before[0]} || "
                             f"app.canvas.canvas.clientHeight !== {before[1]}", 5, "canvas resize")
        except TimeoutError:
            pass  # a front end whose canvas does not fill the page: use what it has
    time.sleep(0.2)
    return driver.execute_script("return [app.canvas.canvas.clientWidth, app.canvas.canvas.clientHeight]")


JS_SCREENSHOT_MODE = r"""
const on = arguments[0];
const menu = document.querySelector('.comfy-menu');  // the 2024 UI's floating side menu
if (on) {
  window.__midmsCanvasFlags = [app.canvas.show_info, app.canvas.render_canvas_border,
                               menu ? menu.style.display : null];
  app.canvas.show_info = false; app.canvas.render_canvas_border = false;
  if (menu) menu.style.display = 'none';
} else {
  const [info, border, display] = window.__midmsCanvasFlags;
  app.canvas.show_info = info; app.canvas.render_canvas_border = border;
  if (menu) menu.style.display = display;
  app.canvas.setDirty(true, true);
}
"""


def _screenshot(driver, path: Path) -> Dict[str, Any]:
    """Save a PNG of the whole loaded graph, readable: LiteGraph drops widget text below scale
    0.6, so the viewport grows (up to SCREENSHOT_MAX) to show the graph at about
    SCREENSHOT_SCALE; side menu, stats overlay and canvas-border rectangle hidden."""
    _wait_js(driver, "app.graph._nodes.filter(n => n.type === 'LoadImage')"
                     ".every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete))",
             20, "LoadImage previews")
    margin = 24
    bbox = driver.execute_script(JS_BBOX)
    width = int(min(SCREENSHOT_MAX[0], max(VIEWPORT[0], bbox[2] * SCREENSHOT_SCALE + 2 * margin)))
    height = int(min(SCREENSHOT_MAX[1], max(VIEWPORT[1], bbox[3] * SCREENSHOT_SCALE + 2 * margin)))
    driver.execute_script(JS_SCREENSHOT_MODE, True)
    try:
        cw, ch = _set_viewport(driver, width, height)
        scale = min(1.0, (cw - 2 * margin) / bbox[2], (ch - 2 * margin) / bbox[3])
        driver.execute_script(JS_FIT, bbox, cw, ch, scale)
        time.sleep(0.3)
        driver.execute_script("app.canvas.draw(true, true);")
        path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(path)), path
    finally:
        driver.execute_script(JS_SCREENSHOT_MODE, False)
        _set_viewport(driver, *VIEWPORT)
    return {"scale": scale, "size": [width, height], "canvas": [cw, ch], "bbox": bbox}


def _close_dialogs(driver) -> None:
    """Close what an earlier workflow may have left open: the 2024 UI's dialog, and (Escape)
    newer front ends' dialogs."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("app.ui?.dialog?.close?.();")
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()


def _queue_from_ui(driver, server: ComfyServer):
    """Press "Queue Prompt"; return (history entry of the prompt the page sent, how it was
    queued)."""
    from selenium.webdriver.common.by import By

    from selenium.common.exceptions import WebDriverException

    driver.execute_script("window.__midmsQueued = [];")
    button = driver.execute_script(JS_QUEUE_BUTTON)
    if button is None:  # no known button in this front end: what its button calls
        how = "app.queuePrompt(0, 1)"
        driver.execute_script("app.queuePrompt(0, 1);")
    else:
        how = f"the {button.text.strip() or button.get_attribute('aria-label')!r} button"
        try:
            button.click()
        except WebDriverException:  # covered by a dialog a failed earlier test left open
            _close_dialogs(driver)
            button.click()
    queued = _wait_js(driver, "window.__midmsQueued.length && window.__midmsQueued[0]", 30,
                      "the page's POST /prompt")
    dialog = driver.execute_script("const d = app.ui?.dialog; return d && d.element.style.display !== 'none'"
                                   " ? d.textElement.innerText : null")
    assert queued["ok"], f"the server rejected the UI's prompt: {queued} {dialog or ''}"
    res = queued["res"]
    assert not res.get("node_errors"), res
    assert dialog is None, f"the UI showed a dialog after queueing: {dialog}"
    return server.wait(res["prompt_id"], timeout=RUN_TIMEOUT), how


READOUT_NODES = {"MIDMsDDIMRoundTrip"}  # nodes whose ui text web/js/midms_readout.js shows


def _wait_for_readouts(page, node_ids, timeout: float = 15.0) -> Dict[Any, Any]:
    """{node id: the readout text the extension holds for it} once all have one (or at timeout)."""
    script = ("return Object.fromEntries(arguments[0].map(id => "
              "[id, (app.graph.getNodeById(id) || {}).midmsReadout || null]))")
    deadline = time.monotonic() + timeout
    shown = page.execute_script(script, list(node_ids))
    while not all(shown.values()) and time.monotonic() < deadline:
        time.sleep(0.25)
        shown = page.execute_script(script, list(node_ids))
    return shown


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
def test_shipped_ui_workflows_found():
    assert WORKFLOWS, ("no UI workflow in " + ", ".join(f"{d}/*.json" for d in WORKFLOW_DIRS))
    for path in WORKFLOWS:
        data = _load(path)  # valid JSON
        assert data.get("version") is not None and isinstance(data.get("links"), list), path


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_loads_and_queues_in_web_ui(path, page, ui_server, web_host, tmp_path):
    wf = _load(path)
    _close_dialogs(page)
    severe_console_entries(page, ui_server.url)  # drain

    registered = set(page.execute_script("return Object.keys(LiteGraph.registered_node_types)"))
    absent = sorted({n["type"] for n in wf["nodes"]} - registered)
    if absent and web_host.is_2024_snapshot and set(absent) <= NEWER_HOST_NODES:
        pytest.skip(f"{path.name} uses {', '.join(absent)}, which the 2024-03 host lacks; "
                    "checked against current ComfyUI (COMFYUI_PATH) only")

    t0 = time.monotonic()
    report = page.execute_async_script(JS_LOAD, wf)
    load_s = time.monotonic() - t0
    assert "exception" not in report, report["exception"]
    assert not report["unregistered"], f"unknown node types: {report['unregistered']}"
    assert not report["missingDialog"], report["dialog"]
    assert report["dialog"] is None, f"the UI showed a dialog while loading: {report['dialog']}"
    assert len(report["nodes"]) == len(wf["nodes"])
    assert report["links"] == len(wf["links"])
    problems = widget_problems(wf, report["nodes"])
    assert not problems, "\n".join(problems)
    errors = severe_console_entries(page, ui_server.url)
    assert not errors, f"browser console errors while loading {path.name}: {errors}"

    if path == screenshot_workflow(WORKFLOWS):
        shot = tmp_path / "workflow.png"
        fit = _screenshot(page, shot)
        assert fit["scale"] >= 0.6, f"graph too large to show readably: {fit}"
        if not os.environ.get("MIDMS_UI_WORKFLOWS") and (
                not SCREENSHOT.exists() or os.environ.get("MIDMS_UPDATE_SCREENSHOT")):
            shutil.copyfile(shot, SCREENSHOT)

    capped = page.execute_script(JS_CAP_SIZES, INPUT_SIZE, TINY_LAST_OUTPUT_BLOCK)
    _serve_small_inputs(ui_server)
    t1 = time.monotonic()
    entry, how = _queue_from_ui(page, ui_server)
    run_s = time.monotonic() - t1
    assert succeeded(entry), json.dumps(execution_error(entry) or entry.get("status"), indent=1)[:4000]
    saves = [str(n["id"]) for n in wf["nodes"] if n.get("type") == "SaveImage" and n.get("mode", 0) == 0]
    for node_id in saves:
        assert entry["outputs"].get(node_id, {}).get("images"), f"SaveImage {node_id} wrote nothing"
    for f in ui_server.output_files(entry):
        assert f.is_file(), f
    readouts = sorted(n["id"] for n in wf["nodes"] if n.get("type") in READOUT_NODES and n.get("mode", 0) == 0)
    if readouts:  # the pack's front-end extension draws the node's ui text on the node
        shown = _wait_for_readouts(page, readouts)
        assert all("round-trip error" in (text or "") for text in shown.values()), shown
    errors = severe_console_entries(page, ui_server.url)
    assert not errors, f"browser console errors while running {path.name}: {errors}"
    print(f"{path.name}: loaded in {load_s:.2f} s, queued with {how}, ran in {run_s:.2f} s"
          + (f" (sizes capped for CPU: {'; '.join(capped)})" if capped else ""))
