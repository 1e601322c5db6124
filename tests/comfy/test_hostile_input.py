"""Hostile input through a real ComfyUI over HTTP: a careless user's graphs, table-driven.

One server, a tiny seeded SD1.5 checkpoint (no CLIP: conditioning from the harness's
``MIDMSTestZeroConditioning``), 64 px inputs made here. Every case is a graph (or a sequence of
requests) with the outcome a user should see:

* ``ok``: it runs, every MIDMs output is finite, and the same graph run again (after another
  graph with another edge matcher setting has replaced the cached results, so the matcher and
  every node after it execute again; loading and encoding stay cached) gives the same bytes
  (sha256 of the saved tensors);
* ``refused``: refused naming the node and the input, by the host's validation (HTTP 400) or by
  the node when it runs (hosts validate only some inputs: the 2024 one skips optional inputs and
  every node reached only through optional links, so the nodes check their widgets themselves);
* ``error``: it fails while running, in the named node, with a message that names the MIDMs
  node, the input and contains the fix (the fragments listed); run again, the same message;
* custom: interrupts (the button must stop matching and sampling inside their node, within
  seconds) and several prompts queued at once.

After every case a valid graph must still run (the server and the pack are not left broken).
The table (case, expected, observed) is printed and written to
``<pytest basetemp>/hostile_input_table.md``; docs/bad_input.md quotes its summary.

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_hostile_input.py -q -s
(``MIDMS_HOSTILE_ONLY="exemplar set"`` runs only the cases whose name contains that text.)
On the 2024 host only the rows that depend on the host run (refused, coerced, custom), unless
``MIDMS_HOSTILE_ALL_HOSTS=1``: each slow case runs on one host (the newest) in CI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from harness.host import REPO, ComfyServer, execution_error, require_host, succeeded
from harness.tiny_models import write_tiny_sd3_checkpoint, write_tiny_sd15_checkpoint, write_tiny_vae16

SIZE = 64
CKPT = "tiny_sd15_hostile.safetensors"
SAVE = "90"  # the MIDMSTestSaveTensor node of every graph
NAN = float("nan")  # a FLOAT widget value no host's range check refuses (every comparison is False)


# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------
def match_graph(condition="cond.png", exemplar="exem.png", **overrides) -> dict:
    """Encode -> edge matcher -> settings -> correspondence; the warped latent and flow preview
    saved. ``overrides``: {"node_id.input": value}."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": condition}},
        "3": {"class_type": "LoadImage", "inputs": {"image": exemplar}},
        "4": {"class_type": "MIDMsExemplarEncode", "inputs": {"condition": ["2", 0], "exemplar": ["3", 0], "vae": ["1", 2],
                                                             "exemplar_fit": "crop"}},
        "5": {"class_type": "MIDMsEdgeMatcher", "inputs": {"canny_low": 0.1, "canny_high": 0.2, "edge_blur": 2.0,
                                                          "x0_condition_weight": 0.7, "alignment": "similarity",
                                                          "mirror": True, "locality": 0.03}},
        "6": {"class_type": "MIDMsRewarpSettings", "inputs": {"tau": 0.005, "threshold": 3.0, "mask_mode": "hard",
                                                             "smooth_mask": True, "rewarp_steps": "", "eta": 0.0,
                                                             "refine_strength": 0.0, "refine_steps": 20}},
        "7": {"class_type": "MIDMsCorrespondence", "inputs": {"context": ["4", 0], "matcher": ["5", 0], "settings": ["6", 0]}},
        SAVE: {"class_type": "MIDMSTestSaveTensor", "inputs": {"name": "hostile", "latent": ["7", 1], "image": ["7", 4]}},
    }
    return _apply(g, overrides)


def dift_graph(**overrides) -> dict:
    """match_graph with the DIFT matcher (the edge matcher for the first, cross-domain warp)."""
    g = match_graph()
    g["31"] = {"class_type": "MIDMsDiffusionFeatureMatcher", "inputs": {
        "model": ["1", 0], "timestep": 261, "output_block": 1, "ensemble": 1, "cross_domain_matcher": ["5", 0]}}
    g["7"]["inputs"]["matcher"] = ["31", 0]
    return _apply(g, overrides)


def dift_sampler_graph(**overrides) -> dict:
    """sampler_custom_graph whose match re-matches with the DIFT matcher ("31"): its exemplar
    features come from a pass of its own model."""
    g = sampler_custom_graph()
    g["31"] = dift_graph()["31"]
    g["7"]["inputs"]["matcher"] = ["31", 0]
    return _apply(g, overrides)


def sampler_custom_graph(latent=None, steps=2, **overrides) -> dict:
    """match_graph + MIDMs Interleaved DDIM Sampler inside SamplerCustom (denoise 0.25)."""
    g = match_graph()
    g.update({
        "8": {"class_type": "MIDMSTestZeroConditioning", "inputs": {"batch_size": 1, "tokens": 77, "width": 768}},
        "9": {"class_type": "MIDMsInterleavedSampler", "inputs": {"model": ["1", 0], "match": ["7", 0]}},
        "10": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": steps,
                                                         "denoise": 0.25}},
        "11": {"class_type": "SamplerCustom", "inputs": {"model": ["1", 0], "add_noise": True, "noise_seed": 7, "cfg": 2.0,
                                                        "positive": ["8", 0], "negative": ["8", 0], "sampler": ["9", 0],
                                                        "sigmas": ["10", 0], "latent_image": latent or ["7", 1]}},
    })
    g[SAVE]["inputs"] = {"name": "hostile", "latent": ["11", 0]}
    return _apply(g, overrides)


def all_in_one_graph(**overrides) -> dict:
    """match_graph's encode / matcher / settings + MIDMs Sampler (all-in-one)."""
    g = match_graph()
    del g["7"]
    g.update({
        "8": {"class_type": "MIDMSTestZeroConditioning", "inputs": {"batch_size": 1, "tokens": 77, "width": 768}},
        "12": {"class_type": "MIDMsSampler", "inputs": {"model": ["1", 0], "positive": ["8", 0], "negative": ["8", 0],
                                                       "context": ["4", 0], "matcher": ["5", 0], "seed": 3, "steps": 2,
                                                       "start_noise": 0.25, "cfg": 2.0, "settings": ["6", 0]}},
    })
    g[SAVE]["inputs"] = {"name": "hostile", "latent": ["12", 0]}
    return _apply(g, overrides)


def _ddib_base(exemplar="exem.png") -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "3": {"class_type": "LoadImage", "inputs": {"image": exemplar}},
        "35": {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["1", 2]}},
        "8": {"class_type": "MIDMSTestZeroConditioning", "inputs": {"batch_size": 1, "tokens": 77, "width": 768}},
    }


def ddib_graph(exemplar="exem.png", **overrides) -> dict:
    """Photo -> VAE Encode -> MIDMs DDIB Translate (the tiny model both ways) -> saved latent."""
    g = _ddib_base(exemplar)
    g["40"] = {"class_type": "MIDMsDDIBTranslate", "inputs": {
        "model_a": ["1", 0], "positive_a": ["8", 0], "negative_a": ["8", 0], "model_b": ["1", 0],
        "positive_b": ["8", 0], "negative_b": ["8", 0], "latent_image": ["35", 0], "steps": 4, "depth": 1.0,
        "scheduler": "normal", "cfg_a": 1.0, "cfg_b": 1.0}}
    g[SAVE] = {"class_type": "MIDMSTestSaveTensor", "inputs": {"name": "hostile", "latent": ["40", 0]}}
    return _apply(g, overrides)


def round_trip_graph(**overrides) -> dict:
    g = _ddib_base()
    g["41"] = {"class_type": "MIDMsDDIMRoundTrip", "inputs": {
        "model": ["1", 0], "positive": ["8", 0], "negative": ["8", 0], "latent_image": ["35", 0], "steps": 4,
        "depth": 1.0, "scheduler": "normal", "cfg": 1.0}}
    g[SAVE] = {"class_type": "MIDMSTestSaveTensor", "inputs": {"name": "hostile", "latent": ["41", 0]}}
    return _apply(g, overrides)


def inversion_graph(**overrides) -> dict:
    """The inversion SAMPLER inside SamplerCustom (add_noise off), the schedule from BasicScheduler."""
    g = _ddib_base()
    g.update({
        "42": {"class_type": "MIDMsDDIMInversionSampler", "inputs": {"model": ["1", 0]}},
        "10": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 4,
                                                         "denoise": 1.0}},
        "11": {"class_type": "SamplerCustom", "inputs": {"model": ["1", 0], "add_noise": False, "noise_seed": 7, "cfg": 1.0,
                                                        "positive": ["8", 0], "negative": ["8", 0], "sampler": ["42", 0],
                                                        "sigmas": ["10", 0], "latent_image": ["35", 0]}},
    })
    g[SAVE] = {"class_type": "MIDMSTestSaveTensor", "inputs": {"name": "hostile", "latent": ["11", 0]}}
    return _apply(g, overrides)


def exemplar_set_graph(**overrides) -> dict:
    """match_graph with TWO exemplars (exem.png and exem2.png, batched) through MIDMs Exemplar Set
    Encode; the source preview saved as the image."""
    g = match_graph()
    del g["4"]
    g.update({
        "51": {"class_type": "LoadImage", "inputs": {"image": "exem2.png"}},
        "50": {"class_type": "ImageBatch", "inputs": {"image1": ["3", 0], "image2": ["51", 0]}},
        "52": {"class_type": "MIDMsExemplarSetEncode", "inputs": {"condition": ["2", 0], "exemplars": ["50", 0],
                                                                 "vae": ["1", 2], "exemplar_fit": "crop",
                                                                 "label_compare": "exact colour"}},
        "53": {"class_type": "MIDMsSourcePreview", "inputs": {"match": ["7", 0]}},
    })
    g["7"]["inputs"]["context"] = ["52", 0]
    g[SAVE]["inputs"]["image"] = ["53", 0]
    return _apply(g, overrides)


# the anchors inputs (``_make_anchor_inputs``): the shipped keypoint files (canvas 512) and 64 px
# conditions from workflows/make_anchor_inputs.py; "exem.png" is the same astronaut photo
FACE_CONDITION, POSE_CONDITION = "midms_face_condition.png", "midms_pose_condition.png"
FACE_KEYPOINTS = ("midms_face_condition_keypoints.json", "midms_exemplar_face_keypoints.json")
POSE_KEYPOINTS = ("midms_pose_condition_keypoints.json", "midms_exemplar_pose_keypoints.json")
ANCHORS = "MIDMs Anchors (keypoints)"
LOAD_KEYPOINTS = "MIDMs Load Keypoints JSON"
ENCODE = "MIDMs Exemplar Encode"
ANCHOR_POINTS = [(12, 14), (50, 12), (30, 34), (14, 52), (52, 50)]  # hand-placed points on a 64 px canvas


