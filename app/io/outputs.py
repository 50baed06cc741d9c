"""Output folders checked before any work: a folder that cannot take the outputs is refused
before a model is loaded, not after every case has been computed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.errors import OutputError

__all__ = ["OutputError", "prepare_output_dir"]


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and prove it writable by creating and removing a file in it.

    A real write is tried rather than ``os.access``, which answers "writable" to root on a
    read-only file system and to anyone on a folder whose quota or mount refuses writes.

    Args:
        path: the output folder.

    Returns:
        The folder, as given.

    Raises:
        OutputError: ``path`` is an existing file (or lies under one), cannot be created, or
            refuses a new file; the message names the path and the reason.

    Example:
        >>> prepare_output_dir("/tmp/volseg_out")  # doctest: +SKIP
        PosixPath('/tmp/volseg_out')
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output '{path}' is an existing file, not a folder; give a folder for the label maps")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"cannot create output folder '{path}': '{blocker}' is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder '{path}': {err.strerror or err}") from err
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".volseg_write_probe.")
    except OSError as err:
        raise OutputError(f"output folder '{path}' is not writable: {err.strerror or err}") from err
    os.close(fd)
    os.unlink(probe)
    return path
