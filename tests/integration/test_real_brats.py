"""Real-data test: the shipped fast model on shared BraTS 2018 cases it never trained on."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from app import api
from app.evaluation import case_metrics
from tests.conftest import REPO_ROOT, SHARED_BRATS

pytestmark = [pytest.mark.real_data, pytest.mark.slow,
              pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")]

# Floor for the mean WT Dice over the held-out cases of the fold that models/model.pt was trained
# without (metadata.json training#fast_model_fold). The 5-fold CV of the fast model is in
# bundles/brats_unet3d/docs/README.md; random weights score about 0.04. The floor leaves room for
# numeric differences between platforms and thread counts while catching broken weights, a
# broken pipeline or an orientation error.
WT_DICE_FLOOR = 0.70


def test_shipped_fast_model_segments_its_unseen_cases():
    meta = json.loads((REPO_ROOT / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    fold = meta["training"]["fast_model_fold"]
    cv = json.loads((REPO_ROOT / "data_manifests" / "brats2018_cv5.json").read_text())
    case_ids = [it["case_id"] for it in cv["training"] if it["fold"] == fold]
    assert len(case_ids) == 3
    scores = []
    for case_id in case_ids[:2]:
        label, affine = api.segment(SHARED_BRATS / case_id, device="cpu", mode="fast")
        ref = nib.load(SHARED_BRATS / case_id / f"{case_id}_seg.nii.gz")
        assert label.shape == ref.shape and label.dtype == np.uint8
        assert np.allclose(affine, ref.affine)
        assert set(np.unique(label)) <= {0, 1, 2, 4}
        scores.append(case_metrics(label, np.asarray(ref.dataobj).astype(np.uint8))["WT_dice"])
    assert np.mean(scores) >= WT_DICE_FLOOR, dict(zip(case_ids, scores))


def test_n4_average_on_an_unseen_case():
    """``n4=True`` on a case the fast model never trained on: the N4 branch runs (the label
    changes), the label keeps the input's geometry and clears the same Dice floor."""
    meta = json.loads((REPO_ROOT / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    cv = json.loads((REPO_ROOT / "data_manifests" / "brats2018_cv5.json").read_text())
    case_id = next(it["case_id"] for it in cv["training"] if it["fold"] == meta["training"]["fast_model_fold"])
    ref = nib.load(SHARED_BRATS / case_id / f"{case_id}_seg.nii.gz")
    plain, _ = api.segment(SHARED_BRATS / case_id, device="cpu", mode="fast", backend="torch", n4=False)
    label, affine = api.segment(SHARED_BRATS / case_id, device="cpu", mode="fast", backend="torch", n4=True)
    assert label.shape == ref.shape and np.allclose(affine, ref.affine)
    assert not np.array_equal(label, plain)
    assert case_metrics(label, np.asarray(ref.dataobj).astype(np.uint8))["WT_dice"] >= WT_DICE_FLOOR
