"""Cancellation points inside long computations, without a host dependency.

A host (ComfyUI's interrupt button) installs a check with :func:`cancellable`; the streamed
loops of matching and alignment call :func:`checkpoint` once per block, which runs the check.
The check raises to cancel (the host's own exception type passes through untouched). Outside
``cancellable`` a checkpoint does nothing. The check lives in a context variable, so concurrent
runs in other threads or tasks do not see each other's.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

_CHECK: ContextVar[Optional[Callable[[], None]]] = ContextVar("midms_cancellation_check", default=None)

__all__ = ["cancellable", "checkpoint"]


@contextmanager
def cancellable(check: Callable[[], None]) -> Iterator[None]:
    """Run the enclosed code with ``check`` called at every :func:`checkpoint`."""
    if not callable(check):
        raise ValueError(f"cancellable: 'check' must be callable, got {type(check).__name__}")
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def checkpoint() -> None:
    """Give the installed check a chance to cancel (raise); a no-op when none is installed."""
    check = _CHECK.get()
    if check is not None:
        check()
