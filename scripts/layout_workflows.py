"""Lay out the shipped UI workflows from what the front ends themselves compute.

    .venv-comfy-current/bin/python scripts/layout_workflows.py            # measure, report
    .venv-comfy-current/bin/python scripts/layout_workflows.py --write    # ... and rewrite

Each workflow is opened in every front end and node view the web-UI test covers
(``harness.web_ui``): the 2024 host's own UI (classic canvas), ComfyUI 0.3.75's own front end
(1.32.9) and comfyui-frontend-package 1.58.1 and 1.27.10 (``scripts/get_frontend.sh``), each in
the classic and the Vue node view. After the front end has sized every node, each node's rectangle is read from the
page (classic: node.pos / node.size + title bar; Vue: its DOM element).

From those rectangles, per node:

* its size: the largest the front ends give it where they size a node from its saved size
  (classic views: node.size after loading, which they grow to fit; 1.58's Vue view: the
  rendered node, which is never smaller than the saved size);
* its footprint, the room the layout keeps for it: that size. 1.27's experimental Vue view sizes
  nodes from their content alone, whatever the saved size says (every node with a widget at
  least 430 px wide, rows 1.5x as tall, images at full width, text boxes growing with their
  text), and 1.32's sizes image nodes from their previews, so no saved size bounds them;
  ``--room-for-unsized`` keeps room for their rectangles too (sparser layouts in the other views;
  the shipped files are laid out with it, so every view opens clean).

Then the layout: each node belongs to the group it overlapped most in the saved layout; inside
each group, then among groups and ungrouped nodes, any two footprints closer than GAP are
pushed apart, the one that was right of (or else below) the other moving right (down), so the
graph keeps its columns and reading order and only grows right and down; each group grows to
hold its nodes (PAD around them, below its title bar). ``--write`` saves pos, size and group
bounding into the UI JSON files and nothing else: node ids, links, widgets_values (so the API
twins) are untouched. Run it again after writing: it should find nothing to move.

Needs both hosts (scripts/get_comfyui.sh, scripts/get_newest_host.sh), the frontend packages
(scripts/get_frontend.sh), chromium (scripts/get_browser.sh). About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.host import ComfyServer, HostInfo  # noqa: E402
from harness import web_ui as W  # noqa: E402

GAP = 20        # between node footprints, and between groups / ungrouped nodes
PAD = 20        # a group's margin around its nodes (below its title bar: PAD / 2)


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------
def hosts() -> List[Tuple[str, HostInfo]]:
    out = []
    for label, state in (("2024", REPO / ".comfyui" / "env.json"),
                         ("current", REPO / ".comfyui-newest" / "env.json")):
        if not state.is_file():
            raise SystemExit(f"{state} missing: run scripts/get_comfyui.sh / scripts/get_newest_host.sh")
        env = json.loads(state.read_text())
        out.append((label, HostInfo(python=env["python"], comfyui=env["comfyui"], source="env.json")))
    return out


def measure(paths: List[Path]) -> Dict[str, Dict[str, Any]]:
    """{workflow name: {config name: JS_RECTS result}}."""
    chromium, chromedriver = W.browser_exes()
    if chromium is None or chromedriver is None:
        raise SystemExit("no chromium / chromedriver: run scripts/get_browser.sh")
    out: Dict[str, Dict[str, Any]] = {p.name: {} for p in paths}
    for label, host in hosts():
        is_2024 = label == "2024"
        for frontend in ([None] if is_2024 else [None, *W.FRONTEND_VERSIONS]):
            views = ["classic"] if is_2024 else list(W.VIEWS)
            args = W.UIConfig(frontend, "classic").server_args()
            tmp = Path(tempfile.mkdtemp(prefix="midms-layout-"))
            if not is_2024:
                args += W.user_directory_args(tmp / "user")
            try:
                with ComfyServer(host, pack_link="workdir", extra_args=args) as srv:
                    W.stock_server(srv, paths, tmp / "stock")
                    driver = W.start_browser(chromium, chromedriver, tmp / "browser")
                    try:
                        W.open_page(driver, srv.url)
                        for view in views:
                            state = W.set_view(driver, view)
                            config = f"{label}/{state['version'] or 'legacy'}-{view}"
                            for path in paths:
                                wf = W.load_json(path)
                                report = driver.execute_async_script(W.JS_LOAD, wf)
                                W.remount_vue_view(driver, view)
                                if "exception" in report or report["unregistered"]:
                                    print(f"  {config} {path.name}: cannot load "
                                          f"({report.get('exception') or report['unregistered']})")
                                    continue
                                rects = W.page_rects(driver, view)
                                out[path.name][config] = rects
                                problems = W.layout_problems(rects)
                                print(f"  {config} {path.name}: {len(problems)} layout problems")
                    finally:
                        driver.quit()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------
Rect = List[float]  # [x, y, w, h]


def _hit(a: Rect, b: Rect, gap: float) -> bool:
    return (a[0] < b[0] + b[2] + gap and b[0] < a[0] + a[2] + gap
            and a[1] < b[1] + b[3] + gap and b[1] < a[1] + a[3] + gap)


def _area(a: Rect, b: Rect) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def relax(items: Dict[Any, Rect], orig: Dict[Any, Rect], gap: float) -> Dict[Any, Tuple[float, float]]:
    """Push overlapping rectangles apart, right or down only: of two that come closer than
    ``gap``, the one that was wholly right of the other in ``orig`` moves right, else the one
    that was lower (or, level, further right) moves down. Returns {key: (dx, dy)}."""
    start = {k: (r[0], r[1]) for k, r in items.items()}
    for _ in range(10000):
        moved = False
        keys = sorted(items, key=lambda k: (items[k][1], items[k][0]))
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                ra, rb = items[a], items[b]
                if not _hit(ra, rb, gap):
                    continue
                oa, ob = orig[a], orig[b]
                if oa[0] + oa[2] <= ob[0]:
                    rb[0] = ra[0] + ra[2] + gap
                elif ob[0] + ob[2] <= oa[0]:
                    ra[0] = rb[0] + rb[2] + gap
                elif (oa[1], oa[0]) <= (ob[1], ob[0]):
                    rb[1] = ra[1] + ra[3] + gap
                else:
                    ra[1] = rb[1] + rb[3] + gap
                moved = True
        if not moved:
            break
    else:
        raise RuntimeError("layout did not converge")
    return {k: (items[k][0] - start[k][0], items[k][1] - start[k][1]) for k in items}


def node_extents(wf: Dict[str, Any], measured: Dict[str, Any],
                 room_for_unsized: bool = False) -> Dict[Any, Dict[str, float]]:
    """Per node id: ``title`` (how far above pos a view draws it), ``size`` [w, h] (the saved size,
    grown to the largest a classic view computes for the node, ``computeSize``: what its widgets
    need. Vue views grow a node to its content whatever the saved size, so the saved size is the
    classic views' one), ``foot`` [w, h] (the room the layout keeps for
    it: the largest extent right of pos.x and below pos.y that a view sizing it from the saved
    size draws, and with ``room_for_unsized`` any view, 1.27's Vue view included)."""
    out = {}
    for node in wf["nodes"]:
        saved_w, saved_h = node["size"]
        title, foot_w, foot_h = 30.0, 0.0, 0.0
        computed = []
        for config, rects in measured.items():
            got = next((n for n in rects["nodes"] if str(n["id"]) == str(node["id"])), None)
            if got is None or got["rect"] is None:
                continue
            x, y, w, h = got["rect"]
            px, py = got["pos"]
            right, below = x + w - px, y + h - py
            if got["sized"] or room_for_unsized:
                title = max(title, py - y)
                foot_w, foot_h = max(foot_w, right), max(foot_h, below)
            if config.endswith("-classic") and got.get("computed"):
                computed.append(got["computed"])
        size_w = max([saved_w] + [c[0] for c in computed])
        size_h = max([saved_h] + [c[1] for c in computed])
        out[node["id"]] = {"title": math.ceil(title), "size": [math.ceil(size_w), math.ceil(size_h)],
                           "foot": [math.ceil(max(foot_w, size_w)), math.ceil(max(foot_h, size_h))]}
    return out


def group_title_height(measured: Dict[str, Any], index: int) -> float:
    heights = [rects["groups"][index]["titleHeight"] for rects in measured.values()
               if index < len(rects["groups"])]
    return math.ceil(max(heights, default=34))


def layout(wf: Dict[str, Any], measured: Dict[str, Any], room_for_unsized: bool = False) -> Dict[str, Any]:
    """The workflow with pos / size / group bounding laid out (a new dict)."""
    wf = json.loads(json.dumps(wf))
    ext = node_extents(wf, measured, room_for_unsized)
    title = max(e["title"] for e in ext.values())
    orig = {n["id"]: [n["pos"][0], n["pos"][1] - 30, n["size"][0], n["size"][1] + 30] for n in wf["nodes"]}
    foot = {n["id"]: [n["pos"][0], n["pos"][1] - title, ext[n["id"]]["foot"][0],
                      ext[n["id"]]["foot"][1] + title] for n in wf["nodes"]}
    groups = wf.get("groups") or []
    members: Dict[int, List[Any]] = {i: [] for i in range(len(groups))}
    for n in wf["nodes"]:
        best = max(range(len(groups)), key=lambda i: _area(orig[n["id"]], groups[i]["bounding"]), default=None)
        if best is not None and _area(orig[n["id"]], groups[best]["bounding"]) > 0:
            members[best].append(n["id"])
    grouped = {nid for ids in members.values() for nid in ids}

    # 1. inside each group
    for i, ids in members.items():
        relax({k: foot[k] for k in ids}, orig, GAP)
    # 2. each group around its nodes
    heads = [group_title_height(measured, i) for i in range(len(groups))]

    def group_rect(i: int) -> Rect:
        g = list(groups[i]["bounding"])
        ids = members[i]
        if not ids:
            return g
        x0 = min(min(foot[k][0] for k in ids) - PAD, g[0])
        y0 = min(min(foot[k][1] for k in ids) - heads[i] - PAD // 2, g[1])
        x1 = max(max(foot[k][0] + foot[k][2] for k in ids) + PAD, g[0] + g[2])
        y1 = max(max(foot[k][1] + foot[k][3] for k in ids) + PAD, g[1] + g[3])
        return [x0, y0, x1 - x0, y1 - y0]

    grects = {("g", i): group_rect(i) for i in range(len(groups))}
    # 3. groups and ungrouped nodes among themselves; a group carries its nodes
    top = dict(grects)
    top.update({("n", k): foot[k] for k in foot if k not in grouped})
    top_orig = {("g", i): list(groups[i]["bounding"]) for i in range(len(groups))}
    top_orig.update({("n", k): orig[k] for k in foot if k not in grouped})
    moves = relax(top, top_orig, GAP)
    for (kind, key), (dx, dy) in moves.items():
        if kind == "g":
            for k in members[key]:
                foot[k][0] += dx
                foot[k][1] += dy
    # write back
    for n in wf["nodes"]:
        f = foot[n["id"]]
        n["pos"] = [int(round(f[0])), int(round(f[1] + title))]
        n["size"] = list(ext[n["id"]]["size"])
    for i, g in enumerate(groups):
        g["bounding"] = [int(round(v)) for v in top[("g", i)]]
    return wf


def _dump(wf: Dict[str, Any]) -> str:
    return json.dumps(wf, indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflows", nargs="*", type=Path, help="UI workflow files (default: all shipped)")
    parser.add_argument("--write", action="store_true", help="rewrite the files")
    parser.add_argument("--measurements", type=Path, help="save (or, with --reuse, read) the measurements here")
    parser.add_argument("--reuse", action="store_true", help="lay out from --measurements, no browser")
    parser.add_argument("--room-for-unsized", action="store_true",
                        help="also keep room for views that size nodes from their content alone "
                             "(1.27's experimental Vue view): much sparser layouts")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.workflows] or W.ui_workflows()
    if args.reuse:
        measured = json.loads(args.measurements.read_text())
    else:
        measured = measure(paths)
        if args.measurements:
            args.measurements.write_text(json.dumps(measured))
    changed = 0
    for path in paths:
        wf = W.load_json(path)
        new = layout(wf, measured[path.name], args.room_for_unsized)
        moved = [n["id"] for n, m in zip(wf["nodes"], new["nodes"]) if n["pos"] != m["pos"] or n["size"] != m["size"]]
        regrouped = [g["title"] for g, h in zip(wf.get("groups") or [], new.get("groups") or [])
                     if g["bounding"] != h["bounding"]]
        print(f"{path.name}: {len(moved)} nodes moved or resized {moved}, groups {regrouped}")
        if moved or regrouped:
            changed += 1
            if args.write:
                path.write_text(_dump(new))
    print(f"{changed} of {len(paths)} workflows {'rewritten' if args.write else 'would change'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
