"""The shipped workflows (``workflows/*.json`` + ``workflows/api/*.api.json``) and the MIDMs node
definitions, against a REAL ComfyUI over HTTP (one server for the whole module).

* ``/object_info`` lists every MIDMs node with the inputs, types, tooltips and outputs of the
  table below.
* Each UI workflow converts (``workflow_convert.ui_to_api``, driven by this host's /object_info,
  as the web frontend does) to exactly the shipped API prompt: the two files are one graph.
* Each API workflow the host supports runs: SD1.5 ones on a tiny SD1.5-shaped checkpoint WITH a
  random full-size CLIP-L, so CLIPTextEncode runs unchanged; the SDXL one on a tiny SDXL-shaped
  checkpoint (see ``tiny_models.write_tiny_sdxl_checkpoint``). The tiny files are linked into
  ``models/checkpoints`` under the names the workflows use (a tiny seeded SD1.5 ControlNet,
  ``tiny_models.write_tiny_sd15_controlnet``, into ``models/controlnet`` under the names their
  ControlNetLoader nodes use), and the example inputs are regenerated at 128 px
  (``workflows/make_example_inputs.py``; the anchors workflows' conditions by
  ``workflows/make_anchor_inputs.write_inputs``, with their keypoint JSON files, whose 512 px
  canvas the pack scales onto the 128 px images) into the server's ``input/``.
  Substitutions, all in :func:`runnable_prompt`:
    - SDXL: CLIP-L + CLIP-G cannot be made tiny, so each CLIPTextEncode node is replaced (same id,
      so every link stays) by the harness's ``MIDMSTestZeroConditioning`` giving
      ``[[zeros(1, 77, 2048), {"pooled_output": zeros(1, 1280)}]]``; and the condition's
      ``ImageScale`` to 1024 x 1024 is set to 64 x 64 (a 128 x 128 latent is too slow on CPU);
    - the diffusion feature matcher's ``output_block`` 6 (DIFT's block in the real SD layouts,
      checked on narrow real-layout U-Nets in test_diffusion_inprocess.py) is set to 1: the tiny
      checkpoints have one level (output blocks 0..1);
    - Flux: a Flux checkpoint cannot be tiny (the host's detection fixes its width at 3072), so
      CheckpointLoaderSimple is replaced (same id) by the harness's ``MIDMSTestTinyFlux``: a
      tiny Flux built from the host's own ``supported_models.Flux`` (one double, one single
      block, hidden 64) and a 16-channel TAESD file (``tiny_models.write_tiny_vae16``); each
      CLIPTextEncode by ``MIDMSTestZeroConditioning`` (width 64, pooled 32). Everything else,
      FluxGuidance, BasicGuider, the MIDMs nodes with the DiT feature matcher (default block),
      SamplerCustomAdvanced and the decode, runs as shipped;
    - every workflow: a ``MIDMSTestSaveTensor`` node is added on the final latent and decoded
      image, to check shapes and finiteness.
  SamplerCustomAdvanced (and its CFGGuider / RandomNoise) does not exist in the 2024 host: that
  workflow is skipped there and runs on a current host (``COMFYUI_PATH``).
* Broken graphs give errors that name the node and the input, and the server keeps serving.

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy/test_workflows.py -q
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
from pathlib import Path

import pytest

from harness.host import (PACK_NAME, REPO, ComfyServer, execution_error, require_host,
                              succeeded)
from harness.tiny_models import (SD3_CONTEXT_WIDTH, SD3_POOLED_WIDTH, write_tiny_sd15_checkpoint,
                                     write_tiny_sd15_controlnet, write_tiny_sd3_checkpoint,
                                     write_tiny_sdxl_checkpoint, write_tiny_vae16)
from harness.workflow_convert import check_ui_workflow, input_specs, ui_to_api

WORKFLOW_DIR = REPO / "workflows"
API_DIR = WORKFLOW_DIR / "api"
UI_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
NAMES = [p.stem for p in UI_FILES]
SHIPPED = {"midms_edge_to_photo_sd15", "midms_sampler_custom_sd15",
           "midms_sampler_custom_advanced_sd15", "midms_edge_to_photo_sdxl", "midms_dift_sd15",
           "midms_controlnet_sd15", "midms_flux", "midms_ddib_two_checkpoints_sd15", "midms_ddib_two_prompts_sd15",
           "midms_two_exemplars_sd15", "midms_label_map_sd15", "midms_anchors_face_sd15", "midms_anchors_pose_sd15",
           "midms_flux2", "midms_z_image"}
# the split-file workflows of the 2025 families -> (tiny family of MIDMSTestTinyCheckpoint, its VAE
# for MIDMSTestTinyVAE, host supported_models class, latent channels, pixels per latent cell)
SPLIT_FILE = {"midms_flux2": ("flux2", "flux2", "Flux2", 128, 16),
              "midms_z_image": ("zimage", "vae16", "ZImage", 16, 8)}
CLIP_TYPE = {"midms_flux2": "flux2", "midms_z_image": "lumina2"}  # Load CLIP's type in their examples
# DDIB graphs translate ONE input photo (no condition / exemplar pair)
DDIB = {name for name in NAMES if "_ddib_" in name}
TINY_LAST_OUTPUT_BLOCK = 1  # the tiny checkpoints' U-Nets have output blocks 0..1
CONDITION_FILE = "midms_condition_edges.png"
EXEMPLAR_FILE = "midms_exemplar.png"
SECOND_EXEMPLAR_FILE = "midms_exemplar_2.png"
CONDITION_LABELS_FILE = "midms_condition_labels.png"
EXEMPLAR_LABELS_FILE = "midms_exemplar_labels.png"
FACE_CONDITION_FILE = "midms_face_condition.png"
POSE_CONDITION_FILE = "midms_pose_condition.png"
INPUT_FILES = (CONDITION_FILE, EXEMPLAR_FILE, SECOND_EXEMPLAR_FILE, CONDITION_LABELS_FILE, EXEMPLAR_LABELS_FILE,
               FACE_CONDITION_FILE, POSE_CONDITION_FILE)
# the anchors workflows: condition image, (condition keypoints, exemplar keypoints) files, and what
# the anchors preview's report must say (the face: all 68 landmarks pair; the body: per-part fields)
ANCHORS = {
    "midms_anchors_face_sd15": (FACE_CONDITION_FILE, ("midms_face_condition_keypoints.json",
                                                      "midms_exemplar_face_keypoints.json"), "68 anchors"),
    "midms_anchors_pose_sd15": (POSE_CONDITION_FILE, ("midms_pose_condition_keypoints.json",
                                                      "midms_exemplar_pose_keypoints.json"), "body parts"),
}
KEYPOINT_FILES = tuple(f for _, files, _ in ANCHORS.values() for f in files)
# inputs a node offers as alternatives: exactly one of each pair is connected in a shipped workflow
ALTERNATIVE_INPUTS = {"MIDMsAnchors": (("condition_keypoints", "condition_points"),
                                       ("exemplar_keypoints", "exemplar_points"))}


def expected_images(name: str) -> list[str]:
    """The LoadImage files a shipped workflow reads (sorted)."""
    if name in DDIB:
        return [EXEMPLAR_FILE]
    if "two_exemplars" in name:
        return sorted([CONDITION_FILE, EXEMPLAR_FILE, SECOND_EXEMPLAR_FILE])
    if "label_map" in name:
        return sorted([CONDITION_LABELS_FILE, EXEMPLAR_FILE, EXEMPLAR_LABELS_FILE])
    if name in ANCHORS:
        return sorted([ANCHORS[name][0], EXEMPLAR_FILE])
    return sorted([CONDITION_FILE, EXEMPLAR_FILE])
TEST_SIZE = 128        # side of the condition / exemplar the server gets
SDXL_TEST_SIZE = 64    # what the SDXL workflow's ImageScale is set to here
LOAD_WARNINGS = ("unet missing", "unet unexpected", "Missing VAE keys", "Could not detect model type")

COMBO = "COMBO"  # a list of choices (any values)
# node id -> display name, inputs {group: [(name, type or exact choices)]}, outputs [(name, type)]
EXPECTED_NODES = {
    "MIDMsExemplarEncode": {
        "display": "MIDMs Exemplar Encode",
        "required": [("condition", "IMAGE"), ("exemplar", "IMAGE"), ("vae", "VAE"),
                     ("exemplar_fit", ["crop", "stretch", "pad", "own size"])],
        "optional": [("anchors", "MIDMS_ANCHORS")],
        "outputs": [("context", "MIDMS_CONTEXT")],
    },
    "MIDMsExemplarSetEncode": {
        "display": "MIDMs Exemplar Set Encode (several exemplars)",
        "required": [("condition", "IMAGE"), ("exemplars", "IMAGE"), ("vae", "VAE"),
                     ("exemplar_fit", ["crop", "stretch", "pad"])],
        "optional": [("condition_masks", "MASK"), ("exemplar_masks", "MASK"), ("condition_labels", "IMAGE"),
                     ("exemplar_labels", "IMAGE"), ("anchors", "MIDMS_ANCHORS"),
                     ("label_compare", ["exact colour", "nearest condition colour"]), ("colour_tolerance", "INT")],
        "outputs": [("context", "MIDMS_CONTEXT")],
    },
    "MIDMsAnchors": {
        "display": "MIDMs Anchors (keypoints)",
        "required": [("mode", ["prior", "anchors only"]), ("smoothing", "FLOAT"), ("trust", "FLOAT"),
                     ("trust_cap", "FLOAT")],
        "optional": [("condition_keypoints", "POSE_KEYPOINT"), ("exemplar_keypoints", "POSE_KEYPOINT"),
                     ("condition_points", "STRING"), ("exemplar_points", "STRING"),
                     ("condition_canvas_width", "INT"), ("condition_canvas_height", "INT"),
                     ("exemplar_canvas_width", "INT"), ("exemplar_canvas_height", "INT"), ("person", "INT"),
                     ("confidence", "FLOAT"), ("transform", ["similarity", "affine"]),
                     ("body", ["auto", "parts", "global"])],
        "outputs": [("anchors", "MIDMS_ANCHORS")],
    },
    "MIDMsLoadKeypoints": {
        "display": "MIDMs Load Keypoints JSON",
        "required": [("file", COMBO)],
        "optional": [],
        "outputs": [("keypoints", "POSE_KEYPOINT")],
    },
    "MIDMsAnchorsPreview": {
        "display": "MIDMs Anchors Preview",
        "required": [("context", "MIDMS_CONTEXT")],
        "optional": [("exemplar", "INT")],
        "outputs": [("preview", "IMAGE"), ("report", "STRING")],
    },
    "MIDMsSourcePreview": {
        "display": "MIDMs Exemplar Source Preview",
        "required": [("match", "MIDMS_MATCH")],
        "optional": [],
        "outputs": [("source_preview", "IMAGE")],
    },
    "MIDMsEdgeMatcher": {
        "display": "MIDMs Edge Matcher (training-free)",
        "required": [("canny_low", "FLOAT"), ("canny_high", "FLOAT"), ("edge_blur", "FLOAT"),
                     ("x0_condition_weight", "FLOAT")],
        "optional": [("alignment", ["similarity", "none"]), ("mirror", "BOOLEAN"), ("locality", "FLOAT")],
        "outputs": [("matcher", "MIDMS_MATCHER")],
    },
    "MIDMsDiffusionFeatureMatcher": {
        "display": "MIDMs Diffusion Feature Matcher (DIFT)",
        "required": [("model", "MODEL"), ("timestep", "INT"), ("output_block", "INT"), ("ensemble", "INT")],
        "optional": [("cross_domain_matcher", "MIDMS_MATCHER"), ("empty_prompt", "CONDITIONING"),
                     ("dit_block", "INT")],
        "outputs": [("matcher", "MIDMS_MATCHER")],
    },
    "MIDMsLearnedMatcherLoader": {
        "display": "MIDMs Learned Matcher Loader",
        "required": [("networks_name", COMBO)],
        "optional": [],
        "outputs": [("matcher", "MIDMS_MATCHER")],
    },
    "MIDMsRewarpSettings": {
        "display": "MIDMs Rewarp Settings",
        "required": [("tau", "FLOAT"), ("threshold", "FLOAT"), ("mask_mode", ["hard", "soft"]),
                     ("smooth_mask", "BOOLEAN"), ("rewarp_steps", "STRING"), ("eta", "FLOAT"),
                     ("refine_strength", "FLOAT"), ("refine_steps", "INT")],
        "optional": [],
        "outputs": [("settings", "MIDMS_SETTINGS")],
    },
    "MIDMsCorrespondence": {
        "display": "MIDMs Cross-Domain Correspondence",
        "required": [("context", "MIDMS_CONTEXT"), ("matcher", "MIDMS_MATCHER")],
        "optional": [("settings", "MIDMS_SETTINGS")],
        "outputs": [("match", "MIDMS_MATCH"), ("warped_latent", "LATENT"), ("confidence", "MASK"),
                    ("warped_preview", "IMAGE"), ("flow_preview", "IMAGE")],
    },
    "MIDMsInterleavedSampler": {
        "display": "MIDMs Interleaved DDIM Sampler",
        "required": [("model", "MODEL"), ("match", "MIDMS_MATCH")],
        "optional": [],
        "outputs": [("sampler", "SAMPLER")],
    },
    "MIDMsSampler": {
        "display": "MIDMs Sampler (all-in-one)",
        "required": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                     ("context", "MIDMS_CONTEXT"), ("matcher", "MIDMS_MATCHER"), ("seed", "INT"),
                     ("steps", "INT"), ("start_noise", "FLOAT"), ("cfg", "FLOAT")],
        "optional": [("settings", "MIDMS_SETTINGS"), ("start", ["noise", "ddim inversion"])],
        "outputs": [("latent", "LATENT"), ("warped_latent", "LATENT")],
    },
    "MIDMsDDIMInversionSampler": {
        "display": "MIDMs DDIM Inversion Sampler",
        "required": [("model", "MODEL")],
        "optional": [],
        "outputs": [("sampler", "SAMPLER")],
    },
    "MIDMsDDIBTranslate": {
        "display": "MIDMs DDIB Translate",
        "required": [("model_a", "MODEL"), ("positive_a", "CONDITIONING"), ("negative_a", "CONDITIONING"),
                     ("model_b", "MODEL"), ("positive_b", "CONDITIONING"), ("negative_b", "CONDITIONING"),
                     ("latent_image", "LATENT"), ("steps", "INT"), ("depth", "FLOAT"), ("scheduler", COMBO),
                     ("cfg_a", "FLOAT"), ("cfg_b", "FLOAT")],
        "optional": [],
        "outputs": [("latent", "LATENT"), ("inverted_latent", "LATENT"), ("report", "STRING")],
    },
    "MIDMsDDIMRoundTrip": {
        "display": "MIDMs DDIM Round Trip",
        "required": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                     ("latent_image", "LATENT"), ("steps", "INT"), ("depth", "FLOAT"), ("scheduler", COMBO),
                     ("cfg", "FLOAT")],
        "optional": [],
        "outputs": [("reconstruction", "LATENT"), ("error", "FLOAT"), ("report", "STRING")],
    },
}
ADVANCED_NODES = ("SamplerCustomAdvanced", "CFGGuider", "BasicGuider", "RandomNoise", "FluxGuidance")
TINY_VAE16 = "midms_tiny_vae16.safetensors"  # what MIDMSTestTinyFlux loads from models/vae
TINY_SD3 = "midms_tiny_sd3.safetensors"
# the shipped SD1.5 graphs that need nothing SD1.5-specific (the ControlNet one loads an SD1.5
# ControlNet), run again on a tiny SD3 checkpoint FILE and a tiny Flux
DIT_RUNNABLE = ("midms_edge_to_photo_sd15", "midms_sampler_custom_sd15", "midms_sampler_custom_advanced_sd15",
                "midms_dift_sd15")


# --------------------------------------------------------------------------------------------
# fixtures: one host, one server, tiny checkpoints and inputs for the whole module
# --------------------------------------------------------------------------------------------
def _load_inputs_module(script: str = "make_example_inputs.py"):
    spec = importlib.util.spec_from_file_location(f"midms_{Path(script).stem}", WORKFLOW_DIR / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path: Path):
    return json.loads(path.read_text())


def _api_path(name: str) -> Path:
    return API_DIR / f"{name}.api.json"


def _ckpt_names(prompt) -> set:
    return {n["inputs"]["ckpt_name"] for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple"}


def _controlnet_names(prompt) -> set:
    return {n["inputs"]["control_net_name"] for n in prompt.values() if n["class_type"] == "ControlNetLoader"}


@pytest.fixture(scope="module")
def host():
    return require_host()


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf_ckpts")
    t0 = time.monotonic()
    sd15 = write_tiny_sd15_checkpoint(d / "tiny_sd15_clip.safetensors", seed=0, with_clip=True)
    sdxl = write_tiny_sdxl_checkpoint(d / "tiny_sdxl.safetensors", seed=0)
    controlnet = write_tiny_sd15_controlnet(d / "tiny_sd15_controlnet.safetensors", seed=0)
    vae16 = write_tiny_vae16(d / TINY_VAE16, seed=0)
    sd3 = write_tiny_sd3_checkpoint(d / TINY_SD3, seed=0)
    return {"sd15": sd15, "sdxl": sdxl, "controlnet": controlnet, "vae16": vae16, "sd3": sd3,
            "seconds": time.monotonic() - t0}


@pytest.fixture(scope="module")
def server(host, tiny_ckpts):
    inputs = _load_inputs_module()
    with ComfyServer(host) as srv:
        srv.add_model("vae", tiny_ckpts["vae16"]["path"], name=TINY_VAE16)
        srv.add_model("checkpoints", tiny_ckpts["sd3"]["path"], name=TINY_SD3)
        # the tiny checkpoints under every name the shipped workflows load (Flux: none, see above)
        for name in NAMES:
            if "flux" in name:
                continue
            if _api_path(name).is_file():
                kind = "sdxl" if "sdxl" in name else "sd15"
                for ckpt in _ckpt_names(_read(_api_path(name))):
                    srv.add_model("checkpoints", tiny_ckpts[kind]["path"], name=ckpt)
                for cn in _controlnet_names(_read(_api_path(name))):  # the tiny SD1.5 ControlNet
                    srv.add_model("controlnet", tiny_ckpts["controlnet"]["path"], name=cn)
        condition, exemplar = inputs.make_inputs(TEST_SIZE)
        condition.save(srv.input_dir / CONDITION_FILE)
        exemplar.save(srv.input_dir / EXEMPLAR_FILE)
        from PIL import Image as _Image
        import numpy as np
        as_png = lambda a: _Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), "RGB")
        as_png(inputs.second_exemplar(TEST_SIZE)).save(srv.input_dir / SECOND_EXEMPLAR_FILE)
        cond_labels, exem_labels = inputs.label_maps(TEST_SIZE)
        as_png(cond_labels).save(srv.input_dir / CONDITION_LABELS_FILE)
        as_png(exem_labels).save(srv.input_dir / EXEMPLAR_LABELS_FILE)
        from PIL import Image
        Image.new("RGB", (6, 6), "white").save(srv.input_dir / "midms_tiny_6px.png")
        # the anchors workflows: conditions at TEST_SIZE, keypoint files (canvas 512) as shipped
        written = _load_inputs_module("make_anchor_inputs.py").write_inputs(srv.input_dir, TEST_SIZE)
        assert {p.name for p in written} >= {FACE_CONDITION_FILE, POSE_CONDITION_FILE, *KEYPOINT_FILES}
        yield srv


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def _png_size(path: Path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


# --------------------------------------------------------------------------------------------
# the shipped files
# --------------------------------------------------------------------------------------------
def test_shipped_files():
    assert SHIPPED <= set(NAMES), f"missing UI workflows: {SHIPPED - set(NAMES)}"
    apis = {p.name[: -len(".api.json")] for p in API_DIR.glob("*.api.json")}
    assert apis == set(NAMES), "every UI workflow needs its API twin in workflows/api/ and back"
    for f in INPUT_FILES:
        from PIL import Image
        with Image.open(WORKFLOW_DIR / "inputs" / f) as im:
            assert im.size == (512, 512) and im.mode == "RGB", (f, im.size, im.mode)
    for f in KEYPOINT_FILES:  # OpenPose JSON: one frame, one person, on the 512 px canvas of the images
        frames = _read(WORKFLOW_DIR / "inputs" / f)
        assert isinstance(frames, list) and len(frames) == 1, f
        assert (frames[0]["canvas_width"], frames[0]["canvas_height"]) == (512, 512), f
        assert len(frames[0]["people"]) == 1, f


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_well_formed(name):
    ui = _read(WORKFLOW_DIR / f"{name}.json")
    assert check_ui_workflow(ui) == []
    types = [n["type"] for n in ui["nodes"]]
    assert "Note" in types, "each workflow explains itself in a Note"
    loaders = ("UNETLoader", "CLIPLoader", "VAELoader") if name in SPLIT_FILE else ("CheckpointLoaderSimple",)
    for required in loaders + ("CLIPTextEncode", "LoadImage", "VAEDecode", "SaveImage"):
        assert required in types, required
    if name in SPLIT_FILE:  # loaded as ComfyUI's own example for the family loads it
        clip_types = [n["widgets_values"][1] for n in ui["nodes"] if n["type"] == "CLIPLoader"]
        assert clip_types == [CLIP_TYPE[name]], clip_types
    images = sorted(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "LoadImage")
    assert images == expected_images(name)
    keypoint_files = sorted(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "MIDMsLoadKeypoints")
    assert keypoint_files == sorted(ANCHORS[name][1] if name in ANCHORS else []), keypoint_files
    # every socket of a MIDMs / sampler node is connected (optional 'settings' included), but
    # for inputs that are alternatives (keypoints OR points): exactly one of each pair
    for n in ui["nodes"]:
        if n["type"].startswith("MIDMs") or n["type"].startswith("Sampler"):
            open_inputs = [i["name"] for i in n.get("inputs", []) if i.get("link") is None]
            for pair in ALTERNATIVE_INPUTS.get(n["type"], ()):
                linked = [i["name"] for i in n["inputs"] if i["name"] in pair and i.get("link") is not None]
                assert len(linked) == 1, (n["id"], n["type"], pair, linked)
                open_inputs = [i for i in open_inputs if i not in pair]
            assert open_inputs == [], (n["id"], n["type"], open_inputs)


# --------------------------------------------------------------------------------------------
# /object_info
# --------------------------------------------------------------------------------------------
def _type_of(spec):
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":  # newer schema: ["COMBO", {"options": [...]}]
        return list((spec[1] if len(spec) > 1 else {}).get("options", []))
    return kind


def test_object_info_lists_midms_nodes(object_info, server):
    missing = sorted(set(EXPECTED_NODES) - set(object_info))
    assert not missing, f"not registered: {missing}\n{server.log_tail()}"
    assert sorted(k for k, v in object_info.items() if v.get("category") == "MIDMs") == sorted(EXPECTED_NODES)
    for node_id, want in EXPECTED_NODES.items():
        info = object_info[node_id]
        assert info["display_name"] == want["display"], node_id
        assert info["category"] == "MIDMs", node_id
        assert info.get("description"), f"{node_id} has no description"
        for group in ("required", "optional"):
            specs = info["input"].get(group) or {}
            got = [(name, _type_of(spec)) for name, spec in specs.items()]
            expected = [(name, kind) for name, kind in want[group]]
            assert [n for n, _ in got] == [n for n, _ in expected], (node_id, group)
            for (name, kind), (_, want_kind) in zip(got, expected):
                if want_kind == COMBO:
                    assert isinstance(kind, list), (node_id, name, kind)
                else:
                    assert kind == want_kind, (node_id, name, kind, want_kind)
            for name, spec in specs.items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert isinstance(opts.get("tooltip"), str) and len(opts["tooltip"]) > 10, \
                    f"{node_id}.{name} has no tooltip"
        assert list(zip(info["output_name"], info["output"])) == want["outputs"], node_id
        assert not any(info["output_is_list"]), node_id
        # one tooltip per output (hosts that predate output tooltips leave them out of /object_info:
        # the node declares them all the same, see test_every_output_has_a_tooltip)
        if "output_tooltips" in info:
            tips = info["output_tooltips"]
            assert len(tips) == len(info["output"]) and all(isinstance(t, str) and len(t) > 10 for t in tips), node_id


def test_every_output_has_a_tooltip():
    """Every MIDMs node declares OUTPUT_TOOLTIPS: one line per output saying what it carries and
    where it goes (the front end shows it on hovering the output; the 2024 host ignores it)."""
    import ast

    declared = {}
    for path in sorted((REPO / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                     if isinstance(t, ast.Name)}
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            fields = {t.id: n.value for n in cls.body if isinstance(n, ast.Assign) for t in n.targets
                      if isinstance(t, ast.Name)}
            if "RETURN_TYPES" not in fields:
                continue
            tips = fields.get("OUTPUT_TOOLTIPS")
            values = [] if tips is None else [constants.get(e.id, e) if isinstance(e, ast.Name) else e for e in tips.elts]
            declared[cls.name] = (len(fields["RETURN_TYPES"].elts),
                                  [ast.literal_eval(v) for v in values])
    assert set(declared) == set(EXPECTED_NODES), sorted(set(declared) ^ set(EXPECTED_NODES))
    for name, (outputs, tips) in declared.items():
        assert len(tips) == outputs, f"{name}: {len(tips)} output tooltips for {outputs} outputs"
        for tip in tips:
            assert isinstance(tip, str) and len(tip) > 20 and tip.endswith("."), (name, tip)


# --------------------------------------------------------------------------------------------
# UI file == API file
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_converts_to_shipped_api(name, object_info, host):
    ui = _read(WORKFLOW_DIR / f"{name}.json")
    api = _read(_api_path(name))
    missing = sorted({n["type"] for n in ui["nodes"]} - set(object_info) - {"Note"})
    if missing and set(missing) <= set(ADVANCED_NODES) and host.is_2024_snapshot:
        pytest.skip(f"the 2024 host has no {', '.join(missing)}: no widget definitions to convert "
                    "with (checked on current hosts)")
    if name in SPLIT_FILE and SPLIT_FILE[name][2] not in host.model_classes():
        pytest.skip(f"this host has no comfy.supported_models.{SPLIT_FILE[name][2]} (checked on ComfyUI 0.3.75)")
    assert not missing, f"host lacks {missing}"
    assert ui_to_api(ui, object_info) == api
    # and every API input is one the node defines (no stale widget names)
    for nid, node in api.items():
        names = {n for n, _ in input_specs(object_info[node["class_type"]])}
        assert set(node["inputs"]) <= names, (nid, node["class_type"], set(node["inputs"]) - names)


def test_converter_follows_the_frontend_rules():
    """workflow_convert on a synthetic graph: seed control values, the upload button, a widget
    converted to an input and linked, a Reroute, a PrimitiveNode, a muted and a bypassed node."""
    info = {
        "Src": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                "output": ["IMAGE", "INT"], "output_name": ["IMAGE", "INT"], "display_name": "Source"},
        "Dst": {"input": {"required": {"images": ["IMAGE"], "seed": ["INT", {}],
                                       "steps": ["INT", {"default": 4}],
                                       "n": ["INT", {"control_after_generate": True}],
                                       "mode": [["x", "y"]], "forced": ["FLOAT", {"forceInput": True}]},
                          "optional": {"text": ["STRING", {}]}},
                "output": ["IMAGE"], "output_name": ["IMAGE"], "display_name": "Destination"},
    }
    wf = {"nodes": [
        {"id": 1, "type": "Src", "inputs": [], "widgets_values": ["b.png", "image"]},
        {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}]},
        {"id": 3, "type": "Dst", "mode": 0, "title": "Mine",
         "inputs": [{"name": "images", "type": "IMAGE", "link": 2},
                    {"name": "forced", "type": "FLOAT", "link": None},
                    {"name": "steps", "type": "INT", "link": 3, "widget": {"name": "steps"}},
                    {"name": "n", "type": "INT", "link": 4, "widget": {"name": "n"}}],
         "widgets_values": [7, "fixed", 9, 11, "randomize", "y", "hello"]},
        {"id": 4, "type": "PrimitiveNode", "outputs": [{"links": [4]}], "widgets_values": [11, "fixed"]},
        {"id": 5, "type": "Dst", "mode": 4, "inputs": [{"name": "images", "type": "IMAGE", "link": 5}],
         "widgets_values": [1, "fixed", 1, 1, "fixed", "x", ""]},
        {"id": 6, "type": "Dst", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 6}],
         "widgets_values": [2, "fixed", 2, 2, "fixed", "x", ""]},
        {"id": 7, "type": "Dst", "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
         "widgets_values": [3, "fixed", 3, 3, "fixed", "x", ""]},
        {"id": 8, "type": "Dst", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 7}],
         "widgets_values": [4, "fixed", 4, 4, "fixed", "x", ""]},
        {"id": 9, "type": "Note", "widgets_values": ["hi"]},
    ], "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 1, 1, 3, 2, "INT"],
                 [4, 4, 0, 3, 3, "INT"], [5, 1, 0, 5, 0, "IMAGE"], [6, 5, 0, 6, 0, "IMAGE"],
                 [7, 7, 0, 8, 0, "IMAGE"]], "version": 0.4}
    api = ui_to_api(wf, info)
    assert sorted(api, key=int) == ["1", "3", "6", "8"]
    assert api["1"] == {"class_type": "Src", "inputs": {"image": "b.png"}, "_meta": {"title": "Source"}}
    assert api["3"]["inputs"] == {"images": ["1", 0], "seed": 7, "steps": ["1", 1], "n": 11,
                                  "mode": "y", "text": "hello"}
    assert api["3"]["_meta"] == {"title": "Mine"}
    assert api["6"]["inputs"]["images"] == ["1", 0]   # through the bypassed node 5
    assert "images" not in api["8"]["inputs"]          # its source (7) is muted
    assert ui_to_api(wf, info, legacy_upload=True)["1"]["inputs"] == {"image": "b.png", "upload": "image"}
    bad = json.loads(json.dumps(wf))
    bad["nodes"][2]["widgets_values"].pop(1)             # a seed without its control value
    with pytest.raises(ValueError, match="widgets_values"):
        ui_to_api(bad, info)


# --------------------------------------------------------------------------------------------
# running the API workflows
# --------------------------------------------------------------------------------------------
def runnable_prompt(name: str, prompt: dict) -> tuple[dict, str, int]:
    """The shipped prompt with the documented test substitutions (module docstring); returns
    (prompt, id of the added MIDMSTestSaveTensor node, expected image side)."""
    prompt = json.loads(json.dumps(prompt))
    side = TEST_SIZE
    if "sdxl" in name:
        for node in prompt.values():
            if node["class_type"] == "CLIPTextEncode":
                node["class_type"] = "MIDMSTestZeroConditioning"
                node["inputs"] = {"batch_size": 1, "tokens": 77, "width": 2048, "pooled_width": 1280}
            elif node["class_type"] == "ImageScale":
                assert node["inputs"]["width"] == node["inputs"]["height"] == 1024
                node["inputs"].update(width=SDXL_TEST_SIZE, height=SDXL_TEST_SIZE)
                side = SDXL_TEST_SIZE
    if name in SPLIT_FILE:
        family, vae_kind = SPLIT_FILE[name][:2]
        for nid, node in list(prompt.items()):
            if node["class_type"] == "UNETLoader":
                node.update(class_type="MIDMSTestTinyCheckpoint", inputs={"family": family})
            elif node["class_type"] == "VAELoader":
                node.update(class_type="MIDMSTestTinyVAE", inputs={"kind": vae_kind})
            elif node["class_type"] == "CLIPLoader":
                del prompt[nid]  # its only consumers, the text encodes, are replaced below
            elif node["class_type"] == "CLIPTextEncode":
                node.update(class_type="MIDMSTestZeroConditioning",
                            inputs={"batch_size": 1, "tokens": 77, "width": 64, "pooled_width": -1})
    elif "flux" in name:
        for node in prompt.values():
            if node["class_type"] == "CheckpointLoaderSimple":
                node["class_type"] = "MIDMSTestTinyFlux"
                node["inputs"] = {"vae_name": TINY_VAE16, "seed": 0}
            elif node["class_type"] == "CLIPTextEncode":
                node["class_type"] = "MIDMSTestZeroConditioning"
                node["inputs"] = {"batch_size": 1, "tokens": 77, "width": 64, "pooled_width": 32}
    for node in prompt.values():
        if node["class_type"] == "MIDMsDiffusionFeatureMatcher" and "flux" not in name:
            assert node["inputs"]["output_block"] == 6  # DIFT's block in the real layouts
            node["inputs"]["output_block"] = TINY_LAST_OUTPUT_BLOCK
    saves = [n for n in prompt.values() if n["class_type"] == "SaveImage"]
    assert len(saves) == 1, name
    decode = prompt[saves[0]["inputs"]["images"][0]]
    assert decode["class_type"] == "VAEDecode"
    probe = str(max(int(k) for k in prompt) + 100)
    prompt[probe] = {"class_type": "MIDMSTestSaveTensor", "inputs": {
        "name": name, "latent": decode["inputs"]["samples"], "image": saves[0]["inputs"]["images"]}}
    return prompt, probe, side


def _record_digests(tmp_path_factory, name: str, stats: dict) -> None:
    """Append the run's final latent / image sha256 to ``<basetemp>/workflow_digests.txt``: the
    record a change that must not alter any shipped workflow's output is compared with (seeded
    tiny models, so two checkouts on one host give the same bytes unless the outputs changed)."""
    line = f"{name}\tlatent {stats['latent']['sha256']}\timage {stats['image']['sha256']}\n"
    with open(tmp_path_factory.getbasetemp() / "workflow_digests.txt", "a") as f:
        f.write(line)


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_runs(name, server, object_info, host, tmp_path_factory):
    prompt = _read(_api_path(name))
    missing = sorted({n["class_type"] for n in prompt.values()} - set(object_info))
    if missing and set(missing) <= set(ADVANCED_NODES) and host.is_2024_snapshot:
        pytest.skip(f"the 2024 host predates {', '.join(missing)}; run with COMFYUI_PATH set to a "
                    "current ComfyUI for this workflow")
    if name in SPLIT_FILE and SPLIT_FILE[name][2] not in host.model_classes():
        pytest.skip(f"this host has no comfy.supported_models.{SPLIT_FILE[name][2]} (checked on ComfyUI 0.3.75)")
    assert not missing, f"host lacks {missing}"
    prompt, probe, side = runnable_prompt(name, prompt)
    t0 = time.monotonic()
    entry = server.run(prompt, timeout=240)
    seconds = time.monotonic() - t0
    assert succeeded(entry)
    outputs = server.outputs(entry)

    # the saved result and every preview: one PNG each, at the condition's size
    kinds = {nid: prompt[nid]["class_type"] for nid in outputs}
    images = {nid: server.output_files({"outputs": {nid: ui}}) for nid, ui in outputs.items() if "images" in ui}
    save_ids = [nid for nid, k in kinds.items() if k == "SaveImage"]
    assert len(save_ids) == 1, kinds
    preview_ids = sorted(nid for nid, k in kinds.items() if k == "PreviewImage")
    expected_previews = sorted(nid for nid, n in prompt.items() if n["class_type"] == "PreviewImage")
    assert preview_ids == expected_previews, (preview_ids, expected_previews)
    for nid, files in images.items():
        assert len(files) == 1 and files[0].is_file(), (nid, files)
        # the anchors preview is condition | exemplar side by side (the exemplar cropped to the
        # condition's size): twice as wide; every other image is the condition's size
        source = prompt[nid]["inputs"].get("images")
        anchors_preview = kinds[nid] == "PreviewImage" and prompt[source[0]]["class_type"] == "MIDMsAnchorsPreview"
        want = (2 * side, side) if anchors_preview else (side, side)
        assert _png_size(files[0]) == want, (nid, kinds[nid], _png_size(files[0]), want)
    prefix = next(n for n in prompt.values() if n["class_type"] == "SaveImage")["inputs"]["filename_prefix"]
    saved = images[save_ids[0]][0]
    assert saved.is_relative_to(server.output_dir) and saved.name.startswith(Path(prefix).name)

    # the final latent and image: shapes and finite values
    stats = {s["key"]: s for s in outputs[probe]["midms_stats"]}
    channels, cell = SPLIT_FILE[name][3:] if name in SPLIT_FILE else (16 if "flux" in name else 4, 8)
    assert stats["latent"]["shape"] == [1, channels, side // cell, side // cell] and stats["latent"]["finite"]
    assert stats["image"]["shape"] == [1, side, side, 3] and stats["image"]["finite"]
    assert 0.0 <= stats["image"]["min"] <= stats["image"]["max"] <= 1.0
    assert stats["latent"]["std"] > 0
    _record_digests(tmp_path_factory, name, stats)
    # the round-trip readout reaches the client as the node's ui text (the web extension draws it)
    for nid in (nid for nid, n in prompt.items() if n["class_type"] == "MIDMsDDIMRoundTrip"):
        text = outputs.get(nid, {}).get("text") or [""]
        assert text[0].startswith("round-trip error "), (nid, outputs.get(nid))
        assert float(text[0].split()[2]) >= 0
    # the anchors preview's report reaches the client as the node's ui text and names the anchors
    anchor_previews = [nid for nid, n in prompt.items() if n["class_type"] == "MIDMsAnchorsPreview"]
    assert len(anchor_previews) == (1 if name in ANCHORS else 0), anchor_previews
    for nid in anchor_previews:
        text = outputs.get(nid, {}).get("text") or [""]
        assert text[0].startswith("anchors: ") and ANCHORS[name][2] in text[0], (nid, outputs.get(nid))
        print(f"{name}: anchors report: {text[0]!r}")
    log = server.log()
    for w in LOAD_WARNINGS:
        assert w not in log, w
    print(f"{name}: {seconds:.1f} s")


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("name", DIT_RUNNABLE)
def test_workflow_runs_on_a_dit(name, family, server, object_info, host, tmp_path_factory):
    """The same graphs on the flow-matching DiTs: a tiny SD3 checkpoint FILE
    (``tiny_models.write_tiny_sd3_checkpoint``: an MMDiT the host detects as SD3, and a
    16-channel TAESD as its VAE) and the tiny Flux of ``MIDMSTestTinyFlux`` in place of the
    checkpoint loader. 16-channel latents through encode, matching (the DIFT graph's matcher
    reads a transformer block), sampling and decode, over HTTP. Text: zero conditioning of the
    tiny widths (64, pooled 32), as neither has text encoders."""
    if host.is_2024_snapshot:
        pytest.skip("the 2024 host predates SD3 and Flux (checked on current hosts)")
    prompt = _read(_api_path(name))
    missing = sorted({n["class_type"] for n in prompt.values()} - set(object_info))
    assert not missing, f"host lacks {missing}"
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            if family == "sd3":
                node["inputs"]["ckpt_name"] = TINY_SD3
            else:
                node["class_type"] = "MIDMSTestTinyFlux"
                node["inputs"] = {"vae_name": TINY_VAE16, "seed": 0}
        elif node["class_type"] == "CLIPTextEncode":
            node["class_type"] = "MIDMSTestZeroConditioning"
            node["inputs"] = {"batch_size": 1, "tokens": 77, "width": SD3_CONTEXT_WIDTH, "pooled_width": SD3_POOLED_WIDTH}
    prompt, probe, side = runnable_prompt(f"{name}_on_{family}", prompt)
    entry = server.run(prompt, timeout=240)
    assert succeeded(entry), execution_error(entry)
    stats = {s["key"]: s for s in server.outputs(entry)[probe]["midms_stats"]}
    assert stats["latent"]["shape"] == [1, 16, side // 8, side // 8] and stats["latent"]["finite"]
    assert stats["image"]["shape"] == [1, side, side, 3] and stats["image"]["finite"]
    assert stats["latent"]["std"] > 0
    _record_digests(tmp_path_factory, f"{name}_on_{family}", stats)
    log = server.log()
    if family == "sd3":
        assert "model_type FLOW" in log  # the file was detected as a rectified-flow (SD3) model
    for w in LOAD_WARNINGS:
        assert w not in log, w


def test_dift_workflow_runs_on_an_sdxl_checkpoint(server):
    """The diffusion-feature workflow with an SDXL-family checkpoint: the same graph, only the
    checkpoint name changed (the tiny SDXL file is linked under the SDXL workflow's name), with
    the SDXL substitutions of runnable_prompt (zero conditioning for every text encoder)."""
    prompt = _read(_api_path("midms_dift_sd15"))
    sdxl_name = next(iter(_ckpt_names(_read(_api_path("midms_edge_to_photo_sdxl")))))
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = sdxl_name
    prompt, probe, side = runnable_prompt("midms_dift_as_sdxl", prompt)
    entry = server.run(prompt, timeout=240)
    assert succeeded(entry), json.dumps(execution_error(entry), indent=1)[:3000]
    stats = {s["key"]: s for s in server.outputs(entry)[probe]["midms_stats"]}
    assert stats["latent"]["shape"] == [1, 4, side // 8, side // 8] and stats["latent"]["finite"]
    assert stats["latent"]["std"] > 0
    # (a 2048-wide context with a pooled output only runs on an SDXL-family U-Net)


@pytest.mark.parametrize("origin", ["random", "trained"])
def test_learned_networks_from_models_midms_drive_the_sampler(origin, server, host, tiny_ckpts, tmp_path):
    """Networks in models/midms load through the loader node under the host's model management
    and drive the first warp and every re-warp of the SamplerCustom workflow in place of the
    edge matcher: seeded random ones (SD latents), and ones the trainer made
    (``scripts/train_midms.py --checkpoint``: 3 steps on the tiny SD1.5 checkpoint's VAE latents,
    in the host's python) as they are, without conversion."""
    import subprocess
    import sys

    import midms_core as mc

    path = tmp_path / f"midms_{origin}_networks.safetensors"
    if origin == "random":
        config = mc.CorrespondenceConfig(latent_channels=4, label_channels=3, width=16, encoder_width=4, spade_hidden=8)
        mc.save_networks(path, mc.init_networks(config, seed=0))
    else:
        import numpy as np
        import skimage.data
        from PIL import Image

        photos = tmp_path / "photos"
        photos.mkdir()
        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(photos / f"{name}.png")
        done = subprocess.run(
            [host.python, str(REPO / "scripts" / "train_midms.py"), "--checkpoint", tiny_ckpts["sd15"]["path"],
             "--images", str(photos), "--out", str(path), "--size", "64", "--steps", "3", "--warmup", "2",
             "--batch", "2", "--width", "16", "--encoder-width", "4"],
            capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "COMFYUI_PATH": host.comfyui})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "4 channels" in done.stderr
        assert mc.load_networks(path).config.latent_channels == 4
    name = server.add_model("midms", path)
    prompt, probe, side = runnable_prompt("midms_sampler_custom_sd15", _read(_api_path("midms_sampler_custom_sd15")))
    edge = _node_id(prompt, "MIDMsEdgeMatcher")
    prompt["950"] = {"class_type": "MIDMsLearnedMatcherLoader", "inputs": {"networks_name": name}}
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == edge:
                node["inputs"][key] = ["950", value[1]]
    del prompt[edge]
    entry = server.run(prompt, timeout=240)
    assert succeeded(entry)
    stats = {st["key"]: st for st in server.outputs(entry)[probe]["midms_stats"]}
    assert stats["latent"]["shape"] == [1, 4, side // 8, side // 8] and stats["latent"]["finite"]
    assert stats["image"]["finite"]


def test_template_browser_lists_ui_workflows_only(server, host):
    templates = server.workflow_templates()
    if templates is None:
        assert host.is_2024_snapshot, "a current host must serve /workflow_templates"
        pytest.skip("the 2024 host has no template browser (workflows load by drag and drop)")
    # custom_nodes/*/{example_workflows,example,examples,workflow,workflows}/*.json, not recursive
    assert sorted(templates.get(PACK_NAME, [])) == sorted(NAMES), templates
    for name in NAMES:
        status, body = server.request("GET", f"/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert status == 200 and body == _read(WORKFLOW_DIR / f"{name}.json"), name
        if (WORKFLOW_DIR / f"{name}.jpg").is_file():  # the browser's thumbnail, <name>.jpg
            status, _ = server.request("GET", f"/api/workflow_templates/{PACK_NAME}/{name}.jpg")
            assert status == 200, name


# --------------------------------------------------------------------------------------------
# broken graphs
# --------------------------------------------------------------------------------------------
def _matching_prompt(edge_blur: float = 2.0) -> dict:
    """Correspondence only (no sampling), from the SD1.5 workflow's nodes: cheap, and
    ``edge_blur`` changes it so the host does not answer from its cache."""
    base = _read(_api_path("midms_edge_to_photo_sd15"))
    keep = {nid: n for nid, n in base.items() if n["class_type"] in (
        "CheckpointLoaderSimple", "LoadImage", "MIDMsExemplarEncode", "MIDMsEdgeMatcher",
        "MIDMsRewarpSettings", "MIDMsCorrespondence", "MaskToImage", "PreviewImage")}
    for n in keep.values():
        if n["class_type"] == "MIDMsEdgeMatcher":
            n["inputs"]["edge_blur"] = edge_blur
    return keep


def _node_id(prompt: dict, class_type: str) -> str:
    ids = [nid for nid, n in prompt.items() if n["class_type"] == class_type]
    assert len(ids) == 1, (class_type, ids)
    return ids[0]


def _assert_still_serving(server, edge_blur: float):
    entry = server.run(_matching_prompt(edge_blur), timeout=120)
    assert succeeded(entry)
    files = server.output_files(entry)
    assert len(files) == 3 and all(_png_size(f) == (TEST_SIZE, TEST_SIZE) for f in files)


def _execution_failure(server, prompt: dict) -> dict:
    pid = server.queue(prompt)
    assert isinstance(pid, str), f"rejected before running: {pid}"
    entry = server.wait(pid, timeout=120)
    assert not succeeded(entry)
    err = execution_error(entry)
    assert err is not None, entry.get("status")
    return err


def test_broken_graphs_name_node_and_input(server):
    # 1. two condition images, three exemplars
    p = _matching_prompt(2.0)
    enc = _node_id(p, "MIDMsExemplarEncode")
    p["900"] = {"class_type": "RepeatImageBatch", "inputs": {"image": p[enc]["inputs"]["condition"], "amount": 2}}
    p["901"] = {"class_type": "RepeatImageBatch", "inputs": {"image": p[enc]["inputs"]["exemplar"], "amount": 3}}
    p[enc]["inputs"].update(condition=["900", 0], exemplar=["901", 0])
    err = _execution_failure(server, p)
    assert err["node_id"] == enc and err["node_type"] == "MIDMsExemplarEncode"
    msg = err["exception_message"]
    assert "MIDMs Exemplar Encode" in msg and "'condition' has 2" in msg and "'exemplar' has 3" in msg, msg
    _assert_still_serving(server, 2.25)

    # 2. a learned-networks file that is not in models/midms: rejected at validation (HTTP 400)
    p = _matching_prompt(2.0)
    p["902"] = {"class_type": "MIDMsLearnedMatcherLoader", "inputs": {"networks_name": "no_such_midms_networks.safetensors"}}
    p[_node_id(p, "MIDMsCorrespondence")]["inputs"]["matcher"] = ["902", 0]
    del p[_node_id(p, "MIDMsEdgeMatcher")]
    err = server.queue(p)
    assert isinstance(err, dict) and err["http_status"] == 400, err
    errors = err["node_errors"]["902"]["errors"]
    # the node's own validation names the file and where it must go (not a bare "not in list")
    assert any(e["extra_info"]["input_name"] == "networks_name" and "no_such_midms_networks.safetensors" in e["details"]
               and "MIDMs Learned Matcher Loader" in e["details"] and "midms" in e["details"] for e in errors), errors
    assert err["node_errors"]["902"]["class_type"] == "MIDMsLearnedMatcherLoader"
    _assert_still_serving(server, 2.5)

    # 3. a condition image smaller than the VAE's 8 px cell
    p = _matching_prompt(2.0)
    enc = _node_id(p, "MIDMsExemplarEncode")
    p[p[enc]["inputs"]["condition"][0]]["inputs"]["image"] = "midms_tiny_6px.png"
    err = _execution_failure(server, p)
    assert err["node_type"] == "MIDMsExemplarEncode"
    msg = err["exception_message"]
    assert "MIDMs Exemplar Encode" in msg and "at least 8 x 8" in msg and "(6, 6)" in msg, msg
    _assert_still_serving(server, 2.75)

    # 4. unparsable rewarp_steps
    p = _matching_prompt(2.0)
    rs = _node_id(p, "MIDMsRewarpSettings")
    p[rs]["inputs"]["rewarp_steps"] = "abc"
    err = _execution_failure(server, p)
    assert err["node_id"] == rs and err["node_type"] == "MIDMsRewarpSettings"
    msg = err["exception_message"]
    assert "MIDMs Rewarp Settings" in msg and "'rewarp_steps'" in msg and "'abc'" in msg, msg
    _assert_still_serving(server, 3.0)
