"""The host's web UI in headless Chromium (selenium), for ``tests/comfy/test_web_ui.py`` and
``scripts/layout_workflows.py``.

* the shipped UI workflows and a server stocked to open and run them (tiny checkpoint and
  ControlNet under every name they use, their input images, keypoint files);
* the browser (Debian chromium + chromedriver, ``scripts/get_browser.sh``) and its console,
  without the network noise that is not the pack's;
* front ends and node views: the host's own front end, or a newer release of
  comfyui-frontend-package served with ``--front-end-root`` (``scripts/get_frontend.sh`` unpacks
  it into ``.cache/frontend/<version>/static``), in the classic canvas or the Vue node view
  (setting ``Comfy.VueNodes.Enabled``, through the page's settings API);
* what the page shows: every node's rectangle in graph units after the front end has sized it
  (classic: ``node.pos`` / ``node.size`` and the title bar; Vue view: the node's DOM element),
  every group's, and the overlaps between them (:func:`layout_problems`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from harness.host import REPO, REQUIRE_ENV, ComfyServer
from harness.tiny_models import write_tiny_sd15_checkpoint, write_tiny_sd15_controlnet

WORKFLOW_DIRS = ("workflows", "example_workflows")
# Where a workflow's LoadImage file may ship in the repo (used before generating one).
IMAGE_DIRS = ("workflows", "workflows/input", "workflows/inputs", "example_workflows",
              "example_workflows/input", "example_workflows/inputs", "examples", "assets", "docs")
VIEWPORT = (1600, 1000)
# Nodes that current ComfyUI has and the 2024-03 snapshot does not.
NEWER_HOST_NODES = {"Flux2Scheduler", "SplitSigmasDenoise", "ModelSamplingAuraFlow",
                    "SamplerCustomAdvanced", "BasicGuider", "CFGGuider", "DualCFGGuider",
                    "RandomNoise", "DisableNoise", "AddNoise", "SamplerCFGPP", "ModelSamplingSD3",
                    "FluxGuidance"}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--mute-audio")
# Prompts run on input images of this size (longer side): the shipped 512 px ones make the tiny
# checkpoint's 64 x 64-latent U-Net run for minutes on 2 CPU cores. The page shows the full-size
# ones; small copies replace them just before the first prompt is queued.
INPUT_SIZE = 128
PAGE_TIMEOUT = 120.0

# The front ends from the registry the web-UI test also runs on a current host, served with
# --front-end-root (scripts/get_frontend.sh fetches each): the newest, and 1.27.10 (what
# ComfyUI 0.3.64 shipped: the first with the Vue node view, still what many installs run).
FRONTEND_VERSIONS = tuple(v.strip() for v in os.environ.get("MIDMS_FRONTEND_VERSIONS", "1.58.1,1.27.10").split(",")
                          if v.strip())
FRONTEND_VERSION = FRONTEND_VERSIONS[0]
FRONTEND_CACHE = REPO / ".cache" / "frontend"
VUE_SETTING = "Comfy.VueNodes.Enabled"
VIEWS = ("classic", "vue")


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


def load_json(path: Path) -> Dict[str, Any]:
    return json.loads(Path(path).read_text())


def nodes_of(wf: Dict[str, Any], node_type: str) -> List[Dict[str, Any]]:
    return [n for n in wf["nodes"] if n.get("type") == node_type]


def image_roles(wf: Dict[str, Any]) -> Dict[str, str]:
    """``{LoadImage file name: "condition" | "exemplar"}``, following links downstream from each
    LoadImage to the MIDMs Exemplar Encode input it ends up in (file name as a fallback)."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    out_links: Dict[Any, List[list]] = {}
    for link in wf.get("links") or []:
        out_links.setdefault(link[1], []).append(link)
    roles = {}
    for node in nodes_of(wf, "LoadImage"):
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


def small_copy(src: Path, dest: Path, size: int = None) -> None:
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


def shipped_image(name: str) -> Optional[Path]:
    for d in IMAGE_DIRS:
        p = REPO / d / name
        if p.is_file():
            return p
    return None


#: loaders of separate model files -> the models folder their names come from (legacy names,
#: which every host maps). Their families' real files cannot be tiny (the host's detection fixes
#: their widths), so graphs with them open in the page but run only over HTTP with tiny models
#: built from the host's classes (tests/comfy/test_workflows.py).
SPLIT_FILE_LOADERS = {"UNETLoader": "unet", "CLIPLoader": "clip", "VAELoader": "vae"}


