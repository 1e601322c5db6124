"""The paper's learned correspondence networks under the host's model management."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher

from ..midms_core import LearnedMatcher
from .host_matcher import HostMatcher


class HostLearnedMatcher(LearnedMatcher, HostMatcher):
    """The learned networks under the host's model management (loaded before each use)."""

    def __init__(self, nets) -> None:
        super().__init__(nets)
        self.patcher = comfy.model_patcher.ModelPatcher(nets, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())

    def prepare_for_host(self) -> None:
        mm.load_models_gpu([self.patcher])
