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
every unmatched lesion (Saluja et al., the BraTS-2023-Metrics code): each false-negative and
false-positive lesion scores Dice 0 and HD95 374 mm, averaged with the matched ones, and a region
absent from both maps scores Dice 1 and HD95 0. This module adds it from the package's lesion
counts (``tp``, ``fn``, ``fp``):

- ``<region>_dice_lesionwise_brats23``: ``sq_dsc * tp / (tp + fn + fp)``;
- ``<region>_hd95_lesionwise_brats23``: ``(sq_hd95 * tp + 374 * (fn + fp)) / (tp + fn + fp)`` mm.

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
        ``<region>_dice_lesionwise_brats23`` / ``_hd95_lesionwise_brats23`` (:func:`brats23_scores`).

    Raises:
        ValueError: shapes differ, or a value is no BraTS 2018 code.
        ImportError: the package is missing.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    pred, ref = crop_to_foreground(pred, ref)
    results = evaluator().evaluate(to_brats2023(pred), to_brats2023(ref), voxelspacing=tuple(float(s) for s in spacing_mm),
                                   skip_groups=list(OTHER_GROUPS), verbose=False)
    out: dict[str, float] = {}
    for region, group in REGION_GROUPS.items():
        values = results[group].to_dict(True)
        for name, key in LESION_METRICS.items():
            value = values.get(key)
            out[f"{region}_{name}"] = float(value) if value is not None else math.nan
        out.update({f"{region}_{name}": v for name, v in zip(BRATS23_METRICS, brats23_scores(values))})
    return out


def brats23_scores(values: dict[str, Any]) -> tuple[float, float]:
    """Lesion-wise Dice and HD95 (mm) of one region as the BraTS 2023 challenges ranked them, from
    a panoptica result (``tp``, ``fn``, ``fp``, ``sq_dsc``, ``sq_hd95``): every unmatched lesion
    counts as Dice 0 and HD95 374 mm; no lesion in either map gives (1, 0); NaN where the result
    lacks the counts."""
    try:
        tp, fn, fp = (int(values[k]) for k in ("tp", "fn", "fp"))
    except (KeyError, TypeError, ValueError):
        return math.nan, math.nan
    lesions = tp + fn + fp
    if lesions == 0:
        return 1.0, 0.0
    dice = float(values.get("sq_dsc") or 0.0) * tp if tp else 0.0
    hd95 = float(values.get("sq_hd95") or 0.0) * tp if tp else 0.0
    return dice / lesions, (hd95 + BRATS23_MISSED_HD95 * (fn + fp)) / lesions
