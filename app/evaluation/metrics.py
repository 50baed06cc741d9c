"""Per-region BraTS metrics (Dice, HD95, sensitivity, specificity, precision) with MONAI metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Evaluation regions in the order BraTS reports them, with their label codes.
EVAL_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity", "precision")


def brats_region_masks(label: np.ndarray) -> dict[str, np.ndarray]:
    """BraTS label map ``(H, W, D)`` with codes 0/1/2/4 -> boolean masks WT, TC, ET ``(H, W, D)``."""
    return {name: np.isin(label, codes) for name, codes in EVAL_REGIONS.items()}


def _region_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    from monai.metrics import compute_confusion_matrix_metric, compute_dice, compute_hausdorff_distance, get_confusion_matrix

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    out: dict[str, float] = {}
    if not ref.any():
        # BraTS convention for an absent region: an empty prediction is perfect (Dice 1, HD95 0).
        out["dice"] = 1.0 if not pred.any() else 0.0
        out["hd95"] = 0.0 if not pred.any() else float("nan")
    else:
        out["dice"] = float(compute_dice(p, r, include_background=True)[0, 0])
        out["hd95"] = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=[float(v) for v in spacing_mm])[0, 0]) if pred.any() else float("nan")
    cm = get_confusion_matrix(p, r, include_background=True)
    for name in ("sensitivity", "specificity", "precision"):
        value = compute_confusion_matrix_metric(name, cm)
        out[name] = float(value.reshape(-1)[0])
    return out


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Metrics of one case for WT, TC and ET (MONAI ``compute_dice``, ``compute_hausdorff_distance``
    at the 95th percentile, and confusion-matrix sensitivity/recall, specificity, precision).

    Args:
        pred: predicted label map ``(H, W, D)``, codes 0/1/2/4.
        ref: reference label map of the same shape.
        spacing_mm: voxel size, so HD95 is in mm.

    Returns:
        ``{"WT_dice": ..., "WT_hd95": ..., ..., "ET_precision": ...}``. A region absent from the
        reference scores Dice 1 and HD95 0 if also absent from the prediction, else Dice 0 and
        HD95 NaN (BraTS convention); precision is NaN for an empty prediction.

    Raises:
        ValueError: shapes differ.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    preds, refs = brats_region_masks(pred), brats_region_masks(ref)
    result: dict[str, float] = {}
    for region in EVAL_REGIONS:
        for name, value in _region_metrics(preds[region], refs[region], spacing_mm).items():
            result[f"{region}_{name}"] = value
    return result
