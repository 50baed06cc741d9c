"""Evaluate a folder of predicted label maps against a manifest's references."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.metrics import EVAL_REGIONS, METRIC_NAMES, case_metrics
from app.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_predictions(pred_dir: str | Path, items: list[dict[str, Any]], csv_path: str | Path | None = None, png_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Score ``<pred_dir>/<case_id>_seg.nii.gz`` against each item's ``label``.

    Args:
        pred_dir: folder of predicted label maps.
        items: datalist items with ``case_id``, ``image`` (absolute paths) and ``label``.
        csv_path: where to write per-case rows and a ``mean`` row (atomically).
        png_dir: where to write an overlay per case (FLAIR with reference and prediction).

    Returns:
        One row per evaluated case (``case`` plus ``<region>_<metric>``), then the ``mean`` row.

    Raises:
        FileNotFoundError: no item has a prediction in ``pred_dir``.
    """
    import nibabel as nib

    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for item in items:
        case_id = item.get("case_id") or Path(item["label"]).name.replace("_seg.nii.gz", "")
        pred_path = Path(pred_dir) / f"{case_id}_seg.nii.gz"
        if not pred_path.is_file():
            skipped.append(case_id)
            continue
        ref_img = nib.load(item["label"])
        pred = np.asarray(nib.load(str(pred_path)).dataobj).astype(np.uint8)
        ref = np.asarray(ref_img.dataobj).astype(np.uint8)
        rows.append({"case": case_id, **case_metrics(pred, ref, ref_img.header.get_zooms()[:3])})
        if png_dir is not None:
            from app.evaluation.overlay import save_overlay

            save_overlay(item["image"][-1], pred, ref, Path(png_dir) / f"{case_id}_overlay.png", title=case_id)
    if skipped:
        logger.info(f"{len(skipped)} manifest case(s) have no prediction in '{pred_dir}' and were not scored: {', '.join(skipped)}")
    if not rows:
        raise FileNotFoundError(f"no prediction '<case_id>_seg.nii.gz' in '{pred_dir}' matches the {len(items)} manifest case(s)")
    keys = [k for k in rows[0] if k != "case"]
    rows.append({"case": "mean", **{k: _mean([r[k] for r in rows]) for k in keys}})
    if csv_path is not None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["case", *keys])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(csv_path, buf.getvalue())
    return rows


def format_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = METRIC_NAMES) -> str:
    """A plain-text table: one line per case, columns ``<region> <metric>``."""
    cols = [f"{r}_{m}" for m in metrics for r in EVAL_REGIONS]
    width = max(len(str(r["case"])) for r in rows)
    lines = [f"{'case':<{width}}  " + "  ".join(f"{c.replace('_', ' '):>15}" for c in cols)]
    for row in rows:
        lines.append(f"{row['case']:<{width}}  " + "  ".join(f"{row[c]:>15.4f}" for c in cols))
    return "\n".join(lines)
