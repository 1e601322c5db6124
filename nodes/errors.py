"""How a node reports bad input: its widget values checked against its declaration, and
midms_core's ValueErrors named after the node (NodeInputError itself lives in host_adapters,
whose KSAMPLER functions raise it too)."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

from ..host_adapters import NodeInputError

__all__ = ["NodeInputError", "check_widget_values", "node_errors"]


def check_widget_values(node_class, display_name: str, values: dict) -> None:
    """NodeInputError for a widget value outside what the node declares: a number beyond its
    min / max, a choice not in its list, a non-boolean BOOLEAN. Hosts check only some of this
    (the 2024 host skips optional inputs, and every input reached only through optional links),
    and an API prompt or an old saved workflow can carry anything."""
    spec = node_class.INPUT_TYPES()
    own_checks = set(getattr(node_class, "VALIDATED_BY_NODE", ()))  # inputs the node checks itself
    for group in ("required", "optional"):
        for name, declared in (spec.get(group) or {}).items():
            if name not in values or name in own_checks:
                continue
            value, kind = values[name], declared[0]
            options = declared[1] if len(declared) > 1 and isinstance(declared[1], dict) else {}
            if isinstance(kind, (list, tuple)):
                if value not in kind:
                    raise NodeInputError(f"{display_name}: '{name}' is {value!r}, not one of {list(kind)}; pick one of "
                                         "those (a workflow saved by another version of the pack may carry an old value)")
            elif kind == "BOOLEAN":
                if not isinstance(value, bool):
                    raise NodeInputError(f"{display_name}: '{name}' must be true or false, got {value!r}")
            elif kind in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                        or (kind == "INT" and not float(value).is_integer()):
                    raise NodeInputError(f"{display_name}: '{name}' must be {'a whole' if kind == 'INT' else 'a'} number, "
                                         f"got {value!r}")
                low, high = options.get("min"), options.get("max")
                if (low is not None and value < low) or (high is not None and value > high):
                    show = (lambda v: f"{int(v)}") if kind == "INT" else (lambda v: f"{v:g}")
                    allowed = " and ".join(part for part in (
                        None if low is None else f">= {show(low)}", None if high is None else f"<= {show(high)}") if part)
                    raise NodeInputError(f"{display_name}: '{name}' is {show(value)}, but it must be {allowed}; "
                                         "set it within that range")


def node_errors(display_name: str) -> Callable:
    """Check the widget values against the node's declaration (:func:`check_widget_values`),
    then prefix ValueErrors from midms_core with the node's display name, so the UI says which
    node failed; errors that already name a node pass through unchanged."""

    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(self, *args, **kwargs):
            try:
                # hosts pass inputs by keyword; scripts and tests may pass them by position
                values = signature.bind_partial(self, *args, **kwargs).arguments
                check_widget_values(type(self), display_name, values)
                return fn(self, *args, **kwargs)
            except NodeInputError:
                raise
            except ValueError as err:
                text = str(err)
                raise NodeInputError(text if text.startswith(display_name) else f"{display_name}: {text}") from err

        return run

    return wrap