def _points(points, shift=(0.0, 0.0)) -> str:
    return json.dumps([{"x": x + shift[0], "y": y + shift[1]} for x, y in points])


def anchors_nodes(condition_file=FACE_KEYPOINTS[0], exemplar_file=FACE_KEYPOINTS[1], mode="prior") -> dict:
    """Nodes "80".."82": two MIDMs Load Keypoints JSON and MIDMs Anchors (defaults) on them."""
    return {
        "80": {"class_type": "MIDMsLoadKeypoints", "inputs": {"file": condition_file}},
        "81": {"class_type": "MIDMsLoadKeypoints", "inputs": {"file": exemplar_file}},
        "82": {"class_type": "MIDMsAnchors", "inputs": {"mode": mode, "smoothing": 0.01, "trust": 0.001, "trust_cap": 0.02,
                                                       "condition_keypoints": ["80", 0], "exemplar_keypoints": ["81", 0]}},
    }


def anchors_graph(kind="face", condition_file=None, exemplar_file=None, mode="prior", **overrides) -> dict:
    """match_graph on the 64 px face (or pose) condition and the astronaut, MIDMs Anchors from
    two keypoint files into the encode node's 'anchors'; the anchors preview ("83") saved as the
    image."""
    files = FACE_KEYPOINTS if kind == "face" else POSE_KEYPOINTS
    g = match_graph(condition=FACE_CONDITION if kind == "face" else POSE_CONDITION)
    g.update(anchors_nodes(condition_file or files[0], exemplar_file or files[1], mode))
    g["4"]["inputs"]["anchors"] = ["82", 0]
    g["83"] = {"class_type": "MIDMsAnchorsPreview", "inputs": {"context": ["4", 0], "exemplar": 1}}
    g[SAVE]["inputs"]["image"] = ["83", 0]
    return _apply(g, overrides)


def points_anchors_graph(condition=True, exemplar=True, **overrides) -> dict:
    """anchors_graph with hand-placed points (STRING, from the harness's MIDMSTestString: no core
    node of the 2024 host outputs a STRING) in place of the keypoint files, on 64 px canvases;
    ``condition`` / ``exemplar`` False leaves that side's points out."""
    g = anchors_graph()
    del g["80"], g["81"]
    inputs = g["82"]["inputs"]
    del inputs["condition_keypoints"], inputs["exemplar_keypoints"]
    g["84"] = {"class_type": "MIDMSTestString", "inputs": {"text": _points(ANCHOR_POINTS)}}
    g["85"] = {"class_type": "MIDMSTestString", "inputs": {"text": _points(ANCHOR_POINTS, (5.0, -3.0))}}
    inputs.update(condition_canvas_width=SIZE, condition_canvas_height=SIZE, exemplar_canvas_width=SIZE,
                  exemplar_canvas_height=SIZE)
    if condition:
        inputs["condition_points"] = ["84", 0]
    if exemplar:
        inputs["exemplar_points"] = ["85", 0]
    return _apply(g, overrides)


def mask_batch(value: float, count: int, width: int = SIZE, height: int = SIZE) -> dict:
    """Nodes "60".."63": a batch of ``count`` solid masks (core nodes only); its output is ["63", 0]."""
    return {
        "60": {"class_type": "SolidMask", "inputs": {"value": value, "width": width, "height": height}},
        "61": {"class_type": "MaskToImage", "inputs": {"mask": ["60", 0]}},
        "62": repeat(["61", 0], count),
        "63": {"class_type": "ImageToMask", "inputs": {"image": ["62", 0], "channel": "red"}},
    }


def _apply(g: dict, overrides: dict) -> dict:
    g = json.loads(json.dumps(g))
    for key, value in overrides.items():
        nid, name = key.split(".")
        g.setdefault(nid, {"class_type": None, "inputs": {}})["inputs"][name] = value
    return g


def with_nodes(g: dict, **nodes) -> dict:
    """Add or replace whole nodes: with_nodes(g, **{"20": {...}})."""
    g = json.loads(json.dumps(g))
    g.update(nodes)
    return g


def repeat(image_link, amount):
    return {"class_type": "RepeatImageBatch", "inputs": {"image": image_link, "amount": amount}}


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    graph: Optional[Callable[[], dict]]
    expect: str                      # "ok" | "refused" | "error" | "custom"
    node: Optional[str] = None       # node id the error / rejection / interrupt must be in
    input: Optional[str] = None      # input the message or rejection must name
    says: tuple = ()                 # fragments the error message must contain (the fix)
    runner: Optional[Callable] = None  # custom cases: runner(server) -> (passed, observed)
    host_may_coerce: bool = False    # a host that converts the value / input first may run it instead
    never_says: tuple = ()           # fragments the error message must NOT contain
    check: Optional[Callable[[dict], Optional[str]]] = None  # ok cases: saved tensors -> what is wrong, or None
    needs: Optional[str] = None      # a node class the host must have (SD3 / rectified-flow rows), else skipped
    observed: str = ""
    passed: Optional[bool] = None
    notes: list = field(default_factory=list)


MATCH_ERR = ("MIDMs Cross-Domain Correspondence",)


def bounds_cases() -> list[Case]:
    """Every MIDMs widget input at its bounds (runs) and beyond them (refused, naming the node and the input)."""
    # (node id, input, at-min value, at-max value, below, above, graph)
    specs = [
        ("5", "canny_low", 0.01, 0.99, 0.0, 1.5, match_graph),
        ("5", "canny_high", 0.02, 1.0, 0.0, 1.5, match_graph),
        ("5", "edge_blur", 0.0, 16.0, -1.0, 17.0, match_graph),
        ("5", "x0_condition_weight", 0.0, 4.0, -0.5, 5.0, sampler_custom_graph),
        ("5", "locality", 0.0, 4.0, -0.5, 5.0, match_graph),
        ("6", "tau", 0.0005, 1.0, 0.0, 2.0, match_graph),
        ("6", "threshold", 0.1, 512.0, 0.0, 600.0, match_graph),
        ("6", "eta", 0.0, 1.0, -0.1, 1.5, sampler_custom_graph),
        ("6", "refine_strength", 0.0, 1.0, -0.1, 1.5, sampler_custom_graph),
        ("6", "refine_steps", 1, 200, 0, 201, None),
        ("12", "steps", 1, 1000, 0, 1001, lambda **o: all_in_one_graph(**{"12.start_noise": 1.0, **o})),
        ("12", "start_noise", 0.01, 1.0, 0.0, 1.5, all_in_one_graph),
        ("12", "cfg", 0.0, 100.0, -1.0, 101.0, all_in_one_graph),
        ("12", "seed", 0, 0xFFFFFFFFFFFFFFFF, -1, 0x10000000000000000, all_in_one_graph),
        ("31", "timestep", 0, 999, -1, 1000, dift_graph),
        ("31", "output_block", 0, 1, -1, 65, dift_graph),  # the tiny U-Net has output blocks 0..1
        ("31", "ensemble", 1, 64, 0, 65, dift_graph),
        ("40", "steps", 1, 1000, 0, 1001, ddib_graph),
        ("40", "depth", 0.01, 1.0, 0.0, 1.5, ddib_graph),
        ("40", "cfg_a", 0.0, 100.0, -1.0, 101.0, ddib_graph),
        ("40", "cfg_b", 0.0, 100.0, -1.0, 101.0, ddib_graph),
        ("41", "steps", 1, 1000, 0, 1001, round_trip_graph),
        ("41", "depth", 0.01, 1.0, 0.0, 1.5, round_trip_graph),
        ("41", "cfg", 0.0, 100.0, -1.0, 101.0, round_trip_graph),
    ]
    cases = []
    for nid, name, lo, hi, below, above, graph in specs:
        if name == "refine_steps":  # refine_steps only matter with a refinement: strength 1 fits 200 steps
            graph = lambda **o: sampler_custom_graph(**{"6.refine_strength": 1.0, **o})  # noqa: E731
        for label, value in (("min", lo), ("max", hi)):
            v = value
            over = {f"{nid}.{name}": v}
            if name == "canny_low" and label == "max":
                over["5.canny_high"] = 1.0
            if name == "canny_high" and label == "min":
                over["5.canny_low"] = 0.01
            if name == "start_noise" and label == "min":
                over["12.steps"] = 1  # 0.01 of 1000 timesteps holds 10 steps at most
            cases.append(Case(f"{name} at {label} ({v})", lambda g=graph, o=over: g(**o), "ok"))
        for label, value in (("below min", below), ("above max", above)):
            cases.append(Case(f"{name} {label} ({value})", lambda g=graph, o={f"{nid}.{name}": value}: g(**o),
                              "refused", node=nid, input=name))
    cases += [Case("smooth_mask off", lambda: match_graph(**{"6.smooth_mask": False}), "ok"),
              Case("mask_mode soft", lambda: match_graph(**{"6.mask_mode": "soft"}), "ok"),
              Case("alignment none, mirror off", lambda: match_graph(**{"5.alignment": "none", "5.mirror": False}), "ok"),
              Case("output_block past the model's last block (64; the tiny U-Net has 0..1)",
                   lambda: dift_graph(**{"31.output_block": 64}), "error", node="7", input="output_block",
                   says=("MIDMs Diffusion Feature Matcher (DIFT)", "output blocks 0..1"))]
    # combinations the bounds alone allow but the node refuses, with the fix
    cases += [
        Case("canny_high <= canny_low", lambda: match_graph(**{"5.canny_low": 0.3, "5.canny_high": 0.2}), "error",
             node="5", input="canny_high", says=("MIDMs Edge Matcher", "must be greater than 'canny_low'")),
        Case("refine_steps beyond refine_strength", lambda: sampler_custom_graph(**{"6.refine_strength": 0.01, "6.refine_steps": 50}),
             "error", node="6", input="refine_steps", says=("MIDMs Rewarp Settings", "use at most 10 steps")),
        Case("steps beyond start_noise (all-in-one)", lambda: all_in_one_graph(**{"12.steps": 20, "12.start_noise": 0.01}),
             "error", node="12", input="steps", says=("MIDMs Sampler (all-in-one)", "'start_noise' 0.01", "use at most 10 steps"),
             never_says=("strength",)),
        Case("rewarp_steps not numbers", lambda: match_graph(**{"6.rewarp_steps": "abc"}), "error", node="6",
             input="rewarp_steps", says=("MIDMs Rewarp Settings", "'1, 2'")),
        Case("rewarp_steps negative", lambda: match_graph(**{"6.rewarp_steps": "-1"}), "error", node="6",
             input="rewarp_steps", says=("MIDMs Rewarp Settings", "0 is the first step")),
        Case("unknown alignment choice", lambda: match_graph(**{"5.alignment": "affine"}), "refused", node="5", input="alignment"),
        # current hosts turn any value of a BOOLEAN input into a bool before the node sees it
        Case("mirror not a boolean", lambda: match_graph(**{"5.mirror": "yes"}), "refused", node="5", input="mirror",
             host_may_coerce=True),
        Case("smooth_mask not a boolean", lambda: match_graph(**{"6.smooth_mask": "yes"}), "refused", node="6",
             input="smooth_mask", host_may_coerce=True),
        Case("unknown mask_mode choice", lambda: match_graph(**{"6.mask_mode": "fuzzy"}), "refused", node="6", input="mask_mode"),
        Case("unknown exemplar_fit choice", lambda: match_graph(**{"4.exemplar_fit": "zoom"}), "refused", node="4",
             input="exemplar_fit"),
    ]
    return cases


