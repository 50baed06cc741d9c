"""Atomic writes: a temporary file in the target folder, then ``os.replace``.

A crash leaves either the old file or the new one, never a half-written NIfTI or checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (ending in ``suffix``, so writers
    that pick a format by extension work), then rename it over ``path``; on any error the
    temporary file is removed and ``path`` is untouched. Returns the path.

    Raises:
        OSError: the write failed (a full disk, a quota): ``cannot write '<path>': <reason>``, of
            the same type and errno, naming ``path`` rather than the temporary file.
        RuntimeError: SimpleITK's writer failed: the same message, ITK's last line, for ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.strerror:
            # a full disk, a quota: name the file being written, not the temporary one (or none)
            raise type(err)(err.errno, f"cannot write '{path}': {err.strerror}") from err
        if isinstance(err, RuntimeError) and str(err).startswith("Exception thrown in SimpleITK"):
            reason = str(err).strip().splitlines()[-1].replace(tmp, str(path))
            raise RuntimeError(f"cannot write '{path}': {reason}") from err
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, as UTF-8 (whatever the locale: CI runs with an
    ASCII one, where ``write_text`` refuses a plus-minus sign); returns the path."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_nifti(array: Any, affine: Any, path: str | Path, header: Any = None) -> Path:
    """Write a NIfTI volume atomically with nibabel.

    Args:
        array: the voxel array, shape ``(H, W, D)``, written with its own dtype.
        affine: the 4x4 voxel-to-world matrix (mm).
        path: target ``.nii`` or ``.nii.gz`` path.
        header: optional NIfTI header to copy (dtype and scaling are reset to the array's).
    """
    import nibabel as nib
    import numpy as np

    array = np.asarray(array)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=header)
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    return atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=suffix)
