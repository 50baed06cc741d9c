"""Cross-validation folds: seeded, stratified by tumour size, every case scored exactly once."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from app.io.atomic import atomic_write_text


def stratified_folds(sizes: dict[str, float], k: int = 5, seed: int = 0) -> list[list[str]]:
    """Partition cases into ``k`` folds so that each fold holds small, medium and large tumours.

    Cases are sorted by ``sizes`` (e.g. whole-tumour volume in ml), cut into consecutive blocks
    of ``k``, and each block is dealt out over the folds in a seeded random order: the usual
    stratified k-fold for a continuous target. The same sizes and seed always give the same folds.

    Args:
        sizes: case id -> stratification value (any unit; only the order matters).
        k: number of folds.
        seed: seed of the deal.

    Returns:
        ``k`` sorted lists of case ids; together they hold every case exactly once.

    Raises:
        ValueError: ``k < 2`` or more folds than cases.

    Example:
        >>> stratified_folds({"a": 1, "b": 2, "c": 3, "d": 4}, k=2)
        [['a', 'd'], ['b', 'c']]
    """
    if k < 2 or k > len(sizes):
        raise ValueError(f"k-fold needs 2 <= k <= number of cases ({len(sizes)}), got k={k}")
    rng = random.Random(seed)
    ordered = sorted(sizes, key=lambda cid: (sizes[cid], cid))
    folds: list[list[str]] = [[] for _ in range(k)]
    for start in range(0, len(ordered), k):
        block = ordered[start : start + k]
        targets = sorted(range(k), key=lambda f: (len(folds[f]), rng.random()))[: len(block)]
        rng.shuffle(targets)
        for cid, fold in zip(block, targets):
            folds[fold].append(cid)
    return [sorted(f) for f in folds]


def label_volume_ml(label_path: str | Path) -> float:
    """Volume in ml of the non-zero voxels of a label map (whole tumour for BraTS labels)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(label_path))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(image))) * voxel_ml


def build_cv_manifest(manifest: str | Path, data_dir: str | Path, k: int = 5, seed: int = 0, out: str | Path | None = None) -> dict[str, Any]:
    """Pool every labelled case of a Decathlon datalist (all splits) into one ``training`` list
    whose items carry a ``"fold"`` index, stratified by labelled volume (:func:`stratified_folds`).

    Args:
        manifest: a datalist made by ``volseg manifest`` (paths relative to ``data_dir``).
        data_dir: the data root, to read the labels for stratification.
        k: number of folds.
        seed: seed of the folds.
        out: where to write the JSON (atomically); None writes nothing.

    Returns:
        The cross-validation datalist: the manifest's header, ``numFolds``, ``foldSeed`` and
        ``training`` (every labelled case, with ``fold`` and ``volume_ml``); no validation or test list.

    Raises:
        FileNotFoundError: the manifest, a label or an image is missing (every image is checked
            first, and the first five missing named).
        ValueError: fewer labelled cases than folds.
    """
    if Path(manifest).is_dir():
        raise ValueError(f"manifest '{manifest}' is a folder; give the datalist JSON file (e.g. data_manifests/brats2018_shared.json)")
    if not Path(manifest).is_file():
        raise FileNotFoundError(f"manifest '{manifest}' does not exist")
    try:
        content = json.loads(Path(manifest).read_text())
    except ValueError as err:
        raise ValueError(f"manifest '{manifest}' is not valid JSON: {err}") from err
    items = {it["case_id"]: dict(it) for key in ("training", "validation", "test") for it in content.get(key, []) if "label" in it}
    missing = [f"case '{cid}': image '{Path(data_dir) / image}'" for cid, item in items.items()
               for image in ([item.get("image")] if isinstance(item.get("image"), str) else item.get("image") or [])
               if image and not (Path(data_dir) / image).is_file()]
    if missing:  # every image checked before the labels are read: a training run on these folds would fail at its first epoch
        root = f"data root '{data_dir}'" + ("" if Path(data_dir).is_dir() else " does not exist")
        raise FileNotFoundError(f"{len(missing)} image file(s) of the manifest not found ({root}): " + "; ".join(missing[:5])
                                + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
                                + "; pass the folder that the datalist's paths are relative to (--data-dir DIR, or VOLSEG_BRATS_DIR)")
    sizes = {}
    for cid, item in items.items():
        path = Path(data_dir) / item["label"]
        if not path.is_file():
            root = f"data root '{data_dir}'" + ("" if Path(data_dir).is_dir() else " does not exist")
            raise FileNotFoundError(f"case '{cid}': label '{path}' not found ({root}); pass the folder that the datalist's "
                                    f"paths are relative to (--data-dir DIR, or VOLSEG_BRATS_DIR)")
        sizes[cid] = label_volume_ml(path)
    folds = stratified_folds(sizes, k, seed)
    header = {key: value for key, value in content.items() if not isinstance(value, list) and not key.startswith("num")}
    header["description"] = f"{k}-fold cross-validation over all {len(items)} labelled cases, stratified by labelled volume (seed={seed})"
    cv: dict[str, Any] = {**header, "numFolds": k, "foldSeed": seed, "numTraining": len(items), "training": []}
    for fold, ids in enumerate(folds):
        for cid in ids:
            item = {key: value for key, value in items[cid].items() if key != "fold"}
            cv["training"].append({**item, "fold": fold, "volume_ml": round(sizes[cid], 2)})
    cv["training"].sort(key=lambda it: (it["fold"], it["case_id"]))
    if out is not None:
        atomic_write_text(Path(out), json.dumps(cv, indent=2) + "\n")
    return cv


def fold_datalist(cv_manifest: str | Path, fold: int, out: str | Path | None = None) -> dict[str, Any]:
    """The Decathlon datalist of one fold: ``training`` = every other fold, ``validation`` = this fold.

    Raises:
        FileNotFoundError: the manifest is missing.
        ValueError: the manifest has no folds, or ``fold`` is not one of them.
    """
    path = Path(cv_manifest)
    if not path.is_file():
        raise FileNotFoundError(f"cross-validation manifest '{path}' does not exist")
    content = json.loads(path.read_text())
    k = int(content.get("numFolds", 0))
    if k < 2:
        raise ValueError(f"manifest '{path}' has no cross-validation folds (numFolds); build one with `volseg cv folds`")
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1} for '{path}', got {fold}")
    pool = [it for key in ("training", "validation") for it in content.get(key, []) if "fold" in it]
    header = {key: value for key, value in content.items() if not isinstance(value, list) and not key.startswith("num")}
    datalist = {**header, "fold": fold, "training": [it for it in pool if it["fold"] != fold], "validation": [it for it in pool if it["fold"] == fold]}
    datalist.update(numTraining=len(datalist["training"]), numValidation=len(datalist["validation"]))
    if out is not None:
        atomic_write_text(Path(out), json.dumps(datalist, indent=2) + "\n")
    return datalist