def _placeholder_file(tmp: Path) -> Path:
    path = tmp / "midms_placeholder.safetensors"
    if not path.is_file():
        import torch
        from safetensors.torch import save_file
        save_file({"midms_placeholder": torch.zeros(1)}, str(path))
    return path


def stock_server(srv: ComfyServer, workflows: Iterable[Path], tmp: Path) -> None:
    """Give the (started) server what the workflows need to open without a missing file and to
    run: the tiny seeded SD1.5 checkpoint (with a random full-size CLIP) under every
    CheckpointLoaderSimple name, the tiny SD1.5 ControlNet under every ControlNetLoader name, each
    LoadImage file (the repository's, else a generated edge map or photo) and each keypoints file.
    ``srv.midms_small_inputs``: {served image: its small copy}, for :func:`serve_small_inputs`."""
    tmp.mkdir(parents=True, exist_ok=True)
    ckpt = controlnet = None
    generated = _write_test_images(tmp)
    small_inputs: Dict[Path, Path] = {}
    for path in workflows:
        try:
            wf = load_json(path)
        except ValueError:
            continue
        if not is_ui_workflow(wf):
            continue
        for node in nodes_of(wf, "CheckpointLoaderSimple"):
            name = (node.get("widgets_values") or [None])[0]
            if isinstance(name, str):
                if ckpt is None:
                    ckpt = write_tiny_sd15_checkpoint(tmp / "tiny_sd15_clip.safetensors",
                                                      seed=0, with_clip=True)["path"]
                srv.add_model("checkpoints", ckpt, name=name)
        # split-file loaders (Flux.2, Z-Image): a placeholder under each name, so the page finds
        # its choice; these graphs are not queued from the page (SPLIT_FILE_LOADERS)
        for kind, folder in SPLIT_FILE_LOADERS.items():
            for node in nodes_of(wf, kind):
                name = (node.get("widgets_values") or [None])[0]
                if isinstance(name, str):
                    srv.add_model(folder, _placeholder_file(tmp), name=name)
        for node in nodes_of(wf, "ControlNetLoader"):  # the tiny SD1.5 ControlNet
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
                shipped = shipped_image(name)
                if shipped is None:
                    srv.add_input_image(generated[role], name=name)
                else:
                    shutil.copyfile(shipped, dest)
                    small = tmp / "small" / name
                    small.parent.mkdir(parents=True, exist_ok=True)
                    small_copy(shipped, small)
                    small_inputs[dest] = small
        for node in nodes_of(wf, "MIDMsLoadKeypoints"):  # keypoint files ship beside the images
            name = (node.get("widgets_values") or [None])[0]
            if isinstance(name, str) and not (srv.input_dir / name).exists():
                shutil.copyfile(REPO / "workflows" / "inputs" / name, srv.input_dir / name)
    srv.midms_small_inputs = small_inputs


def serve_small_inputs(server: ComfyServer) -> None:
    """Swap the full-size input images for their small copies (once, before the first run)."""
    for dest, small in getattr(server, "midms_small_inputs", {}).items():
        shutil.copyfile(small, dest)
    server.midms_small_inputs = {}


# --------------------------------------------------------------------------------------------
# front ends and views
# --------------------------------------------------------------------------------------------
def frontend_root(version: str = FRONTEND_VERSION) -> Optional[Path]:
    """``.cache/frontend/<version>/static`` when scripts/get_frontend.sh has unpacked it."""
    root = FRONTEND_CACHE / version / "static"
    return root if (root / "index.html").is_file() else None


@dataclass(frozen=True)
class UIConfig:
    """One front end (``None``: the host's own; else a comfyui-frontend-package version served
    with --front-end-root) in one node view ("classic" canvas or "vue")."""
    frontend: Optional[str]
    view: str

    @property
    def name(self) -> str:
        return f"{'host' if self.frontend is None else self.frontend}-{self.view}"

    def server_args(self) -> List[str]:
        if self.frontend is None:
            return []
        root = frontend_root(self.frontend)
        if root is None:
            raise FileNotFoundError(f"comfyui-frontend-package {self.frontend} is not in "
                                    f"{FRONTEND_CACHE}: run `bash scripts/get_frontend.sh`")
        return ["--front-end-root", str(root)]


