"""Uncertainty arithmetic: entropy, expected Dice, AUROC from histograms, Spearman."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation.uncertainty import BINS, auroc, error_histograms, spearman
from app.inference.uncertainty import binary_entropy, expected_dice


def test_binary_entropy_values_and_range():
    h = binary_entropy(np.array([0.0, 0.5, 1.0, 0.11, 0.89, 1e-6]))
    assert h.dtype == np.float32
    assert h[1] == pytest.approx(1.0) and h[0] == 0.0 and h[2] == 0.0 and h[5] == 0.0
    assert h[3] == pytest.approx(0.4999, abs=1e-3) and h[3] == pytest.approx(h[4])


def test_expected_dice():
    assert expected_dice(np.array([1.0, 1.0, 0.0])) == pytest.approx(1.0)
    assert expected_dice(np.zeros(5)) == 1.0
    assert expected_dice(np.array([0.6, 0.6, 0.4, 0.4])) == pytest.approx(2 * 1.2 / (2.0 + 2))


def test_auroc_matches_mann_whitney_on_random_scores():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    ref = rng.random((20, 20, 20)) > 0.7
    pred = ref.copy()
    flip = rng.random(ref.shape) > 0.9
    pred[flip] = ~pred[flip]
    unc = np.round(np.clip(rng.normal(0.3 + 0.3 * flip, 0.2), 0, 0.999), 3)  # wrong voxels more uncertain
    hist = error_histograms(unc, pred, ref)
    u = mannwhitneyu(unc[flip], unc[~flip]).statistic / (flip.sum() * (~flip).sum())
    assert auroc(hist) == pytest.approx(u, abs=2e-3)
    assert 0.8 < auroc(hist) < 0.9
    mask = np.zeros(ref.shape, bool)
    mask[:10] = True
    assert error_histograms(unc, pred, ref, mask).sum() == mask.sum()
    assert hist.shape == (2, BINS)


def test_auroc_undefined_without_errors_and_spearman():
    h = np.zeros((2, BINS), np.int64)
    h[0, 3] = 10
    assert np.isnan(auroc(h))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 2], [1, 2]))
