"""SaveLabelMapd, the bundles' label writer under MONAI's runner: one file per case, never one over another."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import MetaTensor

from app.transforms import SaveLabelMapd


def _item(path: Path, case_id: str | None = None) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), path)
    item = {"image": MetaTensor(np.zeros((1, 6, 5, 4), np.float32), meta={"filename_or_obj": str(path)}),
            "pred": np.ones((1, 6, 5, 4), np.uint8)}
    return {**item, "case_id": case_id} if case_id is not None else item


def test_case_folders_of_bare_sequence_names_and_one_id_twice_get_a_file_each(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Case folders holding t1.nii.gz ... all wrote t1_seg.nii.gz, and two DICOM series folders
    named CT one CT_seg.nii.gz: each case but the last was lost without a word."""
    save = SaveLabelMapd("pred", tmp_path / "out")
    save(_item(tmp_path / "bare" / "caseA" / "t1.nii.gz"))
    save(_item(tmp_path / "bare" / "caseB" / "t1.nii.gz"))
    save(_item(tmp_path / "given" / "x_t1.nii.gz", case_id="Subject_7"))  # the datalist's case_id first
    with caplog.at_level(logging.WARNING):
        save(_item(tmp_path / "patA" / "CT" / "ct.nii.gz", case_id="CT"))
        save(_item(tmp_path / "patB" / "CT" / "ct.nii.gz", case_id="CT"))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(["caseA_seg.nii.gz", "caseB_seg.nii.gz", "Subject_7_seg.nii.gz", "CT_seg.nii.gz", "patB_CT_seg.nii.gz"])
    assert "case ID 'CT' is another case's in this run" in caplog.text and "patB_CT_seg.nii.gz" in caplog.text
    save(_item(tmp_path / "patA" / "CT" / "ct.nii.gz", case_id="CT"))  # the same case again: its own file, rewritten
    assert len(list((tmp_path / "out").iterdir())) == 5


def test_a_label_that_is_not_the_inputs_label_map_is_refused(tmp_path: Path):
    """A pred left in RAS (no Invertd) was written mirrored into the LPS input's geometry without a
    word, probabilities were truncated and extra channels dropped."""
    save = SaveLabelMapd("pred", tmp_path / "out")
    item = _item(tmp_path / "case" / "c_t1.nii.gz")
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    ras[0, 0] = -1.0
    with pytest.raises(ValueError, match="its affine is not the input's .*invert the spatial transforms first"):
        save({**item, "pred": MetaTensor(np.ones((1, 6, 5, 4), np.float32), affine=ras)})
    with pytest.raises(ValueError, match=r"a label map is \(1, H, W, D\), got shape \(3, 6, 5, 4\)"):
        save({**item, "pred": np.ones((3, 6, 5, 4), np.float32)})
    with pytest.raises(ValueError, match="values 0.2 to 0.7 are no label codes"):
        save({**item, "pred": np.full((1, 6, 5, 4), 0.2, np.float32) + np.pad(np.full((1, 1, 1, 1), 0.5), ((0, 0), (0, 5), (0, 4), (0, 3)))})
    with pytest.raises(ValueError, match=r"shape \(5, 5, 4\) is not the input's \(6, 5, 4\)"):
        save({**item, "pred": np.ones((1, 5, 5, 4), np.uint8)})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    save({**item, "pred": MetaTensor(np.full((1, 6, 5, 4), 2.0, np.float32), affine=np.diag([1.0, 1.0, 2.0, 1.0]))})  # the input's grid
    assert np.asarray(nib.load(tmp_path / "out" / "c_seg.nii.gz").dataobj).max() == 2
