"""CT Hounsfield-unit windowing with named presets, on top of MONAI ``ScaleIntensityRange``, and
a warning for input that is not CT in Hounsfield units."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

from app.transforms.skull import WARNINGS_KEY

logger = logging.getLogger(__name__)

#: Window presets as (lower, upper) HU, from the usual (width, level) pairs:
#: soft tissue W400 L40, abdomen W400 L50, lung W1500 L-600, bone W1800 L400, brain W80 L40.
HU_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (-160.0, 240.0),
    "abdomen": (-150.0, 250.0),
    "lung": (-1350.0, 150.0),
    "bone": (-500.0, 1300.0),
    "brain": (0.0, 80.0),
}


def resolve_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """A preset name or an explicit ``(lower_hu, upper_hu)`` -> ``(lower_hu, upper_hu)``.

    Raises:
        ValueError: unknown preset (the message lists them) or ``lower >= upper``.
    """
    if isinstance(window, str):
        if window not in HU_WINDOWS:
            raise ValueError(f"unknown HU window '{window}'; presets: {', '.join(HU_WINDOWS)}, or give (lower_hu, upper_hu)")
        return HU_WINDOWS[window]
    lower, upper = (float(v) for v in window)
    if lower >= upper:
        raise ValueError(f"HU window needs lower < upper, got ({lower}, {upper})")
    return lower, upper


class HUWindow(Transform):
    """Clip CT intensities to a Hounsfield window and scale it to [0, 1].

    Args:
        window: a preset of ``HU_WINDOWS`` or ``(lower_hu, upper_hu)``.

    Input ``(C, H, W, D)`` in HU; output the same shape, values in [0, 1] (MONAI
    ``ScaleIntensityRange`` with ``clip=True``).

    Raises:
        ValueError: see :func:`resolve_window`.

    Example:
        >>> HUWindow("abdomen")(torch.tensor([[-1000.0, 50.0, 3000.0]])).tolist()
        [[0.0, 0.5, 1.0]]
    """

    backend = ScaleIntensityRange.backend

    def __init__(self, window: str | tuple[float, float] = "soft_tissue") -> None:
        self.window_hu = resolve_window(window)
        self.scaler = ScaleIntensityRange(a_min=self.window_hu[0], a_max=self.window_hu[1], b_min=0.0, b_max=1.0, clip=True)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.scaler(img)


class HUWindowd(MapTransform):
    """Dictionary twin of :class:`HUWindow`: same window, shapes and errors, applied to ``keys``."""

    backend = HUWindow.backend

    def __init__(self, keys: KeysCollection, window: str | tuple[float, float] = "soft_tissue", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windower = HUWindow(window)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.windower(d[key])
        return d


class CheckHounsfield(Transform):
    """Warn where ``(C, H, W, D)`` input does not look like CT in Hounsfield units: no voxel at or
    below ``air_hu`` (air is -1000 HU, and a CT of the body has air around or inside it).

    A CT model's HU window maps anything else to meaningless intensities, and it segments them
    without a word: an abdominal MR (values -11 to 763, no air) or a label map given to the CT
    bundle came back with labels. The shared CTs have 38-39 % of their voxels at or below -500 HU;
    the shared MR and label maps none. The message says which it looks like: at most
    ``max_label_values`` distinct values is a label map or mask. Counted on every 4th voxel
    along each axis; the image is returned unchanged, and the warning is logged and kept under
    ``"input_warnings"`` in its metadata (``volseg segment`` prints it and keeps it in
    ``volseg_run.json``; ``volseg serve`` returns it).

    Args:
        air_hu: warn where no voxel is at or below this value (HU); None turns the check off.
        max_label_values: at this many distinct values or fewer, the warning calls the input a
            label map or mask.

    Example:
        >>> CheckHounsfield()(torch.full((1, 8, 8, 8), 40.0)).shape  # soft tissue only, no air: a warning, logged
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, air_hu: float | None = -500.0, max_label_values: int = 128) -> None:
        self.air_hu, self.max_label_values = air_hu, int(max_label_values)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.air_hu is None:
            return img
        data = np.asarray(img.as_tensor() if hasattr(img, "as_tensor") else img)
        sample = data[(slice(None),) + (slice(None, None, 4),) * 3]
        if sample.size == 0 or float(sample.min()) <= self.air_hu:
            return img
        meta = img.meta if isinstance(getattr(img, "meta", None), dict) else {}
        name = meta.get("filename_or_obj") or "the input"
        values = np.unique(sample).size
        looks = (f"a label map or mask, not an image ({values} distinct values)" if values <= self.max_label_values
                 else "an MRI, or CT stored without its rescale slope and intercept")
        message = (f"{name}: no voxel at or below {self.air_hu:g} HU (every 4th voxel along each axis read: values {float(sample.min()):g} to "
                   f"{float(sample.max()):g}), so it is not CT in "
                   f"Hounsfield units, where air is -1000 HU; it looks like {looks}. The CT model's HU window makes its labels meaningless")
        logger.warning(message)
        if hasattr(img, "meta"):
            img.meta[WARNINGS_KEY] = [*img.meta.get(WARNINGS_KEY, []), message]
        return img


class CheckHounsfieldd(MapTransform):
    """Dictionary version of :class:`CheckHounsfield`. In a config, after the reader:
    ``{_target_: app.transforms.CheckHounsfieldd, keys: image, air_hu: -500}``."""

    def __init__(self, keys: KeysCollection, air_hu: float | None = -500.0, max_label_values: int = 128, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = CheckHounsfield(air_hu, max_label_values)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d
