"""Per-voxel uncertainty and a per-case quality score from region probabilities.

The map is the predictive entropy of the whole-tumour probability (binary entropy in bits, 0 =
certain, 1 = p of 0.5), where ``p`` is the mean over the ensemble members and mirrorings that
ran (Lakshminarayanan et al. 2017, arXiv:1612.01474; for test-time augmentation in brain tumour
segmentation, Wang et al. 2019, Neurocomputing 338:34, arXiv:1807.07356). The case score is the
expected Dice of the thresholded mask under the model's own probabilities (the soft Dice of
``p`` against ``p > 0.5``), a calibration-based estimate of the Dice a reader would measure:
low values flag likely failures (small, faint or uncertain tumours).
"""

from __future__ import annotations

import numpy as np
import torch


def binary_entropy(prob: torch.Tensor | np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli probability, elementwise; float32, in [0, 1].

    Example:
        >>> binary_entropy(np.array([0.0, 0.5, 1.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    p = np.clip(np.asarray(prob.detach().cpu().numpy() if isinstance(prob, torch.Tensor) else prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    h[h < 1e-3] = 0.0  # below a thousandth of a bit: certain (keeps the written map small)
    return h.astype(np.float32)


def expected_dice(prob: torch.Tensor | np.ndarray, threshold: float = 0.5) -> float:
    """Soft Dice of the probability map against its own thresholded mask, in [0, 1].

    ``2 * sum(p * m) / (sum(p) + sum(m))`` with ``m = p > threshold``: the Dice the mask would
    score if the voxels were labelled with the model's probabilities. 1.0 when both are empty
    (nothing predicted, nothing probable).

    Example:
        >>> round(expected_dice(np.array([0.9, 0.9, 0.2, 0.0])), 3)
        0.9
    """
    p = np.asarray(prob.detach().cpu().numpy() if isinstance(prob, torch.Tensor) else prob, dtype=np.float64)
    mask = p > threshold
    denominator = p.sum() + mask.sum()
    return 1.0 if denominator == 0 else float(2.0 * p[mask].sum() / denominator)
