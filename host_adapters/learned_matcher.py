"""The paper's learned correspondence networks under the host's model management, found in the
host's ``models/midms`` folder (registered by the pack's ``__init__``)."""

from __future__ import annotations

import os
from typing import Optional

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths

from ..midms_core import LearnedMatcher, load_networks
from .errors import NodeInputError
from .host_matcher import HostMatcher

MODEL_FOLDER = "midms"  # the host's folder kind for converted networks (.safetensors)


class HostLearnedMatcher(LearnedMatcher, HostMatcher):
    """The learned networks under the host's model management (loaded before each use)."""

    def __init__(self, nets) -> None:
        super().__init__(nets)
        self.patcher = comfy.model_patcher.ModelPatcher(nets, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    def prepare_for_host(self) -> None:
        mm.load_models_gpu([self.patcher])


def networks_files() -> list[str]:
    """The converted networks files the host lists in its ``midms`` model folders."""
    return folder_paths.get_filename_list(MODEL_FOLDER)


def missing_networks(networks_name: str, where: str) -> Optional[str]:
    """Where the file must go when the host does not know ``networks_name`` (for the node's
    VALIDATE_INPUTS, instead of the host's bare "value not in list"); None when it does."""
    if folder_paths.get_full_path(MODEL_FOLDER, networks_name) is None:
        return (f"{where}: {networks_name!r} is not in {folder_paths.get_folder_paths(MODEL_FOLDER)}; "
                "put the converted .safetensors file there (scripts/convert_official_checkpoint.py) and refresh")
    return None


def load_learned_matcher(networks_name: str, where: str) -> HostLearnedMatcher:
    """The networks file ``networks_name`` of the ``midms`` folders, loaded on the CPU (the host's
    model management moves it); a missing or unreadable file is a NodeInputError naming ``where``,
    with ``load_networks``' reason stripped of its own prefix and the file's name."""
    path = folder_paths.get_full_path(MODEL_FOLDER, networks_name)
    if path is None or not os.path.isfile(path):
        folders = folder_paths.get_folder_paths(MODEL_FOLDER)
        raise NodeInputError(
            f"{where}: 'networks_name' {networks_name!r} was not found in {folders}; put the converted "
            ".safetensors file there and refresh"
        )
    try:
        nets = load_networks(path, map_location="cpu")
    except ValueError as err:
        reason = str(err).removeprefix("load_networks: ").removeprefix(f"{os.path.basename(path)!r} ")
        raise NodeInputError(f"{where}: 'networks_name' {networks_name!r} {reason}") from None
    return HostLearnedMatcher(nets)