def sampler_cases() -> list[Case]:
    two = {"20": repeat(["2", 0], 2)}
    one_of_two = {"21": {"class_type": "LatentFromBatch", "inputs": {"samples": ["7", 1], "batch_index": 0, "length": 1}}}
    big = {"22": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 96, "batch_size": 1}}}
    return [
        Case("sampler: latent batch 1 vs match of 2", lambda: with_nodes(
            sampler_custom_graph(latent=["21", 0], **{"4.condition": ["20", 0]}), **two, **one_of_two),
            "error", node="11", input="latent_image",
            says=("MIDMs Interleaved DDIM Sampler", "has 1 latent but the match has 2", "RepeatLatentBatch")),
        Case("sampler: latent batch 1 vs match of 2, rewarp_steps 3 (was: silently 2 images)", lambda: with_nodes(
            sampler_custom_graph(latent=["21", 0], steps=4, **{"4.condition": ["20", 0], "6.rewarp_steps": "3"}), **two, **one_of_two),
            "error", node="11", input="latent_image", says=("MIDMs Interleaved DDIM Sampler", "has 1 latent but the match has 2")),
        Case("sampler: latent of another model family (16 channels)", lambda: with_nodes(
            sampler_custom_graph(latent=["25", 0]), **{"25": {"class_type": "StableCascade_EmptyLatentImage", "inputs": {
                "width": 256, "height": 256, "compression": 32, "batch_size": 1}}}),
            "error", node="11", input="latent_image", says=("MIDMs Interleaved DDIM Sampler", "4 channels", "another model family"),
            host_may_coerce=True),  # current hosts replace an EMPTY latent of other channels by the model's
        Case("sampler: a match of 1 pair drives 3 latents", lambda: with_nodes(
            sampler_custom_graph(latent=["26", 0]), **{"26": {"class_type": "RepeatLatentBatch", "inputs": {
                "samples": ["7", 1], "amount": 3}}}), "ok"),
        Case("sampler: match of 2 with its own 2 latents", lambda: with_nodes(
            sampler_custom_graph(**{"4.condition": ["20", 0]}), **two), "ok"),
        Case("sampler: latent of another size (96 px vs 64 px match)", lambda: with_nodes(
            sampler_custom_graph(latent=["22", 0]), **big), "error", node="11", input="latent_image",
            says=("MIDMs Interleaved DDIM Sampler", "12 x 12 latent cells", "8 x 8 cells", "make the latent 64 x 64 px")),
        Case("sampler: latent of another aspect (64 x 128 px vs 64 x 64 px)", lambda: with_nodes(
            sampler_custom_graph(latent=["27", 0]), **{"27": {"class_type": "EmptyLatentImage", "inputs": {
                "width": 64, "height": 128, "batch_size": 1}}}), "error", node="11", input="latent_image",
            says=("8 x 16 latent cells, width x height", "(64 x 128 px)", "make the latent 64 x 64 px")),
        Case("sampler: rewarp_steps past the end (999)", lambda: sampler_custom_graph(**{"6.rewarp_steps": "999"}), "error",
             node="11", input="rewarp_steps", says=("MIDMs Rewarp Settings", "numbered 0 to 1", "steps count from 0")),
        Case("sampler: rewarp_steps = step count (4 of 4)", lambda: sampler_custom_graph(steps=4, **{"6.rewarp_steps": "4"}),
             "error", node="11", input="rewarp_steps", says=("numbered 0 to 3", "steps count from 0")),
        Case("all-in-one: rewarp_steps past the end", lambda: all_in_one_graph(**{"6.rewarp_steps": "2"}), "error",
             node="12", input="rewarp_steps", says=("MIDMs Sampler (all-in-one)", "numbered 0 to 1", "'steps' input")),
        Case("inversion: the sampling node adds noise", lambda: inversion_graph(**{"11.add_noise": True}), "error",
             node="11", input="add_noise", says=("MIDMs DDIM Inversion Sampler", "DisableNoise")),
        Case("inversion: a flipped schedule (FlipSigmas)", lambda: with_nodes(
            inversion_graph(**{"11.sigmas": ["43", 0]}), **{"43": {"class_type": "FlipSigmas", "inputs": {"sigmas": ["10", 0]}}}),
            "error", node="11", input="sigmas", says=("MIDMs DDIM Inversion Sampler", "without FlipSigmas")),
        Case("inversion: an empty latent", lambda: with_nodes(
            inversion_graph(**{"11.latent_image": ["44", 0]}), **{"44": {"class_type": "EmptyLatentImage", "inputs": {
                "width": 64, "height": 64, "batch_size": 1}}}),
            "error", node="11", input="latent_image", says=("all zeros", "VAE Encode")),
        Case("DDIB: an empty latent", lambda: with_nodes(
            ddib_graph(**{"40.latent_image": ["44", 0]}), **{"44": {"class_type": "EmptyLatentImage", "inputs": {
                "width": 64, "height": 64, "batch_size": 1}}}),
            "error", node="40", input="latent_image", says=("MIDMs DDIB Translate", "all zeros")),
        Case("DDIB: a latent with a noise mask", lambda: with_nodes(
            ddib_graph(**{"40.latent_image": ["45", 0]}), **{
                "46": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
                "45": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["35", 0], "mask": ["46", 0]}}}),
            "error", node="40", input="latent_image", says=("MIDMs DDIB Translate", "remove the mask")),
        Case("inversion: the SAMPLER path runs", lambda: inversion_graph(), "ok"),
        Case("DDIB: batch of 2 photos", lambda: with_nodes(ddib_graph(**{"35.pixels": ["47", 0]}), **{"47": repeat(["3", 0], 2)}),
             "ok"),
        Case("sampler: rewarp_steps 'none' (plain DDIM)", lambda: sampler_custom_graph(**{"6.rewarp_steps": "none"}), "ok"),
        Case("sampler: rewarp_steps '0, 1' (the last step too)", lambda: sampler_custom_graph(**{"6.rewarp_steps": "0, 1"}), "ok"),
    ]


def image_cases() -> list[Case]:
    blank_fix = ("MIDMs Exemplar Encode", "is blank", "Join Image with Alpha")
    return [
        Case("condition all black", lambda: match_graph(condition="black.png"), "error", node="4", input="condition", says=blank_fix),
        Case("condition all white", lambda: match_graph(condition="white.png"), "error", node="4", input="condition", says=blank_fix),
        Case("exemplar all black", lambda: match_graph(exemplar="black.png"), "error", node="4", input="exemplar",
             says=("MIDMs Exemplar Encode", "is blank", "connect a photo")),
        Case("RGBA line drawing through LoadImage (alpha dropped: all black)", lambda: match_graph(condition="rgba_lines.png"),
             "error", node="4", input="condition", says=blank_fix),
        Case("RGBA line drawing through Join Image with Alpha", lambda: with_nodes(
            match_graph(**{"4.condition": ["23", 0]}),
            **{"23": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["2", 0], "alpha": ["2", 1]}}},
            **{"2": {"class_type": "LoadImage", "inputs": {"image": "rgba_lines.png"}}}), "ok"),
        Case("exemplar without edges (smooth gradient)", lambda: match_graph(exemplar="gradient.png"), "error", node="7",
             input="exemplar", says=MATCH_ERR + ("has no edges", "lower canny_low and canny_high")),
        Case("condition 6 px (below one latent cell)", lambda: match_graph(condition="tiny6.png"), "error", node="4",
             input="condition", says=("MIDMs Exemplar Encode", "at least 8 x 8")),
        Case("condition 16 px (2 x 2 latent cells)", lambda: match_graph(condition="tiny16.png"), "ok"),
        Case("condition 256 x 16 (extreme aspect)", lambda: match_graph(condition="wide.png"), "ok"),
        Case("condition 16 x 256 (extreme aspect)", lambda: match_graph(condition="tall.png"), "ok"),
        Case("grayscale condition (L)", lambda: match_graph(condition="gray.png"), "ok"),
        Case("16-bit grayscale condition (I;16)", lambda: match_graph(condition="gray16.png"), "ok"),
        Case("RGBA exemplar photo", lambda: match_graph(exemplar="exem_rgba.png"), "ok"),
        Case("2 conditions, 3 exemplars", lambda: with_nodes(
            match_graph(**{"4.condition": ["20", 0], "4.exemplar": ["24", 0]}), **{"20": repeat(["2", 0], 2), "24": repeat(["3", 0], 3)}),
            "error", node="4", input="exemplar", says=("MIDMs Exemplar Encode", "'condition' has 2", "'exemplar' has 3")),
        Case("exemplar of another size and aspect (crop)", lambda: match_graph(exemplar="wide.png"), "ok"),
        Case("exemplar of another size (own size)", lambda: match_graph(exemplar="tiny16.png", **{"4.exemplar_fit": "own size"}), "ok"),
    ]


def _preview_black(saved: dict) -> Optional[str]:
    """No exemplar may serve anywhere: the source preview is black everywhere."""
    peak = float(saved["image"].abs().max())
    return None if peak == 0.0 else f"source preview not black where nothing may serve (max {peak:.3f})"


