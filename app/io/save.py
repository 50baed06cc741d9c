"""Saving label maps in the exact geometry of their input, atomically."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from app.io.atomic import atomic_write_nifti


def save_label_map(label: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """Write a label map with the shape, affine and header of ``reference``, atomically.

    Args:
        label: ``(H, W, D)`` integer array (uint8 for BraTS codes 0/1/2/4).
        reference: the input image whose geometry the output must carry.
        path: output ``.nii.gz`` path.

    Raises:
        ValueError: ``label``'s shape differs from the reference's.
    """
    import nibabel as nib

    ref = nib.load(str(reference))
    if tuple(label.shape) != tuple(ref.shape[:3]):
        raise ValueError(f"label shape {tuple(label.shape)} differs from '{reference}' shape {tuple(ref.shape[:3])}")
    header = ref.header.copy()
    return atomic_write_nifti(np.asarray(label, dtype=np.uint8), ref.affine, path, header=header)


class SaveLabelMapd(MapTransform):
    """Save a ``(1, H, W, D)`` label map as ``<output_dir>/<case_id>_seg.<ext>``, atomically,
    in the geometry and format of the input's first file (its ``filename_or_obj`` metadata;
    NIfTI for a DICOM series).

    Used as the last step of the bundle's inference workflow; ``monai.transforms.SaveImaged``
    writes in place, which can leave a half-written file after a crash.

    Args:
        keys: the label key (``"pred"``).
        output_dir: output folder, created if needed.
        meta_key: key whose metadata holds the source file name (``"image"``).
        postfix: appended to the case ID.
    """

    def __init__(self, keys: KeysCollection, output_dir: str | Path, meta_key: str = "image", postfix: str = "seg") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.meta_key = meta_key
        self.postfix = postfix

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        from app.inference.segmenter import case_id_from_path

        d = dict(data)
        source = d[self.meta_key].meta["filename_or_obj"]
        source = source[0] if isinstance(source, (list, tuple)) else source
        for key in self.key_iterator(d):
            label = np.asarray(d[key].detach().cpu().numpy() if hasattr(d[key], "detach") else d[key])[0]
            from app.io.writers import output_suffix, write_label_like

            write_label_like(label, source, self.output_dir / f"{case_id_from_path(source)}_{self.postfix}{output_suffix(source)}")
        return d
