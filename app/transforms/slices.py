"""Slice and volume conversions: stacking 2D slices into a volume, and 2D / 2.5D slabs for
slice-wise models, with the way back to a volume.

For a 2D model on single slices (``k=1``) MONAI's ``monai.inferers.SliceInferer`` runs the whole
slice-by-slice inference and is what to use; :func:`volume_to_slabs` adds what it lacks, 2.5D
slabs (``k`` neighbouring slices as channels), and assembles the same way (tested against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from app.data.verify import InputError


def stack_slices(files: Sequence[str | Path], slice_spacing_mm: float):
    """Stack 2D slice files (PNG, TIFF, NIfTI, single DICOM files...) into a 3D ``SimpleITK.Image``.

    The slices are stacked in the given order along the third axis; in-plane spacing comes
    from the first slice, the slice spacing from ``slice_spacing_mm`` (2D files carry none).
    For a DICOM series with positions, use :func:`app.io.read_volume` on its folder instead.

    Args:
        files: the slice files in order (e.g. ``sorted(folder.glob("*.png"))``).
        slice_spacing_mm: distance between slice centres in mm.

    Raises:
        InputError: no files, an unreadable or non-2D file, or slices of different sizes
            (the message names the file).
        ValueError: ``slice_spacing_mm <= 0``.
    """
    import SimpleITK as sitk

    if slice_spacing_mm <= 0:
        raise ValueError(f"slice_spacing_mm must be > 0, got {slice_spacing_mm}")
    if not files:
        raise InputError("no slice files given")
    slices = []
    for path in files:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise InputError(f"'{path}': not a readable image ({str(err).strip().splitlines()[-1]})") from err
        if image.GetDimension() == 3 and image.GetSize()[2] == 1:
            image = image[:, :, 0]
        if image.GetDimension() != 2 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"'{path}': expected a 2D single-channel slice, got {image.GetDimension()}D size {image.GetSize()}")
        if slices and image.GetSize() != slices[0].GetSize():
            raise InputError(f"'{path}': slice size {image.GetSize()} differs from {slices[0].GetSize()} of '{files[0]}'")
        slices.append(image)
    volume = sitk.JoinSeries(slices)
    volume.SetSpacing((*slices[0].GetSpacing(), float(slice_spacing_mm)))
    return volume


def volume_to_slabs(volume: torch.Tensor, k: int = 1, axis: int = 3) -> torch.Tensor:
    """2D slices (``k=1``) or 2.5D slabs (``k`` neighbouring slices as channels) of a volume.

    Args:
        volume: ``(C, H, W, D)``.
        k: odd slab thickness in slices; slices beyond the ends repeat the edge slice.
        axis: the slice axis of ``volume`` (1, 2 or 3).

    Returns:
        ``(S, C * k, A, B)``: one item per slice along ``axis`` (a batch for a 2D model), channels
        ordered slice-major (all C channels of the first neighbour, then the next...).

    Raises:
        ValueError: ``k`` not a positive odd number, ``axis`` not 1..3, or a volume that is not
            ``(C, H, W, D)`` (a 3D array without its channel axis: add it first, ``volume[None]``).
    """
    if torch.as_tensor(volume).ndim != 4:
        raise ValueError(f"volume must be (C, H, W, D), got shape {tuple(torch.as_tensor(volume).shape)}; a 3D volume needs its channel axis first "
                         "(volume[None], or EnsureChannelFirstd)")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"slab thickness k must be a positive odd number, got {k}")
    if axis not in (1, 2, 3):
        raise ValueError(f"slice axis must be 1, 2 or 3 of a (C, H, W, D) volume, got {axis}")
    moved = torch.movedim(torch.as_tensor(volume), axis, 0)  # (S, C, A, B)
    n = moved.shape[0]
    offsets = torch.arange(k) - k // 2
    index = (torch.arange(n)[:, None] + offsets[None]).clamp(0, n - 1)  # (S, k)
    slabs = moved[index]  # (S, k, C, A, B)
    return slabs.reshape(n, k * moved.shape[1], *moved.shape[2:])


def slabs_to_volume(slices: torch.Tensor, axis: int = 3) -> torch.Tensor:
    """Assemble per-slice predictions ``(S, C, A, B)`` back into a volume ``(C, H, W, D)``,
    the inverse placement of :func:`volume_to_slabs` for the same ``axis``.

    Raises:
        ValueError: ``axis`` not 1..3 or ``slices`` not 4D.
    """
    if axis not in (1, 2, 3):
        raise ValueError(f"slice axis must be 1, 2 or 3, got {axis}")
    if slices.ndim != 4:
        raise ValueError(f"expected per-slice predictions (S, C, A, B), got shape {tuple(slices.shape)}")
    return torch.movedim(slices, 0, axis)
