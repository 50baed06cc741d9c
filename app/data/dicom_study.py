"""Sorting a DICOM export whose series lie mixed in one folder (a PACS or CD export) into study
folders of one sub-folder a series, the layout :func:`app.data.cases.find_case` reads as a case."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from app.data.cases import sequence_from_description
from app.errors import InputError, OutputError

__all__ = ["sort_dicom_export"]

#: DICOM tags read from each series' first file: SeriesDescription, Modality, StudyInstanceUID, PatientID
_TAGS = {"description": "0008|103e", "modality": "0008|0060", "study": "0020|000d", "patient": "0010|0020"}


def _safe(text: str) -> str:
    """``text`` as a folder name: letters, digits, ``.``, ``-`` and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "series"


def sort_dicom_export(source: str | Path, out_dir: str | Path) -> dict[Path, list[tuple[str, str, str | None]]]:
    """Copy every DICOM series found in ``source`` (and its sub-folders) into
    ``out_dir/<patient ID>/<NN>_<SeriesDescription>/``, one study folder per StudyInstanceUID.

    The series are found by GDCM (SimpleITK's ``ImageSeriesReader``: SeriesInstanceUID, slices
    sorted by position); files are copied, never moved, so ``source`` stays as it is. Each study
    folder is then a case for ``volseg segment`` (:func:`app.data.cases.find_case` matches its
    series folders to T1 / T1ce / T2 / FLAIR by SeriesDescription; a series it cannot name, a
    localizer or DWI, is left out there).

    Args:
        source: the export folder.
        out_dir: where the study folders go; a study folder that exists already is refused.

    Returns:
        Study folder -> ``[(series folder name, SeriesDescription, sequence or None), ...]``.

    Raises:
        InputError: ``source`` is no folder or holds no DICOM series.
        OutputError: a study folder to be written exists already.
    """
    import SimpleITK as sitk

    from app.io.readers import dicom_series_ids, dicom_tags

    source, out_dir = Path(source), Path(out_dir)
    if not source.is_dir():
        raise InputError(f"'{source}': DICOM export folder does not exist or is not a folder")
    series = []  # (study UID, patient ID, description, modality, files)
    for folder, _, names in sorted(os.walk(source)):
        if not names:
            continue
        for uid in dicom_series_ids(folder):
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            tags = dicom_tags(files[0], _TAGS)
            series.append((tags["study"], tags["patient"], tags["description"], tags["modality"], files))
    if not series:
        raise InputError(f"'{source}': no DICOM series found (no readable DICOM slices in it or its sub-folders)")
    studies: dict[str, list[tuple[str, str, str, list[str]]]] = {}
    for study, patient, description, modality, files in series:
        studies.setdefault(study, []).append((patient, description, modality, files))
    names: dict[str, str] = {}
    for study, members in studies.items():  # one folder a study, named by patient ID (then by study UID where two share one)
        name = _safe(members[0][0] or source.name)
        names[study] = name if name not in names.values() else f"{name}_{_safe(study)[-8:]}"
    taken = [out_dir / name for name in names.values() if (out_dir / name).exists()]
    if taken:
        raise OutputError(f"study folder(s) exist already: {', '.join(map(str, taken))}; give another --output or remove them")
    written: dict[Path, list[tuple[str, str, str | None]]] = {}
    for study, members in studies.items():
        target = out_dir / names[study]
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        rows = []
        for n, (_, description, modality, files) in enumerate(sorted(members, key=lambda m: m[1]), start=1):
            folder = f"{n:02d}_{_safe(description or modality or 'series')}"
            (partial / folder).mkdir(parents=True)
            for f in files:
                shutil.copy2(f, partial / folder / Path(f).name)
            rows.append((folder, description, sequence_from_description(description) if modality in ("MR", "") else None))
        partial.rename(target)  # the study folder appears whole or not at all
        written[target] = rows
    return written
