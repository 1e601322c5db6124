"""UI-format ComfyUI workflows (what a person drags in) -> API-format prompts (what POST /prompt
takes), the way the web frontend's ``graphToPrompt`` does it, driven by a host's /object_info.

Pure Python, no ComfyUI imports: the host is only asked for /object_info. Our own code, written
from the frontend's documented behaviour (checked against the 2024-03 host's ``web/scripts/app.js``
/ ``widgets.js`` and comfyui-frontend-package 1.27's ``graphToPrompt`` / ``migrateWidgetsValues``):

* A node input is a WIDGET when its type is INT, FLOAT, STRING, BOOLEAN or a combo (a list of
  choices, or ``"COMBO"``) and it is not ``forceInput``; anything else is a socket. Widgets are
  created in the order of the node's inputs (``input_order`` when the host gives one, else the
  dict order of required then optional), and ``widgets_values`` lists their values in that order.
* Extra, frontend-only widgets also hold a place in ``widgets_values`` but are NOT sent:
  ``control_after_generate`` after an INT named ``seed`` / ``noise_seed`` or with the option
  ``control_after_generate`` (and after a combo with that option), and the ``upload`` button
  after an ``image_upload`` combo (LoadImage: ``["file.png", "image"]``). The 2024 frontend did
  send ``"upload": "image"`` (the server ignores it); the current one does not, and neither do
  we (``legacy_upload=True`` reproduces the 2024 frontend).
* A linked input (a socket, or a widget converted to an input: ``"widget": {"name": ...}`` on
  the input slot) becomes ``[str(origin_node_id), origin_slot]`` and wins over the widget value.
* Virtual nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are not sent: links through a
  Reroute are followed to the real source; a PrimitiveNode has already written its value into
  the target's widget, so that input keeps the widget value. Muted nodes (mode 2) are dropped;
  bypassed nodes (mode 4) pass the first input of the same type through.
* ``_meta.title`` is the node's title, or the node class's display name.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SEED_NAMES = ("seed", "noise_seed")
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowConvertError(ValueError):
    """The UI workflow does not fit the host's node definitions."""


def input_specs(node_info: Dict[str, Any]) -> List[Tuple[str, list]]:
    """(name, spec) for every required and optional input, in widget-creation order."""
    inputs = node_info.get("input", {})
    order = node_info.get("input_order") or {}
    out = []
    for group in ("required", "optional"):
        specs = inputs.get(group) or {}
        names = order.get(group) or list(specs)
        out.extend((name, specs[name]) for name in names if name in specs)
    return out


def _options(spec: list) -> Dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list) -> bool:
    kind = spec[0]
    if isinstance(kind, list):
        return True
    return kind in WIDGET_TYPES and not _options(spec).get("forceInput")


def extra_widget_count(name: str, spec: list, legacy: bool = False) -> int:
    """Frontend-only widgets that follow this input's widget in ``widgets_values``."""
    kind, opts = spec[0], _options(spec)
    extra = 0
    if kind == "INT" and (name in SEED_NAMES or opts.get("control_after_generate")):
        extra += 1                       # control_after_generate ("fixed", "randomize", ...)
    elif (isinstance(kind, list) or kind == "COMBO") and opts.get("control_after_generate"):
        extra += 2 if legacy else 1      # control (+ the 2024 frontend's filter-list widget)
    if opts.get("image_upload"):
        extra += 1                       # the "upload" button; its value is "image"
    return extra


def widget_inputs(node: Dict[str, Any], node_info: Dict[str, Any], *, legacy_upload: bool = False,
                  legacy_widgets: bool = False) -> Dict[str, Any]:
    """{input name: value} from the node's ``widgets_values``."""
    values = list(node.get("widgets_values") or [])
    if isinstance(node.get("widgets_values"), dict):  # some packs save a dict keyed by name
        return dict(node["widgets_values"])
    out: Dict[str, Any] = {}
    i = 0
    for name, spec in input_specs(node_info):
        if not is_widget(spec):
            continue
        if i >= len(values):
            raise WorkflowConvertError(
                f"node {node['id']} ({node['type']}): widgets_values has {len(values)} entries, "
                f"no value for widget {name!r}")
        out[name] = values[i]
        extra = extra_widget_count(name, spec, legacy_widgets)
        if legacy_upload and _options(spec).get("image_upload"):
            out["upload"] = values[i + 1] if i + 1 < len(values) else "image"
        i += 1 + extra
    if i != len(values):
        raise WorkflowConvertError(
            f"node {node['id']} ({node['type']}): widgets_values has {len(values)} entries but the "
            f"host's widgets take {i}: {values!r}")
    return out


