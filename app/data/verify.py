"""Checks on input volumes before they reach a model: readable, 3D, co-registered and verified
(complete data, within the voxel budget, finite, not all zero: :mod:`app.io.integrity`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.errors import InputError  # defined in the low module app.errors; re-exported here

__all__ = ["InputError", "check_case_images", "read_geometry", "read_header", "sitk_affine_ras"]


def read_header(path: str | Path):
    """Load a NIfTI header with nibabel (no voxel data).

    Raises:
        InputError: the file is missing, unreadable or not a NIfTI image.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"'{path}': file does not exist")
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for corrupt files
        raise InputError(f"'{path}': not a readable NIfTI image ({type(err).__name__}: {err})") from err


def sitk_affine_ras(image) -> np.ndarray:
    """4x4 voxel ``(i, j, k)`` -> RAS world (mm) matrix of a SimpleITK image (which is LPS); of a 4D
    image, that of its first three axes."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing()[:3], dtype=np.float64)
    affine[:3, 3] = image.GetOrigin()[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def read_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of a volume without reading its voxels where the format allows.

    NIfTI through nibabel (its header affine, exactly); NRRD, MetaImage and DICOM series through
    SimpleITK, as a RAS affine. A trailing singleton 4th axis is dropped. A 2D or 4D image gets
    its shape and an affine of NaN (:func:`check_case_images` refuses it by its shape).

    Raises:
        InputError: missing, unreadable or unsupported input.
    """
    from app.io.readers import read_image_information, volume_format

    if volume_format(path) == "nifti":
        img = read_header(path)
        return tuple(int(s) for s in img.shape), np.asarray(img.affine)
    image = read_image_information(path)
    size = tuple(int(s) for s in image.GetSize())
    if len(size) == 3 or (len(size) == 4 and size[3] == 1):
        return size, sitk_affine_ras(image)
    return size, np.full((4, 4), np.nan)  # a 2D slice, a 4D series: the caller's check names the file and the shape


def check_case_images(paths: Sequence[str | Path], atol_mm: float = 1e-3) -> tuple[tuple[int, ...], np.ndarray]:
    """Check that the modality volumes of a case are readable, 3D, same shape, same affine, and
    hold complete, finite, non-zero data (:func:`app.io.readers.verify_volume`).

    Headers are compared first; then each volume's data is streamed through once (gzip CRC and
    length, NaN, infinite and all-zero voxels), one volume at a time, before any model sees it.

    Args:
        paths: the image files or DICOM series folders (T1, T1ce, T2, FLAIR for BraTS), in any
            format :func:`read_geometry` reads.
        atol_mm: tolerance on affine entries, in mm.

    Returns:
        ``(shape, affine)`` of the first file: the geometry outputs must match.

    Raises:
        InputError: a missing or unreadable file, a 2D or 4D image, files whose shapes or
            affines disagree (the message names the file and both values), a header declaring
            more voxels than ``VOLSEG_MAX_VOXELS``, a truncated or corrupt file, NaN or infinite
            voxels, or an all-zero sequence (the message names case, sequence and file).

    Example:
        >>> shape, affine = check_case_images(case.images)  # doctest: +SKIP
    """
    from app.io.readers import verify_volume

    ref_path, ref_shape, ref_affine = None, None, None
    for path in paths:
        shape, affine = read_geometry(path)
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3 or min(shape) < 2:
            what = f"{len(shape)}D" if len(shape) != 3 else f"a single slice along axis {shape.index(min(shape))}"
            raise InputError(f"'{path}': expected a 3D volume, got shape {shape} ({what}); "
                             "VolSeg's bundles segment 3D volumes (one a sequence for the BraTS bundles)")
        if ref_shape is None:
            ref_path, ref_shape, ref_affine = path, shape, affine
            continue
        if shape != ref_shape:
            raise InputError(f"'{path}': shape {shape} differs from {ref_shape} of '{ref_path}'; "
                             "the modalities of a case must be co-registered on one voxel grid (sequences of one session on "
                             "different grids: volseg segment --resample)")
        if not np.allclose(affine, ref_affine, atol=atol_mm):
            corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T
            apart = float(np.linalg.norm((affine @ corners - ref_affine @ corners)[:3], axis=0).max())
            sizes = [np.linalg.norm(np.asarray(a)[:3, :3], axis=0) for a in (affine, ref_affine)]
            raise InputError(f"'{path}': its voxel grid differs from that of '{ref_path}': corner voxels up to {apart:.3g} mm apart "
                             f"(voxels {' x '.join(f'{v:.3g}' for v in sizes[0])} mm against {' x '.join(f'{v:.3g}' for v in sizes[1])} mm); "
                             "the modalities must be co-registered (sequences of one session on different grids: volseg segment --resample)")
    if ref_shape is None:
        raise InputError("no image file given")
    for path in paths:
        verify_volume(path)
    return ref_shape, np.asarray(ref_affine)
