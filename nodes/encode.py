"""MIDMs Exemplar Encode: condition + exemplar images -> a MIDMs context (latents via the host's
VAE; the checks, fitting and encoding: ``host_adapters.encode``)."""

from __future__ import annotations

from ..host_adapters.encode import COLOUR_TOLERANCE, LABEL_COMPARE, encode_context, encode_exemplar_set
from ..host_adapters.node_names import EXEMPLAR_ENCODE, EXEMPLAR_SET_ENCODE
from ..midms_core.images import FIT_MODES
from .errors import node_errors
from .types import ANCHORS, CATEGORY, CONTEXT


CONTEXT_OUTPUT = ("The encoded condition and exemplar(s) with their images: to MIDMs Cross-Domain Correspondence or "
                  "MIDMs Sampler ('context').")


class MIDMsExemplarEncode:
    DISPLAY = EXEMPLAR_ENCODE

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "condition": ("IMAGE", {"tooltip": "The layout to follow: an edge map (either polarity), pose or segmentation map. Sets the output size."}),
                "exemplar": ("IMAGE", {"tooltip": "The photo whose appearance is transferred. One image for all conditions, or one per condition image."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE; both images are encoded with it."}),
                "exemplar_fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How the exemplar is brought to the condition's size: crop (cover, keep aspect), stretch, pad (fit inside, white borders that never serve as exemplar content), or own size (matching works across sizes)."}),
            },
            "optional": {
                "anchors": (ANCHORS, {"tooltip": "Keypoint pairs from MIDMs Anchors (pose / face detector or hand-placed points on both images): they set the layout of the match; the matcher adds detail around them."}),
            },
        }

    RETURN_TYPES = (CONTEXT,)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = (CONTEXT_OUTPUT,)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes the condition and exemplar images with the VAE for MIDMs matching."

    @node_errors(DISPLAY)
    def encode(self, condition, exemplar, vae, exemplar_fit, anchors=None):
        return (encode_context(condition, exemplar, vae, exemplar_fit, self.DISPLAY, anchors),)


class MIDMsExemplarSetEncode:
    DISPLAY = EXEMPLAR_SET_ENCODE

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "condition": ("IMAGE", {"tooltip": "The layout to follow (one image). Sets the output size."}),
                "exemplars": ("IMAGE", {"tooltip": "Exemplar photos as one batch (e.g. 'Batch Images'); every condition position takes its appearance from the best of them. One photo works too (label-aware or masked matching of a single exemplar)."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE; all images are encoded with it."}),
                "exemplar_fit": (["crop", "stretch", "pad"], {"default": "crop", "tooltip": "How each exemplar is brought to the condition's size: crop (cover, keep aspect), stretch, or pad (fit inside; the pad borders never serve as exemplar content, whatever the masks say)."}),
            },
            "optional": {
                "condition_masks": ("MASK", {"tooltip": "One mask per exemplar, in exemplar order, on the condition: where that exemplar may be used (white = yes). A region no exemplar may serve stays unconfident."}),
                "exemplar_masks": ("MASK", {"tooltip": "One mask per exemplar, on the exemplar: which part of it may be used at all (e.g. only the face)."}),
                "condition_labels": ("IMAGE", {"tooltip": "A label map of the condition (e.g. the segmentation it is): positions only match exemplar positions of the same label."}),
                "exemplar_labels": ("IMAGE", {"tooltip": "One label map per exemplar, in the condition's colours."}),
                "anchors": (ANCHORS, {"tooltip": "Keypoint pairs from MIDMs Anchors: the condition's keypoints and one frame of exemplar keypoints per exemplar, in exemplar order."}),
                "label_compare": (list(LABEL_COMPARE), {"default": "exact colour", "tooltip": "exact colour: labels match when their colours are equal (lossless maps, e.g. PNG). nearest condition colour: for maps that went through JPEG or resizing: the condition map's colours are grouped into label colours (colours within colour_tolerance of each other are one label; thin blends along borders are not labels), every condition pixel takes the nearest label colour, and an exemplar pixel takes the nearest one only if it lies within colour_tolerance, else it matches nothing."}),
                "colour_tolerance": ("INT", {"default": int(COLOUR_TOLERANCE[0]), "min": int(COLOUR_TOLERANCE[1]), "max": int(COLOUR_TOLERANCE[2]), "step": 1, "tooltip": "Only for label_compare = nearest condition colour: how far (8-bit RGB units, Euclidean) a label map's colour may drift from its label's colour (JPEG, resizing). 24 covers about +-12 per channel; keep it below the distance between two different labels' colours."}),
            },
        }

    RETURN_TYPES = (CONTEXT,)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = (CONTEXT_OUTPUT,)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes a condition and SEVERAL exemplars for one union match, optionally restricted by region masks and label maps."

    @node_errors(DISPLAY)
    def encode(self, condition, exemplars, vae, exemplar_fit, condition_masks=None, exemplar_masks=None,
               condition_labels=None, exemplar_labels=None, label_compare="exact colour", anchors=None,
               colour_tolerance=int(COLOUR_TOLERANCE[0])):
        return (encode_exemplar_set(condition, exemplars, vae, exemplar_fit, self.DISPLAY, condition_masks,
                                    exemplar_masks, condition_labels, exemplar_labels, label_compare, anchors,
                                    colour_tolerance),)
