"""CT Hounsfield-unit windowing with named presets, on top of MONAI ``ScaleIntensityRange``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

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
