"""Warnings for input that is not a brain MRI at all: too little tissue for a brain, or a label map.

The BraTS models segment whatever they are given. A spinal-cord MRI passed as FLAIR (169 mL of
non-zero voxels) came back with 63 mL of "whole tumour" and an expected Dice of 0.85, and a
BraTS label map passed as FLAIR with 53 mL; only the skull-stripping warning hinted at a problem.
Two cheap facts tell such input apart from the 15 shared BraTS cases:

- non-zero tissue: 1,084-1,729 mL in those cases (a skull-stripped adult brain); under 250 mL in
  the shared spinal-cord MRI, 80 mL in a BraTS label map. Under ``min_volume_ml`` (500) warns.
- distinct values of a sequence, on every 4th voxel: 291 or more in those cases; 4 in a label
  map. ``max_label_values`` (16) or fewer warns.

Like :class:`app.transforms.CheckSkullStripped`, the image is returned unchanged and the warning
is logged and kept under ``"input_warnings"`` in its metadata, which ``volseg segment`` prints and
keeps in ``volseg_run.json`` and ``volseg serve`` returns to 3D Slicer.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from app.transforms.skull import WARNINGS_KEY, channel_names

logger = logging.getLogger(__name__)

__all__ = ["CT_AIR_HU", "CheckBrainMRI", "CheckBrainMRId", "tissue_volume_ml"]

#: A channel with 1 % or more of its voxels at or below this value is taken for CT in Hounsfield units.
CT_AIR_HU = -500.0


def tissue_volume_ml(img: torch.Tensor | np.ndarray, affine: np.ndarray | torch.Tensor | None, stride: int = 4) -> float:
    """Volume in mL of the voxels that are non-zero in any channel of ``(C, H, W, D)`` ``img``,
    counted on every ``stride``-th voxel along each axis (at 4, within 0.2 % of the full count on
    Brats18_CBICA_AME_1); the voxel volume (mm^3) is the absolute determinant of ``affine``'s 3x3
    part (1 mm^3 where ``affine`` is None)."""
    data = np.asarray(img.as_tensor() if hasattr(img, "as_tensor") else img)  # a plain view: no MetaTensor overhead
    sample = data[(slice(None),) + (slice(None, None, stride),) * 3]
    count = int(np.count_nonzero(np.any(sample != 0, axis=0))) * stride ** 3
    voxel_mm3 = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) if affine is not None else 1.0
    return count * voxel_mm3 / 1000.0


class CheckBrainMRI(Transform):
    """Warn where ``(C, H, W, D)`` input does not look like a brain MRI: less non-zero tissue than
    ``min_volume_ml``, a channel with at most ``max_label_values`` distinct values (a label map),
    or a channel with at least 1 % of its voxels at or below :data:`CT_AIR_HU` (a CT in Hounsfield
    units: MRI intensities are not negative, and a z-scored MRI stays within tens).

    Channels that a case lacks (``"missing_channels"`` in the metadata) are left out. The voxel
    volume comes from the MetaTensor's affine, read before any resampling.

    Args:
        min_volume_ml: warn below this non-zero volume in mL; 0 turns that check off.
        max_label_values: warn where a channel has this many distinct values or fewer; 0 turns
            that check off.

    Raises:
        ValueError: a negative threshold.

    Example:
        >>> CheckBrainMRI()(torch.ones(1, 8, 8, 8)).shape  # 0.5 mL of one value: two warnings, logged
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, min_volume_ml: float = 500.0, max_label_values: int = 16) -> None:
        if min_volume_ml < 0 or max_label_values < 0:
            raise ValueError(f"thresholds must be >= 0, got min_volume_ml={min_volume_ml}, max_label_values={max_label_values}")
        self.min_volume_ml, self.max_label_values = float(min_volume_ml), int(max_label_values)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        meta = getattr(img, "meta", None)
        meta = meta if isinstance(meta, dict) else {}
        absent = set(meta.get("missing_channels", []))
        present = [c for c in range(img.shape[0]) if c not in absent]
        files = meta.get("channel_files") if meta.get("channel_files") and len(meta["channel_files"]) == img.shape[0] else None
        messages = []
        data = np.asarray(img.as_tensor() if hasattr(img, "as_tensor") else img)  # numpy: torch.unique's sort is 30x slower here
        sample = data[(slice(None),) + (slice(None, None, 4),) * 3][present]  # every 4th voxel first: no copy of the volume
        if self.min_volume_ml > 0 and present:
            volume = tissue_volume_ml(sample, getattr(img, "affine", None), stride=1) * 64
            if volume < self.min_volume_ml:
                names = ", ".join(channel_names(present, files, meta.get("filename_or_obj")))
                messages.append(f"{names}: {volume:.0f} mL of non-zero voxels, too little for a brain (skull-stripped adult brains in BraTS: "
                                f"about 1,100-1,700 mL; warned under {self.min_volume_ml:.0f} mL). The BraTS models segment brain MRI; "
                                "on another body part or a thin slab their labels are meaningless")
        if self.max_label_values > 0:
            values = {c: np.unique(sample[i]).size for i, c in enumerate(present)}
            few = [c for c in present if values[c] <= self.max_label_values]
            if few:
                counts = sorted({values[c] for c in few})
                messages.append(f"{', '.join(channel_names(few, files, meta.get('filename_or_obj')))}: {'/'.join(map(str, counts))} distinct values "
                                f"(BraTS sequences have hundreds; warned at {self.max_label_values} or fewer), which looks like a label map or mask, "
                                "not an MRI sequence")
        ct = [c for i, c in enumerate(present) if np.count_nonzero(sample[i] <= CT_AIR_HU) >= 0.01 * sample[i].size]
        if ct:
            low = min(float(sample[present.index(c)].min()) for c in ct)
            messages.append(f"{', '.join(channel_names(ct, files, meta.get('filename_or_obj')))}: values down to {low:g}, at or below {CT_AIR_HU:g} "
                            "in 1 % of the voxels or more: this looks like CT in Hounsfield units (air is -1000 HU), not an MRI sequence; "
                            "the BraTS models segment brain MRI")
        for message in messages:
            logger.warning(message)
        if messages and hasattr(img, "meta"):
            img.meta[WARNINGS_KEY] = [*img.meta.get(WARNINGS_KEY, []), *messages]
        return img


class CheckBrainMRId(MapTransform):
    """Dictionary version of :class:`CheckBrainMRI`.

    In a config, after the reader: ``{_target_: app.transforms.CheckBrainMRId, keys: image,
    min_volume_ml: 500, max_label_values: 16}``.
    """

    def __init__(self, keys: KeysCollection, min_volume_ml: float = 500.0, max_label_values: int = 16, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = CheckBrainMRI(min_volume_ml, max_label_values)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d
