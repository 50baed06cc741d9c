from __future__ import annotations

import math

import numpy as np

from app.evaluation import case_metrics
from app.labels import labels_of


def _label(shape=(24, 32, 40)):
    label = np.zeros(shape, dtype=np.uint8)
    label[4:16, 6:20, 8:24] = 2
    label[6:14, 8:18, 10:22] = 4
    label[8:12, 10:16, 12:20] = 1
    return label


def test_perfect_prediction():
    label = _label()
    m = case_metrics(label, label, (0.8, 0.8, 2.5))
    for region in ("WT", "TC", "ET"):
        assert math.isclose(m[f"{region}_dice"], 1.0)
        assert m[f"{region}_hd95"] == 0.0
        assert math.isclose(m[f"{region}_sensitivity"], 1.0) and math.isclose(m[f"{region}_precision"], 1.0)


def test_shift_gives_known_dice_and_hd95_in_mm():
    ref = np.zeros((24, 32, 40), dtype=np.uint8)
    ref[4:14, 4:14, 4:14] = 2
    pred = np.roll(ref, 2, axis=2)  # 2 voxels along the 2.5 mm axis
    m = case_metrics(pred, ref, (0.8, 0.8, 2.5))
    assert math.isclose(m["WT_dice"], 0.8, abs_tol=1e-6)  # overlap 8 of 10 slices
    assert math.isclose(m["WT_hd95"], 5.0, abs_tol=1e-3)  # 2 voxels x 2.5 mm
    assert math.isclose(m["WT_sensitivity"], 0.8, abs_tol=1e-6)
    assert m["TC_dice"] == 1.0 and m["TC_hd95"] == 0.0  # absent in both: BraTS convention


def test_region_missing_in_prediction():
    ref = _label()
    pred = np.where(ref == 4, 1, ref).astype(np.uint8)  # ET predicted as core
    m = case_metrics(pred, ref)
    assert m["ET_dice"] == 0.0 and m["ET_hd95"] == 374.0  # BraTS convention for a missed structure
    assert math.isclose(m["TC_dice"], 1.0) and math.isclose(m["WT_dice"], 1.0)


def test_region_only_predicted_scores_the_bundle_convention():
    ref = np.zeros((24, 32, 40), dtype=np.uint8)
    pred = ref.copy()
    pred[3:8, 4:9, 5:10] = 1
    brats = case_metrics(pred, ref, (0.8, 0.8, 2.5))
    assert brats["TC_dice"] == 0.0 and brats["TC_hd95"] == 374.0 and brats["ET_hd95"] == 0.0
    ct = case_metrics(pred, ref, (0.8, 0.8, 2.5), labels_of("ct_unet3d"))  # no convention set: NaN, left out of means
    assert list(ct)[:2] == ["spleen_dice", "spleen_hd95"] and ct["spleen_dice"] == 0.0 and math.isnan(ct["spleen_hd95"])
