"""Training losses (midms_core.training.losses) against plain float64 transcriptions of their equations."""

from __future__ import annotations

import math

import pytest
import torch

from midms_core.training.losses import (
    correlation_logits,
    cycle_loss,
    domain_alignment_loss,
    feature_normalize,
    latent_reconstruction_loss,
    supervised_flow_loss,
    warp_weights,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _n(f):
    """float64 n(f) = f / (||f|| + eps) over channels, element by element."""
    out = torch.empty_like(f)
    for b in range(f.shape[0]):
        for i in range(f.shape[2]):
            for j in range(f.shape[3]):
                v = f[b, :, i, j]
                out[b, :, i, j] = v / (math.sqrt(float((v * v).sum())) + 2.220446049250313e-16)
    return out


def _softmax_rows(x):
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for r in range(x.shape[1]):
            e = [math.exp(float(v - x[b, r].max())) for v in x[b, r]]
            s = sum(e)
            out[b, r] = torch.tensor([v / s for v in e], dtype=x.dtype)
    return out


def test_feature_normalize():
    f = _randn(2, 5, 3, 4)
    torch.testing.assert_close(feature_normalize(f), _n(f))


def test_domain_alignment_matches_the_transcription_and_detaches_the_exemplar():
    cond, truth, ref = _randn(2, 6, 3, 3, seed=1), _randn(2, 6, 3, 3, seed=2), _randn(2, 6, 3, 3, seed=3)
    expected = (_n(cond) - _n(truth)).abs().mean() + (_n(ref) * _n(cond) - _n(ref) * _n(truth)).abs().mean()
    cond.requires_grad_(True)
    ref.requires_grad_(True)
    loss = domain_alignment_loss(cond, truth, ref)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert ref.grad is None  # the exemplar term is a stop-gradient weight


def test_correlation_logits_are_clamped_cosines_over_tau():
    q, k = _randn(1, 4, 2, 3, seed=4), _randn(1, 4, 3, 2, seed=5)
    out = correlation_logits(q, k, tau=0.01)
    assert out.shape == (1, 6, 6)
    for u in range(6):
        for v in range(6):
            a = q[0, :, u // 3, u % 3] - q[0, :, u // 3, u % 3].mean()
            c = k[0, :, v // 2, v % 2] - k[0, :, v // 2, v % 2].mean()
            cos = float((a * c).sum()) / math.sqrt(float((a * a).sum()) * float((c * c).sum()))
            assert out[0, u, v].item() == pytest.approx(max(cos, 0.0) / 0.01, rel=1e-5, abs=1e-4)
    unclamped = correlation_logits(q, k, tau=0.01, clamp_negative=False)
    assert (unclamped < 0).any() and torch.equal(unclamped.clamp(min=0), out)


def test_cycle_loss_goes_there_and_back_with_the_transposed_softmax():
    logits = 3.0 * _randn(2, 6, 4, seed=6)  # condition 6 positions, exemplar 2 x 2
    y = _randn(2, 3, 2, 2, seed=7)
    p = _softmax_rows(logits)
    q = _softmax_rows(logits.transpose(1, 2))
    yf = y.flatten(2).transpose(1, 2)
    expected = (q @ (p @ yf) - yf).abs().mean()
    torch.testing.assert_close(cycle_loss(logits, y), expected)
    wp, wq = warp_weights(logits)
    torch.testing.assert_close(wp, p)
    torch.testing.assert_close(wq, q)
    # a one-to-one correspondence with sharp logits closes the cycle
    perm = torch.tensor([2, 0, 3, 1])
    sharp = torch.full((1, 4, 4), -1e4, dtype=torch.float64)
    sharp[0, torch.arange(4), perm] = 0.0
    assert cycle_loss(sharp, y[:1]).item() < 1e-12


def test_latent_reconstruction_is_the_self_warp_error():
    logits = 2.0 * _randn(1, 4, 4, seed=8)
    z = _randn(1, 3, 2, 2, seed=9)
    zf = z.flatten(2).transpose(1, 2)
    expected = ((_softmax_rows(logits) @ zf - zf) ** 2).mean()
    torch.testing.assert_close(latent_reconstruction_loss(logits, z), expected)
    identity = torch.full((1, 4, 4), -1e4, dtype=torch.float64) + 1e4 * torch.eye(4, dtype=torch.float64)
    assert latent_reconstruction_loss(identity, z).item() < 1e-12


def test_supervised_flow_loss_is_the_mean_soft_argmax_error_over_valid_cells():
    logits = _randn(1, 6, 6, seed=10)  # a 2 x 3 grid on both sides
    truth = _randn(1, 2, 2, 3, seed=11).abs()
    valid = torch.tensor([[[1, 0, 1], [1, 1, 0]]], dtype=torch.float64)
    p = _softmax_rows(logits)
    total, count = 0.0, 0
    for u in range(6):
        ex = sum(float(p[0, u, v]) * (v % 3) for v in range(6))
        ey = sum(float(p[0, u, v]) * (v // 3) for v in range(6))
        if valid[0, u // 3, u % 3]:
            total += math.hypot(ex - float(truth[0, 0, u // 3, u % 3]), ey - float(truth[0, 1, u // 3, u % 3]))
            count += 1
    assert supervised_flow_loss(logits, truth, valid).item() == pytest.approx(total / count, rel=1e-9)
    # per sample, then the mean over the batch (a sample without truth counts 0)
    pair = supervised_flow_loss(torch.cat([logits, logits]), torch.cat([truth, truth]), torch.cat([valid, 0 * valid]))
    assert pair.item() == pytest.approx(total / count / 2, rel=1e-9)
    # sharp logits at the true cells: no error
    target = torch.tensor([[[2, 0, 1], [1, 2, 0]], [[1, 0, 0], [1, 1, 0]]], dtype=torch.float64).unsqueeze(0)
    sharp = torch.full((1, 6, 6), -1e4, dtype=torch.float64)
    for u in range(6):
        sharp[0, u, int(target[0, 1, u // 3, u % 3]) * 3 + int(target[0, 0, u // 3, u % 3])] = 0.0
    assert supervised_flow_loss(sharp, target, torch.ones(1, 2, 3)).item() < 1e-9
    assert supervised_flow_loss(logits, truth, torch.zeros(1, 2, 3)).item() == 0.0
    with pytest.raises(ValueError, match="share one latent grid"):
        supervised_flow_loss(_randn(1, 6, 4), truth, valid)


def test_feature_matching_is_the_weighted_l1_with_detached_targets():
    from midms_core.training.losses import FEATURE_WEIGHTS, feature_matching_loss

    a = [_randn(1, 2, 3, 3, seed=20 + i).requires_grad_(True) for i in range(5)]
    b = [_randn(1, 2, 3, 3, seed=30 + i).requires_grad_(True) for i in range(5)]
    expected = sum(w * (x - y).abs().mean() for x, y, w in zip(a, b, (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)))
    loss = feature_matching_loss(a, b)
    torch.testing.assert_close(loss, expected)
    assert FEATURE_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    loss.backward()
    assert all(t.grad is not None for t in a) and all(t.grad is None for t in b)
    with pytest.raises(ValueError, match="as many"):
        feature_matching_loss(a[:2], b)


def test_contextual_loss_matches_the_transcription():
    from midms_core.training.losses import contextual_loss

    x, y = _randn(2, 4, 2, 3, seed=40), _randn(2, 4, 2, 3, seed=41)
    total = 0.0
    for b in range(2):
        centre = y[b].mean(0)  # per position, over channels
        xs = [(x[b, :, i // 3, i % 3] - centre[i // 3, i % 3]) for i in range(6)]
        ys = [(y[b, :, j // 3, j % 3] - centre[j // 3, j % 3]) for j in range(6)]
        xs = [v / (math.sqrt(float((v * v).sum())) + 2.220446049250313e-16) for v in xs]
        ys = [v / (math.sqrt(float((v * v).sum())) + 2.220446049250313e-16) for v in ys]
        best = []
        for i in range(6):
            d = [1 - float((xs[i] * ys[j]).sum()) for j in range(6)]
            dn = [v / (min(d) + 1e-3) for v in d]
            e = [math.exp((1 - v) / 0.1) for v in dn]
            best.append(max(e) / sum(e))
        total += -math.log(sum(best) / 6)
    assert contextual_loss(x, y).item() == pytest.approx(total / 2, rel=1e-9)
    # identical features: every row's best match is itself, the loss is lower than for unrelated ones
    assert contextual_loss(y, y).item() < contextual_loss(x, y).item()


def test_supervised_match_loss_is_the_nll_of_the_nearest_true_cell():
    from midms_core.training.losses import supervised_match_loss

    logits = 2.0 * _randn(1, 6, 6, seed=50)  # a 2 x 3 grid on both sides
    truth = torch.tensor([[[0.2, 1.6, 2.4], [0.9, -0.3, 5.0]], [[0.0, 0.6, 1.4], [0.7, 0.2, 1.1]]],
                         dtype=torch.float64).unsqueeze(0)
    valid = torch.tensor([[[1, 1, 0], [1, 1, 1]]], dtype=torch.float64)
    total, count = 0.0, 0
    for u in range(6):
        if not valid[0, u // 3, u % 3]:
            continue
        x = min(max(round(float(truth[0, 0, u // 3, u % 3])), 0), 2)
        y = min(max(round(float(truth[0, 1, u // 3, u % 3])), 0), 1)
        row = [float(v) for v in logits[0, u]]
        log_z = math.log(sum(math.exp(v) for v in row))
        total += log_z - row[y * 3 + x]
        count += 1
    assert supervised_match_loss(logits, truth, valid).item() == pytest.approx(total / count, rel=1e-9)
    assert supervised_match_loss(logits, truth, 0 * valid).item() == 0.0
