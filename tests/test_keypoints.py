"""The keypoint adapter: POSE_KEYPOINT in both unit conventions, point strings, OpenPose JSON,
pairing by label, and the errors bad keypoints get."""

from __future__ import annotations

import json

import pytest
import torch

from midms_core.anchors.keypoints import (
    BODY_COCO18,
    Keypoints,
    pair_keypoints,
    parse_point_string,
    parse_pose_json,
    read_pose_keypoints,
    select_frames,
)


def triplets(points, confidence=1.0):
    return [v for x, y in points for v in (x, y, confidence)]


def body18(offset=0.0):
    """18 distinct pixel points on a 512 x 256 canvas."""
    return [(20.0 + 20 * i + offset, 30.0 + 7 * i) for i in range(18)]


def frame(people, width=512, height=256):
    return {"people": people, "canvas_width": width, "canvas_height": height}


def test_dwpose_pixels_with_dropped_points():
    values = triplets(body18())
    values[3 * 4 : 3 * 4 + 3] = [0, 0, 0]  # a dropped point, as DWPose writes it
    values[3 * 7 + 2] = 0.2  # below the default 0.3 confidence
    (kp,) = read_pose_keypoints([frame([{"pose_keypoints_2d": values, "face_keypoints_2d": None}])])
    assert len(kp.labels) == 16
    assert "body/right_wrist" not in kp.labels and "body/left_wrist" not in kp.labels
    i = kp.labels.index("body/left_elbow")
    assert kp.points[i].tolist() == [20.0 + 20 * 6, 30.0 + 7 * 6]
    assert (kp.width, kp.height) == (512, 256)


def test_openpose_normalised_with_minus_one():
    pixels = body18()
    values = [v for x, y in pixels for v in (x / 512, y / 256, 1.0)]
    values[0:3] = [-1 / 512, -1 / 256, 1.0]  # OpenPose's missing nose, once normalised
    (kp,) = read_pose_keypoints([frame([{"pose_keypoints_2d": values}])])
    assert "body/nose" not in kp.labels
    i = kp.labels.index("body/neck")
    assert torch.allclose(kp.points[i], torch.tensor(pixels[1], dtype=torch.float64))


def test_units_override():
    values = triplets([(0.5, 0.5)] * 18)
    (auto,) = read_pose_keypoints([frame([{"pose_keypoints_2d": values}])])
    (pixels,) = read_pose_keypoints([frame([{"pose_keypoints_2d": values}])], units="pixels")
    assert auto.points[0].tolist() == [256.0, 128.0]
    assert pixels.points[0].tolist() == [0.5, 0.5]


def test_body25_pairs_with_coco18_by_joint_name():
    body25 = [(10.0 + 10 * i, 20.0 + 3 * i) for i in range(25)]
    (cond,) = read_pose_keypoints([frame([{"pose_keypoints_2d": triplets(body25)}])])
    (exem,) = read_pose_keypoints([frame([{"pose_keypoints_2d": triplets(body18(5.0))}])])
    pairs = pair_keypoints(cond, exem)
    assert set(pairs.labels) == {f"body/{n}" for n in BODY_COCO18}
    k = pairs.labels.index("body/right_hip")  # BODY_25 index 9, COCO-18 index 8
    assert pairs.condition[k].tolist() == list(body25[9])
    assert pairs.exemplar[k].tolist() == [body18(5.0)[8][0], body18(5.0)[8][1]]


def test_face70_and_hands_are_labelled():
    face = [(100.0 + i, 100.0 + (i % 7)) for i in range(70)]
    hand = [(300.0 + i, 50.0) for i in range(21)]
    (kp,) = read_pose_keypoints([frame([{"face_keypoints_2d": triplets(face), "hand_left_keypoints_2d": triplets(hand),
                                         "hand_right_keypoints_2d": []}])])
    assert kp.parts() == {"face": 70, "hand_left": 21}
    assert kp.labels[69] == "face/69"


def test_person_index_and_frames():
    people = [{"pose_keypoints_2d": triplets(body18())}, {"pose_keypoints_2d": triplets(body18(3.0))}]
    second = read_pose_keypoints([frame(people), frame(people)], person=1)
    assert len(second) == 2 and second[0].points[0, 0] == 23.0
    with pytest.raises(ValueError, match=r"2 persons detected, so person index 2 does not exist; use 0 to 1"):
        read_pose_keypoints([frame(people)], person=2)
    with pytest.raises(ValueError, match="nobody detected"):
        read_pose_keypoints([frame([])])


@pytest.mark.parametrize(
    "person, message",
    [
        ({"pose_keypoints_2d": triplets(body18()[:17])}, r"pose_keypoints_2d has 17 points; supported are 18 or 25"),
        ({"face_keypoints_2d": triplets([(1.0, 1.0)] * 5)}, r"face_keypoints_2d has 5 points; supported are 68 or 70"),
        ({"pose_keypoints_2d": [1.0, 2.0]}, "not a multiple of 3"),
        ({"pose_keypoints_2d": triplets([(float("nan"), 4.0)] + body18()[1:])}, "body/nose is not a finite number"),
        ({"pose_keypoints_2d": triplets([(900.0, 4.0)] + body18()[1:])}, r"body/nose at \(900, 4\) lies outside its 512 x 256 canvas"),
        ({"pose_keypoints_2d": "12"}, "flat list"),
    ],
)
def test_bad_people_are_refused_by_name(person, message):
    with pytest.raises(ValueError, match=message):
        read_pose_keypoints([frame([person])], where="Node", name="condition_keypoints")


