"""BraTS 2023+ lesion-wise Dice and HD95 through the official BraTS evaluation package.

The BraTS challenges since 2023 rank by lesion-wise metrics: each region's connected components
are matched between prediction and reference and scored lesion by lesion, so a missed small
lesion counts as much as a large one (BraTS 2023 lesion-wise Dice and HD95; Saluja et al.,
github.com/rachitsaluja/BraTS-2023-Metrics). The official implementation is now the PyPI package
``brats-evaluation`` (module ``brats_evaluation``), built on ``panoptica`` (Kofler et al. 2023,
arXiv:2312.02608). This module runs that package's evaluator with its bundled glioma config
(``config_gli.yaml``: connected components per region, maximal bipartite matching on Dice) and
reads its results the way its ``brats-parse-metrics seg`` command does:

- ``<region>_dice_lesionwise``: ``lesionwise_dsc_mean`` (panoptica ``sq_dsc``), the mean Dice over
  matched lesions (0 where nothing matches);
- ``<region>_hd95_lesionwise``: ``lesionwise_hd95_mean`` (``sq_hd95``), mean HD95 in mm over matched
  lesions (``inf`` where nothing matches);
- ``<region>_f1_lesionwise``: ``all_instance_f1`` (``rq``), the lesion detection F1, which is where
  unmatched (false positive and false negative) lesions count.

A region absent from both maps gives NaN (the package's "no instances" case).

The first two are means over matched lesions only, so a case with missed or false lesions can
score above its voxel-wise Dice there. The BraTS 2023 challenges ranked with a form that counts
every unmatched lesion, computed here as the challenge's own code does (Saluja et al.,
github.com/rachitsaluja/BraTS-2023-Metrics, BraTS-GLI parameters; :func:`brats23_lesion_scores`):
reference components within 3 voxels of one another are one lesion, reference lesions of at most
50 mm^3 are left out, each missed lesion and each false-positive component scores Dice 0 and
HD95 374 mm, and a region absent from both maps scores Dice 1 and HD95 0:

- ``<region>_dice_lesionwise_brats23`` and ``<region>_hd95_lesionwise_brats23`` (mm).

Before, these two were derived from the package's lesion counts, without the merging and the
size threshold: a reference ET of one 33,520-voxel tumour and three specks of 1-10 voxels scored
0.23 for a voxel-wise ET Dice of 0.92.

The package uses
BraTS 2023 codes (1 NCR, 2 SNFH/edema, 3 ET); VolSeg's BraTS 2018 maps (4 = ET) are converted.

Install: ``pip install "volseg[lesion]"`` (``brats-evaluation``; see the README for its pins).

Example:
    >>> rows = lesion_metrics(pred, ref, (1.0, 1.0, 1.0))  # doctest: +SKIP
    >>> rows["ET_dice_lesionwise"]  # doctest: +SKIP
    0.83
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The PyPI package (and its import name) whose evaluator this module runs.
PACKAGE = "brats-evaluation"
#: VolSeg region -> group of the package's glioma config (``config_gli.yaml``).
REGION_GROUPS: dict[str, str] = {"WT": "wt", "TC": "tc", "ET": "et"}
#: The config's other groups (NETC, SNFH, resection cavity), not evaluated: they cost time only.
OTHER_GROUPS: tuple[str, ...] = ("netc", "snfh", "rc")
#: Per-region columns ``<region>_<name>``: name -> key of the package's per-group result. The
#: names end in ``_lesionwise`` (not ``_dice``) so that ``<region>_dice`` keys stay the voxel-wise ones.
LESION_METRICS: dict[str, str] = {"dice_lesionwise": "sq_dsc", "hd95_lesionwise": "sq_hd95", "f1_lesionwise": "rq"}
#: Per-region columns of the BraTS 2023 ranking form (unmatched lesions count; see the module docstring).
BRATS23_METRICS: tuple[str, ...] = ("dice_lesionwise_brats23", "hd95_lesionwise_brats23")
#: HD95 (mm) the BraTS 2023 ranking gives a missed or false lesion (the diagonal of the 240 x 240 x 155 grid).
BRATS23_MISSED_HD95 = 374.0
#: The BraTS 2023 glioma (BraTS-GLI) lesion parameters of the challenge code: reference lesions within
#: 3 voxels of one another are one lesion, and lesions of at most 50 mm^3 are left out.
BRATS23_DILATION = 3
BRATS23_MIN_LESION_MM3 = 50.0
#: BraTS 2018 -> BraTS 2023 label codes (the enhancing tumour moved from 4 to 3).
BRATS2018_TO_2023: dict[int, int] = {0: 0, 1: 1, 2: 2, 4: 3}


def to_brats2023(label: np.ndarray) -> np.ndarray:
    """BraTS 2018 label map (0/1/2/4) -> BraTS 2023 codes (0/1/2/3), same shape, uint8.

    Raises:
        ValueError: a value that is no BraTS 2018 code (3 would be ambiguous).
    """
    values = set(np.flatnonzero(np.bincount(np.asarray(label, dtype=np.int64).ravel())).tolist()) if label.size else set()
    unknown = sorted(values - set(BRATS2018_TO_2023))
    if unknown:
        raise ValueError(f"label values {unknown} are no BraTS 2018 codes (0, 1, 2, 4); lesion-wise metrics need a BraTS label map")
    out = np.asarray(label, dtype=np.uint8).copy()
    out[label == 4] = 3
    return out


def crop_to_foreground(pred: np.ndarray, ref: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both maps cut to the bounding box of their joint foreground plus ``margin`` background
    voxels on every side (at least one voxel where both are empty).

    Lesion-wise and global metrics are unchanged by the cut: connected components, overlaps and
    the distances between surface voxels all lie inside the box, and the margin keeps every
    surface off the array border (surfaces are found by binary erosion). The evaluation's
    distance transforms then cover the tumour's box, not the whole 240 x 240 x 155 grid.
    """
    fg = np.argwhere((pred != 0) | (ref != 0))
    if not fg.size:
        return pred[:1, :1, :1], ref[:1, :1, :1]
    lo = np.maximum(fg.min(0) - margin, 0)
    hi = np.minimum(fg.max(0) + margin + 1, pred.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    return pred[box], ref[box]


@functools.lru_cache(maxsize=2)
def evaluator(config: str = "gli") -> Any:
    """The package's ``Panoptica_Evaluator`` for a bundled config (``"gli"``: adult glioma).

    Raises:
        ImportError: ``brats-evaluation`` is not installed (the message says how to install it).
    """
    try:
        from brats_evaluation import config_path
        from panoptica import Panoptica_Evaluator
    except ImportError as err:
        raise ImportError(f"lesion-wise metrics need the official BraTS evaluation package: pip install \"volseg[lesion]\" ({err})") from err
    with contextlib.redirect_stdout(io.StringIO()):  # its notice that WT and TC share labels, as they should
        return Panoptica_Evaluator.load_from_config(str(config_path(config)))


def check_ready(labels: Any) -> None:
    """Fail before any case is read where lesion-wise metrics cannot run: a bundle whose labels
    are not BraTS's (1, 2, 4; ``labels`` is an :class:`app.labels.LabelManager`), or the package
    missing.

    Raises:
        ValueError: not a BraTS label set. ImportError: the package is not installed.
    """
    if set(labels.labels) != set(BRATS2018_TO_2023) - {0}:
        raise ValueError(f"--lesion-wise scores BraTS label maps (labels 1, 2, 4), not labels {sorted(labels.labels)}")
    evaluator()


def package_version() -> str:
    """Installed version of ``brats-evaluation`` and ``panoptica``, e.g. ``"brats-evaluation 0.0.10, panoptica 2.1.7"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{PACKAGE} {version(PACKAGE)}, panoptica {version('panoptica')}"
    except PackageNotFoundError:
        return f"{PACKAGE} not installed"


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Lesion-wise Dice, HD95 (mm) and detection F1 of one case for WT, TC and ET.

    Args:
        pred: predicted BraTS 2018 label map ``(H, W, D)``, codes 0/1/2/4.
        ref: reference label map of the same shape and codes.
        spacing_mm: voxel size in mm (the reference's), for HD95.

    Returns:
        ``{"WT_dice_lesionwise": ..., "WT_hd95_lesionwise": ..., "WT_f1_lesionwise": ..., ...}`` as the
        package reports them (see the module docstring; NaN for a region absent from both), and
        ``<region>_dice_lesionwise_brats23`` / ``_hd95_lesionwise_brats23`` (:func:`brats23_lesion_scores`).

    Raises:
        ValueError: shapes differ, or a value is no BraTS 2018 code.
        ImportError: the package is missing.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    pred, ref = crop_to_foreground(pred, ref, margin=BRATS23_DILATION + 2)  # lesions merged by dilation stay inside the box
    from app.evaluation.metrics import brats_region_masks

    masks_pred, masks_ref = brats_region_masks(pred), brats_region_masks(ref)
    results = evaluator().evaluate(to_brats2023(pred), to_brats2023(ref), voxelspacing=tuple(float(s) for s in spacing_mm),
                                   skip_groups=list(OTHER_GROUPS), verbose=False)
    out: dict[str, float] = {}
    for region, group in REGION_GROUPS.items():
        values = results[group].to_dict(True)
        for name, key in LESION_METRICS.items():
            value = values.get(key)
            out[f"{region}_{name}"] = float(value) if value is not None else math.nan
        ranked = brats23_lesion_scores(masks_pred[region], masks_ref[region], spacing_mm)
        out.update({f"{region}_dice_lesionwise_brats23": ranked["dice"], f"{region}_hd95_lesionwise_brats23": ranked["hd95"]})
    return out


def brats23_lesion_scores(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
                          dilation: int = BRATS23_DILATION, min_lesion_mm3: float = BRATS23_MIN_LESION_MM3) -> dict[str, float]:
    """Lesion-wise Dice and HD95 of one region as the BraTS 2023 glioma challenge ranked them.

    Follows the challenge's own code (Saluja et al., github.com/rachitsaluja/BraTS-2023-Metrics,
    ``get_lesion_wise_score`` with the BraTS-GLI parameters):

    1. Lesions are 26-connected components; reference components within ``dilation`` voxels of
       one another (binary dilation, 18-connected structure, ``dilation`` iterations) are one lesion.
    2. A reference lesion is matched by every predicted component that touches its dilation; its
       Dice and HD95 are those of the lesion against the union of those components (a lesion
       that none touches: Dice 0, HD95 374 mm).
    3. Reference lesions of at most ``min_lesion_mm3`` are left out of the means; a predicted
       component that touches no reference lesion is a false positive and counts as Dice 0,
       HD95 374 mm.
    4. No lesion left in either map: Dice 1, HD95 0.

    HD95 is MONAI's (the larger of the two directed 95th percentiles of surface-voxel distances,
    in mm); the challenge code takes DeepMind's surface-area-weighted ``compute_robust_hausdorff``,
    which may differ from it by a fraction of a voxel.

    Args:
        pred: predicted mask of the region, ``(H, W, D)``, bool or 0/1.
        ref: reference mask of the same shape.
        spacing_mm: voxel size in mm (lesion volumes and HD95).
        dilation: the challenge's dilation factor (BraTS-GLI: 3).
        min_lesion_mm3: the challenge's lesion volume threshold in mm^3 (BraTS-GLI: 50).

    Returns:
        ``{"dice": ..., "hd95": ..., "tp": ..., "fn": ..., "fp": ...}``: the two scores and the lesion
        counts (``tp`` and ``fn`` of the lesions above the threshold).

    Raises:
        ValueError: the shapes differ.
    """
    from scipy import ndimage

    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if not pred.any() and not ref.any():
        return {"dice": 1.0, "hd95": 0.0, "tp": 0, "fn": 0, "fp": 0}
    spacing = tuple(float(v) for v in spacing_mm)
    touching, grow = ndimage.generate_binary_structure(3, 3), ndimage.generate_binary_structure(3, 2)
    pred_cc, n_pred = ndimage.label(pred, touching)
    pred_boxes = ndimage.find_objects(pred_cc)
    lesions = np.zeros(ref.shape, np.int32)
    if ref.any():
        merged, _ = ndimage.label(ndimage.binary_dilation(ref, grow, iterations=dilation), touching)
        lesions = np.where(ref, merged, 0)
    matched: set[int] = set()
    scores: list[tuple[float, float]] = []  # (Dice, HD95) of each lesion above the threshold
    tp = fn = 0
    for i, box in enumerate(ndimage.find_objects(lesions), start=1):
        if box is None:
            continue
        near = tuple(slice(max(b.start - dilation, 0), min(b.stop + dilation, n)) for b, n in zip(box, ref.shape))
        lesion = lesions[near] == i
        ids = np.unique(pred_cc[near][ndimage.binary_dilation(lesion, grow, iterations=dilation)])
        ids = ids[ids != 0]
        matched.update(int(j) for j in ids)
        if lesion.sum() * float(np.prod(spacing)) <= min_lesion_mm3:
            continue
        if not ids.size:
            fn += 1
            scores.append((0.0, BRATS23_MISSED_HD95))
            continue
        tp += 1
        lo = np.min([[b.start for b in near]] + [[b.start for b in pred_boxes[j - 1]] for j in ids], axis=0)
        hi = np.max([[b.stop for b in near]] + [[b.stop for b in pred_boxes[j - 1]] for j in ids], axis=0)
        both = tuple(slice(max(a - 1, 0), min(b + 1, n)) for a, b, n in zip(lo, hi, ref.shape))  # a voxel of margin for the surfaces
        r, p = lesions[both] == i, np.isin(pred_cc[both], ids)
        dice = 2.0 * float(np.count_nonzero(r & p)) / float(np.count_nonzero(r) + np.count_nonzero(p))
        scores.append((dice, min(_hd95(p, r, spacing), BRATS23_MISSED_HD95)))
    fp = n_pred - len(matched)
    counted = len(scores) + fp
    if counted == 0:
        return {"dice": 1.0, "hd95": 0.0, "tp": 0, "fn": 0, "fp": 0}
    return {"dice": sum(d for d, _ in scores) / counted, "hd95": (sum(h for _, h in scores) + BRATS23_MISSED_HD95 * fp) / counted,
            "tp": tp, "fn": fn, "fp": fp}


def _hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """MONAI's HD95 (mm) of two non-empty masks."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    p, r = (torch.from_numpy(np.ascontiguousarray(m))[None, None] for m in (pred, ref))
    return float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing))[0, 0])