def _left_red_right_cyan(saved: dict) -> Optional[str]:
    """Exemplar 1 (red) serves the left half, exemplar 2 (cyan) the right (a margin of 8 px
    around the seam for the latent cells and the smoothing)."""
    image = saved["image"][0]  # (H, W, 3)
    left, right = image[:, : SIZE // 2 - 8].mean((0, 1)), image[:, SIZE // 2 + 8 :].mean((0, 1))
    red, cyan = [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]
    if all(abs(float(a) - b) < 0.05 for a, b in zip(left, red)) and all(abs(float(a) - b) < 0.05 for a, b in zip(right, cyan)):
        return None
    return f"source preview: left mean RGB {left.tolist()}, right {right.tolist()}; want red left, cyan right"


def exemplar_set_cases() -> list[Case]:
    """MIDMs Exemplar Set Encode and MIDMs Exemplar Source Preview."""
    where = "MIDMs Exemplar Set Encode"
    masks = lambda value, count, **kw: mask_batch(value, count, **kw)  # noqa: E731
    left_right = {  # condition masks: exemplar 1 on the left half, exemplar 2 on the right
        "70": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}},
        "71": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE // 2, "height": SIZE}},
        "72": {"class_type": "MaskComposite", "inputs": {"destination": ["70", 0], "source": ["71", 0], "x": 0, "y": 0,
                                                        "operation": "add"}},
        "73": {"class_type": "InvertMask", "inputs": {"mask": ["72", 0]}},
        "74": {"class_type": "MaskToImage", "inputs": {"mask": ["72", 0]}},
        "75": {"class_type": "MaskToImage", "inputs": {"mask": ["73", 0]}},
        "76": {"class_type": "ImageBatch", "inputs": {"image1": ["74", 0], "image2": ["75", 0]}},
        "77": {"class_type": "ImageToMask", "inputs": {"image": ["76", 0], "channel": "red"}},
    }
    return [
        Case("exemplar set: two exemplars, source preview", lambda: exemplar_set_graph(), "ok"),
        Case("exemplar set: one exemplar", lambda: exemplar_set_graph(**{"52.exemplars": ["3", 0]}), "ok"),
        Case("exemplar set: left / right region masks (preview red left, cyan right)", lambda: with_nodes(
            exemplar_set_graph(**{"52.condition_masks": ["77", 0]}), **left_right), "ok", check=_left_red_right_cyan),
        Case("exemplar set: exemplars of another aspect than the condition (128 x 32, crop)", lambda: exemplar_set_graph(
            **{"50.image1": ["54", 0]}) | {"54": {"class_type": "LoadImage", "inputs": {"image": "exem_wide.png"}}}, "ok"),
        Case("exemplar set: exemplar 2 of 2 without edges (smooth gradient)", lambda: exemplar_set_graph(
            **{"50.image2": ["54", 0]}) | {"54": {"class_type": "LoadImage", "inputs": {"image": "gradient.png"}}},
             "error", node="7", input="exemplar", says=MATCH_ERR + ("exemplar 2 of 2", "has no edges", "lower canny_low")),
        Case("exemplar set: condition masks that allow nothing (all black; preview black)", lambda: with_nodes(
            exemplar_set_graph(**{"52.condition_masks": ["63", 0]}), **masks(0.0, 2)), "ok", check=_preview_black),
        Case("exemplar set: masks at another size than the condition", lambda: with_nodes(
            exemplar_set_graph(**{"52.condition_masks": ["63", 0], "52.exemplar_masks": ["63", 0]}),
            **masks(1.0, 2, width=40, height=24)), "ok"),
        Case("exemplar set: label maps with no label in common (grey edges vs red; preview black)", lambda: exemplar_set_graph(**{
            "52.condition_labels": ["2", 0], "52.exemplar_labels": ["55", 0]}) | {
            "55": repeat(["56", 0], 2), "56": {"class_type": "LoadImage", "inputs": {"image": "red.png"}}}, "ok",
             check=_preview_black),
        Case("exemplar set: inside SamplerCustom (union re-matches)", lambda: with_nodes(
            sampler_custom_graph(**{"7.context": ["52", 0]}),
            **{k: v for k, v in exemplar_set_graph().items() if k in ("50", "51", "52")}), "ok"),
        Case("exemplar set: 2 conditions", lambda: with_nodes(exemplar_set_graph(**{"52.condition": ["20", 0]}),
                                                              **{"20": repeat(["2", 0], 2)}),
             "error", node="52", input="condition", says=(where, "one image", "ImageFromBatch")),
        Case("exemplar set: one exemplar of two blank", lambda: exemplar_set_graph(**{"50.image2": ["56", 0]}) | {
            "56": {"class_type": "LoadImage", "inputs": {"image": "black.png"}}},
             "error", node="52", input="exemplars", says=(where, "image 2 of 2", "is blank")),
        Case("exemplar set: one condition mask for two exemplars", lambda: with_nodes(
            exemplar_set_graph(**{"52.condition_masks": ["60", 0]}), **masks(1.0, 1)),
             "error", node="52", input="condition_masks", says=(where, "one mask per exemplar (2), got 1", "exemplar order")),
        Case("exemplar set: three exemplar masks for two exemplars", lambda: with_nodes(
            exemplar_set_graph(**{"52.exemplar_masks": ["63", 0]}), **masks(1.0, 3)),
             "error", node="52", input="exemplar_masks", says=(where, "one mask per exemplar (2), got 3")),
        Case("exemplar set: condition labels without exemplar labels", lambda: exemplar_set_graph(
            **{"52.condition_labels": ["2", 0]}), "error", node="52", input="exemplar_labels",
             says=(where, "needs both")),
        Case("exemplar set: one exemplar label map for two exemplars", lambda: exemplar_set_graph(
            **{"52.condition_labels": ["2", 0], "52.exemplar_labels": ["3", 0]}), "error", node="52",
             input="exemplar_labels", says=(where, "one label map per exemplar (2), got 1")),
        Case("exemplar set: exemplar 6 px (below one latent cell)", lambda: exemplar_set_graph(**{"52.exemplars": ["57", 0]}) | {
            "57": {"class_type": "LoadImage", "inputs": {"image": "tiny6.png"}}},
             "error", node="52", input="exemplars", says=(where, "at least 8 x 8")),
        Case("exemplar set: exemplar_fit 'own size' (not offered)", lambda: exemplar_set_graph(**{"52.exemplar_fit": "own size"}),
             "refused", node="52", input="exemplar_fit"),
        Case("exemplar set: unknown label_compare", lambda: exemplar_set_graph(**{"52.label_compare": "fuzzy"}),
             "refused", node="52", input="label_compare"),
    ] + label_map_cases() + pad_and_nan_cases()


def _black_share(saved: dict) -> float:
    """The share of source-preview pixels where no exemplar serves (black)."""
    return float((saved["image"][0].amax(-1) < 0.02).float().mean())


def _mostly_lit(saved: dict) -> Optional[str]:
    share = _black_share(saved)
    return None if share < 0.05 else f"{share:.0%} of the source preview is black (nothing may serve); want < 5 %"


def _mostly_black(saved: dict) -> Optional[str]:
    share = _black_share(saved)
    return None if share > 0.5 else f"only {share:.0%} of the source preview is black; want more than half"


def label_graph(condition_labels: str, exemplar_labels: str, compare="nearest condition colour", **overrides) -> dict:
    """exemplar_set_graph with label maps from files: the condition's, and one file for both exemplars."""
    g = with_nodes(exemplar_set_graph(**{"52.condition_labels": ["66", 0], "52.exemplar_labels": ["67", 0],
                                         "52.label_compare": compare}),
                   **{"66": {"class_type": "LoadImage", "inputs": {"image": condition_labels}},
                      "65": {"class_type": "LoadImage", "inputs": {"image": exemplar_labels}},
                      "67": repeat(["65", 0], 2)})
    return _apply(g, overrides)


def label_map_cases() -> list[Case]:
    """Label maps as they arrive from the real world: noisy, JPEG-compressed, photos, batches."""
    where = "MIDMs Exemplar Set Encode"
    return [
        Case("label maps: condition map with +-12 colour noise, nearest condition colour (preview lit)",
             lambda: label_graph("labels_rgb_noisy.png", "labels_rgb.png"), "ok", check=_mostly_lit),
        Case("label maps: the same noisy map in 'exact colour' (most cells match nothing)",
             lambda: label_graph("labels_rgb_noisy.png", "labels_rgb.png", "exact colour"), "ok", check=_mostly_black),
        Case("label maps: condition map through JPEG q75, nearest condition colour (preview lit)",
             lambda: label_graph("labels_rgb_q75.jpg", "labels_rgb.png"), "ok", check=_mostly_lit),
        Case("label maps: no label in common in nearest mode (red vs green; preview black)",
             lambda: label_graph("red.png", "green.png"), "ok", check=_preview_black),
        Case("label maps: colour_tolerance 0", lambda: label_graph("labels_rgb.png", "labels_rgb.png",
                                                                    **{"52.colour_tolerance": 0}),
             "refused", node="52", input="colour_tolerance"),
        Case("label maps: colour_tolerance 129", lambda: label_graph("labels_rgb.png", "labels_rgb.png",
                                                                      **{"52.colour_tolerance": 129}),
             "refused", node="52", input="colour_tolerance"),
        Case("label maps: a photo as the condition's label map (tolerance 1)",
             lambda: label_graph("exem.png", "labels_rgb.png", **{"52.colour_tolerance": 1}), "error", node="52",
             input="condition_labels", says=(where, "more than 256 colours", "colour_tolerance")),
        Case("label maps: 2 condition label maps for the one condition", lambda: with_nodes(
            label_graph("labels_rgb.png", "labels_rgb.png", **{"52.condition_labels": ["68", 0]}),
            **{"68": repeat(["66", 0], 2)}), "error", node="52", input="condition_labels",
             says=(where, "one label map", "batch of 2", "ImageFromBatch")),
    ]