def test_unsupported_and_malformed_frames():
    with pytest.raises(ValueError, match="AP10K animal keypoints"):
        read_pose_keypoints([{"animals": [[1, 2, 3]], "canvas_width": 64, "canvas_height": 64}])
    with pytest.raises(ValueError, match="canvas_width"):
        read_pose_keypoints([{"people": []}])
    with pytest.raises(ValueError, match="POSE_KEYPOINT"):
        read_pose_keypoints([])
    with pytest.raises(ValueError, match="no 'people' list"):
        read_pose_keypoints([{"canvas_width": 8, "canvas_height": 8}])


def test_pose_json_file_forms():
    one = frame([{"pose_keypoints_2d": triplets(body18())}])
    assert parse_pose_json(json.dumps(one)) == [one]
    assert parse_pose_json(json.dumps([one, one])) == [one, one]
    with pytest.raises(ValueError, match="is not JSON"):
        parse_pose_json("{nope")
    with pytest.raises(ValueError, match="frame dict or a list"):
        parse_pose_json("3")


def test_point_strings():
    kp = parse_point_string('[{"x": 10, "y": 20}, {"x": 511, "y": 0}]', 512, 256)
    assert kp.labels == ("point/0", "point/1")
    assert kp.points.tolist() == [[10.0, 20.0], [511.0, 0.0]]
    for text, message in (('[{"x": 10}]', "item 0 must be"), ("[]", "non-empty list"), ("x", "is not JSON"),
                          ('[{"x": 600, "y": 1}]', "outside the stated 512 x 256 canvas"),
                          ('[{"x": NaN, "y": 1}]', "not a finite number")):
        with pytest.raises(ValueError, match=message):
            parse_point_string(text, 512, 256)
    with pytest.raises(ValueError, match="canvas width"):
        parse_point_string('[{"x": 1, "y": 1}]', 0, 256)


def test_pairing_keeps_common_points_and_names_parts_when_none():
    a = parse_point_string('[{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": 3, "y": 3}]', 8, 8)
    b = parse_point_string('[{"x": 5, "y": 5}, {"x": 6, "y": 6}]', 8, 8)
    pairs = pair_keypoints(a, b)
    assert pairs.labels == ("point/0", "point/1") and pairs.exemplar[1].tolist() == [6.0, 6.0]
    face = Keypoints(torch.zeros(3, 2, dtype=torch.float64), ("face/0", "face/1", "face/2"), 8.0, 8.0)
    with pytest.raises(ValueError, match=r"condition has point \(3 points\); the exemplar has face \(3 points\)"):
        pair_keypoints(a, face)


def test_frames_pair_with_batch_items():
    kp = parse_point_string('[{"x": 1, "y": 1}]', 8, 8)
    assert select_frames([kp], 3, "N", "k") == [kp, kp, kp]
    assert select_frames([kp, kp], 2, "N", "k") == [kp, kp]
    with pytest.raises(ValueError, match="'k' has 2 frames for 3 images; give one frame for all images or exactly one per image"):
        select_frames([kp, kp], 3, "N", "k")
    with pytest.raises(ValueError, match="'k' has 3 frames for 1 exemplar; "):
        select_frames([kp, kp, kp], 1, "N", "k", "exemplar")


def test_zero_confidence_is_missing_whatever_the_threshold():
    values = triplets(body18())
    values[12:15] = [0, 0, 0]
    (kp,) = read_pose_keypoints([frame([{"pose_keypoints_2d": values}])], threshold=0.0)
    assert "body/right_wrist" not in kp.labels and len(kp.labels) == 17


def test_normalised_coordinates_that_overshoot_are_refused():
    values = [v for i in range(18) for v in (0.05 * i, 0.04 * i, 1.0)]
    values[0] = 1.02
    with pytest.raises(ValueError, match=r"look normalised to the canvas, but some exceed 1"):
        read_pose_keypoints([frame([{"pose_keypoints_2d": values}])])


def test_pairs_outside_either_image_are_left_out():
    from midms_core.anchors.keypoints import inside_images

    a = parse_point_string('[{"x": 1, "y": 1}, {"x": 7, "y": 7}, {"x": 4, "y": 4}]', 8, 8)
    b = Keypoints(torch.tensor([[1.0, 1.0], [12.0, 7.0], [4.0, -3.0]], dtype=torch.float64), a.labels, 8.0, 8.0)
    kept, dropped = inside_images(pair_keypoints(a, b))
    assert kept.labels == ("point/0",) and dropped == ("point/1", "point/2")
