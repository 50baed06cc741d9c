"""Output folders checked before any work: a folder that cannot take the outputs is refused
before a model is loaded, not after every case has been computed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.errors import OutputError

__all__ = ["OutputError", "check_output_path", "prepare_output_dir"]


def check_output_path(path: str | Path, name: str = "output", folder: bool = True) -> None:
    """Refuse, before any work and without creating anything, an output path that cannot be
    one: a folder (``folder``) that is an existing file, a file that is an existing folder, or
    either under a file where one of its folders should be.

    Args:
        path: the output folder or file.
        name: how the message calls it (the option, e.g. ``"--csv"``).
        folder: whether ``path`` is to be a folder (else a file).

    Raises:
        OutputError: naming ``name``, the path and what is in the way.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{name} '{path}' is an existing file, not a folder")
    if not folder and path.is_dir():
        raise OutputError(f"{name} '{path}' is a folder; give a file name in it, e.g. '{path / path.name}.json'")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"cannot {'create' if folder else 'write'} {name} '{path}': '{blocker}' is a file")


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
    check_output_path(path, "output folder")
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