def pad_and_nan_cases() -> list[Case]:
    """Pad borders that must never serve, and NaN pixels refused by the node that takes them."""
    where = "MIDMs Exemplar Set Encode"
    wide = {"54": {"class_type": "LoadImage", "inputs": {"image": "exem_wide.png"}}}
    wide_set = {"50.image1": ["54", 0], "50.image2": ["54", 0], "52.exemplar_fit": "pad"}
    nan_mask = {"69": {"class_type": "SolidMask", "inputs": {"value": NAN, "width": SIZE, "height": SIZE}}}
    nan_image = {**nan_mask, "79": {"class_type": "MaskToImage", "inputs": {"mask": ["69", 0]}}}
    one_then_nan = {**nan_image,  # a mask batch: 1.0, then NaN
                    "60": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE, "height": SIZE}},
                    "61": {"class_type": "MaskToImage", "inputs": {"mask": ["60", 0]}},
                    "62": {"class_type": "ImageBatch", "inputs": {"image1": ["61", 0], "image2": ["79", 0]}},
                    "63": {"class_type": "ImageToMask", "inputs": {"image": ["62", 0], "channel": "red"}}}
    nan_fix = "has NaN or infinite values"
    return [
        Case("pad: all-zero exemplar masks on wide exemplars (preview black: the border never serves)",
             lambda: with_nodes(exemplar_set_graph(**wide_set, **{"52.exemplar_masks": ["63", 0]}),
                                **wide, **mask_batch(0.0, 2, width=128, height=32)), "ok", check=_preview_black),
        Case("pad: wide exemplars without masks (preview lit)", lambda: with_nodes(
            exemplar_set_graph(**wide_set), **wide), "ok", check=_mostly_lit),
        Case("pad: one wide exemplar, 2 conditions, through SamplerCustom", lambda: with_nodes(
            sampler_custom_graph(**{"3.image": "exem_wide.png", "4.exemplar_fit": "pad", "4.condition": ["20", 0]}),
            **{"20": repeat(["2", 0], 2)}), "ok"),
        Case("NaN condition masks (a NaN SolidMask)", lambda: with_nodes(
            exemplar_set_graph(**{"52.condition_masks": ["63", 0]}), **mask_batch(NAN, 2)), "error", node="52",
             input="condition_masks", says=(where, nan_fix, "(mask 1 of 2)")),
        Case("NaN in the second exemplar mask", lambda: with_nodes(
            exemplar_set_graph(**{"52.exemplar_masks": ["63", 0]}), **one_then_nan), "error", node="52",
             input="exemplar_masks", says=(where, nan_fix, "(mask 2 of 2)")),
        Case("NaN condition label map", lambda: with_nodes(label_graph(
            "labels_rgb.png", "labels_rgb.png", **{"52.condition_labels": ["79", 0]}), **nan_image), "error",
             node="52", input="condition_labels", says=(where, nan_fix)),
        Case("NaN as the second exemplar of a set", lambda: with_nodes(
            exemplar_set_graph(**{"50.image2": ["79", 0]}), **nan_image), "error", node="52", input="exemplars",
             says=(where, nan_fix, "(image 2 of 2)")),
        Case("NaN condition image (Exemplar Encode)", lambda: with_nodes(
            match_graph(**{"4.condition": ["79", 0]}), **nan_image), "error", node="4", input="condition",
             says=("MIDMs Exemplar Encode", nan_fix)),
    ]


def _anchors_preview_size(saved: dict) -> Optional[str]:
    """The anchors preview: condition | exemplar side by side, each the condition's size."""
    shape = list(saved["image"].shape)
    return None if shape[1:] == [SIZE, 2 * SIZE, 3] else f"anchors preview of shape {shape}, want [B, {SIZE}, {2 * SIZE}, 3]"


def anchors_cases() -> list[Case]:
    """MIDMs Anchors, MIDMs Load Keypoints JSON, MIDMs Anchors Preview and the encode nodes'
    'anchors' input. Every name holds "anchors" (MIDMS_HOSTILE_ONLY=anchors runs these)."""
    two_conditions = {"20": repeat(["2", 0], 2)}
    exemplar_set = lambda **o: with_nodes(  # noqa: E731
        exemplar_set_graph(**{"2.image": FACE_CONDITION, "52.anchors": ["82", 0], **o}), **anchors_nodes())
    bad_file = lambda name, node="80": anchors_graph(**{f"{node}.file": name})  # noqa: E731
    return [
        Case("anchors: face keypoint files, preview 2 x wide", lambda: anchors_graph(), "ok", check=_anchors_preview_size),
        Case("anchors: point strings (hand-placed, 64 px canvases)", lambda: points_anchors_graph(), "ok",
             check=_anchors_preview_size),
        Case("anchors: 'anchors only' mode", lambda: anchors_graph(mode="anchors only"), "ok"),
        Case("anchors: body keypoints with missing joints (hips, one arm)", lambda: anchors_graph("pose"), "ok",
             check=_anchors_preview_size),
        Case("anchors: keypoint canvas 256 x 256 on the 64 px image (same aspect)",
             lambda: anchors_graph(condition_file="anchors_face_canvas256.json"), "ok"),
        Case("anchors: 2 condition images, one exemplar frame each", lambda: with_nodes(
            anchors_graph(exemplar_file="anchors_face_2frames.json", **{"4.condition": ["20", 0]}), **two_conditions), "ok"),
        Case("anchors: exemplar set, one exemplar frame per exemplar", lambda: with_nodes(
            exemplar_set(), **{"81": {"class_type": "MIDMsLoadKeypoints", "inputs": {"file": "anchors_face_2frames.json"}}}),
             "ok"),
        Case("anchors: through the all-in-one sampler", lambda: with_nodes(
            all_in_one_graph(**{"2.image": FACE_CONDITION, "4.anchors": ["82", 0]}), **anchors_nodes()), "ok"),
        Case("anchors: no common point (condition face, exemplar body)",
             lambda: anchors_graph(exemplar_file=POSE_KEYPOINTS[1]), "error", node="4", input=None,
             says=(ENCODE, "no keypoint is present on both sides", "The condition has face (68 points)",
                   "the exemplar has body (10 points)", "Give both sides the same kind of points")),
        Case("anchors: keypoint canvas 512 x 256 on a square image",
             lambda: anchors_graph(condition_file="anchors_face_canvas_wide.json"), "error", node="4", input=None,
             says=(ENCODE, "'anchors: condition keypoints' were found on a 512 x 256 canvas", "does not have the aspect of its image (64 x 64)",
                   "give the keypoints of this very image")),
        Case("anchors: NaN coordinate in the keypoints file", lambda: bad_file("anchors_nan.json"), "error", node="80",
             input="anchors_nan.json", says=(LOAD_KEYPOINTS, "point face/3 is not a finite number", "fix or drop it")),
        Case("anchors: keypoint outside its canvas", lambda: bad_file("anchors_off_canvas.json"), "error", node="80",
             input="anchors_off_canvas.json", says=(LOAD_KEYPOINTS, "point face/3 at (700, ", "lies outside its 512 x 512 canvas",
                                                    "do not belong to this canvas")),
        Case("anchors: person index 1 of 1 person", lambda: anchors_graph(**{"82.person": 1}), "error", node="82",
             input="condition_keypoints", says=(ANCHORS, "has 1 person detected", "person index 1 does not exist",
                                                "use 0 to 0")),
        Case("anchors: 2 exemplar frames for 1 condition image",
             lambda: anchors_graph(exemplar_file="anchors_face_2frames.json"), "error", node="4", input=None,
             says=(ENCODE, "'anchors: exemplar keypoints' has 2 frames for 1 condition image",
                   "give one frame for all condition images or exactly one per condition image")),
        Case("anchors: 3 exemplar frames for 2 condition images", lambda: with_nodes(
            anchors_graph(exemplar_file="anchors_face_3frames.json", **{"4.condition": ["20", 0]}), **two_conditions),
             "error", node="4", input=None, says=(ENCODE, "'anchors: exemplar keypoints' has 3 frames for 2 condition images",
                                                  "exactly one per condition image")),
        Case("anchors: exemplar set, 3 exemplar frames for 2 exemplars", lambda: with_nodes(
            exemplar_set(), **{"81": {"class_type": "MIDMsLoadKeypoints", "inputs": {"file": "anchors_face_3frames.json"}}}),
             "error", node="52", input=None, says=("MIDMs Exemplar Set Encode", "'anchors: exemplar keypoints' has 3 frames for 2 exemplars",
                                                   "exactly one per exemplar")),
        Case("anchors: AP10K animal keypoints", lambda: bad_file("anchors_animals.json"), "error", node="80",
             input="anchors_animals.json", says=(LOAD_KEYPOINTS, "AP10K animal keypoints", "not supported",
                                                 "give body, face or hand keypoints")),
        Case("anchors: a JSON file that is not keypoints (a workflow)", lambda: bad_file("anchors_not_keypoints.json"),
             "error", node="80", input="anchors_not_keypoints.json",
             says=(LOAD_KEYPOINTS, "has no 'people' list", "is it POSE_KEYPOINT?")),
        # current hosts refuse it at validation; the 2024 host does not validate nodes reached through
        # optional links, so the node raises the same message when it runs
        Case("anchors: keypoints file not in the input folder", lambda: bad_file("no_such_keypoints.json"), "refused",
             node="80", input="file",
             says=(LOAD_KEYPOINTS, "'no_such_keypoints.json' is not a .json file in ComfyUI's input folder",
                   "copy the keypoints file there")),
        Case("anchors: condition_keypoints and condition_points both given", lambda: with_nodes(
            points_anchors_graph(**{"82.condition_keypoints": ["80", 0]}), **{k: v for k, v in anchors_nodes().items() if k == "80"}),
             "error", node="82", input="condition_points", says=(ANCHORS, "'condition_keypoints'", "not both")),
        Case("anchors: neither condition_keypoints nor condition_points", lambda: points_anchors_graph(condition=False),
             "error", node="82", input="condition_points", says=(ANCHORS, "'condition_keypoints'", "one of them")),
        Case("anchors: trust_cap below trust", lambda: anchors_graph(**{"82.trust_cap": 0.0005}), "error", node="82",
             input="trust_cap", says=(ANCHORS, "'trust_cap' (0.0005) must be at least 'trust' (0.001)")),
        Case("anchors: preview of a context without anchors", lambda: with_nodes(
            match_graph(), **{"83": {"class_type": "MIDMsAnchorsPreview", "inputs": {"context": ["4", 0], "exemplar": 1}},
                              SAVE: {"class_type": "MIDMSTestSaveTensor", "inputs": {"name": "hostile", "latent": ["7", 1],
                                                                                      "image": ["83", 0]}}}),
             "error", node="83", input="anchors", says=("MIDMs Anchors Preview", "the context has no anchors",
                                                         "connect MIDMs Anchors")),
        Case("anchors: preview of exemplar 2 of 1", lambda: anchors_graph(**{"83.exemplar": 2}), "error", node="83",
             input="exemplar", says=("MIDMs Anchors Preview", "has 1 exemplar(s)")),
        Case("anchors: unknown mode choice", lambda: anchors_graph(mode="strict"), "refused", node="82", input="mode"),
    ]


def model_file_cases() -> list[Case]:
    def loader_graph(name):
        g = match_graph(**{"7.matcher": ["30", 0]})
        g["30"] = {"class_type": "MIDMsLearnedMatcherLoader", "inputs": {"networks_name": name}}
        return g

    hint = ("MIDMs Learned Matcher Loader", "'networks_name'", "convert_official_checkpoint.py")
    return [
        Case("models/midms: an SD checkpoint", lambda: loader_graph("sd_checkpoint.safetensors"), "error", node="30",
             input="networks_name", says=hint + ("looks like a Stable Diffusion / Flux / SD3 checkpoint", "models/checkpoints")),
        Case("models/midms: a LoRA", lambda: loader_graph("some_lora.safetensors"), "error", node="30", input="networks_name",
             says=hint + ("looks like a LoRA",)),
        Case("models/midms: unrelated tensors", lambda: loader_graph("unrelated.safetensors"), "error", node="30",
             input="networks_name", says=hint + ("unrelated safetensors file",)),
        Case("models/midms: not a safetensors file", lambda: loader_graph("garbage.safetensors"), "error", node="30",
             input="networks_name", says=hint + ("not a readable safetensors file",)),
        Case("models/midms: missing file", lambda: loader_graph("missing.safetensors"), "refused", node="30",
             input="networks_name"),
        Case("models/midms: real networks (seeded)", lambda: loader_graph("networks.safetensors"), "ok"),
    ]


