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

    The axial slice is shown in radiological convention, whatever the files' orientation: the
    volumes are reoriented to LPS first (SimpleITK ``DICOMOrient``, as the HTML report does), so
    anterior is up and the patient's left on the viewer's right (marked A, P, R, L). The slice is
    the one with the largest labelled area (any label of ``label_names``) in the reference, or in
    the prediction where there is no reference. Colours by ascending label value: red, green,
    yellow, ... (BraTS: red 1 NCR/NET, green 2 ED, yellow 4 ET).

    Args:
        image_path: the background volume (any format VolSeg reads), same grid as the label maps.
        pred: predicted label map ``(H, W, D)`` in the image's voxel order ``(i, j, k)``.
        ref: reference label map ``(H, W, D)`` or None.
        path: output PNG path (written atomically).
        title: figure title.
        label_names: value -> name of the labels drawn (default BraTS; a bundle's
            :class:`app.labels.LabelManager` ``.labels``).

    Raises:
        ValueError: a label map whose shape is not the image's.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from app.io.readers import read_volume

    volume = read_volume(image_path, check_finite=False, refuse_all_zero=False)

    def lps(label: np.ndarray) -> np.ndarray:  # (i, j, k) on the image's grid -> LPS array (k, j, i)
        if tuple(label.shape) != tuple(volume.GetSize()[:3]):
            raise ValueError(f"label map of shape {tuple(label.shape)} is not on the grid of '{image_path}' ({tuple(volume.GetSize()[:3])})")
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(label, dtype=np.uint8).transpose(2, 1, 0)))
        image.CopyInformation(volume)
        return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))

    oriented = sitk.DICOMOrient(volume, "LPS")
    image = sitk.GetArrayFromImage(oriented).astype(np.float32)  # (k, j, i): k superior, j posterior, i left
    si, sj = oriented.GetSpacing()[:2]
    values = tuple(sorted(label_names))
    panels = [("reference", lps(ref)), ("prediction", lps(pred))] if ref is not None else [("prediction", lps(pred))]
    area = np.isin(panels[0][1], values).sum(axis=(1, 2))
    z = int(np.argmax(area)) if area.any() else image.shape[0] // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5.6))
    for ax, (name, label) in zip(np.atleast_1d(axes), panels):
        ax.imshow(image[z], cmap="gray", aspect=sj / si)
        ax.imshow(_rgba(label[z], values), aspect=sj / si)
        ax.set_title(f"{name} (axial slice {z} of {image.shape[0]})", fontsize=10)
        for x, y, text in ((0.5, 0.98, "A"), (0.5, 0.02, "P"), (0.02, 0.5, "R"), (0.98, 0.5, "L")):
            ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=11, fontweight="bold", ha="center", va="center")
        ax.axis("off")
    legend = ", ".join(f"{_COLOUR_NAMES[i % len(_COLOUR_NAMES)]} {label_names[v]}" for i, v in enumerate(values))
    fig.suptitle(f"{title}  {legend}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # the figure title above the panel titles
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out
