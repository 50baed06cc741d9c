"""Verified reading: truncated, corrupt, non-finite, blank and oversized volumes are refused
(each of these was read, zero-filled or allocated before app.io.integrity)."""

from __future__ import annotations

import gzip
import re
import resource
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app.data.verify import InputError, check_case_images
from app.io import SimpleITKReader, read_volume, verify_volume
from app.io import integrity

SHAPE = (24, 32, 40)  # (i, j, k)
SPACING = (0.8, 0.8, 2.5)
AFFINE = np.diag([*SPACING, 1.0]) @ np.array([[1, 0, 0, -9.6], [0, 1, 0, 12.0], [0, 0, 1, -50.0], [0, 0, 0, 1]])


def _array(dtype=np.int16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 800, SHAPE).astype(dtype)


def _nifti(path: Path, array: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(_array() if array is None else array, AFFINE), str(path))
    return path


def _case(folder: Path, case_id: str = "Case_1") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_nifti(folder / f"{case_id}_{m}.nii.gz", _array(seed=i)) for i, m in enumerate(("t1", "t1ce", "t2", "flair"))]


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


READERS = {
    "read_volume": read_volume,
    "SimpleITKReader": lambda p: SimpleITKReader().read(str(p)),
    "verify_volume": verify_volume,
}


@pytest.mark.parametrize("entry", READERS)
def test_truncated_nii_gz_is_refused(tmp_path: Path, entry: str):
    flair = _case(tmp_path / "Case_1")[3]
    _truncate(flair)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(flair))).size == np.prod(SHAPE)  # ITK alone zero-fills it
    with pytest.raises(InputError, match=r"^case 'Case_1': FLAIR file '.*Case_1_flair.nii.gz' is truncated "
                                         r"\(gzip stream ends before its end-of-stream marker"):
        READERS[entry](flair)


def test_truncated_case_is_refused_by_the_case_check(tmp_path: Path):
    files = _case(tmp_path / "Case_1")
    _truncate(files[1], 0.9)
    with pytest.raises(InputError, match=r"case 'Case_1': T1ce file .* is truncated"):
        check_case_images(files)


def test_corrupted_crc_is_refused(tmp_path: Path):
    files = _case(tmp_path / "Case_1")
    data = bytearray(files[2].read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32: every voxel intact, the checksum wrong
    files[2].write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"case 'Case_1': T2 file .* is corrupt \(gzip CRC check failed\)"):
        check_case_images(files)  # headers alone before: it reached the reader
    with pytest.raises(InputError, match="gzip CRC check failed"):  # before: ITK's "Unable to determine ImageIO reader"
        read_volume(files[2])


def test_truncated_uncompressed_nii_is_refused(tmp_path: Path):
    path = _nifti(tmp_path / "ct.nii")
    _truncate(path, 0.97)
    with pytest.raises(InputError, match=r"file '.*ct.nii' is truncated: 59,938 bytes, its header declares 61,792 bytes "
                                         r"\(24 x 32 x 40 int16 voxels from byte 352\)"):
        read_volume(path)


@pytest.mark.parametrize("value,counts", [(np.nan, "3 NaN and 0 infinite"), (np.inf, "0 NaN and 3 infinite"), (-np.inf, "0 NaN and 3 infinite")])
def test_non_finite_voxels_are_refused_by_every_entry(tmp_path: Path, value: float, counts: str):
    files = _case(tmp_path / "Case_1")
    array = _array(np.float32)
    array[0, 0, 0] = array[5, 17, 3] = array[-1, -1, -1] = value
    _nifti(files[0], array)
    with pytest.raises(InputError, match=rf"case 'Case_1': T1 file .*: {counts} voxel values"):
        check_case_images(files)  # headers alone before: the NaN reached the model as 0 or NaN
    assert not np.isnan(sitk.GetArrayViewFromImage(sitk.ReadImage(str(files[0])))).any()  # ITK alone reads NaN as 0
    with pytest.raises(InputError, match=counts):
        read_volume(files[0])
    with pytest.raises(InputError, match=counts):
        SimpleITKReader().read(str(files[0]))