# --------------------------------------------------------------------------------------------
# running cases
# --------------------------------------------------------------------------------------------
def _message_names_input(msg: str, name: Optional[str]) -> bool:
    return name is None or f"'{name}'" in msg


PACK_ERROR_TYPE = "MIDMs.NodeInputError"  # the same on every host (no host path in it)


def _check_ok(server, graph: dict, check: Optional[Callable[[dict], Optional[str]]] = None) -> tuple[bool, str]:
    entry = server.run(graph, timeout=240, check=False)
    if not succeeded(entry):
        err = execution_error(entry) or {}
        return False, f"failed in {err.get('node_type')}: {str(err.get('exception_message'))[:300]}"
    outputs = server.outputs(entry)[SAVE]
    stats = {s["key"]: s for s in outputs["midms_stats"]}
    if not all(s["finite"] for s in stats.values()):
        return False, "non-finite output"
    if check is not None:
        from safetensors.torch import load_file

        wrong = check(load_file(outputs["midms_file"][0]))
        if wrong:
            return False, wrong
    shape = stats["latent"]["shape"]
    return True, f"ran: latent {shape}, " + ", ".join(f"{k} {s['sha256'][:10]}" for k, s in sorted(stats.items()))


def _run_error(server, graph: dict) -> tuple[Optional[dict], str]:
    pid = server.queue(graph)
    if not isinstance(pid, str):
        return None, f"rejected at validation: {json.dumps(pid)[:300]}"
    entry = server.wait(pid, timeout=240)
    if succeeded(entry):
        return None, "ran (no error)"
    return execution_error(entry) or {}, ""


def run_case(server, case: Case, still_serving: Callable[[], tuple[bool, str]]) -> None:
    if case.expect == "ok":
        ok, observed = _check_ok(server, case.graph(), case.check)
        if ok:
            ok2, _ = still_serving()  # replaces the cached results: the rerun really executes
            again_ok, again = _check_ok(server, case.graph(), case.check)
            if not (ok2 and again_ok and again == observed):
                ok, observed = False, f"{observed} / rerun: {again}"
            else:
                observed += "; same bytes on rerun"
    elif case.expect == "refused":
        # the host's validation (HTTP 400) or the node itself when it runs: either way the node
        # and the input are named (hosts validate only some inputs: the 2024 one skips optional
        # inputs and everything reached only through them)
        resp = server.queue(case.graph())
        if isinstance(resp, str):
            entry = server.wait(resp, timeout=240)
            err = None if succeeded(entry) else (execution_error(entry) or {})
            msg = "" if err is None else str(err.get("exception_message", ""))
            named = f"'{case.input}'" in msg
            ok = (err is not None and err.get("node_id") == case.node and named
                  and err.get("exception_type") == PACK_ERROR_TYPE and all(f in msg for f in case.says))
            observed = "ran (no error)" if err is None else f"{err.get('node_type')} [{err.get('exception_type')}]: {msg[:300]}"
            if err is None and case.host_may_coerce:
                ok, observed = True, "ran: the host converted the value before the node saw it"
        else:
            errors = (resp.get("node_errors") or {}).get(case.node, {}).get("errors", [])
            named = [e for e in errors if (e.get("extra_info") or {}).get("input_name") == case.input
                     and all(f in f"{e.get('message')}: {e.get('details')}" for f in case.says)]
            ok = resp["http_status"] == 400 and bool(named)
            observed = f"HTTP {resp['http_status']} (validation): " + (
                f"{named[0]['message']}: {named[0]['details']}"[:200] if named else json.dumps(resp)[:200])
    elif case.expect == "error":
        err, why = _run_error(server, case.graph())
        if err is None and case.host_may_coerce and why == "ran (no error)":
            ok, observed = True, "ran: the host converted the input before the node saw it"
        elif err is None:
            ok, observed = False, why
        else:
            msg = str(err.get("exception_message", ""))
            missing = [f for f in case.says if f not in msg] + [f"not {f!r}" for f in case.never_says if f in msg]
            ok = (err.get("node_id") == case.node and not missing and _message_names_input(msg, case.input)
                  and err.get("exception_type") == PACK_ERROR_TYPE)
            observed = f"{err.get('node_type')} [{err.get('exception_type')}]: {msg[:400]}"
            if missing:
                observed += f"  (MISSING: {missing})"
            if ok:  # the same graph again (after another one): the same message
                still_serving()
                err2, _ = _run_error(server, case.graph())
                if err2 is None or err2.get("exception_message") != msg:
                    ok, observed = False, observed + " / rerun differs"
    else:
        ok, observed = case.runner(server)
    alive, alive_why = still_serving()
    if not alive:
        ok, observed = False, f"{observed} / NEXT VALID PROMPT FAILED: {alive_why}"
    case.passed, case.observed = ok, observed


# --------------------------------------------------------------------------------------------
# interrupt and queue cases (need the websocket to see which node runs)
# --------------------------------------------------------------------------------------------
def _events(server, prompt: dict, until: Callable[[str, dict], bool], on_event: Callable[[str, dict], None],
            timeout: float = 240.0) -> str:
    """Queue ``prompt`` on this client's websocket, pass every event to ``on_event`` and return
    the prompt id once ``until(type, data)`` holds (or raise TimeoutError)."""
    import aiohttp

    result = {}

    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={server.client_id}", heartbeat=30) as ws:
                pid = await asyncio.get_running_loop().run_in_executor(None, server.queue, prompt)
                result["pid"] = pid
                assert isinstance(pid, str), pid
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.1))
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    kind, data = event.get("type"), event.get("data") or {}
                    if data.get("prompt_id", pid) != pid:
                        continue
                    await asyncio.get_running_loop().run_in_executor(None, on_event, kind, data)
                    if until(kind, data):
                        return
                raise TimeoutError("no end event")

    asyncio.run(go())
    return result["pid"]


INTERRUPT_BOUND_S = 8.0


def interrupt_runner(graph_fn: Callable[[], dict], node: str, delay: float):
    def runner(server) -> tuple[bool, str]:
        seen = {}

        def on_event(kind, data):
            if kind == "executing" and data.get("node") == node and "started" not in seen:
                seen["started"] = time.monotonic()
                time.sleep(delay)
                server.request("POST", "/interrupt", {})
                seen["interrupt"] = time.monotonic()
            if kind in ("execution_interrupted", "execution_error", "execution_success") or (
                    kind == "executing" and data.get("node") is None):
                seen.setdefault("end", (kind, data, time.monotonic()))

        _events(server, graph_fn(), lambda k, d: "end" in seen, on_event)
        kind, data, end = seen["end"]
        if "interrupt" not in seen:
            return False, f"node {node} never started; ended with {kind}"
        lag = end - seen["interrupt"]
        # the end event may be 'executing None' first on some hosts: look at the history too
        entry = server.wait(data.get("prompt_id") or "", timeout=30) if data.get("prompt_id") else {}
        status = execution_error(entry) if entry else None
        where = (status or data).get("node_id")
        ok = (status or {}).get("exception_type", "").endswith("InterruptProcessingException") or kind == "execution_interrupted"
        # 1.7-2.0 s on 2 quiet cores; 5.3 s was seen with three test runs sharing them, so the bound
        # leaves room for a loaded machine and still fails a node that ignores the button: the
        # graphs run far longer uninterrupted (the 128 x 128 match: 93 s; 300 sampling steps:
        # 30 s; the 40 steps of before took 6 s in all, too short to tell)
        ok = ok and where == node and lag < INTERRUPT_BOUND_S
        return ok, f"interrupted in node {where} ({(status or data).get('node_type')}) {lag:.2f} s after the button"
    return runner


def queued_runner(server) -> tuple[bool, str]:
    """Three prompts queued at once, the middle one broken: 1 and 3 run, 2 fails with its own error."""
    good1 = match_graph(**{"5.edge_blur": 1.5})
    bad = match_graph(condition="black.png", **{"5.edge_blur": 1.75})
    good2 = match_graph(**{"5.edge_blur": 1.25})
    pids = [server.queue(g) for g in (good1, bad, good2)]
    if not all(isinstance(p, str) for p in pids):
        return False, f"not all queued: {pids}"
    entries = [server.wait(p, timeout=240) for p in pids]
    states = [succeeded(e) for e in entries]
    err = execution_error(entries[1]) or {}
    ok = states == [True, False, True] and "is blank" in str(err.get("exception_message"))
    return ok, f"succeeded: {states}; the broken one: {str(err.get('exception_message'))[:120]}"


SD3_CKPT = "tiny_sd3_hostile.safetensors"
VAE16 = "tiny_vae16_hostile.safetensors"
CURRENT = "ModelSamplingSD3"  # rows that need SD3 / rectified flow: hosts after 2024-03


NEW_FAMILIES_HOST = "EmptyFlux2LatentImage"  # rows with the 2025 families: hosts with Flux.2 (0.3.75 on)


def tiny_family(family: str) -> dict:
    """Node "80": a tiny model of a 2025 family with its own VAE (MIDMSTestTinyCheckpoint)."""
    return {"80": {"class_type": "MIDMSTestTinyCheckpoint", "inputs": {"family": family}}}


def on_family(graph: dict, family: str) -> dict:
    """A graph whose model, VAE and text conditioning are the tiny ``family``'s (node "80")."""
    g = with_nodes(graph, **tiny_family(family))
    for node in g.values():
        for name, value in list(node["inputs"].items()):
            if value == ["1", 0] or value == ["1", 2]:
                node["inputs"][name] = ["80", value[1]]
        if node["class_type"] == "MIDMSTestZeroConditioning":
            node["inputs"].update(width=64, pooled_width=-1)
    return g


