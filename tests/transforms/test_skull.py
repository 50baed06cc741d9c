"""The warning for MRI that does not look skull-stripped (app.transforms.CheckSkullStrippedd)."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from app.io import LoadVolumed
from app.transforms import CheckSkullStripped, CheckSkullStrippedd, zero_fractions
from tests.conftest import SHARED_BRATS, loaded_shared_brats_cases

SHAPE = (24, 32, 40)
SPACING = (0.8, 0.8, 2.5)


def _brain(rng: np.random.Generator) -> np.ndarray:
    """A skull-stripped 'brain': an ellipsoid of intensities 100-200, exactly 0 outside (48 % of the grid)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    inside = (grid ** 2).sum(0) <= 1.0
    return np.where(inside, rng.uniform(100, 200, SHAPE), 0.0).astype(np.float32)


def _write(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, np.diag([*SPACING, 1.0])), str(path))
    return str(path)


@pytest.fixture()
def case(tmp_path: Path) -> list[str]:
    """T1, T1ce, T2, FLAIR files; T2 is 'a whole head': the brain plus scanner noise around it."""
    rng = np.random.default_rng(0)
    files = []
    for m in ("t1", "t1ce", "t2", "flair"):
        data = _brain(rng)
        if m == "t2":
            data = np.where(data == 0, rng.uniform(1, 30, SHAPE), data).astype(np.float32)
        files.append(_write(tmp_path / f"Case_{m}.nii.gz", data))
    return files


def test_a_channel_without_zero_background_is_named_and_the_image_kept(case: list[str], caplog):
    data = LoadVolumed("image", ensure_channel_first=True)({"image": case})
    before = data["image"].clone()
    with caplog.at_level(logging.WARNING, logger="app.transforms.skull"):
        out = CheckSkullStrippedd("image")(data)
    [warning] = out["image"].meta["input_warnings"]
    assert warning.startswith("Case_t2.nii.gz: does not look skull-stripped (0 % of the voxels are 0, under 25 %")
    assert "Case_t1.nii.gz" not in warning and "Case_flair.nii.gz" not in warning
    assert [r.getMessage() for r in caplog.records] == [warning]
    assert torch.equal(out["image"].as_tensor(), before.as_tensor())


def test_skull_stripped_channels_and_missing_ones_pass(case: list[str], caplog):
    with caplog.at_level(logging.WARNING, logger="app.transforms.skull"):
        out = CheckSkullStrippedd("image")(LoadVolumed("image", ensure_channel_first=True)({"image": [case[0], case[1], None, case[3]]}))
    assert out["image"].meta["missing_channels"] == [2]  # zero-filled, so all zero, and not counted either way
    assert "input_warnings" not in out["image"].meta and not caplog.records
    assert out["image"].meta["channel_files"] == [case[0], case[1], "", case[3]]  # "": a DataLoader collates no None


def test_zero_fractions_of_the_strided_sample_are_close_to_the_full_count():
    img = torch.as_tensor(_brain(np.random.default_rng(1)))[None]
    full, sampled = zero_fractions(img, 1)[0], zero_fractions(img, 4)[0]
    assert 0.4 < full < 0.6 and abs(full - sampled) < 0.03
    assert zero_fractions(torch.zeros(2, 4, 4, 4)) == [1.0, 1.0]


def test_threshold_zero_turns_the_check_off_and_bad_arguments_raise():
    img = MetaTensor(torch.ones(1, 8, 8, 8))
    assert "input_warnings" not in CheckSkullStripped(min_zero_fraction=0)(img).meta
    assert CheckSkullStripped()(img).meta["input_warnings"][0].startswith("channel 0: does not look skull-stripped (0 %")
    for kwargs in ({"min_zero_fraction": 1.5}, {"min_zero_fraction": -0.1}, {"stride": 0}):
        with pytest.raises(ValueError):
            CheckSkullStripped(**kwargs)


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")
def test_shared_brats_cases_pass_and_mri_that_is_not_skull_stripped_is_flagged():
    check = CheckSkullStripped()
    load = LoadVolumed("image", ensure_channel_first=True)
    for case_id, img in loaded_shared_brats_cases():
        assert "input_warnings" not in check(img).meta, case_id
    spinal = SHARED_BRATS.parent / "spinalcord" / "t1_t1w.nii.gz"  # a neck MRI as scanned: no zero background
    if spinal.is_file():
        img = check(load({"image": [str(spinal)]})["image"])
        assert img.meta["input_warnings"][0].startswith("t1_t1w.nii.gz: does not look skull-stripped")
