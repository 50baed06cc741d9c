"""4D multi-channel volumes (one file a case, channels last) into the one-file-a-sequence case folders
VolSeg reads, with the task's labels converted to BraTS codes.

The Medical Segmentation Decathlon's Task01_BrainTumour (BraTS 2016-2017 cases; the data of MONAI's
``DecathlonDataset`` and of its BraTS tutorial) stores each case as one 4D NIfTI,
``imagesTr/BRATS_001.nii.gz`` of shape ``(240, 240, 155, 4)``, channels FLAIR, T1w, t1gd, T2w as its
``dataset.json`` ("modality") says, and labels 1 edema, 2 non-enhancing tumour, 3 enhancing tumour
(``labelsTr/``; the cases of ``imagesTs/`` have none). VolSeg's BraTS bundles read one 3D file a
sequence (``<case>/<case>_t1ce.nii.gz``) and BraTS codes (1 NCR/NET, 2 ED, 4 ET):
:func:`split_multichannel` writes ``<case>/<case>_{t1,t1ce,t2,flair}.nii.gz`` (each channel exactly
as stored, with the file's affine) and, where the task has labels, ``<case>_seg.nii.gz`` in BraTS
codes, which ``volseg segment``, ``manifest brats``, ``evaluate``, ``cv`` and ``train`` then read as
any BraTS case. A task folder's cases go to ``<output>/training/`` (``imagesTr``, labelled) and
``<output>/test/`` (``imagesTs``), the Decathlon datalist's names, so that the labelled folder is a
BraTS dataset of its own; a 4D file, or a folder of them, to ``<output>/<case>/``. ``volseg segment`` given a 4D file
says so and names this step (:func:`multichannel_hint`).

The channel order comes from ``--sequences`` or from the task's ``dataset.json`` (``modality``, or
nnU-Net v2's ``channel_names``), whose names are matched by :data:`app.data.cases.SEQUENCE_ALIASES`
(FLAIR -> flair, T1w -> t1, t1gd -> t1ce, T2w -> t2); it is never guessed. Label names are matched to
BraTS codes by their words (edema 2, non-enhancing or necrotic 1, enhancing 4); a name that matches
none stops the run before anything is written.

nnU-Net's raw layout keeps one file a channel (``imagesTs/BRATS_001_0000.nii.gz``, ``..._0001``, ...):
no split is needed, only names. :func:`nnunet_sequences` maps each channel index to a sequence
through the ``channel_names`` (v2; ``modality`` in v1) of the dataset.json beside the files, and
``volseg segment`` reads such files and folders with it.

Example:
    >>> split_multichannel(Path("Task01_BrainTumour"), Path("brats_cases"))  # doctest: +SKIP
    [SplitCase(case_id='BRATS_001', ...), ...]
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["SplitCase", "brats_label_codes", "multichannel_files", "multichannel_folder_hint", "multichannel_hint", "nnunet_channel_files",
           "nnunet_sequences", "sequence_order", "split_multichannel"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: nnU-Net's name of an input channel file: ``<case>_<4-digit channel index><file_ending>``
NNUNET_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?:\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd)$", re.IGNORECASE)


@dataclass
class SplitCase:
    """One 4D file split into ``folder``: ``written`` files, and ``kept`` ones that were there already (a rerun)."""

    case_id: str
    source: Path
    folder: Path
    label: Path | None = None
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def _is_nifti(path: Path) -> bool:
    # "._BRATS_001.nii.gz": the macOS metadata files that the Decathlon's tar files hold beside every case
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _case_id(path: Path) -> str:
    name = path.name
    return next(name[: -len(s)] for s in NIFTI_SUFFIXES if name.lower().endswith(s))


def find_dataset_json(source: Path) -> Path | None:
    """The task's ``dataset.json``: in ``source`` (a task folder, or a folder of 4D files), or one or
    two folders up from it (``imagesTr/`` or a file in it)."""
    start = source if source.is_dir() else source.parent
    for folder in (start, start.parent, start.parent.parent):
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def _read_dataset_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"'{path}': not a readable dataset.json ({err})") from err


def sequence_order(names: Sequence[str], where: str, channels: Sequence[str] | None = None) -> list[str]:
    """Sequence keys (``t1``, ``t1ce``, ``t2``, ``flair``) of channel names, in channel order.

    Args:
        names: a name a channel, as ``--sequences`` or a dataset.json gives them (``"FLAIR"``, ``"T1w"``).
        where: what gave the names, for the error message.
        channels: the keys a name may map to (default: :data:`app.constants.MODALITIES`).

    Raises:
        InputError: a name that is no known alias of a sequence, or two channels of one sequence.
    """
    from app.constants import MODALITIES
    from app.data.cases import SEQUENCE_ALIASES

    allowed = tuple(channels or MODALITIES)
    aliases = {a.lower(): key for key, group in SEQUENCE_ALIASES.items() for a in group if key in allowed}
    keys = [aliases.get(str(n).strip().lower()) for n in names]
    unknown = [str(n) for n, k in zip(names, keys) if k is None]
    if unknown:
        known = ", ".join(k + ": " + "/".join(SEQUENCE_ALIASES[k]) for k in allowed)
        raise InputError(f"{where}: channel name(s) {', '.join(repr(u) for u in unknown)} name no sequence VolSeg knows "
                         f"({known}); give the order with "
                         "--sequences, e.g. --sequences flair,t1,t1ce,t2 (Task01_BrainTumour's)")
    if len(set(keys)) != len(keys):
        raise InputError(f"{where}: two channels of one sequence ({', '.join(map(str, names))} -> {', '.join(map(str, keys))})")
    return [str(k) for k in keys]


def brats_label_codes(labels: Mapping, where: str) -> dict[int, int]:
    """Task label value -> BraTS code (0 background, 1 NCR/NET, 2 ED, 4 ET) from the label names.

    Args:
        labels: a dataset.json's ``labels``, ``{"1": "edema", ...}`` (Decathlon) or
            ``{"edema": 1, ...}`` (nnU-Net v2, integer values only).
        where: the dataset.json, for the error message.

    Raises:
        InputError: a name that says none of background, edema, non-enhancing / necrotic and
            enhancing; region-based (list) values; two values for one code.

    Example:
        >>> brats_label_codes({"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}, "x")
        {0: 0, 1: 2, 2: 1, 3: 4}
    """
    pairs = []
    for key, value in labels.items():
        if isinstance(value, str) and str(key).lstrip("-").isdigit():
            pairs.append((int(key), value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs.append((value, str(key)))
        else:
            raise InputError(f"{where}: label {key!r}: {value!r} is not one value and one name (region-based labels, as nnU-Net's "
                             "'whole tumor': [1, 2, 3], cannot be converted to BraTS codes)")
    codes: dict[int, int] = {}
    for value, name in sorted(pairs):
        words = name.strip().lower().replace("_", " ").replace("-", " ")
        if words in ("background", "bg") or value == 0 and "background" in words:
            code = 0
        elif "non enhanc" in words or "nonenhanc" in words or "necro" in words or words in ("ncr", "net", "ncr/net"):
            code = 1
        elif "enhanc" in words or words == "et":
            code = 4
        elif "edema" in words or "oedema" in words or words == "ed":
            code = 2
        else:
            raise InputError(f"{where}: label {value} '{name}' is none of background, edema, non-enhancing / necrotic tumour and "
                             "enhancing tumour, the BraTS regions; VolSeg does not guess its BraTS code")
        if code in codes.values() and code != 0:
            raise InputError(f"{where}: two labels for BraTS code {code}: {labels}")
        codes[value] = code
    return codes


def multichannel_files(source: Path) -> list[tuple[Path, Path | None, str]]:
    """``(4D image, its label or None, group)`` under ``source``, in name order.

    ``source`` is a 4D file, a folder of them, or a Decathlon task folder (``imagesTr/`` with its
    ``labelsTr/`` twin, ``imagesTs/``), whose files get the group ``"training"`` (``imagesTr``) or
    ``"test"`` (``imagesTs``); other files ``""``. Hidden files (``._BRATS_001.nii.gz``) are left out.

    Raises:
        InputError: ``source`` does not exist or holds no NIfTI file.
    """
    if not source.exists():
        raise InputError(f"'{source}' does not exist")
    if source.is_file():
        label = source.parent.parent / "labelsTr" / source.name if source.parent.name == "imagesTr" else None
        return [(source, label if label is not None and label.is_file() else None, "")]
    task = (source / "imagesTr").is_dir() or (source / "imagesTs").is_dir()
    folders = {source / "imagesTr": "training", source / "imagesTs": "test"} if task else {source: ""}
    out = []
    for folder, group in folders.items():
        labels = folder.parent / "labelsTr" if folder.name == "imagesTr" else None
        for image in sorted(p for p in folder.iterdir() if _is_nifti(p)) if folder.is_dir() else []:
            label = labels / image.name if labels is not None else None
            out.append((image, label if label is not None and label.is_file() else None, group))
    if not out:
        raise InputError(f"'{source}': no NIfTI volume (.nii, .nii.gz) in it{' or in its imagesTr/ and imagesTs/' if len(folders) > 1 else ''}")
    return out


def _shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    try:
        return tuple(int(n) for n in nib.load(path).shape)
    except Exception as err:  # nibabel raises several types for a file that is not NIfTI
        raise InputError(f"'{path}': not a readable NIfTI volume ({err})") from err


def split_multichannel(source: str | Path, output: str | Path, sequences: Sequence[str] | str | None = None) -> list[SplitCase]:
    """Write each 4D file's channels as ``<output>/[training|test/]<case>/<case>_<sequence>.nii.gz``
    and its label map, converted to BraTS codes, as ``<case>_seg.nii.gz``.

    Every header (and the task's ``dataset.json``) is checked before anything is written; a label
    map's values when it is converted. Files are written atomically; one that exists already is
    kept, so a rerun after an interruption (or after fixing the file an error named) goes on where
    it stopped.

    Args:
        source: a 4D NIfTI ``(H, W, D, C)``, a folder of them, or a Decathlon task folder.
        output: the folder for the case folders.
        sequences: the sequence of each channel, in order (``["flair", "t1", "t1ce", "t2"]`` or
            ``"flair,t1,t1ce,t2"``); default: the task's ``dataset.json`` ``modality``
            (``channel_names`` in nnU-Net v2's).

    Returns:
        One :class:`SplitCase` a 4D file, in name order.

    Raises:
        InputError: no channel order (no ``sequences`` and no dataset.json naming the channels),
            unknown channel or label names, a file that is not 4D with one channel a sequence, a
            label map whose shape differs from its image's or that holds a value dataset.json does
            not name, or a case that two files would write.
    """
    import nibabel as nib

    from app.io.atomic import atomic_write_nifti

    source, output = Path(source), Path(output)
    pairs = multichannel_files(source)
    meta_path = find_dataset_json(source)
    meta = _read_dataset_json(meta_path) if meta_path is not None else {}
    if isinstance(sequences, str):
        sequences = [s for s in sequences.split(",") if s.strip()]
    if sequences:
        order = sequence_order(sequences, "--sequences")
    else:
        names = meta.get("modality") or meta.get("channel_names")
        if not isinstance(names, Mapping) or not names:
            raise InputError(f"'{source}': which channel is which sequence? No dataset.json beside it names them "
                             f"({'none found' if meta_path is None else f'{meta_path} has no modality'}); give the order with --sequences, "
                             "e.g. --sequences flair,t1,t1ce,t2 for the Medical Segmentation Decathlon's Task01_BrainTumour")
        ordered = [names[k] for k in sorted(names, key=lambda k: int(k) if str(k).isdigit() else str(k))]
        order = sequence_order(ordered, str(meta_path))
    codes = brats_label_codes(meta["labels"], str(meta_path)) if any(label for _, label, _ in pairs) and isinstance(meta.get("labels"), Mapping) else None
    ids: dict[str, Path] = {}
    for image, label, _ in pairs:
        shape = _shape(image)
        if len(shape) != 4 or shape[3] != len(order):
            raise InputError(f"'{image}': shape {shape}, expected 4D with {len(order)} channels last ({', '.join(order)}); "
                             f"{'a 3D file is one sequence already: volseg segment reads it as it is' if len(shape) == 3 else 'check --sequences'}")
        label_shape = _shape(label) if label is not None else shape[:3]
        if label_shape[:3] != shape[:3]:
            raise InputError(f"'{label}': shape {label_shape} differs from its image '{image}' {shape[:3]}")
        case_id = _case_id(image)
        if case_id in ids:
            raise InputError(f"case '{case_id}': two files would write it, '{ids[case_id]}' and '{image}'")
        ids[case_id] = image
    if any(label for _, label, _ in pairs) and codes is None:
        logger.warning("%s: no dataset.json labels name the label values; the label maps (labelsTr/) are not converted", source)
    cases = []
    for image, label, group in pairs:
        case_id = _case_id(image)
        folder = output / group / case_id
        case = SplitCase(case_id, image, folder, label if codes is not None else None)
        targets = {key: folder / f"{case_id}_{key}.nii.gz" for key in order}
        if any(not t.exists() for t in targets.values()):
            img = nib.load(image)
            data = np.asarray(img.dataobj)
            for c, (key, target) in enumerate(targets.items()):
                if target.exists():
                    case.kept.append(target)
                    continue
                atomic_write_nifti(np.ascontiguousarray(data[..., c]), img.affine, target)
                case.written.append(target)
            del data
        else:
            case.kept += list(targets.values())
        if case.label is not None:
            target = folder / f"{case_id}_seg.nii.gz"
            if target.exists():
                case.kept.append(target)
            else:
                seg = nib.load(case.label)
                values = np.asarray(seg.dataobj)
                found = {int(v) for v in np.unique(values)}
                unknown = sorted(found - set(codes))
                if unknown or not np.array_equal(values, np.round(values)):
                    raise InputError(f"'{case.label}': label values {unknown or 'that are not integers'} are not among the labels "
                                     f"of {meta_path} ({', '.join(f'{k} {v}' for k, v in meta['labels'].items())})")
                lut = np.zeros(max(found) + 1, dtype=np.uint8)
                for value, code in codes.items():
                    if 0 <= value < lut.size:
                        lut[value] = code
                atomic_write_nifti(lut[values.astype(np.int64)], seg.affine, target)
                case.written.append(target)
        cases.append(case)
    return cases


def multichannel_hint(path: str | Path, channels: Sequence[str]) -> str | None:
    """For ``volseg segment``: the error message for a 4D NIfTI with more than one channel, or None.

    Reads the header only. The message names the file, its shape and the command that splits it
    (:func:`split_multichannel`).
    """
    path = Path(path)
    if not _is_nifti(path):
        return None
    try:
        shape = _shape(path)
    except InputError:
        return None  # the reader's own check says what is wrong with it
    if len(shape) != 4 or shape[3] < 2:
        return None
    return (f"'{path}' is a 4D volume of {shape[3]} channels, shape {shape} (one file a case, as the Medical Segmentation Decathlon's "
            f"Task01_BrainTumour stores them); the bundle reads one 3D file a sequence ({', '.join(channels)}): "
            f"`volseg split-channels {path} --output DIR` writes them (the channel order from the task's dataset.json, or "
            "--sequences flair,t1,t1ce,t2), then `volseg segment DIR --output OUT`")


def multichannel_folder_hint(folder: str | Path, channels: Sequence[str]) -> str | None:
    """For ``volseg segment FOLDER`` and ``--dataset_dir FOLDER``: the error message where ``folder``
    (or its ``imagesTr/`` or ``imagesTs/``, a Decathlon task folder) holds 4D multi-channel NIfTI
    volumes, or None. Reads the headers of the first NIfTI file of each folder only."""
    folder = Path(folder)
    for where in (folder, folder / "imagesTr", folder / "imagesTs"):
        first = next((p for p in sorted(where.iterdir()) if _is_nifti(p)), None) if where.is_dir() else None
        try:
            shape = _shape(first) if first is not None else ()
        except InputError:
            continue  # the reader's own check says what is wrong with it
        if len(shape) == 4 and shape[3] > 1:
            return (f"'{folder}' holds 4D volumes of {shape[3]} channels ('{first}': shape {shape}), one file a case, as the Medical "
                    f"Segmentation Decathlon's Task01_BrainTumour stores them; the bundle reads one 3D file a sequence ({', '.join(channels)}): "
                    f"`volseg split-channels {folder} --output DIR` writes them as case folders (the channel order from the task's "
                    "dataset.json, or --sequences flair,t1,t1ce,t2), which volseg segment then reads")
    return None


def nnunet_channel_files(folder: Path) -> list[Path]:
    """The volumes of ``folder`` where every one is named as nnU-Net names input channels
    (``BRATS_001_0000.nii.gz``: case, then the 4-digit channel index), else ``[]``."""
    from app.data.cases import strip_suffix

    volumes = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".") and strip_suffix(p.name) != p.name]
    return volumes if volumes and all(NNUNET_NAME.match(p.name) for p in volumes) else []


def nnunet_sequences(files: Sequence[Path], channels: Sequence[str]) -> list[tuple[str, str, Path]] | None:
    """``(case_id, sequence, file)`` for files named as nnU-Net names input channels, the channel
    indices read through the ``channel_names`` (nnU-Net v2) or ``modality`` (v1) of the
    ``dataset.json`` in their folder or one or two folders up (``Dataset001_BrainTumour/imagesTs/``).

    Returns:
        None where a file is named otherwise, or no dataset.json names the channels (the caller's
        own message then asks for names or ``--sequences``).

    Raises:
        InputError: a channel name that names no sequence, or a channel index that dataset.json
            does not name.
    """
    matches = [NNUNET_NAME.match(Path(f).name) for f in files]
    if not files or not all(matches):
        return None
    meta_path = find_dataset_json(Path(files[0]))
    meta = _read_dataset_json(meta_path) if meta_path is not None else {}
    names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(names, Mapping) or not names or not all(str(k).isdigit() for k in names):
        return None
    indices = sorted(names, key=int)
    keys = dict(zip(map(int, indices), sequence_order([names[k] for k in indices], str(meta_path), channels)))
    out = []
    for match, f in zip(matches, files):
        channel = int(match["channel"])
        if channel not in keys:
            raise InputError(f"'{f}': channel {channel:04d}, but {meta_path} names channels {', '.join(f'{c:04d}' for c in keys)} only")
        out.append((match["case"], keys[channel], Path(f)))
    return out