def new_family_cases() -> list[Case]:
    """The 2025 families (Flux.2, Z-Image, Qwen-Image, Chroma): the feature matcher on each DiT,
    a video latent of several frames, and a Flux.2 latent (128 channels) meeting SD1.5."""
    frames = {"81": repeat(["3", 0], 5),  # 5 images -> a Wan 2.1 latent of 2 frames
              "82": {"class_type": "VAEEncode", "inputs": {"pixels": ["81", 0], "vae": ["80", 2]}}}
    return [
        Case("2025 families: DIFT on Z-Image (its blocks cannot be read: refused by name)",
             lambda: on_family(dift_graph(), "zimage"), "error", node="31", input="model",
             says=("MIDMs Diffusion Feature Matcher", "Z-Image"), needs=NEW_FAMILIES_HOST),
        *[Case(f"2025 families: DIFT on {label}", lambda f=family: on_family(dift_graph(), f), "ok",
               needs=NEW_FAMILIES_HOST)
          for family, label in (("flux2", "Flux.2 (global modulation)"), ("qwen_image", "Qwen-Image"),
                                ("chroma", "Chroma"))],
        Case("2025 families: Qwen-Image, a video latent of 2 frames into the interleaved SAMPLER",
             lambda: with_nodes(on_family(sampler_custom_graph(latent=["82", 0]), "qwen_image"), **frames),
             "error", node="11", input="latent_image", says=("video latent of 2 frames", "one image per latent"),
             needs=NEW_FAMILIES_HOST),
        Case("2025 families: Flux.2 context (128 channels, 16 px cells) with an SD1.5 model",
             lambda: with_nodes(sampler_custom_graph(**{"4.vae": ["80", 2]}), **tiny_family("flux2")),
             "error", node="9", input="match", says=("128-channel latents", "'model' (SD15) works on 4-channel"),
             needs=NEW_FAMILIES_HOST),
    ]


def family_cases() -> list[Case]:
    """Latents of one model family meeting a model of another, two noise paths in one bridge,
    numerically broken latents, and the depth a schedule really reaches."""
    vae16 = {"96": {"class_type": "VAELoader", "inputs": {"vae_name": VAE16}}}
    sd3 = {"97": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD3_CKPT}}}
    flow_b = {"95": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}}}
    nan_latent = {"98": {"class_type": "LatentMultiply", "inputs": {"samples": ["35", 0], "multiplier": NAN}}}
    sd15_fix = ("16-channel latents", "'model' (SD15) works on 4-channel latents", "VAE of the model's own family")
    return [
        Case("families: context of a 16-channel VAE, SD1.5 model (all-in-one)", lambda: with_nodes(
            all_in_one_graph(**{"4.vae": ["96", 0]}), **vae16), "error", node="12", input="context",
            says=("MIDMs Sampler (all-in-one)",) + sd15_fix, needs=CURRENT),
        Case("families: context of a 16-channel VAE, SD1.5 model (interleaved SAMPLER)", lambda: with_nodes(
            sampler_custom_graph(**{"4.vae": ["96", 0]}), **vae16), "error", node="9", input="match",
            says=("MIDMs Interleaved DDIM Sampler",) + sd15_fix, needs=CURRENT),
        Case("families: 16-channel latent into the DDIM inversion SAMPLER, SD1.5 model", lambda: with_nodes(
            inversion_graph(**{"35.vae": ["96", 0]}), **vae16), "error", node="11", input="latent_image",
            says=("MIDMs DDIM Inversion Sampler",) + sd15_fix, needs=CURRENT),
        Case("families: 16-channel latent into DDIB Translate, SD1.5 models", lambda: with_nodes(
            ddib_graph(**{"35.vae": ["96", 0]}), **vae16), "error", node="40", input="latent_image",
            says=("MIDMs DDIB Translate", "16-channel latents", "'model_a' (SD15)"), needs=CURRENT),
        Case("families: DIFT on an SD3 model, context of SD1.5's 4-channel latents", lambda: with_nodes(
            dift_graph(**{"31.model": ["97", 0]}), **sd3), "error", node="7", input="context",
            says=("MIDMs Diffusion Feature Matcher (DIFT)", "4-channel latents", "(SD3) works on 16-channel"),
            needs=CURRENT),
        Case("families: DDIB with model_b through ModelSamplingSD3 (another noise path)", lambda: with_nodes(
            ddib_graph(**{"40.model_b": ["95", 0]}), **flow_b), "error", node="40", input="model_b",
            says=("MIDMs DDIB Translate", "rectified-flow", "ModelSampling"), needs=CURRENT),
        Case("families: both DDIB models through ModelSamplingSD3 (one noise path)", lambda: with_nodes(
            ddib_graph(**{"40.model_a": ["95", 0], "40.model_b": ["95", 0]}), **flow_b), "ok", needs=CURRENT),
        Case("NaN latent into the DDIM inversion SAMPLER", lambda: with_nodes(
            inversion_graph(**{"11.latent_image": ["98", 0]}), **nan_latent), "error", node="11", input="latent_image",
            says=("MIDMs DDIM Inversion Sampler", "holds NaN or infinite values"), never_says=("invert_ddim",)),
        Case("NaN latent into DDIB Translate", lambda: with_nodes(
            ddib_graph(**{"40.latent_image": ["98", 0]}), **nan_latent), "error", node="40", input="latent_image",
            says=("MIDMs DDIB Translate", "holds NaN or infinite values")),
        Case("round trip: depth 0.01 and 0.019 on ddim_uniform (one schedule) say the depth used", None, "custom",
             runner=depth_runner),
    ]


def depth_runner(server) -> tuple[bool, str]:
    """ddim_uniform at 10 steps puts depth 0.01 and 0.019 on the same timesteps: the same error,
    and each report names the depth it really reached and the one asked for."""
    texts = {}
    for depth in (0.01, 0.019):
        graph = round_trip_graph(**{"41.scheduler": "ddim_uniform", "41.steps": 10, "41.depth": depth})
        entry = server.run(graph, timeout=240, check=False)
        if not succeeded(entry):
            return False, f"depth {depth}: {str((execution_error(entry) or {}).get('exception_message'))[:300]}"
        texts[depth] = (server.outputs(entry).get("41", {}).get("text") or [""])[0]
    errors = {d: t.split()[2] for d, t in texts.items() if t.startswith("round-trip error ")}
    same_depth = len({t.split("depth ")[1].split(" of")[0] for t in texts.values() if "depth " in t}) == 1
    ok = (len(errors) == 2 and errors[0.01] == errors[0.019] and same_depth
          and all(f"of {d:g} asked" in t for d, t in texts.items()))
    return ok, " / ".join(texts.values())[:400]


def special_cases() -> list[Case]:
    big_match = lambda: match_graph(condition="big_cond.png", exemplar="big_exem.png")  # noqa: E731
    long_sampling = lambda: sampler_custom_graph(steps=300, **{"10.denoise": 1.0})  # noqa: E731
    return [
        Case("interrupt during matching (128 x 128 latent grid)", None, "custom", runner=interrupt_runner(big_match, "7", 1.0)),
        Case("interrupt during sampling (300 steps)", None, "custom", runner=interrupt_runner(long_sampling, "11", 0.5)),
        Case("interrupt during DDIM inversion (DDIB, 1000 steps each way)", None, "custom",
             runner=interrupt_runner(lambda: ddib_graph(**{"40.steps": 1000}), "40", 0.5)),
        Case("3 prompts queued at once, the middle one broken", None, "custom", runner=queued_runner),
    ]


ALL_CASES = (bounds_cases() + sampler_cases() + image_cases() + exemplar_set_cases() + anchors_cases()
             + model_file_cases() + family_cases() + new_family_cases() + special_cases())


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
def _make_inputs(folder: Path) -> None:
    from PIL import Image

    spec = importlib.util.spec_from_file_location("midms_make_example_inputs", REPO / "workflows" / "make_example_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    condition, exemplar = module.make_inputs(SIZE)
    condition.save(folder / "cond.png")
    exemplar.save(folder / "exem.png")
    big_condition, big_exemplar = module.make_inputs(1024)
    big_condition.save(folder / "big_cond.png")
    big_exemplar.save(folder / "big_exem.png")
    Image.new("RGB", (SIZE, SIZE), "black").save(folder / "black.png")
    Image.new("RGB", (SIZE, SIZE), "white").save(folder / "white.png")
    Image.new("RGB", (SIZE, SIZE), (255, 0, 0)).save(folder / "red.png")
    edges = np.asarray(condition.convert("L"))
    # black lines on a transparent background whose colour is black too (as drawing apps save)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 3] = edges
    Image.fromarray(rgba, "RGBA").save(folder / "rgba_lines.png")
    ramp = np.linspace(0.3, 0.7, SIZE)[None, :, None] * np.ones((SIZE, 1, 3))
    Image.fromarray((ramp * 255).round().astype(np.uint8), "RGB").save(folder / "gradient.png")
    condition.resize((6, 6)).save(folder / "tiny6.png")
    condition.resize((16, 16)).save(folder / "tiny16.png")
    condition.resize((256, 16)).save(folder / "wide.png")
    condition.resize((16, 256)).save(folder / "tall.png")
    condition.convert("L").save(folder / "gray.png")
    Image.fromarray(edges.astype(np.uint16) * 257).save(folder / "gray16.png")  # 16-bit PNG (mode I;16)
    exemplar.convert("RGBA").save(folder / "exem_rgba.png")
    exemplar.resize((128, 32)).save(folder / "exem_wide.png")
    Image.new("RGB", (SIZE, SIZE), (0, 255, 0)).save(folder / "green.png")
    thirds = np.zeros((SIZE, SIZE, 3), np.uint8)  # a label map: red | green | blue thirds
    for k in range(3):
        thirds[:, k * SIZE // 3 : (k + 1) * SIZE // 3 if k < 2 else SIZE, k] = 255
    Image.fromarray(thirds, "RGB").save(folder / "labels_rgb.png")
    noise = np.random.default_rng(0).integers(-12, 13, thirds.shape)  # as after JPEG or a resize
    Image.fromarray(np.clip(thirds + noise, 0, 255).astype(np.uint8), "RGB").save(folder / "labels_rgb_noisy.png")
    Image.fromarray(thirds, "RGB").save(folder / "labels_rgb_q75.jpg", quality=75)
    Image.fromarray((np.clip(module.second_exemplar(SIZE), 0, 1) * 255).round().astype(np.uint8), "RGB").save(
        folder / "exem2.png")


def _make_anchor_inputs(folder: Path) -> None:
    """The anchors workflows' inputs at 64 px (conditions) with the shipped keypoint files, and
    keypoint files made from them: other canvases, several frames, broken values, other layouts."""
    spec = importlib.util.spec_from_file_location("midms_make_anchor_inputs", REPO / "workflows" / "make_anchor_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_inputs(folder, SIZE)
    condition = json.loads((folder / FACE_KEYPOINTS[0]).read_text())[0]
    exemplar = json.loads((folder / FACE_KEYPOINTS[1]).read_text())[0]

    def frame(values, width=512, height=512):
        return {"people": [{"face_keypoints_2d": values}], "canvas_width": width, "canvas_height": height}

    def scaled(values, sx, sy, dx=0.0):
        return [v * (sx if k % 3 == 0 else sy) + (dx if k % 3 == 0 else 0.0) if k % 3 < 2 else v
                for k, v in enumerate(values)]

    face = condition["people"][0]["face_keypoints_2d"]
    theirs = exemplar["people"][0]["face_keypoints_2d"]
    broken = lambda k, value: [value if i == 3 * 3 + k else v for i, v in enumerate(face)]  # noqa: E731  (point 3)
    files = {
        "anchors_face_canvas256.json": [frame(scaled(face, 0.5, 0.5), 256, 256)],
        "anchors_face_canvas_wide.json": [frame(scaled(face, 1.0, 0.5), 512, 256)],
        "anchors_face_2frames.json": [frame(theirs), frame(scaled(theirs, 1.0, 1.0, dx=12.0))],
        "anchors_face_3frames.json": [frame(theirs)] * 3,
        "anchors_nan.json": [frame(broken(0, float("nan")))],
        "anchors_off_canvas.json": [frame(broken(0, 700.0))],
        "anchors_animals.json": [{"animals": [[[100.0, 120.0, 0.9]] * 17], "canvas_width": 512, "canvas_height": 512}],
        "anchors_not_keypoints.json": {"last_node_id": 1, "last_link_id": 0, "nodes": [], "links": [], "version": 0.4},
    }
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value))  # NaN is written as NaN, as Python's json reads it


def _make_model_files(folder: Path, sd_ckpt: Path) -> dict:
    import torch
    from safetensors.torch import save_file

    import midms_core as mc

    files = {"sd_checkpoint.safetensors": sd_ckpt}
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, folder / "some_lora.safetensors")
    save_file({"weight": torch.zeros(3), "bias": torch.zeros(3)}, folder / "unrelated.safetensors")
    (folder / "garbage.safetensors").write_text("this is not a safetensors file\n")
    config = mc.CorrespondenceConfig(latent_channels=4, label_channels=3, width=16, encoder_width=4, spade_hidden=8)
    mc.save_networks(folder / "networks.safetensors", mc.init_networks(config, seed=0))
    for name in ("some_lora", "unrelated", "garbage", "networks"):
        files[f"{name}.safetensors"] = folder / f"{name}.safetensors"
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    host = require_host()
    d = tmp_path_factory.mktemp("hostile")
    ckpt = write_tiny_sd15_checkpoint(d / "tiny.safetensors", seed=0)["path"]
    models = _make_model_files(d, Path(ckpt))
    with ComfyServer(host) as srv:
        srv.add_model("checkpoints", ckpt, name=CKPT)
        if not host.is_2024_snapshot:  # the family rows (SD3 and a 16-channel VAE: hosts after 2024-03)
            srv.add_model("checkpoints", write_tiny_sd3_checkpoint(d / "tiny_sd3.safetensors", seed=0)["path"],
                          name=SD3_CKPT)
            srv.add_model("vae", write_tiny_vae16(d / "tiny_vae16.safetensors", seed=0)["path"], name=VAE16)
        for name, path in models.items():
            srv.add_model("midms", path, name=name)
        _make_inputs(srv.input_dir)
        _make_anchor_inputs(srv.input_dir)
        yield srv


