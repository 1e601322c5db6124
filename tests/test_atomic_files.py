"""midms_core.atomic_files: the one way the pack writes a file (networks, converter output, the
trainer's resume state, log and plot)."""

from __future__ import annotations

import os

import pytest
import torch

from midms_core.atomic_files import atomic_write


def test_success_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "nets.safetensors"
    target.write_text("old")
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists() and not tmp.name.endswith(".safetensors")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["nets.safetensors"]


def test_a_failure_inside_leaves_the_old_file_untouched_and_no_temp_file(tmp_path):
    target = tmp_path / "nets.safetensors"
    target.write_bytes(b"old bytes")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise RuntimeError("half-way")
    assert target.read_bytes() == b"old bytes"
    assert os.listdir(tmp_path) == ["nets.safetensors"]
    with pytest.raises(RuntimeError):  # and a failure before anything was written
        with atomic_write(tmp_path / "absent.png"):
            raise RuntimeError
    assert os.listdir(tmp_path) == ["nets.safetensors"]


def test_no_overwrite_refuses_an_existing_file(tmp_path):
    target = tmp_path / "out.safetensors"
    with atomic_write(target, overwrite=False) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_write(target, overwrite=False) as tmp:
            tmp.write_text("second")
    assert target.read_text() == "first" and os.listdir(tmp_path) == ["out.safetensors"]


def test_writers_give_the_bytes_of_a_direct_write(tmp_path):
    """torch.save names its archive after the file: the temporary name must not change it."""
    state = {"step": 3, "w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "direct.partial")  # as the trainer wrote before: <name>.partial
    (tmp_path / "atomic").mkdir()
    with atomic_write(tmp_path / "atomic" / "direct") as tmp:
        torch.save(state, tmp)
    assert (tmp_path / "atomic" / "direct").read_bytes() == (tmp_path / "direct.partial").read_bytes()
