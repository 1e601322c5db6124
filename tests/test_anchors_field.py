"""The anchor field against plain float64 transcriptions: the similarity and affine fits, the
robust fit, the thin-plate spline, the trust width, per-part bodies, and the prior's exactness
inside the streamed warp."""

from __future__ import annotations

import math

import pytest
import torch

from midms_core.anchors.field import FieldSettings, anchor_field, anchor_prior
from midms_core.anchors.fitting import fit_affine, fit_similarity, fit_tps, robust_fit, to_cells
from midms_core.confidence import warp_with_confidence
from tests.reference import pixel_grid, soft_warp_with_locality

G = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.rand(*shape, generator=G, dtype=torch.float64)


def similarity_reference(src, dst, w):
    """Least squares over (a, b, tx, ty) of dst = [[a, -b], [b, a]] src + t, weighted, by lstsq."""
    rows, rhs = [], []
    for (x, y), (u, v), wk in zip(src.tolist(), dst.tolist(), w.tolist()):
        s = math.sqrt(wk)
        rows += [[s * x, -s * y, s, 0.0], [s * y, s * x, 0.0, s]]
        rhs += [s * u, s * v]
    a, b, tx, ty = torch.linalg.lstsq(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64)[:, None]).solution[:, 0].tolist()
    return torch.tensor([[a, -b, tx], [b, a, ty]], dtype=torch.float64)


