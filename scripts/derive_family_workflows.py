"""Derive the Flux.2 and Z-Image UI workflows from shipped ones, wired the way ComfyUI's own
examples load those families (split files: Load Diffusion Model, Load CLIP with its type, Load
VAE; the family's guider and scheduler):

* ``midms_flux2.json`` from ``midms_flux.json``: UNETLoader flux2_dev_fp8mixed, CLIPLoader
  mistral_3_small_flux2_bf16 (type flux2), VAELoader flux2-vae; FluxGuidance 4 and BasicGuider;
  Flux2Scheduler (its resolution-dependent shift) cut by SplitSigmasDenoise to MIDMs' partial
  start; the DiT feature matcher at its default block share.
* ``midms_z_image.json`` from ``midms_sampler_custom_advanced_sd15.json``: UNETLoader
  z_image_turbo_bf16, CLIPLoader qwen_3_4b (type lumina2), VAELoader ae; ModelSamplingAuraFlow 3;
  ConditioningZeroOut as the negative and CFGGuider at cfg 1 (the turbo model's own settings);
  the edge matcher (Z-Image's blocks are not read for features: the feature matcher refuses it).

Writes the UI files only; node positions are then set by ``scripts/layout_workflows.py --write
--room-for-unsized`` and the API twins by ``scripts/ui_to_api.py`` (both from the front ends and
host themselves).

    python scripts/derive_family_workflows.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"


class Graph:
    """A UI-format workflow with the few edits this script needs."""

    def __init__(self, data: Dict[str, Any]):
        self.data = data

    def node(self, node_id: int) -> Dict[str, Any]:
        return next(n for n in self.data["nodes"] if n["id"] == node_id)

    def link(self, link_id: int) -> List[Any]:
        return next(link for link in self.data["links"] if link[0] == link_id)

    def add_node(self, node_id: int, kind: str, pos, size, widgets: Optional[list] = None,
                 inputs: Optional[List[tuple]] = None, outputs: Optional[List[tuple]] = None,
                 title: Optional[str] = None) -> Dict[str, Any]:
        node = {"id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
                "mode": 0, "inputs": [{"name": n, "type": t, "link": None} for n, t in (inputs or [])],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs or [])],
                "properties": {"Node name for S&R": kind}}
        if widgets is not None:
            node["widgets_values"] = widgets
        if title:
            node["title"] = title
        self.data["nodes"].append(node)
        self.data["last_node_id"] = max(self.data["last_node_id"], node_id)
        return node

    def remove_node(self, node_id: int) -> None:
        node = self.node(node_id)
        assert not any(i.get("link") for i in node.get("inputs", [])), node
        assert not any(o.get("links") for o in node.get("outputs", [])), node
        self.data["nodes"].remove(node)

    def _detach(self, link: List[Any]) -> None:
        src = self.node(link[1])["outputs"][link[2]]
        src["links"].remove(link[0])

    def source(self, link_id: int, node_id: int, slot: int) -> None:
        """Make link ``link_id`` start at (node_id, slot)."""
        link = self.link(link_id)
        self._detach(link)
        link[1], link[2] = node_id, slot
        self.node(node_id)["outputs"][slot]["links"].append(link_id)

    def connect(self, src: int, slot: int, dst: int, input_name: str) -> int:
        link_id = self.data["last_link_id"] + 1
        self.data["last_link_id"] = link_id
        out = self.node(src)["outputs"][slot]
        target = self.node(dst)
        index = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == input_name)
        assert target["inputs"][index]["link"] is None, (dst, input_name)
        target["inputs"][index]["link"] = link_id
        out["links"].append(link_id)
        self.data["links"].append([link_id, src, slot, dst, index, out["type"]])
        return link_id

    def drop_link(self, link_id: int) -> None:
        link = self.link(link_id)
        self._detach(link)
        self.node(link[3])["inputs"][link[4]]["link"] = None
        self.data["links"].remove(link)

    def retarget(self, link_id: int, dst: int, input_name: str) -> None:
        """Make link ``link_id`` end at ``dst``'s input ``input_name``."""
        link = self.link(link_id)
        self.node(link[3])["inputs"][link[4]]["link"] = None
        target = self.node(dst)
        index = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == input_name)
        target["inputs"][index]["link"] = link_id
        link[3], link[4] = dst, index

    def split_loader(self, ckpt_id: int, unet: str, clip: str, clip_type: str, vae: str, ids=(32, 33)) -> None:
        """Replace a CheckpointLoaderSimple by UNETLoader (same id) + CLIPLoader + VAELoader."""
        old = self.node(ckpt_id)
        model_links, clip_links, vae_links = (list(o["links"] or []) for o in old["outputs"])
        x, y = old["pos"]
        old.update(type="UNETLoader", widgets_values=[unet, "default"],
                   properties={"Node name for S&R": "UNETLoader"},
                   outputs=[{"name": "MODEL", "type": "MODEL", "links": model_links, "slot_index": 0}])
        self.add_node(ids[0], "CLIPLoader", (x, y + 130), (420, 106), [clip, clip_type, "default"],
                      outputs=[("CLIP", "CLIP")])
        self.add_node(ids[1], "VAELoader", (x, y + 260), (420, 58), [vae], outputs=[("VAE", "VAE")])
        for link_id in clip_links:
            self.link(link_id)[1:3] = [ids[0], 0]
            self.node(ids[0])["outputs"][0]["links"].append(link_id)
        for link_id in vae_links:
            self.link(link_id)[1:3] = [ids[1], 0]
            self.node(ids[1])["outputs"][0]["links"].append(link_id)