def ui_to_api(workflow: Dict[str, Any], object_info: Dict[str, Any], *, legacy_upload: bool = False,
              legacy_widgets: bool = False, keep_meta: bool = True) -> Dict[str, Dict[str, Any]]:
    """The API prompt of a UI-format (LiteGraph 0.4) workflow."""
    nodes = {int(n["id"]): n for n in workflow.get("nodes", [])}
    links: Dict[int, Tuple[int, int, int, int, str]] = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):  # schema 1 stores links as objects
            links[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]),
                                      int(link["target_id"]), int(link["target_slot"]), link.get("type"))
        else:
            lid, src, src_slot, dst, dst_slot, typ = link[:6]
            links[int(lid)] = (int(src), int(src_slot), int(dst), int(dst_slot), typ)

    def resolve(link_id: int) -> Optional[Tuple[int, int]]:
        """The real (node, slot) a link comes from, or None (PrimitiveNode / dangling)."""
        seen = set()
        while link_id is not None and link_id not in seen:
            seen.add(link_id)
            if link_id not in links:
                return None
            src, slot, _, _, typ = links[link_id]
            node = nodes.get(src)
            if node is None:
                return None
            if node["type"] == "Reroute":
                link_id = (node.get("inputs") or [{}])[0].get("link")
                continue
            if node["type"] == "PrimitiveNode":
                return None
            if node.get("mode", 0) == MODE_BYPASS:
                match = [inp for inp in node.get("inputs") or [] if inp.get("type") == typ
                         and inp.get("link") is not None]
                if not match:
                    return None
                link_id = match[0]["link"]
                continue
            return src, slot
        return None

    prompt: Dict[str, Dict[str, Any]] = {}
    for nid in sorted(nodes):
        node = nodes[nid]
        kind = node["type"]
        if kind in VIRTUAL_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowConvertError(f"node {nid}: the host has no node class {kind!r}")
        inputs = widget_inputs(node, info, legacy_upload=legacy_upload, legacy_widgets=legacy_widgets)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            src = resolve(slot["link"])
            if src is not None:
                inputs[slot["name"]] = [str(src[0]), src[1]]
        entry: Dict[str, Any] = {"inputs": inputs, "class_type": kind}
        if keep_meta:
            entry["_meta"] = {"title": node.get("title") or info.get("display_name") or kind}
        prompt[str(nid)] = entry
    # inputs linked to nodes that are not sent (muted) are dropped, as the frontend does
    for entry in prompt.values():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
                    and value[0] not in prompt and int(value[0]) in nodes:
                del entry["inputs"][name]
    return prompt


def check_ui_workflow(workflow: Dict[str, Any]) -> List[str]:
    """Structural problems of a UI-format workflow (empty list when consistent): link table vs
    the nodes' input/output slots, ids below last_node_id / last_link_id."""
    problems = []
    nodes = {int(n["id"]): n for n in workflow.get("nodes", [])}
    if workflow.get("version") != 0.4:
        problems.append(f"version is {workflow.get('version')!r}, not 0.4")
    if nodes and max(nodes) > workflow.get("last_node_id", -1):
        problems.append("a node id exceeds last_node_id")
    link_ids = set()
    for link in workflow.get("links", []):
        lid, src, src_slot, dst, dst_slot, typ = link
        link_ids.add(lid)
        if lid > workflow.get("last_link_id", -1):
            problems.append(f"link {lid} exceeds last_link_id")
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid} joins missing nodes {src} -> {dst}")
            continue
        outs = nodes[src].get("outputs") or []
        ins = nodes[dst].get("inputs") or []
        if src_slot >= len(outs) or lid not in (outs[src_slot].get("links") or []):
            problems.append(f"link {lid}: node {src} output {src_slot} does not list it")
        elif outs[src_slot].get("type") != typ:
            problems.append(f"link {lid}: type {typ} but node {src} output {src_slot} is "
                            f"{outs[src_slot].get('type')}")
        if dst_slot >= len(ins) or ins[dst_slot].get("link") != lid:
            problems.append(f"link {lid}: node {dst} input {dst_slot} does not hold it")
        elif ins[dst_slot].get("type") != typ:
            problems.append(f"link {lid}: type {typ} but node {dst} input {dst_slot} is "
                            f"{ins[dst_slot].get('type')}")
    for nid, node in nodes.items():
        for slot in node.get("inputs") or []:
            if slot.get("link") is not None and slot["link"] not in link_ids:
                problems.append(f"node {nid} input {slot['name']} holds unknown link {slot['link']}")
        for slot in node.get("outputs") or []:
            for lid in slot.get("links") or []:
                if lid not in link_ids:
                    problems.append(f"node {nid} output {slot['name']} lists unknown link {lid}")
    return problems
