"""Checks of an uploaded volume made before its voxels are read.

An upload is refused (HTTP 413 or 422, with a message naming the file) when a gzip stream
inflates past a byte budget (a "zip bomb"), when its header declares more voxels than a voxel
budget (a tiny header claiming 1500 x 1500 x 1000 voxels), or when its header points the reader
at another file: a MetaImage whose ``ElementDataFile`` is not ``LOCAL``, a detached NRRD
(``data file:``), a NIfTI pair header (magic ``ni1``). Label codes are checked as exact integers.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.serve.errors import DatastoreError

#: Header bytes searched for the end of a MetaImage or NRRD header.
HEADER_BYTES = 65536
#: SimpleITK image reader forced for each accepted ending (no sniffing of the content).
IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}


@dataclass(frozen=True)
class UploadLimits:
    """Budgets an upload must fit, checked before its voxels are read.

    Attributes:
        max_voxels: most voxels (all channels together) a header may declare; the default,
            2**28, is 1.8 times a 512 x 512 x 1000 CT and 7.5 times a 4-channel BraTS study.
        max_inflated_bytes: most bytes a gzip upload (``.nii.gz``) may inflate to.

    Example:
        >>> UploadLimits(max_voxels=10**6).max_inflated_bytes == 2 * 2**30
        True
    """

    max_voxels: int = 2**28
    max_inflated_bytes: int = 2 * 2**30


def check_inflated_size(data: bytes, filename: str, budget: int) -> None:
    """Stream-decompress a gzip upload, refusing it once it inflates past ``budget`` bytes.

    At most 1 MiB of inflated data is held at a time, so a small file that inflates to
    gigabytes costs a bounded amount of memory and the time to inflate ``budget`` bytes.

    Raises:
        DatastoreError: 413 past the budget, 422 for data that is not gzip.
    """
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(2**20):
                total += len(chunk)
                if total > budget:
                    raise DatastoreError(f"upload '{filename}' inflates to more than {budget / 2**20:.0f} MiB, the server's limit "
                                         "for decompressed uploads; send a smaller volume", 413)
    except (OSError, EOFError, zlib.error) as err:
        raise DatastoreError(f"upload '{filename}' is not a valid gzip file ({type(err).__name__}); a .nii.gz must be gzip-compressed", 422) from err


def check_voxel_budget(shape: Sequence[int], filename: str, budget: int) -> None:
    """Refuse a header that declares more than ``budget`` voxels, before anything is allocated.

    Raises:
        DatastoreError: 422 naming the declared shape and the budget.
    """
    voxels = math.prod(int(n) for n in shape)
    if voxels > budget:
        raise DatastoreError(f"upload '{filename}' declares {tuple(int(n) for n in shape)} = {voxels:,} voxels, more than the server's "
                             f"budget of {budget:,} voxels", 422)


def _head(data: bytes, suffix: str, size: int) -> bytes:
    if suffix.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                return stream.read(size)
        except (OSError, EOFError, zlib.error):
            return b""
    return data[:size]


def nifti_shape(data: bytes, filename: str, suffix: str) -> tuple[int, ...]:
    """The shape a single-file NIfTI-1 or NIfTI-2 header declares (nibabel reads the header).

    Raises:
        DatastoreError: 422 for no NIfTI header, or a pair header (``ni1``/``ni2``) whose voxels
            live in another file.
    """
    import nibabel as nib

    head = _head(data, suffix, 540)
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        if klass.may_contain_header(head):
            header = klass(binaryblock=head[: klass.template_dtype.itemsize], check=False)
            if header["magic"].item() != klass.single_magic:
                raise DatastoreError(f"upload '{filename}' is a NIfTI pair header (.hdr/.img) whose voxels live in another file; "
                                     "upload a single-file .nii or .nii.gz", 422)
            return tuple(int(n) for n in header.get_data_shape())
    raise DatastoreError(f"upload '{filename}' is not a NIfTI image: no NIfTI-1 or NIfTI-2 header", 422)


def _metaimage_data_file(head: bytes) -> bytes | None:
    for line in head.splitlines():
        key, sep, value = line.partition(b"=")
        if sep and key.strip().lower() == b"elementdatafile":  # the last header field: the data follow it
            return value.strip()
    return None


def _nrrd_detached(head: bytes) -> bool | None:
    lines = head.split(b"\n")
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        if not line:
            return False  # the blank line that ends the header: the data are attached
        key, sep, _ = line.partition(b":")
        if sep and key.replace(b" ", b"").lower() == b"datafile":
            return True
    return None


def check_attached_data(data: bytes, filename: str, suffix: str) -> None:
    """Refuse a header that would make the reader open another file on the server.

    A MetaImage (``.mha``) must say ``ElementDataFile = LOCAL``, a NRRD (``.nrrd``) must carry
    its data after the header (no ``data file:`` field), a NIfTI must be a single file. The
    message never quotes the header's file name nor anything read from that file.

    Raises:
        DatastoreError: 422 naming the upload and the rule.
    """
    head = _head(data, suffix, HEADER_BYTES)
    if suffix == ".mha":
        data_file = _metaimage_data_file(head)
        if data_file is None:
            raise DatastoreError(f"upload '{filename}' is not a MetaImage: no ElementDataFile line in its first {HEADER_BYTES // 1024} KiB", 422)
        if data_file.upper() != b"LOCAL":
            raise DatastoreError(f"upload '{filename}': a MetaImage upload must hold its voxels (ElementDataFile = LOCAL); its header "
                                 "points at another file, which the server does not read", 422)
    elif suffix == ".nrrd":
        if not head.startswith(b"NRRD"):
            raise DatastoreError(f"upload '{filename}' is not a NRRD file: it does not start with 'NRRD'", 422)
        detached = _nrrd_detached(head)
        if detached is None:
            raise DatastoreError(f"upload '{filename}': no end of the NRRD header (a blank line) in its first {HEADER_BYTES // 1024} KiB", 422)
        if detached:
            raise DatastoreError(f"upload '{filename}': a NRRD upload must hold its voxels after the header; its header names a "
                                 "detached data file, which the server does not read", 422)
    else:
        nifti_shape(data, filename, suffix)


def read_label_header(path: Path, filename: str, suffix: str, budget: int):
    """Read only the header of a label file with the reader of its ending; check the voxel budget.

    Returns:
        The ``SimpleITK.ImageFileReader`` with the header read (size, spacing, origin, direction).

    Raises:
        DatastoreError: 422 for an unreadable header or too many voxels.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(IMAGE_IO[suffix])
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DatastoreError(f"label '{filename}' is not a readable image", 422) from err
    check_voxel_budget((*reader.GetSize(), reader.GetNumberOfComponents()), filename, budget)
    return reader