FLUX2_README = (
    "MIDMs exemplar-based translation on FLUX.2 [dev], with matching from Flux.2's own transformer "
    "features (DiTF) and no extra weights.\n\n"
    "Before you queue:\n"
    "1. The model loads as ComfyUI's Flux.2 example loads it, from three files: Load Diffusion Model "
    "(flux2_dev_fp8mixed), Load CLIP (mistral_3_small_flux2_bf16, type flux2), Load VAE (flux2-vae).\n"
    "2. Copy midms_condition_edges.png and midms_exemplar.png from this pack's workflows/inputs/ folder "
    "into ComfyUI/input/ (or pick your own images).\n"
    "3. Describe the result in the positive prompt. Set Flux2Scheduler's width and height to the "
    "condition's size (its shift depends on them).\n\n"
    "Latents: Flux.2's VAE gives 128 channels at 16 pixels per cell, so matching runs on a grid half "
    "as fine as Flux.1's; the pack upsamples nothing, the confidence mask is per 16 px cell.\n\n"
    "Matching: the edge matcher makes the FIRST warp; every re-match while sampling compares Flux.2 "
    "features of the current estimate with the exemplar's (the input image tokens of the block at "
    "DiTF's share of the stack, normalised by Flux.2's shared modulation), recorded during the "
    "sampler's own model call.\n\n"
    "Sampling: Flux.2 dev is guidance-distilled: FluxGuidance 4 and a BasicGuider (no negative "
    "prompt). Flux2Scheduler gives its 12-step schedule; SplitSigmasDenoise 0.33 keeps its last 4 "
    "steps, MIDMs' partial start from the warped exemplar.\n\n"
    "Checked in CI on a tiny Flux.2 built from ComfyUI's own classes (random weights), never on the "
    "real 32 B model: the settings are the family's defaults, not tuned results.")

