"""Sequences of one scanner session on different voxel grids, resampled onto one of them.

Clinical MRI protocols mix acquisitions: a 1 mm 3D T1ce beside a 2D FLAIR or T2 of 5 mm slices.
Acquired in one session, they share the scanner's coordinate frame, so each can be resampled
onto one sequence's grid with the identity transform: SimpleITK ``Resample`` (linear
interpolation, 0 outside the sequence's field of view), as ITK's ``ResampleImageFilter`` and
MONAI's ``ResampleToMatch`` do. This is no registration: motion between the acquisitions stays.
Sequences from different sessions, or already registered elsewhere (an atlas space), need
registration first (BraTS preprocessing, e.g. the BraTS Toolkit, Kofler et al. 2020).

Linear, not B-spline: B-spline's overshoot puts small non-zero values into the exactly-zero
background of skull-stripped MRI, which the brain crop and the non-zero z-score of the BraTS
bundles rely on. With FLAIR and T2 as 5 mm slices, 5-fold CV WT Dice was 0.804 linear against
0.223 B-spline (``benchmarks/thick_slices.py``; bundle README, "Sequences on different voxel grids").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import InputError

__all__ = ["Grid", "finest_grid", "grid_of", "resample_onto"]

#: The resampled volume must cover at least this share of the reference grid's box (world space):
#: less means the sequences are not of one session's frame (or not of the same anatomy).
MIN_OVERLAP = 0.5


@dataclass(frozen=True)
class Grid:
    """A volume's voxel grid in SimpleITK's LPS world coordinates.

    Attributes:
        size: voxels along the image axes ``(i, j, k)``.
        spacing_mm: voxel size along those axes, in mm.
        origin_mm: world position of voxel ``(0, 0, 0)``, in mm.
        direction: the 3x3 direction cosines, row-major (SimpleITK's ``GetDirection``).
    """

    size: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def voxel_mm3(self) -> float:
        return math.prod(self.spacing_mm)

    def same_as(self, other: Grid, atol_mm: float = 1e-3) -> bool:
        """Same size, and spacing, origin and direction within ``atol_mm`` (direction: 1e-4)."""
        close = lambda a, b, tol: all(abs(x - y) <= tol for x, y in zip(a, b))  # noqa: E731
        return (self.size == other.size and close(self.spacing_mm, other.spacing_mm, atol_mm)
                and close(self.origin_mm, other.origin_mm, atol_mm) and close(self.direction, other.direction, 1e-4))

    def world_box(self) -> tuple[list[float], list[float]]:
        """Lower and upper world corners (mm) of the axis-aligned box around the grid's voxels (their edges)."""
        corners = [[self.origin_mm[r] + sum(self.direction[3 * r + c] * ijk[c] * self.spacing_mm[c] for c in range(3)) for r in range(3)]
                   for ijk in itertools.product(*((-0.5, n - 0.5) for n in self.size))]
        return [min(c[r] for c in corners) for r in range(3)], [max(c[r] for c in corners) for r in range(3)]

    def covered_by(self, other: Grid) -> float:
        """Share (0-1) of this grid's world box that ``other``'s world box covers."""
        (lo, hi), (olo, ohi) = self.world_box(), other.world_box()
        shared = math.prod(max(min(h, oh) - max(l, ol), 0.0) for l, h, ol, oh in zip(lo, hi, olo, ohi))
        return shared / math.prod(h - l for l, h in zip(lo, hi))

    def describe(self) -> str:
        """``240 x 240 x 155 voxels of 1 x 1 x 1 mm``."""
        return f"{' x '.join(str(n) for n in self.size)} voxels of {' x '.join(f'{s:.3g}' for s in self.spacing_mm)} mm"


def grid_of(path: str | Path) -> Grid:
    """The voxel grid of a volume (header only, except for DICOM series).

    Raises:
        InputError: a missing or unreadable file, or one that is not 3D.
    """
    from app.io.readers import read_image_information

    info = read_image_information(path)
    if len(info.GetSize()) != 3:
        raise InputError(f"'{path}': expected a 3D volume, got size {info.GetSize()}")
    return Grid(tuple(int(n) for n in info.GetSize()), tuple(float(s) for s in info.GetSpacing()),
                tuple(float(o) for o in info.GetOrigin()), tuple(float(d) for d in info.GetDirection()))


def finest_grid(grids: Sequence[Grid]) -> int:
    """Index of the grid to resample onto: the smallest voxel volume; among equals (within 1 %),
    the most voxels, then the first."""
    smallest = min(g.voxel_mm3 for g in grids)
    fine = [i for i, g in enumerate(grids) if g.voxel_mm3 <= smallest * 1.01]
    return max(fine, key=lambda i: (math.prod(grids[i].size), -i))


def resample_onto(path: str | Path, reference: str | Path, dest: str | Path) -> Path:
    """Resample the volume at ``path`` onto the voxel grid of ``reference`` and write it to ``dest``.

    Linear interpolation in world coordinates (identity transform; SimpleITK ``Resample``), 0
    outside ``path``'s field of view, float32 voxels; ``dest`` (NIfTI) is written atomically.

    Args:
        path: the volume to resample (a file or DICOM series folder; verified as it is read).
        reference: the volume whose grid the output takes (only its geometry is used).
        dest: the output ``.nii.gz`` (compressed) or ``.nii`` path.

    Returns:
        ``dest``.

    Raises:
        InputError: an unreadable input, or one that covers less than half of the reference's
            box in world space (not of one session's frame: they need registration).

    Example:
        >>> resample_onto("case/flair_5mm.nii.gz", "case/t1ce_1mm.nii.gz", "tmp/flair_on_t1ce.nii.gz")  # doctest: +SKIP
    """
    import SimpleITK as sitk

    from app.io.atomic import atomic_write
    from app.io.readers import read_volume

    ref, moving = grid_of(reference), grid_of(path)
    covered = ref.covered_by(moving)
    if covered < MIN_OVERLAP:
        raise InputError(f"'{path}' covers {covered:.0%} of the space of '{reference}' (scanner coordinates); sequences resampled onto "
                         "one grid must come from one session, in one frame of reference. Register them first (BraTS preprocessing)")
    image = read_volume(path)
    out = sitk.Resample(image, list(ref.size), sitk.Transform(), sitk.sitkLinear, list(ref.origin_mm), list(ref.spacing_mm),
                        list(ref.direction), 0.0, sitk.sitkFloat32)
    gz = str(dest).endswith(".gz")
    return atomic_write(dest, lambda tmp: sitk.WriteImage(out, tmp, gz), suffix=".nii.gz" if gz else ".nii")
