"""Decathlon-format datalists with seeded train/validation/test and k-fold splits."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.constants import MODALITIES, REGIONS
from app.data.cases import BratsCase, scan_brats
from app.io.atomic import atomic_write_text
from app.labels import BRATS


def split_cases(
    case_ids: list[str], seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, list[str]]:
    """Split case IDs into ``training`` / ``validation`` / ``test``, reproducibly from ``seed``.

    Validation and test get ``round(fraction * n)`` cases each (at least 1 when ``n >= 3``),
    training the rest. The same IDs and seed always give the same split, whatever the input order.

    Raises:
        ValueError: fractions that are negative or do not sum to 1.
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    n = len(ids)
    n_val, n_test = (max(1 if n >= 3 else 0, round(f * n)) if f > 0 else 0 for f in fractions[1:])
    return {
        "training": sorted(ids[n_val + n_test :]),
        "validation": sorted(ids[:n_val]),
        "test": sorted(ids[n_val : n_val + n_test]),
    }


def kfold_splits(case_ids: list[str], k: int = 5, seed: int = 0) -> list[list[str]]:
    """Partition case IDs into ``k`` folds of near-equal size, reproducibly from ``seed``.

    Raises:
        ValueError: ``k < 2`` or more folds than cases.
    """
    if k < 2 or k > len(case_ids):
        raise ValueError(f"k-fold needs 2 <= k <= number of cases ({len(case_ids)}), got k={k}")
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    return [sorted(ids[i::k]) for i in range(k)]


def _relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the data root, POSIX style. Symbolic links are kept, not followed: a
    case folder (or file) linked in from elsewhere is listed where it appears under the root, as
    ``volseg segment`` and ``--dataset_dir`` read it."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:  # not below the root as written (e.g. a root given through a link): a ../ path
        return Path(os.path.relpath(os.path.realpath(absolute), os.path.realpath(root))).as_posix()


def _item(case: BratsCase, root: Path) -> dict[str, Any]:
    item: dict[str, Any] = {
        "case_id": case.case_id,
        "image": [_relative(p, root) for p in case.images],
    }
    if case.label is not None:
        item["label"] = _relative(case.label, root)
    return item


