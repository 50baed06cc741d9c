"""Evaluate a folder of predicted label maps against a manifest's references."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.metrics import METRIC_NAMES, case_metrics
from app.io.atomic import atomic_write_text
from app.io.readers import strip_volume_suffix
from app.labels import BRATS, BRATS_ED, BRATS_ET, BRATS_NCR, LabelManager

logger = logging.getLogger(__name__)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _grid(img: Any) -> str:
    """Size, spacing, origin and direction of a SimpleITK image, for messages."""
    def fmt(values: Sequence[float]) -> str:
        return "(" + ", ".join(f"{v + 0.0:.6g}" for v in values) + ")"  # + 0.0: no "-0"

    return f"size {img.GetSize()}, spacing {fmt(img.GetSpacing())} mm, origin {fmt(img.GetOrigin())} mm, direction {fmt(img.GetDirection())}"


def find_prediction(pred_dir: str | Path, case_id: str) -> Path | None:
    """``<pred_dir>/<case_id>_seg.<ext>`` in any format ``volseg segment`` writes (NIfTI, NRRD,
    MetaImage), or None. Where several exist, NIfTI is taken first (the order of
    :data:`app.io.readers.VOLUME_SUFFIXES`) and the others are named in a warning."""
    from app.io.readers import VOLUME_SUFFIXES

    found = [Path(pred_dir) / f"{case_id}_seg{suffix}" for suffix in VOLUME_SUFFIXES]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        logger.warning(f"case '{case_id}': several predictions {', '.join(p.name for p in found)}; scoring {found[0].name}")
    return found[0] if found else None


def read_label(path: str | Path) -> tuple[np.ndarray, Any]:
    """A label map ``(H, W, D)`` in voxel order ``(i, j, k)`` (as nibabel and MONAI return it) and
    its SimpleITK image (geometry: spacing in mm, origin, direction), from any format VolSeg reads.

    Raises:
        app.errors.InputError: missing, unreadable or corrupt file.
    """
    import SimpleITK as sitk

    from app.io.readers import read_volume

    image = read_volume(path, check_finite=False, refuse_all_zero=False)
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image


def _same_grid(pred: Any, ref: Any, voxel_fraction: float = 0.05) -> bool:
    """Whether two SimpleITK images share one voxel grid: same size and direction, spacing and
    origin within ``voxel_fraction`` of the reference's smallest voxel (rounding in a writer's
    header, not a shift that moves a voxel)."""
    atol_mm = voxel_fraction * min(ref.GetSpacing())
    return (pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing(), atol=atol_mm)
            and np.allclose(pred.GetOrigin(), ref.GetOrigin(), atol=atol_mm) and np.allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-4))


def _on_reference_grid(pred_img: Any, ref_img: Any) -> Any | None:
    """``pred_img`` on the reference's grid: itself, or the same voxels stored in another axis
    order or direction (a tool that writes RAS where the reference is LPS), reoriented
    (SimpleITK ``DICOMOrient``, no interpolation); None where it lies on another grid."""
    import SimpleITK as sitk

    if _same_grid(pred_img, ref_img):
        return pred_img
    try:
        orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ref_img.GetDirection())
        turned = sitk.DICOMOrient(pred_img, orientation)
    except RuntimeError:  # not an axis-aligned permutation of the reference's axes
        return None
    return turned if _same_grid(turned, ref_img) else None


def _overlay_image(item: dict[str, Any], labels: LabelManager) -> str:
    """The background volume of an overlay: the item's only image, or its display channel (FLAIR)."""
    image = item["image"]
    return str(image) if isinstance(image, (str, Path)) else str(image[labels.display_channel if len(image) == len(labels.channels) else -1])


