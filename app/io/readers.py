"""Reading CT and MRI volumes with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series.

SimpleITK (ITK's GDCM reader for DICOM) applies the DICOM rescale slope and intercept, so CT
arrives in Hounsfield units (HU), and sorts slices by their position along the slice normal.
"""

from __future__ import annotations

from pathlib import Path

from app.errors import InputError
from app.io.formats import VOLUME_SUFFIXES, strip_volume_suffix, volume_format  # re-exported: callers import them from here
from app.io.integrity import VoxelCounts, check_voxel_budget, check_data_file, describe, read_file_information, sequence_of, verify_file

__all__ = ["VOLUME_SUFFIXES", "describe_series", "dicom_series", "dicom_series_ids", "dicom_tags", "read_image_information", "read_volume", "strip_volume_suffix", "verify_volume", "volume_format"]


def dicom_series_ids(folder: str | Path) -> tuple[str, ...]:
    """Series instance UIDs of the DICOM series in ``folder`` (GDCM), without ITK's warning.

    ``sitk.ImageSeriesReader.GetGDCMSeriesIDs`` prints "No Series were found" to stderr, with
    the path of ITK's build folder, for every folder that holds none: an empty case folder, a
    BraTS case folder, a dataset folder. Callers that only ask whether a folder is a series then
    leak ITK noise before their own message. Here ITK's warnings are off during the call, and a
    folder without files is not scanned.

    Returns:
        The UIDs, ``()`` where there is none or ``folder`` is not a folder.

    Example:
        >>> dicom_series_ids("/nonexistent")
        ()
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_file() for p in folder.iterdir()):
        return ()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def dicom_series(folder: str | Path) -> dict[str, list[str]]:
    """DICOM series in ``folder``: series instance UID -> slice files sorted by position (GDCM).

    Raises:
        InputError: the folder does not exist or holds no DICOM series.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}': DICOM folder does not exist")
    uids = dicom_series_ids(folder)
    if not uids:
        raise InputError(f"'{folder}': no DICOM series found (empty folder or no readable DICOM slices)")
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}


def dicom_tags(path: str | Path, tags: dict[str, str]) -> dict[str, str]:
    """Name -> value of the DICOM ``tags`` (name -> ``"gggg|eeee"``, SimpleITK's keys) in the
    header of one DICOM file; ``""`` for a tag the file lacks. Reads the header only.

    Raises:
        InputError: the header cannot be read.

    Example:
        >>> dicom_tags("IM0001.dcm", {"description": "0008|103e"})  # doctest: +SKIP
        {'description': 'AX FLAIR'}
    """
    header = read_file_information(path)
    return {name: header.GetMetaData(tag).strip() if header.HasMetaDataKey(tag) else "" for name, tag in tags.items()}


def describe_series(series: dict[str, list[str]]) -> str:
    """``series`` (:func:`dicom_series`) as text for a message: each series' SeriesDescription
    (0008,103E) where it has one, its UID, and its number of slices."""
    parts = []
    for uid, files in series.items():
        try:
            description = dicom_tags(files[0], {"description": "0008|103e"})["description"]
        except InputError:
            description = ""
        parts.append(f"'{description}' {uid} ({len(files)} slices)" if description else f"{uid} ({len(files)} slices)")
    return "; ".join(parts)


