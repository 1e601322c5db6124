"""Argument checks shared by the public functions of ``midms_core``.

Every check raises ``ValueError`` whose message names the calling function, the argument and
what is expected, so that a node (or a user reading a traceback) can tell what to fix.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def check_tensor(
    where: str,
    name: str,
    value: object,
    rank: int,
    layout: str,
    finite: bool = True,
) -> Tensor:
    """Check that ``value`` is a non-empty tensor of the given rank with finite values.

    ``layout`` is a human-readable shape such as ``"(B, C, H, W)"`` used in the message.
    """
    if not isinstance(value, Tensor):
        raise ValueError(f"{where}: '{name}' must be a torch.Tensor {layout}, got {type(value).__name__}")
    if value.dim() != rank:
        raise ValueError(
            f"{where}: '{name}' must have {rank} dimensions {layout}, got shape {tuple(value.shape)}"
        )
    if value.numel() == 0:
        raise ValueError(f"{where}: '{name}' is empty (shape {tuple(value.shape)}); every dimension of {layout} must be > 0")
    if not (value.is_floating_point() or value.is_complex()):
        raise ValueError(f"{where}: '{name}' must be a floating-point tensor, got {value.dtype}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{where}: '{name}' contains NaN or Inf; check the upstream model or image")
    return value


def broadcast_batch(where: str, **tensors: Tensor) -> int:
    """Common batch size of tensors whose batch sizes are equal or 1 (1 broadcasts)."""
    sizes = {name: t.shape[0] for name, t in tensors.items()}
    others = {s for s in sizes.values() if s != 1}
    if len(others) > 1:
        described = ", ".join(f"'{n}' has {s}" for n, s in sizes.items())
        raise ValueError(f"{where}: batch sizes must match or be 1 (1 broadcasts); {described}")
    return others.pop() if others else 1


def check_positive(where: str, name: str, value: float, upper: float | None = None) -> float:
    """A finite real number > 0 (and <= ``upper`` when given)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: '{name}' must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        bound = f"in (0, {upper}]" if upper is not None else "> 0 and finite"
        raise ValueError(f"{where}: '{name}' must be {bound}, got {value}")
    return value


def check_in_range(where: str, name: str, value: float, low: float, high: float) -> float:
    """A finite real number in the closed interval [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: '{name}' must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{where}: '{name}' must be in [{low}, {high}], got {value}")
    return value


def check_choice(where: str, name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{where}: '{name}' must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_int(where: str, name: str, value: object, low: int) -> int:
    """An integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: '{name}' must be an integer >= {low}, got {value!r}")
    return value


def check_bool(where: str, name: str, value: object) -> bool:
    """True or False (not 0 / 1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{where}: '{name}' must be True or False, got {value!r}")
    return value
