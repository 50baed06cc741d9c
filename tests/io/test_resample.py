"""app.io.resample: voxel grids, the finest of a case, and resampling onto another grid in world space."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app.errors import InputError
from app.io.resample import finest_grid, grid_of, resample_onto


def _volume(path: Path, size: tuple[int, int, int], spacing_mm: tuple[float, float, float], origin_mm=(0.0, 0.0, 0.0), cube_mm=None) -> Path:
    """A volume of 1s with, where ``cube_mm`` = (lo, hi) in world mm, a cube of 100s."""
    image = sitk.Image(list(size), sitk.sitkFloat32) + 1.0
    image.SetSpacing(spacing_mm)
    image.SetOrigin(origin_mm)
    if cube_mm is not None:
        array = sitk.GetArrayFromImage(image)  # (k, j, i)
        for k, j, i in np.ndindex(*array.shape):
            x = image.TransformIndexToPhysicalPoint((i, j, k))
            if all(cube_mm[0] <= c < cube_mm[1] for c in x):
                array[k, j, i] = 100.0
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        image = out
    sitk.WriteImage(image, str(path))
    return path


def test_grids_the_finest_and_their_overlap(tmp_path: Path):
    fine = grid_of(_volume(tmp_path / "t1ce.nii.gz", (40, 40, 40), (1.0, 1.0, 1.0)))
    thick = grid_of(_volume(tmp_path / "flair.nii.gz", (40, 40, 8), (1.0, 1.0, 5.0), origin_mm=(0.0, 0.0, 2.0)))  # slab centres at 2, 7, ... mm
    assert fine.size == (40, 40, 40) and thick.spacing_mm == (1.0, 1.0, 5.0)
    assert fine.same_as(grid_of(tmp_path / "t1ce.nii.gz")) and not fine.same_as(thick)
    assert finest_grid([thick, fine]) == 1 and finest_grid([fine, fine]) == 0
    assert fine.covered_by(thick) == pytest.approx(1.0)  # both span 40 mm along each axis
    shifted = grid_of(_volume(tmp_path / "t2.nii.gz", (40, 40, 40), (1.0, 1.0, 1.0), origin_mm=(30.0, 0.0, 0.0)))
    assert fine.covered_by(shifted) == pytest.approx(10 / 40)
    assert thick.describe() == "40 x 40 x 8 voxels of 1 x 1 x 5 mm"


def test_resampling_keeps_a_structure_where_it_is_in_world_space(tmp_path: Path):
    reference = _volume(tmp_path / "t1ce.nii.gz", (40, 40, 40), (1.0, 1.0, 1.0), origin_mm=(-20.0, -20.0, -20.0))
    thick = _volume(tmp_path / "flair.nii.gz", (40, 40, 8), (1.0, 1.0, 5.0), origin_mm=(-20.0, -20.0, -18.0), cube_mm=(-5.0, 7.0))
    out = resample_onto(thick, reference, tmp_path / "out" / "flair_on_t1ce.nii.gz")
    ref_img, out_img = nib.load(reference), nib.load(out)
    assert out_img.shape == ref_img.shape and np.allclose(out_img.affine, ref_img.affine, atol=1e-4)
    data = np.asarray(out_img.dataobj)
    assert data.dtype == np.float32
    # World (x, y, z) -> voxel of the reference: nibabel's RAS affine, so invert it.
    inside = np.round(np.linalg.inv(ref_img.affine) @ [-1.0, -1.0, 0.0, 1.0]).astype(int)[:3]  # RAS of LPS (1, 1, 0): inside the cube
    outside = np.round(np.linalg.inv(ref_img.affine) @ [-12.0, -12.0, 0.0, 1.0]).astype(int)[:3]
    assert data[tuple(inside)] == pytest.approx(100.0) and data[tuple(outside)] == pytest.approx(1.0)
    assert list(out.parent.iterdir()) == [out]  # written atomically: no temporary file left


def test_a_volume_from_another_frame_is_refused_with_both_files_named(tmp_path: Path):
    reference = _volume(tmp_path / "t1ce.nii.gz", (20, 20, 20), (1.0, 1.0, 1.0))
    elsewhere = _volume(tmp_path / "flair.nii.gz", (20, 20, 4), (1.0, 1.0, 5.0), origin_mm=(200.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"flair.nii.gz' covers 0% of the space of '.*t1ce.nii.gz'.*Register them first"):
        resample_onto(elsewhere, reference, tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()