def read_volume(path: str | Path, series_uid: str | None = None, check_finite: bool = True,
                refuse_all_zero: bool | None = None):
    """Read a 3D volume as a ``SimpleITK.Image`` (geometry: spacing in mm, origin, direction, LPS),
    verified first (:mod:`app.io.integrity`): never a truncated file read as zeros.

    Before any voxel is read, the header's voxel count is checked against the budget
    (``VOLSEG_MAX_VOXELS``) and a NIfTI file's data against its header (gzip stream to its
    end-of-stream marker, CRC-32 and length; file size for ``.nii``).

    Args:
        path: a NIfTI, NRRD or MetaImage file, or a folder holding a DICOM series.
        series_uid: which series of a DICOM folder holding several.
        check_finite: reject volumes with NaN or infinite voxels.
        refuse_all_zero: reject a volume whose voxels are all zero; None (the default) does so
            where the file name names an MRI sequence (``<case>_{t1,t1ce,t2,flair}``), so a
            label map (``_seg``, all zero in a tumour-free case) still reads.

    Returns:
        The image; DICOM CT in HU (rescale slope/intercept applied).

    Raises:
        InputError: missing or unreadable file, unsupported type, empty DICOM folder, several
            DICOM series and no ``series_uid`` (the message lists them), a volume that is not 3D,
            over the voxel budget, truncated or corrupt data, NaN or infinite voxels, an
            all-zero sequence. The message names the file.

    Example:
        >>> image = read_volume("Brats18_X/Brats18_X_flair.nii.gz")  # doctest: +SKIP
        >>> image.GetSize(), image.GetSpacing()  # doctest: +SKIP
        ((240, 240, 155), (1.0, 1.0, 1.0))
    """
    import SimpleITK as sitk

    path = Path(path)
    fmt = volume_format(path)
    refuse_zero = sequence_of(path) is not None if refuse_all_zero is None else refuse_all_zero
    counts, header_read = None, False
    try:
        if fmt == "dicom":
            reader = _dicom_reader(path, series_uid)
            header_read = True
            shown = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's "Non uniform sampling" (its build path): check_slice_positions says it, naming the slices
            try:
                image = reader.Execute()
            finally:
                sitk.ProcessObject.SetGlobalWarningDisplay(shown)
            check_slice_positions(path, reader)
        else:
            if not path.is_file():
                raise InputError(f"'{path}': file does not exist")
            counts = verify_file(path, scan_voxels=check_finite or refuse_zero)  # NIfTI: stored values
            if counts is not None:  # refused before ITK reads it (ITK reads a NIfTI NaN as 0)
                counts.check(path, refuse_zero, check_finite)
            header_read = True
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK reports unreadable files as RuntimeError
        reason = str(err).strip().splitlines()[-1]
        check_data_file(path)  # a detached header whose data file is missing: named (raised while err is handled)
        if header_read:  # ITK's NRRD and MetaImage readers refuse data shorter than the header says
            # ITK's last line is then C's errno of an earlier call ("Reason: No such file or directory" for a file that is there)
            said = "" if reason.startswith("Reason:") else f": {reason}"
            raise InputError(f"{describe(path)}: header is readable but its voxel data is not (truncated or corrupt file){said}") from err
        raise InputError(f"'{path}': not a readable {fmt} image ({reason})") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path}': expected a 3D single-channel volume, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s), size {image.GetSize()}")
    if counts is None and (check_finite or refuse_zero):
        counts = VoxelCounts()
        counts.add(sitk.GetArrayViewFromImage(image))
        counts.check(path, refuse_zero, check_finite)
    return image


def _dicom_reader(folder: Path, series_uid: str | None):
    """An ``ImageSeriesReader`` for one series of ``folder``, its voxel count within budget."""
    import SimpleITK as sitk

    series = dicom_series(folder)
    if series_uid is None and len(series) > 1:
        raise InputError(f"'{folder}': {len(series)} DICOM series found ({describe_series(series)}); put each series in a folder of its own "
                         "(`volseg dicom-sort FOLDER --output DIR` copies them so, one study folder a study, which volseg segment "
                         "takes as a case; app.io.read_volume takes series_uid=)")
    uid = series_uid or next(iter(series))
    if uid not in series:
        raise InputError(f"'{folder}': no DICOM series with UID {uid}; found {', '.join(series)}")
    first = read_file_information(series[uid][0])
    width, height = first.GetSize()[:2]
    check_voxel_budget(folder, (width, height, len(series[uid])), first.GetNumberOfComponents())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[uid])
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, for check_slice_positions
    return reader


#: Largest departure of a DICOM slice gap from the series' median gap, as a fraction of it: a
#: missing slice departs by 100 %, a duplicate one by 100 %; rounding of positions by far less.
SLICE_GAP_TOLERANCE = 0.1


