"""The cases a bundle's inference workflow segments: every case found in a folder, or one split of
a datalist (``python -m monai.bundle run --config_file configs/inference.yaml --dataset_dir DIR``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.constants import MODALITIES
from app.data.cases import case_id_from_path, find_case, scan_brats
from app.data.manifest import load_datalist
from app.errors import InputError
from app.io.formats import VOLUME_SUFFIXES, strip_volume_suffix
from app.io.readers import dicom_series

__all__ = ["folder_datalist", "inference_datalist"]

logger = logging.getLogger(__name__)


def folder_datalist(dataset_dir: str | Path, num_channels: int) -> list[dict[str, Any]]:
    """Every case found in ``dataset_dir``, as datalist items with absolute paths.

    * Four channels (the BraTS bundles): each sub-folder is a case folder
      (:func:`app.data.cases.scan_brats`, BraTS 2012-2021 or 2023+ file names; labels are not
      needed), or ``dataset_dir`` itself is one case folder, or an nnU-Net images folder
      (``<case>_0000.nii.gz``, ..., channels named by its dataset.json). A folder of 4D
      multi-channel volumes (the Decathlon's Task01_BrainTumour) is refused with the command that
      splits them (``volseg split-channels``).
    * One channel (CT): each volume file directly in ``dataset_dir`` (NIfTI, NRRD, MetaImage;
      not a label map or VolSeg output, named ``*_seg``, ``*_uncertainty``, ``*_label(s)``:
      :data:`LABEL_ENDINGS`, left out with a log line) and each sub-folder holding a DICOM series, up to :data:`DICOM_SEARCH_DEPTH` levels deep
      (a PACS export's patient/study/series), is a case; a series folder's name is its case ID
      (its path below ``dataset_dir``, ``patA_CT``, where two series folders share a name).

    Args:
        dataset_dir: the folder.
        num_channels: the bundle's input channels (``network_def#in_channels``).

    Returns:
        ``[{"case_id", "image": [t1, t1ce, t2, flair]}, ...]`` or ``[{"case_id", "image": path}, ...]``,
        sorted by case ID.

    Raises:
        FileNotFoundError: the folder is missing or holds no case, or a BraTS case folder holds no
            sequence at all (every problem listed together); a case that lacks some sequences is
            segmented from the others (None in its ``image`` list, zero-filled by the reader).
        ValueError: a channel count with no folder convention (pass a datalist instead);
            :class:`app.errors.InputError`: 4D multi-channel volumes, or nnU-Net channel files that
            no dataset.json names.

    Example:
        >>> folder_datalist("data/brats2018", 4)[0]["image"][0]  # doctest: +SKIP
        '/.../data/brats2018/Brats18_2013_0_1/Brats18_2013_0_1_t1.nii.gz'
    """
    root = Path(dataset_dir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir '{dataset_dir}' does not exist or is not a folder")
    if num_channels == len(MODALITIES):
        from app.data.split_channels import multichannel_folder_hint, nnunet_channel_files

        try:
            if not any(p.is_dir() for p in root.iterdir()):  # the folder is one case, or nnU-Net's images folder
                nnunet = nnunet_channel_files(root)
                if nnunet:
                    return _nnunet_items(root, nnunet)
                cases = [find_case(root, allow_missing=True)]
            else:
                cases = scan_brats(root, require_label=False, allow_missing=True)
        except FileNotFoundError as err:  # Task01_BrainTumour/ or its imagesTr/, imagesTs/: the command that splits them
            hint = multichannel_folder_hint(root, MODALITIES)
            if hint:
                raise InputError(hint) from err
            raise
        # a sequence the case lacks is None: app.io.LoadVolumed zero-fills it, as volseg segment does
        return [{"case_id": c.case_id, "image": [str(p) if p is not None else None for p in c.images]} for c in cases]
    if num_channels != 1:
        raise ValueError(f"no folder layout is defined for {num_channels}-channel input; pass --data_list_file FILE --data_split SPLIT")
    found = [p for p in sorted(root.iterdir()) if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)]
    labels = [p for p in found if _is_label_or_output(p)]
    if labels:  # a label map or a VolSeg output beside the images (an output folder inside the data): not a case
        logger.info("%s: %d label map(s) or VolSeg output(s) left out (%s%s)", root, len(labels), ", ".join(p.name for p in labels[:3]),
                    ", ..." if len(labels) > 3 else "")
        found = [p for p in found if p not in labels]
    found += _dicom_series_folders(root, DICOM_SEARCH_DEPTH)
    if not found:
        dcm = sum(1 for level in range(DICOM_SEARCH_DEPTH + 1) for p in root.glob("/".join(["*"] * (level + 1)))
                  if p.suffix.lower() in (".dcm", ".ima") and p.is_file())
        unread = f" (it holds {dcm} .dcm/.ima file(s), none readable as a DICOM image series: empty, corrupt or not images)" if dcm else ""
        raise FileNotFoundError(f"no volume ({', '.join(VOLUME_SUFFIXES)}) in '{root}', nor a DICOM series folder in it or in its sub-folders "
                                f"(searched {DICOM_SEARCH_DEPTH} levels deep){unread}; pass a Decathlon folder's imagesTs/ or imagesTr/, or the folder that "
                                "holds a series' slice files (volseg segment DIR; --dataset_dir DIR for python -m monai.bundle run)")
    items = [{"case_id": case_id_from_path(p), "image": str(p)} for p in found]
    ids = [item["case_id"] for item in items]
    for item, path in zip(items, found):  # series folders named alike (patA/CT, patB/CT): named by their path below the folder
        if ids.count(item["case_id"]) > 1:
            item["case_id"] = "_".join(path.relative_to(root).parts[:-1] + (item["case_id"],))
    return sorted(items, key=lambda item: item["case_id"])


def _nnunet_items(root: Path, files: list[Path]) -> list[dict[str, Any]]:
    """Datalist items of an nnU-Net images folder (``<case>_0000.nii.gz``, ...), the channels named by
    its dataset.json (:func:`app.data.split_channels.nnunet_sequences`), sorted by case ID."""
    from app.data.split_channels import nnunet_sequences

    named = nnunet_sequences(files, MODALITIES)
    if named is None:
        raise InputError(f"'{root}': its files are named as nnU-Net names input channels ({files[0].name}, ...), but no dataset.json in it "
                         "or the folder above names the channels (channel_names, or modality): add one, or pass a datalist (--datalist)")
    cases: dict[str, dict[str, Path]] = {}
    for case_id, key, path in named:
        cases.setdefault(case_id, {})[key] = path
    return [{"case_id": case_id, "image": [str(found[k]) if k in found else None for k in MODALITIES]} for case_id, found in sorted(cases.items())]


#: Name endings (before the volume suffix) of files a one-channel dataset folder does not take for
#: images: label maps (BraTS ``_seg``) and VolSeg's own outputs (``<case>_seg``, ``<case>_uncertainty``).
LABEL_ENDINGS = ("_seg", "_uncertainty", "_label", "_labels")


def _is_label_or_output(path: Path) -> bool:
    return strip_volume_suffix(path.name).lower().endswith(LABEL_ENDINGS)


#: How deep below a dataset folder DICOM series folders are looked for: a PACS export nests them
#: as patient/study/series.
DICOM_SEARCH_DEPTH = 4


def _dicom_series_folders(root: Path, depth: int) -> list[Path]:
    """Sub-folders of ``root`` holding a DICOM series, ``depth`` levels deep at most, in path
    order; a series folder's own sub-folders are not searched, nor hidden ones."""
    found: list[Path] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_dicom_series(sub):
            found.append(sub)
        elif depth > 1:
            found += _dicom_series_folders(sub, depth - 1)
    return found


def _is_dicom_series(folder: Path) -> bool:
    try:
        return bool(dicom_series(folder))
    except InputError:
        return False


def inference_datalist(dataset_dir: str | Path, num_channels: int, data_list_file: str | Path | None = None,
                       split: str | None = None) -> list[dict[str, Any]]:
    """The cases of an inference run: ``split`` of ``data_list_file`` (paths relative to
    ``dataset_dir``, :func:`app.data.load_datalist`) when ``split`` is given, else every case in
    ``dataset_dir`` (:func:`folder_datalist`).

    Raises:
        FileNotFoundError, ValueError: see :func:`folder_datalist` and :func:`app.data.load_datalist`;
            ValueError also for a ``split`` that holds no case.
    """
    if split:
        if data_list_file is None:
            raise ValueError(f"data_split '{split}' needs a datalist: pass --data_list_file FILE")
        items = load_datalist(data_list_file, split, dataset_dir)
        if not items:  # else the run ends at once, with exit status 0 and nothing written
            raise ValueError(f"data_split '{split}' of '{data_list_file}' holds no case: nothing to segment; choose another list "
                             "(--data_split) or segment a folder (--dataset_dir DIR without --data_split)")
        return items
    return folder_datalist(dataset_dir, num_channels)
