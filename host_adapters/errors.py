"""The error a MIDMs node reports to the host (the node names it carries: ``node_names``)."""

from __future__ import annotations


class NodeInputError(ValueError):
    """Bad input to a MIDMs node; the message names the node, the input and what to do."""


# The host reports an error's type as "<module>.<name>"; current hosts import packs under their
# folder's full path, which would put a path on screen. One stable name on every host. (No module
# "MIDMs" exists, so instances cannot be pickled; nothing in the host pickles exceptions.)
NodeInputError.__module__ = "MIDMs"
