"""Real-data test: the shipped weights on a test-split case of the shared BraTS 2018 data."""

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

# Floor for WT Dice on the first test case (Brats18_CBICA_AME_1): the shipped weights score WT
# 0.774 on it (0.897 on the other test case; bundles/brats_unet3d/docs/README.md), random weights
# about 0.04. 0.70 leaves room for numeric differences between platforms and thread counts while
# catching broken weights, a broken pipeline or an orientation error.
WT_DICE_FLOOR = 0.70


def test_shipped_weights_segment_a_test_case():
    manifest = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    case_id = manifest["test"][0]["case_id"]
    label, affine = api.segment(SHARED_BRATS / case_id, device="cpu")
    ref = nib.load(SHARED_BRATS / case_id / f"{case_id}_seg.nii.gz")
    assert label.shape == ref.shape and label.dtype == np.uint8
    assert np.allclose(affine, ref.affine)
    assert set(np.unique(label)) <= {0, 1, 2, 4}
    metrics = case_metrics(label, np.asarray(ref.dataobj).astype(np.uint8))
    assert metrics["WT_dice"] >= WT_DICE_FLOOR, metrics
