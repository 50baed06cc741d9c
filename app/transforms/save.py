"""Write each case's label map, named by case, in its input's geometry and format, atomically:
the last step of the bundles' inference workflow."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from app.data.cases import case_id_from_path
from app.io.writers import output_suffix, write_label_like

__all__ = ["SaveLabelMapd"]


class SaveLabelMapd(MapTransform):
    """Save a ``(1, H, W, D)`` label map as ``<output_dir>/<case_id>_seg.<ext>``, atomically,
    in the geometry and format of the input's first file (its ``filename_or_obj`` metadata;
    NIfTI for a DICOM series).

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

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        source = d[self.meta_key].meta["filename_or_obj"]
        source = source[0] if isinstance(source, (list, tuple)) else source
        for key in self.key_iterator(d):
            label = np.asarray(d[key].detach().cpu().numpy() if hasattr(d[key], "detach") else d[key])[0]
            write_label_like(label, source, self.output_dir / f"{case_id_from_path(source)}_{self.postfix}{output_suffix(source)}")
        return d