def ui_configs(is_2024_host: bool) -> List[UIConfig]:
    """What the web-UI test covers on this host. The 2024 host: its own (legacy) UI, which has
    only the canvas. Current hosts: their own front end and FRONTEND_VERSION, each in both views
    (``MIDMS_FRONTENDS=host`` or ``=host,1.58.1`` picks front ends; default: the host's own and
    :data:`FRONTEND_VERSIONS`)."""
    if is_2024_host:
        return [UIConfig(None, "classic")]
    wanted = os.environ.get("MIDMS_FRONTENDS", ",".join(("host",) + FRONTEND_VERSIONS)).split(",")
    fronts = [None if f.strip() == "host" else f.strip() for f in wanted if f.strip()]
    return [UIConfig(f, v) for f in fronts for v in VIEWS]


def user_directory_args(user_dir: Path) -> List[str]:
    """``--user-directory`` for a current host's server: a settings store of its own (the host's
    default, ``<ComfyUI>/user``, is shared by every server of that checkout, and the view switch
    is saved there), seeded with ``Comfy.TutorialCompleted`` so the front end does not open its
    template browser over the graph on first start (1.32 does, covering the Run button)."""
    settings = Path(user_dir) / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    if not settings.is_file():
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    return ["--user-directory", str(Path(user_dir).resolve())]


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


def browser_problems() -> List[str]:
    problems = []
    try:
        from selenium import webdriver  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed in this interpreter")
    if browser_exes()[0] is None:
        problems.append("no chromium binary (MIDMS_CHROMIUM)")
    if browser_exes()[1] is None:
        problems.append("no chromedriver (MIDMS_CHROMEDRIVER)")
    return problems


def browser_exes():
    """(chromium path or None, chromedriver path or None)."""
    chromium = _find_exe("MIDMS_CHROMIUM", ("/usr/lib/chromium/chromium", "/usr/bin/chromium",
                                            "chromium", "chromium-browser", "google-chrome"))
    driver = _find_exe("MIDMS_CHROMEDRIVER", ("/usr/bin/chromedriver", "chromedriver"))
    return chromium, driver


def require_browser():
    """(chromium path, chromedriver path), or skip (fail under MIDMS_REQUIRE_COMFYUI)."""
    import pytest

    problems = browser_problems()
    if problems:
        reason = "; ".join(problems) + ": run `bash scripts/get_browser.sh`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return browser_exes()


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


def wait_js(driver, expr: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + expr)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready in {timeout:.0f} s")


# Console noise that is not about the workflow: the 2024 host has no favicon.ico; newer front
# ends probe optional user files (user.css, /api/userdata/...) and reach out to api.comfy.org and
# huggingface.co, which this offline machine cannot resolve (requests to other hosts are dropped).
BENIGN_NETWORK = ("/favicon.ico", "/user.css", "/api/userdata")
# A front end newer than its backend asks for endpoints the backend does not have yet, and logs
# their 404s: these paths (1.58.1 on ComfyUI 0.3.64), and only as HTTP 404s, are its own.
NEWER_FRONTEND_ENDPOINTS = ("/api/jobs", "/api/global_subgraphs")
# ... and the console lines it writes about them (JobsApiError: "Failed to fetch jobs: 404").
NEWER_FRONTEND_MESSAGES = ("Failed to fetch jobs: 404",)


def is_noise(entry: Dict[str, Any], server_url: str, newer_frontend: bool = False) -> bool:
    """Whether a SEVERE console entry is not about the pack or the workflow."""
    msg = entry.get("message", "")
    if entry.get("source") == "network":
        url = msg.split(" ", 1)[0]
        if not url.startswith(server_url) or any(b in url for b in BENIGN_NETWORK):
            return True
        path = url[len(server_url):]
        if newer_frontend and "status of 404" in msg and path.startswith(NEWER_FRONTEND_ENDPOINTS):
            return True
        return False
    return newer_frontend and any(m in msg for m in NEWER_FRONTEND_MESSAGES) \
        and "midms" not in msg.lower()


def severe_console_entries(driver, server_url: str, newer_frontend: bool = False) -> List[Dict[str, Any]]:
    """SEVERE browser-console entries since the last call (the log drains on read), without
    :func:`is_noise`."""
    return [e for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and not is_noise(e, server_url, newer_frontend)]


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_js(driver, "!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph)",
            PAGE_TIMEOUT, "window.app")


