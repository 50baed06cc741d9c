"""Discovery of BraTS-style cases: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS
2012-2021 names) or ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS 2023+ names)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.constants import DATA_DIR_ENV, MODALITIES
from app.io.readers import dicom_tags
from app.resources import source_root

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: File-name keys of each MRI sequence: BraTS 2012-2021 (``<case>_t1ce.nii.gz``) and BraTS 2023+
#: (``<case>-t1c.nii.gz``: t1n native T1, t1c contrast-enhanced T1, t2w T2, t2f T2-FLAIR).
SEQUENCE_ALIASES: dict[str, tuple[str, ...]] = {"t1": ("t1", "t1n", "t1w"), "t1ce": ("t1ce", "t1c", "t1gd"), "t2": ("t2", "t2w"),
                                                "flair": ("flair", "t2f", "t2-flair", "t2_flair", "t2flair"),
                                                "seg": ("seg",)}  # BraTS 2018, BraTS 2023+, BIDS / TCIA (T1w, T1Gd, T2-FLAIR)
_ALIAS = {alias: key for key, aliases in SEQUENCE_ALIASES.items() for alias in aliases}
_NAME = re.compile(r"^(?:(?P<case>.+?)[_-])?(?P<key>" + "|".join(sorted(_ALIAS, key=len, reverse=True)) + r")$", re.IGNORECASE)


def strip_suffix(name: str) -> str:
    """``"x_t1.nii.gz"`` -> ``"x_t1"``: the file name without its volume suffix (if any)."""
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_sequence_name(path: str | Path) -> tuple[str | None, str] | None:
    """The case ID and sequence a file's name gives, or None when the name holds no sequence key.

    Sequence keys come back in VolSeg's names (``MODALITIES`` and ``"seg"``), whichever BraTS
    naming the file uses (:data:`SEQUENCE_ALIASES`). A bare name (``flair.nii.gz``, a DICOM
    folder ``T1ce/``) gives no case ID.

    Example:
        >>> split_sequence_name("Brats18_2013_11_1_t1ce.nii.gz")
        ('Brats18_2013_11_1', 't1ce')
        >>> split_sequence_name("BraTS-GLI-00000-000-t2f.nii.gz")
        ('BraTS-GLI-00000-000', 'flair')
        >>> split_sequence_name("sub-01_ce-gd_T1w.nii.gz"), split_sequence_name("P002_T2-FLAIR.nii.gz")
        (('sub-01', 't1ce'), ('P002', 'flair'))
        >>> split_sequence_name("scan.nii.gz") is None
        True
    """
    stem = strip_suffix(Path(path).name)
    if stem.lower() in _ALIAS:  # a bare name: "t2_flair" is FLAIR, not the FLAIR of a case "t2"
        return None, _ALIAS[stem.lower()]
    bids = _bids_name(stem)
    if bids is not None:
        return bids
    match = _NAME.match(stem)
    if match is None:
        return None
    return match.group("case"), _ALIAS[match.group("key").lower()]


#: A BIDS anatomical name: ``sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>``.
_BIDS = re.compile(r"^(?P<case>sub-[A-Za-z0-9]+(?:_ses-[A-Za-z0-9]+)?)(?P<entities>(?:_[A-Za-z]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)$")


def _bids_name(stem: str) -> tuple[str, str] | None:
    """``(case, sequence)`` of a BIDS name, its case the subject (and session): ``sub-01_ce-gd_T1w`` is
    ``("sub-01", "t1ce")`` (the ``ce-`` entity marks a contrast agent), ``sub-01_acq-tse_T2w`` is
    ``("sub-01", "t2")``; None for other names, or a BIDS suffix that names no sequence."""
    match = _BIDS.match(stem)
    if match is None:
        return None
    key = _ALIAS.get(match.group("suffix").lower())
    if key is None:
        return None
    entities = {part.split("-", 1)[0].lower() for part in match.group("entities").split("_") if part}
    if key == "t1" and "ce" in entities:
        key = "t1ce"
    return match.group("case"), key


def case_id_from_path(path: str | Path) -> str:
    """The case ID a volume's name gives: the name without its volume ending and sequence key.

    ``.../Brats18_X/Brats18_X_t1.nii.gz`` -> ``Brats18_X``, ``BraTS-GLI-00000-000-t2f.nii.gz`` ->
    ``BraTS-GLI-00000-000`` (:data:`SEQUENCE_ALIASES`); a name without a sequence key (a CT
    ``spleen_8.nii.gz``, a DICOM series folder, a bare ``flair.nii.gz``) gives itself without its
    ending. The one place that turns file names into case IDs: inference, the bundles' label
    writer (:class:`app.transforms.SaveLabelMapd`) and the CLI ask it.

    Example:
        >>> case_id_from_path("Brats18_X/Brats18_X_t1.nii.gz"), case_id_from_path("spleen_8.nii.gz")
        ('Brats18_X', 'spleen_8')
    """
    parsed = split_sequence_name(path)
    return parsed[0] if parsed is not None and parsed[0] else strip_suffix(Path(path).name)


@dataclass(frozen=True)
class BratsCase:
    """One BraTS case: its modality files in ``MODALITIES`` order and an optional label.

    Attributes:
        case_id: the case folder name, e.g. ``"Brats18_2013_11_1"``.
        images: paths of the T1, T1ce, T2 and FLAIR volumes, in that order; None for a sequence
            the case lacks (only from ``find_case(..., allow_missing=True)``).
        label: path of the ``_seg`` label map (codes 0/1/2/4), or None where absent.
    """

    case_id: str
    images: tuple[Path | None, ...]
    label: Path | None = None

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the sequences the case lacks, e.g. ``("t2",)``."""
        return tuple(key for key, path in zip(MODALITIES, self.images) if path is None)


