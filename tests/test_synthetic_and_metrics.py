"""midms_core.training.synthetic against plain, obviously-correct references.

The thin-plate spline is checked against a direct numpy transcription of the textbook system (no
coordinate normalisation) and against scipy's RBFInterpolator; the metrics against hand-built
inputs whose answers are worked out in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.metrics import degrade, latent_flow_to_pixels, mask_precision_recall, masked_psnr, pck
from harness.photos import load_photo
from midms_core.correspondence import coordinate_grid
from midms_core.training.conditions import canny_condition, label_palette, quantised_condition, quantised_labels
from midms_core.training.synthetic import (
    deform,
    latent_ground_truth,
    sample_pixels,
    smooth_displacement,
    thin_plate_spline,
    tps_control_points,
    tps_displacement,
)

# ----------------------------------------------------------------------------- thin-plate spline

def numpy_tps(points: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The textbook TPS in raw coordinates: solve [K P; P^T 0][w; a] = [v; 0], U(r) = r^2 log r."""

    def kernel(a, b):
        r = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r > 0, r * r * np.log(r), 0.0)

    n = len(points)
    affine = np.hstack([np.ones((n, 1)), points])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = kernel(points, points)
    system[:n, n:] = affine
    system[n:, :n] = affine.T
    coef = np.linalg.solve(system, np.vstack([values, np.zeros((3, values.shape[1]))]))
    return kernel(query, points) @ coef[:n] + np.hstack([np.ones((len(query), 1)), query]) @ coef[n:]


@pytest.fixture
def controls():
    g = torch.Generator().manual_seed(3)
    points = torch.rand(7, 2, generator=g, dtype=torch.float64) * 200 + 20
    values = torch.randn(7, 2, generator=g, dtype=torch.float64) * 10
    query = torch.rand(40, 2, generator=g, dtype=torch.float64) * 256
    return points, values, query


def test_tps_matches_textbook_system(controls):
    points, values, query = controls
    ours = thin_plate_spline(points, values, query).numpy()
    ref = numpy_tps(points.numpy(), values.numpy(), query.numpy())
    assert np.abs(ours - ref).max() < 1e-9 * max(1.0, np.abs(ref).max())


def test_tps_matches_scipy(controls):
    interpolate = pytest.importorskip("scipy.interpolate")
    points, values, query = controls
    ref = interpolate.RBFInterpolator(points.numpy(), values.numpy(), kernel="thin_plate_spline", degree=1)(query.numpy())
    assert np.abs(thin_plate_spline(points, values, query).numpy() - ref).max() < 1e-8


def test_tps_interpolates_control_values_exactly(controls):
    points, values, _ = controls
    assert torch.allclose(thin_plate_spline(points, values, points), values, atol=1e-10, rtol=0)


def test_tps_reproduces_an_affine_field_everywhere(controls):
    points, _, query = controls
    a = torch.tensor([[1.5, -0.3], [0.2, 0.7]], dtype=torch.float64)
    b = torch.tensor([4.0, -2.0], dtype=torch.float64)
    out = thin_plate_spline(points, points @ a.T + b, query)
    assert torch.allclose(out, query @ a.T + b, atol=1e-9, rtol=0)


def test_tps_is_not_just_affine(controls):
    # a non-affine field: the spline must bend (else the kernel part would be missing)
    points, values, query = controls
    out = thin_plate_spline(points, values, query)
    affine = torch.cat([torch.ones(len(points), 1, dtype=torch.float64), points], dim=1)
    fit = torch.linalg.lstsq(affine, values).solution
    residual = values - affine @ fit
    assert residual.abs().max() > 1.0  # the control values themselves are far from affine
    assert not torch.allclose(out, torch.cat([torch.ones(len(query), 1, dtype=torch.float64), query], 1) @ fit, atol=0.1)


def test_tps_errors_name_function_and_argument():
    p = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match=r"thin_plate_spline.*'points'.*one line"):
        thin_plate_spline(p, torch.zeros(3, 1), p)
    with pytest.raises(ValueError, match=r"thin_plate_spline.*'points'.*at least 3"):
        thin_plate_spline(p[:2], torch.zeros(2, 1), p)
    with pytest.raises(ValueError, match=r"thin_plate_spline.*'values'"):
        thin_plate_spline(p, torch.zeros(2, 1), p)
    with pytest.raises(ValueError, match=r"thin_plate_spline.*'query'"):
        thin_plate_spline(p, torch.zeros(3, 1), torch.zeros(4, 3))


