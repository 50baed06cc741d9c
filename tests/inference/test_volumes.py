"""Tumour volumes (mL) from written label maps: exact arithmetic, file spacing, run record and CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app.inference.volumes import add_case_volumes, case_volumes, label_volumes_ml, volume_classes

SPACING = (0.8, 0.9, 2.5)  # mm: voxel 1.8 mm^3
COUNTS = {1: 1000, 2: 3000, 4: 500}


def _phantom(shape=(24, 32, 40)) -> np.ndarray:
    """Label map with exactly COUNTS voxels of each BraTS code, in separate blocks."""
    label = np.zeros(shape, dtype=np.uint8)
    label.reshape(-1)[:1000] = 1
    label.reshape(-1)[2000:5000] = 2
    label.reshape(-1)[9000:9500] = 4
    assert {v: int((label == v).sum()) for v in COUNTS} == COUNTS
    return label


def test_phantom_with_known_voxel_count_gives_exact_ml():
    vol = label_volumes_ml(_phantom(), SPACING, volume_classes("brats_unet3d"))
    voxel_ml = 0.8 * 0.9 * 2.5 / 1000
    expected = {"NCR": 1000 * voxel_ml, "ED": 3000 * voxel_ml, "ET": 500 * voxel_ml, "TC": 1500 * voxel_ml, "WT": 4500 * voxel_ml}
    assert list(vol) == ["NCR", "ED", "ET", "TC", "WT"]
    for name, ml in expected.items():
        assert math.isclose(vol[name], ml, rel_tol=1e-12), name
    assert math.isclose(vol["WT"], 8.1, rel_tol=1e-12)  # 4500 voxels x 1.8 mm^3


def test_classes_come_from_the_bundle_labels():
    assert volume_classes("brats_unet3d") == {"NCR": (1,), "ED": (2,), "ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}
    assert volume_classes("ct_unet3d") == {"spleen": (1,)}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="3D"):
        label_volumes_ml(np.zeros((4, 4)), SPACING, {"x": (1,)})
    with pytest.raises(ValueError, match="positive"):
        label_volumes_ml(np.zeros((4, 4, 4)), (1.0, 0.0, 1.0), {"x": (1,)})


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_volumes_use_the_written_files_spacing(tmp_path: Path, suffix: str):
    label = _phantom()
    path = tmp_path / f"case_seg{suffix}"
    if suffix == ".nii.gz":
        nib.save(nib.Nifti1Image(label, np.diag([-0.8, -0.9, 2.5, 1.0])), path)  # LPS-like axes, as BraTS
    else:
        image = sitk.GetImageFromArray(label.transpose(2, 1, 0))
        image.SetSpacing(SPACING)
        sitk.WriteImage(image, str(path))
    vol = case_volumes(path, "brats_unet3d")
    assert vol["WT"] == pytest.approx(8.1, abs=1e-3) and vol["NCR"] == pytest.approx(1.8, abs=1e-3) and vol["ET"] == pytest.approx(0.9, abs=1e-3)


def test_run_record_entries_and_csv(tmp_path: Path):
    label = _phantom()
    nib.save(nib.Nifti1Image(label, np.diag([*SPACING, 1.0])), tmp_path / "A_seg.nii.gz")
    entries = [{"case_id": "A", "output": str(tmp_path / "A_seg.nii.gz")}, {"case_id": "B", "output": None, "error": "broken"}]
    csv_path = add_case_volumes(entries, "brats_unet3d", tmp_path)
    assert entries[0]["volumes_ml"]["WT"] == pytest.approx(8.1, abs=1e-3) and "volumes_ml" not in entries[1]
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["case_id", "NCR_ml", "ED_ml", "ET_ml", "TC_ml", "WT_ml"]
    assert [r["case_id"] for r in rows] == ["A"] and float(rows[0]["TC_ml"]) == pytest.approx(2.7, abs=1e-3)


def test_segment_run_record_volumes_match_written_label(phantom_root: Path, tmp_path: Path):
    """`volseg segment`'s run record: volumes_ml per case within 0.5 % of the written label map."""
    from app import api

    results = api.segment_cases([phantom_root / "Phantom_000", phantom_root / "Phantom_003"], tmp_path, device="cpu", backend="torch")
    assert all(r.error is None for r in results)
    record = json.loads((tmp_path / "volseg_run.json").read_text())
    rows = {r["case_id"]: r for r in csv.DictReader((tmp_path / "volumes.csv").open())}
    for case in record["cases"]:
        written = nib.load(case["output"])
        label = np.asarray(written.dataobj)
        voxel_ml = float(np.prod(written.header.get_zooms()[:3])) / 1000
        truth = {"NCR": (label == 1).sum(), "ED": (label == 2).sum(), "ET": (label == 4).sum(), "TC": np.isin(label, (1, 4)).sum(), "WT": (label > 0).sum()}
        assert (label > 0).any(), "the shipped model finds the phantom tumour"
        for name, count in truth.items():
            ml = count * voxel_ml
            assert case["volumes_ml"][name] == pytest.approx(ml, rel=0.005, abs=1e-3), (case["case_id"], name)
            assert float(rows[case["case_id"]][f"{name}_ml"]) == case["volumes_ml"][name]
