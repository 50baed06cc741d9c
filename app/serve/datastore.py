"""On-disk datastore of BraTS studies and submitted labels for ``volseg serve``.

A study (image ID) is a BraTS case: four co-registered modalities T1, T1ce, T2, FLAIR. Studies
come from a read-only folder of case folders (``--studies``) or are uploaded as one 4D NIfTI
with 4 channels in that order, which is split into a case folder under ``<store>/images/``.
The FLAIR is the image shown to the annotator; labels are stored under
``<store>/labels/<tag>/<id>.<ext>`` after checks of geometry and label codes.

Nothing is served from outside the two roots: a symbolic link in ``--studies`` that resolves
outside it is ignored, and an incomplete study is skipped with a logged warning.
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

__all__ = ["LABEL_SUFFIXES", "Datastore", "DatastoreError", "check_id", "check_tag"]


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

    On start, temporary files that a killed server left in ``images/`` and ``labels/`` (and
    the store's top folder) are removed.

    Example:
        >>> store = Datastore("volseg_store", "BraTS2018/train")  # doctest: +SKIP
        >>> store.stats()["total"]  # doctest: +SKIP
        285
    """

    def __init__(self, store_dir: str | Path, studies_dir: str | Path | None = None, label_codes: set[int] | None = None,
                 limits: UploadLimits | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.images_dir = self.store_dir / "images"
        self.labels_dir = self.store_dir / "labels"
        self.studies_dir = Path(studies_dir) if studies_dir else None
        self.label_codes = {0} | set(label_codes or {1, 2, 4})
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
        """IDs of the complete studies, sorted; incomplete ones and links leaving their root are skipped with a warning."""
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
            raise DatastoreError(f"'{folder}' is a link that leaves '{root}'; it is not served", 404)
        try:
            files = list(find_case(folder).images)
        except FileNotFoundError as err:
            raise DatastoreError(str(err), 422) from err
        outside = [f.name for f in files if not _inside(f, root)]
        if outside:
            raise DatastoreError(f"study '{folder.name}': {', '.join(outside)} link(s) outside '{root}'; they are not served", 422)
        return files

    def modality_files(self, image_id: str) -> list[Path]:
        """The T1, T1ce, T2 and FLAIR files of a study.

        Raises:
            DatastoreError: 404 for an unknown ID (or a link leaving its root), 422 for an
                incomplete study or a file that links outside its root.
        """
        check_id(image_id)
        for root in self._roots():
            if (root / image_id).is_dir():
                return self._checked_files(root / image_id, root)
        raise DatastoreError(f"unknown image '{image_id}'", 404)

    def image_file(self, image_id: str) -> Path:
        """The file shown to the annotator: the FLAIR of the study."""
        return self.modality_files(image_id)[MODALITIES.index("flair")]

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
        """Store an uploaded study: a 4D NIfTI with 4 channels (T1, T1ce, T2, FLAIR) on the last axis.

        The header is checked (single file, shape, voxel budget) and a ``.nii.gz`` is inflated
        within the byte budget before any voxel is read.

        Raises:
            DatastoreError: 400 for a bad ID or file, 409 if the ID exists, 413 for a gzip
                stream inflating past the budget, 422 for a volume that is not 4
                co-registered modalities or declares too many voxels.
        """
        import nibabel as nib

        check_id(image_id)
        with self._lock(image_id):
            if self._case_dir(image_id) is not None:
                raise DatastoreError(f"image '{image_id}' already exists", 409)
            suffix = _suffix(filename)
            if suffix not in (".nii.gz", ".nii"):
                raise DatastoreError("upload a BraTS study as one 4D NIfTI (.nii.gz) with 4 channels: T1, T1ce, T2, FLAIR")
            if suffix == ".nii.gz":
                check_inflated_size(data, filename, self.limits.max_inflated_bytes)
            shape = nifti_shape(data, filename, suffix)
            check_voxel_budget(shape, filename, self.limits.max_voxels)
            if len(shape) != 4 or shape[3] != len(MODALITIES):
                raise DatastoreError(f"upload '{filename}' has shape {shape}; expected (H, W, D, 4) with channels {', '.join(MODALITIES)}", 422)
            with _spooled(self.store_dir, data, suffix) as tmp:
                try:
                    img = nib.load(str(tmp))
                    array = np.asarray(img.dataobj)
                except Exception as err:
                    raise DatastoreError(f"upload '{filename}' is not a readable NIfTI image ({type(err).__name__})", 422) from err
            if not np.isfinite(array).all():
                raise DatastoreError(f"upload '{filename}' has NaN or infinite voxels", 422)
            folder = self.images_dir / image_id
            for c, modality in enumerate(MODALITIES):
                atomic_write_nifti(array[..., c], img.affine, folder / f"{image_id}_{modality}.nii.gz")
        return image_id

    def _check_label(self, image_id: str, filename: str, data: bytes, suffix: str) -> None:
        """Header (attached data, voxel budget, size) before voxels; then geometry and exact codes."""
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
        if not (np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-3) and np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-2)
                and np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-4)):
            raise DatastoreError(f"label geometry (spacing, origin or direction) differs from image '{image_id}'", 422)
        codes = exact_label_codes(np.unique(sitk.GetArrayViewFromImage(label)), filename)
        unknown = sorted(codes - self.label_codes)
        if unknown:
            raise DatastoreError(f"label values {unknown} are not label codes of this server ({sorted(self.label_codes)})", 422)

    def save_label(self, image_id: str, filename: str, data: bytes, tag: str = "final", info: dict[str, Any] | None = None) -> Path:
        """Check and store a label: same geometry as the study's image, values in the known codes.

        The new label is written to a temporary file and renamed over the target
        (``os.replace``); a label of the same study and tag with another ending is removed only
        after that, so a crash leaves the old label or the new one, never none. Replacements of
        one study are serialised, so two concurrent uploads never leave two labels.

        Raises:
            DatastoreError: 404 unknown image, 400 bad tag or file type, 413 a gzip stream
                inflating past the budget, 422 unreadable label, a header pointing at another
                file, too many voxels, wrong geometry, non-integer or unknown label values.
        """
        check_id(image_id)
        check_tag(tag)
        suffix = _suffix(filename)
        self._check_label(image_id, filename, data, suffix)
        out = self.labels_dir / tag / f"{image_id}{suffix}"
        with self._lock(image_id):
            atomic_write(out, lambda t: Path(t).write_bytes(data), suffix=suffix)
            for other in LABEL_SUFFIXES:
                if other != suffix:
                    (self.labels_dir / tag / f"{image_id}{other}").unlink(missing_ok=True)
            meta = {"ts": int(time.time()), "name": filename, **(info or {})}
            atomic_write(out.with_name(f"{image_id}.{tag}.json"), lambda t: Path(t).write_text(json.dumps(meta)))
        return out

    def _label_info(self, image_id: str, tag: str) -> dict[str, Any]:
        meta = self.labels_dir / tag / f"{image_id}.{tag}.json"
        return json.loads(meta.read_text()) if meta.is_file() else {}

    def tags(self) -> list[str]:
        """Label tags present in the store (folders of ``labels/`` with a valid tag name)."""
        return sorted(p.name for p in self.labels_dir.iterdir() if p.is_dir() and _TAG.fullmatch(p.name))

    def _describe_one(self, image_id: str) -> dict[str, Any]:
        image = self.image_file(image_id)
        labels = {}
        for tag in self.tags():
            path = self.label_file(image_id, tag)
            if path is not None:
                labels[tag] = {"ext": _suffix(path.name), "info": self._label_info(image_id, tag)}
        return {"image": {"ext": _suffix(image.name), "info": {"name": image.name, "modalities": list(MODALITIES)}}, "labels": labels}

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
        """``[{"case_id", "image": [4 paths], "label": path}]`` for every study with a ``tag`` label."""
        items = []
        for image_id in self.ids():
            label = self.label_file(image_id, tag)
            if label is None:
                continue
            try:
                items.append({"case_id": image_id, "image": [str(p) for p in self.modality_files(image_id)], "label": str(label)})
            except DatastoreError as err:
                self._warn_once(f"skipping study '{image_id}': {err}")
        return items

    def unlabeled(self) -> list[str]:
        """IDs of the studies without a ``final`` label, sorted."""
        return [i for i in self.ids() if self.label_file(i, "final") is None]