def build_manifest(
    data_dir: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    folds: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> dict[str, Any]:
    """Scan a BraTS-style folder and build a Decathlon datalist.

    Image paths are relative to ``data_dir`` (the data root), so the file is portable: load
    it with :func:`load_datalist` and the root of your copy. Each item is
    ``{"case_id", "image": [t1, t1ce, t2, flair], "label": seg}``. With ``folds >= 2`` the
    ``training`` and ``validation`` cases (never ``test``) are also partitioned into folds,
    each item carrying a ``"fold"`` index.

    Args:
        data_dir: folder of ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``.
        out: where to write the JSON (atomically); None writes nothing.
        seed: seed of the splits.
        folds: number of cross-validation folds, 0 for none.
        fractions: training, validation and test fractions.

    Returns:
        The datalist as a dict.

    Raises:
        FileNotFoundError: see :func:`app.data.cases.scan_brats`.
    """
    root = Path(data_dir).resolve()
    cases = {c.case_id: _item(c, root) for c in scan_brats(root)}
    header: dict[str, Any] = {
        "name": "BraTS",
        "description": f"BraTS-style datalist of {root.name}, seeded split (seed={seed}, fractions={list(fractions)})",
        "tensorImageSize": "4D",
        "modality": {str(i): m.upper() if m != "t1ce" else "T1ce" for i, m in enumerate(MODALITIES)},
        "labels": BRATS.to_metadata()["labels"],
        "regions": {name: list(BRATS.regions[name]) for name in REGIONS},
    }
    return _split_and_write(header, cases, out, seed, folds, fractions)


def _split_and_write(header: dict[str, Any], items: dict[str, dict[str, Any]], out: str | Path | None, seed: int, folds: int,
                     fractions: tuple[float, float, float]) -> dict[str, Any]:
    splits = split_cases(list(items), seed=seed, fractions=fractions)
    manifest = {**header, "seed": seed, "numTraining": len(splits["training"]), "numValidation": len(splits["validation"]), "numTest": len(splits["test"])}
    for key, ids in splits.items():
        manifest[key] = [dict(items[i]) for i in ids]
    if folds:
        fold_of = {cid: f for f, ids in enumerate(kfold_splits(splits["training"] + splits["validation"], folds, seed)) for cid in ids}
        manifest["numFolds"] = folds
        for key in ("training", "validation"):
            for item in manifest[key]:
                item["fold"] = fold_of[item["case_id"]]
    if out is not None:
        atomic_write_text(Path(out), json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_decathlon_manifest(
    data_dir: str | Path,
    out: str | Path | None = None,
    seed: int = 0,
    folds: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> dict[str, Any]:
    """Build a seeded datalist from a Medical Segmentation Decathlon folder
    (``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz``; ``dataset.json`` copied for
    names, modality and labels where present). Items are ``{"case_id", "image", "label"}`` with
    paths relative to ``data_dir``; splits and folds as in :func:`build_manifest`. With fewer than
    3 cases every case goes to ``training``.

    Raises:
        FileNotFoundError: no ``imagesTr`` folder or no image in it, or images without a label
            (all listed together).
    """
    root = Path(data_dir).resolve()
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    images = sorted(p for p in images_dir.glob("*") if p.is_file() and not p.name.startswith(".")) if images_dir.is_dir() else []
    if not images:
        raise FileNotFoundError(f"no images in '{images_dir}': a Decathlon folder holds imagesTr/<case>.nii.gz and labelsTr/<case>.nii.gz")
    missing = [p.name for p in images if not (labels_dir / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) in '{images_dir}' have no label in '{labels_dir}': {', '.join(missing)}")
    from app.io.readers import strip_volume_suffix

    items = {strip_volume_suffix(p.name): {"case_id": strip_volume_suffix(p.name), "image": p.relative_to(root).as_posix(), "label": (labels_dir / p.name).relative_to(root).as_posix()} for p in images}
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").is_file() else {}
    header = {"name": meta.get("name", root.name), "description": f"Decathlon datalist of {root.name}, seeded split (seed={seed}, fractions={list(fractions)})",
              "tensorImageSize": meta.get("tensorImageSize", "3D"), "modality": meta.get("modality", {}), "labels": meta.get("labels", {})}
    return _split_and_write(header, items, out, seed, folds, fractions)


def load_datalist(manifest: str | Path, key: str, data_dir: str | Path, required: Sequence[str] = ("image", "label")) -> list[dict[str, Any]]:
    """Load one split of a datalist with paths joined to ``data_dir`` (MONAI ``load_decathlon_datalist``);
    the files under the ``required`` keys must exist (``volseg evaluate`` needs only ``label``).

    Raises:
        FileNotFoundError: the manifest is missing, or files of the list are (the message names
            ``data_dir``, the first missing file and how many items lack files: a bundle run
            whose ``dataset_dir`` points elsewhere fails here, before any model is built).
        ValueError: the manifest has no list under ``key``, or an item of it has no ``image``
            (an item of ``training``, no ``label``).
    """
    from monai.data import load_decathlon_datalist

    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest '{manifest}' does not exist")
    with open(manifest) as f:
        content = json.load(f)
    if key not in content:
        raise ValueError(f"manifest '{manifest}' has no '{key}' list; it has {sorted(k for k, v in content.items() if isinstance(v, list))}")
    if not content[key]:
        return []  # MONAI's loader raises IndexError on an empty "test" list
    items = load_decathlon_datalist(manifest, is_segmentation=True, data_list_key=key, base_dir=data_dir)
    for item, original in zip(items, content[key]):  # MONAI joins any key naming an existing path
        if "case_id" in original:
            item["case_id"] = original["case_id"]
        for k, value in item.items():  # MONAI leaves a list with a null (a missing sequence) unjoined
            if isinstance(value, list) and None in value and any(isinstance(v, str) for v in value):
                item[k] = [v if not isinstance(v, str) or os.path.isabs(v) else os.path.normpath(os.path.join(str(data_dir), v)) for v in value]
    _check_files(items, manifest, key, data_dir, required)
    return items


def nonempty_split(items: list[dict[str, Any]], key: str, manifest: str | Path) -> list[dict[str, Any]]:
    """``items`` (a split of ``manifest``) where it holds a case.

    Raises:
        ValueError: the split is empty (an evaluation of it would end at once with exit status 0
            and no metric), naming the datalist and how to choose another split.
    """
    if not items:
        raise ValueError(f"split '{key}' of datalist '{manifest}' holds no case: nothing to evaluate; choose another split "
                         "(--val_split validation, or a datalist of your own: --data_list_file FILE)")
    return items


def _check_files(items: list[dict[str, Any]], manifest: Path, key: str, data_dir: str | Path, required: Sequence[str] = ("image", "label")) -> None:
    """Raise FileNotFoundError where a file of an item under the ``required`` keys does not exist, and
    ValueError where an item has no ``image`` (or, in the ``training`` list, no ``label``): such an
    item stopped a training run inside MONAI's ``CacheDataset`` with a 360-line traceback."""
    needed = [k for k in required if k == "image" or (k == "label" and key == "training")]
    for k in needed:
        without = [i for i, item in enumerate(items) if item.get(k) in (None, "", [])]
        if without:
            first = items[without[0]]
            name = f" ('{first['case_id']}')" if "case_id" in first else ""
            raise ValueError(f"datalist '{manifest}', list '{key}': {len(without)} of {len(items)} item(s) have no '{k}' (missing or null; first: item {without[0]}{name}, "
                             f"with the keys {', '.join(sorted(map(str, first))) or 'none'}); each item needs "
                             f"{' and '.join(map(repr, needed))}, "
                             "e.g. {\"image\": [\"t1.nii.gz\", ...], \"label\": \"seg.nii.gz\"}")
    lacking = []
    for item in items:
        paths = [p for k in required for p in (item[k] if isinstance(item.get(k), (list, tuple)) else [item.get(k)])]
        missing = [str(p) for p in paths if isinstance(p, str) and p and not Path(p).exists()]
        if missing:
            lacking.append(missing[0])
    if lacking:
        where = f"dataset_dir '{data_dir}' does not exist" if not Path(data_dir).is_dir() else f"under dataset_dir '{data_dir}'"
        raise FileNotFoundError(f"datalist '{manifest}', list '{key}': {len(lacking)} of {len(items)} item(s) name files that do not exist "
                                f"({where}; first: '{lacking[0]}'). Pass the data root of the datalist's relative paths "
                                f"(--dataset_dir DIR for python -m monai.bundle run, --data-dir DIR for volseg)")
