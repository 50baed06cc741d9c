"""How well an uncertainty map finds the errors of a segmentation, and how well a case score
ranks cases: AUROC of wrong-vs-right voxels, and Spearman's rank correlation with Dice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Histogram bins over [0, 1] bits: AUROC from binned scores, exact for maps rounded to 1e-3.
BINS = 1000


def error_histograms(uncertainty: np.ndarray, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Histograms of the uncertainty of wrong and of right voxels.

    Args:
        uncertainty: ``(H, W, D)`` scores in [0, 1] (entropy in bits).
        pred, ref: ``(H, W, D)`` boolean masks of the same region (e.g. whole tumour).
        mask: voxels to count (e.g. the brain: non-zero input); None counts every voxel.

    Returns:
        ``(2, BINS)`` int64 counts: row 0 right voxels, row 1 wrong voxels.
    """
    keep = np.ones(pred.shape, bool) if mask is None else mask.astype(bool)
    wrong = (pred.astype(bool) != ref.astype(bool))[keep]
    bins = np.clip((np.asarray(uncertainty, dtype=np.float64)[keep] * BINS).astype(np.int64), 0, BINS - 1)
    return np.stack([np.bincount(bins[~wrong], minlength=BINS), np.bincount(bins[wrong], minlength=BINS)]).astype(np.int64)


def auroc(histograms: np.ndarray) -> float:
    """Area under the ROC curve of "uncertainty separates wrong from right voxels", from
    :func:`error_histograms` (summed over cases for a pooled figure); ties count one half
    (the Mann-Whitney U statistic). NaN when there are no wrong or no right voxels.

    Example:
        >>> h = np.zeros((2, BINS), np.int64); h[0, 0] = 10; h[1, 900] = 5
        >>> auroc(h)
        1.0
    """
    right, wrong = np.asarray(histograms[0], np.float64), np.asarray(histograms[1], np.float64)
    if right.sum() == 0 or wrong.sum() == 0:
        return float("nan")
    below = np.cumsum(right) - right  # right voxels with a strictly lower score
    return float((wrong * (below + 0.5 * right)).sum() / (right.sum() * wrong.sum()))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (scipy.stats.spearmanr), NaN for fewer than 3 pairs."""
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan")
    return float(spearmanr(x, y).statistic)
