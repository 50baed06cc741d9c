"""Cases of one-channel (CT) bundles: each volume is a case, a folder of volumes is a dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.data.phantom import make_ct_phantom
from app.data.single_channel import single_channel_cases
from app.errors import InputError
from app.inference import resolve_inputs


@pytest.fixture(scope="module")
def ct_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ct")
    for i in range(2):
        make_ct_phantom(root, f"ct_{i:03d}", shape=(24, 20, 12), spacing_mm=(1.5, 1.5, 4.0), seed=i)
    (root / "imagesTr" / "notes.txt").write_text("not a volume")
    return root


def test_each_file_and_each_volume_of_a_folder_is_a_case(ct_root: Path):
    images = ct_root / "imagesTr"
    assert single_channel_cases([images / "ct_001.nii.gz"]) == [("ct_001", [images / "ct_001.nii.gz"])]
    cases = resolve_inputs([images, images / "ct_000.nii.gz"], channels=("ct",))  # the same file twice: once
    assert [c for c, _ in cases] == ["ct_000", "ct_001"] and all(len(files) == 1 for _, files in cases)


def test_missing_input_empty_folder_and_clashing_ids_are_refused(ct_root: Path, tmp_path: Path):
    with pytest.raises(InputError, match="input not found"):
        single_channel_cases([tmp_path / "none.nii.gz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no volume"):
        single_channel_cases([tmp_path / "empty"])
    for name in ("a/1.dcm", "a/2.dcm", "a/b/3.IMA"):  # slices that are empty files
        (tmp_path / "empty" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "empty" / name).write_bytes(b"")
    with pytest.raises(InputError, match=r"it holds 3 \.dcm/\.ima file\(s\), none readable as a DICOM image series"):
        single_channel_cases([tmp_path / "empty"])
    other = tmp_path / "ct_000.nii.gz"
    other.write_bytes((ct_root / "imagesTr" / "ct_000.nii.gz").read_bytes())
    with pytest.raises(InputError, match="case ID 'ct_000' names two volumes"):
        single_channel_cases([ct_root / "imagesTr" / "ct_000.nii.gz", other])


def test_series_named_alike_under_two_patients_are_two_cases(tmp_path: Path):
    """`volseg dicom-sort` of two patients whose series share a description writes P1/01_Abdomen_CT and
    P2/01_Abdomen_CT: `volseg segment sorted/` refused the whole folder ("case ID '01_Abdomen_CT' names
    two volumes"), where `python -m monai.bundle run` named them by their path."""
    import numpy as np
    import SimpleITK as sitk

    from app.data.folder import folder_datalist
    from tests.io.dicom_util import write_dicom_series

    image = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    for i, patient in enumerate(("P1", "P2")):
        write_dicom_series(image, tmp_path / "sorted" / patient / "01_Abdomen_CT", series_uid=f"1.2.826.0.1.3680043.2.1125.8.{i}")
    cases = single_channel_cases([tmp_path / "sorted"])
    assert cases == [("P1_01_Abdomen_CT", [tmp_path / "sorted" / "P1" / "01_Abdomen_CT"]),
                     ("P2_01_Abdomen_CT", [tmp_path / "sorted" / "P2" / "01_Abdomen_CT"])]
    assert [c for c, _ in cases] == [item["case_id"] for item in folder_datalist(tmp_path / "sorted", 1)]  # as the bundle names them
    assert single_channel_cases([tmp_path / "sorted" / "P1" / "01_Abdomen_CT"])[0][0] == "01_Abdomen_CT"  # one series given: its name
