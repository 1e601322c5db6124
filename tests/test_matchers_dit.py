"""DiT block features (midms_core.matchers.dit) against plain float64 transcriptions."""

from __future__ import annotations

import pytest
import torch

from midms_core.matchers.dit import (
    MASSIVE_RATIO,
    adaln_features,
    default_block,
    fold_tokens,
    massive_channels,
    token_grid,
)


def _tokens(b=2, l=12, d=16, seed=0):
    return torch.randn(b, l, d, generator=torch.Generator().manual_seed(seed))


def test_fold_tokens_is_raster_order_and_ignores_appended_tokens():
    tokens = _tokens(l=3 * 4 + 5)  # 5 reference tokens after the image's
    folded = fold_tokens(tokens, (3, 4))
    assert folded.shape == (2, 16, 3, 4)
    for r in range(3):
        for c in range(4):
            assert torch.equal(folded[:, :, r, c], tokens[:, r * 4 + c])
    with pytest.raises(ValueError, match="12 tokens cannot fill a 4 x 4 grid"):
        fold_tokens(tokens[:, :12], (4, 4))


def test_token_grid_rounds_up_like_the_hosts_padding():
    assert token_grid((8, 8), 2) == (4, 4)
    assert token_grid((9, 7), 2) == (5, 4)
    assert token_grid((9, 7), 1) == (9, 7)
    with pytest.raises(ValueError, match="patch_size"):
        token_grid((8, 8), 0)


def test_massive_channels_finds_the_outliers_and_nothing_in_an_ordinary_state():
    tokens = _tokens(l=64, d=32)
    assert not massive_channels(tokens).any()
    spiked = tokens.clone()
    spiked[0, :, 5] += 800.0  # Flux-like: a few channels orders of magnitude above the rest
    spiked[0, :, 20] -= 500.0
    spiked[1, :, 7] += 300.0
    found = massive_channels(spiked)
    assert found[0].nonzero().flatten().tolist() == [5, 20]
    assert found[1].nonzero().flatten().tolist() == [7]
    # just below the ratio is kept
    level = spiked[1].abs().mean(0)
    edge = tokens.clone()
    edge[1, :, 3] = tokens[1, :, 3].sign() * 0.9 * MASSIVE_RATIO * float(level.median())
    assert not massive_channels(edge)[1, 3]


def _reference(tokens, shift, scale, discard):
    """float64: zero the discarded channels, LayerNorm over D (no affine, eps 1e-6), modulate."""
    x = tokens.double().clone()
    for b in range(x.shape[0]):
        for d in discard[b]:
            x[b, :, d] = 0.0
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-6)
    out = y * (1 + scale.double().unsqueeze(1))
    return out if shift is None else out + shift.double().unsqueeze(1)


def test_adaln_features_match_the_transcription():
    tokens = _tokens(l=20, d=16)
    tokens[0, :, 3] *= 5000.0
    shift, scale = _tokens(1, 2, 16, seed=1)[0], 0.3 * _tokens(1, 2, 16, seed=2)[0]
    out = adaln_features(tokens, shift, scale)
    torch.testing.assert_close(out.double(), _reference(tokens, shift, scale, [[3], []]), rtol=1e-5, atol=1e-5)
    # (B, 1, D) modulation as Flux's blocks give it; shift None: scale-only modulation (SD3 variant)
    torch.testing.assert_close(adaln_features(tokens, shift.unsqueeze(1), scale.unsqueeze(1)), out)
    torch.testing.assert_close(adaln_features(tokens, None, scale).double(), _reference(tokens, None, scale, [[3], []]),
                               rtol=1e-5, atol=1e-5)
    # without the discard the massive channel dominates the LayerNorm: other features
    kept = adaln_features(tokens, shift, scale, ratio=None)
    torch.testing.assert_close(kept.double(), _reference(tokens, shift, scale, [[], []]), rtol=1e-5, atol=1e-5)
    assert (kept[0] - out[0]).abs().max() > 0.5


def test_adaln_features_use_the_blocks_own_norm():
    tokens = _tokens(l=10, d=8)
    seen = []

    def norm(x):
        seen.append(x.shape)
        return 2.0 * x

    out = adaln_features(tokens, None, torch.zeros(2, 8), norm=norm, ratio=None)
    assert seen == [(2, 10, 8)]
    torch.testing.assert_close(out, 2.0 * tokens)


def test_default_block_is_ditfs_for_flux_and_the_same_share_elsewhere():
    assert default_block(19 + 38) == 28  # DiTF: block 28 of Flux-dev / schnell
    assert default_block(24) == 12  # SD3 medium
    assert default_block(38) == 19  # SD3.5 large
    assert default_block(1) == 0 and default_block(2) == 1
    with pytest.raises(ValueError, match="blocks"):
        default_block(0)
