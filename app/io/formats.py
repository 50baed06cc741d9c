"""Volume file formats by name: the file endings VolSeg reads and the format each one is.

The lowest module of :mod:`app.io` (it imports only :mod:`app.errors`), so the readers, the
integrity checks and the writers can all ask it without importing each other.

Example:
    >>> volume_format("Brats18_X_flair.nii.gz"), strip_volume_suffix("spleen_8.nii.gz")
    ('nifti', 'spleen_8')
"""

from __future__ import annotations

from pathlib import Path

from app.errors import InputError

__all__ = ["VOLUME_SUFFIXES", "strip_volume_suffix", "volume_format"]

#: File endings read as single-file volumes.
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def strip_volume_suffix(name: str) -> str:
    """``"spleen_8.nii.gz"`` -> ``"spleen_8"``: a file name without its volume ending (any case)."""
    return next((name[: -len(s)] for s in VOLUME_SUFFIXES if name.lower().endswith(s)), name)


def volume_format(path: str | Path) -> str:
    """``"nifti"``, ``"nrrd"``, ``"metaimage"`` or ``"dicom"`` (a folder) for a volume path.

    Raises:
        InputError: an ending VolSeg does not read.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for suffix, fmt in ((".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"), (".nhdr", "nrrd"), (".mha", "metaimage"), (".mhd", "metaimage")):
        if name.endswith(suffix):
            return fmt
    raise InputError(f"'{path}': unsupported file type; expected a DICOM folder or one of {', '.join(VOLUME_SUFFIXES)}")
