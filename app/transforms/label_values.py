"""Refuse a reference label map whose values are no label of the task, before training learns
from it: a BraTS reference with edema recoded as 5 trained those voxels as background without a
word (``ConvertToMultiChannelBasedOnBratsClassesd`` knows only 1, 2 and 4), where ``volseg
evaluate`` warns about the same file.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from app.errors import InputError

__all__ = ["CheckLabelValuesd"]


class CheckLabelValuesd(MapTransform):
    """Raise where a label map holds a value outside ``allowed``, naming its file and the values.

    In a config, after the reader and before any conversion of the label:
    ``{_target_: app.transforms.CheckLabelValuesd, keys: label, allowed: [0, 1, 2, 3, 4]}``
    (BraTS: 1 NCR/NET, 2 ED, 4 ET, and 3, the ET of the BraTS 2023+ codes).

    Args:
        keys: label keys; each value ``(1, H, W, D)`` or ``(H, W, D)``, any dtype, with the file
            in ``meta["filename_or_obj"]`` where MONAI's reader put it.
        allowed: the label values a reference may hold (0, the background, included).
        allow_missing_keys: items without a label pass (inference).

    Raises:
        app.errors.InputError: (a ValueError) ``label '<file>' has the value(s) 5, which are no
            label of this task (allowed: 0, 1, 2, 3, 4)``, with what to do.

    Example:
        >>> CheckLabelValuesd("label", allowed=[0, 1, 2, 4])({"label": torch.tensor([[0, 1, 4]])})["label"].tolist()
        [[0, 1, 4]]
    """

    def __init__(self, keys: KeysCollection, allowed: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allowed = np.array(sorted({int(v) for v in allowed}))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = torch.unique(torch.as_tensor(label)).cpu().numpy() if isinstance(label, torch.Tensor) else np.unique(np.asarray(label))
            unknown = np.setdiff1d(values, self.allowed)
            if unknown.size:
                meta = getattr(label, "meta", None) or {}
                source = meta.get("filename_or_obj") or d.get(f"{key}_path") or key
                shown = ", ".join(f"{v:g}" for v in unknown[:8]) + (" ..." if unknown.size > 8 else "")
                raise InputError(f"label '{source}' has the value(s) {shown}, which are no label of this task (allowed: "
                                 f"{', '.join(str(int(v)) for v in self.allowed)}); recode them (e.g. with MONAI MapLabelValue) or "
                                 "leave the case out: training would learn them as background")
        return d
