"""Checks of a training config before it runs: the splits it trains and validates on hold cases.

An empty training split otherwise ends in an Ignite error about the epoch length, and an empty
validation split in a metric that "must have at least one example" after the first epochs
have been paid for. A Decathlon folder of one or two cases gives such splits
(``volseg manifest decathlon`` puts every case in ``training`` below 3 cases).

Example:
    >>> check_training_splits(workflow.parser)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.errors import CasesFailedError, find_cause

__all__ = ["check_augment_device", "check_distill_teacher", "check_label_grids", "check_label_values", "check_overrides", "check_process_shares", "check_training_splits", "config_error_cause"]


def config_error_cause(err: RuntimeError) -> Exception:
    """The user's error inside MONAI's wrapper, or ``err`` itself.

    MONAI's ``ConfigParser`` re-raises any error of a ``$`` expression or ``_target_`` call as
    ``RuntimeError("Failed to evaluate ConfigExpression ...")`` (or "Failed to instantiate"), so a
    missing data file ended ``volseg train`` in a 150-line traceback with the cause in the middle.
    Returns the first :class:`FileNotFoundError`, :class:`ValueError` (which includes
    :class:`app.errors.InputError`) or :class:`app.errors.CasesFailedError` (cases a run skipped)
    in the chain of causes, for a one-line message.

    Example:
        >>> try:
        ...     raise RuntimeError("Failed to evaluate ConfigExpression") from FileNotFoundError("no 'x.nii.gz'")
        ... except RuntimeError as err:
        ...     print(repr(config_error_cause(err)))
        FileNotFoundError("no 'x.nii.gz'")
    """
    return find_cause(err, (FileNotFoundError, ValueError, CasesFailedError)) or err


def check_training_splits(parser: Any) -> None:
    """Refuse a run whose training split is empty, or whose validation split is empty while
    validation is due (``val_interval <= max_epochs``).

    Args:
        parser: the run's ``ConfigParser`` (after ``initialize``), with ``train_datalist``,
            ``val_datalist``, ``val_split``, ``val_interval`` and ``max_epochs`` where the bundle
            has them; a missing key skips its check.

    Raises:
        ValueError: ``max_epochs < 1``; the empty split, the datalist it came from, and the ways out.
    """
    source = parser.get_parsed_content("data_list_file") if "data_list_file" in parser else "the datalist"
    if "max_epochs" in parser and int(parser.get_parsed_content("max_epochs")) < 1:
        raise ValueError(f"max_epochs must be >= 1, got {parser.get_parsed_content('max_epochs')}")
    if "train_datalist" in parser and not parser.get_parsed_content("train_datalist"):
        raise ValueError(f"the 'training' split of '{source}' is empty: nothing to train on; "
                         "list cases under 'training' (volseg manifest ... --out FILE, then --manifest FILE)")
    if not all(k in parser for k in ("val_datalist", "val_interval", "max_epochs")):
        return
    interval, epochs = int(parser.get_parsed_content("val_interval")), int(parser.get_parsed_content("max_epochs"))
    if interval <= epochs and not parser.get_parsed_content("val_datalist"):
        split = parser.get("val_split", "validation")
        raise ValueError(f"the '{split}' split of '{source}' is empty but validation is due every {interval} epoch(s) of {epochs}; "
                         f"add cases to it, validate on another split (--set val_split=training), "
                         f"or skip validation (--set val_interval={epochs + 1}: model.pt then holds the final weights)")


def check_label_values(parser: Any) -> None:
    """Refuse a run whose first training label has a value the network has no output for
    (``>= num_classes``): a multi-organ label map given to a one-organ template failed in the
    first step with "index 20 is out of bounds for dimension 1 with size 2", naming no file.

    Only the first training item's label is read (a second or so for a CT label), so a datalist
    that mixes label conventions can still fail later.

    Args:
        parser: the run's ``ConfigParser`` (after ``initialize``) with ``num_classes`` and
            ``train_datalist``; a bundle without them (the BraTS bundles, whose labels are
            converted to regions) skips the check.

    Raises:
        ValueError: naming the label file, its largest value, ``num_classes`` and the ways out.
    """
    if not all(k in parser for k in ("num_classes", "train_datalist")):
        return
    items = parser.get_parsed_content("train_datalist")
    label = items[0].get("label") if items and isinstance(items[0], dict) else None
    if not isinstance(label, str):
        return
    import numpy as np
    import SimpleITK as sitk

    from app.io import read_volume

    classes = int(parser.get_parsed_content("num_classes"))
    image = read_volume(label, refuse_all_zero=False)  # kept: the array view below does not hold the image
    values = np.unique(sitk.GetArrayViewFromImage(image))
    if values.size and (values.max() >= classes or values.min() < 0):
        raise ValueError(f"label '{label}' has the values {', '.join(f'{v:g}' for v in values[:12])}{' ...' if values.size > 12 else ''}, "
                         f"but the network has num_classes={classes} outputs (labels 0 to {classes - 1}); give labels with those values only "
                         f"(e.g. one organ as 1), or train more classes: --set num_classes=N with the bundle's label names")


#: Overrides that VolSeg itself passes to every training run (paths), not the user's ``--set``.
RUN_KEYS = ("bundle_root", "data_list_file", "dataset_dir", "output_dir")


def check_overrides(parser: Any, overrides: dict[str, Any]) -> None:
    """Refuse ``--set`` keys the bundle's configs do not have and values of another kind than the
    configs' own: ``--set learning_rat=0.001`` was added to the run's configs and did nothing,
    and ``--set learning_rate=abc`` ended in a 187-line traceback from ``torch.optim.AdamW``.

    A nested key (``loss#gamma``) may add an argument to an existing component, so only its first
    part must exist. A number where the configs hold a number (or a reference, ``@``/``$``) is
    taken; text where they hold a number or a boolean, directly or through ``@``/``%``
    references (``learning_rate: "%_meta_#training#learning_rate"``), is refused.

    Args:
        parser: a ``ConfigParser`` of the bundle's configs without the overrides
            (:func:`app.bundle_config.bundle_parser`).
        overrides: the ``--set`` keys and values (paths of :data:`RUN_KEYS` are skipped).

    Raises:
        ValueError: naming the key, what the configs hold, and close key names.
    """
    import difflib

    top_keys = [k for k in parser.get() if isinstance(k, str)]
    for key, value in overrides.items():
        if key in RUN_KEYS:
            continue
        top = key.split("#")[0]
        if top not in parser:
            close = difflib.get_close_matches(top, top_keys, n=3)
            raise ValueError(f"--set {key}: the bundle's configs have no key '{top}'" + (f"; did you mean {', '.join(close)}?" if close else "")
                             + " (the keys are those of the bundle's configs/common.yaml and configs/train.yaml)")
        if key not in parser:
            continue
        current = parser.get(key)
        for _ in range(5):  # learning_rate: "%_meta_#training#learning_rate": what the reference names
            if not (isinstance(current, str) and current[:1] in ("@", "%") and current[1:] in parser):
                break
            current = parser.get(current[1:])
        if isinstance(value, str) and not value.startswith(("$", "@", "%")) and isinstance(current, (bool, int, float)):
            kind = "true or false" if isinstance(current, bool) else "a number"
            raise ValueError(f"--set {key}={value}: the bundle's {key} is {kind} ({json.dumps(current)}); give {kind}")


def check_process_shares(datalist: str | Path | None, nproc: int) -> None:
    """Refuse a ``--nproc`` run whose datalist gives a process no training or validation case: each
    process trains and validates on its own share (MONAI ``partition_dataset``), which otherwise
    fails in every process with "there is no enough data to be split into N partitions".

    Raises:
        ValueError: naming the datalist, the split, its size and ``nproc``.
    """
    if nproc < 2 or not datalist or not Path(datalist).is_file():
        return
    lists = json.loads(Path(datalist).read_text())
    for split in ("training", "validation"):
        n = len(lists.get(split) or [])
        if n < nproc:
            raise ValueError(f"datalist '{datalist}' has {n} {split} case(s) for --nproc {nproc}: each process {'trains' if split == 'training' else 'validates'} "
                             f"on its own share, so give at least {nproc} {split} cases, or fewer processes")


def _grid_of(reader: Any) -> tuple[tuple[int, ...], tuple[float, ...], Any]:
    """Size, spacing (mm) and the physical positions (mm) of the 8 corner voxel centres of the
    file a SimpleITK ``ImageFileReader`` has read the header of."""
    import itertools

    import numpy as np

    size, spacing = reader.GetSize(), reader.GetSpacing()
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
    corners = [np.asarray(reader.GetOrigin()) + direction @ (np.asarray(index) * np.asarray(spacing))
               for index in itertools.product(*[(0, n - 1) for n in size])]
    return tuple(size), tuple(spacing), np.asarray(corners)


def _same_physical_grid(a: tuple, b: tuple, voxel_fraction: float = 0.05) -> bool:
    """Whether two header grids (:func:`_grid_of`) cover the same voxels in scanner space: the same
    sizes and spacings up to axis order, and the same corner positions within ``voxel_fraction`` of
    the smallest voxel (a label stored in another axis order or direction, as a tool writing RAS
    beside LPS sequences does, is on the same grid)."""
    import numpy as np

    (size_a, spacing_a, corners_a), (size_b, spacing_b, corners_b) = a, b
    atol = voxel_fraction * min(min(spacing_a), min(spacing_b))
    if sorted(size_a) != sorted(size_b) or not np.allclose(sorted(spacing_a), sorted(spacing_b), atol=atol):
        return False
    distances = np.linalg.norm(corners_a[:, None, :] - corners_b[None, :, :], axis=-1)
    return bool((distances.min(axis=1) <= atol).all())


def check_label_grids(parser: Any) -> None:
    """Refuse a datalist item whose label lies on another voxel grid than its image: a 200 x 240 x
    155 label beside 240 x 240 x 155 sequences trained to the end without a word, and so did a label
    of the same voxel count with another spacing or a shifted origin (misaligned labels).

    Reads only the headers (SimpleITK ``ReadImageInformation``) of every training and validation
    item's label and first image: about a millisecond a file. The grids are compared in scanner
    space (size, spacing and the corners' positions within 5 % of a voxel), so a label stored in
    another axis order or direction than its image passes.

    Args:
        parser: the run's ``ConfigParser`` (after ``initialize``) with ``train_datalist`` (and
            ``val_datalist``); items without a label file are skipped.

    Raises:
        ValueError: naming both files and their grids.
    """
    import SimpleITK as sitk

    items = [i for key in ("train_datalist", "val_datalist") if key in parser for i in (parser.get_parsed_content(key) or [])]
    reader = sitk.ImageFileReader()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            continue
        image = item.get("image")
        image = next((f for f in image if f), None) if isinstance(image, (list, tuple)) else image
        if not isinstance(image, str):
            continue
        grids = []
        for path in (image, item["label"]):
            reader.SetFileName(path)
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                break  # an unreadable file: the reader of the run names it
            if reader.GetDimension() != 3:
                break  # not 3D: the reader of the run names it
            grids.append(_grid_of(reader))
        if len(grids) < 2:
            continue
        (size_i, spacing_i, corners_i), (size_l, spacing_l, corners_l) = grids
        if sorted(size_i) != sorted(size_l):
            raise ValueError(f"label '{item['label']}' has {' x '.join(map(str, size_l))} voxels, its image '{image}' "
                             f"{' x '.join(map(str, size_i))}: a label must lie on its image's voxel grid (resample it onto the image)")
        if not _same_physical_grid(grids[0], grids[1]):
            def described(size: tuple, spacing: tuple, corners: Any) -> str:
                return (f"{' x '.join(f'{s:g}' for s in spacing)} mm voxels, first voxel at ({', '.join(f'{c:.1f}' for c in corners[0])}) mm, "
                        f"last at ({', '.join(f'{c:.1f}' for c in corners[-1])}) mm")  # a flipped axis shows in the last

            raise ValueError(f"label '{item['label']}' ({described(*grids[1])}) is not on the voxel grid of its image '{image}' "
                             f"({described(*grids[0])}), though both have {' x '.join(map(str, size_i))} voxels: it would train misaligned; "
                             "resample the label onto the image (nearest neighbour) or fix its header")


def check_augment_device(parser: Any) -> None:
    """Refuse ``augment_on_device`` on a CUDA run whose training loader has worker processes.

    With ``augment_on_device`` the training crops move to the GPU before the augmentation
    (MONAI ``ToDeviced``, MONAI's fast-training recipe); a CUDA tensor made in a ``DataLoader``
    worker process fails deep inside PyTorch ("Cannot re-initialize CUDA in forked subprocess").
    On a CPU run the flag changes nothing and workers are fine.

    Args:
        parser: the run's ``ConfigParser`` (after ``initialize``), with ``augment_on_device``,
            ``device`` and ``train#dataloader#num_workers`` where the bundle has them; a missing
            key skips the check.

    Raises:
        ValueError: the flag, the device and the worker count, and the ways out.
    """
    import torch

    keys = ("augment_on_device", "device", "train#dataloader#num_workers")
    if not all(k in parser for k in keys) or not parser.get_parsed_content("augment_on_device"):
        return
    device = torch.device(parser.get_parsed_content("device"))
    workers = int(parser.get_parsed_content("train#dataloader#num_workers"))
    if device.type == "cuda" and workers > 0:
        raise ValueError(f"augment_on_device runs the augmentation on {device} in the loading thread, "
                         f"but train#dataloader#num_workers is {workers} (CUDA tensors cannot be made in worker processes); "
                         "set train#dataloader#num_workers=0, or augment_on_device=false to augment on the CPU in workers")


def check_distill_teacher(parser: Any) -> None:
    """Refuse a ``distill_teacher`` (knowledge distillation, :mod:`app.engines.distillation`)
    whose weights file does not exist, before the data are cached and the trainer is built.

    Args:
        parser: the run's ``ConfigParser``; a bundle without ``distill_teacher`` skips the check.

    Raises:
        FileNotFoundError: the path and the key that set it.
    """
    if "distill_teacher" not in parser:
        return
    path = parser.get_parsed_content("distill_teacher")
    if path and not Path(str(path)).is_file():
        raise FileNotFoundError(f"distill_teacher: no weights at '{path}' (the full-sequence teacher for knowledge distillation; "
                                "a model.pt or fold*.pt, '{fold}' replaced by volseg cv train)")
