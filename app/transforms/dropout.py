"""Random modality (channel) dropout for hetero-modal training.

A model trained on all four MRI sequences fails when one is missing at inference. Training with
whole sequences zeroed at random, the "modality dropout" baseline of the hetero-modal literature
(HeMIS, Havaei et al., MICCAI 2016, arXiv:1607.05194; U-HVED, Dorent et al., MICCAI 2019,
arXiv:1907.11150), lets one network take any non-empty subset: a missing sequence is given as a
zero channel, which after the non-zero z-score is the value the network saw in training.
MONAI has no channel-dropout transform (``RandCoarseDropout`` drops boxes, not channels).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform


def channel_subsets(n_channels: int) -> list[tuple[int, ...]]:
    """Every non-empty proper subset of ``range(n_channels)`` (the channels kept), smallest first.

    Example:
        >>> channel_subsets(3)
        [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    """
    return [c for k in range(1, n_channels) for c in combinations(range(n_channels), k)]


class RandModalityDropoutd(RandomizableTransform, MapTransform):
    """With probability ``prob``, zero whole channels of ``keys``, keeping a subset drawn uniformly
    from the non-empty proper subsets (``channel_subsets``; 14 of them for 4 MRI sequences).

    Put it after intensity normalisation and intensity augmentation, so that a dropped channel is
    exactly zero, as a missing sequence is at inference (``app.io.LoadVolumed`` zero-fills it).

    Args:
        keys: image keys, each ``(C, H, W, D)`` (any spatial rank) with ``C >= 2``.
        prob: probability of dropping some channels, per sample.
        allowed: the kept-channel subsets to draw from, uniformly by entry (default: every non-empty
            proper subset); a subset listed k times is drawn k times as often, which weights the
            subsets a deployment meets most (e.g. FLAIR + T1ce).
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.

    Raises:
        ValueError: ``prob`` outside [0, 1], or an image with fewer than 2 channels.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, allowed: Sequence[Sequence[int]] | None = None,
                 allow_missing_keys: bool = False) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"modality dropout prob must be in [0, 1], got {prob}")
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.allowed = [tuple(a) for a in allowed] if allowed is not None else None
        self._keep: tuple[int, ...] | None = None

    def randomize(self, n_channels: int) -> None:  # type: ignore[override]
        super().randomize(None)
        self._keep = None
        if self._do_transform:
            subsets = self.allowed if self.allowed is not None else channel_subsets(n_channels)
            self._keep = subsets[self.R.randint(len(subsets))]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first = next(self.key_iterator(d), None)
        if first is None:
            return d
        n = d[first].shape[0]
        if n < 2:
            raise ValueError(f"modality dropout needs at least 2 channels, '{first}' has {n}")
        self.randomize(n)
        if self._keep is None:
            return d
        drop = [c for c in range(n) if c not in self._keep]
        for key in self.key_iterator(d):
            img = d[key].clone() if isinstance(d[key], torch.Tensor) else np.array(d[key], copy=True)
            img[drop] = 0
            d[key] = img
        return d