def test_control_points_one_per_cell_inside_its_jitter_box():
    size, grid, jitter = 201, 3, 0.5
    points, disp = tps_control_points(size, seed=5, grid=grid, jitter=jitter)
    assert points.shape == (9, 2) and disp.shape == (9, 2)
    cell = (size - 1) / grid
    cells = torch.floor(points / cell)
    assert sorted(map(tuple, cells.tolist())) == [(float(i), float(j)) for i in range(3) for j in range(3)]
    offset = points / cell - cells  # position within the cell, 0..1
    assert ((offset - 0.5).abs() <= jitter / 2 + 1e-12).all()


def test_tps_displacement_is_the_scaled_spline_through_the_controls():
    size, seed, mean_px = 64, 4, 6.0
    field = tps_displacement(size, seed, mean_px)
    assert field.shape == (1, 2, size, size) and field.dtype == torch.float32
    assert abs(float(field.norm(dim=1).mean()) - mean_px) < 1e-4
    assert torch.equal(field, tps_displacement(size, seed, mean_px))
    assert not torch.allclose(field, tps_displacement(size, seed + 1, mean_px))
    # the plain reference: the numpy spline through the controls, scaled to mean |d| = mean_px
    points, disp = tps_control_points(size, seed)
    pixels = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="xy"), -1).reshape(-1, 2).astype(float)
    ref = numpy_tps(points.numpy(), disp.numpy(), pixels)
    ref = ref / np.linalg.norm(ref, axis=1).mean() * mean_px
    assert np.abs(field[0].flatten(1).T.numpy() - ref).max() < 1e-4


def test_smooth_displacement_keeps_its_numbers():
    # the bicubic field of the edge-matcher tests and the demo: mean magnitude and determinism
    d = smooth_displacement(64, 0, 5.0)
    assert d.shape == (1, 2, 64, 64) and abs(float(d.norm(dim=1).mean()) - 5.0) < 1e-4
    assert torch.equal(d, smooth_displacement(64, 0, 5.0))


# ----------------------------------------------------------------------------- images

def test_deform_zero_and_integer_shift():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 12, 10, generator=g)
    out, inside = deform(image, torch.zeros(1, 2, 12, 10))
    assert torch.allclose(out, image, atol=1e-6) and bool((inside == 1).all())
    shift = torch.zeros(1, 2, 12, 10)
    shift[:, 0], shift[:, 1] = 3.0, -2.0  # deformed(x, y) = image(x + 3, y - 2)
    out, inside = deform(image, shift)
    assert torch.allclose(out[..., 2:, :7], image[..., :10, 3:], atol=1e-6)
    expected = torch.zeros(12, 10)
    expected[2:, :7] = 1  # source x + 3 <= 9 and y - 2 >= 0
    assert torch.equal(inside[0, 0], expected)


def test_deform_rejects_mismatched_displacement():
    with pytest.raises(ValueError, match=r"deform.*'displacement'"):
        deform(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 9))


def test_sample_pixels_exact_at_pixels_and_midway_between():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    points = torch.tensor([[2.0, 1.0], [0.5, 0.0], [3.0, 1.5]]).T.reshape(1, 2, 1, 3)
    out = sample_pixels(image, points)[0, 0, 0]
    # (x 2, y 1) -> 6; (x 0.5, y 0) -> (0 + 1) / 2; (x 3, y 1.5) -> (7 + 11) / 2
    assert torch.allclose(out, torch.tensor([6.0, 0.5, 9.0]))


def test_latent_flow_to_pixels_maps_cell_centres():
    factor, h, w = 8, 4, 5
    pixels = latent_flow_to_pixels(coordinate_grid(1, h, w), (h * factor, w * factor), factor)
    # cell u's centre is pixel u * 8 + 3.5, so between the first and last centres the identity
    # latent flow becomes the identity pixel flow; outside them the upsampling clamps
    inner = pixels[:, :, 4:28, 4:36]  # centres 3.5 .. 27.5 (rows) and 3.5 .. 35.5 (columns)
    assert float(pixels[0, 0, 0, 0]) == pytest.approx(3.5)  # clamped to the first centre
    assert torch.allclose(inner, coordinate_grid(1, h * factor, w * factor)[:, :, 4:28, 4:36], atol=1e-4)
    shifted = latent_flow_to_pixels(coordinate_grid(1, h, w) + 1.0, (h * factor, w * factor), factor)
    assert torch.allclose(shifted[:, :, 4:28, 4:36] - inner, torch.full_like(inner, 8.0), atol=1e-4)


