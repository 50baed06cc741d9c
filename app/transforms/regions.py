"""BraTS regions (TC, WT, ET) back to one label map with codes 0/1/2/4, and BraTS 2023+ label
codes to the BraTS 2012-2021 ones.

The forward direction is MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``
(labels {0,1,2,4} -> channels TC={1,4}, WT={1,2,4}, ET={4}); :class:`RegionsToBratsLabels` is
its inverse, used at inference. The BraTS challenges since 2023 code the enhancing tumour 3
instead of 4 (1 NCR, 2 SNFH / edema, 3 ET), a code MONAI's conversion does not know: a 2023
reference read as it is trained ET to nothing and scored ET against nothing.
:func:`brats2018_codes` (and MONAI's ``MapLabelValued`` in the bundles' preprocessing) turns 3 into 4;
:func:`relabelled` writes a map in the codes a user asks for (``volseg segment --label-codes 2023``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import get_equivalent_dtype

from app.labels import BRATS2023_ET, BRATS_ED, BRATS_ET, BRATS_NCR


def brats2018_codes(label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A BraTS label map in the 2012-2021 codes (0, 1 NCR/NET, 2 ED, 4 ET), from either convention:
    MONAI's ``MapLabelValue`` 3 -> 4 (the map's type and dtype kept). A 2012-2021 map holds no 3, so
    it comes back with the same values; the bundles' preprocessing does the same with
    ``MapLabelValued`` before ``ConvertToMultiChannelBasedOnBratsClassesd``.

    Args:
        label: label map of any shape (``(H, W, D)`` or ``(1, H, W, D)``).

    Example:
        >>> brats2018_codes(np.array([0, 1, 2, 3], dtype=np.uint8)).tolist()
        [0, 1, 2, 4]
    """
    from monai.transforms import MapLabelValue

    return MapLabelValue([BRATS2023_ET], [BRATS_ET], dtype=label.dtype)(label)


def relabelled(label: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """``label`` with each value of ``mapping`` replaced (MONAI ``MapLabelValue``; dtype kept),
    e.g. ``{4: 3}`` for BraTS 2023+ codes (:meth:`app.labels.LabelManager.code_map`); ``label``
    itself for an empty mapping.

    Example:
        >>> relabelled(np.array([0, 1, 2, 4], dtype=np.uint8), {4: 3}).tolist()
        [0, 1, 2, 3]
    """
    from monai.transforms import MapLabelValue

    if not mapping:
        return label
    return np.asarray(MapLabelValue(list(mapping), list(mapping.values()), dtype=label.dtype)(label))


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


class ChannelThreshold(Transform):
    """Threshold each channel of a probability map at its own value.

    MONAI's ``AsDiscrete(threshold=t)`` takes one ``t`` for every channel; this takes one per
    channel (e.g. per BraTS region TC, WT, ET, chosen by cross-validation: a region-based network
    trained with Dice is often not calibrated at 0.5 for every region). A voxel is 1 where
    ``prob[c] >= thresholds[c]`` (the comparison ``AsDiscrete`` makes), else 0.

    Args:
        thresholds: one value per channel, each in [0, 1].

    Input: ``(C, H, W, D)`` tensor or array of probabilities. Output: the same shape, type and
    dtype (float 0/1; a ``MetaTensor`` keeps its metadata).

    Raises:
        ValueError: a threshold outside [0, 1], or ``C`` differs from the number of thresholds.

    Example:
        >>> prob = torch.tensor([[0.6], [0.6], [0.6]])
        >>> ChannelThreshold([0.7, 0.5, 0.5])(prob).flatten().tolist()
        [0.0, 1.0, 1.0]
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        if not self.thresholds or any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be one value in [0, 1] per channel, got {list(thresholds)}")

    def __call__(self, prob: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if prob.shape[0] != len(self.thresholds):
            raise ValueError(f"{len(self.thresholds)} thresholds {list(self.thresholds)} for {prob.shape[0]} channels (shape {tuple(prob.shape)})")
        if isinstance(prob, torch.Tensor):
            t = torch.as_tensor(self.thresholds, dtype=prob.dtype if prob.is_floating_point() else torch.float32, device=prob.device)
            out = (prob >= t.view(-1, *([1] * (prob.ndim - 1)))).to(prob.dtype if prob.is_floating_point() else torch.float32)
            if isinstance(prob, MetaTensor) and not isinstance(out, MetaTensor):
                out = MetaTensor(out, meta=prob.meta, applied_operations=prob.applied_operations)
            return out
        dtype = prob.dtype if np.issubdtype(prob.dtype, np.floating) else np.float32
        t = np.asarray(self.thresholds, dtype=dtype).reshape(-1, *([1] * (prob.ndim - 1)))  # compared in the input's precision
        return (prob >= t).astype(dtype)


class ChannelThresholdd(MapTransform):
    """Dictionary twin of :class:`ChannelThreshold`, with other thresholds for cases that lack an input channel.

    A network trained with modality dropout is calibrated differently with all sequences than
    without some (5-fold CV of brats_unet3d: the best TC threshold is 0.7-0.75 with all four
    sequences, 0.5 with FLAIR + T1ce only). Where ``thresholds_missing`` is given and the
    ``image_key`` image's metadata lists ``missing_channels`` (written by
    :class:`app.io.LoadVolumed` when it zero-fills a missing sequence), those thresholds are used.

    Args:
        keys: keys of the ``(C, H, W, D)`` probability maps to threshold in place.
        thresholds: one value per channel, each in [0, 1].
        thresholds_missing: one value per channel for cases with a missing input channel, or
            None to use ``thresholds`` for every case.
        image_key: key of the input image whose metadata says which channels were missing.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.

    Raises:
        ValueError: as :class:`ChannelThreshold`, for either set of thresholds.
    """

    backend = ChannelThreshold.backend

    def __init__(self, keys: KeysCollection, thresholds: Sequence[float], thresholds_missing: Sequence[float] | None = None,
                 image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = ChannelThreshold(thresholds)
        self.threshold_missing = ChannelThreshold(thresholds_missing) if thresholds_missing is not None else self.threshold
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d.get(self.image_key)
        missing = isinstance(image, MetaTensor) and bool(image.meta.get("missing_channels"))
        threshold = self.threshold_missing if missing else self.threshold
        for key in self.key_iterator(d):
            d[key] = threshold(d[key])
        return d