def tps_reference(centres, values, smoothing, unit, points):
    """The regularised TPS written out: U(r) = r^2 log r, bordered system, evaluated point by point."""
    n = centres.shape[0]
    c = centres / unit

    def u(r):
        return 0.0 if r == 0 else r * r * math.log(r)

    a = torch.zeros(n + 3, n + 3, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            a[i, j] = u(float((c[i] - c[j]).norm())) + (smoothing if i == j else 0.0)
        a[i, n:] = torch.tensor([c[i, 0], c[i, 1], 1.0])
        a[n:, i] = torch.tensor([c[i, 0], c[i, 1], 1.0])
    sol = torch.linalg.solve(a, torch.cat([values, torch.zeros(3, 2, dtype=torch.float64)]))
    out = []
    for p in (points / unit):
        k = torch.tensor([u(float((p - c[j]).norm())) for j in range(n)], dtype=torch.float64)
        out.append(k @ sol[:n] + torch.tensor([p[0], p[1], 1.0], dtype=torch.float64) @ sol[n:])
    return torch.stack(out)


def test_similarity_fit_is_weighted_least_squares():
    src, dst, w = rand(9, 2) * 20, rand(9, 2) * 20, rand(9) + 0.1
    assert torch.allclose(fit_similarity(src, dst, w), similarity_reference(src, dst, w), atol=1e-10)


def test_similarity_and_affine_recover_exact_maps():
    src = rand(6, 2) * 30
    angle, scale = 0.7, 1.3
    m = torch.tensor([[scale * math.cos(angle), -scale * math.sin(angle), 4.0],
                      [scale * math.sin(angle), scale * math.cos(angle), -2.0]], dtype=torch.float64)
    dst = src @ m[:, :2].t() + m[:, 2]
    assert torch.allclose(fit_similarity(src, dst), m, atol=1e-10)
    affine = torch.tensor([[1.2, 0.3, 1.0], [-0.2, 0.8, 5.0]], dtype=torch.float64)
    assert torch.allclose(fit_affine(src, src @ affine[:, :2].t() + affine[:, 2]), affine, atol=1e-9)


def test_robust_fit_ignores_outliers():
    src = rand(10, 2) * 30
    m = torch.tensor([[0.9, -0.2, 3.0], [0.2, 0.9, 1.0]], dtype=torch.float64)
    dst = src @ m[:, :2].t() + m[:, 2]
    dst[2] += torch.tensor([25.0, -18.0], dtype=torch.float64)  # two wrong detections
    dst[7] += torch.tensor([-30.0, 12.0], dtype=torch.float64)
    plain = fit_similarity(src, dst)
    robust, weights = robust_fit(src, dst)
    assert (plain - m).abs().max() > 0.05  # the outliers do pull a plain fit
    assert torch.allclose(robust, m, atol=1e-8)
    assert weights[2] == 0 and weights[7] == 0


@pytest.mark.parametrize("smoothing", [0.0, 0.05])
def test_tps_matches_transcription(smoothing):
    centres, values, points = rand(7, 2) * 32, rand(7, 2) * 4 - 2, rand(11, 2) * 32
    spline, condition = fit_tps(centres, values, smoothing, unit=32.0)
    assert math.isfinite(condition)
    assert torch.allclose(spline(points), tps_reference(centres, values, smoothing, 32.0, points), atol=1e-9)
    if smoothing == 0.0:
        assert torch.allclose(spline(centres), values, atol=1e-9)  # interpolates


def test_translation_and_similarity_for_one_and_two_anchors():
    one = anchor_field(torch.tensor([[3.0, 4.0]], dtype=torch.float64), torch.tensor([[5.0, 1.0]], dtype=torch.float64),
                       ("point/0",), (8, 8), (8, 8))
    assert torch.allclose(one.target, pixel_grid(8, 8).view(2, 8, 8) + torch.tensor([2.0, -3.0], dtype=torch.float64).view(2, 1, 1))
    src = torch.tensor([[1.0, 1.0], [5.0, 1.0]], dtype=torch.float64)
    dst = torch.tensor([[2.0, 2.0], [2.0, 6.0]], dtype=torch.float64)  # rotated 90 degrees, same length
    two = anchor_field(src, dst, ("point/0", "point/1"), (8, 8), (8, 8))
    # (x, y) -> (2 - (y - 1), 2 + (x - 1))
    assert torch.allclose(two.target[:, 3, 7], torch.tensor([0.0, 8.0], dtype=torch.float64), atol=1e-10)
    assert "similarity (2 anchors)" in two.method


def test_spline_field_passes_through_anchors_on_cells():
    src = torch.tensor([[2.0, 2.0], [12.0, 3.0], [6.0, 12.0], [13.0, 13.0], [4.0, 8.0]], dtype=torch.float64)
    dst = src * 0.8 + torch.tensor([1.0, 2.0], dtype=torch.float64) + rand(5, 2)
    field = anchor_field(src, dst, tuple(f"point/{i}" for i in range(5)), (16, 16), (16, 16), FieldSettings(smoothing=0.0))
    got = torch.stack([field.target[:, int(y), int(x)] for x, y in src.tolist()])
    assert torch.allclose(got, dst, atol=1e-8)
    assert "spline" in field.method and not field.notes


@pytest.mark.parametrize("src, note", [
    ([[1.0, 1.0], [4.0, 4.0], [8.0, 8.0], [12.0, 12.0]], "on one line"),
    ([[5.0, 5.0], [5.2, 5.0], [5.0, 5.3]], "within"),
])
def test_degenerate_anchors_fall_back_to_the_similarity(src, note):
    src = torch.tensor(src, dtype=torch.float64)
    dst = src + rand(*src.shape)
    labels = tuple(f"point/{i}" for i in range(src.shape[0]))
    field = anchor_field(src, dst, labels, (16, 16), (16, 16), FieldSettings(transform="affine"))
    assert any(note in n for n in field.notes) and "spline" not in field.method
    expected = (pixel_grid(16, 16).t() @ robust_fit(src, dst)[0][:, :2].t() + robust_fit(src, dst)[0][:, 2]).t()
    assert torch.allclose(field.target.reshape(2, -1), expected, atol=1e-9)


def test_trust_width_grows_with_distance_to_the_nearest_anchor():
    settings = FieldSettings(trust=0.01, trust_cap=0.1, growth=0.5)
    src = torch.tensor([[2.0, 3.0], [20.0, 25.0], [30.0, 4.0]], dtype=torch.float64)
    field = anchor_field(src, src, ("point/0", "point/1", "point/2"), (32, 32), (64, 64), settings)
    cells = pixel_grid(32, 32).t()
    nearest = torch.stack([(cells - s).norm(dim=1) for s in src]).amin(0)
    expected = torch.clamp(0.01 * 64 + 0.5 * nearest * 2.0, max=0.1 * 64)  # distances scaled to exemplar cells
    assert torch.allclose(field.sigma.flatten(), expected, atol=1e-10)
    assert float(field.sigma[0, 3, 2]) == pytest.approx(0.64)


def body(angle_right_arm: float):
    """COCO-18 joints (cells on a 64 grid) of a standing figure; the right arm swung by the angle
    about the shoulder (degrees)."""
    joints = {"nose": (32, 8), "neck": (32, 14), "right_shoulder": (26, 15), "left_shoulder": (38, 15),
              "right_hip": (28, 32), "left_hip": (36, 32), "right_knee": (28, 44), "left_knee": (36, 44),
              "right_ankle": (28, 56), "left_ankle": (36, 56), "left_elbow": (40, 24), "left_wrist": (41, 32)}
    a = math.radians(angle_right_arm)
    for name, length in (("right_elbow", 9.0), ("right_wrist", 17.0)):
        dx, dy = -math.sin(a) * length, math.cos(a) * length
        joints[name] = (26 + dx, 15 + dy)
    labels = tuple(f"body/{k}" for k in joints)
    return torch.tensor(list(joints.values()), dtype=torch.float64), labels


def test_body_parts_follow_each_limb():
    src, labels = body(60.0)  # the right arm held out, clear of the torso
    dst, _ = body(150.0)  # and raised above the shoulder
    parts = anchor_field(src, dst, labels, (64, 64), (64, 64), FieldSettings(body="parts", blend=0.01))
    assert parts.method.startswith("body parts")
    # a point on the right forearm bone, midway: the forearm's own rigid motion carries it
    mid = (src[labels.index("body/right_elbow")] + src[labels.index("body/right_wrist")]) / 2
    want = (dst[labels.index("body/right_elbow")] + dst[labels.index("body/right_wrist")]) / 2
    x, y = mid.round().long().tolist()
    got = parts.target[:, y, x]
    rigid = want + (torch.tensor([x, y], dtype=torch.float64) - mid) @ fit_similarity(
        src[[labels.index("body/right_elbow"), labels.index("body/right_wrist")]],
        dst[[labels.index("body/right_elbow"), labels.index("body/right_wrist")]])[:, :2].t()
    assert torch.allclose(got, rigid, atol=0.05)
    # the left leg did not move: its cells stay put
    assert torch.allclose(parts.target[:, 50, 36], torch.tensor([36.0, 50.0], dtype=torch.float64), atol=0.05)
    glob = anchor_field(src, dst, labels, (64, 64), (64, 64), FieldSettings(body="global"))
    assert "body parts" not in glob.method


def test_pixels_to_cells():
    points = torch.tensor([[0.0, 0.0], [4.0, 4.0], [256.0, 128.0]], dtype=torch.float64)
    cells = to_cells(points, (256.0, 128.0), (16, 32))
    assert cells.tolist() == [[-0.5, -0.5], [0.0, 0.0], [31.5, 15.5]]


def test_anchor_prior_is_exact_in_the_streamed_warp():
    """The warp with the field's per-cell target and sigma equals the float64 transcription of
    logit = C / tau - |v - T(u)|^2 / (2 sigma(u)^2), both directions."""
    src = torch.tensor([[1.0, 1.0], [6.0, 2.0], [3.0, 6.0], [7.0, 7.0]], dtype=torch.float64)
    dst = torch.tensor([[2.0, 1.5], [7.5, 2.5], [2.5, 7.0], [8.0, 8.5]], dtype=torch.float64)
    field = anchor_field(src, dst, tuple(f"point/{i}" for i in range(4)), (8, 8), (10, 10),
                         FieldSettings(trust=0.05, trust_cap=0.3, growth=0.5))
    prior = anchor_prior([field])
    sx, sy = torch.randn(1, 6, 8, 8, generator=G), torch.randn(1, 6, 10, 10, generator=G)
    values = torch.randn(1, 3, 10, 10, generator=G)
    tau = 0.05
    from midms_core.attention import AttentionSettings

    result = warp_with_confidence(sx, sy, values, AttentionSettings(tau=tau), prior=prior)
    target = prior.target[0].reshape(2, -1).double()
    sigma = prior.sigma[0].reshape(-1).double()
    want = soft_warp_with_locality(sx[0].reshape(6, -1), sy[0].reshape(6, -1), values[0].reshape(3, -1), tau, target,
                                   sigma, (10, 10))
    assert torch.allclose(result.warped[0].reshape(3, -1).double(), want, atol=1e-4)
    back = soft_warp_with_locality(sx[0].reshape(6, -1), sy[0].reshape(6, -1), pixel_grid(8, 8), tau, target, sigma,
                                   (10, 10), direction="backward")
    assert torch.allclose(result.backward_flow[0].reshape(2, -1).double(), back, atol=1e-3)


def test_settings_are_checked_once():
    with pytest.raises(ValueError, match="'trust_cap'"):
        FieldSettings(trust=0.1, trust_cap=0.05)
    with pytest.raises(ValueError, match="'transform'"):
        FieldSettings(transform="projective")
    with pytest.raises(ValueError, match="'smoothing'"):
        FieldSettings(smoothing=float("nan"))
    with pytest.raises(ValueError, match="'body'"):
        FieldSettings(body="legs")


def test_a_wrong_detection_neither_bends_the_field_nor_gets_its_trust():
    """12 anchors on one similarity, one detection 19 cells off: the spline goes through the
    other 11, so the field stays on the true map at the bad anchor, and the trust there is not
    the tightest (the bad anchor does not count as an anchor)."""
    src = rand(12, 2) * 60 + 2
    truth = src * 0.9 + 3
    dst = truth.clone()
    dst[4] += torch.tensor([15.0, 12.0], dtype=torch.float64)
    field = anchor_field(src, dst, tuple(f"point/{i}" for i in range(12)), (64, 64), (64, 64))
    x, y = src[4].round().long().tolist()
    assert torch.allclose(field.target[:, y, x], torch.tensor([x, y], dtype=torch.float64) * 0.9 + 3, atol=1e-6)
    assert any("far off" in n for n in field.notes) and "11 anchors" in field.method
    assert float(field.sigma[0, y, x]) > FieldSettings().trust * 64 * 2


def test_few_anchors_are_all_kept_even_when_one_is_far_off():
    """With 5 anchors an outlier of the similarity may be another face's real proportions."""
    src = torch.tensor([[10.0, 10.0], [40.0, 10.0], [25.0, 25.0], [12.0, 40.0], [38.0, 40.0]], dtype=torch.float64)
    dst = src.clone()
    dst[4] += torch.tensor([14.0, 0.0], dtype=torch.float64)
    field = anchor_field(src, dst, tuple(f"point/{i}" for i in range(5)), (64, 64), (64, 64), FieldSettings(smoothing=0.0))
    assert torch.allclose(field.target[:, 40, 38], dst[4], atol=1e-6) and not field.notes


def test_coincident_anchors_are_merged_not_a_crash():
    src = torch.tensor([[5.0, 10.0], [5.0, 10.0], [20.0, 4.0], [12.0, 22.0]], dtype=torch.float64)
    dst = torch.tensor([[6.0, 10.0], [8.0, 10.0], [21.0, 4.0], [13.0, 22.0]], dtype=torch.float64)
    field = anchor_field(src, dst, tuple(f"point/{i}" for i in range(4)), (32, 32), (32, 32), FieldSettings(smoothing=0.0))
    assert any("merged" in n for n in field.notes)
    assert torch.allclose(field.target[:, 10, 5], torch.tensor([7.0, 10.0], dtype=torch.float64), atol=1e-6)
