"""A warning for MRI that does not look skull-stripped, the input BraTS-style models assume.

BraTS data is co-registered to one atlas, resampled to 1 mm and skull-stripped (Bakas et al.
2018, arXiv:1811.02629): everything outside the brain is exactly 0, 81-88 % of the voxels of the
15 shared BraTS 2018 cases. MRI as the scanner writes it has almost no exact zeros (0-5 % in the
shared spinal-cord and abdominal MRI). A model trained on brains alone then sees scalp, skull,
eyes and neck, crops nothing away (the brain crop is the non-zero box) and z-scores over them, and
its labels are unreliable without any error to say why. This transform says why.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

logger = logging.getLogger(__name__)

__all__ = ["CheckSkullStripped", "CheckSkullStrippedd", "channel_names", "zero_fractions"]

#: metadata key of the warnings about an input, read by ``app.inference.Segmenter.load``
WARNINGS_KEY = "input_warnings"


def zero_fractions(img: torch.Tensor, stride: int = 4) -> list[float]:
    """Fraction of exactly-zero voxels of each channel of ``(C, H, W, D)`` ``img``, counted on
    every ``stride``-th voxel along each spatial axis (1/64 of the voxels at 4: under 1 ms for a
    BraTS case, and within 0.002 of the full count on the 15 shared cases).

    Raises:
        ValueError: ``stride`` below 1.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    sample = torch.as_tensor(img)[(slice(None),) + (slice(None, None, stride),) * (img.ndim - 1)]
    return [float(v) for v in (sample.reshape(sample.shape[0], -1) == 0).float().mean(dim=1)]


class CheckSkullStripped(Transform):
    """Warn where a channel of ``(C, H, W, D)`` MRI has too few zero voxels to be skull-stripped.

    A channel whose fraction of exactly-zero voxels (:func:`zero_fractions`) is below
    ``min_zero_fraction`` makes one warning for the image: logged (naming its files) and appended
    to the image's metadata under ``"input_warnings"``, which ``volseg segment`` prints and keeps
    in ``volseg_run.json``. The image itself is returned unchanged. Channels that a case lacks
    (``"missing_channels"`` in the metadata, zero-filled by :class:`app.io.LoadVolumed`) are not
    counted. 0.25 sits between the two populations: 0.81-0.88 in the 15 shared BraTS cases
    (and about 0.48 for a skull-stripped brain cropped to its own box, an ellipsoid in its box),
    0.00-0.05 in the shared MRI that is not skull-stripped.

    Args:
        min_zero_fraction: warn below this fraction of zero voxels, 0-1; 0 turns the check off.
        stride: count every ``stride``-th voxel along each axis.

    Raises:
        ValueError: ``min_zero_fraction`` outside 0-1, or ``stride`` below 1.

    Example:
        >>> CheckSkullStripped()(torch.ones(1, 8, 8, 8)).shape  # logs a warning, returns the image
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, min_zero_fraction: float = 0.25, stride: int = 4) -> None:
        if not 0.0 <= min_zero_fraction <= 1.0:
            raise ValueError(f"min_zero_fraction must be in [0, 1], got {min_zero_fraction}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.min_zero_fraction = float(min_zero_fraction)
        self.stride = int(stride)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.min_zero_fraction == 0:
            return img
        meta = getattr(img, "meta", None)
        meta = meta if isinstance(meta, dict) else {}
        absent = set(meta.get("missing_channels", []))
        fractions = zero_fractions(img, self.stride)
        low = [c for c, f in enumerate(fractions) if c not in absent and f < self.min_zero_fraction]
        if low:
            message = _message(low, fractions, meta.get("channel_files"), meta.get("filename_or_obj"), self.min_zero_fraction)
            logger.warning(message)
            if hasattr(img, "meta"):
                img.meta[WARNINGS_KEY] = [*img.meta.get(WARNINGS_KEY, []), message]
        return img


def channel_names(channels: Sequence[int], channel_files: Sequence[str | None] | None, filename: object) -> list[str]:
    """A name for each channel in a warning: its file's name where ``channel_files`` (the reader's
    ``"channel_files"`` metadata, one entry a channel) is given, else ``channel <c>`` (of ``filename``)."""
    if channel_files:
        return [Path(str(channel_files[c])).name for c in channels]
    return [f"channel {c} of '{Path(str(filename)).name}'" if filename else f"channel {c}" for c in channels]


def _message(low: Sequence[int], fractions: Sequence[float], channel_files: Sequence[str | None] | None, filename: object,
             min_zero_fraction: float) -> str:
    """``'<files>': N % of the voxels are 0 ...``, naming the channels' files where known."""
    names = channel_names(low, channel_files if channel_files and len(channel_files) == len(fractions) else None, filename)
    shares = [f"{100 * fractions[c]:.0f} %" for c in low]
    share = f"{shares[0]} of the voxels are 0" + (" in each" if len(low) > 1 else "") if len(set(shares)) == 1 else f"{', '.join(shares)} of the voxels are 0"
    return (f"{', '.join(names)}: does not look skull-stripped ({share}, under {100 * min_zero_fraction:.0f} %; "
            f"skull-stripped BraTS volumes have about 80-90 %). The BraTS models expect skull-stripped, co-registered "
            f"sequences (BraTS preprocessing, e.g. HD-BET or SynthStrip for the skull stripping); on a whole head their "
            f"labels are unreliable")


class CheckSkullStrippedd(MapTransform):
    """Dictionary version of :class:`CheckSkullStripped`.

    In a config, after the reader: ``{_target_: app.transforms.CheckSkullStrippedd, keys: image,
    min_zero_fraction: 0.25}``.
    """

    def __init__(self, keys: KeysCollection, min_zero_fraction: float = 0.25, stride: int = 4, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = CheckSkullStripped(min_zero_fraction, stride)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d
