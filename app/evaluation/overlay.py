"""PNG overlay of a prediction and its reference on the slice with the largest tumour area."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.io.atomic import atomic_write

_COLOURS = {1: (1.0, 0.2, 0.2), 2: (0.2, 0.9, 0.2), 4: (1.0, 0.9, 0.1)}


def _rgba(label: np.ndarray) -> np.ndarray:
    out = np.zeros((*label.shape, 4))
    for code, rgb in _COLOURS.items():
        out[label == code] = (*rgb, 0.45)
    return out


def save_overlay(image_path: str | Path, pred: np.ndarray, ref: np.ndarray | None, path: str | Path, title: str = "") -> Path:
    """Write a PNG: the image (e.g. FLAIR) with the reference (left) and the prediction (right).

    The axial slice (third voxel axis) is the one with the largest whole-tumour area in the
    reference, or in the prediction where there is no reference. Colours: red 1 NCR/NET,
    green 2 ED, yellow 4 ET.

    Args:
        image_path: the background volume, same grid as the label maps.
        pred: predicted label map ``(H, W, D)``.
        ref: reference label map ``(H, W, D)`` or None.
        path: output PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    image = np.asarray(nib.load(str(image_path)).dataobj, dtype=np.float32)
    area = ((ref if ref is not None else pred) > 0).sum(axis=(0, 1))
    z = int(np.argmax(area)) if area.any() else image.shape[2] // 2
    panels = [("reference", ref), ("prediction", pred)] if ref is not None else [("prediction", pred)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5.4))
    for ax, (name, label) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.rot90(image[:, :, z]), cmap="gray")
        ax.imshow(np.rot90(_rgba(label[:, :, z])))
        ax.set_title(f"{name} (slice {z})")
        ax.axis("off")
    fig.suptitle(f"{title}  red NCR/NET, green ED, yellow ET")
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out
