"""The two TC rules that ``benchmarks/cv_postprocessing.py`` scores (NCR near ET, TC components
without ET) relabel what they say, and nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("cv_postprocessing", Path(__file__).parents[1] / "benchmarks" / "cv_postprocessing.py")
cv_postprocessing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cv_postprocessing)


def _case() -> np.ndarray:
    """(1, 40, 30, 30): edema around a core whose ET rim sits at x 10-12, NCR out to x 25; a
    separate 8-voxel NCR island without ET; background 0."""
    label = np.zeros((40, 30, 30), np.uint8)
    label[5:35, 5:25, 5:25] = 2
    label[10:26, 10:20, 10:20] = 1
    label[10:13, 10:20, 10:20] = 4
    label[30:32, 21:23, 21:23] = 1
    return label[None]


def test_ncr_far_from_et_becomes_edema():
    label = _case()
    out = cv_postprocessing.ncr_near_et(5)(label)
    assert out.shape == label.shape
    x = np.arange(40)[:, None, None]
    far = (label[0] == 1) & (x > 12 + 5)  # the core's NCR beyond 5 voxels of the rim, and the island
    assert np.all(out[0][far] == 2) and np.all(out[0][(label[0] == 1) & (x <= 17) & (x < 30)] == 1)
    assert np.array_equal(out[0] == 4, label[0] == 4) and np.array_equal(out[0] > 0, label[0] > 0)  # ET and WT kept
    no_et = np.where(label == 4, 1, label).astype(np.uint8)
    assert np.array_equal(cv_postprocessing.ncr_near_et(5)(no_et), no_et)  # no predicted ET: untouched


def test_tc_components_without_et_become_edema_under_the_fraction():
    label = _case()
    island = np.zeros_like(label[0], bool)
    island[30:32, 21:23, 21:23] = True
    out = cv_postprocessing.tc_without_et(0.1)(label)[0]
    assert np.all(out[island] == 2)
    assert np.array_equal(out[~island], label[0][~island])  # the core with ET is kept whole
    assert np.array_equal(cv_postprocessing.tc_without_et(8 / 1600)(label), label)  # island (8) not under 8 / 1600 x 1600
    no_et = np.where(label == 4, 1, label).astype(np.uint8)
    assert np.array_equal(cv_postprocessing.tc_without_et(float("inf"))(no_et), no_et)  # no predicted ET: untouched