JS_FRONTEND = r"""
return {version: window.__COMFYUI_FRONTEND_VERSION__ || null,
        settings: !!(window.app && app.extensionManager && app.extensionManager.setting),
        vue: !!(app.extensionManager && app.extensionManager.setting
                && app.extensionManager.setting.get(arguments[0]))};
"""

JS_SET_SETTING = r"""
const [id, value, done] = arguments;
app.extensionManager.setting.set(id, value).then(() => done(true), e => done(String(e)));
"""


def set_view(driver, view: str) -> Dict[str, Any]:
    """Switch the node view through the settings API (persisted on the server, so it holds after
    a reload). Returns what the page reports: front-end version, whether Vue nodes are on."""
    state = driver.execute_script(JS_FRONTEND, VUE_SETTING)
    want = view == "vue"
    if not state["settings"]:
        if want:
            raise RuntimeError("this front end has no settings API (app.extensionManager.setting): "
                               "no Vue node view")
        return state
    if state["vue"] != want:
        done = driver.execute_async_script(JS_SET_SETTING, VUE_SETTING, want)
        if done is not True:
            raise RuntimeError(f"setting {VUE_SETTING}={want}: {done}")
        state = driver.execute_script(JS_FRONTEND, VUE_SETTING)
    if state["vue"] != want:
        raise RuntimeError(f"{VUE_SETTING} is {state['vue']} after setting it to {want}")
    return state


def remount_vue_view(driver, view: str) -> None:
    """After loading a workflow into a Vue node view: switch the view off and on, so it mounts
    the nodes of the graph now loaded. 1.27's experimental view keeps the elements of the graph
    it was switched on with (the start-up default graph's KSampler and Load Checkpoint over a
    loaded workflow); later views follow the loaded graph, and remounting changes nothing there."""
    if view != "vue":
        return
    set_view(driver, "classic")
    set_view(driver, "vue")
    time.sleep(0.5)


# Load a workflow the way the UI does. Reports unregistered node types, a dialog left open (the
# 2024 UI's "node types were not found"), and what each node got.
JS_LOAD = r"""
const [workflow, done] = arguments;
(async () => {
  const types = workflow.nodes.map(n => n.type);
  const unregistered = [...new Set(types.filter(t => !(t in LiteGraph.registered_node_types)))];
  const dialog = app.ui?.dialog;  // the 2024 UI's ComfyDialog (newer front ends keep one)
  dialog?.close();
  // empty the graph first: 1.27's experimental Vue view keeps the elements of the last graph's
  // nodes where the new graph reuses their ids (it showed one workflow's nodes over another's)
  app.graph?.clear?.();
  await new Promise(r => setTimeout(r, 100));
  await app.loadGraphData(workflow);
  const visible = !!dialog && dialog.element.style.display !== "none";
  const nodes = app.graph._nodes.map(node => ({
    id: node.id, type: node.type, title: node.title,
    widgets: (node.widgets || []).map(w => ({
      name: w.name, type: w.type, value: w.value,
      serialize: w.serialize !== false && w.options?.serialize !== false,
      choices: w.type === "combo" ? (typeof w.options.values === "function"
        ? w.options.values() : w.options.values) : null,
    })),
  }));
  done({unregistered, dialog: visible ? dialog.textElement.innerText : null,
        missingDialog: !!document.querySelector(".comfy-missing-nodes") && visible,
        nodes, links: Object.keys(app.graph.links || {}).length});
})().catch(e => done({exception: String(e && e.stack || e)}));
"""

# the graph bounding box (x0, y0, x1, y1) of every node (title bar included) and group
_JS_GRAPH_BOX = r"""
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
"""

JS_BBOX = _JS_GRAPH_BOX + r"""
return [x0, y0, x1 - x0, y1 - y0];
"""

# Centre the graph's bounding box in the canvas at a scale that shows all of it (LiteGraph:
# screen = (graph + ds.offset) * ds.scale); the Vue node view follows the same transform.
JS_FIT_ALL = _JS_GRAPH_BOX + r"""
const c = app.canvas.canvas, ds = app.canvas.ds;
const w = c.clientWidth, h = c.clientHeight, m = 40;
const scale = Math.min(arguments[0], (w - 2 * m) / (x1 - x0), (h - 2 * m) / (y1 - y0));
ds.scale = scale;
ds.offset[0] = (w / scale - (x1 - x0)) / 2 - x0;
ds.offset[1] = (h / scale - (y1 - y0)) / 2 - y0;
app.canvas.setDirty(true, true);
app.canvas.draw(true, true);
return scale;
"""

