"""Semantic anchors: keypoints from the graph (pose / face detectors, point editors, OpenPose-JSON
files) that set the correspondence's layout (reading, placing and previewing them:
``host_adapters.anchors``; the field: ``midms_core.anchors.field``)."""

from __future__ import annotations

import os

from ..host_adapters.anchors import (
    check_point_counts,
    input_directory,
    keypoint_files,
    load_input_keypoints,
    preview_context,
    read_side,
)
from ..host_adapters.errors import NodeInputError
from ..host_adapters.node_names import ANCHORS, ANCHORS_PREVIEW, LOAD_KEYPOINTS
from ..midms_core.anchors.binding import ANCHOR_MODES, AnchorSpec
from ..midms_core.anchors.field import TRANSFORMS, FieldSettings
from ..midms_core.anchors.keypoints import DEFAULT_CONFIDENCE
from .errors import node_errors
from .types import ANCHORS as ANCHORS_TYPE
from .types import CATEGORY, CONTEXT, POSE_KEYPOINT

_DEFAULTS = FieldSettings()


class MIDMsAnchors:
    DISPLAY = ANCHORS

    @classmethod
    def INPUT_TYPES(cls):
        canvas = {"default": 512, "min": 1, "max": 16384, "step": 1}
        return {
            "required": {
                "mode": (list(ANCHOR_MODES), {"default": "prior", "tooltip": "prior: the keypoints set the layout and the matcher adds local detail around it (recommended). anchors only: the field through the keypoints IS the warp, no feature matching."}),
                "smoothing": ("FLOAT", {"default": _DEFAULTS.smoothing, "min": 0.0, "max": 100.0, "step": 0.001, "tooltip": "How smoothly the field bends between keypoints: 0 passes exactly through every keypoint; larger values trust single points less (noisy detections), towards one rigid transform."}),
                "trust": ("FLOAT", {"default": _DEFAULTS.trust, "min": 0.0001, "max": 1.0, "step": 0.0005, "tooltip": "How closely matches must follow the keypoint field AT a keypoint, as a fraction of the exemplar's size (smaller = stricter)."}),
                "trust_cap": ("FLOAT", {"default": _DEFAULTS.trust_cap, "min": 0.0001, "max": 1.0, "step": 0.001, "tooltip": "How far matches may stray from the field far from every keypoint, as a fraction of the exemplar's size; at least 'trust'. Larger lets the matcher find detail between sparse keypoints."}),
            },
            "optional": {
                "condition_keypoints": (POSE_KEYPOINT, {"tooltip": "Keypoints of the condition image (POSE_KEYPOINT from DWPose / OpenPose / a face detector, or MIDMs Load Keypoints JSON). Give this or 'condition_points'."}),
                "exemplar_keypoints": (POSE_KEYPOINT, {"tooltip": "Keypoints of the exemplar photo(s), the same kind as the condition's: one frame for all, or one per image (per exemplar for an exemplar set). Give this or 'exemplar_points'."}),
                "condition_points": ("STRING", {"default": "", "multiline": False, "tooltip": "Hand-placed condition points as [{\"x\": .., \"y\": ..}, ...] (connect KJNodes Points Editor, or paste), paired by order with 'exemplar_points'. Leave empty when 'condition_keypoints' is connected."}),
                "exemplar_points": ("STRING", {"default": "", "multiline": False, "tooltip": "Hand-placed exemplar points, as many and in the same order as 'condition_points'. Leave empty when 'exemplar_keypoints' is connected."}),
                "condition_canvas_width": ("INT", {**canvas, "tooltip": "Width of the canvas the condition points were placed on (the point editor's width)."}),
                "condition_canvas_height": ("INT", {**canvas, "tooltip": "Height of the canvas the condition points were placed on."}),
                "exemplar_canvas_width": ("INT", {**canvas, "tooltip": "Width of the canvas the exemplar points were placed on."}),
                "exemplar_canvas_height": ("INT", {**canvas, "tooltip": "Height of the canvas the exemplar points were placed on."}),
                "person": ("INT", {"default": 0, "min": 0, "max": 63, "tooltip": "Which detected person of each POSE_KEYPOINT frame to use (0 = the first)."}),
                "confidence": ("FLOAT", {"default": DEFAULT_CONFIDENCE, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Detected keypoints below this confidence count as missing."}),
                "transform": (list(TRANSFORMS), {"default": _DEFAULTS.transform, "tooltip": "The rigid part of the field under the bending: similarity (rotation, scale, shift) or affine (also shear, for a turned body or face)."}),
                "body": (["auto", "parts", "global"], {"default": _DEFAULTS.body, "tooltip": "With body joints: auto / parts fit one field per limb, torso and head and blend them (an articulated body does not fold); global fits one field through all points."}),
            },
        }

    RETURN_TYPES = (ANCHORS_TYPE,)
    RETURN_NAMES = ("anchors",)
    OUTPUT_TOOLTIPS = ("Keypoint pairs for MIDMs Exemplar Encode / Exemplar Set Encode ('anchors'): they set the correspondence's layout.",)
    FUNCTION = "make"
    CATEGORY = CATEGORY
    DESCRIPTION = "Semantic anchors: keypoints on the condition and on the exemplar that say which parts correspond (eyes to eyes, wrist to wrist). Matching follows them and adds detail in between."

    @node_errors(DISPLAY)
    def make(self, mode, smoothing, trust, trust_cap, condition_keypoints=None, exemplar_keypoints=None,
             condition_points=None, exemplar_points=None, condition_canvas_width=512, condition_canvas_height=512,
             exemplar_canvas_width=512, exemplar_canvas_height=512, person=0, confidence=DEFAULT_CONFIDENCE,
             transform=_DEFAULTS.transform, body=_DEFAULTS.body):
        if trust_cap < trust:
            raise NodeInputError(f"{self.DISPLAY}: 'trust_cap' ({trust_cap:g}) must be at least 'trust' ({trust:g})")
        settings = FieldSettings(transform=transform, smoothing=smoothing, trust=trust, trust_cap=trust_cap, body=body)
        condition = read_side(condition_keypoints, condition_points, (condition_canvas_width, condition_canvas_height),
                              person, confidence, self.DISPLAY, "condition")
        exemplar = read_side(exemplar_keypoints, exemplar_points, (exemplar_canvas_width, exemplar_canvas_height),
                             person, confidence, self.DISPLAY, "exemplar")
        check_point_counts(condition, exemplar, self.DISPLAY)
        return (AnchorSpec(condition=condition, exemplar=exemplar, settings=settings, mode=mode),)


class MIDMsLoadKeypoints:
    DISPLAY = LOAD_KEYPOINTS

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": (keypoint_files(input_directory()) or [""], {"tooltip": "An OpenPose-format keypoints JSON file in ComfyUI's input folder (what DWPose / OpenPose preprocessors save): one frame {\"people\": [...], \"canvas_width\", \"canvas_height\"} or a list of frames."})}}

    RETURN_TYPES = (POSE_KEYPOINT,)
    RETURN_NAMES = ("keypoints",)
    OUTPUT_TOOLTIPS = ("POSE_KEYPOINT frames, for MIDMs Anchors (or any node that takes pose keypoints).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loads OpenPose-format keypoints (body, face, hands) from a JSON file in the input folder, so anchors work without a detector installed."
    VALIDATED_BY_NODE = ("file",)

    @classmethod
    def VALIDATE_INPUTS(cls, file):
        if not isinstance(file, str) or not file or file not in keypoint_files(input_directory()):
            return (f"{cls.DISPLAY}: 'file' {file!r} is not a .json file in ComfyUI's input folder "
                    f"({input_directory()}); copy the keypoints file there")
        return True

    @classmethod
    def IS_CHANGED(cls, file):
        path = os.path.join(input_directory(), file)
        return os.path.getmtime(path) if os.path.isfile(path) else float("nan")

    @node_errors(DISPLAY)
    def load(self, file):
        missing = self.VALIDATE_INPUTS(file)  # the 2024 host does not validate nodes reached through optional inputs
        if missing is not True:
            raise NodeInputError(missing)
        return (load_input_keypoints(file, self.DISPLAY),)


class MIDMsAnchorsPreview:
    DISPLAY = ANCHORS_PREVIEW

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"context": (CONTEXT, {"tooltip": "From MIDMs Exemplar Encode / Exemplar Set Encode with 'anchors' connected."})},
            "optional": {"exemplar": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Which exemplar of a set to show (1 = the first)."})},
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("preview", "report")
    OUTPUT_TOOLTIPS = (
        "Condition | exemplar side by side: the keypoint pairs numbered with lines between them, and the field drawn on the exemplar as the condition's grid bent into place. Connect to Preview Image.",
        "How the field was made (anchors used, per-part or spline, any fallback such as collinear points). Connect to a text display.",
    )
    FUNCTION = "preview"
    CATEGORY = CATEGORY
    DESCRIPTION = "Shows the anchor pairs on both images and the dense field they make."

    @node_errors(DISPLAY)
    def preview(self, context, exemplar=1):
        image, report = preview_context(context, exemplar, self.DISPLAY)
        return {"ui": {"text": [report]}, "result": (image, report)}
