"""Writing label maps in the exact geometry (shape, spacing, origin, direction) of their input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.io.atomic import atomic_write, atomic_write_nifti
from app.io.readers import read_image_information, volume_format

_EXTENSIONS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "metaimage": ".mha"}


def output_suffix(reference: str | Path, fmt: str = "same") -> str:
    """File ending for a label written beside ``reference``: its own format, or NIfTI for DICOM
    input or ``fmt="nifti"``."""
    ref_fmt = volume_format(reference)
    return ".nii.gz" if fmt == "nifti" or ref_fmt == "dicom" else _EXTENSIONS[ref_fmt]


def save_label_map(label: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """Write a label map with the shape, affine and header of a NIfTI ``reference``, atomically
    (nibabel: the reference's header, qform and sform codes included, carry over unchanged).

    Args:
        label: ``(H, W, D)`` integer array (uint8 for BraTS codes 0/1/2/4).
        reference: the NIfTI input whose geometry the output must carry.
        path: output ``.nii.gz`` path.

    Raises:
        ValueError: ``label``'s shape differs from the reference's.
    """
    import nibabel as nib

    ref = nib.load(str(reference))
    if tuple(label.shape) != tuple(ref.shape[:3]):
        raise ValueError(f"label shape {tuple(label.shape)} differs from '{reference}' shape {tuple(ref.shape[:3])}")
    header = ref.header.copy()
    return atomic_write_nifti(np.asarray(label, dtype=np.uint8), ref.affine, path, header=header)


def write_label_like(label: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """Write ``label`` atomically with the geometry of ``reference``.

    Args:
        label: ``(H, W, D)`` integer array in the reference's voxel order ``(i, j, k)``, as MONAI
            ``LoadImage`` and nibabel return it (SimpleITK's own arrays are ``(k, j, i)``).
        reference: the input volume (file or DICOM folder).
        path: output file; ``.nii.gz``/``.nii`` via nibabel with the reference's header where
            the reference is NIfTI, else SimpleITK (``.nrrd``, ``.mha``, ``.nii.gz``).

    Raises:
        ValueError: ``label``'s shape differs from the reference's.
        app.data.verify.InputError: the reference cannot be read.
    """
    path = Path(path)
    if volume_format(reference) == "nifti" and path.name.endswith((".nii.gz", ".nii")):
        return save_label_map(label, reference, path)
    return _write_like(np.asarray(label, dtype=np.uint8), reference, path, "label")



def write_map_like(values: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """Write a float32 map (an uncertainty map, a probability) atomically with the geometry of
    ``reference``, through SimpleITK (``.nii.gz``, ``.nrrd``, ``.mha``).

    Args:
        values: ``(H, W, D)`` array in the reference's voxel order ``(i, j, k)``.
        reference: the input volume (file or DICOM folder).
        path: output file.

    Raises:
        ValueError: ``values``' shape differs from the reference's.
        app.data.verify.InputError: the reference cannot be read.
    """
    return _write_like(np.asarray(values, dtype=np.float32), reference, Path(path), "map")


def _write_like(array: np.ndarray, reference: str | Path, path: Path, what: str) -> Path:
    """Write ``array`` ``(H, W, D)`` with the spacing, origin and direction of ``reference``,
    through SimpleITK, atomically; ``what`` names the array in the shape error."""
    import SimpleITK as sitk

    ref = read_image_information(reference)
    if tuple(array.shape) != tuple(ref.GetSize()):
        raise ValueError(f"{what} shape {tuple(array.shape)} differs from '{reference}' size {tuple(ref.GetSize())}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(ref.GetSpacing())
    image.SetOrigin(ref.GetOrigin())
    image.SetDirection(ref.GetDirection())
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True), suffix=suffix)