def check_nifti_finite(path: Path, filename: str) -> None:
    """Refuse NaN or infinite voxels in a floating-point NIfTI, read with nibabel.

    ITK's NIfTI reader (SimpleITK) turns NaN into 0, which would pass a NaN label as background;
    nibabel reads the stored values.

    Raises:
        DatastoreError: 422 for NaN or infinite voxels.
    """
    import nibabel as nib

    image = nib.load(str(path))
    if image.get_data_dtype().kind in "fc" and not np.isfinite(np.asarray(image.dataobj)).all():
        raise DatastoreError(f"label '{filename}' has NaN or infinite values; label codes are integers", 422)


def exact_label_codes(values: np.ndarray, filename: str) -> set[int]:
    """The label codes among ``values`` (the distinct voxel values), refusing any that is not an exact integer.

    Args:
        values: distinct voxel values of a label map, any dtype.
        filename: the upload's name, for messages.

    Returns:
        The codes as Python ints.

    Raises:
        DatastoreError: 422 for NaN or infinite values, or values with a fraction (1.7 is not
            truncated to 1).

    Example:
        >>> sorted(exact_label_codes(np.array([0.0, 2.0, 4.0]), "l.nii.gz"))
        [0, 2, 4]
    """
    values = np.asarray(values).ravel()
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise DatastoreError(f"label '{filename}' has NaN or infinite values; label codes are integers", 422)
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise DatastoreError(f"label '{filename}' has values that are not integers, e.g. {[float(v) for v in fractional[:5]]}; "
                                 "label codes are exact integers (nothing is rounded)", 422)
    elif values.dtype.kind not in "iub":
        raise DatastoreError(f"label '{filename}' has pixel type {values.dtype}; label codes are integers", 422)
    return {int(v) for v in values}
