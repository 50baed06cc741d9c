"""Discovery of BraTS-style cases: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.constants import DATA_DIR_ENV, MODALITIES
from app.resources import source_root

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class BratsCase:
    """One BraTS case: four modality files in ``MODALITIES`` order and an optional label.

    Attributes:
        case_id: the case folder name, e.g. ``"Brats18_2013_11_1"``.
        images: paths of the T1, T1ce, T2 and FLAIR volumes, in that order.
        label: path of the ``_seg`` label map (codes 0/1/2/4), or None where absent.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None


def _find_file(folder: Path, case_id: str, key: str) -> Path | None:
    for suffix in _SUFFIXES:
        path = folder / f"{case_id}_{key}{suffix}"
        if path.is_file():
            return path
    return None


def find_case(folder: str | Path, require_label: bool = False) -> BratsCase:
    """Read one BraTS case folder.

    Args:
        folder: the case folder; its name is the case ID.
        require_label: raise when the ``_seg`` file is missing.

    Returns:
        The case with its files.

    Raises:
        FileNotFoundError: the folder is missing, or a modality (or the required label) is
            absent; the message lists every missing file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"case folder '{folder}' does not exist or is not a folder")
    case_id = folder.name
    images = {key: _find_file(folder, case_id, key) for key in MODALITIES}
    label = _find_file(folder, case_id, "seg")
    missing = [key for key, path in images.items() if path is None]
    if require_label and label is None:
        missing.append("seg")
    if missing:
        found = len(MODALITIES) - len([m for m in missing if m != "seg"])
        raise FileNotFoundError(
            f"case '{case_id}' in '{folder}': expected 4 modalities ({', '.join(MODALITIES)})"
            f"{' and a seg label' if require_label else ''}, found {found}: missing {', '.join(missing)}"
            f" (file names must be {case_id}_<key>.nii.gz, or .nii, .nrrd, .mha)"
        )
    return BratsCase(case_id, tuple(images[key] for key in MODALITIES), label)


def scan_brats(data_dir: str | Path, require_label: bool = True) -> list[BratsCase]:
    """Find every BraTS case folder under ``data_dir``, sorted by case ID.

    Raises:
        FileNotFoundError: ``data_dir`` is missing, holds no case folder, or any case is
            incomplete; all problems are reported together.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder '{data_dir}' does not exist")
    cases, problems = [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        try:
            cases.append(find_case(folder, require_label=require_label))
        except FileNotFoundError as err:
            problems.append(str(err))
    if problems:
        raise FileNotFoundError(f"{len(problems)} incomplete case(s) in '{data_dir}':\n  " + "\n  ".join(problems))
    if not cases:
        raise FileNotFoundError(f"no BraTS case folder (<case>/<case>_t1.nii.gz ...) found in '{data_dir}'")
    return cases


def shared_data_dir(name: str) -> Path:
    """``../shared/data/<name>``: beside the repository in a source checkout, else (installed from
    a wheel, no repository) beside the current folder. Returned whether or not it exists.

    Example:
        >>> shared_data_dir("msd_spleen").name
        'msd_spleen'
    """
    base = source_root() or Path.cwd()
    return (base.parent / "shared" / "data" / name).resolve()


def default_brats_dir() -> Path:
    """The BraTS data folder: ``$VOLSEG_BRATS_DIR``, else :func:`shared_data_dir` ``("brats2018")``.

    The path is returned whether or not it exists; callers check.
    """
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else shared_data_dir("brats2018")
