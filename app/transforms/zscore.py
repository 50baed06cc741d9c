"""Channel-wise z-score of non-zero (brain) voxels in one vectorised pass.

Same result as MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)`` (the BraTS
normalisation of the MONAI tutorial and Model Zoo bundles) to float32 rounding, 2-4x faster on
a 4 x 141 x 179 x 143 BraTS brain crop on 2 CPU cores (0.06-0.15 s against 0.19-0.25 s): MONAI
gathers each channel's masked voxels into a new tensor and scatters them back, while here the
sums over the mask come from one pass each and the output from one fused expression. Kept over
MONAI's transform for that measured gain (docs/performance.md, "read and preprocess").
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, Transform
from monai.utils import convert_to_dst_type


class NonzeroZScore(Transform):
    """``(x - mean) / std`` per channel over the channel's non-zero voxels; zero voxels stay zero.

    ``img`` is ``(C, H, W, D)`` (any spatial rank). A channel that is all zero is left as is,
    and a constant channel (std 0) is only shifted, as MONAI does. Sums accumulate in float64.
    The output is float32, with ``img``'s metadata when it is a MetaTensor. Tensors off the CPU
    go through MONAI's ``NormalizeIntensity`` instead.

    Example:
        >>> NonzeroZScore()(torch.tensor([[0.0, 1.0, 3.0]]))
        tensor([[ 0., -1.,  1.]])
    """

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if isinstance(img, torch.Tensor) and img.device.type != "cpu":
            return NormalizeIntensity(nonzero=True, channel_wise=True, dtype=torch.float32)(img)
        x = np.ascontiguousarray(img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else img, dtype=np.float32)
        flat = x.reshape(x.shape[0], -1)
        mask = flat != 0
        count = mask.sum(axis=1)
        n = np.maximum(count, 1)
        mean = flat.sum(axis=1, dtype=np.float64) / n
        var = np.einsum("ci,ci->c", flat, flat, dtype=np.float64) / n - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std[std == 0] = 1.0
        mean[count == 0] = 0.0
        out = (flat - mean[:, None].astype(np.float32)) * (1.0 / std)[:, None].astype(np.float32)
        out *= mask
        out = out.reshape(x.shape)
        return convert_to_dst_type(out, img, dtype=np.float32 if isinstance(img, np.ndarray) else torch.float32)[0]


class NonzeroZScored(MapTransform):
    """Dictionary twin of :class:`NonzeroZScore` (drop-in for MONAI's
    ``NormalizeIntensityd(keys, nonzero=True, channel_wise=True)``).

    Args:
        keys: image keys, ``(C, H, W, D)`` each.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.zscore = NonzeroZScore()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.zscore(d[key])
        return d
