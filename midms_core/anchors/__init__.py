"""Semantic anchors: keypoints the user's graph already has steering the correspondence.

``keypoints`` (POSE_KEYPOINT and point formats -> matched pairs), ``field`` (a dense field and a
locality prior from sparse pairs), ``fitting`` (the maps under the field: robust global fits, the
thin-plate spline), ``binding`` (anchors combined with a matcher's features).
"""
