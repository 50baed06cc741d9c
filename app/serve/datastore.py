"""On-disk datastore of BraTS studies and submitted labels for ``volseg serve``.

A study (image ID) is a BraTS case: four co-registered modalities T1, T1ce, T2, FLAIR. Studies
come from a read-only folder of case folders (``--studies``) or are uploaded as one 4D NIfTI
with 4 channels in that order, which is split into a case folder under ``<store>/images/``.
The FLAIR is the image shown to the annotator; labels are stored under
``<store>/labels/<tag>/<id>.<ext>`` after checks of geometry and label codes.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.constants import MODALITIES
from app.data.cases import find_case
from app.io.atomic import atomic_write, atomic_write_nifti
from app.io.readers import read_image_information

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
LABEL_SUFFIXES = (".nii.gz", ".nrrd", ".nii", ".mha")


class DatastoreError(ValueError):
    """A request the datastore refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_id(value: str, what: str = "image") -> str:
    """Validate an image ID: letters, digits, ``.``, ``_``, ``-``; no path parts, no ``..``.

    Raises:
        DatastoreError: 400 for anything else (path traversal, absolute paths, empty).
    """
    if not value or not _ID.match(value) or ".." in value:
        raise DatastoreError(f"invalid {what} id '{value}': use letters, digits, '.', '_' and '-' only (no paths)")
    return value


def _suffix(filename: str) -> str:
    name = filename.lower()
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DatastoreError(f"unsupported file type '{filename}': expected one of {', '.join(LABEL_SUFFIXES)}")