def check_slice_positions(folder: str | Path, reader) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced along the slice normal.

    ITK stacks the slices on one regular grid whatever their ImagePositionPatient (0020,0032)
    says: with a slice missing, every slice after the gap lands at the wrong position, and
    volumes come out wrong, with only a warning of ITK's on stderr ("Non uniform sampling or
    missing slices detected"). The gaps are the positions projected onto the normal of
    ImageOrientationPatient (0020,0037) of the first slice. Series without these tags, or of
    fewer than 3 slices, are not checked.

    Args:
        folder: the series folder (for the message).
        reader: the ``SimpleITK.ImageSeriesReader`` after ``Execute``, with
            ``MetaDataDictionaryArrayUpdateOn``.

    Raises:
        InputError: a gap departs from the median gap by more than :data:`SLICE_GAP_TOLERANCE`
            of it; the message names the two slice files and both distances.
    """
    import numpy as np

    files = list(reader.GetFileNames())
    keys = ("0020|0032", "0020|0037")
    if len(files) < 3 or not all(reader.HasMetaDataKey(i, k) for i in range(len(files)) for k in keys):
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, keys[0]).split("\\")] for i in range(len(files))])
        orientation = np.array([float(v) for v in reader.GetMetaData(0, keys[1]).split("\\")])
    except ValueError:
        return
    if positions.shape[1] != 3 or orientation.shape != (6,):
        return
    gaps = np.abs(np.diff(positions @ np.cross(orientation[:3], orientation[3:])))
    nominal = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - nominal)))
    if nominal > 0 and abs(gaps[worst] - nominal) > SLICE_GAP_TOLERANCE * nominal:
        left_out = _unread_dicom_files(Path(files[0]).parent, files)
        unread = (f"; {', '.join(repr(p.name) for p in left_out[:3])}{' ...' if len(left_out) > 3 else ''} in the folder could not be read "
                  "as part of the series (truncated or damaged?)") if left_out else ""
        raise InputError(f"'{folder}': DICOM slices are not evenly spaced: {Path(files[worst]).name} and {Path(files[worst + 1]).name} "
                         f"are {gaps[worst]:.2f} mm apart, the other slices {nominal:.2f} mm "
                         f"({'a missing slice?' if gaps[worst] > nominal else 'a duplicate slice?'}){unread}. A volume needs one regular grid: "
                         "export the complete series again")


def _unread_dicom_files(folder: Path, series_files: list[str]) -> list[Path]:
    """Files of ``folder`` that look like DICOM (``.dcm`` / ``.ima`` names, or the ``DICM`` marker
    at byte 128) but belong to no series GDCM finds there: slices it could not read (a truncated
    copy). Asked only on the way to an error."""
    import SimpleITK as sitk

    listed = {Path(f).resolve() for f in series_files}
    for uid in dicom_series_ids(folder):  # other series of the folder are not unread slices
        listed.update(Path(f).resolve() for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.resolve() in listed:
            continue
        looks = path.suffix.lower() in (".dcm", ".ima")
        if not looks:
            with path.open("rb") as handle:
                looks = handle.read(132)[128:132] == b"DICM"
        if looks:
            found.append(path)
    return found


def read_image_information(path: str | Path):
    """Geometry of a volume, reading voxels only where the format needs it (DICOM series).

    Returns:
        An object answering ``GetSize``, ``GetSpacing``, ``GetOrigin`` and ``GetDirection``
        (SimpleITK, LPS): an ``ImageFileReader`` after ``ReadImageInformation`` for files, the
        image itself for a DICOM folder.

    Raises:
        InputError: missing, unreadable or unsupported input.
    """
    path = Path(path)
    if volume_format(path) == "dicom":
        return read_volume(path, check_finite=False, refuse_all_zero=False)
    if not path.is_file():
        raise InputError(f"'{path}': file does not exist")
    return read_file_information(path)


def verify_volume(path: str | Path, refuse_all_zero: bool = True) -> None:
    """Every check of :mod:`app.io.integrity` on one input volume, keeping no voxels (here,
    beside :func:`read_volume`, which it falls back to, so that the checks need no reader).

    NIfTI is checked in one streaming pass; NRRD, MetaImage and DICOM are read (one volume at
    a time, after the budget check) by :func:`read_volume` and let go.

    Args:
        path: a volume file or DICOM series folder.
        refuse_all_zero: refuse a volume whose voxels are all zero (an MRI sequence, a CT).

    Raises:
        InputError: missing, unreadable, over budget, truncated, corrupt, NaN or infinite
            voxels, or all zero; the message names the file (and case and sequence where the
            file name gives them).

    Example:
        >>> verify_volume("Brats18_X/Brats18_X_flair.nii.gz")  # doctest: +SKIP
    """
    path = Path(path)
    if volume_format(path) == "nifti" and path.is_file():
        counts = verify_file(path, scan_voxels=True)
        if counts is not None:
            counts.check(path, refuse_all_zero)
            return
    read_volume(path, refuse_all_zero=refuse_all_zero)
