"""BraTS regions (TC, WT, ET) back to one label map with codes 0/1/2/4.

The forward direction is MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``
(labels {0,1,2,4} -> channels TC={1,4}, WT={1,2,4}, ET={4}); this is its inverse, used
at inference.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import get_equivalent_dtype

from app.labels import BRATS_ED, BRATS_ET, BRATS_NCR


class RegionsToBratsLabels(Transform):
    """Turn binary region channels (TC, WT, ET) into a BraTS label map.

    The regions are nested (ET within TC within WT); the map is painted from the outside
    in, so each voxel takes the innermost region it belongs to: WT -> 2 (edema), TC -> 1
    (necrotic / non-enhancing core), ET -> 4 (enhancing tumour), else 0. An inconsistent
    prediction (ET outside TC) is resolved in favour of the inner region, as nnU-Net's
    BraTS region-based conversion does (Isensee et al. 2021, arXiv:2011.00848).

    Args:
        dtype: output dtype (default ``uint8``).

    Input: ``(3, H, W, D)`` binary (or boolean) tensor or array, channels TC, WT, ET.
    Output: ``(1, H, W, D)`` of the same kind (tensor in, tensor out; metadata kept),
    values in {0, 1, 2, 4}.

    Raises:
        ValueError: the input does not have 3 channels.

    Example:
        >>> regions = torch.zeros(3, 4, 5, 6); regions[1, 0] = 1; regions[:, 1] = 1
        >>> sorted(RegionsToBratsLabels()(regions).unique().tolist())
        [0, 2, 4]
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, dtype: type | torch.dtype = np.uint8) -> None:
        self.dtype = dtype

    def __call__(self, regions: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if regions.shape[0] != 3:
            raise ValueError(f"expected 3 region channels (TC, WT, ET), got shape {tuple(regions.shape)}")
        if isinstance(regions, torch.Tensor):
            tc, wt, et = (regions[i] > 0 for i in range(3))
            out = torch.zeros_like(regions[:1], dtype=torch.uint8)
            out[0][wt], out[0][tc], out[0][et] = BRATS_ED, BRATS_NCR, BRATS_ET
            if isinstance(regions, MetaTensor):
                out = MetaTensor(out, meta=regions.meta, applied_operations=regions.applied_operations)
            return out.to(get_equivalent_dtype(self.dtype, torch.Tensor))
        tc, wt, et = (np.asarray(regions[i]) > 0 for i in range(3))
        out = np.zeros((1, *regions.shape[1:]), dtype=self.dtype)
        out[0][wt], out[0][tc], out[0][et] = BRATS_ED, BRATS_NCR, BRATS_ET
        return out


class RegionsToBratsLabelsd(MapTransform):
    """Dictionary twin of :class:`RegionsToBratsLabels`: same behaviour, shapes and errors.

    Args:
        keys: keys of the ``(3, H, W, D)`` region arrays to convert in place.
        dtype: output dtype (default ``uint8``).
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
    """

    backend = RegionsToBratsLabels.backend

    def __init__(self, keys: KeysCollection, dtype: type | torch.dtype = np.uint8, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = RegionsToBratsLabels(dtype)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
