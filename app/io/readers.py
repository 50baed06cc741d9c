"""Reading CT and MRI volumes with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series.

SimpleITK (ITK's GDCM reader for DICOM) applies the DICOM rescale slope and intercept, so CT
arrives in Hounsfield units (HU), and sorts slices by their position along the slice normal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.data.verify import InputError

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


def dicom_series(folder: str | Path) -> dict[str, list[str]]:
    """DICOM series in ``folder``: series instance UID -> slice files sorted by position (GDCM).

    Raises:
        InputError: the folder does not exist or holds no DICOM series.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}': DICOM folder does not exist")
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    if not uids:
        raise InputError(f"'{folder}': no DICOM series found (empty folder or no readable DICOM slices)")
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}


def read_volume(path: str | Path, series_uid: str | None = None, check_finite: bool = True):
    """Read a 3D volume as a ``SimpleITK.Image`` (geometry: spacing in mm, origin, direction, LPS).

    Args:
        path: a NIfTI, NRRD or MetaImage file, or a folder holding a DICOM series.
        series_uid: which series of a DICOM folder holding several.
        check_finite: reject volumes with NaN or infinite voxels.

    Returns:
        The image; DICOM CT in HU (rescale slope/intercept applied).

    Raises:
        InputError: missing or unreadable file, unsupported type, empty DICOM folder, several
            DICOM series and no ``series_uid`` (the message lists them), a volume that is not 3D,
            NaN or infinite voxels. The message names the file.
    """
    import SimpleITK as sitk

    path = Path(path)
    fmt = volume_format(path)
    try:
        if fmt == "dicom":
            series = dicom_series(path)
            if series_uid is None and len(series) > 1:
                listing = "; ".join(f"{uid} ({len(files)} slices)" for uid, files in series.items())
                raise InputError(f"'{path}': {len(series)} DICOM series found, choose one by series UID: {listing}")
            uid = series_uid or next(iter(series))
            if uid not in series:
                raise InputError(f"'{path}': no DICOM series with UID {uid}; found {', '.join(series)}")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(series[uid])
            image = reader.Execute()
        else:
            if not path.is_file():
                raise InputError(f"'{path}': file does not exist")
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK reports unreadable files as RuntimeError
        raise InputError(f"'{path}': not a readable {fmt} image ({str(err).strip().splitlines()[-1]})") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path}': expected a 3D single-channel volume, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s), size {image.GetSize()}")
    if check_finite and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise InputError(f"'{path}': NaN or infinite voxel values")
    return image


def read_image_information(path: str | Path):
    """Geometry of a volume, reading voxels only where the format needs it (DICOM series).

    Returns:
        An object answering ``GetSize``, ``GetSpacing``, ``GetOrigin`` and ``GetDirection``
        (SimpleITK, LPS): an ``ImageFileReader`` after ``ReadImageInformation`` for files, the
        image itself for a DICOM folder.

    Raises:
        InputError: missing, unreadable or unsupported input.
    """
    import SimpleITK as sitk

    path = Path(path)
    fmt = volume_format(path)
    if fmt == "dicom":
        return read_volume(path, check_finite=False)
    if not path.is_file():
        raise InputError(f"'{path}': file does not exist")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"'{path}': not a readable {fmt} image ({str(err).strip().splitlines()[-1]})") from err
    return reader