def test_latent_ground_truth_constant_shift():
    d = torch.zeros(1, 2, 32, 32)
    d[:, 0] = 8.0  # one cell to the right
    image = torch.rand(1, 3, 32, 32)
    _, inside = deform(image, d)
    truth, valid = latent_ground_truth(d, inside, 8)
    assert torch.allclose(truth, coordinate_grid(1, 4, 4) + torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    expected = torch.ones(1, 4, 4, dtype=torch.bool)
    expected[..., 3] = False  # the last column's sources lie right of the image
    assert torch.equal(valid, expected)
    with pytest.raises(ValueError, match=r"latent_ground_truth.*'factor'"):
        latent_ground_truth(d, inside, 5)


def test_load_photo_shape_range_and_gray():
    pytest.importorskip("skimage.data")
    photo = load_photo("astronaut", 64)
    assert photo.shape == (1, 3, 64, 64) and 0 <= float(photo.min()) and float(photo.max()) <= 1
    gray = load_photo("camera", 32)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    with pytest.raises(ValueError, match=r"load_photo.*'name'"):
        load_photo("no_such_photo", 32)


def test_canny_condition_outlines_a_square():
    image = torch.zeros(1, 3, 32, 32)
    image[..., 10:22, 10:22] = 1.0
    cond = canny_condition(image)
    assert cond.shape == (1, 3, 32, 32)
    assert torch.equal(cond[:, 0], cond[:, 1]) and set(cond.unique().tolist()) <= {0.0, 1.0}
    edge = cond[0, 0] > 0
    assert edge.any()
    ys, xs = torch.nonzero(edge, as_tuple=True)
    assert int(ys.min()) >= 8 and int(ys.max()) <= 23 and int(xs.min()) >= 8 and int(xs.max()) <= 23
    assert not edge[13:19, 13:19].any()  # nothing inside the flat interior


def test_quantised_labels_by_hand():
    # left half (0.1, 0.5, 0.9) -> bins (0, 1, 2) -> 0 * 9 + 1 * 3 + 2 = 5; right half
    # (0.9, 0.0, 0.4) -> (2, 0, 1) -> 19; one odd pixel in the left half is voted away
    image = torch.zeros(1, 3, 16, 16)
    image[:, :, :, :8] = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)
    image[:, :, :, 8:] = torch.tensor([0.9, 0.0, 0.4]).view(1, 3, 1, 1)
    image[:, :, 4, 3] = 1.0
    labels = quantised_labels(image, levels=3, blur_sigma=0, mode_window=3)
    expected = torch.full((16, 16), 5, dtype=torch.long)
    expected[:, 8:] = 19
    assert torch.equal(labels[0, 0], expected)
    raw = quantised_labels(image, levels=3, blur_sigma=0, mode_window=1)
    assert int(raw[0, 0, 4, 3]) == 26  # without the mode filter the odd pixel stays
    cond = quantised_condition(image, levels=3, blur_sigma=0, mode_window=3)
    palette = label_palette(27)
    assert torch.allclose(cond[0, :, 0, 0], palette[5]) and torch.allclose(cond[0, :, 0, 15], palette[19])


def test_label_palette_colours_are_distinct():
    palette = label_palette(27)
    assert palette.shape == (27, 3) and float(palette.min()) >= 0 and float(palette.max()) <= 1
    distances = torch.cdist(palette, palette) + torch.eye(27) * 10
    assert float(distances.min()) > 0.05


def test_quantised_labels_validate():
    with pytest.raises(ValueError, match=r"quantised_labels.*'mode_window'"):
        quantised_labels(torch.rand(1, 3, 8, 8), mode_window=4)
    with pytest.raises(ValueError, match=r"quantised_labels.*'levels'"):
        quantised_labels(torch.rand(1, 3, 8, 8), levels=1)


