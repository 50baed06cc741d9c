"""Write each case's label map, named by case, in its input's geometry and format, atomically:
the last step of the bundles' inference workflow."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from app.data.cases import case_id_from_path, split_sequence_name
from app.io.writers import output_suffix, write_label_like

__all__ = ["SaveLabelMapd"]

logger = logging.getLogger(__name__)


class SaveLabelMapd(MapTransform):
    """Save a ``(1, H, W, D)`` label map as ``<output_dir>/<case_id>_seg.<ext>``, atomically,
    in the geometry and format of the input's first file (its ``filename_or_obj`` metadata;
    NIfTI for a DICOM series). The case ID is the item's ``case_id`` where the datalist gives one;
    a second case of one run with the same ID is written under its folder's name too
    (``<folder>_<case_id>_seg``), with a warning, never over the first.

    Raises:
        ValueError: a label that cannot be the input's label map: more than one channel, values
            that are no integer codes 0-255, or a shape or affine other than the input's.

    Used as the last step of the bundle's inference workflow; ``monai.transforms.SaveImaged``
    writes in place, which can leave a half-written file after a crash. The case ID comes from
    the file name (:func:`app.data.cases.case_id_from_path`), the writing from
    :func:`app.io.writers.write_label_like`.

    Args:
        keys: the label key (``"pred"``).
        output_dir: output folder, created if needed.
        meta_key: key whose metadata holds the source file name (``"image"``).
        postfix: appended to the case ID.

    Example:
        In a bundle config: ``{_target_: app.transforms.SaveLabelMapd, keys: pred, output_dir: "@output_dir"}``.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | Path, meta_key: str = "image", postfix: str = "seg") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.meta_key = meta_key
        self.postfix = postfix
        self._written: dict[Path, str] = {}  # label file -> the source it was written from, in this run

    def case_id(self, data: Mapping[Hashable, object], source: str) -> str:
        """The item's ``case_id`` (datalists carry one), else the one its file name gives; a bare
        sequence name (``caseA/t1.nii.gz``) gives its folder's name."""
        given = data.get("case_id")
        given = given[0] if isinstance(given, (list, tuple)) and given else given
        if isinstance(given, str) and given:
            return given
        parsed = split_sequence_name(source)
        return Path(source).parent.name if parsed is not None and not parsed[0] else case_id_from_path(source)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        source = d[self.meta_key].meta["filename_or_obj"]
        source = str(source[0] if isinstance(source, (list, tuple)) else source)
        name = self.case_id(d, source)
        out = self.output_dir / f"{name}_{self.postfix}{output_suffix(source)}"
        if self._written.get(out, source) != source:  # two cases with one name (two series folders named "CT"): keep both
            folder = next((q.name for q in Path(source).parents if q.name and q.name != name), "case")  # patB/CT -> patB
            out = self.output_dir / f"{folder}_{name}_{self.postfix}{output_suffix(source)}"
            n = 2
            while self._written.get(out, source) != source:
                out, n = self.output_dir / f"{name}_{n}_{self.postfix}{output_suffix(source)}", n + 1
            logger.warning(f"'{source}': case ID '{name}' is another case's in this run ({self._written[self.output_dir / f'{name}_{self.postfix}{output_suffix(source)}']}); "
                           f"its label map is {out.name}")
        self._written[out] = source
        for key in self.key_iterator(d):
            write_label_like(self._checked_label(d[key], key, source, d[self.meta_key].meta), source, out)
        return d

    @staticmethod
    def _checked_label(pred: object, key: Hashable, source: str, meta: Mapping) -> np.ndarray:
        """``(H, W, D)`` integer label of ``pred`` ``(1, H, W, D)``, refused where it cannot be the
        label map of ``source``: more than one channel, values that are not label codes 0-255
        (probabilities), or a grid other than the source's (its affine, where ``pred`` carries
        one: a pipeline that did not invert its spatial transforms would write a mirrored label).
        The source's grid is the reader's ``spatial_shape`` and ``original_affine`` in ``meta``
        (the input image's metadata), read from its header only where those are absent."""
        array = np.asarray(pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred)
        if array.ndim != 4 or array.shape[0] != 1:
            raise ValueError(f"'{key}' of '{source}': a label map is (1, H, W, D), got shape {tuple(array.shape)}; "
                             "turn probabilities or one-hot channels into codes first (e.g. AsDiscreted(argmax=True))")
        if array.size and (not np.array_equal(array, np.round(array)) or array.min() < 0 or array.max() > 255):
            raise ValueError(f"'{key}' of '{source}': values {float(array.min()):g} to {float(array.max()):g} are no label codes "
                             "(integers 0-255); threshold or argmax the network's output first")
        if meta.get("spatial_shape") is not None and meta.get("original_affine") is not None:
            shape, affine = tuple(int(n) for n in np.asarray(meta["spatial_shape"]).ravel()), np.asarray(meta["original_affine"], dtype=np.float64)
        else:
            from app.data.verify import read_geometry

            shape, affine = read_geometry(source)
        if tuple(array.shape[1:4]) != tuple(shape[:3]):
            raise ValueError(f"'{key}' of '{source}': shape {tuple(array.shape[1:])} is not the input's {tuple(shape[:3])}; "
                             "invert the spatial transforms first (Invertd)")
        own = getattr(pred, "affine", None)
        if own is not None and not np.allclose(np.asarray(own, dtype=np.float64), affine, atol=1e-3):
            raise ValueError(f"'{key}' of '{source}': its affine is not the input's (max difference "
                             f"{np.abs(np.asarray(own, dtype=np.float64) - affine).max():.3g}): it lies on another grid or axis order; "
                             "invert the spatial transforms first (Invertd), else the label map would be written mirrored")
        return array[0].astype(np.uint8)
