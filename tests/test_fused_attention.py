"""The fused attention path of ``attend`` (scaled_dot_product_attention with a per-row
certificate for the clamp at 0, the exact loop where the certificate fails) against a float64
transcription of the clamped definition (Eq. 5-6), including rows built so that the clamp
changes them, where the kernel alone would be wrong."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import midms_core.attention as kernel
from midms_core.correspondence import attend, centre_normalise
from midms_core.attention import AttentionSettings


def clamped_warp_float64(query, key, values, tau):
    """out(u) = sum_v softmax_v(max(0, C(u, v)) / tau) values(v), C the centred cosine; float64."""
    q = query.double() - query.double().mean(1, keepdim=True)
    k = key.double() - key.double().mean(1, keepdim=True)
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-6)
    k = k / k.norm(dim=1, keepdim=True).clamp_min(1e-6)
    c = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).clamp(min=0)
    w = torch.softmax(c / tau, dim=-1)
    out = torch.einsum("bnm,bcm->bcn", w, values.double().flatten(2))
    return out.view(values.shape[0], values.shape[1], *query.shape[-2:])


def _pair(seed, side=16, channels=32, shift=2, noise=0.4):
    """Condition features = the exemplar's shifted plus noise: peaked rows, as real matches are."""
    g = torch.Generator().manual_seed(seed)
    key = torch.randn(1, channels, side, side, generator=g)
    query = key.roll(shift, dims=-1) + noise * torch.randn(1, channels, side, side, generator=g)
    values = torch.randn(1, 3, side, side, generator=g)
    return query, key, values