def test_degrade_is_blur_plus_seeded_noise():
    import kornia

    g = torch.Generator().manual_seed(1)
    latent = torch.rand(1, 4, 32, 32, generator=g)
    blurred = kornia.filters.gaussian_blur2d(latent, (5, 5), (0.75, 0.75), border_type="replicate")
    assert torch.allclose(degrade(latent, seed=0, noise_std=0.0), blurred)
    noisy = degrade(latent, seed=7, noise_std=0.5)
    assert torch.equal(noisy, degrade(latent, seed=7, noise_std=0.5))
    assert abs(float((noisy - blurred).std()) - 0.5) < 0.05  # 4096 draws: std within ~2 %
    with pytest.raises(ValueError, match=r"degrade.*'noise_std'"):
        degrade(latent, seed=0, noise_std=-1.0)


# ----------------------------------------------------------------------------- metrics

def test_pck_by_hand():
    truth = torch.zeros(1, 2, 1, 5)
    flow = torch.zeros(1, 2, 1, 5)
    flow[0, 0, 0] = torch.tensor([0.0, 1.0, 1.5, 3.0, 9.0])  # errors 0, 1, 1.5, 3, 9
    flow[0, 1, 0, 4] = 0.0
    valid = torch.ones(1, 1, 5, dtype=torch.bool)
    assert pck(flow, truth, valid, 1) == pytest.approx(2 / 5)  # inclusive: error 1 counts
    assert pck(flow, truth, valid, 2) == pytest.approx(3 / 5)
    assert pck(flow, truth, valid, 4) == pytest.approx(4 / 5)
    valid[0, 0, 4] = False  # the wild one is not scored
    assert pck(flow, truth, valid, 4) == pytest.approx(1.0)
    # error along both axes: (3, 4) is 5 away
    diag = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    one = torch.ones(1, 1, 1, dtype=torch.bool)
    assert pck(diag, torch.zeros(1, 2, 1, 1), one, 4.99) == 0.0 and pck(diag, torch.zeros(1, 2, 1, 1), one, 5) == 1.0
    assert math.isnan(pck(flow, truth, torch.zeros(1, 1, 5, dtype=torch.bool), 1))
    with pytest.raises(ValueError, match=r"pck.*'valid'.*bool"):
        pck(flow, truth, valid.float(), 1)


def test_masked_psnr_of_known_mse():
    reference = torch.zeros(1, 3, 4, 4)
    estimate = reference.clone()
    estimate[..., :2, :] = 0.1  # MSE 0.01 on the top half -> 20 dB
    estimate[..., 2:, :] = 0.5  # MSE 0.25 on the bottom half
    top = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    top[..., :2, :] = True
    assert masked_psnr(estimate, reference, top) == pytest.approx(20.0)
    assert masked_psnr(estimate, reference) == pytest.approx(10 * math.log10(1 / 0.13))  # mean of 0.01 and 0.25
    assert masked_psnr(estimate * 255, reference, top, peak=255) == pytest.approx(20.0)
    assert masked_psnr(reference, reference) == math.inf
    assert math.isnan(masked_psnr(estimate, reference, torch.zeros_like(top)))
    with pytest.raises(ValueError, match=r"masked_psnr.*'mask'"):
        masked_psnr(estimate, reference, top.float())
    with pytest.raises(ValueError, match=r"masked_psnr.*'estimate' and 'reference'"):
        masked_psnr(estimate[..., :3], reference)


def test_mask_precision_recall_by_hand():
    predicted = torch.tensor([True, True, True, False, False, True])
    actual = torch.tensor([True, False, True, True, False, True])
    # hits 3 (positions 0, 2, 5); predicted 4 -> precision 3/4; actual 4 -> recall 3/4
    assert mask_precision_recall(predicted, actual) == pytest.approx((0.75, 0.75))
    p, r = mask_precision_recall(torch.zeros(6, dtype=torch.bool), actual)
    assert math.isnan(p) and r == 0.0
    p, r = mask_precision_recall(predicted, torch.zeros(6, dtype=torch.bool))
    assert p == 0.0 and math.isnan(r)
    with pytest.raises(ValueError, match=r"mask_precision_recall.*'actual'.*shape"):
        mask_precision_recall(predicted, actual[:5])
