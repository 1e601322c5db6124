"""What the host's UI sees of the pack besides the nodes: the menu category and the pack's own
socket types, with the containers that flow through them (defined in ``host_adapters.match``,
where they are used)."""

from __future__ import annotations

from ..host_adapters.match import MIDMsContext, MIDMsMatch, MIDMsSettings

CATEGORY = "MIDMs"

CONTEXT = "MIDMS_CONTEXT"    # a MIDMsContext
MATCHER = "MIDMS_MATCHER"    # a midms_core Matcher (a host_adapters HostMatcher where it has host hooks)
SETTINGS = "MIDMS_SETTINGS"  # a MIDMsSettings
MATCH = "MIDMS_MATCH"        # a MIDMsMatch
ANCHORS = "MIDMS_ANCHORS"    # a midms_core.anchors.binding.AnchorSpec
POSE_KEYPOINT = "POSE_KEYPOINT"  # comfyui_controlnet_aux / core SDPose keypoints: a list of frame dicts

__all__ = ["ANCHORS", "CATEGORY", "CONTEXT", "POSE_KEYPOINT", "MATCH", "MATCHER", "SETTINGS", "MIDMsContext", "MIDMsMatch", "MIDMsSettings"]
