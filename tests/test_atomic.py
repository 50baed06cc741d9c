from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.io import atomic_write_nifti, atomic_write_text
from app.io.atomic import atomic_write


def test_nifti_written_with_dtype_and_affine(tmp_path: Path):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    path = atomic_write_nifti(np.arange(24 * 32 * 40, dtype=np.uint8).reshape(24, 32, 40) % 5, affine, tmp_path / "a.nii.gz")
    img = nib.load(path)
    assert img.shape == (24, 32, 40) and img.get_data_dtype() == np.uint8 and np.allclose(img.affine, affine)
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def crash_mid_write(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash_mid_write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
