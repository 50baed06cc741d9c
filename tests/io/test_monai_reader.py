"""SimpleITKReader gives LoadImaged the arrays and RAS affines MONAI's own readers give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImage, LoadImaged

from app.data.verify import InputError
from app.io import SimpleITKReader
from tests.io.dicom_util import write_dicom_series


def _volume(path: Path, seed: int) -> Path:
    """(24, 32, 40) voxels, spacing (0.8, 0.8, 2.5) mm, oblique direction, non-zero origin."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-100, 1000, size=(40, 32, 24)).astype(np.int16))
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-12.0, 30.5, 7.25))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix,monai_reader", [(".nii.gz", "NibabelReader"), (".nrrd", "ITKReader"), (".mha", "ITKReader")])
def test_same_arrays_and_affine_as_monai(tmp_path: Path, suffix: str, monai_reader: str):
    files = [str(_volume(tmp_path / f"m{i}{suffix}", i)) for i in range(2)]
    load = lambda reader: LoadImaged("image", ensure_channel_first=True, reader=reader)({"image": files})["image"]  # noqa: E731
    ours, theirs = load("app.io.SimpleITKReader"), load(monai_reader)
    assert ours.shape == theirs.shape == (2, 24, 32, 40)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(theirs.affine), atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.pixdim), (0.8, 0.8, 2.5), atol=1e-6)


def test_dicom_series_folder(tmp_path: Path):
    image = sitk.Clamp(sitk.ReadImage(str(_volume(tmp_path / "v.nii.gz", 3))), lowerBound=0)  # the test series is unsigned
    write_dicom_series(image, tmp_path / "series", series_uid="1.2.826.0.1.3680043.2.1125.9.1", intercept=0.0)
    data = LoadImage(reader=SimpleITKReader(), image_only=True)(str(tmp_path / "series"))
    assert data.shape == (24, 32, 40)
    np.testing.assert_array_equal(np.asarray(data), sitk.GetArrayFromImage(image).T)


def test_bad_files_name_the_file(tmp_path: Path):
    reader = SimpleITKReader()
    assert reader.verify_suffix("a.nrrd") and not reader.verify_suffix("a.png")
    with pytest.raises(InputError, match="missing.nii.gz': file does not exist"):
        reader.read(str(tmp_path / "missing.nii.gz"))
    with pytest.raises(RuntimeError, match="missing.nii.gz': file does not exist"):  # LoadImage wraps it, message kept
        LoadImage(reader=reader)(str(tmp_path / "missing.nii.gz"))
    other = sitk.ReadImage(str(_volume(tmp_path / "b.nii.gz", 1)))
    other.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(other, str(tmp_path / "c.nii.gz"))
    with pytest.raises(RuntimeError, match="affine matrix of all images should be the same"):
        LoadImage(reader=reader)([str(_volume(tmp_path / "a.nii.gz", 0)), str(tmp_path / "c.nii.gz")])


def test_load_volumed_refuses_instead_of_falling_back(tmp_path: Path):
    import nibabel as nib

    from app.io import LoadVolumed

    files = [str(_volume(tmp_path / f"m{i}.nii.gz", i)) for i in range(2)]
    ours = LoadVolumed("image", ensure_channel_first=True)({"image": files})["image"]
    theirs = LoadImaged("image", ensure_channel_first=True, reader="NibabelReader")({"image": files})["image"]
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(theirs.affine), atol=1e-5)
    array = np.ones((24, 32, 40), np.float32)
    array[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.5, 1.0])), str(tmp_path / "Case_1_flair.nii.gz"))
    named = LoadImaged("image", reader="app.io.SimpleITKReader")({"image": str(tmp_path / "Case_1_flair.nii.gz")})["image"]
    assert np.isnan(np.asarray(named)).sum() == 1  # MONAI fell back to nibabel after SimpleITKReader refused
    with pytest.raises(InputError, match=r"case 'Case_1': FLAIR file .*: 1 NaN and 0 infinite voxel values"):
        LoadVolumed("image")({"image": str(tmp_path / "Case_1_flair.nii.gz")})


@pytest.mark.parametrize("shape", [(33, 5, 7), (32, 4, 6), (1, 3, 2), (70, 9, 11), (4, 6), (3, 4, 5, 2)])
def test_xyz_copy_is_a_contiguous_transpose(shape):
    """The slab-wise copy equals ``view.T`` for z not a multiple of the slab, one slice, 2D and
    vector (z, y, x, c) buffers, and never shares memory with the buffer."""
    from app.io.monai_reader import _xyz_copy

    view = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    out = _xyz_copy(view, slab=32)
    assert out.flags["C_CONTIGUOUS"] and out.dtype == view.dtype
    assert np.array_equal(out, view.T) and not np.shares_memory(out, view)