def _other_case_ids(parsed_names: Iterable[tuple[str | None, str] | None], case_id: str) -> set[str]:
    """The case IDs other than ``case_id`` that parsed file names (:func:`split_sequence_name`) carry."""
    return {parsed[0] for parsed in parsed_names if parsed is not None and parsed[0] not in (case_id, None, "")}


_WARNED_DUPLICATES: set[tuple[str, str, int]] = set()


def _case_files(folder: Path, case_id: str) -> dict[str, Path]:
    """Sequence key -> file of ``case_id`` in ``folder`` (either BraTS naming; for one key the
    first format of ``_SUFFIXES`` wins). Bare names without a case ID (``FLAIR.nii.gz``,
    ``T1c.nii.gz``, as loose files are matched) fill the keys that no ``<case_id>_<key>`` file gives,
    and then files named after one other case ID (a renamed folder, or a link with another name,
    holding ``Brats18_X_<key>`` files, and no sub-folder); files of several other case IDs are not taken.
    Where a key has several files, the one read is named in a warning."""
    found: dict[str, tuple[int, int, Path]] = {}
    candidates: dict[str, list[Path]] = {}
    named = [(path, split_sequence_name(path)) for path in folder.iterdir()]
    others = _other_case_ids((parsed for _, parsed in named), case_id)
    # one other case's files, in a folder without sub-folders (a dataset folder's loose files are no case of its own)
    take_other = len(others) == 1 and not any(path.is_dir() and not path.name.startswith(".") for path, _ in named)
    for path, parsed in named:
        suffix = next((i for i, s in enumerate(_SUFFIXES) if path.name.lower().endswith(s)), None)
        if parsed is None or suffix is None or not path.is_file():
            continue
        if parsed[0] not in (case_id, None, "") and not take_other:
            continue
        rank = ({case_id: 0, None: 1, "": 1}.get(parsed[0], 2), suffix)  # another case ID (a renamed or linked folder) last
        candidates.setdefault(parsed[1], []).append(path)
        if parsed[1] not in found or rank < found[parsed[1]][:2]:
            found[parsed[1]] = (*rank, path)
    for key, paths in candidates.items():
        seen = (str(folder), key, len(paths))
        if len(paths) > 1 and seen not in _WARNED_DUPLICATES:  # t1.nii.gz beside <case>_t1.nii.gz: say which is read, once a process
            _WARNED_DUPLICATES.add(seen)  # (volseg serve reads a study's folder on every request)
            logging.getLogger(__name__).warning(f"case '{case_id}': {len(paths)} files for {key} in '{folder}' "
                                                f"({', '.join(sorted(p.name for p in paths))}); reading {found[key][2].name}")
    return {key: path for key, (_, _, path) in found.items()}


