"""Which rows of the host's batched model call are the positive prompt's (cond) rows."""

from __future__ import annotations

from typing import Callable

import torch

COND = 0  # comfy.samplers.calc_cond_uncond_batch marks cond chunks 0, uncond chunks 1


def record_cond(record: Callable[[torch.Tensor], None], x: torch.Tensor, kinds) -> None:
    """Record ``x`` (B, ...), or, in a sampler's batched call (``kinds``: the host's
    ``transformer_options["cond_or_uncond"]``, one entry per chunk of x, in order), each cond
    chunk as its own record (a capture averages same-shaped records, e.g. several prompts of
    one step)."""
    if kinds is None:
        record(x)
        return
    for kind, chunk in zip(kinds, x.chunk(len(kinds))):
        if kind == COND:
            record(chunk)
