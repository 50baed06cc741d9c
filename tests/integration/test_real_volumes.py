"""Real CT and MRI volumes (../shared/data): read -> RAS + resample + crop -> inverse -> write keeps
the geometry and the label values; a DICOM series written from the CT reads back identically."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import Compose, CropForegroundd, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, Spacingd

from app.io import read_volume, write_label_like
from app.transforms import is_anisotropic, target_spacing
from tests.conftest import REPO_ROOT
from tests.io.dicom_util import write_dicom_series

DATA = REPO_ROOT.parent / "shared" / "data"
PAIRS = {
    "msd_spleen": ("msd_spleen/imagesTr/spleen_8.nii.gz", "msd_spleen/labelsTr/spleen_8.nii.gz"),
    "totalseg_ct": ("totalseg_refs/example_ct_sm.nii.gz", "totalseg_refs/example_seg.nii.gz"),
    "totalseg_mr": ("totalseg_refs/example_mr_sm.nii.gz", "totalseg_refs/example_seg_mr.nii.gz"),
    "spinalcord_t2s": ("spinalcord/t2s_t2s.nii.gz", "spinalcord/t2s_t2s_gmseg_manual.nii.gz"),
    "spinalcord_t2": ("spinalcord/t2_t2.nii.gz", "spinalcord/t2_t2_seg-manual.nii.gz"),
    "spinalcord_t1": ("spinalcord/t1_t1w.nii.gz", "spinalcord/t1_t1w_seg-manual.nii.gz"),
}
pytestmark = [pytest.mark.real_data, pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared data at {DATA}")]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_round_trip_keeps_geometry_and_labels(name: str, tmp_path: Path):
    image_path, label_path = (DATA / p for p in PAIRS[name])
    original = nib.load(label_path)
    spacing = original.header.get_zooms()[:3]
    # upsample (finer than the input on every resampled axis) so nearest-neighbour labels return exactly;
    # thick-slice volumes keep their slices (in-plane-only resampling)
    pixdim = target_spacing(spacing, [min(spacing) * 0.75] * 3, in_plane_only=is_anisotropic(spacing))
    keys = ["image", "label"]
    pre = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys, pixdim=pixdim, mode=("bilinear", "nearest")),
        CropForegroundd(keys, source_key="label", margin=4, allow_smaller=True),
    ])
    data = pre({"image": str(image_path), "label": str(label_path)})
    assert data["label"].shape[1:] != original.shape
    data["pred"] = data["label"].clone()
    back = Invertd("pred", transform=pre, orig_keys="label", nearest_interp=True)(data)["pred"]
    labels = np.asarray(original.dataobj)
    restored = np.rint(np.asarray(back[0])).astype(labels.dtype)
    assert restored.shape == labels.shape
    np.testing.assert_allclose(back.affine.numpy(), original.affine, atol=1e-4)
    np.testing.assert_array_equal(restored, labels)  # Dice 1.0 for every label value
    out = write_label_like(restored.astype(np.uint8), image_path, tmp_path / f"{name}_seg.nii.gz")
    written = nib.load(out)
    assert written.shape == labels.shape and np.array_equal(written.affine, nib.load(image_path).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)


def _same_physical_volume(a: sitk.Image, b: sitk.Image) -> None:
    """``a`` resampled onto ``b``'s grid (nearest neighbour) reproduces ``b`` voxel for voxel."""
    resampled = sitk.Resample(a, b, sitk.Transform(), sitk.sitkNearestNeighbor, -3000, a.GetPixelID())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(b))


def test_dicom_series_from_real_ct_reads_back_identically(tmp_path: Path):
    ct = sitk.ReadImage(str(DATA / PAIRS["msd_spleen"][0]))
    write_dicom_series(ct, tmp_path / "spleen_dicom", intercept=-1024.0)
    back = read_volume(tmp_path / "spleen_dicom")
    assert back.GetSize() == ct.GetSize() == (512, 512, 32)
    np.testing.assert_allclose(back.GetSpacing(), ct.GetSpacing(), atol=1e-4)
    # DICOM stacks slices along row x column; this NIfTI's frame is left-handed (L, A, S), so the
    # series comes back in the opposite slice order: the same voxels in the same places in space.
    direction, original = np.reshape(back.GetDirection(), (3, 3)), np.reshape(ct.GetDirection(), (3, 3))
    np.testing.assert_allclose(direction[:, :2], original[:, :2], atol=1e-6)
    np.testing.assert_allclose(np.abs(direction[:, 2]), np.abs(original[:, 2]), atol=1e-6)
    _same_physical_volume(back, ct)  # HU after rescale slope/intercept, voxel for voxel
    labels = sitk.ReadImage(str(DATA / PAIRS["msd_spleen"][1]))
    on_dicom_grid = sitk.Resample(labels, back, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    out = write_label_like(sitk.GetArrayFromImage(on_dicom_grid).transpose(2, 1, 0), tmp_path / "spleen_dicom", tmp_path / "spleen_seg.nii.gz")
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == back.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), back.GetOrigin(), atol=1e-3)
    _same_physical_volume(written, sitk.Cast(labels, sitk.sitkUInt8))
