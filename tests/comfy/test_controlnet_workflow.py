"""The shipped MIDMs + ControlNet workflow (``workflows/api/midms_controlnet_sd15.api.json``)
through a REAL ComfyUI server, with a tiny seeded SD1.5 ControlNet
(``tiny_models.write_tiny_sd15_controlnet``: random weights, zero convolutions small but not
zero) loaded by the host's own ControlNetLoader under the name the workflow uses.

One test, four prompts on one server (the host caches the shared upstream nodes, so each later
prompt only re-runs Apply ControlNet, the MIDMs sampler and the decode):

1. the workflow as shipped (with test_workflows' documented substitutions: 128 px inputs and a
   MIDMSTestSaveTensor probe on the final latent and image);
2. the same with ControlNet strength 0 (Apply ControlNet then passes the prompts through);
3. the same graph without the ControlNet nodes (prompts straight into the MIDMs sampler);
4. the shipped strength with the hint inverted (black edges on white).

It checks that the ControlNet takes part: (1) differs from (2) in the latent and the image,
(2) equals (3) (same seed, so any difference between (1) and (2) comes from the ControlNet), and
(4) differs from (1) (the hint image drives it). No mocks: real loader, real sampling.

Run: .venv-comfy/bin/python -m pytest tests/comfy/test_controlnet_workflow.py -q
"""

from __future__ import annotations

import copy
import time

import pytest

from harness.host import ComfyServer, execution_error, succeeded
from harness.tiny_models import write_tiny_sd15_checkpoint, write_tiny_sd15_controlnet
from tests.comfy.test_workflows import (CONDITION_FILE, EXEMPLAR_FILE, TEST_SIZE,
                                        _api_path, _controlnet_names, _load_inputs_module,
                                        _node_id, _read, host, runnable_prompt)  # noqa: F401

NAME = "midms_controlnet_sd15"
CONTROLNET_LOAD_PROBLEMS = ("missing controlnet keys", "leftover keys",
                            "does not contain controlnet", "unet missing", "Missing VAE keys")


@pytest.fixture(scope="module")
def cn_server(host, tmp_path_factory):
    """A server with the tiny SD1.5 checkpoint (with CLIP, so CLIPTextEncode runs as shipped)
    and the tiny ControlNet under the workflow's names, and the 128 px example inputs."""
    d = tmp_path_factory.mktemp("cn_models")
    shipped = _read(_api_path(NAME))
    ckpt = write_tiny_sd15_checkpoint(d / "tiny_sd15_clip.safetensors", seed=0, with_clip=True)["path"]
    controlnet = write_tiny_sd15_controlnet(d / "tiny_sd15_controlnet.safetensors", seed=0)["path"]
    with ComfyServer(host) as srv:
        for node in shipped.values():
            if node["class_type"] == "CheckpointLoaderSimple":
                srv.add_model("checkpoints", ckpt, name=node["inputs"]["ckpt_name"])
        names = _controlnet_names(shipped)
        assert names, "the workflow loads no ControlNet"
        for name in names:
            srv.add_model("controlnet", controlnet, name=name)
        condition, exemplar = _load_inputs_module().make_inputs(TEST_SIZE)
        condition.save(srv.input_dir / CONDITION_FILE)
        exemplar.save(srv.input_dir / EXEMPLAR_FILE)
        yield srv


def _run(server: ComfyServer, prompt: dict, probe: str, tag: str):
    """Run ``prompt`` with its probe saving under ``tag``; returns (latent, image) tensors."""
    from safetensors.torch import load_file

    prompt = copy.deepcopy(prompt)
    prompt[probe]["inputs"]["name"] = f"{NAME}_{tag}"
    entry = server.run(prompt, timeout=240, check=False)
    assert succeeded(entry), (tag, execution_error(entry))
    ui = server.outputs(entry)[probe]
    stats = {s["key"]: s for s in ui["midms_stats"]}
    assert stats["latent"]["finite"] and stats["image"]["finite"], (tag, stats)
    tensors = load_file(ui["midms_file"][0])
    return tensors["latent"], tensors["image"]


def test_controlnet_steers_the_midms_sampler(cn_server):
    shipped = _read(_api_path(NAME))
    prompt, probe, side = runnable_prompt(NAME, shipped)
    apply_id = _node_id(prompt, "ControlNetApplyAdvanced")
    sampler_id = _node_id(prompt, "MIDMsSampler")
    apply = prompt[apply_id]["inputs"]
    strength = apply["strength"]
    assert strength > 0
    # the graph as shipped: ControlNet hint = the condition image the MIDMs encoder gets;
    # Apply ControlNet feeds both prompts of the MIDMs sampler
    encode = prompt[_node_id(prompt, "MIDMsExemplarEncode")]["inputs"]
    assert apply["image"] == encode["condition"]
    assert prompt[sampler_id]["inputs"]["positive"] == [apply_id, 0]
    assert prompt[sampler_id]["inputs"]["negative"] == [apply_id, 1]
    assert prompt[apply["control_net"][0]]["class_type"] == "ControlNetLoader"

    t0 = time.monotonic()
    # 1. as shipped
    lat_cn, img_cn = _run(cn_server, prompt, probe, "shipped")
    assert list(lat_cn.shape) == [1, 4, side // 8, side // 8] and float(lat_cn.std()) > 0
    assert list(img_cn.shape) == [1, side, side, 3]
    log = cn_server.log()
    for problem in CONTROLNET_LOAD_PROBLEMS:
        assert problem not in log, problem

    # 2. strength 0
    zero = copy.deepcopy(prompt)
    zero[apply_id]["inputs"]["strength"] = 0.0
    lat_zero, img_zero = _run(cn_server, zero, probe, "strength0")

    # 3. no ControlNet nodes at all
    plain = copy.deepcopy(prompt)
    plain[sampler_id]["inputs"].update(positive=apply["positive"], negative=apply["negative"])
    del plain[apply_id], plain[apply["control_net"][0]]
    lat_plain, img_plain = _run(cn_server, plain, probe, "plain")

    # 4. the shipped strength, the hint inverted
    inverted = copy.deepcopy(prompt)
    hint = str(max(int(k) for k in inverted) + 1)
    inverted[hint] = {"class_type": "ImageInvert", "inputs": {"image": apply["image"]}}
    inverted[apply_id]["inputs"]["image"] = [hint, 0]
    lat_inv, img_inv = _run(cn_server, inverted, probe, "hint_inverted")
    seconds = time.monotonic() - t0

    # strength 0 is the plain MIDMs result: same seed, same sampling, bit for bit (CPU)
    assert (lat_zero - lat_plain).abs().max().item() <= 1e-6
    assert (img_zero - img_plain).abs().max().item() <= 1e-6

    def rel(a, b):  # mean absolute difference relative to the latent's spread
        return ((a - b).abs().mean() / b.std()).item()

    # the ControlNet changes what the MIDMs sampler makes: latent and decoded image
    assert rel(lat_cn, lat_zero) > 1e-2, rel(lat_cn, lat_zero)
    assert (img_cn - img_zero).abs().mean().item() > 1e-3
    # ... and it follows its hint: another hint image, another result
    assert rel(lat_inv, lat_cn) > 1e-4, rel(lat_inv, lat_cn)
    print(f"{NAME}: 4 runs in {seconds:.1f} s; latent change vs strength 0: {rel(lat_cn, lat_zero):.3g}; "
          f"vs inverted hint: {rel(lat_inv, lat_cn):.3g}")
