"""A DICOM study exported one folder a series (``<study>/01_T1/``, ``<study>/02_T1_post_contrast/``,
...) is one case: each series folder is matched to its sequence by name or SeriesDescription."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from app.data.cases import find_case, sequence_from_description
from tests.conftest import case_files
from tests.io.dicom_util import write_dicom_series

#: folder name and SeriesDescription of each sequence, as a scanner export might name them
EXPORT = {"t1": ("01_T1", "T1 SE"), "t1ce": ("02_T1_post_contrast", "T1 post contrast"), "t2": ("03_T2", "Ax T2 FSE"), "flair": ("04_FLAIR", "AX FLAIR")}


def _study(phantom_case: Path, study: Path, export: dict[str, tuple[str, str]] = EXPORT) -> Path:
    for key, path in zip(("t1", "t1ce", "t2", "flair"), case_files(phantom_case)):
        folder, description = export[key]
        image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
        write_dicom_series(image, study / folder, series_uid=f"1.2.826.0.1.3680043.2.1125.7.{len(key)}{ord(key[-1])}", intercept=0.0,
                           description=description, modality="MR")
    return study


def test_sequence_from_series_descriptions():
    descriptions = {"AX FLAIR": "flair", "T2-FLAIR": "flair", "Ax T2 FSE": "t2", "T2W_TSE": "t2", "T1 post contrast": "t1ce", "T1+C": "t1ce",
                    "MPRAGE post Gd": "t1ce", "sag T1 KM": "t1ce", "T1_MPRAGE": "t1", "T1 SE": "t1", "T2*": None, "DWI": None, "localizer": None}
    assert {d: sequence_from_description(d) for d in descriptions} == descriptions


def test_a_study_of_series_folders_is_one_case_and_segments_as_its_nifti(phantom_root: Path, tmp_path: Path):
    study = _study(phantom_root / "Phantom_001", tmp_path / "data" / "Study_A")
    case = find_case(study, allow_missing=True)
    assert case.case_id == "Study_A"
    assert [p.name for p in case.images] == ["01_T1", "02_T1_post_contrast", "03_T2", "04_FLAIR"]  # T1ce by its description
    from app.cli import app as cli

    for given, out in ((study.parent, tmp_path / "out_dataset"), (study, tmp_path / "out_study")):  # a dataset of studies, and one study
        result = CliRunner().invoke(cli, ["segment", str(given), "--output", str(out), "--backend", "torch", "--quiet"])
        assert result.exit_code == 0, result.output
    nifti = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_001"), "--output", str(tmp_path / "out_nifti"), "--backend", "torch", "--quiet"])
    assert nifti.exit_code == 0, nifti.output
    from_dicom = nib.load(tmp_path / "out_study" / "Study_A_seg.nii.gz")
    from_nifti = nib.load(tmp_path / "out_nifti" / "Phantom_001_seg.nii.gz")
    assert from_dicom.shape == from_nifti.shape and np.array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))
    assert (tmp_path / "out_dataset" / "Study_A_seg.nii.gz").is_file()


def test_a_folder_name_that_contradicts_the_description_is_warned_and_two_series_for_one_sequence_refused(
        phantom_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    swapped = dict(EXPORT, t2=("03_FLAIR", "Ax T2 FSE"), flair=("04_T2", "AX FLAIR"))  # folder names exchanged
    with caplog.at_level(logging.WARNING):
        case = find_case(_study(phantom_root / "Phantom_001", tmp_path / "Swapped", swapped), allow_missing=True)
    assert [p.name for p in case.images][2:] == ["04_T2", "03_FLAIR"]  # the name wins
    assert "series folder '03_FLAIR' is read as flair (its name), but its SeriesDescription 'Ax T2 FSE' says t2" in caplog.text
    double = dict(EXPORT, t2=("03_series", "AX FLAIR"))  # a second FLAIR by description
    with pytest.raises(FileNotFoundError, match=r"several DICOM series for one sequence \(flair: 03_series \('AX FLAIR'\), 04_FLAIR \('AX FLAIR'\)\)"):
        find_case(_study(phantom_root / "Phantom_001", tmp_path / "Double", double), allow_missing=True)


def test_an_export_with_every_series_in_one_folder_is_named_and_sorted_into_a_study(phantom_root: Path, tmp_path: Path):
    """A PACS export puts all series of a study in one folder: volseg segment says so and names the
    command that sorts it; `volseg dicom-sort` copies each series into a folder of its own, one
    study folder a study (by patient ID), which then segments as the case's NIfTI files do."""
    import shutil

    from app.cli import app as cli

    study = _study(phantom_root / "Phantom_001", tmp_path / "series")
    mixed = tmp_path / "export" / "Patient_1"
    mixed.mkdir(parents=True)
    for n, f in enumerate(sorted(study.rglob("*.dcm"))):
        shutil.copy2(f, mixed / f"IM{n:05d}")  # PACS names: no series in the file names
    refused = CliRunner().invoke(cli, ["segment", str(mixed), "--output", str(tmp_path / "o"), "--backend", "torch", "--quiet"])
    assert refused.exit_code != 0
    assert "holds 4 DICOM series (" in refused.output and "'AX FLAIR' 1.2.826" in refused.output and "volseg dicom-sort" in refused.output
    before = sorted(p.name for p in mixed.iterdir())
    sorted_ = CliRunner().invoke(cli, ["dicom-sort", str(tmp_path / "export"), "--output", str(tmp_path / "studies")])
    assert sorted_.exit_code == 0, sorted_.output
    assert sorted(p.name for p in mixed.iterdir()) == before  # copied, not moved
    (folder,) = (tmp_path / "studies").iterdir()
    assert folder.name == "VS0001"  # the patient ID of write_dicom_series
    assert sorted(p.name for p in folder.iterdir()) == ["01_AX_FLAIR", "02_Ax_T2_FSE", "03_T1_SE", "04_T1_post_contrast"]
    assert "04_T1_post_contrast ('T1 post contrast') -> t1ce" in sorted_.output
    assert "one-channel bundles, --bundle ct_unet3d or your own: each series folder is a case" in sorted_.output
    out = CliRunner().invoke(cli, ["segment", str(tmp_path / "studies"), "--output", str(tmp_path / "o"), "--backend", "torch", "--quiet"])
    assert out.exit_code == 0, out.output
    nifti = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_001"), "--output", str(tmp_path / "n"), "--backend", "torch", "--quiet"])
    assert nifti.exit_code == 0, nifti.output
    assert np.array_equal(np.asarray(nib.load(tmp_path / "o" / "VS0001_seg.nii.gz").dataobj), np.asarray(nib.load(tmp_path / "n" / "Phantom_001_seg.nii.gz").dataobj))
    again = CliRunner().invoke(cli, ["dicom-sort", str(tmp_path / "export"), "--output", str(tmp_path / "studies")])
    assert again.exit_code != 0 and "exist already" in again.output