def _adversarial(seed, side=12, channels=16):
    """Keys spread around one direction d, and for half of the query rows a query near -d: its
    cosine with every key is negative, so the clamp makes its softmax uniform, while without
    the clamp it would concentrate on the least negative keys. The other rows are ordinary."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(channels, 1, 1, generator=g)
    key = d + 0.5 * torch.randn(1, channels, side, side, generator=g)
    query = key.roll(1, dims=-1) + 0.3 * torch.randn(1, channels, side, side, generator=g)
    flat = query.view(channels, -1)
    bad = torch.arange(0, side * side, 2)
    flat[:, bad] = -d.view(channels, 1) + 0.05 * torch.randn(channels, bad.numel(), generator=g)
    values = torch.randn(1, 2, side, side, generator=g)
    return query, key, values, bad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.005, 0.05])
def test_fused_equals_the_clamped_definition(seed, tau):
    query, key, values = _pair(seed)
    want = clamped_warp_float64(query, key, values, tau)
    got = attend(query, key, values, AttentionSettings(tau=tau))
    assert torch.allclose(got.double(), want, rtol=0, atol=2e-5), float((got.double() - want).abs().max())
    loop = attend(query, key, values, AttentionSettings(tau=tau, fused=False))
    assert torch.allclose(got, loop, rtol=0, atol=2e-5)


def test_unclamped_fused_equals_the_loop():
    query, key, values = _pair(3)
    got = attend(query, key, values, AttentionSettings(clamp_negative=False))
    assert torch.allclose(got, attend(query, key, values, AttentionSettings(clamp_negative=False, fused=False)), rtol=0, atol=1e-5)


def test_rows_the_clamp_changes_fall_back_to_the_exact_loop(monkeypatch):
    query, key, values, bad = _adversarial(4)
    tau = 0.005
    want = clamped_warp_float64(query, key, values, tau)
    # the kernel alone (unclamped softmax) is far off on those rows: the test is not vacuous
    unclamped = attend(query, key, values, AttentionSettings(tau=tau, clamp_negative=False, fused=False))
    off = (unclamped.double() - want).abs().flatten(2)[0]
    assert float(off[:, bad].max()) > 0.1

    fallen = []
    exact = kernel.exact_rows_subset

    def spy(q_rows, unsafe, *args, **kwargs):
        fallen.append(unsafe.numel())
        return exact(q_rows, unsafe, *args, **kwargs)

    monkeypatch.setattr(kernel, "exact_rows_subset", spy)
    got = attend(query, key, values, AttentionSettings(tau=tau))
    assert torch.allclose(got.double(), want, rtol=0, atol=2e-5), float((got.double() - want).abs().max())
    assert sum(fallen) >= bad.numel()  # every adversarial row was recomputed exactly
    assert sum(fallen) < query.shape[-1] * query.shape[-2]  # and not everything


def test_certified_rows_are_within_the_bound():
    """The certificate's inequality itself: for every row it accepts, the unclamped softmax
    average is within Nk exp(-m / tau) * range(values) of the clamped one (float64)."""
    query, key, values = _pair(5, side=10, channels=8, noise=1.0)  # broad rows: some accepted, some not
    tau = 0.05
    q = centre_normalise(query).double().flatten(2)[0]
    k = centre_normalise(key).double().flatten(2)[0]
    c = q.transpose(0, 1) @ k  # (Nq, Nk)
    v = values.double().flatten(2)[0].transpose(0, 1)  # (Nk, Cv)
    clamped = torch.softmax(c.clamp(min=0) / tau, dim=1) @ v
    unclamped = torch.softmax(c / tau, dim=1) @ v
    best = c.amax(dim=1)
    bound = c.shape[1] * torch.exp(-best.clamp(min=0) / tau) * (v.amax(0) - v.amin(0)).max()
    assert bool(((clamped - unclamped).abs().amax(dim=1) <= bound + 1e-12).all())


def test_fused_path_keeps_interrupts_batches_and_dtype():
    query, key, values = _pair(6)
    batch_q = torch.cat([query, query.flip(-1)])
    got = attend(batch_q, key, values.half())
    assert got.dtype == torch.float16 and got.shape == (2, 3, 16, 16)
    for i in range(2):
        one = attend(batch_q[i : i + 1], key, values.half())
        assert torch.equal(got[i], one[0])


def test_threshold_is_the_resolution_argument():
    """Nk exp(-threshold / tau) = 2^-24 exactly: a row whose best cosine reaches the threshold
    changes by less than float32's resolution of the values' range."""
    tau, n = 0.005, 128 * 128
    threshold = tau * (math.log(n) + math.log(1 / kernel.FUSED_CERTIFICATE_EPS))
    assert math.isclose(n * math.exp(-threshold / tau), 2.0**-24, rel_tol=1e-9)
    assert F.scaled_dot_product_attention  # the host kernel the path uses exists in this torch


def clamped_warp_with_locality_float64(query, key, values, tau, points, weight, points_on):
    """The clamped definition with the locality term -w(p) |p - g|^2 added after the division by
    tau (points on the query side: g the key cells; on the key side: g the query cells)."""
    q = query.double() - query.double().mean(1, keepdim=True)
    k = key.double() - key.double().mean(1, keepdim=True)
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-6)
    k = k / k.norm(dim=1, keepdim=True).clamp_min(1e-6)
    logits = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2)).clamp(min=0) / tau
    grid_side = key if points_on == "query" else query
    gy, gx = torch.meshgrid(torch.arange(grid_side.shape[-2], dtype=torch.float64),
                            torch.arange(grid_side.shape[-1], dtype=torch.float64), indexing="ij")
    p = points.double().flatten(2)[0]  # (2, Np)
    d2 = (p[0][:, None] - gx.flatten()[None]) ** 2 + (p[1][:, None] - gy.flatten()[None]) ** 2  # (Np, G)
    term = weight.double().flatten()[:, None] * d2
    logits = logits - (term if points_on == "query" else term.transpose(0, 1))[None]
    w = torch.softmax(logits, dim=-1)
    out = torch.einsum("bnm,bcm->bcn", w, values.double().flatten(2))
    return out.view(values.shape[0], values.shape[1], *query.shape[-2:])


@pytest.mark.parametrize("points_on", ["query", "key"])
def test_fused_with_a_locality_term_equals_the_definition(points_on, monkeypatch):
    """The locality prior goes into the kernel as its additive mask; adversarial rows (all
    cosines negative) still fall back and the whole result equals the float64 definition."""
    from midms_core.correspondence import GridLocality

    query, key, values, bad = _adversarial(7)
    side = query.shape[-1]
    g = torch.Generator().manual_seed(8)
    points = torch.stack(torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                        indexing="xy")).unsqueeze(0) + torch.randn(1, 2, side, side, generator=g)
    weight = torch.full((1, 1, side, side), 0.5 / 1.5**2)
    locality = GridLocality(points, weight, points_on)
    if points_on == "key":
        query, key = key, query  # the backward direction: the points live on the key side
        values = torch.randn(1, 2, side, side, generator=g)
    tau = 0.005
    want = clamped_warp_with_locality_float64(query, key, values, tau, points, weight, points_on)
    fallen = []
    exact = kernel.exact_rows_subset

    def spy(q_rows, unsafe, *args, **kwargs):
        fallen.append(unsafe.numel())
        return exact(q_rows, unsafe, *args, **kwargs)

    monkeypatch.setattr(kernel, "exact_rows_subset", spy)
    got = attend(query, key, values, AttentionSettings(tau=tau, chunk_bytes=4 * side * side * 3 * side), locality=locality)
    assert torch.allclose(got.double(), want, rtol=0, atol=5e-5), float((got.double() - want).abs().max())
    assert torch.allclose(got, attend(query, key, values, AttentionSettings(tau=tau, fused=False), locality=locality), rtol=0, atol=5e-5)
    if points_on == "query":  # (swapped, the adversarial rows are keys: nothing needs to fall back)
        assert bad.numel() <= sum(fallen) < side * side


def test_the_row_bound_with_a_locality_term_holds():
    """|clamped - unclamped| <= L(u) exp(-best(u)) range(values), L(u) = sum_v exp(-l(u, v)) and
    best(u) any logit c(u, v) / tau - l(u, v) of the row: the certificate's bound with a prior,
    in float64, on rows with negative cosines and a sharp prior."""
    g = torch.Generator().manual_seed(11)
    nq, nk, tau = 40, 64, 0.05
    c = torch.rand(nq, nk, generator=g, dtype=torch.float64) * 1.2 - 0.6  # cosines in [-0.6, 0.6]
    l = torch.rand(nq, nk, generator=g, dtype=torch.float64) * 60  # a sharp locality term
    v = torch.randn(nk, 3, generator=g, dtype=torch.float64)
    clamped = torch.softmax(c.clamp(min=0) / tau - l, dim=1) @ v
    unclamped = torch.softmax(c / tau - l, dim=1) @ v
    best = (c / tau - l).amax(dim=1)
    bound = torch.exp(torch.logsumexp(-l, dim=1) - best) * (v.amax(0) - v.amin(0)).max()
    assert bool(((clamped - unclamped).abs().amax(dim=1) <= bound + 1e-12).all())
    assert bool((torch.logsumexp(-l, dim=1) < math.log(nk)).all())  # tighter than Nk


def test_a_sharp_prior_is_certified_per_row_and_stays_exact(monkeypatch):
    """Semantic anchors give sigma a fraction of a cell: with the per-row bound most rows stay in
    the fused kernel (bounding by Nk sent most of them to the exact loop), and the result still
    equals the float64 definition."""
    from midms_core.correspondence import GridLocality

    side, tau = 12, 0.005
    g = torch.Generator().manual_seed(12)
    query, key = torch.randn(1, 8, side, side, generator=g), torch.randn(1, 8, side, side, generator=g)
    values = torch.randn(1, 3, side, side, generator=g)
    points = torch.stack(torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                                        indexing="xy")).unsqueeze(0) + 0.3 * torch.randn(1, 2, side, side, generator=g)
    weight = torch.full((1, 1, side, side), 0.5 / 0.1**2)  # sigma 0.1 cells: l(u, v) >= 25 off T(u) by 0.5
    calls = []
    original = kernel.exact_rows_subset
    monkeypatch.setattr(kernel, "exact_rows_subset", lambda q, unsafe, *a: calls.append(unsafe.numel()) or original(q, unsafe, *a))
    settings = AttentionSettings(tau=tau)
    got = attend(query, key, values, settings, locality=GridLocality(points, weight, "query"))
    want = clamped_warp_with_locality_float64(query, key, values, tau, points, weight, "query")
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert sum(calls) < side * side / 4, sum(calls)
    # the per-row bound L(u) is e^5 times tighter than Nk on every row here
    mask = -(weight.flatten()[:, None] * ((points[0, 0].flatten()[:, None] - torch.arange(side).repeat(side)[None]) ** 2
                                          + (points[0, 1].flatten()[:, None] - torch.arange(side).repeat_interleave(side)[None]) ** 2))
    assert bool((torch.logsumexp(mask, dim=1) < math.log(side * side) - 5).all())