class Datastore:
    """Images (BraTS studies) and labels on disk; every write is atomic.

    Args:
        store_dir: writable folder for uploads and labels.
        studies_dir: optional read-only folder of BraTS case folders.
        label_codes: allowed label values (0 is always allowed).
    """

    def __init__(self, store_dir: str | Path, studies_dir: str | Path | None = None, label_codes: set[int] | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.images_dir = self.store_dir / "images"
        self.labels_dir = self.store_dir / "labels"
        self.studies_dir = Path(studies_dir) if studies_dir else None
        self.label_codes = {0} | set(label_codes or {1, 2, 4})
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.labels_dir.mkdir(parents=True, exist_ok=True)

    def _case_dir(self, image_id: str) -> Path | None:
        check_id(image_id)
        for root in (self.images_dir, self.studies_dir):
            if root is not None and (root / image_id).is_dir():
                return root / image_id
        return None

    def ids(self) -> list[str]:
        """All image IDs, sorted."""
        roots = [self.images_dir] + ([self.studies_dir] if self.studies_dir and self.studies_dir.is_dir() else [])
        found = {p.name for root in roots for p in root.iterdir() if p.is_dir() and _ID.match(p.name) and any(p.glob(f"{p.name}_flair.*"))}
        return sorted(found)

    def modality_files(self, image_id: str) -> list[Path]:
        """The T1, T1ce, T2 and FLAIR files of a study.

        Raises:
            DatastoreError: 404 for an unknown ID, 422 for an incomplete study.
        """
        folder = self._case_dir(image_id)
        if folder is None:
            raise DatastoreError(f"unknown image '{image_id}'", 404)
        try:
            return list(find_case(folder).images)
        except FileNotFoundError as err:
            raise DatastoreError(str(err), 422) from err

    def image_file(self, image_id: str) -> Path:
        """The file shown to the annotator: the FLAIR of the study."""
        return self.modality_files(image_id)[MODALITIES.index("flair")]

    def label_file(self, image_id: str, tag: str = "final") -> Path | None:
        check_id(image_id)
        if not _TAG.match(tag):
            raise DatastoreError(f"invalid label tag '{tag}'")
        for suffix in LABEL_SUFFIXES:
            path = self.labels_dir / tag / f"{image_id}{suffix}"
            if path.is_file():
                return path
        return None

    def add_image(self, image_id: str, filename: str, data: bytes) -> str:
        """Store an uploaded study: a 4D NIfTI with 4 channels (T1, T1ce, T2, FLAIR) on the last axis.

        Raises:
            DatastoreError: 400 for a bad ID or file, 409 if the ID exists, 422 for a volume
                that is not 4 co-registered modalities.
        """
        import nibabel as nib

        check_id(image_id)
        if self._case_dir(image_id) is not None:
            raise DatastoreError(f"image '{image_id}' already exists", 409)
        if _suffix(filename) not in (".nii.gz", ".nii"):
            raise DatastoreError("upload a BraTS study as one 4D NIfTI (.nii.gz) with 4 channels: T1, T1ce, T2, FLAIR")
        tmp = self.store_dir / f".upload-{time.time_ns()}{_suffix(filename)}"
        try:
            tmp.write_bytes(data)
            img = nib.load(str(tmp))
            array = np.asarray(img.dataobj)
        except Exception as err:
            raise DatastoreError(f"upload '{filename}' is not a readable NIfTI image ({type(err).__name__})") from err
        finally:
            tmp.unlink(missing_ok=True)
        if array.ndim != 4 or array.shape[3] != len(MODALITIES):
            raise DatastoreError(f"upload '{filename}' has shape {array.shape}; expected (H, W, D, 4) with channels {', '.join(MODALITIES)}", 422)
        if not np.isfinite(array).all():
            raise DatastoreError(f"upload '{filename}' has NaN or infinite voxels", 422)
        folder = self.images_dir / image_id
        for c, modality in enumerate(MODALITIES):
            atomic_write_nifti(array[..., c], img.affine, folder / f"{image_id}_{modality}.nii.gz")
        return image_id

    def save_label(self, image_id: str, filename: str, data: bytes, tag: str = "final", info: dict[str, Any] | None = None) -> Path:
        """Check and store a label: same geometry as the study's image, values in the known codes.

        Raises:
            DatastoreError: 404 unknown image, 400 bad tag or file type, 422 unreadable label,
                wrong geometry or unknown label values.
        """
        import SimpleITK as sitk

        reference_path = self.image_file(image_id)
        if not _TAG.match(tag):
            raise DatastoreError(f"invalid label tag '{tag}'")
        suffix = _suffix(filename)
        tmp = self.store_dir / f".label-{time.time_ns()}{suffix}"
        try:
            tmp.write_bytes(data)
            label = sitk.ReadImage(str(tmp))
        except RuntimeError as err:
            raise DatastoreError(f"label '{filename}' is not a readable image", 422) from err
        finally:
            tmp.unlink(missing_ok=True)
        reader = read_image_information(reference_path)
        if label.GetSize() != reader.GetSize():
            raise DatastoreError(f"label size {label.GetSize()} differs from image '{image_id}' size {reader.GetSize()}", 422)
        if not (np.allclose(label.GetSpacing(), reader.GetSpacing(), atol=1e-3) and np.allclose(label.GetOrigin(), reader.GetOrigin(), atol=1e-2)
                and np.allclose(label.GetDirection(), reader.GetDirection(), atol=1e-4)):
            raise DatastoreError(f"label geometry (spacing, origin or direction) differs from image '{image_id}'", 422)
        values = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(label))}
        unknown = sorted(values - self.label_codes)
        if unknown:
            raise DatastoreError(f"label values {unknown} are not label codes of this server ({sorted(self.label_codes)})", 422)
        out = self.labels_dir / tag / f"{image_id}{suffix}"
        for old in LABEL_SUFFIXES:
            stale = self.labels_dir / tag / f"{image_id}{old}"
            if old != suffix and stale.is_file():
                stale.unlink()
        atomic_write(out, lambda t: Path(t).write_bytes(data), suffix=suffix)
        meta = {"ts": int(time.time()), "name": filename, **(info or {})}
        atomic_write(out.with_name(f"{image_id}.{tag}.json"), lambda t: Path(t).write_text(json.dumps(meta)))
        return out

    def _label_info(self, image_id: str, tag: str) -> dict[str, Any]:
        meta = self.labels_dir / tag / f"{image_id}.{tag}.json"
        return json.loads(meta.read_text()) if meta.is_file() else {}

    def tags(self) -> list[str]:
        return sorted(p.name for p in self.labels_dir.iterdir() if p.is_dir())

    def describe(self) -> dict[str, Any]:
        """The ``/datastore/?output=all`` answer, in MONAI Label's shape."""
        objects: dict[str, Any] = {}
        for image_id in self.ids():
            image = self.image_file(image_id)
            labels = {}
            for tag in self.tags():
                path = self.label_file(image_id, tag)
                if path is not None:
                    labels[tag] = {"ext": _suffix(path.name), "info": self._label_info(image_id, tag)}
            objects[image_id] = {"image": {"ext": _suffix(image.name), "info": {"name": image.name, "modalities": list(MODALITIES)}}, "labels": labels}
        return {"name": "VolSeg datastore", "description": "BraTS studies (T1, T1ce, T2, FLAIR) and submitted labels",
                "images_dir": str(self.images_dir), "labels_dir": str(self.labels_dir), "objects": objects}

    def stats(self) -> dict[str, Any]:
        ids = self.ids()
        tags = {tag: sum(self.label_file(i, tag) is not None for i in ids) for tag in self.tags()}
        return {"total": len(ids), "completed": tags.get("final", 0), "label_tags": tags}

    def training_items(self, tag: str = "final") -> list[dict[str, Any]]:
        """``[{"case_id", "image": [4 paths], "label": path}]`` for every study with a ``tag`` label."""
        items = []
        for image_id in self.ids():
            label = self.label_file(image_id, tag)
            if label is not None:
                items.append({"case_id": image_id, "image": [str(p) for p in self.modality_files(image_id)], "label": str(label)})
        return items

    def unlabeled(self) -> list[str]:
        return [i for i in self.ids() if self.label_file(i, "final") is None]