#: SeriesDescription (0008,103E) words that mark a contrast-enhanced T1 (T1ce / T1Gd): "T1 post contrast", "T1+C", "T1 GD",
#: "MPRAGE KM", "T1CE", "T1Gd" (matched in the description lowered, other characters than letters, digits and + made spaces).
_CONTRAST = re.compile(r"(post|\+ ?c\b|\bc\+|\bgd\b|\bgad|contrast|\bce\b|\bt1(ce|c|gd)\b|\bkm\b|enhanc)")


def sequence_from_description(description: str) -> str | None:
    """The MRI sequence a DICOM SeriesDescription (0008,103E) names, in VolSeg's keys, or None.

    FLAIR (or T2F) before T2, T2 (T2W, "T2 TSE"; not T2*) before T1, and a T1 with a contrast word
    ("post", "+C", "Gd", "contrast", "CE", "KM") is T1ce. Scanner descriptions vary; this reads the
    common ones and answers None where it cannot tell, so that the caller can ask for names.

    Example:
        >>> [sequence_from_description(d) for d in ("AX FLAIR", "T2 TSE", "T1 post contrast", "T1_MPRAGE", "DWI")]
        ['flair', 't2', 't1ce', 't1', None]
    """
    text = str(description or "").lower()
    words = re.sub(r"[^a-z0-9+]+", " ", text)
    if "flair" in words or re.search(r"\bt2f\b", words):
        return "flair"
    if re.search(r"\bt2\s*(\*|star)", text):  # T2* gradient echo: not the T2 the models read
        return None
    if re.search(r"\bt2", words) and not re.search(r"\bt1", words):
        return "t2"
    if re.search(r"\bt1", words) or "mprage" in words:
        return "t1ce" if _CONTRAST.search(words) else "t1"
    return None