# Every node's rectangle (graph units, title bar included) as the page shows it, and every
# group's. Classic canvas: node.pos / node.size and LiteGraph's title height (collapsed nodes:
# their collapsed width). Vue node view: the node's DOM element, mapped back through the
# canvas transform. Groups are drawn on the canvas in both views.
JS_RECTS = r"""
const vue = arguments[0];
const title = LiteGraph.NODE_TITLE_HEIGHT;
const ds = app.canvas.ds;
const cr = app.canvas.canvas.getBoundingClientRect();
const toGraph = (r) => [(r.left - cr.left) / ds.scale - ds.offset[0],
                        (r.top - cr.top) / ds.scale - ds.offset[1],
                        r.width / ds.scale, r.height / ds.scale];
const elements = {};
if (vue) {
  for (const el of document.querySelectorAll(".lg-node[data-node-id]")) {
    elements[el.getAttribute("data-node-id")] = el;
  }
}
const nodes = app.graph._nodes.map(n => {
  const collapsed = !!n.flags?.collapsed;
  const classic = [n.pos[0], n.pos[1] - title,
                   collapsed ? (n._collapsed_width || LiteGraph.NODE_COLLAPSED_WIDTH || n.size[0]) : n.size[0],
                   collapsed ? title : n.size[1] + title];
  let rect = classic, shown = true, sized = true;
  if (vue) {
    const el = elements[String(n.id)];
    shown = !!el && el.getClientRects().length > 0;
    rect = shown ? toGraph(el.getBoundingClientRect()) : null;
    // whether this Vue view sizes the node from node.size (1.58) or from its content alone (1.27)
    sized = !!el && el.style.getPropertyValue("--node-height") !== "";
  }
  return {id: n.id, type: n.type, title: n.title, pos: [n.pos[0], n.pos[1]],
          size: [n.size[0], n.size[1]], rect, shown, sized, collapsed,
          computed: n.computeSize ? Array.from(n.computeSize()) : null};
});
const groups = (app.graph._groups || app.graph.groups || []).map(g => ({
  title: g.title, rect: [g.pos[0], g.pos[1], g.size[0], g.size[1]],
  titleHeight: g.titleHeight ?? (g.font_size || LiteGraph.DEFAULT_GROUP_FONT || 24) * 1.4,
}));
return {nodes, groups, title, scale: ds.scale};
"""


JS_VUE_SIGNATURE = r"""
return [...document.querySelectorAll(".lg-node[data-node-id]")]
  .filter(e => e.getClientRects().length > 0)
  .map(e => {const r = e.getBoundingClientRect();
             return e.getAttribute("data-node-id") + ":" + [r.x, r.y, r.width, r.height].map(Math.round).join(",")})
  .join(";");
"""

# LoadImage previews (classic: node.imgs; Vue view: the <img> elements in the nodes) loaded.
JS_IMAGES_LOADED = r"""
const vue = arguments[0];
if (vue) return [...document.querySelectorAll(".lg-node img")].every(i => i.complete);
return app.graph._nodes.filter(n => n.type === "LoadImage")
  .every(n => n.imgs && n.imgs.length && n.imgs.every(i => i.complete));
"""

JS_VIEW_AT = r"""
const [scale, x, y] = arguments;
const ds = app.canvas.ds;
ds.scale = scale; ds.offset[0] = -x; ds.offset[1] = -y;
app.canvas.setDirty(true, true);
app.canvas.draw(true, true);
return [app.canvas.canvas.clientWidth / scale, app.canvas.canvas.clientHeight / scale];
"""


def _wait_stable(driver, script: str, timeout: float, what: str, hold: float = 0.6, args=()):
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = driver.execute_script(script, *args)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= hold:
            return now
        time.sleep(0.15)
    raise TimeoutError(f"{what} still changing after {timeout:.0f} s")


