"""Semantic anchors: keypoints the user's graph already has steering the correspondence.

``keypoints`` (POSE_KEYPOINT and point formats -> matched pairs), ``field`` (a dense field and a
locality prior from sparse pairs), ``binding`` (anchors combined with a matcher's features).
"""
