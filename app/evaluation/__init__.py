"""Evaluation of BraTS label maps: per-region metrics, reports and overlays."""

from app.evaluation.metrics import METRIC_NAMES, brats_region_masks, case_metrics
from app.evaluation.report import CasesFailed, evaluate_predictions, format_table

__all__ = ["CasesFailed", "METRIC_NAMES", "brats_region_masks", "case_metrics", "evaluate_predictions", "format_table"]