def test_voxel_scan_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(integrity, "CHUNK_BYTES", 1001)  # odd: voxels straddle every chunk edge
    array = _array(np.float64)
    flat = array.reshape(-1, order="F")
    for index in (0, 125, 126, 9_999, flat.size - 1):
        array[np.unravel_index(index, SHAPE, order="F")] = np.nan
    path = _nifti(tmp_path / "Case_1_t2.nii.gz", array)
    counts = integrity.verify_nifti_data(path, scan_voxels=True)
    assert (counts.nan, counts.inf, counts.nonzero) == (5, 0, True)


def test_all_zero_sequence_is_refused_but_an_empty_label_reads(tmp_path: Path):
    files = _case(tmp_path / "Case_1")
    _nifti(files[2], np.zeros(SHAPE, np.int16))
    with pytest.raises(InputError, match=r"case 'Case_1': T2 file .*: every voxel is zero; .*move the file out of the case to segment it without this sequence"):
        check_case_images(files)
    with pytest.raises(InputError, match="every voxel is zero"):
        SimpleITKReader().read(str(files[2]))
    label = _nifti(tmp_path / "Case_1" / "Case_1_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    assert read_volume(label).GetSize() == SHAPE  # a tumour-free label map is not a blank sequence


def _header_bomb(path: Path, shape: tuple[int, ...]) -> Path:
    """A gzip NIfTI of about 100 bytes: a header declaring ``shape`` int16 voxels, and no voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms(SPACING)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    return path


def test_header_over_the_voxel_budget_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_voxels(*args, **kwargs):
        raise AssertionError("voxels read despite the budget")

    monkeypatch.setattr(sitk, "ReadImage", no_voxels)
    monkeypatch.setattr(integrity, "_stream", no_voxels)
    bomb = _header_bomb(tmp_path / "Case_1_flair.nii.gz", (4000, 4000, 3000))
    with pytest.raises(InputError, match=r"FLAIR file .*: header declares 48,000,000,000 voxels \(4000 x 4000 x 3000\), "
                                         r"over the budget of 1,073,741,824; set VOLSEG_MAX_VOXELS"):
        read_volume(bomb)
    monkeypatch.setenv("VOLSEG_MAX_VOXELS", "30000")  # a valid volume of 30,720 voxels, one over a lower budget
    with pytest.raises(InputError, match="over the budget of 30,000"):
        read_volume(_nifti(tmp_path / "small.nii.gz"))
    monkeypatch.setenv("VOLSEG_MAX_VOXELS", "lots")
    with pytest.raises(InputError, match="VOLSEG_MAX_VOXELS='lots': expected a positive voxel count"):
        read_volume(bomb)


def test_header_bombs_within_budget_are_refused_without_allocating(tmp_path: Path):
    """The issue's four 97-byte headers declaring 1000^3 int16 voxels (2 GB each)."""
    case = tmp_path / "Bomb_1"
    case.mkdir()
    files = [_header_bomb(case / f"Bomb_1_{m}.nii.gz", (1000, 1000, 1000)) for m in ("t1", "t1ce", "t2", "flair")]
    assert max(f.stat().st_size for f in files) < 120
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match=r"case 'Bomb_1': T1 file .* is truncated: its gzip stream inflates to 352 bytes, "
                                         r"its header declares 2,000,000,352 bytes"):
        check_case_images(files)
    with pytest.raises(InputError, match="is truncated"):
        SimpleITKReader().read([str(f) for f in files])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb < 200_000  # kB: no 2 GB array


def test_gzip_inflating_past_its_header_is_refused(tmp_path: Path):
    path = _nifti(tmp_path / "x.nii")
    (tmp_path / "x.nii.gz").write_bytes(gzip.compress(path.read_bytes() + b"\0" * (integrity.INFLATE_SLACK_BYTES + 1)))
    with pytest.raises(InputError, match="inflates past the 61,792 bytes .* its header declares"):
        read_volume(tmp_path / "x.nii.gz")


@pytest.mark.parametrize("suffix,compress", [(".nrrd", False), (".nrrd", True), (".mha", False), (".mha", True)])
def test_truncated_nrrd_and_metaimage_are_refused(tmp_path: Path, suffix: str, compress: bool):
    path = tmp_path / f"Case_1_t1{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(_array().T), str(path), compress)
    _truncate(path, 0.8)
    with pytest.raises(InputError, match=r"case 'Case_1': T1 file .*: header is readable but its voxel data is not \(truncated"):
        read_volume(path)


