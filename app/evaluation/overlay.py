"""PNG overlay of a prediction and its reference on the slice with the largest labelled area."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from app.io.atomic import atomic_write
from app.labels import BRATS

#: Colours of the label values in ascending order: BraTS 1 red, 2 green, 4 yellow.
_PALETTE = ((1.0, 0.2, 0.2), (0.2, 0.9, 0.2), (1.0, 0.9, 0.1), (0.2, 0.5, 1.0), (1.0, 0.4, 1.0), (0.2, 0.9, 0.9))
_COLOUR_NAMES = ("red", "green", "yellow", "blue", "magenta", "cyan")


def _rgba(label: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((*label.shape, 4))
    for i, code in enumerate(values):
        out[label == code] = (*_PALETTE[i % len(_PALETTE)], 0.45)
    return out


def save_overlay(image_path: str | Path, pred: np.ndarray, ref: np.ndarray | None, path: str | Path, title: str = "",
                 label_names: Mapping[int, str] = BRATS.labels) -> Path:
    """Write a PNG: the image (e.g. FLAIR) with the reference (left) and the prediction (right).

    The axial slice (third voxel axis) is the one with the largest labelled area (any label of
    ``label_names``) in the reference, or in the prediction where there is no reference. Colours
    by ascending label value: red, green, yellow, ... (BraTS: red 1 NCR/NET, green 2 ED, yellow 4 ET).

    Args:
        image_path: the background volume (any format VolSeg reads), same grid as the label maps.
        pred: predicted label map ``(H, W, D)``.
        ref: reference label map ``(H, W, D)`` or None.
        path: output PNG path (written atomically).
        title: figure title.
        label_names: value -> name of the labels drawn (default BraTS; a bundle's
            :class:`app.labels.LabelManager` ``.labels``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from app.io.readers import read_volume

    image = sitk.GetArrayFromImage(read_volume(image_path, check_finite=False, refuse_all_zero=False)).transpose(2, 1, 0).astype(np.float32)
    values = tuple(sorted(label_names))
    area = np.isin(ref if ref is not None else pred, values).sum(axis=(0, 1))
    z = int(np.argmax(area)) if area.any() else image.shape[2] // 2
    panels = [("reference", ref), ("prediction", pred)] if ref is not None else [("prediction", pred)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5.4))
    for ax, (name, label) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.rot90(image[:, :, z]), cmap="gray")
        ax.imshow(np.rot90(_rgba(label[:, :, z], values)))
        ax.set_title(f"{name} (slice {z})")
        ax.axis("off")
    legend = ", ".join(f"{_COLOUR_NAMES[i % len(_COLOUR_NAMES)]} {label_names[v]}" for i, v in enumerate(values))
    fig.suptitle(f"{title}  {legend}")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out
