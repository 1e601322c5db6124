"""MIDMs Exemplar Encode: condition + exemplar images -> a MIDMs context (latents via the host's
VAE; the checks, fitting and encoding: ``host_adapters.encode``)."""

from __future__ import annotations

from ..host_adapters.encode import encode_context
from ..host_adapters.node_names import EXEMPLAR_ENCODE
from ..midms_core.images import FIT_MODES
from .errors import node_errors
from .types import CATEGORY, CONTEXT


class MIDMsExemplarEncode:
    DISPLAY = EXEMPLAR_ENCODE

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "condition": ("IMAGE", {"tooltip": "The layout to follow: an edge map (either polarity), pose or segmentation map. Sets the output size."}),
                "exemplar": ("IMAGE", {"tooltip": "The photo whose appearance is transferred. One image for all conditions, or one per condition image."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE; both images are encoded with it."}),
                "exemplar_fit": (list(FIT_MODES), {"default": "crop", "tooltip": "How the exemplar is brought to the condition's size: crop (cover, keep aspect), stretch, pad (fit inside, white borders), or own size (matching works across sizes)."}),
            }
        }

    RETURN_TYPES = (CONTEXT,)
    RETURN_NAMES = ("context",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = "Encodes the condition and exemplar images with the VAE for MIDMs matching."

    @node_errors(DISPLAY)
    def encode(self, condition, exemplar, vae, exemplar_fit):
        return (encode_context(condition, exemplar, vae, exemplar_fit, self.DISPLAY),)
