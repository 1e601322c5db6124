"""What host-side code asks of a matcher beyond ``midms_core.Matcher.bind``.

A ``midms_core`` matcher knows nothing of ComfyUI. Two things only the host side can do, and
every matcher that needs them implements :class:`HostMatcher`:

* ``prepare_for_host()``: called right before each ``bind`` (see ``match.bind``): load the
  matcher's own networks through the host's model management (which may have offloaded them).
* ``capture_hook(grid)``: called once per sampler run, before its first step (see
  ``interleaved_sampler``): a way to read the matcher's x0 features from the sampler's OWN model
  call instead of an extra pass per step.

Any other matcher (e.g. the edge matcher) goes through :func:`as_host_matcher`, which gives it
the defaults: nothing to load, no capture.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

from ..midms_core import FeatureCapture, Matcher, MatchFeatures, MatchSide


class CaptureHook(NamedTuple):
    """How a sampler run records a matcher's features during its own model calls.

    install: model_options -> a copy with the recording patch added (the caller's dict and the
        user's model stay as they were).
    capture: where the records go; the sampler clears it before each model call, and the bound
        ``x0_features`` take this step's records from it.
    """

    install: Callable[[dict], dict]
    capture: FeatureCapture


class HostMatcher(Matcher):
    """A midms_core Matcher with the host's two hooks; the defaults do nothing."""

    def prepare_for_host(self) -> None:
        """Load what ``bind`` and ``x0_features`` need onto the host's device (through the host's
        model management). Called before each bind. Default: nothing to load."""

    def capture_hook(self, grid: tuple[int, int]) -> CaptureHook | None:
        """A :class:`CaptureHook` for a sampler run on latents of ``grid`` (h, w), or None: the
        bound ``x0_features`` compute the features themselves (default)."""
        return None


class PlainHostMatcher(HostMatcher):
    """A midms_core matcher without host hooks, seen as a HostMatcher (the defaults)."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.name = matcher.name

    def bind(self, condition: MatchSide, exemplar: MatchSide) -> MatchFeatures:
        return self.matcher.bind(condition, exemplar)

    def bind_each(self, condition: MatchSide, exemplars: Sequence[MatchSide]) -> list[MatchFeatures]:
        return self.matcher.bind_each(condition, exemplars)

    def without_alignment(self) -> "PlainHostMatcher":
        plain = self.matcher.without_alignment()
        return self if plain is self.matcher else PlainHostMatcher(plain)


def as_host_matcher(matcher: Matcher) -> HostMatcher:
    """``matcher`` itself when it implements HostMatcher, else a view of it with the defaults."""
    return matcher if isinstance(matcher, HostMatcher) else PlainHostMatcher(matcher)
