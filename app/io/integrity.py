"""Verified reading: a damaged volume is refused before inference, never read as zeros.

ITK's NIfTI reader fills the voxels missing from a truncated ``.nii`` or ``.nii.gz`` with
zeros and never checks the gzip CRC, and a 97-byte header may declare a billion voxels. So
before any voxel array is allocated, every file VolSeg segments passes three checks here:

* the voxel count its header declares is within a budget (``VOLSEG_MAX_VOXELS``, default
  2**30 voxels per volume), read from the header alone;
* a gzip stream is inflated in 1 MiB chunks to its end-of-stream marker, its CRC-32 and
  length checked by Python's :mod:`gzip`, and must hold the bytes the header declares
  (data offset + voxels x bytes per voxel); an uncompressed NIfTI file must be that long;
* its voxels hold no NaN or infinite value, and an MRI sequence is not all zero.

NRRD and MetaImage files are read by ITK readers that refuse short data themselves; they get
the budget here and the value checks after reading (:func:`app.io.read_volume`).
"""

from __future__ import annotations

import functools

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.constants import MODALITIES
from app.errors import InputError
from app.io.formats import strip_volume_suffix, volume_format

#: Environment variable holding the most voxels (all channels) one volume may declare.
VOXEL_BUDGET_ENV = "VOLSEG_MAX_VOXELS"

#: Default voxel budget: 2**30 voxels (a 1024^3 volume; 2 GiB as int16, 4 GiB as float32).
DEFAULT_MAX_VOXELS = 2**30

#: Bytes inflated or read per step: memory use stays flat whatever the volume size.
CHUNK_BYTES = 2**20

#: Bytes a gzip stream may inflate to past what its header declares (NIfTI extensions and
#: padding live before the data offset, so a valid file has none); more is refused.
INFLATE_SLACK_BYTES = 2**20

_SEQUENCE_NAME = re.compile(rf"^(?P<case>.+)_(?P<seq>{'|'.join(MODALITIES)})$", re.IGNORECASE)


