"""Every file the pack writes is written through :func:`atomic_write`: a reader (the Learned
Matcher Loader, a resumed run, a user's viewer) sees the old file or the new one, never half of
one, and a write that fails leaves the old file as it was and nothing beside it.

    with atomic_write(path) as tmp:     # tmp: a Path in path's folder, not yet created
        save_file(tensors, str(tmp))    # any writer that takes a file name
    # here tmp has taken path's name (os.replace); on an exception it is removed instead

The temporary name is ``<name>.partial-<random>``: in the target's folder (so the rename is
atomic: one filesystem), unique (two writers of one target never share it), and ending in
neither the target's extension nor a known one, so a leftover of a killed process is never
listed as a model. Two consequences for writers: one that picks its format from the name must
be told it (``Image.save(tmp, format="PNG")``); ``torch.save`` names its archive after the file
minus its last extension, here the target's full name, as a plain ``<name>.partial`` would.
The file is created by the writer, with the mode it gives (no ``mkstemp``: that would make every
file 0600).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: Union[str, os.PathLike], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an exception the
    file written there takes ``path``'s name, else it is removed and ``path`` is untouched.

    ``overwrite=False``: never replace an existing ``path`` (hard link, so a file that appears
    meanwhile is not overwritten either; on a filesystem without hard links, an existence check
    then a rename): FileExistsError, and the temporary file is removed. The folder must exist."""
    target = Path(path)
    tmp = target.with_name(f"{target.name}.partial-{secrets.token_hex(6)}")
    try:
        yield tmp
        _flush_to_disk(tmp)
        if overwrite:
            os.replace(tmp, target)
        else:
            _publish_new(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _flush_to_disk(tmp: Path) -> None:
    """The written bytes on disk before the rename (fsync), so that after a power cut the name
    holds the old file or the whole new one, not a renamed empty file."""
    if os.path.exists(tmp):
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def _publish_new(tmp: Path, target: Path) -> None:
    """``tmp`` takes the name ``target`` only if no file has it (the temporary name is removed
    by the caller)."""
    try:
        os.link(tmp, target)  # fails if target exists: never overwrites
    except FileExistsError:
        raise FileExistsError(f"'{target}' already exists") from None
    except OSError:  # no hard links on this filesystem
        if os.path.exists(target):
            raise FileExistsError(f"'{target}' already exists") from None
        os.replace(tmp, target)
