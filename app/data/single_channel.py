"""Cases of one-channel bundles (CT): every volume file or DICOM series is one case.

A folder that is not itself a DICOM series is a dataset: each volume file in it (and each DICOM
series sub-folder) is a case, so a whole Decathlon ``imagesTs/`` folder is one call. The case ID
is the file name without its volume ending (``spleen_8.nii.gz`` -> ``spleen_8``) or the DICOM
folder's name; series folders of one name under different patient or study folders of a dataset
folder are named by their path in it (``P1/01_Abdomen_CT`` -> ``P1_01_Abdomen_CT``), as
``python -m monai.bundle run`` names them.

Example:
    >>> single_channel_cases(["../shared/data/msd_spleen/imagesTr"])  # doctest: +SKIP
    [('spleen_8', [PosixPath('../shared/data/msd_spleen/imagesTr/spleen_8.nii.gz')])]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from app.errors import InputError

__all__ = ["single_channel_cases"]


def _is_dicom_series(folder: Path) -> bool:
    from app.io.readers import dicom_series_ids

    return bool(dicom_series_ids(folder))


def _folder_cases(folder: Path) -> list[tuple[str, Path]]:
    """``(case_id, volume)`` of the volume files and DICOM series sub-folders of a dataset folder,
    as the bundles' inference workflow finds and names them (:func:`app.data.folder.folder_datalist`:
    series folders named alike under different patients get their path, ``P1_01_Abdomen_CT``)."""
    from app.data.folder import folder_datalist

    try:
        return [(item["case_id"], Path(item["image"])) for item in folder_datalist(folder, 1)]
    except FileNotFoundError as err:
        raise InputError(str(err)) from err


def single_channel_cases(inputs: Sequence[str | Path]) -> list[tuple[str, list[Path]]]:
    """Inputs of a one-channel bundle -> ``[(case_id, [volume]), ...]`` in input order.

    Args:
        inputs: volume files, DICOM series folders, and dataset folders of either.

    Returns:
        One case per volume; duplicates (the same file twice) are kept once.

    Raises:
        InputError: a path that does not exist, a dataset folder with no volume, or two
            different volumes with the same case ID (both would write ``<case_id>_seg``).
    """
    from app.io.readers import strip_volume_suffix

    paths = [Path(p) for p in inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}")
    volumes: list[tuple[str, Path]] = []
    for p in paths:
        is_dataset = p.is_dir() and not _is_dicom_series(p)
        volumes += _folder_cases(p) if is_dataset else [(p.name if p.is_dir() else strip_volume_suffix(p.name), p)]
    cases: dict[str, Path] = {}
    for case_id, volume in volumes:
        if case_id in cases and cases[case_id].resolve() != volume.resolve():
            raise InputError(f"case ID '{case_id}' names two volumes, '{cases[case_id]}' and '{volume}': both would write {case_id}_seg; rename one")
        cases.setdefault(case_id, volume)
    return [(case_id, [volume]) for case_id, volume in cases.items()]