def page_rects(driver, view: str, scale: float = 1.0, timeout: float = 30.0) -> Dict[str, Any]:
    """:data:`JS_RECTS` once the front end has sized every node: LoadImage previews loaded, the
    canvas redrawn (the 2024 UI grows a node to its image and DOM widgets while drawing it).

    Vue node view: read at ``scale`` (1 by default: 1.27's Vue view drops text widgets and
    images below zoom 0.8, so its nodes are smallest there), panning over the graph in
    canvas-sized tiles (1.27's view only mounts the nodes on screen) until every node has been
    seen, each tile once the nodes' rectangles stopped changing."""
    vue = view == "vue"
    try:
        wait_js(driver, f"(() => {{ {JS_IMAGES_LOADED.replace('arguments[0]', 'true' if vue else 'false')} }})()",
                20, "LoadImage previews")
    except TimeoutError:
        pass  # a missing image shows as such; the rectangles are still what the page shows
    if not vue:
        driver.execute_script(JS_FIT_ALL, 1.0)
        for _ in range(3):  # sizes settle over a few frames (DOM widgets, image previews)
            driver.execute_script("app.canvas.setDirty(true, true); app.canvas.draw(true, true);")
            time.sleep(0.15)
        return driver.execute_script(JS_RECTS, False)
    bbox = driver.execute_script(JS_BBOX)
    merged: Dict[str, Any] = {}
    result = None
    x = bbox[0] - 40
    while True:
        y = bbox[1] - 40
        while True:
            span = driver.execute_script(JS_VIEW_AT, scale, x, y)
            _wait_stable(driver, JS_VUE_SIGNATURE, timeout, "the Vue node view's nodes")
            result = driver.execute_script(JS_RECTS, True)
            for n in result["nodes"]:
                if n["shown"] and str(n["id"]) not in merged:
                    merged[str(n["id"])] = n
            if y + span[1] >= bbox[1] + bbox[3] + 40 or len(merged) == len(result["nodes"]):
                break
            y += span[1] * 0.9
        if x + span[0] >= bbox[0] + bbox[2] + 40 or len(merged) == len(result["nodes"]):
            break
        x += span[0] * 0.9
    result["nodes"] = [merged.get(str(n["id"]), n) for n in result["nodes"]]
    return result


# --------------------------------------------------------------------------------------------
# overlaps
# --------------------------------------------------------------------------------------------
TOLERANCE = 0.5  # graph units: touching edges (and rounding of DOM rects) are not overlaps


def _intersect(a, b) -> bool:
    return (a[0] + TOLERANCE < b[0] + b[2] and b[0] + TOLERANCE < a[0] + a[2]
            and a[1] + TOLERANCE < b[1] + b[3] and b[1] + TOLERANCE < a[1] + a[3])


def _inside(a, box) -> bool:
    return (a[0] >= box[0] - TOLERANCE and a[1] >= box[1] - TOLERANCE
            and a[0] + a[2] <= box[0] + box[2] + TOLERANCE and a[1] + a[3] <= box[1] + box[3] + TOLERANCE)


def _label(n: Dict[str, Any]) -> str:
    return f"node {n['id']} ({n['type']}{', ' + repr(n['title']) if n.get('title') else ''})"


def _fmt(r) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in r) + "]"


def layout_problems(rects: Dict[str, Any]) -> List[str]:
    """What :data:`JS_RECTS` shows that a person would see as a broken layout: a node the view
    does not show, two nodes whose rectangles overlap, and a node that is neither wholly inside a
    group (below its title bar) nor wholly outside it."""
    problems = []
    nodes = rects["nodes"]
    for n in nodes:
        if not n["shown"] or n["rect"] is None:
            problems.append(f"{_label(n)} is not shown")
    shown = [n for n in nodes if n["rect"] is not None]
    for i, a in enumerate(shown):
        for b in shown[i + 1:]:
            if _intersect(a["rect"], b["rect"]):
                problems.append(f"{_label(a)} {_fmt(a['rect'])} overlaps {_label(b)} {_fmt(b['rect'])}")
    for g in rects["groups"]:
        box = g["rect"]
        body = [box[0], box[1] + g["titleHeight"], box[2], box[3] - g["titleHeight"]]
        for n in shown:
            if _intersect(n["rect"], box) and not _inside(n["rect"], body):
                problems.append(f"{_label(n)} {_fmt(n['rect'])} sticks out of group {g['title']!r} "
                                f"{_fmt(box)} (title bar {g['titleHeight']:.0f})")
    return problems
