"""Cross-validation scoring: every case segmented once by the fold model that never saw it."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engines.checkpoint import unfinished_run
from app.evaluation.metrics import EVAL_REGIONS
from app.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def fold_checkpoint(weights: str | Path, fold: int) -> Path:
    """Weights of one fold: ``<weights>/fold<k>.pt`` (a bundle's ``models/``) or
    ``<weights>/fold<k>/model.pt`` (a ``volseg train --fold`` run folder).

    Raises:
        FileNotFoundError: neither exists.
    """
    root = Path(weights)
    for path in (root / f"fold{fold}.pt", root / f"fold{fold}" / "model.pt"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no weights for fold {fold} in '{root}' (expected fold{fold}.pt or fold{fold}/model.pt)")


def nested_choice(scores: np.ndarray, folds: Sequence[int], baseline: int = 0) -> tuple[list[int], np.ndarray]:
    """Choose a candidate (threshold, postprocessing rule) by nested cross-validation.

    A choice made on the same cases it is scored on flatters itself. Here, for each fold, the
    candidate with the best mean score over the *other* folds' cases is applied to that fold's
    cases, so no case is scored with a choice made on it (the inner loop of nested CV; the way
    nnU-Net's postprocessing and the bundle's thresholds are chosen).

    Args:
        scores: ``(n_candidates, n_cases)`` per-case scores (higher is better, e.g. Dice).
        folds: the fold of each case, length ``n_cases``.
        baseline: index of the reference candidate (e.g. threshold 0.5, rule off).

    Returns:
        The index chosen for each fold (folds in ascending order; ties go to the lower index) and
        each case's paired gain ``(n_cases,)`` of its fold's choice over ``baseline``.

    Raises:
        ValueError: ``folds`` does not match the number of cases, or there is only one fold.
    """
    scores = np.asarray(scores, dtype=float)
    folds = np.asarray(folds)
    if scores.ndim != 2 or folds.shape != (scores.shape[1],):
        raise ValueError(f"scores must be (candidates, cases) with one fold per case; got {scores.shape} scores and {folds.shape} folds")
    if len(set(folds.tolist())) < 2:
        raise ValueError("nested cross-validation needs cases from at least 2 folds")
    chosen, nested = [], np.empty(scores.shape[1])
    for fold in sorted(set(folds.tolist())):
        j = int(np.argmax(scores[:, folds != fold].mean(1)))
        chosen.append(j)
        nested[folds == fold] = scores[j, folds == fold]
    return chosen, nested - scores[baseline]


def summarise(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = ("dice", "hd95")) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation over cases of ``<region>_<metric>``, NaNs left out
    (``n`` counts the finite values: an HD95 is NaN where a region is predicted empty)."""
    out: dict[str, dict[str, float]] = {}
    for metric in metrics:
        for region in EVAL_REGIONS:
            values = np.array([r[f"{region}_{metric}"] for r in rows], dtype=float)
            finite = values[np.isfinite(values)]
            out[f"{region}_{metric}"] = {"mean": float(finite.mean()) if finite.size else math.nan,
                                         "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan, "n": int(finite.size)}
    return out


def cross_validate(bundle: str | Path, cv_manifest: str | Path, weights: str | Path, out_dir: str | Path, data_dir: str | Path | None = None,
                   mode: str = "fast", segmenter_kwargs: dict[str, Any] | None = None, folds: Sequence[int] | None = None,
                   progress: Callable[[Any], Any] | None = None, sequences: Sequence[str] | None = None,
                   uncertainty: bool = False) -> dict[str, Any]:
    """Score a bundle by k-fold cross-validation: each case is segmented by its fold's model only.

    For fold ``k`` the model ``fold_checkpoint(weights, k)`` segments the cases whose ``fold`` is
    ``k`` (the cases that model never trained on); ``mode="accurate"`` runs that one model with
    the bundle's mirroring test-time augmentation and accurate-mode N4 (``accurate_n4_average``:
    on for brats_unet3d >= 0.9.1; override it to score without) (the part of ``--mode accurate`` that
    cross-validation can score: the shipped ensemble averages all folds, so every shared case
    has been seen by four of its five members). Labels are written in the input geometry to
    ``out_dir/preds`` and scored with :func:`app.evaluation.case_metrics` (Dice, HD95 in mm, ...).

    Args:
        bundle: bundle name or folder (network, preprocessing, inference settings).
        cv_manifest: cross-validation datalist (``volseg cv folds``), paths relative to ``data_dir``.
        weights: folder of ``fold<k>.pt`` files or of ``fold<k>/model.pt`` training runs.
        out_dir: output folder: ``preds/``, ``cv_cases.csv`` (one row per case, with its fold and
            seconds) and ``cv_summary.json`` (mean and std over cases per region).
        data_dir: data root (default: ``$VOLSEG_BRATS_DIR`` or ``../shared/data/brats2018``).
        mode: ``"fast"`` or ``"accurate"``.
        segmenter_kwargs: more :class:`app.inference.Segmenter` arguments (``backend``, ``device``,
            ``overrides`` such as ``{"infer_mode": "whole_volume"}``).
        folds: folds to run (default: all).
        progress: wraps the case iterator (e.g. ``tqdm``).
        sequences: the sequences each case keeps (e.g. ``["t1ce", "flair"]``); the others are
            treated as missing (zero-filled, as ``volseg segment`` does for such a case).
            Default: all.
        uncertainty: also score the whole-tumour uncertainty map: per case ``WT_unc_auroc``
            (AUROC of wrong vs right whole-tumour voxels inside the brain, i.e. the non-zero
            voxels of the given sequences) and ``quality`` (the case score); the summary adds
            the pooled AUROC over all cases and Spearman's correlation of quality with WT Dice.

    Returns:
        ``{"rows": [...], "summary": {...}, "mode": ..., "folds": k, "scored_folds": [...]}``.

    Raises:
        FileNotFoundError: the manifest, a fold's weights or a case's files are missing.
        ValueError: the manifest has no folds, or ``sequences`` names no known sequence.
    """
    from app.constants import MODALITIES
    from app.evaluation.uncertainty import auroc, error_histograms, spearman

    from app.data import default_brats_dir, load_datalist
    from app.evaluation.metrics import case_metrics
    from app.inference import Segmenter
    from app.io.writers import write_label_like

    content = json.loads(Path(cv_manifest).read_text())
    k = int(content.get("numFolds", 0))
    if k < 2:
        raise ValueError(f"manifest '{cv_manifest}' has no cross-validation folds (numFolds); build one with `volseg cv folds`")
    ckpts = {fold: fold_checkpoint(weights, fold) for fold in (folds if folds is not None else range(k))}  # every fold's weights before any case
    for fold, ckpt in ckpts.items():
        stopped = unfinished_run(ckpt.parent) if ckpt.name == "model.pt" else None
        if stopped:
            logger.warning("fold %d: the run in %s %s (progress.json): its model.pt is the best of the epochs it trained, not a finished "
                           "fold; the same `volseg cv train` command resumes it", fold, ckpt.parent, stopped)
    root = Path(data_dir) if data_dir is not None else default_brats_dir()
    items = load_datalist(cv_manifest, "training", root)
    fold_of = {it["case_id"]: it["fold"] for it in content["training"]}
    out = Path(out_dir)
    keep = list(MODALITIES) if sequences is None else [m for m in MODALITIES if m in {str(x).lower() for x in sequences}]
    if not keep:
        raise ValueError(f"sequences must name some of {', '.join(MODALITIES)}, got {', '.join(map(str, sequences or []))}")
    rows: list[dict[str, Any]] = []
    pooled = np.zeros((2, 1000), np.int64)
    for fold, ckpt in ckpts.items():
        kwargs = dict(segmenter_kwargs or {})
        if mode == "accurate":
            kwargs["overrides"] = {**kwargs.get("overrides", {}), "ensemble_ckpt_paths": [str(ckpt)]}
            segmenter = Segmenter(bundle, mode="accurate", uncertainty=uncertainty, **kwargs)
        else:
            segmenter = Segmenter(bundle, ckpt_path=ckpt, mode="fast", uncertainty=uncertainty, **kwargs)
        cases = [it for it in items if fold_of[it["case_id"]] == fold]
        for item in (progress or (lambda x: x))(cases):
            start = time.perf_counter()
            images = [path if name in keep else None for name, path in zip(MODALITIES, item["image"])]
            case = segmenter.run_case(segmenter.load(images))
            label = case["label"]
            seconds = time.perf_counter() - start
            write_label_like(label, item["image"][0], out / "preds" / f"{item['case_id']}_seg.nii.gz")
            ref, spacing = _read_label(item["label"])
            rows.append({"case": item["case_id"], "fold": fold, "seconds": round(seconds, 2), **case_metrics(label, ref, spacing)})
            if uncertainty:
                brain = np.any([_nonzero(p) for p in images if p is not None], axis=0)
                hist = error_histograms(case["uncertainty"], label > 0, ref > 0, brain)
                pooled += hist
                rows[-1].update(WT_unc_auroc=round(auroc(hist), 4), quality=case["quality"])
            logger.info("fold %d %s: Dice WT %.3f TC %.3f ET %.3f (%.1f s)", fold, item["case_id"], rows[-1]["WT_dice"], rows[-1]["TC_dice"], rows[-1]["ET_dice"], seconds)
    summary = summarise(rows)
    if uncertainty and rows:
        summary["uncertainty"] = {"WT_auroc_pooled": round(auroc(pooled), 4),
                                  "WT_auroc_case_mean": round(float(np.nanmean([r["WT_unc_auroc"] for r in rows])), 4),
                                  "quality_vs_WT_dice_spearman": round(spearman([r["quality"] for r in rows], [r["WT_dice"] for r in rows]), 4)}
    scored = sorted(set(folds if folds is not None else range(k)))
    result = {"bundle": str(bundle), "mode": mode, "folds": k, "scored_folds": scored, "manifest": str(cv_manifest), "weights": str(weights), "sequences": keep,
              "cases": len(rows), "summary": summary, "rows": rows}
    if len(scored) < k:  # a part of the cross-validation: its figures are not the CV's
        logger.warning(f"scored {len(scored)} of the {k} folds ({', '.join(map(str, scored))}): {len(rows)} case(s); the means are not the "
                       "whole cross-validation's")
    _write_outputs(out, result)
    if uncertainty:
        np.save(out / "uncertainty_histograms.npy", pooled)  # (2, 1000): right, wrong voxels per entropy bin
    return result


def _nonzero(path: str | Path) -> np.ndarray:
    """``(H, W, D)`` boolean mask of the non-zero voxels of a volume (the brain of a skull-stripped MRI)."""
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj) != 0


def _read_label(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A reference label map ``(H, W, D)`` in the voxel order of MONAI's readers, in BraTS 2018 codes
    (a BraTS 2023+ map's ET 3 as 4, :func:`app.transforms.brats2018_codes`), and its spacing in mm."""
    import nibabel as nib

    from app.transforms.regions import brats2018_codes

    image = nib.load(str(path))
    return brats2018_codes(np.asarray(image.dataobj).astype(np.uint8)), tuple(float(z) for z in image.header.get_zooms()[:3])


def _write_outputs(out: Path, result: dict[str, Any]) -> None:
    rows = result["rows"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "cv_cases.csv", buf.getvalue())
    atomic_write_text(out / "cv_summary.json", json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2) + "\n")


def format_cv(result: dict[str, Any]) -> str:
    """A Markdown table: one row per case (fold, Dice and HD95 per region), then mean and std."""
    regions = list(EVAL_REGIONS)
    head = "| case | fold | " + " | ".join(f"{r} Dice" for r in regions) + " | " + " | ".join(f"{r} HD95 mm" for r in regions) + " | s |"
    lines = [head, "|" + " --- |" * (3 + 2 * len(regions))]
    for row in result["rows"]:
        lines.append(f"| {row['case']} | {row['fold']} | " + " | ".join(f"{row[f'{r}_dice']:.3f}" for r in regions) + " | "
                     + " | ".join(f"{row[f'{r}_hd95']:.1f}" for r in regions) + f" | {row['seconds']:.1f} |")
    s = result["summary"]
    lines.append("| **mean** | | " + " | ".join(f"**{s[f'{r}_dice']['mean']:.3f}**" for r in regions) + " | " + " | ".join(f"{s[f'{r}_hd95']['mean']:.1f}" for r in regions) + " | |")
    lines.append("| std | | " + " | ".join(f"{s[f'{r}_dice']['std']:.3f}" for r in regions) + " | " + " | ".join(f"{s[f'{r}_hd95']['std']:.1f}" for r in regions) + " | |")
    return "\n".join(lines)
