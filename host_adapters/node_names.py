"""Every MIDMs node's display name, in one place.

The nodes declare them (``DISPLAY = node_names.X``; the host shows them in its menu) and
host-side code names nodes with them in its errors and hints (an error raised inside a host
sampler names the node the user must change), so the two can never drift apart. Renaming one
changes what the UI shows and every error text that names the node; node IDs (the keys of
``nodes.NODE_CLASS_MAPPINGS``) are separate and never change.
"""

from __future__ import annotations

EXEMPLAR_ENCODE = "MIDMs Exemplar Encode"
EXEMPLAR_SET_ENCODE = "MIDMs Exemplar Set Encode (several exemplars)"
SOURCE_PREVIEW = "MIDMs Exemplar Source Preview"
EDGE_MATCHER = "MIDMs Edge Matcher (training-free)"
#: errors of the matcher this node makes name it, also when they surface later inside a sampler
DIFFUSION_MATCHER = "MIDMs Diffusion Feature Matcher (DIFT)"
LEARNED_MATCHER_LOADER = "MIDMs Learned Matcher Loader"
REWARP_SETTINGS = "MIDMs Rewarp Settings"
CORRESPONDENCE = "MIDMs Cross-Domain Correspondence"
INTERLEAVED_SAMPLER = "MIDMs Interleaved DDIM Sampler"
SAMPLER = "MIDMs Sampler (all-in-one)"
DDIM_INVERSION_SAMPLER = "MIDMs DDIM Inversion Sampler"
DDIB_TRANSLATE = "MIDMs DDIB Translate"
DDIM_ROUND_TRIP = "MIDMs DDIM Round Trip"
ANCHORS = "MIDMs Anchors (keypoints)"
LOAD_KEYPOINTS = "MIDMs Load Keypoints JSON"
ANCHORS_PREVIEW = "MIDMs Anchors Preview"

#: appended to a SAMPLER node's name in errors raised while the host's sampling node runs it
RUN_BY_SAMPLING_NODE = "(run by the sampling node it is connected to)"
