"""Correlation and soft warp (Eq. 5-6) against the float64 transcription, chunking, precision,
batching and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import midms_core as mc
from tests import reference as ref
from midms_core.attention import AttentionSettings
from midms_core.correspondence import attend_dense


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of a against the reference b."""
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def reference_warp(q, k, v, tau, clamp=True):
    """Batched float64 reference built from the per-pair transcription (batch 1 broadcasts)."""
    batch = max(q.shape[0], k.shape[0], v.shape[0])
    outs = []
    for b in range(batch):
        qb, kb, vb = (t[b if t.shape[0] > 1 else 0] for t in (q, k, v))
        outs.append(ref.soft_warp(qb.flatten(1), kb.flatten(1), vb.flatten(1), tau, clamp).view(v.shape[1], *q.shape[-2:]))
    return torch.stack(outs)


def test_centre_normalise_matches_definition():
    torch.manual_seed(0)
    f = torch.randn(2, 7, 3, 5) * 3 + 2
    got = mc.correspondence.centre_normalise(f)
    c = f.double() - f.double().mean(1, keepdim=True)
    want = c / c.norm(dim=1, keepdim=True)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(2, 3, 5), atol=1e-5)
    assert torch.allclose(got.sum(dim=1), torch.zeros(2, 3, 5), atol=1e-5)


def test_constant_feature_gives_zero_vector_not_nan():
    f = torch.ones(1, 4, 2, 2)
    assert torch.equal(mc.correspondence.centre_normalise(f), torch.zeros(1, 4, 2, 2))


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(2, 24),
    hx=st.integers(1, 9), wx=st.integers(1, 9), hy=st.integers(1, 9), wy=st.integers(1, 9),
    cv=st.integers(1, 5),
    tau=st.sampled_from([0.005, 0.01, 0.1, 1.0]),
    clamp=st.booleans(),
    chunk_rows=st.integers(1, 90),
    seed=st.integers(0, 2**16),
)
def test_warp_equals_float64_transcription(c, hx, wx, hy, wy, cv, tau, clamp, chunk_rows, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, c, hx, wx, generator=g)
    k = torch.randn(1, c, hy, wy, generator=g)
    v = torch.randn(1, cv, hy, wy, generator=g)
    got = mc.warp(q, k, v, AttentionSettings(tau=tau, clamp_negative=clamp, chunk_bytes=4 * hy * wy * chunk_rows))
    want = reference_warp(q, k, v, tau, clamp)
    assert got.shape == (1, cv, hx, wx)
    # Forward-error bound of a float32 softmax at temperature tau: cosines carry ~eps rounding,
    # scaled by 1/tau in the exponent; the output is a convex combination of the values.
    bound = 2 * torch.finfo(torch.float32).eps / tau * float(v.abs().max())
    assert float((got.double() - want).abs().max()) <= bound
    # Chunking changes nothing but summation order: the blocked result is the dense one.
    dense = attend_dense(q, k, v, AttentionSettings(tau=tau, clamp_negative=clamp))
    assert float((got - dense).abs().max()) <= bound


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(2, 24),
    hx=st.integers(1, 9), wx=st.integers(1, 9), hy=st.integers(1, 9), wy=st.integers(1, 9),
    cv=st.integers(1, 5), cu=st.integers(1, 3),
    tau=st.sampled_from([0.005, 0.01, 0.1, 1.0]),
    clamp=st.booleans(),
    chunk_rows=st.integers(1, 90),
    seed=st.integers(0, 2**16),
)
def test_attend_both_ways_equals_two_float64_transcriptions(c, hx, wx, hy, wy, cv, cu, tau, clamp, chunk_rows, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, c, hx, wx, generator=g)
    k = torch.randn(1, c, hy, wy, generator=g)
    kv = torch.randn(1, cv, hy, wy, generator=g)
    qv = torch.randn(1, cu, hx, wx, generator=g)
    # chunk_bytes holds two blocks of chunk_rows rows
    forward, backward = mc.correspondence.attend_both_ways(q, k, kv, qv, AttentionSettings(tau=tau, clamp_negative=clamp, chunk_bytes=2 * 4 * hy * wy * chunk_rows))
    assert forward.shape == (1, cv, hx, wx) and backward.shape == (1, cu, hy, wy)
    eps = torch.finfo(torch.float32).eps
    # the same float32 softmax bound as test_warp_equals_float64_transcription; the backward
    # direction sums its softmax over blocks (rescaled partial sums), a few more roundings
    assert float((forward.double() - reference_warp(q, k, kv, tau, clamp)).abs().max()) <= 2 * eps / tau * float(kv.abs().max())
    assert float((backward.double() - reference_warp(k, q, qv, tau, clamp)).abs().max()) <= 4 * eps / tau * float(qv.abs().max())


