"""benchmarks/device_pack.py: cases packed for the GPU machine unpack to the same brain, labels and place."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from app.bundles import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # a script, imported by name (its workers unpickle it)
import device_pack  # noqa: E402


def test_round_trip_keeps_labels_brain_mask_geometry_and_intensity_order(phantom_root: Path, tmp_path: Path):
    index = device_pack.pack(phantom_root, tmp_path / "packed")
    assert sorted(index) == sorted(p.name for p in phantom_root.iterdir() if p.is_dir())
    cases = device_pack.unpack(tmp_path / "packed", tmp_path / "out", workers=2)
    assert sorted(cases) == sorted(index)
    for case in cases:
        src, dst = phantom_root / case, tmp_path / "out" / case
        original = nib.load(src / f"{case}_seg.nii.gz")
        unpacked = nib.load(dst / f"{case}_seg.nii.gz")
        # voxel (i, j, k) of the crop sits where voxel lo + (i, j, k) of the original did
        brain = np.zeros(original.shape, bool)
        for key in device_pack.SEQUENCES:
            brain |= np.asarray(nib.load(src / f"{case}_{key}.nii.gz").dataobj) != 0
        lo = np.argwhere(brain).min(0)
        assert np.allclose(unpacked.affine[:3, 3], original.affine[:3, :3] @ lo + original.affine[:3, 3])
        crop = tuple(slice(a, a + s) for a, s in zip(lo, unpacked.shape))
        assert np.array_equal(np.asarray(unpacked.dataobj), np.asarray(original.dataobj)[crop])  # labels exact
        for key in device_pack.SEQUENCES:
            a = np.asarray(nib.load(src / f"{case}_{key}.nii.gz").dataobj)[crop].astype(np.float64)
            q = np.asarray(nib.load(dst / f"{case}_{key}.nii.gz").dataobj)
            assert q.dtype == np.uint8 and q.max() <= device_pack.LEVELS
            assert np.array_equal(q > 0, a > 0)  # the non-zero mask the normalisation uses
            inside = a > 0
            assert np.corrcoef(a[inside], q[inside])[0, 1] > 0.99  # 7 bits keep the intensities


def test_quantise_edge_cases():
    assert not device_pack.quantise(np.zeros((3, 3, 3))).any()
    q = device_pack.quantise(np.array([0.0, -3.0, 1e-3, 5.0, 10.0, 20.0]))
    assert q[0] == 0 and q[1] == 0 and q[2] == 1 and q[2] < q[3] < q[4] < q[5] == device_pack.LEVELS
    spread = device_pack.quantise(np.concatenate([np.linspace(1, 100, 10000), [1e6]]))
    assert spread[-1] == device_pack.LEVELS and spread[-2] == device_pack.LEVELS  # the outlier clips, not squashes
    assert spread[5000] > 50