def _model_patch(server) -> dict:
    """A ModelSampling* node on the checkpoint's model ("95"): ModelSamplingSD3 (rectified flow,
    another noise path) where the host has it, else ModelSamplingDiscrete v-prediction with zero
    terminal SNR (another sigma table; the 2024 host has no rectified-flow sampling)."""
    if "ModelSamplingSD3" in server.object_info():
        return {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}}
    return {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "v_prediction", "zsnr": True}}


def _patched(graph: dict, patch: dict, inputs: list[str]) -> dict:
    """``graph`` with the ModelSampling node "95" feeding the given "node.input" model inputs."""
    g = with_nodes(graph, **{"95": patch})
    for key in inputs:
        nid, name = key.split(".")
        g[nid]["inputs"][name] = ["95", 0]
    return g


def _cached_nodes(entry: dict) -> set:
    for msg in (entry.get("status") or {}).get("messages", []):
        if isinstance(msg, (list, tuple)) and len(msg) == 2 and msg[0] == "execution_cached":
            return set(msg[1].get("nodes", []))
    return set()


def _digest(server, graph: dict, node: str) -> str:
    """Run ``graph``; the sha256 of its saved tensors, asserting that ``node`` really executed."""
    entry = server.run(graph, timeout=240, check=False)
    assert succeeded(entry), execution_error(entry)
    assert node not in _cached_nodes(entry), f"node {node} was served from the cache: the check would be empty"
    stats = server.outputs(entry)[SAVE]["midms_stats"]
    return " ".join(f"{s['key']} {s['sha256']}" for s in sorted(stats, key=lambda s: s["key"]))


def test_a_patched_model_does_not_poison_later_graphs(server):
    """A ModelSampling* clone of the checkpoint's model, then the plain model, then the clone
    again, through DDIB Translate, DIFT and the all-in-one sampler. The host shares one
    BaseModel between clones and its ``model_sampling`` holds the patch of the clone loaded last;
    a pack that reads it there (not from the ModelPatcher it was given) refuses or changes the
    plain graph after the patched one. Each plain run must give the bytes the FRESH server gave
    (this test runs first, before the table), each patched run the bytes of the first patched
    run, and the patched run must differ from the plain one (so it did change something)."""
    patch = _model_patch(server)
    cases = {  # name: (plain graph, the model inputs the patch feeds, the node that must execute)
        "DDIB Translate": (ddib_graph(), ["40.model_a", "40.model_b"], "40"),
        "DIFT": (dift_sampler_graph(), ["31.model"], "11"),
        "all-in-one sampler": (all_in_one_graph(), ["12.model"], "12"),
    }
    fresh = {name: _digest(server, plain, node) for name, (plain, _, node) in cases.items()}
    seen = []
    for name, (plain, inputs, node) in cases.items():
        patched = _patched(plain, patch, inputs)
        first = _digest(server, patched, node)
        assert first != fresh[name], f"{name}: the {patch['class_type']} clone changed nothing"
        assert _digest(server, plain, node) == fresh[name], f"{name}: the plain model after the patched clone"
        assert _digest(server, patched, node) == first, f"{name}: the patched clone after the plain model"
        seen.append(name)
    # a bridge between two noise paths is refused, however the path was set
    if patch["class_type"] == "ModelSamplingSD3":
        err, why = _run_error(server, _patched(ddib_graph(), patch, ["40.model_b"]))
        assert err is not None, why
        msg = str(err.get("exception_message"))
        assert err.get("node_id") == "40" and "rectified-flow" in msg and "ModelSampling" in msg, msg
        assert _digest(server, ddib_graph(), "40") == fresh["DDIB Translate"]
    assert seen == list(cases)


def test_hostile_input_table(server, tmp_path_factory, capsys):
    blur = iter(np.arange(1.0, 16.0, 0.015625))  # a fresh value per check: 960 of them

    def still_serving() -> tuple[bool, str]:
        # a fresh edge_blur each time: the matcher and everything after it really run
        return _check_ok_once(server, match_graph(**{"5.edge_blur": float(next(blur))}))

    rows = []
    t0 = time.monotonic()
    only = os.environ.get("MIDMS_HOSTILE_ONLY", "")  # e.g. "exemplar set": the cases whose name holds it
    selected = [c for c in ALL_CASES if only in c.name]
    assert selected, f"MIDMS_HOSTILE_ONLY={only!r} selects none of the {len(ALL_CASES)} cases"
    classes = set(server.object_info())
    # CI time: on the 2024 host only the rows that depend on the host (its validation: "refused";
    # its value coercion; its executor: interrupts and queued prompts); the newest host runs all
    host_rows_only = (require_host().is_2024_snapshot and not only
                      and os.environ.get("MIDMS_HOSTILE_ALL_HOSTS") != "1")
    for case in selected:
        start = time.monotonic()
        if host_rows_only and not (case.expect in ("refused", "custom") or case.host_may_coerce):
            case.observed = ("skipped: on the 2024 host only the host-dependent rows run (the pack's own errors and "
                             "outputs run on the newest host; MIDMS_HOSTILE_ALL_HOSTS=1 runs them here)")
            rows.append((case, 0.0))
            continue
        if case.needs is not None and case.needs not in classes:
            case.observed = (f"skipped: this host lacks {case.needs} (the model families or sampling that "
                             "row needs); a newer host runs it")
            rows.append((case, 0.0))
            continue
        try:
            run_case(server, case, still_serving)
        except Exception as err:  # a harness failure is a failed row, not a lost table
            case.passed, case.observed = False, f"harness: {type(err).__name__}: {err}"[:400]
        rows.append((case, time.monotonic() - start))
    table = ["| case | expected | observed | pass |", "|---|---|---|---|"]
    for case, seconds in rows:
        expected = {"ok": "runs, same bytes on rerun", "custom": "see case"}.get(
            case.expect, f"{case.expect} in node {case.node}, input '{case.input}'")
        if case.says:
            expected += " saying " + " / ".join(f"\"{s}\"" for s in case.says)
        observed = case.observed.replace("|", "\\|").replace("\n", " ")
        verdict = "skipped" if case.passed is None else ("yes" if case.passed else "NO")
        table.append(f"| {case.name} | {expected} | {observed} | {verdict} |")
    passed = sum(1 for c, _ in rows if c.passed)
    skipped = sum(1 for c, _ in rows if c.passed is None)
    host = require_host()
    version = "March-2024 snapshot" if host.is_2024_snapshot else _host_version(host.root)
    ran = len(rows) - skipped
    summary = (f"{passed} of {ran} cases pass on ComfyUI {version} ({time.monotonic() - t0:.0f} s)"
               + (f"; {skipped} skipped (the host lacks what they need, or they run on the newest host only)"
                  if skipped else ""))
    text = "\n".join(table) + f"\n\n{summary}\n"
    with capsys.disabled():  # the table shows in every run's log, passing or not
        print("\n" + text, flush=True)
    out = Path(tmp_path_factory.getbasetemp()) / "hostile_input_table.md"
    out.write_text(text)
    failed = [f"{c.name}: {c.observed}" for c, _ in rows if c.passed is False]
    assert not failed, "\n".join(failed)


def _check_ok_once(server, graph: dict) -> tuple[bool, str]:
    entry = server.run(graph, timeout=240, check=False)
    if not succeeded(entry):
        return False, str((execution_error(entry) or {}).get("exception_message"))[:300]
    return True, "ok"


def _host_version(root: Path) -> str:
    try:
        text = (root / "comfyui_version.py").read_text()
        return text.split('"')[1]
    except (OSError, IndexError):
        return str(root)