def test_a_truncated_metaimage_is_not_said_to_be_missing(tmp_path: Path):
    """ITK's last line for a truncated .mha is C's stale errno, "Reason: No such file or directory",
    which the message quoted for a file that is there."""
    path = tmp_path / "ct.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_array().T), str(path))
    _truncate(path, 0.5)
    with pytest.raises(InputError, match=r"'.*ct.mha': header is readable but its voxel data is not \(truncated or corrupt file\)$"):
        read_volume(path)


@pytest.mark.parametrize("header,data", [("ct.mhd", "ct.raw"), ("ct.nhdr", "ct.raw")])
def test_a_detached_header_without_its_data_file_names_that_file(tmp_path: Path, header: str, data: str):
    sitk.WriteImage(sitk.GetImageFromArray(_array().T), str(tmp_path / header))
    (tmp_path / data).unlink()
    expected = rf"'.*{header}': its header names the data file '.*{data}', which does not exist \(copy it beside the header\)"
    with pytest.raises(InputError, match=expected):
        read_volume(tmp_path / header)
    with pytest.raises(InputError, match=expected):
        check_case_images([tmp_path / header])


@pytest.mark.parametrize("name,shape", [("slice.mha", "(3, 3) (2D)"), ("series.nrrd", "(8, 8, 8, 2) (4D)")])
def test_a_2d_or_4d_nrrd_or_metaimage_is_refused_by_its_shape(tmp_path: Path, name: str, shape: str):
    """A 2D .mha or a 4D .nrrd stopped the case check with "cannot reshape array of size 4 into shape
    (3,3)", naming no file, and as a plain ValueError from the API."""
    volume = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32))
    image = sitk.GetImageFromArray(np.zeros((3, 3), np.float32)) if name == "slice.mha" else sitk.JoinSeries([volume, volume])
    sitk.WriteImage(image, str(tmp_path / name))
    with pytest.raises(InputError, match=rf"'.*{name}': expected a 3D volume, got shape {re.escape(shape)}"):
        check_case_images([tmp_path / name])


@pytest.mark.parametrize("suffix,compress", [(".nii.gz", True), (".nii", False), (".nrrd", False), (".nrrd", True),
                                             (".mha", False), (".mha", True)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_valid_volumes_read_as_before(tmp_path: Path, suffix: str, compress: bool, dtype):
    image = sitk.GetImageFromArray(_array(dtype).T)  # (i, j, k) -> SimpleITK's (k, j, i) array
    image.SetSpacing(SPACING)
    image.SetOrigin((-9.6, 12.0, -50.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / f"Case_1_flair{suffix}"
    sitk.WriteImage(image, str(path), compress)
    ours, plain = read_volume(path), sitk.ReadImage(str(path))
    assert ours.GetSize() == plain.GetSize() == SHAPE and ours.GetPixelID() == plain.GetPixelID()
    assert ours.GetSpacing() == plain.GetSpacing() and ours.GetOrigin() == plain.GetOrigin()
    assert ours.GetDirection() == plain.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(plain))
    verify_volume(path)  # and the case check's streaming pass accepts it


def test_a_failed_write_names_the_file_not_its_temporary_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A full disk said "spleen_8: [Errno 28] No space left on device" (no file) or SimpleITK's
    multi-line error about '.e_spleen_seg.mha.zgzazk9s.tmp.mha'."""
    import errno

    from app.io.atomic import atomic_write, atomic_write_nifti

    def full(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"cannot write '.*spleen_8_seg.nii.gz': No space left on device") as raised:
        atomic_write(tmp_path / "spleen_8_seg.nii.gz", full)
    assert raised.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []

    def itk_failed(tmp: str) -> None:
        raise RuntimeError(f"Exception thrown in SimpleITK ImageFileWriter_Execute: /x/itkImageFileWriter.hxx:123:\nITK ERROR: could not write {tmp}")

    with pytest.raises(RuntimeError, match=r"^cannot write '.*e_seg.mha': ITK ERROR: could not write .*e_seg.mha$"):
        atomic_write(tmp_path / "e_seg.mha", itk_failed, suffix=".mha")
    assert list(tmp_path.iterdir()) == []
    assert atomic_write_nifti(np.zeros((2, 2, 2), np.uint8), np.eye(4), tmp_path / "ok.nii.gz").is_file()  # and a write that works
