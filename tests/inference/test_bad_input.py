"""Bad input: a clear error naming the file and the problem, a non-zero exit, no partial output."""

from __future__ import annotations

import json
import shutil
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from app.data.verify import InputError, check_case_images
from app.inference import resolve_inputs
from tests.conftest import case_files, write_header_bomb


@pytest.fixture()
def case(phantom_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "Phantom_000"
    shutil.copytree(phantom_root / "Phantom_000", dst)
    return dst


def test_missing_modality_names_case_and_modality(case: Path):
    (case / "Phantom_000_t1ce.nii.gz").unlink()
    with pytest.raises(InputError, match=r"Phantom_000.*found 3: missing t1ce"):
        resolve_inputs([case], allow_missing=False)


def test_loose_files_of_one_sequence_twice(case: Path, tmp_path: Path):
    t1 = case_files(case)[0]
    other = shutil.copy(t1, tmp_path / "Phantom_000_T1.nii.gz")
    with pytest.raises(InputError, match="two files for t1"):
        resolve_inputs([t1, other])


def test_a_file_type_that_is_not_read_is_said_before_its_name(tmp_path: Path):
    png = tmp_path / "case_flair.png"
    png.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(InputError, match=r"case_flair.png': unsupported file type; expected a DICOM folder or one of .nii.gz"):
        resolve_inputs([png])


def test_a_single_slice_is_named_as_such(case: Path):
    t1 = case / "Phantom_000_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((40, 48, 1), dtype=np.int16), nib.load(t1).affine), t1)
    with pytest.raises(InputError, match=r"expected a 3D volume, got shape \(40, 48, 1\) \(a single slice along axis 2\)"):
        check_case_images(case_files(case))


def test_sequences_over_files_of_two_cases_warn(case: Path, phantom_root: Path, caplog: pytest.LogCaptureFixture):
    files = [case_files(case)[1], case_files(phantom_root / "Phantom_001")[3]]  # T1ce of one case, FLAIR of another
    with caplog.at_level("WARNING"):
        [(case_id, images)] = resolve_inputs(files, sequences=["t1ce", "flair"])
    assert case_id == "Phantom_000" and images[1] == files[0] and images[3] == files[1]
    assert "names name 2 cases (Phantom_000, Phantom_001)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        resolve_inputs(case_files(case)[1::2], sequences=["t1ce", "flair"])
    assert "names name" not in caplog.text  # one case's files: no warning


def test_shape_mismatch_names_file(case: Path):
    t2 = case / "Phantom_000_t2.nii.gz"
    img = nib.load(t2)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), t2)
    with pytest.raises(InputError, match=r"Phantom_000_t2.nii.gz'.*shape \(38, 48, 36\) differs"):
        check_case_images(case_files(case))


def test_affine_mismatch_names_file(case: Path):
    flair = case / "Phantom_000_flair.nii.gz"
    img = nib.load(flair)
    affine = img.affine.copy()
    affine[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), flair)
    with pytest.raises(InputError, match=r"flair.nii.gz': its voxel grid differs from that of .*corner voxels up to 5 mm apart"):
        check_case_images(case_files(case))
    affine = img.affine.copy()
    affine[:2, :2] *= 1.2  # voxels 1.2x larger in x and y: the matrix differs by 0.2, the far corner by far more
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), flair)
    with pytest.raises(InputError, match=r"corner voxels up to (\d+\.?\d*) mm apart \(voxels 1.2 x 1.08 x 1.5 mm against 1 x 0.9 x 1.5 mm\)") as raised:
        check_case_images(case_files(case))
    assert float(re.search(r"up to ([\d.]+) mm", str(raised.value)).group(1)) > 10  # 0.2 x 39 voxels and 0.18 x 47 voxels


def test_unreadable_file(case: Path):
    (case / "Phantom_000_t1.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(InputError, match=r"Phantom_000_t1.nii.gz'.*not a readable NIfTI"):
        check_case_images(case_files(case))


def test_2d_image(case: Path):
    t1 = case / "Phantom_000_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 48), dtype=np.int16), np.eye(4)), t1)
    with pytest.raises(InputError, match=r"expected a 3D volume, got shape \(40, 48\) \(2D\)"):
        check_case_images(case_files(case))


def test_cli_batch_runs_other_cases_and_lists_failures(case: Path, phantom_root: Path, tmp_path: Path):
    (case / "Phantom_000_t2.nii.gz").write_bytes(b"broken")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["segment", str(case), str(phantom_root / "Phantom_001"), "--output", str(out), "--quiet"])
    assert result.exit_code == 1
    assert "1 of 2 case(s) failed" in result.output and "Phantom_000_t2.nii.gz" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_001_seg.nii.gz", "volseg_run.json", "volumes.csv"]  # no partial output, no temp files
    record = json.loads((out / "volseg_run.json").read_text())
    assert [c["error"] is None for c in record["cases"]] == [False, True] and record["monai"]


