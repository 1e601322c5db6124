"""Semantic anchors through the real host (in process): MIDMs Anchors from point strings and from
an OpenPose-JSON file in the host's input folder, both encode nodes with 'anchors', the
correspondence following the field, the preview, the sampler, and the errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.comfy.test_nodes_inprocess import (  # noqa: F401  (fixtures)
    H, W, _conds, _edge_image, _exemplar_image, _like_the_executor, _matcher, _settings, h, models, pack, vae)

CONDITION_POINTS = [(12, 14), (50, 12), (30, 34), (14, 52), (52, 50)]
SHIFT = (6.0, -4.0)  # exemplar points: the condition's moved by this many pixels


def points_string(points):
    return json.dumps([{"x": x, "y": y} for x, y in points])


@pytest.fixture(scope="module")
def nodes(h, pack):
    mapping = h.nodes.NODE_CLASS_MAPPINGS
    for name in ("MIDMsAnchors", "MIDMsLoadKeypoints", "MIDMsAnchorsPreview", "MIDMsExemplarSetEncode"):
        assert name in mapping, f"{name} not registered"
    return mapping


def _anchors(nodes, mode="anchors only", **extra):
    exemplar = [(x + SHIFT[0], y + SHIFT[1]) for x, y in CONDITION_POINTS]
    args = dict(condition_points=points_string(CONDITION_POINTS), exemplar_points=points_string(exemplar),
                condition_canvas_width=W, condition_canvas_height=H, exemplar_canvas_width=W, exemplar_canvas_height=H)
    args.update(extra)
    return nodes["MIDMsAnchors"]().make(mode, 0.01, 0.001, 0.02, **args)[0]


def test_anchors_set_the_first_warp_preview_and_sampler(h, pack, nodes, models, vae):
    condition = _edge_image(_exemplar_image(seed=1))
    exemplar = _exemplar_image(seed=2)
    context = pack.MIDMsExemplarEncode().encode(condition, exemplar, vae, "crop", anchors=_anchors(nodes))[0]
    prior = context.anchors.priors[0]
    assert prior.target.shape == (1, 2, H // 8, W // 8)
    # the shift in cells is (6 / 8, -4 / 8) everywhere (a translation through 5 points)
    cells = pack.core.correspondence.coordinate_grid(1, H // 8, W // 8)
    torch.testing.assert_close(prior.target, cells + torch.tensor([0.75, -0.5]).view(1, 2, 1, 1), atol=1e-4, rtol=0)
    match, warped, mask, preview, flow = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))
    feats = match.bound[next(iter(match.bound))]
    assert feats.prior is not None and feats.alignment is None
    result = match.settings.rewarp.warp_with_confidence(feats.condition, feats.exemplar, context.exemplar_latent,
                                                        prior=feats.prior)
    inner = (slice(None), slice(None), slice(1, 7), slice(1, 6))
    torch.testing.assert_close(result.forward_flow[inner], prior.target[inner], atol=0.06, rtol=0)
    image, report = nodes["MIDMsAnchorsPreview"]().preview(context)["result"]
    assert image.shape == (1, H, 2 * W, 3) and "5 anchors" in report and "similarity + spline" in report
    model = models["sd15"]
    positive, negative = _conds("sd15")
    latent, _ = pack.MIDMsSampler().sample(model, positive, negative, context, _matcher(pack), seed=3, steps=2,
                                           start_noise=0.25, cfg=3.0)
    assert bool(torch.isfinite(latent["samples"]).all())


def test_keypoints_json_from_the_input_folder_and_an_exemplar_set(h, pack, nodes, vae):
    import folder_paths

    body = [(8 + 2.5 * i, 6 + 2.8 * i) for i in range(18)]
    frame = {"people": [{"pose_keypoints_2d": [v for x, y in body for v in (x, y, 1.0)]}], "canvas_width": W,
             "canvas_height": H}
    path = os.path.join(folder_paths.get_input_directory(), "midms_test_pose.json")
    with open(path, "w") as handle:
        json.dump([frame], handle)
    try:
        assert nodes["MIDMsLoadKeypoints"].VALIDATE_INPUTS("midms_test_pose.json") is True
        pose = nodes["MIDMsLoadKeypoints"]().load("midms_test_pose.json")[0]
    finally:
        os.remove(path)
    assert pose == [frame]
    assert nodes["MIDMsLoadKeypoints"].VALIDATE_INPUTS("midms_test_pose.json") is not True  # gone: a clear message
    spec = nodes["MIDMsAnchors"]().make("prior", 0.01, 0.001, 0.02, condition_keypoints=pose,
                                        exemplar_keypoints=[frame, frame])[0]
    exemplars = torch.cat([_exemplar_image(seed=3), _exemplar_image(seed=4)])
    condition = _edge_image(_exemplar_image(seed=1))
    context = nodes["MIDMsExemplarSetEncode"]().encode(condition, exemplars, vae, "crop", anchors=spec)[0]
    assert len(context.anchors.priors) == 2
    match = pack.MIDMsCorrespondence().correspond(context, _matcher(pack), _settings(pack))[0]
    bound = match.bound[next(iter(match.bound))]
    assert bound.groups == 2 and bound.prior.target.shape == (1, 4, H // 8, W // 8)


def test_bad_anchors_are_refused_by_name(h, pack, nodes, vae):
    error = pack.types.__dict__.get("NodeInputError") or importlib_error(pack)
    with pytest.raises(error, match=r"MIDMs Anchors \(keypoints\): give the condition's keypoints either"):
        nodes["MIDMsAnchors"]().make("prior", 0.01, 0.001, 0.02, exemplar_points=points_string([(1, 1)]))
    with pytest.raises(error, match="'trust_cap'"):
        nodes["MIDMsAnchors"]().make("prior", 0.01, 0.01, 0.005, condition_points="[]", exemplar_points="[]")
    with pytest.raises(error, match="^MIDMs Anchors \\(keypoints\\): 'condition_points' has 5 points and 'exemplar_points' has 4; points pair by order"):
        nodes["MIDMsAnchors"]().make("prior", 0.01, 0.001, 0.02, condition_points=points_string(CONDITION_POINTS),
                                     exemplar_points=points_string(CONDITION_POINTS[:4]))
    wide = _anchors(nodes, condition_canvas_width=2 * W)
    condition = _edge_image(_exemplar_image(seed=1))
    with pytest.raises(error, match="^MIDMs Exemplar Encode: 'anchors: condition keypoints' were found on a 128 x 64 canvas"):
        pack.MIDMsExemplarEncode().encode(condition, _exemplar_image(seed=2), vae, "crop", anchors=wide)
    face = {"people": [{"face_keypoints_2d": [v for i in range(68) for v in (10 + i * 0.5, 20.0, 1.0)]}],
            "canvas_width": W, "canvas_height": H}
    mixed = nodes["MIDMsAnchors"]().make("prior", 0.01, 0.001, 0.02, condition_keypoints=[face],
                                         exemplar_points=points_string([(1, 1)]), exemplar_canvas_width=W,
                                         exemplar_canvas_height=H)[0]
    with pytest.raises(error, match=r"no keypoint is present on both sides. The condition has face \(68 points\); the exemplar has point \(1 point\)"):
        pack.MIDMsExemplarEncode().encode(condition, _exemplar_image(seed=2), vae, "crop", anchors=mixed)


def importlib_error(pack):
    import importlib

    return importlib.import_module(f"{pack.package}.host_adapters.errors").NodeInputError


def test_pairs_cropped_away_by_the_fit_are_reported_or_refused(h, pack, nodes, vae):
    """A wide exemplar (2W x H) fitted by 'crop' loses its left and right quarters: points there
    leave the match (said in the preview's report); with nothing left, the encode node refuses."""
    condition = _edge_image(_exemplar_image(seed=1))
    wide = _exemplar_image(width=2 * W, seed=2)
    inner = [(x + W // 2, y) for x, y in CONDITION_POINTS]  # inside the kept middle half
    anchors = nodes["MIDMsAnchors"]().make(
        "prior", 0.01, 0.001, 0.02, condition_points=points_string(CONDITION_POINTS + [(5, 5)]),
        exemplar_points=points_string(inner + [(3, 30)]), condition_canvas_width=W, condition_canvas_height=H,
        exemplar_canvas_width=2 * W, exemplar_canvas_height=H)[0]
    context = pack.MIDMsExemplarEncode().encode(condition, wide, vae, "crop", anchors=anchors)[0]
    report = nodes["MIDMsAnchorsPreview"]().preview(context)["result"][1]
    assert "5 anchors" in report and "1 pair(s) outside the images after the fit, not used: point/5" in report
    outside = nodes["MIDMsAnchors"]().make(
        "prior", 0.01, 0.001, 0.02, condition_points=points_string([(5, 5), (50, 50)]),
        exemplar_points=points_string([(3, 30), (2 * W - 4, 20)]), condition_canvas_width=W, condition_canvas_height=H,
        exemplar_canvas_width=2 * W, exemplar_canvas_height=H)[0]
    error = importlib_error(pack)
    with pytest.raises(error, match=r"^MIDMs Exemplar Encode: every keypoint pair has a point outside its image after the fit"):
        pack.MIDMsExemplarEncode().encode(condition, wide, vae, "crop", anchors=outside)


def test_no_common_point_names_the_exemplar_of_a_set(h, pack, nodes, vae):
    face = {"people": [{"face_keypoints_2d": [v for i in range(68) for v in (10 + i * 0.5, 20.0 + (i % 5), 1.0)]}],
            "canvas_width": W, "canvas_height": H}
    body = {"people": [{"pose_keypoints_2d": [v for i in range(18) for v in (8 + 2.5 * i, 6 + 2.8 * i, 1.0)]}],
            "canvas_width": W, "canvas_height": H}
    spec = nodes["MIDMsAnchors"]().make("prior", 0.01, 0.001, 0.02, condition_keypoints=[face],
                                        exemplar_keypoints=[face, body])[0]
    exemplars = torch.cat([_exemplar_image(seed=3), _exemplar_image(seed=4)])
    with pytest.raises(importlib_error(pack), match=r"^MIDMs Exemplar Set Encode \(several exemplars\) \(exemplar 2 of 2\): no keypoint is present on both sides"):
        nodes["MIDMsExemplarSetEncode"]().encode(_edge_image(_exemplar_image(seed=1)), exemplars, vae, "crop", anchors=spec)