def max_voxels() -> int:
    """The voxel budget: ``VOLSEG_MAX_VOXELS`` where set, else :data:`DEFAULT_MAX_VOXELS`.

    Raises:
        InputError: ``VOLSEG_MAX_VOXELS`` is set but is not a positive integer.

    Example:
        >>> max_voxels() == DEFAULT_MAX_VOXELS or VOXEL_BUDGET_ENV in os.environ
        True
    """
    raw = os.environ.get(VOXEL_BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{VOXEL_BUDGET_ENV}={raw!r}: expected a positive voxel count such as 1073741824")
    return value


def sequence_of(path: str | Path) -> tuple[str, str] | None:
    """``(case_id, sequence)`` of a BraTS-named file (``Brats18_X_flair.nii.gz`` ->
    ``("Brats18_X", "flair")``), or None where the name names no MRI sequence."""
    match = _SEQUENCE_NAME.match(strip_volume_suffix(Path(path).name))
    return (match["case"], match["seq"].lower()) if match else None


def describe(path: str | Path) -> str:
    """How a message names a volume: ``case 'X': FLAIR file '/p/X_flair.nii.gz'`` for a
    BraTS-named file, ``DICOM series '/p/folder'`` or ``file '/p/x.nrrd'`` otherwise."""
    path = Path(path)
    if path.is_dir():
        return f"DICOM series '{path}'"
    named = sequence_of(path)
    if named:
        return f"case '{named[0]}': {named[1].upper().replace('CE', 'ce')} file '{path}'"
    return f"file '{path}'"


def check_voxel_budget(path: str | Path, size: tuple[int, ...], components: int = 1) -> None:
    """Refuse a volume whose header declares more voxels than :func:`max_voxels`.

    Args:
        path: the file, for the message.
        size: voxels per axis, as the header declares them.
        components: values per voxel (1 for a scalar volume).

    Raises:
        InputError: over budget; the message gives the count, the budget and the fix.
    """
    count, budget = int(np.prod([int(s) for s in size], dtype=object)) * int(components), max_voxels()
    if count > budget:
        shape = " x ".join(str(int(s)) for s in size)
        raise InputError(f"{describe(path)}: header declares {count:,} voxels ({shape}), over the budget of {budget:,}; "
                         f"set {VOXEL_BUDGET_ENV} to read larger volumes")


def read_file_information(path: str | Path):
    """A SimpleITK ``ImageFileReader`` after ``ReadImageInformation`` (no voxels read).

    Raises:
        InputError: the header cannot be read.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        check_data_file(Path(path))
        raise InputError(f"'{path}': not a readable {volume_format(path)} image ({str(err).strip().splitlines()[-1]})") from err
    return reader


def check_data_file(path: Path) -> None:
    """Refuse a detached header (MetaImage ``.mhd``: ``ElementDataFile = x.raw``; NRRD ``.nhdr``:
    ``data file: x.raw``) whose data file does not exist, naming that file (ITK says only that it
    cannot read the header's file). Other files, and headers that hold their data or a list or
    pattern of files, pass.

    Raises:
        InputError: the data file the header names does not exist.
    """
    if path.suffix.lower() not in (".mhd", ".nhdr"):
        return
    try:
        with open(path, "rb") as f:
            header = f.read(65536).decode("latin-1")
    except OSError:
        return
    match = re.search(r"^\s*(?:ElementDataFile\s*=|data ?file\s*:)\s*(\S[^\r\n]*?)\s*$", header, flags=re.MULTILINE | re.IGNORECASE)
    if match is None or match.group(1).split()[0].upper() in ("LOCAL", "LIST") or "%" in match.group(1):
        return
    data = Path(match.group(1))
    data = data if data.is_absolute() else path.parent / data
    if not data.exists():
        raise InputError(f"{describe(path)}: its header names the data file '{data}', which does not exist (copy it beside the header)")


@dataclass
class VoxelCounts:
    """What a pass over the voxels found: NaN and infinite values, and any non-zero voxel."""

    nan: int = 0
    inf: int = 0
    nonzero: bool = False

    def add(self, values: np.ndarray) -> None:
        """Count one block of voxel values (any shape, any numeric dtype)."""
        if values.dtype.kind in "fc":
            self.nan += int(np.count_nonzero(np.isnan(values)))
            self.inf += int(np.count_nonzero(np.isinf(values)))
        self.nonzero = self.nonzero or bool(values.any())

    def check(self, path: str | Path, refuse_all_zero: bool, refuse_non_finite: bool = True) -> None:
        """Raise for NaN or infinite voxels (where ``refuse_non_finite``), and for an all-zero
        volume where ``refuse_all_zero``.

        Raises:
            InputError: naming the file, the counts and the problem.
        """
        if refuse_non_finite and (self.nan or self.inf):
            raise InputError(f"{describe(path)}: {self.nan:,} NaN and {self.inf:,} infinite voxel values; "
                             "VolSeg segments finite intensities only (fix or re-export the volume)")
        if refuse_all_zero and not self.nonzero:
            raise InputError(f"{describe(path)}: every voxel is zero; the sequence holds no image (missing or blank export): "
                             "move the file out of the case to segment it without this sequence (a missing sequence is zero-filled, "
                             "and the run says what that costs)")


def verify_nifti_data(path: str | Path, scan_voxels: bool = False) -> VoxelCounts | None:
    """Check that a NIfTI file's header is within the voxel budget and that the file holds every
    byte the header declares, streaming in chunks.

    A ``.nii.gz`` is inflated to its end-of-stream marker with its CRC-32 and length checked;
    an uncompressed ``.nii`` is compared with its header by size, and read only to scan voxels.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        scan_voxels: also count NaN, infinite and non-zero voxels (raw stored values).

    Returns:
        The counts when ``scan_voxels``, else None.

    Raises:
        InputError: unreadable header, over the budget, truncated file or gzip stream, failed CRC, or a stream
            that inflates past its declared size; the message names the file.
    """
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj  # header only
        offset, dtype, shape = int(proxy.offset), np.dtype(proxy.dtype), tuple(int(s) for s in proxy.shape)
    except Exception as err:  # nibabel raises several types for corrupt headers
        raise InputError(f"{describe(path)}: not a readable NIfTI image ({type(err).__name__}: {err})") from err
    check_voxel_budget(path, shape)
    n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    expected = offset + n_bytes
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    declared = f"{expected:,} bytes ({' x '.join(map(str, shape))} {dtype.name} voxels from byte {offset})"
    if not gzipped:
        size = os.path.getsize(path)
        if size < expected:
            raise InputError(f"{describe(path)} is truncated: {size:,} bytes, its header declares {declared}")
        if not scan_voxels:
            return None
    counts = VoxelCounts() if scan_voxels and dtype.kind in "biufc" else None
    total = _stream(path, gzipped, offset, n_bytes, dtype, counts, expected + (INFLATE_SLACK_BYTES if gzipped else 0))
    if total < expected:
        raise InputError(f"{describe(path)} is truncated: its gzip stream inflates to {total:,} bytes, its header declares {declared}")
    if gzipped and total > expected + INFLATE_SLACK_BYTES:
        raise InputError(f"{describe(path)}: its gzip stream inflates past the {declared} its header declares; "
                         "refused as corrupt or a decompression bomb")
    return counts


def _stream(path: str | Path, gzipped: bool, offset: int, n_bytes: int, dtype: np.dtype,
            counts: VoxelCounts | None, stop_after: int) -> int:
    """Read ``path`` (inflating it where gzipped) chunk by chunk; count voxels in
    ``[offset, offset + n_bytes)`` into ``counts``. Returns the bytes read, stopping past ``stop_after``."""
    total, pending = 0, b""
    try:
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                start, total = total, total + len(chunk)
                if counts is not None and total > offset and start < offset + n_bytes:
                    data = pending + chunk[max(offset - start, 0): offset + n_bytes - start]
                    usable = len(data) - len(data) % dtype.itemsize
                    counts.add(np.frombuffer(data[:usable], dtype=dtype))
                    pending = data[usable:]
                if total > stop_after:
                    break
    except EOFError as err:
        raise InputError(f"{describe(path)} is truncated (gzip stream ends before its end-of-stream marker)") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        what = "gzip CRC check failed" if "CRC" in str(err) else f"gzip: {err}"
        raise InputError(f"{describe(path)} is corrupt ({what}); re-copy or re-export the file") from err
    return total


def verify_file(path: str | Path, scan_voxels: bool = False) -> VoxelCounts | None:
    """Header checks of one volume file before its voxels are read: budget, then (NIfTI) data.

    Args:
        path: a NIfTI, NRRD or MetaImage file.
        scan_voxels: for NIfTI, also count NaN, infinite and non-zero voxels while streaming
            (ITK reads a NIfTI NaN as 0, so only the stored values show it).

    Returns:
        The voxel counts (None unless ``scan_voxels`` on a NIfTI file).

    Raises:
        InputError: unreadable header, over budget, truncated or corrupt data.
    """
    if volume_format(path) == "nifti":
        stat = Path(path).stat()
        return _verified_nifti(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, scan_voxels)
    reader = read_file_information(path)
    check_voxel_budget(path, reader.GetSize(), reader.GetNumberOfComponents())
    return None


@functools.lru_cache(maxsize=64)
def _verified_nifti(path: str, size: int, mtime_ns: int, scan_voxels: bool) -> VoxelCounts | None:
    """:func:`verify_file` of a NIfTI file, remembered by path, size and modification time: the
    case check and the reader of the same file a moment later stream it once, not twice (a
    refused file raises and is not remembered)."""
    counts = verify_nifti_data(path, scan_voxels)  # budget from nibabel's header first
    read_file_information(path)  # and ITK reads the header too
    return counts