def test_attend_both_ways_rescales_columns_whose_maximum_grows_late():
    """Query rows ordered from weakly to strongly aligned with every key, one row per block: each
    new block raises every column's maximum, so the running sums must be rescaled each time
    (without it the early, weak rows would dominate the backward softmax)."""
    c, n = 8, 6
    g = torch.Generator().manual_seed(4)
    k = torch.randn(1, c, 1, n, generator=g)
    noise = torch.randn(1, c, 1, n, generator=g)
    mix = torch.linspace(0.0, 1.0, n).view(1, 1, 1, n)  # query u: more and more like key u
    q = (1 - mix) * noise + mix * k
    kv = torch.randn(1, 2, 1, n, generator=g)
    qv = torch.arange(float(n)).view(1, 1, 1, n)
    forward, backward = mc.correspondence.attend_both_ways(q, k, kv, qv, AttentionSettings(tau=0.01, clamp_negative=False, chunk_bytes=2 * 4 * n))  # one row per block
    assert torch.allclose(forward.double(), reference_warp(q, k, kv, 0.01, False), atol=1e-4)
    assert torch.allclose(backward.double(), reference_warp(k, q, qv, 0.01, False), atol=1e-4)


@pytest.mark.parametrize("bq, bk, bv, bu", [(2, 1, 1, 1), (1, 2, 2, 1), (2, 2, 1, 2)])
def test_attend_both_ways_broadcasts_batches(bq, bk, bv, bu):
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(bq, 6, 3, 4, generator=g), torch.randn(bk, 6, 4, 2, generator=g)
    kv, qv = torch.randn(bv, 3, 4, 2, generator=g), torch.randn(bu, 2, 3, 4, generator=g)
    forward, backward = mc.correspondence.attend_both_ways(q, k, kv, qv, AttentionSettings(tau=0.05, chunk_bytes=2 * 4 * 8 * 5))
    assert torch.allclose(forward, mc.correspondence.attend(q, k, kv, AttentionSettings(tau=0.05)), atol=1e-5)
    assert torch.allclose(backward, mc.correspondence.attend(k, q, qv, AttentionSettings(tau=0.05)), atol=1e-5)
    with pytest.raises(ValueError, match="attend_both_ways.*batch"):
        mc.correspondence.attend_both_ways(q, k, kv, torch.randn(3, 2, 3, 4), AttentionSettings(tau=0.05))


@pytest.mark.parametrize("shape", [(64, 16, 16, 24, 20), (256, 32, 32, 32, 32), (8, 5, 40, 40, 5)])
def test_chunked_equals_dense_at_realistic_sizes(shape):
    c, hx, wx, hy, wy = shape
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, c, hx, wx, generator=g)
    k = torch.randn(1, c, hy, wy, generator=g)
    v = torch.randn(1, 4, hy, wy, generator=g)
    want = reference_warp(q, k, v, 0.005)
    small = mc.correspondence.attend(q, k, v, AttentionSettings(chunk_bytes=4 * hy * wy * 7))  # 7 rows per block: a ragged last block
    dense = attend_dense(q, k, v)
    assert rel_err(small, want) < 1e-5
    assert rel_err(small, dense) < 1e-5  # the memory-lean result equals the dense computation


def test_soft_argmax_flow_is_expected_exemplar_position():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 12, 4, 6, generator=g)
    k = torch.randn(1, 12, 5, 3, generator=g)
    flow = mc.correspondence.soft_argmax_flow(q, k, AttentionSettings(tau=0.05))
    want = ref.soft_warp(q[0].flatten(1), k[0].flatten(1), ref.pixel_grid(5, 3), 0.05).view(2, 4, 6)
    assert flow.shape == (1, 2, 4, 6)
    assert rel_err(flow[0], want) < 1e-5


