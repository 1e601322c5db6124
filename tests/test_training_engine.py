"""The trainer (midms_core.training, its command scripts/train_midms.py): one process and two under torchrun,
files, resume, bad input.

The torchrun test runs in float64: in float32 a parameter whose gradient is zero in exact
arithmetic (a conv bias right before an instance norm) gets rounding noise of either sign, which
AdamW's first steps turn into a full +-lr move, so two equally valid float32 runs differ there
by up to lr per step. In float64 that noise stays below AdamW's eps and the runs agree closely.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from midms_core.networks.files import load_networks
from midms_core.networks.model import CorrespondenceConfig
from midms_core.training.data import DataConfig
from midms_core.training.engine import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "train_worker.py"
TINY = CorrespondenceConfig(latent_channels=3, label_channels=3, width=16, encoder_width=8, spade_hidden=16)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "cat", "horse")


def _load_command():
    spec = importlib.util.spec_from_file_location("train_midms", REPO / "scripts" / "train_midms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


main = _load_command().main  # the command line, without --checkpoint: the stand-in latents


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("train_photos")
    for name in PHOTOS:
        a = np.asarray(getattr(skimage.data, name)())
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        Image.fromarray(a).save(root / f"{name}.png")
    return root


def _worker(photos, out, batch, steps, warmup, processes):
    cmd = [sys.executable, str(WORKER), str(photos), str(out), str(batch), str(steps), str(warmup), "float64"]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
def test_two_processes_under_torchrun_equal_one_process_on_the_global_batch(photos, tmp_path):
    """2 processes x batch 1 against 1 process x batch 2, 3 steps across the end of the warm-up:
    the replicas end bit-identical, and equal the one-process run within float64 tolerance."""
    _worker(photos, tmp_path / "two", batch=1, steps=3, warmup=1, processes=2)
    _worker(photos, tmp_path / "one", batch=2, steps=3, warmup=1, processes=1)
    rank0, rank1 = load_file(tmp_path / "two" / "rank0.safetensors"), load_file(tmp_path / "two" / "rank1.safetensors")
    single = load_file(tmp_path / "one" / "rank0.safetensors")
    assert rank0.keys() == rank1.keys() == single.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-7, atol=1e-9, msg=key)
    # the log of the two-process run shows the global batch's losses: those of the one-process run
    two_log = [json.loads(line) for line in (tmp_path / "two" / "nets.jsonl").read_text().splitlines()]
    one_log = [json.loads(line) for line in (tmp_path / "one" / "nets.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two_log] == [r["step"] for r in one_log] == [1, 2, 3]
    for two, one in zip(two_log, one_log):
        assert two.keys() == one.keys()
        for key in set(one) - {"seconds"}:
            assert two[key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), (two["step"], key)
    # training moved the weights (the comparison is not between two untouched inits)
    from midms_core.networks.model import init_networks

    fresh = init_networks(TINY, seed=3, dtype=torch.float64).state_dict()
    assert max(float((single[k] - fresh[k]).abs().max()) for k in fresh) > 1e-4


def test_training_lowers_the_loss_and_writes_its_files(photos, tmp_path):
    """40 warm-up steps: the loss on fixed samples (evaluate: the same pairs before and after)
    falls clearly; the networks file loads as the Learned Matcher Loader reads it; the log,
    its plot and the resume state are written, nothing half-written is left."""
    from midms_core.networks.model import init_networks
    from midms_core.training.data import TrainingPairs
    from midms_core.training.step import evaluate

    out = tmp_path / "models" / "midms" / "mine.safetensors"
    data = DataConfig(size=64, seed=1, self_exemplar=0.5)
    result = train(photos, out, data, TINY, TrainConfig(steps=40, warmup=40, batch=4, lr=2e-3, seed=1), progress=False)
    assert result["step"] == 40
    records = [json.loads(line) for line in out.with_name("mine.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 41))
    nets = load_networks(out)  # what MIDMs Learned Matcher Loader reads
    assert nets.config == TINY
    fixed = TrainingPairs(photos, data)
    before = evaluate(init_networks(TINY, seed=1), fixed, range(len(fixed)))
    after = evaluate(nets, fixed, range(len(fixed)))
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["flow"] < before["flow"] and after["domain"] < before["domain"], (before, after)
    state = torch.load(out.with_name("mine.safetensors.resume.pt"), weights_only=True)
    assert state["step"] == 40 and "optimizer" in state
    from PIL import Image

    with Image.open(out.with_name("mine.png")) as im:
        assert im.size[0] > 400
    assert sorted(p.name for p in out.parent.iterdir()) == [  # nothing half-written left beside them
        "mine.jsonl", "mine.png", "mine.safetensors", "mine.safetensors.resume.pt"]


def test_resume_continues_as_if_never_stopped(photos, tmp_path):
    cfg = dict(warmup=2, batch=2, lr=1e-3, seed=2, dtype="float64")
    data = DataConfig(size=64, seed=2)
    straight = train(photos, tmp_path / "a.safetensors", data, TINY, TrainConfig(steps=5, **cfg), progress=False)
    train(photos, tmp_path / "b.safetensors", data, TINY, TrainConfig(steps=3, **cfg), progress=False)
    resumed = train(photos, tmp_path / "b.safetensors", data, TINY, TrainConfig(steps=5, **cfg), resume=True,
                    progress=False)
    assert resumed["step"] == 5
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12, msg=key)
    log = [json.loads(line)["step"] for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5]


def test_resume_refuses_other_batches_takes_the_new_lr_and_repairs_its_log(photos, tmp_path):
    out = tmp_path / "r.safetensors"
    data = DataConfig(size=64, seed=4)
    train(photos, out, data, TINY, TrainConfig(steps=2, warmup=1, batch=2, seed=4), progress=False)
    with pytest.raises(ValueError, match="other data or batch options"):
        train(photos, out, data, TINY, TrainConfig(steps=3, warmup=1, batch=4, seed=4), resume=True, progress=False)
    log = out.with_name("r.jsonl")
    log.write_text(log.read_text() + '{"step": 9, "loss": 1.0}\n{"step": 3, "lo')  # a crash mid-line, a stale step
    result = train(photos, out, data, TINY, TrainConfig(steps=3, warmup=1, batch=2, seed=4, lr=5e-4), resume=True,
                   progress=False)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    state = torch.load(out.with_name("r.safetensors.resume.pt"), weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 5e-4 and result["step"] == 3


def test_bad_input_is_refused_before_any_work(photos, tmp_path, capsys):
    out = tmp_path / "o" / "x.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--images", str(empty), "--out", str(out)]) == 2
    assert "no images in" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes((photos / "coffee.png").read_bytes())
    (broken / "c.png").write_bytes(b"\x89PNG garbage")
    assert main(["--images", str(broken), "--out", str(out), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "c.png" in err
    assert not out.exists() and not out.with_name("x.jsonl").exists()
    assert main(["--images", str(photos), "--out", str(tmp_path / "x.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    # a resume file of other networks
    train(photos, out, DataConfig(size=64), TINY, TrainConfig(steps=1, warmup=1, batch=2), progress=False)
    other = CorrespondenceConfig(latent_channels=3, label_channels=3, width=32, encoder_width=8, spade_hidden=16)
    with pytest.raises(ValueError, match="resume file .* is for networks"):
        train(photos, out, DataConfig(size=64), other, TrainConfig(steps=2, warmup=1, batch=2), resume=True,
              progress=False)
    with pytest.raises(ValueError, match="no batch of 9"):
        train(photos, tmp_path / "y.safetensors", DataConfig(size=64), TINY, TrainConfig(steps=1, batch=9),
              progress=False)


def test_vgg_losses_join_when_weights_are_given(photos, tmp_path, capsys):
    """With a VGG-19 file (random weights here, CoCosNet layout) the feature and perceptual
    terms run from the first step and the contextual one after the warm-up; without it the
    trainer says they are off; a wrong file is refused before any work."""
    from safetensors.torch import save_file as save

    from midms_core.training.vgg import vgg19_shapes

    g = torch.Generator().manual_seed(0)
    save({k: 0.05 * torch.randn(s, generator=g) for k, s in vgg19_shapes("cocosnet").items()},
         str(tmp_path / "vgg.safetensors"))
    out = tmp_path / "v.safetensors"
    train(photos, out, DataConfig(size=64, seed=0), TINY, TrainConfig(steps=2, warmup=1, batch=2), progress=False,
          vgg=tmp_path / "vgg.safetensors")
    records = [json.loads(line) for line in out.with_name("v.jsonl").read_text().splitlines()]
    assert {"feature", "perceptual"} <= set(records[0]) and "contextual" not in records[0]
    assert "contextual" in records[1] and all(math.isfinite(records[1][k]) for k in ("feature", "perceptual", "contextual"))
    capsys.readouterr()
    train(photos, tmp_path / "n.safetensors", DataConfig(size=64), TINY, TrainConfig(steps=1, warmup=1, batch=2),
          progress=False)
    assert "losses are off" in capsys.readouterr().err
    save({"weight": torch.zeros(1)}, str(tmp_path / "notvgg.safetensors"))
    with pytest.raises(ValueError, match="not VGG-19"):
        train(photos, tmp_path / "w.safetensors", DataConfig(size=64), TINY, TrainConfig(steps=1, batch=2),
              progress=False, vgg=tmp_path / "notvgg.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
