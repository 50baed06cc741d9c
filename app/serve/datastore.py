"""On-disk datastore of BraTS studies and submitted labels for ``volseg serve``.

A study (image ID) is a BraTS case: co-registered modalities T1, T1ce, T2, FLAIR, all four or
any non-empty subset (the bundles were trained with modality dropout; the answer of ``/infer/``
names the missing ones and their cross-validation Dice). Studies come from a read-only folder of
case folders (``--studies``) or are uploaded as one 4D NIfTI with 4 channels in that order, which
is split into a case folder under ``<store>/images/``. The FLAIR (or, without one, the first
sequence present) is the image shown to the annotator; labels are stored under
``<store>/labels/<tag>/<id>.<ext>`` after checks of geometry and label codes. Only studies with
all four sequences are trained on.

Nothing is served from outside the two roots: a symbolic link in ``--studies`` that resolves
outside it is ignored, and a folder that is not a readable study is skipped with a logged warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from app.constants import MODALITIES
from app.data.cases import find_case
from app.io.atomic import atomic_write, atomic_write_nifti
from app.io.readers import read_image_information
from app.serve.errors import DatastoreError
from app.serve.uploads import (UploadLimits, check_attached_data, check_inflated_size, check_nifti_finite, check_voxel_budget, exact_label_codes,
                               nifti_shape, read_label_header)

logger = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TAG = re.compile(r"[A-Za-z0-9_-]{1,32}")
LABEL_SUFFIXES = (".nii.gz", ".nrrd", ".nii", ".mha")
#: Temporary files of atomic writes (``app.io.atomic``) and of upload checks; left behind only by a killed server.
_STALE_TMP = ".*.tmp*"

__all__ = ["LABEL_SUFFIXES", "Datastore", "DatastoreError", "check_id", "check_tag", "label_info_mapping"]


def check_id(value: str, what: str = "image") -> str:
    """Validate an image ID: letters, digits, ``.``, ``_``, ``-``; no path parts, no ``..``.

    The whole string must match (``re.fullmatch``): ``"Case_1\\n"`` is refused.

    Raises:
        DatastoreError: 400 for anything else (path traversal, absolute paths, empty).

    Example:
        >>> check_id("Brats18_CBICA_AME_1")
        'Brats18_CBICA_AME_1'
    """
    if not isinstance(value, str) or not _ID.fullmatch(value) or ".." in value:
        raise DatastoreError(f"invalid {what} id {value!r}: use letters, digits, '.', '_' and '-' only (no paths)")
    return value


def check_tag(tag: str) -> str:
    """Validate a label tag (``final``, ``original``, ...): 1 to 32 letters, digits, ``_`` or ``-``, matched in full.

    Raises:
        DatastoreError: 400 for anything else.
    """
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise DatastoreError(f"invalid label tag {tag!r}: use 1 to 32 letters, digits, '_' and '-'")
    return tag


def _suffix(filename: str) -> str:
    name = filename.lower()
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DatastoreError(f"unsupported file type '{filename}': expected one of {', '.join(LABEL_SUFFIXES)}")


def _rounded(values: Any) -> list[float]:
    return [round(float(v), 3) for v in values]


def label_info_mapping(label_info: Any, names: dict[str, int], values: set[int]) -> dict[int, int] | None:
    """Value in a submitted label -> label code, where the label's ``label_info`` says its values
    are not the served bundles' codes. 3D Slicer's MONAI Label module numbers the exported
    segments 1, 2, 3, ... in ``label_info`` order (``ExportSegmentsToLabelmapNode``), whatever codes
    the model gave them, and sends ``[{"name": "NCR/NET", "idx": 1}, {"name": "ED", "idx": 2},
    {"name": "ET", "idx": 3}]``, with ``idx`` counting segments it did not export (a "background"
    segment) too.

    Args:
        label_info: the ``label_info`` of the request's params (anything: a malformed one is ignored).
        names: label name -> code of the served bundles (matched without regard to case).
        values: the distinct values in the label file.

    Returns:
        None where the values are taken as codes: no usable ``label_info`` (no names, a name that
        is not a label of the served bundles, no ``idx``), or ``idx`` values that are the names'
        codes. Otherwise ``{idx: code}`` where the file's values are among the ``idx`` values, else
        ``{k: code of the k-th entry}`` (Slicer's export order); a value in neither is left for
        the caller to refuse.

    Example:
        >>> info = [{"name": "NCR/NET", "idx": 1}, {"name": "ED", "idx": 2}, {"name": "ET", "idx": 3}]
        >>> label_info_mapping(info, {"NCR/NET": 1, "ED": 2, "ET": 4}, {0, 1, 3})
        {1: 1, 2: 2, 3: 4}
        >>> label_info_mapping([{"name": "ET", "idx": 4}], {"NCR/NET": 1, "ED": 2, "ET": 4}, {0, 4}) is None
        True
    """
    if not isinstance(label_info, list) or not label_info or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in label_info):
        return None
    lower = {name.lower(): code for name, code in names.items()}
    wanted = [lower.get(e["name"].strip().lower()) for e in label_info]
    stated = [e.get("idx", e.get("id")) for e in label_info]
    if any(code is None or code == 0 for code in wanted) or not all(isinstance(i, int) and not isinstance(i, bool) for i in stated):
        return None
    if stated == wanted:
        return None
    present = set(values) - {0}
    by_idx = dict(zip(stated, wanted))
    if len(by_idx) == len(stated) and present <= set(by_idx):
        return by_idx
    return {k + 1: code for k, code in enumerate(wanted)}


def _shown(files: list[Path | None]) -> Path:
    """Of a study's sequence files (None for a missing one), the one shown to the annotator: the FLAIR, else the first present."""
    flair = files[MODALITIES.index("flair")]
    return flair if flair is not None else next(f for f in files if f is not None)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symbolic links resolved, lies in ``root`` (resolved)."""
    return path.resolve().is_relative_to(root.resolve())


@contextmanager
def _spooled(folder: Path, data: bytes, suffix: str) -> Iterator[Path]:
    """``data`` in a temporary file in ``folder`` (named like ``app.io.atomic``'s, so startup cleans it), removed afterwards."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upload.", suffix=f".tmp{suffix}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


class Datastore:
    """Images (BraTS studies) and labels on disk; every write is atomic.

    Args:
        store_dir: writable folder for uploads and labels.
        studies_dir: optional read-only folder of BraTS case folders.
        label_codes: allowed label values (0 is always allowed).
        limits: voxel and decompressed-size budgets of uploads.
        label_names: label name -> code of the served bundles, to read labels that 3D Slicer
            numbered by segment order (:func:`label_info_mapping`); BraTS's by default.

    On start, temporary files that a killed server left in ``images/`` and ``labels/`` (and
    the store's top folder) are removed.

    Example:
        >>> store = Datastore("volseg_store", "BraTS2018/train")  # doctest: +SKIP
        >>> store.stats()["total"]  # doctest: +SKIP
        285
    """

    def __init__(self, store_dir: str | Path, studies_dir: str | Path | None = None, label_codes: set[int] | None = None,
                 limits: UploadLimits | None = None, label_names: dict[str, int] | None = None) -> None:
        if studies_dir and not Path(studies_dir).is_dir():
            raise DatastoreError(f"studies folder '{studies_dir}' does not exist or is not a folder; give a folder of BraTS case folders "
                                 "(<studies>/<case>/<case>_flair.nii.gz, ...)", 404)
        self.store_dir = Path(store_dir).absolute()  # absolute: a training run (another process, another folder) reads these paths
        self.images_dir = self.store_dir / "images"
        self.labels_dir = self.store_dir / "labels"
        self.studies_dir = Path(studies_dir).absolute() if studies_dir else None
        self.label_codes = {0} | set(label_codes or {1, 2, 4})
        self.label_names = dict(label_names or {"NCR/NET": 1, "ED": 2, "ET": 4})
        self.limits = limits or UploadLimits()
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._warned: set[str] = set()
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove temporary files (``.*.tmp*``) of writes that a killed server left behind.

        Only the store's top folder, ``images/`` and ``labels/`` are cleaned; ``train/`` is left
        alone, since a training run of an earlier server may still be writing there.

        Returns:
            The removed files.
        """
        stale = [*self.store_dir.glob(_STALE_TMP), *self.images_dir.rglob(_STALE_TMP), *self.labels_dir.rglob(_STALE_TMP)]
        removed = []
        for path in stale:
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            logger.warning(f"removed {len(removed)} stale temporary file(s) of interrupted writes in '{self.store_dir}'")
        return removed

    def _roots(self) -> list[Path]:
        return [self.images_dir] + ([self.studies_dir] if self.studies_dir and self.studies_dir.is_dir() else [])

    def _case_dir(self, image_id: str) -> Path | None:
        check_id(image_id)
        for root in self._roots():
            folder = root / image_id
            if folder.is_dir() and _inside(folder, root):
                return folder
        return None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)

    def ids(self) -> list[str]:
        """IDs of the studies (any non-empty subset of the four sequences), sorted; folders without a
        sequence and links leaving their root are skipped with a warning."""
        found = set()
        for root in self._roots():
            for folder in root.iterdir():
                if not (folder.is_dir() and _ID.fullmatch(folder.name) and any(folder.glob(f"{folder.name}_*"))):
                    continue
                try:
                    self._checked_files(folder, root)
                except DatastoreError as err:
                    self._warn_once(f"skipping study '{folder.name}': {err}")
                    continue
                found.add(folder.name)
        return sorted(found)

    @staticmethod
    def _checked_files(folder: Path, root: Path) -> list[Path]:
        if not _inside(folder, root):
            raise DatastoreError(f"'{folder}' is a link that leaves '{root}'; it is not served (the server gives out no file outside "
                                 "--studies: copy the case in, or serve the folder the links point into)", 404)
        try:
            files = list(find_case(folder, allow_missing=True).images)
        except FileNotFoundError as err:
            raise DatastoreError(str(err), 422) from err
        outside = [f.name for f in files if f is not None and not _inside(f, root)]
        if outside:
            raise DatastoreError(f"study '{folder.name}': {', '.join(outside)} link(s) outside '{root}'; they are not served (the server gives "
                                 "out no file outside --studies: copy the files in, or serve the folder the links point into)", 422)
        return files

    def studies_hint(self) -> str:
        """Why the studies folder gave no study, for the server's start-up warning."""
        folder = self.studies_dir
        linked = [p.name for p in folder.iterdir() if p.is_dir() and not _inside(p, folder)] if folder.is_dir() else []
        if linked:
            return (f"no study served from '{folder}': its case folder(s) {', '.join(linked[:5])}{' ...' if len(linked) > 5 else ''} link outside it, "
                    "and the server gives out no file outside --studies; copy the cases in, or serve the folder the links point into")
        try:
            find_case(folder, allow_missing=True)
        except FileNotFoundError:
            return (f"no study found in '{folder}': --studies takes a folder of BraTS case folders (<studies>/<case>/<case>_flair.nii.gz, ...); "
                    "Slicer will be offered no sample")
        return f"no study found in '{folder}': it is one case folder; --studies takes the folder that holds the case folders ('{folder.parent}')"

    def modality_files(self, image_id: str) -> list[Path | None]:
        """The T1, T1ce, T2 and FLAIR files of a study, None for a sequence it lacks.

        Raises:
            DatastoreError: 404 for an unknown ID (or a link leaving its root), 422 for a folder
                without any sequence or a file that links outside its root.
        """
        check_id(image_id)
        for root in self._roots():
            if (root / image_id).is_dir():
                return self._checked_files(root / image_id, root)
        raise DatastoreError(f"unknown image '{image_id}'", 404)

    def image_file(self, image_id: str) -> Path:
        """The file shown to the annotator: the FLAIR of the study, or its first sequence without one."""
        return _shown(self.modality_files(image_id))

    def uncertainty_path(self, image_id: str) -> Path:
        """Where the uncertainty map of a study goes: ``<store>/uncertainty/<image_id>.nii.gz``
        (the folder is made; the id is checked in full).

        Raises:
            DatastoreError: an invalid image id.
        """
        check_id(image_id)
        folder = self.store_dir / "uncertainty"
        folder.mkdir(exist_ok=True)
        return folder / f"{image_id}.nii.gz"

    def label_file(self, image_id: str, tag: str = "final") -> Path | None:
        """The stored ``tag`` label of a study, or None."""
        check_id(image_id)
        check_tag(tag)
        for suffix in LABEL_SUFFIXES:
            path = self.labels_dir / tag / f"{image_id}{suffix}"
            if path.is_file():
                return path
        return None

    def _lock(self, image_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(image_id, threading.Lock())

    def add_image(self, image_id: str, filename: str, data: bytes) -> str:
        """Store an uploaded study: a 4D NIfTI with 4 channels (T1, T1ce, T2, FLAIR) on the last axis,
        ``(H, W, D, 4)``, or ITK's vector image layout ``(H, W, D, 1, 4)`` (SimpleITK ``Compose``).
        An all-zero channel is a sequence the study lacks: it is not stored.

        The header is checked (single file, shape, voxel budget) and a ``.nii.gz`` is inflated
        within the byte budget before any voxel is read. Messages name the file by its base name
        (a client sends its own full path).

        Raises:
            DatastoreError: 400 for a bad ID or file, 409 if the ID exists, 413 for a gzip
                stream inflating past the budget, 422 for a volume that is not 4
                co-registered modalities (a 3D volume, zeros only) or declares too many voxels.
        """
        import nibabel as nib

        check_id(image_id)
        filename = Path(filename.replace("\\", "/")).name or "upload.nii.gz"
        with self._lock(image_id):
            if self._case_dir(image_id) is not None:
                raise DatastoreError(f"image '{image_id}' already exists", 409)
            suffix = _suffix(filename)
            if suffix not in (".nii.gz", ".nii"):
                raise DatastoreError(f"upload '{filename}': upload a BraTS study as one 4D NIfTI (.nii.gz) with 4 channels: T1, T1ce, T2, FLAIR")
            if suffix == ".nii.gz":
                check_inflated_size(data, filename, self.limits.max_inflated_bytes)
            shape = nifti_shape(data, filename, suffix)
            check_voxel_budget(shape, filename, self.limits.max_voxels)
            vector = len(shape) == 5 and shape[3] == 1  # ITK's vector layout: the channels on the 5th axis
            if len(shape) == 3:
                raise DatastoreError(f"upload '{filename}' is one 3D volume {shape}; the BraTS models read the four sequences together, so a study "
                                     f"is uploaded as one 4D NIfTI (H, W, D, 4) with channels {', '.join(MODALITIES)} (zeros for a missing one), "
                                     "or placed as a case folder under --studies", 422)
            if not (len(shape) == 4 or vector) or shape[-1] != len(MODALITIES):
                raise DatastoreError(f"upload '{filename}' has shape {shape}; expected (H, W, D, 4) with channels {', '.join(MODALITIES)}", 422)
            with _spooled(self.store_dir, data, suffix) as tmp:
                try:
                    img = nib.load(str(tmp))
                    array = np.asarray(img.dataobj)
                except Exception as err:
                    raise DatastoreError(f"upload '{filename}' is not a readable NIfTI image ({type(err).__name__})", 422) from err
            if vector:
                array = array[..., 0, :]
            if not np.isfinite(array).all():
                raise DatastoreError(f"upload '{filename}' has NaN or infinite voxels", 422)
            present = [c for c in range(len(MODALITIES)) if array[..., c].any()]  # an all-zero channel: a sequence the study lacks
            if not present:
                raise DatastoreError(f"upload '{filename}' holds zeros only; a study needs at least one sequence", 422)
            folder = self.images_dir / image_id
            for c in present:
                atomic_write_nifti(array[..., c], img.affine, folder / f"{image_id}_{MODALITIES[c]}.nii.gz")
        return image_id

    def _check_label(self, image_id: str, filename: str, data: bytes, suffix: str, label_info: Any = None):
        """Header (attached data, voxel budget, size) before voxels; then geometry and exact codes
        (the values of the file, or where ``label_info`` maps them (:func:`label_info_mapping`),
        the values it maps). Returns the label as a SimpleITK image and the mapping or None."""
        import SimpleITK as sitk

        reference = read_image_information(self.image_file(image_id))
        if suffix == ".nii.gz":
            check_inflated_size(data, filename, self.limits.max_inflated_bytes)
        check_attached_data(data, filename, suffix)
        with _spooled(self.store_dir, data, suffix) as tmp:
            reader = read_label_header(tmp, filename, suffix, self.limits.max_voxels)
            if reader.GetSize() != reference.GetSize() or reader.GetNumberOfComponents() != 1:
                raise DatastoreError(f"label size {reader.GetSize()} ({reader.GetNumberOfComponents()} component(s)) differs from image "
                                     f"'{image_id}' size {reference.GetSize()} (1 component)", 422)
            try:
                label = reader.Execute()
            except RuntimeError as err:
                raise DatastoreError(f"label '{filename}' is not a readable image", 422) from err
            if suffix in (".nii.gz", ".nii"):
                check_nifti_finite(tmp, filename)
        differs = [f"{what} {_rounded(mine)} against {_rounded(theirs)}" for what, mine, theirs, tol in (
            ("spacing (mm)", label.GetSpacing(), reference.GetSpacing(), 1e-3), ("origin (mm)", label.GetOrigin(), reference.GetOrigin(), 1e-2),
            ("direction", label.GetDirection(), reference.GetDirection(), 1e-4)) if not np.allclose(mine, theirs, atol=tol)]
        if differs:
            raise DatastoreError(f"label '{filename}' geometry differs from image '{image_id}' ({self.image_file(image_id).name}): "
                                 f"{'; '.join(differs)}; export the label on the study's image", 422)
        codes = exact_label_codes(np.unique(sitk.GetArrayViewFromImage(label)), filename)
        mapping = label_info_mapping(label_info, self.label_names, codes)
        if mapping is not None:
            unknown = sorted(codes - {0} - set(mapping))
            if unknown:
                raise DatastoreError(f"label '{filename}' has values {unknown} that none of the {len(mapping)} segment(s) of its label_info "
                                     f"takes (the values {sorted(mapping)})", 422)
            return label, mapping
        unknown = sorted(codes - self.label_codes)
        if unknown:
            raise DatastoreError(f"label values {unknown} are not label codes of this server ({sorted(self.label_codes)})", 422)
        return label, None

    def save_label(self, image_id: str, filename: str, data: bytes, tag: str = "final", info: dict[str, Any] | None = None) -> Path:
        """Check and store a label: same geometry as the study's image, values in the known codes.

        A label exported by 3D Slicer's MONAI Label module numbers its segments 1, 2, 3, ... in
        the order of ``info["params"]["label_info"]`` (``[{"name": "ET", "idx": 3}, ...]``), not by
        the model's codes (ET is 4). Where every name there is a label name of the served bundles
        and the ``idx`` values are not already those codes, the values are read as
        :func:`label_info_mapping` says and stored as the bundles' codes (``"remapped"`` in the
        label's info records it).

        The new label is written to a temporary file and renamed over the target
        (``os.replace``); a label of the same study and tag with another ending is removed only
        after that, so a crash leaves the old label or the new one, never none. Replacements of
        one study are serialised, so two concurrent uploads never leave two labels.

        Raises:
            DatastoreError: 404 unknown image, 400 bad tag or file type, 413 a gzip stream
                inflating past the budget, 422 unreadable label, a header pointing at another
                file, too many voxels, wrong geometry, non-integer or unknown label values.
        """
        import SimpleITK as sitk

        check_id(image_id)
        check_tag(tag)
        filename = Path(filename.replace("\\", "/")).name or "label.nii.gz"
        suffix = _suffix(filename)
        params = (info or {}).get("params")
        label, mapping = self._check_label(image_id, filename, data, suffix, params.get("label_info") if isinstance(params, dict) else None)
        out = self.labels_dir / tag / f"{image_id}{suffix}"
        meta = {"ts": int(time.time()), "name": filename, **(info or {}), **({"remapped": {str(k): v for k, v in mapping.items()}} if mapping else {})}
        with self._lock(image_id):
            if mapping:
                values = sitk.GetArrayFromImage(label)
                codes = np.zeros(values.shape, np.uint8)
                for value, code in mapping.items():
                    codes[values == value] = code
                remapped = sitk.GetImageFromArray(codes)
                remapped.CopyInformation(label)
                atomic_write(out, lambda t: sitk.WriteImage(remapped, t, True), suffix=suffix)
            else:
                atomic_write(out, lambda t: Path(t).write_bytes(data), suffix=suffix)
            for other in LABEL_SUFFIXES:
                if other != suffix:
                    (self.labels_dir / tag / f"{image_id}{other}").unlink(missing_ok=True)
            atomic_write(out.with_name(f"{image_id}.{tag}.json"), lambda t: Path(t).write_text(json.dumps(meta)))
        return out

    def _label_info(self, image_id: str, tag: str) -> dict[str, Any]:
        meta = self.labels_dir / tag / f"{image_id}.{tag}.json"
        return json.loads(meta.read_text()) if meta.is_file() else {}

    def tags(self) -> list[str]:
        """Label tags present in the store (folders of ``labels/`` with a valid tag name)."""
        return sorted(p.name for p in self.labels_dir.iterdir() if p.is_dir() and _TAG.fullmatch(p.name))

    def _describe_one(self, image_id: str) -> dict[str, Any]:
        files = self.modality_files(image_id)
        image = _shown(files)
        labels = {}
        for tag in self.tags():
            path = self.label_file(image_id, tag)
            if path is not None:
                labels[tag] = {"ext": _suffix(path.name), "info": self._label_info(image_id, tag)}
        info = {"name": image.name, "modalities": [m for m, f in zip(MODALITIES, files) if f is not None],
                "missing_sequences": [m for m, f in zip(MODALITIES, files) if f is None]}
        return {"image": {"ext": _suffix(image.name), "info": info}, "labels": labels}

    def describe(self) -> dict[str, Any]:
        """The ``/datastore/?output=all`` answer, in MONAI Label's shape; a bad study is skipped with a warning."""
        objects: dict[str, Any] = {}
        for image_id in self.ids():
            try:
                objects[image_id] = self._describe_one(image_id)
            except (DatastoreError, OSError, ValueError) as err:
                self._warn_once(f"skipping study '{image_id}': {err}")
        return {"name": "VolSeg datastore", "description": "BraTS studies (T1, T1ce, T2, FLAIR) and submitted labels",
                "images_dir": str(self.images_dir), "labels_dir": str(self.labels_dir), "objects": objects}

    def stats(self) -> dict[str, Any]:
        """``{"total", "completed", "label_tags"}``: study count, studies with a final label, label count per tag."""
        ids = self.ids()
        tags = {tag: sum(self.label_file(i, tag) is not None for i in ids) for tag in self.tags()}
        return {"total": len(ids), "completed": tags.get("final", 0), "label_tags": tags}

    def training_items(self, tag: str = "final") -> list[dict[str, Any]]:
        """``[{"case_id", "image": [4 absolute paths], "label": absolute path}]`` for every study with
        a ``tag`` label and all four sequences; a labelled study that lacks one is left out with a warning."""
        items = []
        for image_id in self.ids():
            label = self.label_file(image_id, tag)
            if label is None:
                continue
            try:
                files = self.modality_files(image_id)
            except DatastoreError as err:
                self._warn_once(f"skipping study '{image_id}': {err}")
                continue
            missing = [m for m, f in zip(MODALITIES, files) if f is None]
            if missing:
                self._warn_once(f"study '{image_id}' is not trained on: it lacks {', '.join(missing)} (training needs all four sequences)")
                continue
            items.append({"case_id": image_id, "image": [str(p) for p in files], "label": str(label)})
        return items

    def unlabeled(self) -> list[str]:
        """IDs of the studies without a ``final`` label, sorted."""
        return [i for i in self.ids() if self.label_file(i, "final") is None]