def test_identical_features_warp_to_identity():
    """Sharply distinct features match themselves: the flow is the identity grid."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(1, 64, 6, 7, generator=g)
    flow = mc.correspondence.soft_argmax_flow(f, f)
    assert torch.allclose(flow, mc.correspondence.coordinate_grid(1, 6, 7), atol=1e-3)


@pytest.mark.parametrize("bq,bk,bv", [(1, 3, 3), (3, 1, 3), (3, 3, 1), (1, 1, 3), (3, 3, 3), (2, 1, 1)])
def test_batch_broadcasting_equals_per_item(bq, bk, bv):
    g = torch.Generator().manual_seed(4)
    q = torch.randn(bq, 8, 4, 5, generator=g)
    k = torch.randn(bk, 8, 3, 3, generator=g)
    v = torch.randn(bv, 2, 3, 3, generator=g)
    got = mc.warp(q, k, v, AttentionSettings(chunk_bytes=4 * 9 * 3))
    batch = max(bq, bk, bv)
    assert got.shape == (batch, 2, 4, 5)
    for b in range(batch):
        one = mc.warp(q[min(b, bq - 1):][:1], k[min(b, bk - 1):][:1], v[min(b, bv - 1):][:1], AttentionSettings(chunk_bytes=4 * 9 * 3))
        assert torch.allclose(got[b], one[0], atol=2 * torch.finfo(torch.float32).eps / 0.005 * float(v.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 64, 8, 8, generator=g).to(dtype)
    k = torch.randn(1, 64, 8, 8, generator=g).to(dtype)
    v = torch.randn(1, 4, 8, 8, generator=g).to(dtype)
    got = mc.warp(q, k, v)
    assert got.dtype == dtype
    want = reference_warp(q.double(), k.double(), v.double(), 0.005)  # same (rounded) inputs, exact maths
    # The only error left is rounding the result itself to the half type.
    assert rel_err(got, want) < 2 * torch.finfo(dtype).eps
    # What a naive half-precision evaluation would give: logits x 200 rounded in half precision.
    qn = mc.correspondence.centre_normalise(q).to(dtype).flatten(2)
    kn = mc.correspondence.centre_normalise(k).to(dtype).flatten(2)
    logits = torch.einsum("bcn,bcm->bnm", qn, kn).clamp(min=0) / torch.tensor(0.005, dtype=dtype)
    naive = torch.einsum("bnm,bcm->bcn", torch.softmax(logits.float(), -1).to(dtype), v.flatten(2)).view(1, 4, 8, 8)
    assert rel_err(naive, want) > 5 * rel_err(got, want)


def test_result_stays_on_input_device_and_values_dtype():
    q = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    v = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    out = mc.warp(q, q, v)
    assert out.dtype == torch.float64 and out.device == v.device


# ---- bad input --------------------------------------------------------------------------------

GOOD_Q = torch.randn(1, 4, 3, 3)
GOOD_V = torch.randn(1, 2, 3, 3)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(condition_features=torch.randn(4, 3, 3)), ["condition_features", "4 dimensions"]),
        (dict(exemplar_features=torch.randn(1, 1, 4, 3, 3)), ["exemplar_features", "4 dimensions"]),
        (dict(exemplar_features=torch.randn(1, 5, 3, 3)), ["channel count", "4 and 5"]),
        (dict(exemplar_values=torch.randn(1, 2, 4, 4)), ["exemplar_values", "grid"]),
        (dict(condition_features=torch.randn(2, 4, 3, 3), exemplar_values=torch.randn(3, 2, 3, 3)), ["batch sizes", "2", "3"]),
        (dict(condition_features=torch.full((1, 4, 3, 3), float("nan"))), ["condition_features", "NaN"]),
        (dict(exemplar_values=torch.full((1, 2, 3, 3), float("inf"))), ["exemplar_values", "Inf"]),
        (dict(condition_features=torch.randn(1, 4, 0, 3)), ["condition_features", "empty"]),
        (dict(settings=dict(tau=0.05)), ["settings", "AttentionSettings"]),
        (dict(condition_features=torch.ones(1, 4, 3, 3, dtype=torch.int64)), ["floating-point"]),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, words):
    args = dict(condition_features=GOOD_Q, exemplar_features=GOOD_Q, exemplar_values=GOOD_V)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        mc.warp(**args)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert str(info.value).startswith("warp:")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(tau=0.0), ["tau", "> 0"]),
        (dict(tau=-1.0), ["tau"]),
        (dict(tau=float("nan")), ["tau"]),
        (dict(chunk_bytes=0), ["chunk_bytes"]),
        (dict(clamp_negative=1), ["clamp_negative", "True or False"]),
        (dict(fused="yes"), ["fused", "True or False"]),
    ],
)
def test_bad_attention_settings_are_refused_where_they_are_made(kwargs, words):
    with pytest.raises(ValueError) as info:
        AttentionSettings(**kwargs)
    assert str(info.value).startswith("AttentionSettings:")
    for word in words:
        assert word in str(info.value), str(info.value)
