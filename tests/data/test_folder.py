"""The cases of a bundle's inference run: every case in --dataset_dir, or a datalist split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.data import folder_datalist, inference_datalist
from app.data.phantom import make_ct_phantom


def test_every_brats_case_folder_of_a_dataset(phantom_root: Path):
    items = folder_datalist(phantom_root, 4)
    assert [it["case_id"] for it in items] == [f"Phantom_{i:03d}" for i in range(5)]
    assert [Path(p).name for p in items[0]["image"]] == [f"Phantom_000_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
    assert "label" not in items[0]  # inference reads no label


def test_a_case_folder_is_a_dataset_of_one_case(phantom_root: Path):
    (item,) = folder_datalist(phantom_root / "Phantom_003", 4)
    assert item["case_id"] == "Phantom_003" and Path(item["image"][3]).name == "Phantom_003_flair.nii.gz"


def test_a_case_that_lacks_sequences_is_listed_with_none_for_them(phantom_root: Path, tmp_path: Path):
    """The bundle runner refused a case without T2 ("missing t2") that volseg segment segments."""
    shutil.copytree(phantom_root / "Phantom_001", tmp_path / "Phantom_001")
    (tmp_path / "Phantom_001" / "Phantom_001_t2.nii.gz").unlink()
    (tmp_path / "other").mkdir()  # no sequence at all: not a case, skipped
    (item,) = folder_datalist(tmp_path, 4)
    assert item["case_id"] == "Phantom_001" and item["image"][2] is None
    assert [Path(p).name for p in item["image"] if p is not None] == [f"Phantom_001_{m}.nii.gz" for m in ("t1", "t1ce", "flair")]
    (only,) = folder_datalist(tmp_path / "Phantom_001", 4)  # the case folder itself
    assert only["image"][2] is None


def test_every_ct_volume_of_a_folder(tmp_path: Path):
    for i in (1, 0):
        make_ct_phantom(tmp_path, f"ct_{i:03d}", shape=(12, 10, 6), seed=i)
    (tmp_path / "imagesTr" / "notes.txt").write_text("not a volume")
    for name in ("ct_000_seg.nii.gz", "ct_001_uncertainty.nii.gz", "Brats18_X_1_seg.nii.gz"):  # VolSeg outputs, a BraTS label: were cases
        shutil.copy(tmp_path / "imagesTr" / "ct_000.nii.gz", tmp_path / "imagesTr" / name)
    items = folder_datalist(tmp_path / "imagesTr", 1)
    assert [(it["case_id"], Path(it["image"]).name) for it in items] == [("ct_000", "ct_000.nii.gz"), ("ct_001", "ct_001.nii.gz")]
    with pytest.raises(FileNotFoundError, match="imagesTs/ or imagesTr/"):
        folder_datalist(tmp_path, 1)  # the Decathlon root itself holds no volume


def test_a_split_of_a_datalist_instead(phantom_root: Path, phantom_manifest: Path):
    (item,) = inference_datalist(phantom_root, 4, phantom_manifest, "test")
    assert Path(item["image"][0]).is_file() and item["case_id"].startswith("Phantom_")
    with pytest.raises(ValueError, match="needs a datalist"):
        inference_datalist(phantom_root, 4, None, "test")
    with pytest.raises(ValueError, match="no folder layout .* 2-channel"):
        folder_datalist(phantom_root, 2)


def test_a_folder_without_sequences_is_skipped_and_an_empty_split_refused(phantom_root: Path, phantom_manifest: Path, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture):
    """An output folder of label maps inside --dataset_dir stopped the whole run as an incomplete
    case; an empty --data_split ended at once with exit status 0 and nothing written."""
    import json

    for case in ("Phantom_000", "Phantom_001"):
        shutil.copytree(phantom_root / case, tmp_path / case)
    (tmp_path / "preds").mkdir()
    shutil.copy(phantom_root / "Phantom_000" / "Phantom_000_seg.nii.gz", tmp_path / "preds" / "Phantom_000_seg.nii.gz")
    assert [it["case_id"] for it in folder_datalist(tmp_path, 4)] == ["Phantom_000", "Phantom_001"]
    assert "preds' holds no MRI sequence file (t1, t1ce, t2, flair): not a case, skipped" in caplog.text
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({**json.loads(phantom_manifest.read_text()), "test": []}))
    with pytest.raises(ValueError, match="data_split 'test' of .*m.json' holds no case: nothing to segment"):
        inference_datalist(phantom_root, 4, manifest, "test")


def test_dicom_series_folders_named_alike_get_their_path_as_case_id(tmp_path: Path):
    import SimpleITK as sitk

    from tests.io.dicom_util import write_dicom_series

    image = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    for i, patient in enumerate(("patB", "patA")):
        write_dicom_series(image, tmp_path / "export" / patient / "CT", series_uid=f"1.2.826.0.1.3680043.2.1125.9.{i}", intercept=-1024.0)
    assert [it["case_id"] for it in folder_datalist(tmp_path / "export", 1)] == ["patA_CT", "patB_CT"]


def test_bids_and_tcia_sequence_names():
    from app.data.cases import split_sequence_name

    assert split_sequence_name("sub-01_T1w.nii.gz") == ("sub-01", "t1") and split_sequence_name("TCGA-02-0003_T1Gd.nii.gz") == ("TCGA-02-0003", "t1ce")
    assert split_sequence_name("T2w.nii.gz") == (None, "t2")
    # a BIDS contrast-enhanced T1 (the ce- entity) and TCIA's T2-FLAIR were the T1 of a case "sub-01_ce-gd" and the
    # FLAIR of a case "P002_T2": one patient became two cases and lost its T1ce (ET Dice 0.002)
    assert [split_sequence_name(f"sub-01_{n}.nii.gz") for n in ("T1w", "ce-gd_T1w", "T2w", "FLAIR")] == \
        [("sub-01", "t1"), ("sub-01", "t1ce"), ("sub-01", "t2"), ("sub-01", "flair")]
    assert split_sequence_name("sub-01_ses-2_acq-tse_T2w.nii.gz") == ("sub-01_ses-2", "t2") and split_sequence_name("sub-01_dwi.nii.gz") is None
    assert split_sequence_name("P002_T2-FLAIR.nii.gz") == ("P002", "flair") and split_sequence_name("T2_FLAIR.nii.gz") == (None, "flair")


def test_two_files_for_one_sequence_say_which_is_read(phantom_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from app.data import find_case

    case = shutil.copytree(phantom_root / "Phantom_001", tmp_path / "Phantom_001")
    shutil.copy(case / "Phantom_001_t1.nii.gz", case / "t1.nii.gz")
    assert find_case(case).images[0].name == "Phantom_001_t1.nii.gz"
    assert "case 'Phantom_001': 2 files for t1 in" in caplog.text and "(Phantom_001_t1.nii.gz, t1.nii.gz); reading Phantom_001_t1.nii.gz" in caplog.text
