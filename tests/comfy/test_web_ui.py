"""The shipped UI workflows in the web UI, driven by headless Chromium (selenium).

Front ends and views (``harness.web_ui.ui_configs``): on the 2024 host its own (legacy) UI, which
has only the canvas; on a current host (``COMFYUI_PATH`` + ``COMFY_PYTHON``, ComfyUI 0.3.75 in
CI) its own front end (comfyui-frontend-package 1.32.9) AND, served with ``--front-end-root``,
1.58.1 (the newest) and 1.27.10 from the registry (``scripts/get_frontend.sh`` unpacks them into
``.cache/frontend/``), each in the classic canvas and the Vue node view, switched through the
page's settings API (``Comfy.VueNodes.Enabled``). ``MIDMS_FRONTENDS=host`` limits a run to the
host's own front end. Each current-host server has a user directory of its own, seeded so the
front end does not open its template browser over the graph.

``test_workflow_opens_clean`` (every workflow, every front end and view; load only): what a
person opening the file sees once the front end has sized every node:

* every node type registered, no dialog after loading (the 2024 UI's "node types were not
  found" one, or any other);
* no SEVERE browser-console entry, without the network noise that is not the pack's (favicon,
  optional user files, other hosts; and for the newer front end exactly the endpoints it asks an
  older backend for and gets 404: ``harness.web_ui.NEWER_FRONTEND_ENDPOINTS``);
* no two node rectangles overlap, and every node is wholly inside its group (below the title
  bar) or wholly outside it. Rectangles are read from the page after LoadImage previews loaded:
  classic, node.pos / node.size + title bar; Vue view, the node's DOM element at zoom 1 (1.27's
  Vue view drops text widgets and images below zoom 0.8 and only mounts the nodes on screen, so
  the graph is panned over in tiles). Vue views that size nodes from their content whatever their
  saved size (1.27's experimental one: every node with a widget at least 430 px wide, rows 1.5x
  as tall; 1.32's for image nodes: full-width previews) must show none either: the shipped
  layouts keep room for what they draw (``scripts/layout_workflows.py --room-for-unsized``).
  In a Vue view the view is switched off and on after loading (``remount_vue_view``): 1.27's
  keeps showing the nodes of the graph it was switched on with otherwise.
  A screenshot of the graph goes to the test's tmp dir when the layout check fails.

``test_readout_on_the_node_after_a_run`` (every front end and view): one run of the round-trip
workflow (the one with a MIDMs DDIM Round Trip node) from the page, its DDIM steps cut to
RUN_STEPS for CPU time; then the readout on the page: a shown textarea inside the node's
rectangle (Vue view: inside the node's own element) holding "round-trip error <number>", and
neither in the saved workflow nor in the API prompt. 1.27's experimental Vue view keeps the value
a text box was drawn with, so there (only) the node is redrawn (zoom out and back) before a
second look, with a warning. Screenshot on failure.

``test_output_tooltips_reach_the_front_end`` (current hosts, each front end): every output of
every MIDMs node has its OUTPUT_TOOLTIPS line in the node definition the page works from.

``test_workflow_loads_and_queues_in_web_ui`` (every workflow, the host's own front end in the
classic view only, for CPU time):

* every node gets back its saved widget values, one widget per value (the pack's readout box is
  not saved), and every combo value (checkpoint, image, sampler, mode...) is among its choices;
* it presses the UI's queue button ("Queue Prompt" in the 2024 UI, "Run" in current front ends),
  takes the prompt_id from the page's own POST /prompt and waits (over ``/history``) for it to
  finish successfully, with every SaveImage writing its file.

Workflows that need nodes the 2024 host lacks (SamplerCustomAdvanced, guiders, noise nodes)
are skipped there with the reason.

The server gets a tiny seeded SD1.5 checkpoint (with a random full-size CLIP, so
CLIPTextEncode works) under every name the workflows' CheckpointLoaderSimple nodes use (the
SDXL workflow's name included: the UI and the graph do not care what the file holds), a tiny
seeded SD1.5 ControlNet under every name their ControlNetLoader nodes use, and images
under every name their LoadImage nodes use: the one the repository ships under that name
(``workflows/inputs/``), else a generated edge map for images feeding a ``condition`` input and
a photo otherwise (``harness.web_ui.stock_server``). CPU time: prompts run on 128 px copies of
the images (swapped in after the page has shown the full-size ones), and ImageScale /
EmptyLatentImage / LatentUpscale sizes are capped at 128 px in the page before queueing (the
SDXL workflow scales to 1024 px); the diffusion matcher's output_block is set to 1 there (the
tiny U-Net has output blocks 0..1).

A screenshot of the loaded edge->photo workflow goes to ``docs/workflow_sd15.png`` when that
file is missing or ``MIDMS_UPDATE_SCREENSHOT=1`` (always to the test's tmp dir).

Needs ``bash scripts/get_browser.sh`` (Debian chromium + chromium-driver, selenium in the host's
venv), and on a current host ``bash scripts/get_frontend.sh``. Without them it skips, or fails
when ``MIDMS_REQUIRE_COMFYUI`` is set. ``MIDMS_UI_WORKFLOWS=DIR`` checks DIR/*.json instead of
the shipped workflows; ``MIDMS_CHROMIUM`` / ``MIDMS_CHROMEDRIVER`` name the browser and driver.
Run: .venv-comfy/bin/python -m pytest tests/comfy/test_web_ui.py -q
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from harness.host import REPO, REQUIRE_ENV, ComfyServer, execution_error, require_host, succeeded
from harness.web_ui import (INPUT_SIZE, JS_BBOX, JS_FIT_ALL, JS_LOAD, JS_RECTS, NEWER_HOST_NODES, SPLIT_FILE_LOADERS,
                            VIEWPORT, WORKFLOW_DIRS, UIConfig, frontend_root, layout_problems, load_json,
                            open_page, page_rects, remount_vue_view, require_browser, serve_small_inputs, set_view,
                            severe_console_entries, start_browser, stock_server, ui_configs,
                            ui_workflows, user_directory_args, wait_js)

SCREENSHOT = REPO / "docs" / "workflow_sd15.png"
TINY_LAST_OUTPUT_BLOCK = 1      # the tiny SD1.5 checkpoint's U-Net has output blocks 0..1
SCREENSHOT_SCALE = 0.75          # graph zoom in the screenshot (widget text needs >= 0.6)
SCREENSHOT_MAX = (2400, 1800)
RUN_TIMEOUT = 120.0
READOUT_NODES = {"MIDMsDDIMRoundTrip"}  # nodes whose ui text web/js/midms_readout.js shows
READOUT_WIDGET = "midms_readout"        # the read-only text box it adds to them (never saved)
RUN_STEPS = 4                   # DDIM steps of the round-trip workflow's run in the view test
READOUT = re.compile(r"round-trip error -?[0-9.]+")

WORKFLOWS = ui_workflows()


def screenshot_workflow(paths: List[Path]) -> Optional[Path]:
    """The edge->photo SD1.5 workflow the README shows."""
    def score(p: Path):
        n = p.stem.lower()
        return ("edge" in n and "photo" in n, "edge" in n, "sd15" in n or "sd1" in n, "custom" not in n)
    return max(paths, key=score) if paths else None


def _load(path: Path) -> Dict[str, Any]:
    return load_json(path)


def _has_readout(wf: Dict[str, Any]) -> List[Any]:
    return sorted(n["id"] for n in wf["nodes"] if n.get("type") in READOUT_NODES and n.get("mode", 0) == 0)


def readout_workflow(paths: List[Path]) -> Optional[Path]:
    """The workflow whose run the view test checks the readout of: the round-trip one."""
    found = []
    for p in paths:
        try:
            if _has_readout(_load(p)):
                found.append(p)
        except (OSError, ValueError):
            pass
    found.sort(key=lambda p: ("two_checkpoints" not in p.stem, p.name))
    return found[0] if found else None


# --------------------------------------------------------------------------------------------
# in the page
# --------------------------------------------------------------------------------------------
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


# The round-trip workflow's run in the view test: its DDIM nodes' steps cut (CPU time).
JS_CUT_STEPS = r"""
const steps = arguments[0];
const changed = [];
for (const node of app.graph._nodes) {
  if (!["MIDMsDDIMRoundTrip", "MIDMsDDIBTranslate"].includes(node.type)) continue;
  for (const w of node.widgets || []) {
    if (w.name === "steps" && w.value > steps) {
      changed.push(`${node.id} ${node.type}.steps: ${w.value} -> ${steps}`);
      w.value = steps;
    }
  }
}
return changed;
"""

# Where a node's readout is on the page: every textarea holding ``needle``, whether it is shown,
# and whether it lies inside the node's rectangle on screen (classic: node.pos / size through the
# canvas transform, the front end placing its DOM widgets over the canvas; Vue view: inside the
# node's own element). Zoom 1, the node in the middle of the canvas.
JS_READOUT = r"""
const [id, needle, vue] = arguments;
const node = app.graph.getNodeById(id);
const ds = app.canvas.ds, c = app.canvas.canvas;
const title = LiteGraph.NODE_TITLE_HEIGHT;
ds.scale = 1;
ds.offset[0] = c.clientWidth / 2 - (node.pos[0] + node.size[0] / 2);
ds.offset[1] = c.clientHeight / 2 - (node.pos[1] + node.size[1] / 2);
app.canvas.setDirty(true, true);
app.canvas.draw(true, true);
const cr = c.getBoundingClientRect();
let box, el = null;
if (vue) {
  el = document.querySelector(`.lg-node[data-node-id="${id}"]`);
  const r = el ? el.getBoundingClientRect() : null;
  box = r && [r.left, r.top, r.right, r.bottom];
} else {
  box = [cr.left + (node.pos[0] + ds.offset[0]) * ds.scale, cr.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
         cr.left + (node.pos[0] + node.size[0] + ds.offset[0]) * ds.scale,
         cr.top + (node.pos[1] + node.size[1] + ds.offset[1]) * ds.scale];
}
const widget = (node.widgets || []).find(w => w.name === "midms_readout");
const shown = [...document.querySelectorAll("textarea")].filter(t => (t.value || "").includes(needle)).map(t => {
  const r = t.getBoundingClientRect(), style = getComputedStyle(t);
  const visible = t.getClientRects().length > 0 && r.width > 4 && r.height > 4
    && style.visibility !== "hidden" && style.display !== "none" && !t.hidden;
  // Vue view: part of the node's own element (not a canvas overlay that happens to lie there)
  const inside = !!box && (!vue || el.contains(t))
    && r.left >= box[0] - 2 && r.top >= box[1] - 2 && r.right <= box[2] + 2 && r.bottom <= box[3] + 2;
  return {text: t.value, visible, inside, inNode: !!el && el.contains(t), rect: [r.left, r.top, r.width, r.height]};
});
return {shown, node: box, widget: widget ? String(widget.value) : null};
"""


def _queue_from_page(driver, server: ComfyServer):
    """Queue the loaded graph the way the UI's button does (app.queuePrompt) and wait for it;
    returns the history entry."""
    driver.execute_script("window.__midmsQueued = [];")
    driver.execute_script("app.queuePrompt(0, 1);")
    queued = wait_js(driver, "window.__midmsQueued.length && window.__midmsQueued[0]", 30,
                     "the page's POST /prompt")
    assert queued["ok"], f"the server rejected the page's prompt: {queued}"
    res = queued["res"]
    assert not res.get("node_errors"), res
    return server.wait(res["prompt_id"], timeout=RUN_TIMEOUT)


def _graph_screenshot(driver, path: Path) -> Path:
    """The whole graph, fitted into the page, as PNG (failure evidence)."""
    try:
        driver.execute_script(JS_FIT_ALL, 1.0)
        time.sleep(0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    except Exception as e:  # the screenshot must not hide the failure it documents
        warnings.warn(f"no screenshot {path}: {e}")
    return path


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
class UIPool:
    """One stocked ComfyServer and one browser page per front end (the host's own, or a
    frontend-package version served with --front-end-root), started on first use and kept for
    the module. The pack is linked into each server's work dir (never into the host checkout, so
    servers of other test runs keep theirs)."""

    def __init__(self, host, exes, tmp: Path):
        self.host, self.exes, self.tmp = host, exes, tmp
        self.servers: Dict[Optional[str], ComfyServer] = {}
        self.pages: Dict[Optional[str], Any] = {}
        self._profiles: List[Path] = []

    def server(self, frontend: Optional[str]) -> ComfyServer:
        if frontend not in self.servers:
            args = UIConfig(frontend, "classic").server_args()
            if not self.host.is_2024_snapshot:  # (the 2024 host has no --user-directory)
                args += user_directory_args(self.tmp / f"user-{frontend or 'host'}")
            srv = ComfyServer(self.host, pack_link="workdir", extra_args=args)
            srv.start()
            self.servers[frontend] = srv
            stock_server(srv, WORKFLOWS, self.tmp / f"stock-{frontend or 'host'}")
        return self.servers[frontend]

    def page(self, frontend: Optional[str]):
        if frontend in self.pages:
            return self.pages[frontend]
        srv = self.server(frontend)
        profile = Path(tempfile.mkdtemp(prefix="midms-chromium-"))
        self._profiles.append(profile)
        driver = start_browser(*self.exes, profile)
        self.pages[frontend] = driver
        open_page(driver, srv.url)
        startup_errors = severe_console_entries(driver, srv.url, newer_frontend=frontend is not None)
        if self.host.is_2024_snapshot or any("midms" in e["message"].lower() for e in startup_errors):
            assert not startup_errors, f"browser console errors while the UI started: {startup_errors}"
        elif startup_errors:  # a front end's own start-up trouble: report, do not fail
            warnings.warn(f"browser console errors while the UI ({frontend or 'host'}) started: "
                          f"{startup_errors}")
        hooked = driver.execute_async_script(JS_HOOK_QUEUE)
        assert hooked is True, hooked
        return driver

    def close(self) -> None:
        for driver in self.pages.values():
            try:
                driver.quit()
            except Exception:
                pass
        for srv in self.servers.values():
            srv.stop()
        for profile in self._profiles:
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_exes():
    return require_browser()


@pytest.fixture(scope="module")
def web_host(browser_exes):
    return require_host()


@pytest.fixture(scope="module")
def ui_pool(web_host, browser_exes, tmp_path_factory):
    assert WORKFLOWS, ("no UI workflow found in " + ", ".join(f"{d}/*.json" for d in WORKFLOW_DIRS)
                       + ": the pack must ship its workflows")
    pool = UIPool(web_host, browser_exes, tmp_path_factory.mktemp("webui"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def ui_server(ui_pool):
    return ui_pool.server(None)


@pytest.fixture(scope="module")
def page(ui_pool):
    driver = ui_pool.page(None)
    set_view(driver, "classic")
    return driver


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
        widgets = [w for w in got["widgets"] if w["name"] != READOUT_WIDGET]  # the pack's, never saved
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
            wait_js(driver, f"app.canvas.canvas.clientWidth !== {before[0]} || "
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
    wait_js(driver, "app.graph._nodes.filter(n => n.type === 'LoadImage')"
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
    queued = wait_js(driver, "window.__midmsQueued.length && window.__midmsQueued[0]", 30,
                      "the page's POST /prompt")
    dialog = driver.execute_script("const d = app.ui?.dialog; return d && d.element.style.display !== 'none'"
                                   " ? d.textElement.innerText : null")
    assert queued["ok"], f"the server rejected the UI's prompt: {queued} {dialog or ''}"
    res = queued["res"]
    assert not res.get("node_errors"), res
    assert dialog is None, f"the UI showed a dialog after queueing: {dialog}"
    return server.wait(res["prompt_id"], timeout=RUN_TIMEOUT), how


def _configs() -> List[UIConfig]:
    from harness.host import find_host
    host = find_host()
    return ui_configs(host.is_2024_snapshot if host is not None else True)


CONFIGS = _configs()
VIEW_CASES = [(c, p) for c in CONFIGS for p in WORKFLOWS]


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
def test_shipped_ui_workflows_found():
    assert WORKFLOWS, ("no UI workflow in " + ", ".join(f"{d}/*.json" for d in WORKFLOW_DIRS))
    for path in WORKFLOWS:
        data = _load(path)  # valid JSON
        assert data.get("version") is not None and isinstance(data.get("links"), list), path
    assert readout_workflow(WORKFLOWS) is not None or os.environ.get("MIDMS_UI_WORKFLOWS"), \
        "no shipped workflow has a MIDMs DDIM Round Trip node: the readout is never checked"


@pytest.mark.parametrize("config,path", VIEW_CASES, ids=[f"{c.name}-{p.stem}" for c, p in VIEW_CASES])
def test_workflow_opens_clean(config, path, ui_pool, web_host, tmp_path):
    _require_frontend(config)
    wf = _load(path)
    driver, server, newer, where = _open_view(ui_pool, config, path)

    registered = set(driver.execute_script("return Object.keys(LiteGraph.registered_node_types)"))
    absent = sorted({n["type"] for n in wf["nodes"]} - registered)
    if absent and web_host.is_2024_snapshot and set(absent) <= NEWER_HOST_NODES:
        pytest.skip(f"{path.name} uses {', '.join(absent)}, which the 2024-03 host lacks")

    shot = tmp_path / f"{config.name}-{path.stem}.png"
    report = driver.execute_async_script(JS_LOAD, wf)
    assert "exception" not in report, report["exception"]
    remount_vue_view(driver, config.view)
    assert not report["unregistered"], f"{where}: unknown node types {report['unregistered']}"
    assert report["dialog"] is None, f"{where}: the UI showed a dialog while loading: {report['dialog']}"

    rects = page_rects(driver, config.view)
    errors = severe_console_entries(driver, server.url, newer)
    assert not errors, f"browser console errors while loading {where}: {errors}"
    problems = layout_problems(rects)
    if problems:
        _graph_screenshot(driver, shot)
    assert not problems, (f"{where}: the layout is broken once the front end has sized the nodes "
                          f"(screenshot {shot}):\n" + "\n".join(problems))



def _open_view(ui_pool, config: UIConfig, path: Path):
    """The page and server of ``config``'s front end in its view, dialogs closed and the console
    drained: (driver, server, newer front end?, where: the words naming it in messages)."""
    driver = ui_pool.page(config.frontend)
    server = ui_pool.server(config.frontend)
    newer = config.frontend is not None
    _close_dialogs(driver)
    state = set_view(driver, config.view)
    where = f"{path.name} in front end {state['version'] or 'legacy'} ({config.view} view)"
    severe_console_entries(driver, server.url, newer)  # drain
    return driver, server, newer, where


def _content_sized(config: UIConfig, rects: Dict[str, Any]) -> bool:
    """Whether this is a Vue node view that sizes nodes from their content alone, ignoring the
    saved size (1.27's experimental one, before the Vue nodes shipped), where the readout needs a
    redraw to show."""
    return config.view == "vue" and not any(n["sized"] for n in rects["nodes"] if n["shown"])


def _require_frontend(config: UIConfig) -> None:
    if config.frontend is not None and frontend_root(config.frontend) is None:
        reason = (f"comfyui-frontend-package {config.frontend} is not in .cache/frontend: "
                  "run `bash scripts/get_frontend.sh`")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_readout_on_the_node_after_a_run(config, ui_pool, web_host, tmp_path):
    """One run of the round-trip workflow from the page, then the round-trip error on the node
    (after test_workflow_opens_clean: the run swaps in the small input images)."""
    _require_frontend(config)
    path = readout_workflow(WORKFLOWS)
    if path is None:
        pytest.skip("no workflow with a MIDMs DDIM Round Trip node (MIDMS_UI_WORKFLOWS)")
    wf = _load(path)
    driver, server, newer, where = _open_view(ui_pool, config, path)
    report = driver.execute_async_script(JS_LOAD, wf)
    assert "exception" not in report and not report["unregistered"], report
    remount_vue_view(driver, config.view)
    for node_id in _has_readout(wf):  # nothing shown before the run
        before = driver.execute_script(JS_READOUT, node_id, "round-trip error", config.view == "vue")
        assert not [t for t in before["shown"] if READOUT.search(t["text"])], before
    cut = driver.execute_script(JS_CUT_STEPS, RUN_STEPS)
    capped = driver.execute_script(JS_CAP_SIZES, INPUT_SIZE, TINY_LAST_OUTPUT_BLOCK)
    serve_small_inputs(server)
    entry = _queue_from_page(driver, server)
    assert succeeded(entry), json.dumps(execution_error(entry) or entry.get("status"), indent=1)[:4000]
    shot = tmp_path / f"{config.name}-readout.png"
    vue = config.view == "vue"

    def shown(node_id, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            seen = driver.execute_script(JS_READOUT, node_id, "round-trip error", vue)
            ok = [t for t in seen["shown"] if t["visible"] and t["inside"] and READOUT.search(t["text"])]
            if ok or time.monotonic() > deadline:
                return ok, seen
            time.sleep(0.5)

    for node_id in _has_readout(wf):
        ok, seen = shown(node_id)
        if not ok and _content_sized(config, driver.execute_script(JS_RECTS, vue)):
            # 1.27's experimental Vue view: its text boxes keep the value they were mounted
            # with (its useWidgetValue watches a copy of the prop); the node's widget has the
            # value, and the view shows it once it draws the node again (zoom out below its
            # detail level and back, as a person zooming does)
            driver.execute_script("app.canvas.ds.scale = 0.3; app.canvas.setDirty(true, true);")
            time.sleep(1.5)
            ok, seen = shown(node_id)
            if ok:
                warnings.warn(f"{where}: the readout shows only once the view redraws the node "
                              "(1.27's experimental Vue view)")
        if not ok:
            driver.save_screenshot(str(shot))
        assert ok, (f"{where}: after a run, node {node_id}'s readout is not shown on the node "
                    f"(screenshot {shot}): {seen}; steps {cut}, sizes {capped}")
    saved = driver.execute_script("return JSON.stringify(app.graph.serialize())")
    assert "round-trip error" not in saved, f"{where}: the readout is saved into the workflow"
    prompt = driver.execute_async_script(
        "const done = arguments[0]; app.graphToPrompt().then(p => done(JSON.stringify(p.output)), e => done(String(e)))")
    assert READOUT_WIDGET not in prompt and "round-trip error" not in prompt, \
        f"{where}: the readout is in the API prompt: {prompt[:2000]}"
    errors = severe_console_entries(driver, server.url, newer)
    assert not errors, f"browser console errors while running {where}: {errors}"


JS_OUTPUT_TOOLTIPS = r"""
const out = {};
for (const [type, cls] of Object.entries(LiteGraph.registered_node_types)) {
  if (!type.startsWith("MIDMs")) continue;
  const nd = cls.nodeData || {};
  const outputs = nd.outputs || (nd.output || []).map((t, i) => ({
    name: (nd.output_name || [])[i] || t, tooltip: (nd.output_tooltips || [])[i]}));
  out[type] = outputs.map(o => [o.name, o.tooltip || null]);
}
return out;
"""
FRONTEND_CONFIGS = [c for c in CONFIGS if c.view == "classic"]


@pytest.mark.parametrize("config", FRONTEND_CONFIGS, ids=[c.name for c in FRONTEND_CONFIGS])
def test_output_tooltips_reach_the_front_end(config, ui_pool, web_host):
    """Every output of every MIDMs node carries its OUTPUT_TOOLTIPS line in the node definition
    the front end works from (what it shows when hovering an output). The 2024 host does not
    send output tooltips."""
    if web_host.is_2024_snapshot:
        pytest.skip("the 2024 host does not send OUTPUT_TOOLTIPS to its UI")
    _require_frontend(config)
    driver = ui_pool.page(config.frontend)
    found = driver.execute_script(JS_OUTPUT_TOOLTIPS)
    assert len(found) >= 13, sorted(found)
    missing = {t: [name for name, tip in outs if not tip] for t, outs in found.items()}
    assert not any(missing.values()), {t: m for t, m in missing.items() if m}


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
    saved = page.execute_script("return app.graph.serialize().nodes.map(n => [n.id, n.widgets_values ?? null])")
    resaved = {str(i): v for i, v in saved}
    for node in wf["nodes"]:  # saving the loaded graph saves as many widget values as the file has
        if isinstance(node.get("widgets_values"), list):
            got = resaved.get(str(node["id"])) or []
            assert len(got) == len(node["widgets_values"]), \
                f"node {node['id']} ({node['type']}) saves {got!r}, the file has {node['widgets_values']!r}"

    if path == screenshot_workflow(WORKFLOWS):
        shot = tmp_path / "workflow.png"
        fit = _screenshot(page, shot)
        assert fit["scale"] >= 0.6, f"graph too large to show readably: {fit}"
        if not os.environ.get("MIDMS_UI_WORKFLOWS") and (
                not SCREENSHOT.exists() or os.environ.get("MIDMS_UPDATE_SCREENSHOT")):
            shutil.copyfile(shot, SCREENSHOT)

    split = sorted({n["type"] for n in wf["nodes"]} & set(SPLIT_FILE_LOADERS))
    if split:
        pytest.skip(f"{path.name} opens clean; not queued from the page: its {', '.join(split)} "
                    "files cannot be tiny (it runs over HTTP on tiny models in test_workflows.py)")
    capped = page.execute_script(JS_CAP_SIZES, INPUT_SIZE, TINY_LAST_OUTPUT_BLOCK)
    serve_small_inputs(ui_server)
    t1 = time.monotonic()
    entry, how = _queue_from_ui(page, ui_server)
    run_s = time.monotonic() - t1
    assert succeeded(entry), json.dumps(execution_error(entry) or entry.get("status"), indent=1)[:4000]
    saves = [str(n["id"]) for n in wf["nodes"] if n.get("type") == "SaveImage" and n.get("mode", 0) == 0]
    for node_id in saves:
        assert entry["outputs"].get(node_id, {}).get("images"), f"SaveImage {node_id} wrote nothing"
    for f in ui_server.output_files(entry):
        assert f.is_file(), f
    read = ("return String((app.graph.getNodeById(arguments[0]).widgets || [])"
            ".find(w => w.name === 'midms_readout')?.value ?? '')")
    for node_id in _has_readout(wf):  # the pack's readout box holds the node's ui text
        text = page.execute_script(read, node_id)
        assert READOUT.search(text), f"node {node_id}: readout {text!r}"
    for node in wf["nodes"]:  # ... and the anchors preview's report
        if node.get("type") == "MIDMsAnchorsPreview" and node.get("mode", 0) == 0:
            text = page.execute_script(read, node["id"])
            assert "anchor" in text.lower(), f"node {node['id']}: anchors report {text!r}"
    errors = severe_console_entries(page, ui_server.url)
    assert not errors, f"browser console errors while running {path.name}: {errors}"
    print(f"{path.name}: loaded in {load_s:.2f} s, queued with {how}, ran in {run_s:.2f} s"
          + (f" (sizes capped for CPU: {'; '.join(capped)})" if capped else ""))
