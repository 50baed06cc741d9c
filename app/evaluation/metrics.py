"""Per-region metrics (Dice, HD95, sensitivity, specificity, precision) with MONAI metrics.

The regions and their label values come from a bundle's :class:`app.labels.LabelManager`
(BraTS WT/TC/ET by default; one region per organ for CT bundles)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from app.labels import BRATS, LabelManager

#: BraTS evaluation regions in report order with their label values (a copy of
#: :data:`app.labels.BRATS` ``.regions``, which owns them); other bundles: ``LabelManager.regions``.
EVAL_REGIONS: dict[str, tuple[int, ...]] = dict(BRATS.regions)
METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity", "precision")


def brats_region_masks(label: np.ndarray) -> dict[str, np.ndarray]:
    """BraTS label map ``(H, W, D)`` with codes 0/1/2/4 -> boolean masks WT, TC, ET ``(H, W, D)``."""
    return BRATS.region_masks(label)


def _region_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float], missing_hd95_mm: float = math.nan) -> dict[str, float]:
    from monai.metrics import compute_confusion_matrix_metric, compute_dice, compute_hausdorff_distance, get_confusion_matrix

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    out: dict[str, float] = {}
    if not ref.any():
        # BraTS convention for an absent region: an empty prediction is perfect (Dice 1, HD95 0).
        out["dice"] = 1.0 if not pred.any() else 0.0
        out["hd95"] = 0.0 if not pred.any() else missing_hd95_mm
    else:
        out["dice"] = float(compute_dice(p, r, include_background=True)[0, 0])
        with warnings.catch_warnings():  # MONAI 1.6 calls its own deprecated get_mask_edges(always_return_as_numpy=...)
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy")
            out["hd95"] = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=[float(v) for v in spacing_mm])[0, 0]) if pred.any() else missing_hd95_mm
    cm = get_confusion_matrix(p, r, include_background=True)
    for name in ("sensitivity", "specificity", "precision"):
        value = compute_confusion_matrix_metric(name, cm)
        out[name] = float(value.reshape(-1)[0])
    return out


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), labels: LabelManager = BRATS) -> dict[str, float]:
    """Metrics of one case per evaluation region of ``labels`` (MONAI ``compute_dice``,
    ``compute_hausdorff_distance`` at the 95th percentile, and confusion-matrix
    sensitivity/recall, specificity, precision).

    Args:
        pred: predicted label map ``(H, W, D)`` (BraTS: codes 0/1/2/4).
        ref: reference label map of the same shape; values that are no label of ``labels``
            (other organs of a multi-organ map) belong to no region.
        spacing_mm: voxel size, so HD95 is in mm.
        labels: the bundle's regions (default BraTS WT, TC, ET).

    Returns:
        ``{"WT_dice": ..., "WT_hd95": ..., ..., "ET_precision": ...}`` (CT: ``"spleen_dice"`` ...).
        A region absent from the reference scores Dice 1 and HD95 0 if also absent from the
        prediction. A region in only one of the two scores Dice 0 and HD95
        ``labels.hd95_missing_mm``: 374 mm for BraTS (the BraTS challenge convention), NaN
        where the bundle sets none. Precision is NaN for an empty prediction.

    Raises:
        ValueError: shapes differ.

    Example:
        >>> ref = np.zeros((24, 32, 40), np.uint8); ref[4:12, 4:12, 4:12] = 2
        >>> case_metrics(np.zeros_like(ref), ref, (0.8, 0.8, 2.5))["WT_hd95"]
        374.0
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    preds, refs = labels.region_masks(pred), labels.region_masks(ref)
    result: dict[str, float] = {}
    for region in labels.regions:
        for name, value in _region_metrics(preds[region], refs[region], spacing_mm, labels.hd95_missing_mm).items():
            result[f"{region}_{name}"] = value
    return result