def test_files_read_in_parallel_threads_give_the_serial_read(tmp_path: Path, monkeypatch):
    import app.io.monai_reader as monai_reader

    files = [str(_volume(tmp_path / f"m{i}.nii.gz", i)) for i in range(4)]
    threads, serial = SimpleITKReader().read(files), [sitk.ReadImage(f) for f in files]
    assert len(threads) == 4
    for ours, theirs in zip(threads, serial):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
        assert ours.GetSpacing() == theirs.GetSpacing() and ours.GetOrigin() == theirs.GetOrigin()
    monkeypatch.setattr(monai_reader, "usable_cores", lambda: 4)  # threads even on a 1-core runner
    (tmp_path / "m1.nii.gz").write_bytes((tmp_path / "m1.nii.gz").read_bytes()[:200])  # truncated
    (tmp_path / "m3.nii.gz").unlink()
    with pytest.raises(InputError, match="m1.nii.gz"):  # the first failing file in the order given
        SimpleITKReader().read(files)


def test_load_volumed_is_quiet_about_monais_unused_gpu_dicom_reader(tmp_path: Path, caplog):
    """MONAI 1.6's LoadImage also builds NvImgCodecPydicomReader, which logs and warns about a
    missing nvImageCodec on every machine without it: LoadVolumed never uses that reader, so both
    notices are dropped while it is built, and only then (other records still pass afterwards)."""
    import logging
    import warnings

    from app.io import LoadVolumed
    from app.io.monai_reader import _NVIMGCODEC_LOGGER

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        loader = LoadVolumed("image", ensure_channel_first=True)
    assert [str(w.message) for w in caught if "nvImageCodec" in str(w.message)] == []
    assert [r.getMessage() for r in caplog.records if "nvImageCodec" in r.getMessage()] == []
    plugin = logging.getLogger(_NVIMGCODEC_LOGGER)
    assert plugin.filters == []  # the filter is gone once the loader is built
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        plugin.warning("nvImageCodec is not available; a record after the build")
    assert [r.getMessage() for r in caplog.records if r.name == _NVIMGCODEC_LOGGER] == ["nvImageCodec is not available; a record after the build"]
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)), str(path))
    assert tuple(loader({"image": str(path)})["image"].shape) == (1, 4, 3, 2)  # and it still reads


def test_load_volumed_names_the_files_of_a_wrong_count_or_another_grid(tmp_path: Path):
    """Under MONAI's runner, three sequences for a four-channel network failed inside its first
    convolution, and a sequence on another grid with MONAI's affine dump: neither named a file."""
    from app.io import LoadVolumed

    files = [str(_volume(tmp_path / f"m{i}.nii.gz", i)) for i in range(3)]
    load = LoadVolumed("image", channels={"image": 4}, ensure_channel_first=True)
    with pytest.raises(InputError, match=r"'image': 3 file\(s\) given \(.*m0.nii.gz, .*m2.nii.gz\), the bundle's network takes 4.*null \(None\)"):
        load({"image": files})
    assert load({"image": [*files, None]})["image"].shape[0] == 4  # a missing sequence as None: zero-filled
    with pytest.raises(InputError, match=r"takes 1, one a channel in its order; a one-channel bundle takes one volume a case") as ct:
        LoadVolumed("image", channels={"image": 1}, ensure_channel_first=True)({"image": files[:2]})
    assert "null" not in str(ct.value)  # the BraTS advice about missing MRI sequences is not for a CT bundle
    other = sitk.ReadImage(files[2])
    other.SetSpacing((1.0, 0.8, 2.5))
    sitk.WriteImage(other, files[2])
    with pytest.raises(InputError, match=r"m2.nii.gz' \(size \(24, 32, 40\), spacing \(1.0, 0.8, 2.5\) mm, .*is not on the voxel grid of '.*m0.nii.gz'"):
        load({"image": [*files, None]})


def test_a_zero_filled_sequence_is_named_under_monai_bundle_only(phantom_root: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    """`python -m monai.bundle run` on a case without T2 segmented it without a word (volseg segment
    names the missing sequences itself, with the subset's CV Dice)."""
    import logging

    import app.errors
    from app.io.monai_reader import LoadVolumed

    case = phantom_root / "Phantom_001"
    files = [str(case / f"Phantom_001_{m}.nii.gz") if m != "t2" else None for m in ("t1", "t1ce", "t2", "flair")]
    with caplog.at_level(logging.WARNING, logger="volseg"):
        LoadVolumed("image", ensure_channel_first=True)({"image": files, "case_id": "Phantom_001"})
        assert "zero-filled" not in caplog.text
        monkeypatch.setattr(app.errors, "under_monai_bundle", lambda: True)
        out = LoadVolumed("image", ensure_channel_first=True)({"image": files, "case_id": "Phantom_001"})
    assert out["image"].shape[0] == 4 and not out["image"][2].any()
    assert "Phantom_001: no t2: zero-filled, as the bundle was trained (modality dropout)" in caplog.text