def _first_file(folder: Path) -> Path | None:
    """The first file of ``folder`` in name order (hidden ones left out), or None."""
    return next((p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")), None)


def _looks_like_dicom_folder(folder: Path) -> bool:
    """Whether ``folder`` holds DICOM files: its first file (in name order) carries the "DICM" marker
    at byte 128 of a DICOM Part 10 file. Reads 132 bytes, so it is cheap enough for every
    sub-folder of a study."""
    try:
        first = _first_file(folder)
        if first is None:
            return False
        with open(first, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_study(folder: str | Path) -> bool:
    """Whether ``folder`` holds a DICOM series sub-folder (a study exported one folder a series),
    by the cheap marker test of :func:`_looks_like_dicom_folder`."""
    folder = Path(folder)
    return folder.is_dir() and any(d.is_dir() and not d.name.startswith(".") and _looks_like_dicom_folder(d) for d in folder.iterdir())


def _series_folders(folder: Path, case_id: str) -> dict[str, Path]:
    """Sequence key -> DICOM series sub-folder of a study folder (a clinical export: one folder per
    series, ``<study>/01_T1/``, ``<study>/02_T1_post_contrast/``, ...).

    Each sub-folder that holds DICOM files is matched by its name where the name ends in a sequence
    key (``T1``, ``T1ce``, ``<case>_flair``, ``04_FLAIR``; :data:`SEQUENCE_ALIASES`), else by its
    SeriesDescription (:func:`sequence_from_description`). A name that contradicts the
    description is warned about (the name wins: it is what the user controls). Sub-folders of
    neither kind (a localizer, DWI) are left out, with a log line.

    Raises:
        FileNotFoundError: two series for one sequence (naming both and their descriptions).
    """
    log = logging.getLogger(__name__)
    found: dict[str, list[tuple[Path, str]]] = {}
    skipped = []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        if not _looks_like_dicom_folder(sub):
            continue
        try:
            tags = dicom_tags(_first_file(sub), {"description": "0008|103e", "modality": "0008|0060"})
            description, modality = tags["description"], tags["modality"]
        except (ValueError, TypeError):  # an unreadable header: matched by its name only
            description, modality = "", ""
        parsed = split_sequence_name(sub)
        by_name = parsed[1] if parsed is not None and parsed[1] in MODALITIES else None
        by_description = sequence_from_description(description)
        if by_name and by_description and by_name != by_description:
            log.warning(f"case '{case_id}': series folder '{sub.name}' is read as {by_name} (its name), but its SeriesDescription "
                        f"'{description}' says {by_description}; rename the folder if the description is right")
        key = by_name or by_description
        if key is None:
            skipped.append(f"{sub.name} ('{description}'{', ' + modality if modality else ''})")
            continue
        found.setdefault(key, []).append((sub, description))
    if skipped:
        log.info(f"case '{case_id}': series folder(s) not matched to a sequence, left out: {', '.join(skipped)}")
    doubles = {key: subs for key, subs in found.items() if len(subs) > 1}
    if doubles:
        listing = "; ".join(f"{key}: " + ", ".join(f"{sub.name} ('{d}')" for sub, d in subs) for key, subs in doubles.items())
        raise FileNotFoundError(f"case '{case_id}' in '{folder}': several DICOM series for one sequence ({listing}); "
                                "keep one series a sequence in the study folder, or give the series folders as inputs with --sequences")
    return {key: subs[0][0] for key, subs in found.items()}


def find_case(folder: str | Path, require_label: bool = False, allow_missing: bool = False) -> BratsCase:
    """Read one BraTS case folder (BraTS 2012-2021 or 2023+ file names, :data:`SEQUENCE_ALIASES`).

    A case folder holds one volume file a sequence, or (a DICOM study as exported) one DICOM
    series sub-folder a sequence, matched by the sub-folder's name or its SeriesDescription
    (:func:`_series_folders`).

    Args:
        folder: the case folder; its name is the case ID.
        require_label: raise when the ``_seg`` file is missing.
        allow_missing: accept any non-empty subset of the four sequences (None in ``images``
            for the others), for models trained with modality dropout.

    Returns:
        The case with its files.

    Raises:
        FileNotFoundError: the folder is missing, or a modality (or the required label) is
            absent (with ``allow_missing``: all four are); the message lists every missing file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"case folder '{folder}' does not exist or is not a folder")
    case_id = folder.name
    if case_id.lower() == "anat":  # a BIDS sub-01/[ses-1/]anat/ folder: the subject (and session) its files name is the case
        ids = {p[0] for p in map(split_sequence_name, folder.iterdir()) if p is not None and p[0] and p[1] in MODALITIES}
        case_id = ids.pop() if len(ids) == 1 else case_id
    files = _case_files(folder, case_id)
    if not any(key in files for key in MODALITIES):  # no sequence file: a DICOM study, one sub-folder a series?
        files.update(_series_folders(folder, case_id))
    images = {key: files.get(key) for key in MODALITIES}
    label = files.get("seg")
    missing = [key for key, path in images.items() if path is None]
    if allow_missing and len(missing) < len(MODALITIES) and not (require_label and label is None):
        return BratsCase(case_id, tuple(images[key] for key in MODALITIES), label)
    if require_label and label is None:
        missing.append("seg")
    if missing:
        found = len(MODALITIES) - len([m for m in missing if m != "seg"])
        subfolders = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")) if found == 0 else []
        hint = (f"; it holds folders ({', '.join(subfolders[:5])}{', ...' if len(subfolders) > 5 else ''}): give the case "
                f"folders, or a dataset folder that holds them directly") if subfolders else ""
        others = sorted(_other_case_ids(map(split_sequence_name, folder.iterdir()), case_id))
        if found == 0 and len(others) > 1:
            hint += f"; it holds the files of several cases ({', '.join(others[:4])}{', ...' if len(others) > 4 else ''}): give each case a folder"
        expected = (f"expected at least one of the 4 modalities ({', '.join(MODALITIES)}; any non-empty subset is segmented)"
                    if allow_missing and found == 0 else f"expected 4 modalities ({', '.join(MODALITIES)})")
        found_text = f"found {found}: missing {', '.join(missing)}" if found else "found none" + (" (the folder is empty)" if not any(folder.iterdir()) else "")
        raise FileNotFoundError(
            f"case '{case_id}' in '{folder}': {expected}"
            f"{' and a seg label' if require_label else ''}, {found_text}"
            f" (file names must be {case_id}_<key>.nii.gz, {case_id}-<t1n|t1c|t2w|t2f>.nii.gz or a bare <key>.nii.gz such as FLAIR.nii.gz, "
            f"or .nii, .nrrd, .mha){hint}"
        )
    return BratsCase(case_id, tuple(images[key] for key in MODALITIES), label)


def scan_brats(data_dir: str | Path, require_label: bool = True, allow_missing: bool = False) -> list[BratsCase]:
    """Find every BraTS case folder under ``data_dir``, sorted by case ID; with ``allow_missing``,
    a case may lack sequences (None in its ``images``, :func:`find_case`).

    Raises:
        FileNotFoundError: ``data_dir`` is missing, holds no case folder, or any case is
            incomplete; all problems are reported together.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder '{data_dir}' does not exist")
    cases, problems = [], []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if not _holds_sequences(folder):  # an output folder of label maps, notes, ...: not an incomplete case
            logging.getLogger(__name__).warning(f"'{folder}' holds no MRI sequence file (t1, t1ce, t2, flair): not a case, skipped")
            continue
        try:
            cases.append(find_case(folder, require_label=require_label, allow_missing=allow_missing))
        except FileNotFoundError as err:
            problems.append(str(err))
    if problems:
        raise FileNotFoundError(f"{len(problems)} incomplete case(s) in '{data_dir}':\n  " + "\n  ".join(problems))
    if not cases:
        raise FileNotFoundError(f"no BraTS case folder (<case>/<case>_t1.nii.gz ...) found in '{data_dir}'")
    return cases


def _holds_sequences(folder: Path) -> bool:
    """Whether ``folder`` may be a case folder: a file named as an MRI sequence, or a sub-folder
    (a DICOM series a sequence)."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            return True
        parsed = split_sequence_name(entry) if entry.is_file() else None
        if parsed is not None and parsed[1] in MODALITIES:
            return True
    return False


def shared_data_dir(name: str) -> Path:
    """``../shared/data/<name>``: beside the repository in a source checkout, else (installed from
    a wheel, no repository) beside the current folder or, where that has none, beside the nearest
    of its parents that has one (up to 4 levels: a bundle folder copied into a project, run from
    inside it by ``python -m monai.bundle run``). Returned whether or not it exists (then the
    one beside the current folder).

    Example:
        >>> shared_data_dir("msd_spleen").name
        'msd_spleen'
    """
    root = source_root()
    if root is not None:
        return (root.parent / "shared" / "data" / name).resolve()
    here = Path.cwd()
    for folder in [here, *here.parents][:5]:
        found = folder.parent / "shared" / "data" / name
        if found.is_dir():
            return found.resolve()
    return (here.parent / "shared" / "data" / name).resolve()


def default_brats_dir() -> Path:
    """The BraTS data folder: ``$VOLSEG_BRATS_DIR``, else :func:`shared_data_dir` ``("brats2018")``.

    The path is returned whether or not it exists; callers check.
    """
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else shared_data_dir("brats2018")