ZIMAGE_README = (
    "MIDMs exemplar-based translation on Z-Image Turbo.\n\n"
    "Before you queue:\n"
    "1. The model loads as ComfyUI's Z-Image example loads it: Load Diffusion Model "
    "(z_image_turbo_bf16), Load CLIP (qwen_3_4b, type lumina2), Load VAE (ae, Flux's VAE).\n"
    "2. Copy midms_condition_edges.png and midms_exemplar.png from this pack's workflows/inputs/ folder "
    "into ComfyUI/input/ (or pick your own images).\n"
    "3. Describe the result in the positive prompt.\n\n"
    "Matching: the edge matcher (kornia, training-free) makes the first warp and every re-match. "
    "Z-Image's transformer is not read for features: the Diffusion Feature Matcher refuses it by name.\n\n"
    "Sampling: Z-Image Turbo's own settings: ModelSamplingAuraFlow shift 3, cfg 1 with a zeroed "
    "negative (ConditioningZeroOut). BasicScheduler (simple, 4 steps, denoise 0.33) starts MIDMs from "
    "the noised warped exemplar on Z-Image's rectified-flow path.\n\n"
    "Checked in CI on a tiny Z-Image built from ComfyUI's own classes (random weights), never on the "
    "real 6 B model: the settings are the family's defaults, not tuned results.")


def flux2() -> Dict[str, Any]:
    g = Graph(json.loads((WORKFLOWS / "midms_flux.json").read_text()))
    g.node(1)["widgets_values"] = [FLUX2_README]
    g.split_loader(2, "flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors", "flux2",
                   "flux2-vae.safetensors")
    g.node(22)["widgets_values"] = [4.0]   # FluxGuidance: the Flux.2 example's value
    sched = g.node(17)                     # BasicScheduler -> Flux2Scheduler (no model input)
    g.drop_link(15)
    sched.update(type="Flux2Scheduler", title="Flux2Scheduler (12 steps)", inputs=[],
                 widgets_values=[12, 1024, 1024], properties={"Node name for S&R": "Flux2Scheduler"})
    x, y = sched["pos"]
    g.add_node(34, "SplitSigmasDenoise", (x, y + 150), (400, 78), [0.33], inputs=[("sigmas", "SIGMAS")],
               outputs=[("high_sigmas", "SIGMAS"), ("low_sigmas", "SIGMAS")],
               title="SplitSigmasDenoise (MIDMs: last 4 steps)")
    g.source(22, 34, 1)                    # low sigmas -> SamplerCustomAdvanced
    g.connect(17, 0, 34, "sigmas")
    next(n for n in g.data["nodes"] if n["type"] == "SaveImage")["widgets_values"] = ["midms/flux2"]
    return g.data


def z_image() -> Dict[str, Any]:
    g = Graph(json.loads((WORKFLOWS / "midms_sampler_custom_advanced_sd15.json").read_text()))
    g.node(1)["widgets_values"] = [ZIMAGE_README]
    g.split_loader(2, "z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "lumina2", "ae.safetensors")
    # ModelSamplingAuraFlow between the loader and every model consumer
    x, y = g.node(2)["pos"]
    g.add_node(35, "ModelSamplingAuraFlow", (x, y + 390), (420, 58), [3.0], inputs=[("model", "MODEL")],
               outputs=[("MODEL", "MODEL")])
    for link_id in list(g.node(2)["outputs"][0]["links"]):
        g.source(link_id, 35, 0)
    g.connect(2, 0, 35, "model")
    # the negative: ConditioningZeroOut of the positive (the Z-Image example's), cfg 1
    neg = g.node(6)
    g.drop_link(2)                         # CLIP -> the negative text encode
    neg.update(type="ConditioningZeroOut", title="Negative (zeroed)", widgets_values=[],
               inputs=[{"name": "conditioning", "type": "CONDITIONING", "link": None}],
               properties={"Node name for S&R": "ConditioningZeroOut"})
    del neg["widgets_values"]
    g.connect(5, 0, 6, "conditioning")
    g.node(21)["widgets_values"] = [1.0]   # CFGGuider
    g.node(17)["title"] = "BasicScheduler (MIDMs: 4 steps, denoise 0.33)"
    g.node(17)["widgets_values"] = ["simple", 4, 0.33]
    next(n for n in g.data["nodes"] if n["type"] == "SaveImage")["widgets_values"] = ["midms/z_image"]
    return g.data


def main() -> int:
    for name, make in (("midms_flux2.json", flux2), ("midms_z_image.json", z_image)):
        path = WORKFLOWS / name
        path.write_text(json.dumps(make(), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