def test_cli_missing_input_exits_non_zero(tmp_path: Path):
    result = CliRunner().invoke(cli, ["segment", str(tmp_path / "nope"), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "input not found" in result.output
    assert not (tmp_path / "out").exists()


def test_truncated_flair_is_refused_not_zero_filled(case: Path):
    flair = case / "Phantom_000_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[: flair.stat().st_size // 2])
    with pytest.raises(InputError, match=r"^case 'Phantom_000': FLAIR file '.*Phantom_000_flair.nii.gz' is truncated "
                                         r"\(gzip stream ends before its end-of-stream marker"):
        check_case_images(case_files(case))


def test_nan_voxels_are_refused_by_the_case_check(case: Path):
    t2 = case / "Phantom_000_t2.nii.gz"
    img = nib.load(t2)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), t2)
    with pytest.raises(InputError, match=r"case 'Phantom_000': T2 file .*: 1 NaN and 0 infinite voxel values"):
        check_case_images(case_files(case))


@pytest.mark.parametrize("damage", ["truncated", "header_bomb"])
def test_cli_refuses_damaged_case_with_exit_1(case: Path, tmp_path: Path, damage: str):
    if damage == "truncated":
        flair = case / "Phantom_000_flair.nii.gz"
        flair.write_bytes(flair.read_bytes()[: flair.stat().st_size // 2])
    else:
        case = write_header_bomb(tmp_path / "Bomb_000", "Bomb_000")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["segment", str(case), "--output", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "1 of 1 case(s) failed" in result.output and "is truncated" in result.output
    case_id = case.name
    assert f"  {case_id}: FLAIR file" in result.output or damage != "truncated"
    assert f"case '{case_id}': case" not in result.output  # the summary names the case once a line
    assert not list(out.glob("*_seg.nii.gz"))  # no label map from zero-filled or unallocated voxels


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_voxels_after_preprocessing_are_refused(case: Path, monkeypatch: pytest.MonkeyPatch, bad: float):
    """The reader refuses NaN and infinite voxels in a file; ``Segmenter.load`` checks the
    preprocessed image once more (a bundle's own transforms could make them). Huge finite values
    whose float32 sum overflows still pass."""
    import torch

    from app.inference import Segmenter

    seg = Segmenter("brats_unet3d", device="cpu", backend="torch")
    preprocess = seg._preprocess

    def with_voxel(value: float, fill: float | None = None):
        def run(data: dict) -> dict:
            out = preprocess(data)
            if fill is not None:
                out["image"] = torch.full_like(out["image"], fill)
            out["image"][1, 2, 3, 4] = value
            return out
        return run

    monkeypatch.setattr(seg, "_preprocess", with_voxel(bad))
    with pytest.raises(InputError, match=r"case 'Phantom_000': NaN or infinite voxel values in .*Phantom_000_t1.nii.gz"):
        seg.load(case_files(case))
    monkeypatch.setattr(seg, "_preprocess", with_voxel(3e38, fill=3e38))  # sum overflows to inf; every voxel finite
    data = seg.load(case_files(case))
    assert torch.isinf(data["image"].sum()) and bool(torch.isfinite(data["image"]).all())


def test_a_sequence_that_is_not_skull_stripped_is_segmented_with_a_warning_in_the_run_record(case: Path, tmp_path: Path):
    t2 = case / "Phantom_000_t2.nii.gz"
    img = nib.load(t2)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[data == 0] = np.random.default_rng(0).uniform(1, 20, int((data == 0).sum()))  # scanner noise where the skull was stripped
    nib.save(nib.Nifti1Image(data, img.affine), t2)
    result = CliRunner().invoke(cli, ["segment", str(case), "--output", str(tmp_path / "out"), "--quiet", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads((tmp_path / "out" / "volseg_run.json").read_text())["cases"]
    [warning] = [w for w in entry["input_warnings"] if "does not look skull-stripped" in w]  # the phantom is also too small for a brain (93 mL)
    assert warning.startswith("Phantom_000_t2.nii.gz: does not look skull-stripped") and "HD-BET or SynthStrip" in warning
    assert (tmp_path / "out" / "Phantom_000_seg.nii.gz").is_file()


def test_a_case_too_small_for_a_brain_gets_a_warning_and_its_quality_score_a_caveat(case: Path, tmp_path: Path):
    """A spinal-cord MRI passed as FLAIR came back with 63 mL of tumour and quality 0.85, unwarned
    but for skull stripping. The phantom, 29 mL of tissue, is as small."""
    result = CliRunner().invoke(cli, ["segment", str(case), "--output", str(tmp_path / "out"), "--quiet", "--backend", "torch", "--uncertainty"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads((tmp_path / "out" / "volseg_run.json").read_text())["cases"]
    [warning] = entry["input_warnings"]
    assert "mL of non-zero voxels, too little for a brain" in warning and warning.startswith("Phantom_000_t1.nii.gz, ")
    assert "quality score" in result.output and "not to be trusted: the input warnings above" in result.output
