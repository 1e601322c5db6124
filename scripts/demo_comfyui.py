"""Main job: run the shipped workflow ``workflows/api/midms_edge_to_photo_sd15.api.json`` end to
end in a real, headless ComfyUI with this pack in custom_nodes, and collect what it produces.

    python scripts/demo_comfyui.py [--checkpoint PATH] [--size PX] [--out output/comfyui]

Checkpoint: ``--checkpoint`` or ``$MIDMS_CHECKPOINT`` (any SD1.5 .safetensors). Without one (no
weights can be downloaded here) a small SD1.5-shaped checkpoint with seeded random weights is
generated: the graph then runs exactly as shipped, the correspondence outputs (flow, confidence)
are real because the edge matcher needs no weights, but the decoded images are what random
weights draw. Writes the workflow's images, ``figure.png`` (condition, exemplar, warped
exemplar, flow, confidence, result) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw  # noqa: E402

from harness.host import ComfyServer  # noqa: E402
from harness.tiny_models import write_tiny_sd15_checkpoint  # noqa: E402

WORKFLOW = REPO / "workflows" / "api" / "midms_edge_to_photo_sd15.api.json"
INPUTS = REPO / "workflows" / "inputs"


def find(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] == class_type]


def preview_roles(prompt: dict) -> dict[str, str]:
    """Which PreviewImage/SaveImage node shows what, from the links of the shipped graph."""
    corr = find(prompt, "MIDMsCorrespondence")[0]
    mask_image = find(prompt, "MaskToImage")[0]
    roles = {}
    for node_id, node in prompt.items():
        if node["class_type"] not in ("PreviewImage", "SaveImage"):
            continue
        source = node["inputs"]["images"]
        if source == [corr, 3]:
            roles[node_id] = "warped exemplar"
        elif source == [corr, 4]:
            roles[node_id] = "flow"
        elif source[0] == mask_image:
            roles[node_id] = "confidence"
        elif node["class_type"] == "SaveImage":
            roles[node_id] = "result"
    return roles


def compose(panels: list[tuple[str, Path]], path: Path, size: int = 256) -> None:
    label_h = 20
    sheet = Image.new("RGB", (size * len(panels), size + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, file) in enumerate(panels):
        image = Image.open(file).convert("RGB").resize((size, size))
        sheet.paste(image, (i * size, label_h))
        draw.text((i * size + 4, 4), label, fill="black")
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=os.environ.get("MIDMS_CHECKPOINT"), help="an SD1.5 .safetensors checkpoint")
    parser.add_argument("--size", type=int, default=None, help="resize the example inputs to this many pixels (default 512 with a real checkpoint, 256 with the generated one)")
    parser.add_argument("--out", default=str(REPO / "output" / "comfyui"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompt = json.loads(WORKFLOW.read_text())
    scratch = Path(tempfile.mkdtemp(prefix="midms-demo-"))
    summary: dict = {"workflow": str(WORKFLOW.relative_to(REPO))}
    try:
        if args.checkpoint:
            checkpoint = Path(args.checkpoint)
            summary["checkpoint"] = str(checkpoint)
        else:
            checkpoint = scratch / "midms_demo_random_sd15.safetensors"
            info = write_tiny_sd15_checkpoint(checkpoint, seed=0, with_clip=True)
            summary["checkpoint"] = f"generated: SD1.5-shaped, seeded random weights ({info['parameters']} parameters)"
        size = args.size or (512 if args.checkpoint else 256)
        images = {}
        for loader in find(prompt, "LoadImage"):
            name = prompt[loader]["inputs"]["image"]
            Image.open(INPUTS / name).convert("RGB").resize((size, size), Image.LANCZOS).save(scratch / name)
            images[name] = scratch / name
        with ComfyServer(helpers=False) as server:
            prompt[find(prompt, "CheckpointLoaderSimple")[0]]["inputs"]["ckpt_name"] = server.add_model("checkpoints", checkpoint)
            for name, path in images.items():
                server.add_input_image(path, name)
            start = time.perf_counter()
            entry = server.run(prompt, timeout=1800)
            summary["seconds"] = round(time.perf_counter() - start, 2)
            roles = preview_roles(prompt)
            saved = {}
            for node_id, role in roles.items():
                files = server.output_files({"outputs": {node_id: entry["outputs"].get(node_id, {})}})
                if files:
                    dest = out / f"{role.replace(' ', '_')}.png"
                    shutil.copyfile(files[0], dest)
                    saved[role] = dest
        panels = [("condition", images["midms_condition_edges.png"]), ("exemplar", images["midms_exemplar.png"])]
        panels += [(role, saved[role]) for role in ("warped exemplar", "flow", "confidence", "result") if role in saved]
        compose(panels, out / "figure.png")
        summary.update(size_px=size, outputs={k: str(v) for k, v in saved.items()}, figure=str(out / "figure.png"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        missing = {"warped exemplar", "flow", "confidence", "result"} - set(saved)
        if missing:
            print(f"demo: the workflow did not produce {sorted(missing)}", file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
