"""The node declarations: each node declares its inputs and outputs and translates host types to
calls of ``host_adapters`` (the code that talks to ComfyUI) and ``midms_core`` (the maths).

Node IDs (the keys below) are stable: renaming one breaks every saved workflow.
"""

from .anchors import MIDMsAnchors, MIDMsAnchorsPreview, MIDMsLoadKeypoints
from .diffusion import MIDMsDiffusionFeatureMatcher
from .encode import MIDMsExemplarEncode, MIDMsExemplarSetEncode
from .inversion import MIDMsDDIBTranslate, MIDMsDDIMInversionSampler, MIDMsDDIMRoundTrip
from .matching import (
    MIDMsCorrespondence,
    MIDMsEdgeMatcher,
    MIDMsLearnedMatcherLoader,
    MIDMsRewarpSettings,
    MIDMsSourcePreview,
)
from .sampling import MIDMsInterleavedSampler, MIDMsSampler

_NODES = {
    "MIDMsExemplarEncode": (MIDMsExemplarEncode, MIDMsExemplarEncode.DISPLAY),
    "MIDMsEdgeMatcher": (MIDMsEdgeMatcher, MIDMsEdgeMatcher.DISPLAY),
    "MIDMsDiffusionFeatureMatcher": (MIDMsDiffusionFeatureMatcher, MIDMsDiffusionFeatureMatcher.DISPLAY),
    "MIDMsLearnedMatcherLoader": (MIDMsLearnedMatcherLoader, MIDMsLearnedMatcherLoader.DISPLAY),
    "MIDMsRewarpSettings": (MIDMsRewarpSettings, MIDMsRewarpSettings.DISPLAY),
    "MIDMsCorrespondence": (MIDMsCorrespondence, MIDMsCorrespondence.DISPLAY),
    "MIDMsInterleavedSampler": (MIDMsInterleavedSampler, MIDMsInterleavedSampler.DISPLAY),
    "MIDMsSampler": (MIDMsSampler, MIDMsSampler.DISPLAY),
    "MIDMsDDIMInversionSampler": (MIDMsDDIMInversionSampler, MIDMsDDIMInversionSampler.DISPLAY),
    "MIDMsDDIBTranslate": (MIDMsDDIBTranslate, MIDMsDDIBTranslate.DISPLAY),
    "MIDMsDDIMRoundTrip": (MIDMsDDIMRoundTrip, MIDMsDDIMRoundTrip.DISPLAY),
    "MIDMsExemplarSetEncode": (MIDMsExemplarSetEncode, MIDMsExemplarSetEncode.DISPLAY),
    "MIDMsSourcePreview": (MIDMsSourcePreview, MIDMsSourcePreview.DISPLAY),
    "MIDMsAnchors": (MIDMsAnchors, MIDMsAnchors.DISPLAY),
    "MIDMsLoadKeypoints": (MIDMsLoadKeypoints, MIDMsLoadKeypoints.DISPLAY),
    "MIDMsAnchorsPreview": (MIDMsAnchorsPreview, MIDMsAnchorsPreview.DISPLAY),
}

NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in _NODES.items()}
