"""CheckBrainMRI(d): warnings for input with too little tissue for a brain, or that is a label map."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from app.io import LoadVolumed
from app.transforms import CheckBrainMRI, CheckBrainMRId, tissue_volume_ml
from tests.conftest import SHARED_BRATS, loaded_shared_brats_cases


def _image(shape=(2, 40, 40, 40), spacing_mm=(1.0, 1.0, 1.0), values: int | None = None, seed: int = 0) -> MetaTensor:
    rng = np.random.default_rng(seed)
    data = rng.uniform(1, 1000, shape).astype(np.float32) if values is None else rng.integers(1, values + 1, shape).astype(np.float32)
    data[:, :5] = 0  # a zero background slab
    img = MetaTensor(torch.from_numpy(data), affine=torch.diag(torch.tensor([*spacing_mm, 1.0], dtype=torch.float64)))
    img.meta["channel_files"] = [f"Case_{c}.nii.gz" for c in range(shape[0])]
    return img


def test_tissue_volume_uses_the_voxel_size_and_counts_any_channel():
    img = torch.zeros(2, 20, 20, 20)
    img[0, :10] = 1.0
    img[1, 10:15] = 1.0  # 15 of 20 slabs are non-zero in one channel or the other
    affine = np.diag([2.0, 2.0, 2.5, 1.0])  # 10 mm^3 a voxel
    assert tissue_volume_ml(img, affine, stride=1) == pytest.approx(15 * 20 * 20 * 10 / 1000)
    assert tissue_volume_ml(img, affine, stride=2) == pytest.approx(15 * 20 * 20 * 10 / 1000, rel=0.1)
    assert tissue_volume_ml(img, None, stride=1) == pytest.approx(6.0)


def test_a_brain_sized_mri_passes_and_a_small_one_is_named(caplog: pytest.LogCaptureFixture):
    big = _image(spacing_mm=(3.0, 3.0, 3.0))  # 35 x 40 x 40 voxels of 27 mm^3: 1,512 mL
    assert "input_warnings" not in CheckBrainMRI()(big).meta
    small = _image()  # 56 mL
    with caplog.at_level(logging.WARNING):
        out = CheckBrainMRId("image")({"image": small})["image"]
    [warning] = out.meta["input_warnings"]
    assert re.match(r"Case_0.nii.gz, Case_1.nii.gz: 5\d mL of non-zero voxels, too little for a brain", warning) and warning in caplog.text
    assert torch.equal(out, _image())  # unchanged


def test_a_label_map_is_named_and_a_missing_channel_is_not_counted():
    img = _image(spacing_mm=(3.0, 3.0, 3.0))
    img[1] = torch.from_numpy(np.random.default_rng(1).choice([0.0, 1.0, 2.0, 4.0], img.shape[1:]).astype(np.float32))
    [warning] = CheckBrainMRI()(img).meta["input_warnings"]
    assert warning.startswith("Case_1.nii.gz: 4 distinct values") and "label map" in warning
    absent = _image(spacing_mm=(3.0, 3.0, 3.0))
    absent[1] = 0.0
    absent.meta["missing_channels"] = [1]  # zero-filled by the reader: one value, but not an input
    assert "input_warnings" not in CheckBrainMRI()(absent).meta


def test_zero_turns_each_check_off_and_negative_thresholds_raise():
    img = _image(values=3)
    assert "input_warnings" not in CheckBrainMRI(min_volume_ml=0, max_label_values=0)(img).meta
    assert len(CheckBrainMRI(min_volume_ml=0)(_image(values=3)).meta["input_warnings"]) == 1
    with pytest.raises(ValueError, match="thresholds must be >= 0"):
        CheckBrainMRI(min_volume_ml=-1)


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")
def test_shared_brats_cases_pass_and_spinal_cord_mri_and_a_label_map_are_flagged():
    check = CheckBrainMRI()
    load = LoadVolumed("image", ensure_channel_first=True)
    for case_id, img in loaded_shared_brats_cases():
        assert "input_warnings" not in check(img).meta, case_id
    seg = next(SHARED_BRATS.glob("*/*_seg.nii.gz"))
    warnings = check(load({"image": [str(seg)]})["image"]).meta["input_warnings"]
    assert "too little for a brain" in warnings[0] and "label map" in warnings[1]
    spinal = SHARED_BRATS.parent / "spinalcord" / "t2_t2.nii.gz"
    if spinal.is_file():
        [warning] = check(load({"image": [str(spinal)]})["image"]).meta["input_warnings"]
        assert warning.startswith("t2_t2.nii.gz: 1") and "too little for a brain" in warning


def test_a_ct_in_hounsfield_units_is_named_and_a_zscored_mri_is_not():
    """A CT fed as the four BraTS sequences got only the skull-stripping warning and labels of tumour."""
    ct = _image(spacing_mm=(3.0, 3.0, 3.0))
    ct[0] = torch.from_numpy(np.random.default_rng(2).uniform(-1000, 1500, ct.shape[1:]).astype(np.float32))
    [warning] = CheckBrainMRI()(ct).meta["input_warnings"]
    assert warning.startswith("Case_0.nii.gz: values down to -99") and "this looks like CT in Hounsfield units" in warning
    zscored = _image(spacing_mm=(3.0, 3.0, 3.0))
    zscored[:] = torch.from_numpy(np.random.default_rng(3).normal(0, 1, zscored.shape).astype(np.float32))
    assert "input_warnings" not in CheckBrainMRI()(zscored).meta