def evaluate_predictions(pred_dir: str | Path, items: list[dict[str, Any]], csv_path: str | Path | None = None, png_dir: str | Path | None = None,
                         labels: LabelManager = BRATS, lesion_wise: bool = False) -> list[dict[str, Any]]:
    """Score ``<pred_dir>/<case_id>_seg.<ext>`` (``.nii.gz``, ``.nrrd``, ``.mha`` ...) against each
    item's ``label``, per evaluation region of ``labels``.

    Args:
        pred_dir: folder of predicted label maps.
        items: datalist items with ``case_id``, ``image`` (absolute paths) and ``label``.
        csv_path: where to write per-case rows and a ``mean`` row (atomically).
        png_dir: where to write an overlay per case (the display channel, e.g. FLAIR, with
            reference and prediction).
        labels: the bundle's labels and regions (default BraTS WT, TC, ET).
        lesion_wise: also the BraTS 2023+ lesion-wise Dice, HD95 and detection F1 per region
            (``<region>_dice_lesionwise`` ...; :mod:`app.evaluation.lesionwise`, BraTS labels only).

    Returns:
        One row per evaluated case (``case`` plus ``<region>_<metric>``), then the ``mean`` row.

    Raises:
        FileNotFoundError: no item has a prediction in ``pred_dir`` (with a hint where its files
            are named otherwise).
        app.errors.OutputError: ``csv_path`` or ``png_dir`` cannot be written (before any case).
        CasesFailed: cases that could not be scored: a prediction not on its reference's voxel
            grid (size, spacing, origin, direction) or an unreadable file; every other case is
            scored and the CSV written first, and the exception holds their rows.
    """
    from app.io.outputs import check_output_path, prepare_output_dir

    if csv_path is not None:  # a path that cannot take the table fails now, not after every case is scored
        check_output_path(csv_path, "--csv", folder=False)
        prepare_output_dir(Path(csv_path).parent)
    if png_dir is not None:
        prepare_output_dir(png_dir)
    if lesion_wise:
        from app.evaluation.lesionwise import check_ready, lesion_metrics

        check_ready(labels)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    failures: list[str] = []
    for item in items:
        case_id = item.get("case_id") or strip_volume_suffix(Path(item["label"]).name).removesuffix("_seg")
        pred_path = find_prediction(pred_dir, case_id)
        if pred_path is None:
            skipped.append(case_id)
            continue
        try:
            row = _score_case(case_id, pred_path, item, labels, lesion_wise, png_dir)
        except (ValueError, RuntimeError, OSError) as err:  # InputError is a ValueError: one bad case does not stop the others
            failures.append(str(err) if str(err).startswith(f"case '{case_id}'") else f"case '{case_id}': {err}")
            logger.error(failures[-1])
            continue
        rows.append(row)
    if skipped:
        logger.warning(f"{len(skipped)} manifest case(s) have no prediction in '{pred_dir}' and were not scored (the mean row leaves them out): "
                       f"{', '.join(skipped)}")
    if not rows and failures:
        raise CasesFailed([], failures)
    if not rows:
        hint = _naming_hint(pred_dir) or "are the predictions' cases in another list of the datalist? (--split; by default every list is scored)"
        raise FileNotFoundError(f"no prediction '<case_id>_seg.nii.gz' (or .nrrd, .mha) in '{pred_dir}' matches the {len(items)} manifest case(s) "
                                f"scored ({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}); {hint}")
    keys = [k for k in rows[0] if k != "case"]
    undefined = {k: sum(math.isnan(r[k]) for r in rows) for k in keys}
    undefined = {k: n for k, n in undefined.items() if 0 < n < len(rows)}
    if undefined:
        logger.warning(f"the mean row leaves out cases where a metric is undefined (NaN, e.g. precision of an empty prediction): "
                       + ", ".join(f"{k} over {len(rows) - n} of {len(rows)} cases" for k, n in undefined.items()))
    rows.append({"case": "mean", **{k: _mean([r[k] for r in rows]) for k in keys}})
    if csv_path is not None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["case", *keys])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(csv_path, buf.getvalue())
    if failures:
        raise CasesFailed(rows, failures)
    return rows


class CasesFailed(ValueError):
    """Cases of ``volseg evaluate`` that could not be scored; the others were scored (and the CSV written).

    Attributes:
        rows: the scored cases' rows and the ``mean`` row (empty where no case could be scored).
        failures: one line per failed case, naming the case, the file and the problem.
    """

    def __init__(self, rows: list[dict[str, Any]], failures: list[str]) -> None:
        scored = f"; the other {len(rows) - 1} case(s) are scored" if rows else ""
        super().__init__(f"{len(failures)} case(s) could not be scored{scored}: " + "; ".join(failures))
        self.rows, self.failures = rows, failures


