"""Cancellation points: a host's interrupt check runs inside the streamed matching loops."""

from __future__ import annotations

import threading

import pytest
import torch

import midms_core as mc
from midms_core.alignment import search_similarity
from midms_core.cancellation import cancellable, checkpoint
from midms_core.correspondence import attend, attend_both_ways
from midms_core.attention import AttentionSettings
from midms_core.confidence import ConfidenceSettings


class Stop(Exception):
    pass


def counting_check(stop_after=None):
    calls = []

    def check():
        calls.append(1)
        if stop_after is not None and len(calls) >= stop_after:
            raise Stop()

    return calls, check


def test_checkpoint_is_a_no_op_outside_and_restored_after():
    checkpoint()  # nothing installed
    calls, check = counting_check()
    with cancellable(check):
        checkpoint()
        with cancellable(lambda: None):
            checkpoint()  # the inner check, not the outer one
        checkpoint()
    checkpoint()
    assert len(calls) == 2
    with pytest.raises(ValueError, match="cancellable: 'check' must be callable"):
        with cancellable(None):
            pass


def test_checks_are_per_thread():
    calls, check = counting_check()
    seen = []
    with cancellable(check):
        t = threading.Thread(target=lambda: (checkpoint(), seen.append(True)))
        t.start()
        t.join()
    assert seen == [True] and calls == []


def test_attend_checks_between_blocks_and_stops():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, 16, 16, generator=g), torch.randn(1, 8, 16, 16, generator=g)
    values = torch.randn(1, 2, 16, 16, generator=g)
    chunk = 16 * 256 * 4  # 16 query rows per block: 16 blocks
    calls, check = counting_check()
    with cancellable(check):
        out = attend(q, k, values, AttentionSettings(tau=0.05, chunk_bytes=chunk))
    assert len(calls) == 16
    assert torch.equal(out, attend(q, k, values, AttentionSettings(tau=0.05, chunk_bytes=chunk)))  # checks change nothing
    calls, check = counting_check(stop_after=3)
    with pytest.raises(Stop), cancellable(check):
        attend(q, k, values, AttentionSettings(tau=0.05, chunk_bytes=chunk))
    assert len(calls) == 3


def test_warp_with_confidence_and_search_stop_at_the_check():
    g = torch.Generator().manual_seed(1)
    cond, exem = torch.randn(1, 8, 16, 16, generator=g), torch.randn(1, 8, 16, 16, generator=g)
    for run in (lambda: mc.warp_with_confidence(cond, exem, torch.randn(1, 4, 16, 16, generator=g)),
                lambda: search_similarity(cond, exem)):
        calls, check = counting_check(stop_after=1)
        with pytest.raises(Stop), cancellable(check):
            run()
        assert len(calls) == 1


def test_one_pass_both_ways_checks_between_blocks():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 8, 16, 16, generator=g), torch.randn(1, 8, 16, 16, generator=g)
    qv, kv = torch.randn(1, 2, 16, 16, generator=g), torch.randn(1, 2, 16, 16, generator=g)
    chunk = 16 * 256 * 4  # 16 blocks
    calls, check = counting_check(stop_after=2)
    with pytest.raises(Stop), cancellable(check):
        attend_both_ways(q, k, kv, qv, AttentionSettings(tau=0.05, chunk_bytes=chunk))
    assert len(calls) == 2
    calls, check = counting_check()
    with cancellable(check):
        mc.warp_with_confidence(q, k, torch.randn(1, 4, 16, 16, generator=g), AttentionSettings(chunk_bytes=chunk),
                                ConfidenceSettings(passes="one"))
    assert len(calls) >= 16
