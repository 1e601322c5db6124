"""The pack as a host loaded it: its node classes and modules, by the package name the host gave it.

A host imports this repository as a custom node package: named after its folder (``midms``,
:data:`harness.host.PACK_NAME`) on the 2024 host, after its full path on current ones. Objects
made by the pack's nodes are instances of THAT package's classes, so code driving the nodes
directly (the benchmarks) must use the same modules, not a second import of ``nodes`` from the
repository.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Iterable

from harness.host import PACK_NAME, InProcessHost


def loaded_pack(host: InProcessHost, names: Iterable[str], modules: Iterable[str] = ("types",)) -> SimpleNamespace:
    """Namespace of the node classes ``names`` (registered by the host: the pack's or its own,
    e.g. ``BasicScheduler``) and of the pack's modules ``nodes.<module>`` (attribute ``<module>``).
    Exits when a name is missing: the pack failed to import."""
    mapping = host.nodes.NODE_CLASS_MAPPINGS
    names = tuple(names)
    missing = [n for n in names if n not in mapping]
    if missing:
        raise SystemExit(f"the host did not register {missing}; did the pack fail to import?")
    # the package the host loaded the pack as: its folder name (2024 host) or full path (current)
    package = mapping["MIDMsInterleavedSampler"].__module__.rsplit(".nodes.", 1)[0]
    assert package.split("/")[-1] == PACK_NAME, package
    return SimpleNamespace(**{n: mapping[n] for n in names}, package=package,
                           **{m: importlib.import_module(f"{package}.nodes.{m}") for m in modules})