def _score_case(case_id: str, pred_path: Path, item: dict[str, Any], labels: LabelManager, lesion_wise: bool, png_dir: str | Path | None) -> dict[str, Any]:
    """One case's row of :func:`evaluate_predictions` (and its overlay PNG).

    Raises:
        ValueError: the prediction is not on its reference's grid; app.errors.InputError: an unreadable file.
    """
    import SimpleITK as sitk

    pred, pred_img = read_label(pred_path)
    ref, ref_img = read_label(item["label"])
    aligned = _on_reference_grid(pred_img, ref_img)
    if aligned is not None and aligned is not pred_img:
        logger.info(f"case '{case_id}': prediction '{pred_path}' is stored in another axis order than its reference; scored reoriented")
        pred = sitk.GetArrayFromImage(aligned).transpose(2, 1, 0)
    if aligned is None:
        raise ValueError(f"case '{case_id}': prediction '{pred_path}' ({_grid(pred_img)}) is not on the grid of its reference "
                         f"'{item['label']}' ({_grid(ref_img)})")
    if set(labels.labels) == {BRATS_NCR, BRATS_ED, BRATS_ET}:  # BraTS: a 2023+ map (3 = ET) is scored in the 2018 codes (4 = ET)
        from app.transforms.regions import BRATS2023_ET, brats2018_codes

        if (pred == BRATS2023_ET).any():
            logger.info(f"case '{case_id}': prediction '{pred_path}' is in BraTS 2023+ codes (3 = ET); scored as ET (4)")
            pred = brats2018_codes(pred)
        if (ref == BRATS2023_ET).any():
            logger.info(f"case '{case_id}': reference '{item['label']}' is in BraTS 2023+ codes (3 = ET); scored as ET (4)")
            ref = brats2018_codes(ref)
    for what, path, array in (("prediction", pred_path, pred), ("reference", item["label"], ref)):
        foreign = sorted(set(np.unique(array).tolist()) - {0, *labels.labels})
        if foreign:
            logger.warning(f"case '{case_id}': {what} '{path}' has the value(s) {', '.join(map(str, foreign))}, which are no label of the "
                           f"bundle ({', '.join(map(str, [0, *labels.labels]))}); they are scored as background")
    row = {"case": case_id, **case_metrics(pred, ref, ref_img.GetSpacing(), labels)}
    if lesion_wise:
        from app.evaluation.lesionwise import lesion_metrics

        row.update(lesion_metrics(pred, ref, ref_img.GetSpacing()))
    if png_dir is not None:
        from app.evaluation.overlay import save_overlay

        save_overlay(_overlay_image(item, labels), pred, ref, Path(png_dir) / f"{case_id}_overlay.png", title=case_id, label_names=labels.labels)
    return row


def _naming_hint(pred_dir: str | Path) -> str | None:
    """What the files in ``pred_dir`` look like, where none is named ``<case_id>_seg.<ext>``."""
    from app.io.readers import VOLUME_SUFFIXES

    volumes = sorted(p.name for p in Path(pred_dir).iterdir() if p.is_file() and p.name.endswith(tuple(VOLUME_SUFFIXES)))
    if not volumes:
        return f"'{pred_dir}' holds no label map at all"
    if any("_seg." in name for name in volumes):
        return None  # named as volseg names them: other cases than the manifest's lists
    return (f"'{pred_dir}' holds {len(volumes)} label map(s) such as '{volumes[0]}': name each '<case_id>_seg.nii.gz' (as volseg segment "
            "does), with the case IDs of the manifest")


def format_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = METRIC_NAMES, regions: Sequence[str] | None = None) -> str:
    """A plain-text table: one line per case, columns ``<region> <metric>``.

    ``regions`` defaults to every ``<region>`` of the rows' ``<region>_dice`` keys, in order
    (``WT, TC, ET`` for BraTS, ``spleen`` for the CT bundle)."""
    regions = regions if regions is not None else [k.removesuffix("_dice") for k in rows[0] if k.endswith("_dice")]
    cols = [f"{r}_{m}" for m in metrics for r in regions]
    width = max(len(str(r["case"])) for r in rows)
    lines = [f"{'case':<{width}}  " + "  ".join(f"{c.replace('_', ' '):>15}" for c in cols)]
    for row in rows:
        lines.append(f"{row['case']:<{width}}  " + "  ".join(f"{row[c]:>15.4f}" for c in cols))
    return "\n".join(lines)
