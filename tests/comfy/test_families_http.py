"""Every image model family the newest host loads, through one MIDMs graph over HTTP.

The shipped SamplerCustomAdvanced graph (``midms_sampler_custom_advanced_sd15``: MIDMs Exemplar
Encode, Edge Matcher, Rewarp Settings, Correspondence with its three previews, the interleaved
SAMPLER under the host's SamplerCustomAdvanced with CFGGuider / BasicScheduler / RandomNoise,
VAE Decode, Save Image) runs on a tiny seeded model of each family, twice: as shipped (re-warp on
every step but the last) and with ``rewarp_steps`` "none". Each run must give finite images of
the condition's size, a final latent in the shape the family's own graphs carry, and the two
runs must differ (the re-warp was applied).

How each family is loaded (what stands in for the real files, which cannot be tiny: the host's
detection fixes Flux's, Flux.2's and Z-Image's widths):

* SD1.5, SDXL, SD3: tiny checkpoint FILES the host detects (``harness.tiny_models``), through
  the graph's own CheckpointLoaderSimple;
* Flux.1: ``MIDMSTestTinyFlux`` (the host's ``supported_models.Flux``, depth 1) with a
  16-channel TAESD file;
* Flux.2, Z-Image, Qwen-Image, Chroma: ``MIDMSTestTinyCheckpoint`` (the host's own
  ``supported_models`` classes with narrow configs, ``harness.inprocess_models.build_new_family``)
  with a VAE of the family's latent format built in the server (Flux.2's VAE: 128 channels at 16
  px; a narrow Wan 2.1 video VAE for Qwen-Image: (B, 16, 1, h, w) latents; a 16-channel TAESD).

Text: no text encoder is built; every CLIPTextEncode is replaced (same id) by
``MIDMSTestZeroConditioning`` of the family's text width (and pooled width where the family has
one), so positive and negative are equal and CFG is inert: the graph's maths is what differs.

The 2024 host has none of the DiT families: the test runs on current hosts (CI: 0.3.75), where
the host lacks a family's class it skips with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from harness.host import REPO, ComfyServer, execution_error, require_host, succeeded
from harness.tiny_models import (SD3_CONTEXT_WIDTH, SD3_POOLED_WIDTH, write_tiny_sd15_checkpoint,
                                 write_tiny_sd3_checkpoint, write_tiny_sdxl_checkpoint, write_tiny_vae16)

GRAPH = REPO / "workflows" / "api" / "midms_sampler_custom_advanced_sd15.api.json"
SIDE = 128                 # condition / exemplar side in pixels
CONDITION, EXEMPLAR = "midms_condition_edges.png", "midms_exemplar.png"
TINY_VAE16 = "midms_tiny_vae16.safetensors"
CKPT = {"sd15": "midms_tiny_sd15.safetensors", "sdxl": "midms_tiny_sdxl.safetensors",
        "sd3": "midms_tiny_sd3.safetensors"}
# family -> (host supported_models class, text width, pooled width (-1: None, as the 2025 families'
# text encoders give), latent channels, pixels per cell)
FAMILIES = {
    "sd15": ("SD15", 768, 0, 4, 8),
    "sdxl": ("SDXL", 2048, 1280, 4, 8),
    "sd3": ("SD3", SD3_CONTEXT_WIDTH, SD3_POOLED_WIDTH, 16, 8),
    "flux": ("Flux", 64, 32, 16, 8),
    "flux2": ("Flux2", 64, -1, 128, 16),
    "zimage": ("ZImage", 64, -1, 16, 8),
    "qwen_image": ("QwenImage", 64, -1, 16, 8),
    "chroma": ("Chroma", 64, -1, 16, 8),
}
VIDEO_LATENT = {"qwen_image"}  # latents (B, C, 1, h, w): what Qwen-Image's VAE Encode and samplers give


@pytest.fixture(scope="module")
def host():
    h = require_host()
    if h.is_2024_snapshot:
        pytest.skip("the 2024 host predates the DiT families (this runs on current hosts)")
    return h


@pytest.fixture(scope="module")
def server(host, tmp_path_factory):
    d = tmp_path_factory.mktemp("family_ckpts")
    spec = importlib.util.spec_from_file_location("midms_make_example_inputs",
                                                  REPO / "workflows" / "make_example_inputs.py")
    inputs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inputs)
    with ComfyServer(host) as srv:
        srv.add_model("checkpoints", write_tiny_sd15_checkpoint(d / CKPT["sd15"], seed=0)["path"], name=CKPT["sd15"])
        srv.add_model("checkpoints", write_tiny_sdxl_checkpoint(d / CKPT["sdxl"], seed=0)["path"], name=CKPT["sdxl"])
        srv.add_model("checkpoints", write_tiny_sd3_checkpoint(d / CKPT["sd3"], seed=0)["path"], name=CKPT["sd3"])
        srv.add_model("vae", write_tiny_vae16(d / TINY_VAE16, seed=0)["path"], name=TINY_VAE16)
        condition, exemplar = inputs.make_inputs(SIDE)
        condition.save(srv.input_dir / CONDITION)
        exemplar.save(srv.input_dir / EXEMPLAR)
        yield srv


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def family_prompt(family: str, rewarp_steps: str) -> tuple[dict, str]:
    """The shipped graph on ``family``'s tiny model (module docstring), with ``rewarp_steps``
    set and a MIDMSTestSaveTensor on the final latent and image; returns (prompt, its id)."""
    prompt = json.loads(GRAPH.read_text())
    _, width, pooled, _, _ = FAMILIES[family]
    for node in prompt.values():
        kind = node["class_type"]
        if kind == "CheckpointLoaderSimple":
            if family in CKPT:
                node["inputs"] = {"ckpt_name": CKPT[family]}
            elif family == "flux":
                node.update(class_type="MIDMSTestTinyFlux", inputs={"vae_name": TINY_VAE16, "seed": 0})
            else:
                node.update(class_type="MIDMSTestTinyCheckpoint", inputs={"family": family})
        elif kind == "CLIPTextEncode":
            node.update(class_type="MIDMSTestZeroConditioning",
                        inputs={"batch_size": 1, "tokens": 77, "width": width, "pooled_width": pooled})
        elif kind == "MIDMsRewarpSettings":
            node["inputs"]["rewarp_steps"] = rewarp_steps
        elif kind == "LoadImage":
            assert node["inputs"]["image"] in (CONDITION, EXEMPLAR), node
        elif kind == "SaveImage":
            node["inputs"]["filename_prefix"] = f"midms_family/{family}"
    decode = next(k for k, n in prompt.items() if n["class_type"] == "VAEDecode")
    probe = str(max(int(k) for k in prompt) + 100)
    prompt[probe] = {"class_type": "MIDMSTestSaveTensor", "inputs": {
        "name": f"{family}_{rewarp_steps or 'every'}", "latent": prompt[decode]["inputs"]["samples"],
        "image": [decode, 0]}}
    return prompt, probe


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_a_midms_graph_with_rewarp(family, server, object_info, host):
    model_class = FAMILIES[family][0]
    if model_class not in host.model_classes():
        pytest.skip(f"this host ({host.comfyui}) has no comfy.supported_models.{model_class}")
    _, _, _, channels, cell = FAMILIES[family]
    runs = {}
    for rewarp in ("", "none"):
        prompt, probe = family_prompt(family, rewarp)
        t0 = time.monotonic()
        entry = server.run(prompt, timeout=600, check=False)
        assert succeeded(entry), json.dumps(execution_error(entry), indent=1)[:4000]
        outputs = server.outputs(entry)
        stats = {s["key"]: s for s in outputs[probe]["midms_stats"]}
        cells = SIDE // cell
        want = [1, channels, 1, cells, cells] if family in VIDEO_LATENT else [1, channels, cells, cells]
        assert stats["latent"]["shape"] == want, (family, stats["latent"]["shape"], want)
        assert stats["latent"]["finite"] and stats["latent"]["std"] > 0, stats["latent"]
        assert stats["image"]["shape"] == [1, SIDE, SIDE, 3] and stats["image"]["finite"], stats["image"]
        assert 0.0 <= stats["image"]["min"] <= stats["image"]["max"] <= 1.0
        # the three Correspondence previews and the saved image: one PNG each
        images = [nid for nid, ui in outputs.items() if "images" in ui]
        assert len(images) == 4, sorted(outputs)
        runs[rewarp] = stats
        print(f"{family}: rewarp_steps={rewarp!r}: {time.monotonic() - t0:.1f} s, latent {stats['latent']['shape']}")
    assert runs[""]["latent"]["sha256"] != runs["none"]["latent"]["sha256"], \
        f"{family}: re-warping changed nothing: the same final latent with rewarp_steps '' and 'none'"
    assert runs[""]["image"]["sha256"] != runs["none"]["image"]["sha256"]

