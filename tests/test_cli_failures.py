"""`volseg segment` fails cleanly (issue 14, item 4): output problems before any model loads, one
line and exit 2 for a user error, every case of a batch attempted, duplicates segmented once, and
outputs already written skipped unless --overwrite.

The batch's control flow is tested with a stand-in for the model (:class:`FakeSegmenter`) that
reads and verifies each case exactly as the real one does (``check_case_images``: complete gzip
streams, NaN, voxel budget) and writes a fixed label, so these tests take seconds; the real
model runs in tests/inference/test_bad_input.py and tests/inference/test_distributed.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from app.cli import app as cli
from app.data.verify import InputError, check_case_images
from tests.conftest import write_header_bomb


class FakeSegmenter:
    """Verifies a case as ``Segmenter.load`` does; 'segments' it as label 2 in a corner block."""

    device, backend, precision, mode = "cpu", "torch", "f32", "fast"
    parser: dict = {}

    def __init__(self) -> None:
        self.segmented: list[str] = []

    def load(self, images: list) -> dict:
        shape, affine = check_case_images([p for p in images if p is not None])
        return {"shape": shape, "affine": affine, "images": images}

    def run_case(self, data: dict) -> dict:
        self.segmented.append(Path(next(p for p in data["images"] if p is not None)).parent.name)
        label = np.zeros(data["shape"], dtype=np.uint8)
        label[:4, :4, :4] = 2
        missing = [m for m, p in zip(("t1", "t1ce", "t2", "flair"), data["images"]) if p is None]
        return {"label": label, "affine": data["affine"], "missing_sequences": missing}


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSegmenter:
    model = FakeSegmenter()
    monkeypatch.setattr("app.inference.batch.make_segmenter", lambda settings, device=None: model)
    return model


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load fails the test: the error must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was found")

    monkeypatch.setattr("app.inference.batch.make_segmenter", refuse)


@pytest.fixture()
def cases(phantom_copies: list[Path]) -> list[Path]:
    """Three writable copies of phantom cases."""
    return phantom_copies


def _segment(*args: str | Path) -> object:
    return CliRunner().invoke(cli, ["segment", *map(str, args), "--quiet", "--device", "cpu"])


def _one_line_error(result) -> str:
    """The error line of a clean user-error exit: code 2, no traceback, one ``error:`` line."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# --- output problems: found before any model loads ------------------------------------------

def test_output_that_is_a_file_is_refused_before_the_model(cases: list[Path], tmp_path: Path, no_model: None):
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"keep me")
    line = _one_line_error(_segment(cases[0], "-o", out))
    assert f"output folder '{out}' is an existing file, not a folder" in line
    assert out.read_bytes() == b"keep me"


def test_output_below_a_file_is_refused_before_the_model(cases: list[Path], tmp_path: Path, no_model: None):
    (tmp_path / "file").write_text("x")
    line = _one_line_error(_segment(cases[0], "-o", tmp_path / "file" / "out"))
    assert "cannot create output folder" in line and f"'{tmp_path / 'file'}' is a file" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_output_folder_is_refused_before_the_model(cases: list[Path], tmp_path: Path, no_model: None):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    line = _one_line_error(_segment(cases[0], "-o", out))
    assert f"output folder '{out}' is not writable" in line


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs (a folder nobody may create in)")
def test_output_folder_that_cannot_be_created_is_refused_before_the_model(cases: list[Path], no_model: None):
    out = Path("/sys/volseg_test_out")
    line = _one_line_error(_segment(cases[0], "-o", out))
    assert f"cannot create output folder '{out}'" in line and not out.exists()


def test_output_label_path_taken_by_a_folder_fails_that_case_only(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    out = tmp_path / "out"
    (out / "Phantom_001_seg.nii.gz").mkdir(parents=True)
    result = _segment(*cases, "-o", out)
    assert result.exit_code == 1 and "1 of 3 case(s) failed" in result.output and "exists and is not a file" in result.output
    assert fake.segmented == ["Phantom_000", "Phantom_002"]


# --- user errors: one line, exit 2, nothing written -----------------------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--output-format", "dicom"], "output_format must be 'same' or 'nifti', got 'dicom'"),
    (["--bundle", "no_such_bundle"], "no_such_bundle"),
    (["--nproc", "0"], "--nproc must be >= 1, got 0"),
    (["--device", "tpu"], "--device 'tpu' is not a device"),
])
def test_bad_flags_give_one_line(cases: list[Path], tmp_path: Path, no_model: None, flags: list[str], message: str):
    result = CliRunner().invoke(cli, ["segment", str(cases[0]), "-o", str(tmp_path / "out"), "--quiet", *flags])
    assert message in _one_line_error(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_gives_one_line(cases: list[Path], tmp_path: Path, no_model: None):
    result = CliRunner().invoke(cli, ["segment", str(cases[0]), "-o", str(tmp_path / "out"), "--device", "cuda"])
    assert "CUDA is not available on this machine" in _one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_missing_input_among_others_gives_one_line_and_writes_nothing(cases: list[Path], tmp_path: Path, no_model: None):
    assert f"input not found: {tmp_path / 'typo'}" in _one_line_error(_segment(cases[0], tmp_path / "typo", "-o", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# --- a batch: every case attempted, failures listed -----------------------------------------

def _truncate(case: Path) -> str:
    flair = case / f"{case.name}_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[: flair.stat().st_size // 2])
    return "is truncated"


def _nan(case: Path) -> str:
    t2 = case / f"{case.name}_t2.nii.gz"
    img = nib.load(t2)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[5, 6, 7] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), t2)
    return "T2 file"


def _header_bomb(case: Path) -> str:
    """Each sequence a ~97-byte gzip NIfTI header claiming 1000^3 int16 voxels (the issue's probe)."""
    write_header_bomb(case, case.name)
    return "Phantom_001"


def _not_a_case(case: Path) -> str:
    for f in case.iterdir():
        f.unlink()
    return "found none (the folder is empty)"


@pytest.mark.parametrize("damage", [_truncate, _nan, _header_bomb, _not_a_case], ids=["truncated_gz", "nan", "header_bomb", "no_volumes"])
def test_broken_middle_case_fails_alone(cases: list[Path], tmp_path: Path, fake: FakeSegmenter, damage):
    message = damage(cases[1])
    out = tmp_path / "out"
    result = _segment(*cases, "-o", out)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "1 of 3 case(s) failed:" in result.output and "Phantom_001:" in result.output and message in result.output
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_000_seg.nii.gz", "Phantom_002_seg.nii.gz", "volseg_run.json", "volumes.csv"]
    record = json.loads((out / "volseg_run.json").read_text())
    assert [(c["case_id"], c["error"] is None) for c in record["cases"]] == [("Phantom_000", True), ("Phantom_001", False), ("Phantom_002", True)]


def test_middle_case_missing_a_sequence_is_segmented_with_the_others(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    (cases[1] / "Phantom_001_t2.nii.gz").unlink()
    out = tmp_path / "out"
    result = _segment(*cases, "-o", out)
    assert result.exit_code == 0, result.output
    assert fake.segmented == ["Phantom_000", "Phantom_001", "Phantom_002"]
    record = json.loads((out / "volseg_run.json").read_text())
    assert [c["missing_sequences"] for c in record["cases"]] == [[], ["t2"], []]


def test_dataset_folder_of_cases_is_segmented_case_by_case(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    """``volseg segment <dataset>``: a BraTS-style folder of case folders stands for its cases, in
    name order; a file and a folder that is no case beside them are left out, and a broken case
    fails alone."""
    from app.inference import resolve_inputs

    dataset = cases[0].parent
    (dataset / "README.md").write_text("three phantom cases\n")
    (dataset / "derivatives").mkdir()
    (cases[1] / "Phantom_001_flair.nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "out"
    result = _segment(dataset, "-o", out)
    assert result.exit_code == 1, result.output  # one case failed, the others were written
    assert fake.segmented == ["Phantom_000", "Phantom_002"]
    record = json.loads((out / "volseg_run.json").read_text())
    assert [(c["case_id"], c["error"] is None) for c in record["cases"]] == [("Phantom_000", True), ("Phantom_001", False), ("Phantom_002", True)]
    assert "Phantom_001_flair.nii.gz" in record["cases"][1]["error"]
    assert [case_id for case_id, _ in resolve_inputs([dataset])] == ["Phantom_000", "Phantom_001", "Phantom_002"]  # the API
    (dataset / "Phantom_000_t1.nii.gz").write_bytes(b"")  # a loose sequence file: not a dataset folder any more
    with pytest.raises(InputError, match="data"):
        resolve_inputs([dataset])


def test_folder_of_dataset_folders_says_what_to_give(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    """A folder one level above the cases (BraTS 2018's HGG / LGG) fails with the folders it holds
    named and what to give instead."""
    top = tmp_path / "MICCAI_BraTS"
    (top / "HGG").mkdir(parents=True)
    shutil.move(str(cases[0].parent), str(top / "HGG" / "data"))
    result = _segment(top, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "it holds folders (HGG): give the case folders, or a dataset folder that holds them directly" in result.output, result.output
    assert fake.segmented == []


# --- duplicates and resuming ----------------------------------------------------------------

def test_same_case_through_other_paths_is_segmented_once(cases: list[Path], tmp_path: Path, fake: FakeSegmenter, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "Phantom_000").symlink_to(cases[0], target_is_directory=True)
    monkeypatch.chdir(cases[0].parent)
    out = tmp_path / "out"
    result = _segment(cases[0], "Phantom_000", "../data/./Phantom_000", tmp_path / "links" / "Phantom_000", cases[1], "-o", out)
    assert result.exit_code == 0, result.output
    assert fake.segmented == ["Phantom_000", "Phantom_001"]
    record = json.loads((out / "volseg_run.json").read_text())
    assert [c["case_id"] for c in record["cases"]] == ["Phantom_000", "Phantom_001"]
    assert len(record["notes"]) == 3 and all("given more than once" in n for n in record["notes"])


def test_two_cases_with_one_id_do_not_overwrite_each_other(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                           caplog: pytest.LogCaptureFixture):
    other = shutil.copytree(cases[0], tmp_path / "elsewhere" / "Phantom_000")
    result = _segment(cases[0], other, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "case ID 'Phantom_000'" in result.output and "rename one case" in result.output
    assert fake.segmented == ["Phantom_000"]
    # refused while planning, and logged like a case that fails while it runs (the API's callers see it too)
    assert any(r.levelname == "ERROR" and "case 'Phantom_000' failed:" in r.getMessage() and "rename one case" in r.getMessage() for r in caplog.records)


def test_written_cases_are_skipped_unless_overwrite(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    out = tmp_path / "out"
    assert _segment(cases[0], cases[1], "-o", out).exit_code == 0
    (out / "Phantom_001_seg.nii.gz").unlink()  # as if the first run had stopped after one case
    resumed = _segment(cases[0], cases[1], "-o", out)
    assert resumed.exit_code == 0 and "Phantom_000: skipped:" in resumed.output and "(--overwrite to segment it again)" in resumed.output
    assert fake.segmented == ["Phantom_000", "Phantom_001", "Phantom_001"]
    record = json.loads((out / "volseg_run.json").read_text())
    assert record["cases"][0]["note"].startswith("skipped") and record["cases"][0]["output"] == str(out / "Phantom_000_seg.nii.gz")
    again = CliRunner().invoke(cli, ["segment", str(cases[0]), "-o", str(out), "--quiet", "--overwrite"])
    assert again.exit_code == 0 and fake.segmented[-1] == "Phantom_000" and len(fake.segmented) == 4


def test_a_label_map_cut_short_or_of_another_size_is_not_skipped(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                                 caplog: pytest.LogCaptureFixture):
    """A resumed batch kept whatever file had the label map's name: one cut short when a run was killed
    (unreadable) was skipped, and its volumes taken from the run record."""
    out = tmp_path / "out"
    assert _segment(cases[0], cases[1], cases[2], "-o", out).exit_code == 0
    cut = out / "Phantom_000_seg.nii.gz"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    small = out / "Phantom_001_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), small)
    resumed = _segment(cases[0], cases[1], cases[2], "-o", out)
    assert resumed.exit_code == 0 and fake.segmented[3:] == ["Phantom_000", "Phantom_001"]  # Phantom_002 is skipped
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert f"case 'Phantom_000': the label map already in {out} cannot be read (file '{cut}' is truncated" in warned
    assert f"case 'Phantom_001': the label map already in {out} is 4 x 4 x 4 voxels, not the 40 x 48 x 36 of" in warned
    assert nib.load(cut).get_fdata().shape == nib.load(cases[0] / "Phantom_000_t1.nii.gz").shape


def test_a_copied_output_folder_resumes_from_its_own_files_and_any_working_folder(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    """volseg_run.json named the files relative to the working folder of the run: a resume from another
    folder found no uncertainty map and segmented every case again, and a copied folder's record (volumes,
    report) pointed at the original folder's label maps."""
    monkeypatch.chdir(tmp_path)
    assert _segment(cases[0], cases[1], "-o", "out").exit_code == 0
    record = json.loads((tmp_path / "out" / "volseg_run.json").read_text())
    assert [c["output"] for c in record["cases"]] == [str(tmp_path / "out" / f"Phantom_00{i}_seg.nii.gz") for i in (0, 1)]
    shutil.copytree(tmp_path / "out", tmp_path / "copy")
    label = tmp_path / "copy" / "Phantom_000_seg.nii.gz"
    image = nib.load(label)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine, image.header), label)  # no tumour in the copy
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert _segment(cases[0], cases[1], "-o", "../copy").exit_code == 0 and len(fake.segmented) == 2  # both skipped
    copied = json.loads((tmp_path / "copy" / "volseg_run.json").read_text())["cases"]
    assert [c["output"] for c in copied] == [str(tmp_path / "copy" / f"Phantom_00{i}_seg.nii.gz") for i in (0, 1)]
    assert copied[0]["volumes_ml"]["WT"] == 0 and copied[1]["volumes_ml"]["WT"] > 0  # from the copy's own label maps


def test_a_second_batch_in_the_same_folder_keeps_the_first(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    """The README's commands share one output folder: a later batch must not drop the earlier cases
    from volseg_run.json and volumes.csv, and each case says what it was segmented with."""
    out = tmp_path / "out"
    assert _segment(cases[0], cases[1], "-o", out).exit_code == 0
    assert _segment(cases[2], "-o", out).exit_code == 0
    record = json.loads((out / "volseg_run.json").read_text())
    assert [c["case_id"] for c in record["cases"]] == ["Phantom_000", "Phantom_001", "Phantom_002"]
    assert all(c["settings"] == {"bundle": "brats_unet3d", "mode": "fast", "n4_average": False, "n4_params": None, "precision": "f32", "weights": None, "label_codes": "2018"} for c in record["cases"])
    assert all(c["inputs"][0].endswith("_t1.nii.gz") and c["volumes_ml"]["ED"] > 0 for c in record["cases"])
    assert [row.split(",")[0] for row in (out / "volumes.csv").read_text().splitlines()[1:]] == ["Phantom_000", "Phantom_001", "Phantom_002"]
    assert record["notes"] == ["2 case(s) of earlier batches in this folder are kept, first; the settings above are this batch's, each case's own are under its 'settings'"]


def test_the_run_record_names_inputs_given_as_relative_paths_absolutely(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(cases[0].parent)
    assert _segment(cases[0].name, "-o", tmp_path / "out").exit_code == 0
    inputs = json.loads((tmp_path / "out" / "volseg_run.json").read_text())["cases"][0]["inputs"]
    assert inputs == [str(cases[0] / f"{cases[0].name}_{s}.nii.gz") for s in ("t1", "t1ce", "t2", "flair")]


def test_a_written_case_made_with_other_settings_is_segmented_again(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    out = tmp_path / "out"
    assert _segment(cases[0], cases[1], "-o", out).exit_code == 0
    same = _segment(cases[0], "-o", out)  # same settings: skipped, its entry kept with the note
    entry = json.loads((out / "volseg_run.json").read_text())["cases"]
    assert same.exit_code == 0 and fake.segmented == ["Phantom_000", "Phantom_001"]
    assert entry[1]["case_id"] == "Phantom_000" and entry[1]["note"].startswith("skipped") and entry[1]["settings"]["mode"] == "fast"
    fake.mode = "accurate"  # as `--mode accurate` would resolve
    assert _segment(cases[0], "-o", out).exit_code == 0
    assert fake.segmented == ["Phantom_000", "Phantom_001", "Phantom_000"]  # not skipped: its label was a fast-mode one
    by_id = {c["case_id"]: c for c in json.loads((out / "volseg_run.json").read_text())["cases"]}
    assert by_id["Phantom_000"]["settings"]["mode"] == "accurate" and by_id["Phantom_000"]["note"] is None
    assert by_id["Phantom_001"]["settings"]["mode"] == "fast"  # the earlier case keeps what it was made with
    fake.mode = "fast"
    assert _segment(cases[1], "-o", out, "--uncertainty").exit_code == 0
    assert fake.segmented[-1] == "Phantom_001"  # it has no uncertainty map, which this run asks for


def test_a_run_record_of_an_earlier_version_gives_its_cases_the_record_settings(tmp_path: Path):
    from app.inference.batch import earlier_entries

    (tmp_path / "volseg_run.json").write_text(json.dumps({"bundle": "brats_unet3d", "mode": "accurate", "n4_average": True, "precision": "int8",
                                                          "cases": [{"case_id": "A", "output": "A_seg.nii.gz"}]}))
    assert earlier_entries(tmp_path)["A"]["settings"] == {"bundle": "brats_unet3d", "mode": "accurate", "n4_average": True, "precision": "int8"}
    (tmp_path / "volseg_run.json").write_text("{not json")
    assert earlier_entries(tmp_path) == {} and earlier_entries(tmp_path / "none") == {}


def test_dicom_seg_without_highdicom_stops_before_any_case(cases: list[Path], tmp_path: Path, no_model: None, monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "highdicom" else find_spec(name, *a))
    result = _segment(cases[0], "-o", tmp_path / "out", "--dicom-seg")
    assert "--dicom-seg (DICOM SEG output) needs highdicom: pip install 'volseg[dicom]'" in _one_line_error(result)
    assert "VOLSEG_FULL_IMPORT" not in result.output and not (tmp_path / "out").exists()


def test_a_dicom_seg_that_fails_keeps_the_written_label_map_and_says_so(phantom_root: Path, tmp_path: Path, fake: FakeSegmenter,
                                                                       monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("highdicom")
    import SimpleITK as sitk

    from tests.conftest import case_files
    from tests.io.dicom_util import write_dicom_series

    series = []
    for i, src in enumerate(case_files(phantom_root / "Phantom_002")):
        series.append(tmp_path / "Study_8" / f"series_{i}")
        write_dicom_series(sitk.ReadImage(str(src)), series[-1], series_uid=f"1.2.826.0.1.3680043.2.1125.8.{i}", intercept=0.0)

    def no_frame_of_reference(*args, **kwargs):
        raise ValueError("Source images have no Frame Of Reference UID, but it is required by the IOD")

    monkeypatch.setattr("app.io.dicom_seg.write_dicom_seg", no_frame_of_reference)
    out = tmp_path / "out"
    result = _segment(*series, "-o", out, "--sequences", "t1,t1ce,t2,flair", "--dicom-seg")
    assert result.exit_code == 1 and (out / "Study_8_seg.nii.gz").is_file()
    assert f"its label map {out / 'Study_8_seg.nii.gz'} is written, its DICOM SEG is not (ValueError: Source images have no Frame" in result.output
    assert f"source series {series[0]}" in result.output
    [entry] = json.loads((out / "volseg_run.json").read_text())["cases"]
    assert entry["output"] == str(out / "Study_8_seg.nii.gz") and "DICOM SEG is not" in entry["error"]


def test_a_written_case_made_by_other_weights_of_the_same_bundle_is_segmented_again(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    """A bundle folder trained again keeps its name: the checkpoint's fingerprint tells its labels apart."""
    from monai.bundle import ConfigParser

    from app.inference.batch import weights_fingerprint

    out = tmp_path / "out"
    fake._weights_fingerprint = "0123456789abcdef"
    assert _segment(cases[0], "-o", out).exit_code == 0 and _segment(cases[0], "-o", out).exit_code == 0
    assert fake.segmented == ["Phantom_000"]  # the same weights: skipped
    fake._weights_fingerprint = "fedcba9876543210"  # trained again
    again = _segment(cases[0], "-o", out)
    assert again.exit_code == 0 and fake.segmented == ["Phantom_000", "Phantom_000"]
    assert json.loads((out / "volseg_run.json").read_text())["cases"][0]["settings"]["weights"] == "fedcba9876543210"

    class Model:
        mode = "fast"

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    first, model = Model(), Model()
    first.parser = model.parser = ConfigParser({"ckpt_path": str(ckpt)})
    assert len(weights_fingerprint(first)) == 16
    ckpt.write_bytes(b"weights trained again")
    assert weights_fingerprint(model) != weights_fingerprint(first) == first._weights_fingerprint  # computed once a segmenter


def test_a_written_case_made_from_other_sequences_is_segmented_again_and_loses_its_stale_map(cases: list[Path], tmp_path: Path, fake: FakeSegmenter):
    out = tmp_path / "out"
    assert _segment(cases[0], "-o", out).exit_code == 0
    two = [cases[0] / f"{cases[0].name}_{s}.nii.gz" for s in ("t1ce", "flair")]
    again = _segment(*two, "-o", out)  # the same case ID from FLAIR + T1ce only: not the label of all four
    assert again.exit_code == 0 and fake.segmented == ["Phantom_000", "Phantom_000"], again.output
    entry = json.loads((out / "volseg_run.json").read_text())["cases"][0]
    assert entry["missing_sequences"] == ["t1", "t2"] and entry["note"] is None
    assert _segment(*two, "-o", out).exit_code == 0 and len(fake.segmented) == 2  # now the same sequences: skipped
    (out / "Phantom_000_uncertainty.nii.gz").write_bytes(b"an earlier run's map")
    assert _segment(cases[0], "-o", out, "--overwrite").exit_code == 0 and len(fake.segmented) == 3
    assert not (out / "Phantom_000_uncertainty.nii.gz").exists()  # it belonged to the label just replaced


@pytest.mark.parametrize("stop, code, said", [(KeyboardInterrupt, 130, "interrupted: 1 case(s) written in"),
                                               ("Terminated", 143, "terminated (SIGTERM): 1 case(s) written in")])
def test_a_stopped_batch_leaves_a_run_record_of_the_cases_written(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                                  monkeypatch: pytest.MonkeyPatch, stop: object, code: int, said: str):
    """Ctrl-C left written labels without a run record, and printed nothing; SIGTERM (`timeout`, a
    scheduler) killed the batch outright (stop_signals_interrupt raises Terminated for it)."""
    from app.inference.batch import Terminated

    error = Terminated if stop == "Terminated" else stop
    run_case = fake.run_case

    def stopped_in_the_second(data: dict) -> dict:
        if len(fake.segmented) == 1:
            fake.segmented.append("stopped")
            raise error()
        return run_case(data)

    monkeypatch.setattr(fake, "run_case", stopped_in_the_second)
    out = tmp_path / "out"
    result = _segment(*cases, "-o", out)
    assert result.exit_code == code and said in result.output and "run the same command again" in result.output, result.output
    assert f"Phantom_000: {out / 'Phantom_000_seg.nii.gz'}" in result.output  # the written case's line, as a finished batch prints it
    record = json.loads((out / "volseg_run.json").read_text())["cases"]
    assert [(c["case_id"], c["error"] is None) for c in record] == [("Phantom_000", True), ("Phantom_001", False), ("Phantom_002", False)]
    assert record[1]["error"].startswith("interrupted (Ctrl-C or SIGTERM)") and (out / "Phantom_000_seg.nii.gz").is_file()
    monkeypatch.setattr(fake, "run_case", run_case)
    again = _segment(*cases, "-o", out)  # goes on: the written case is skipped
    assert again.exit_code == 0 and fake.segmented[2:] == ["Phantom_001", "Phantom_002"]


def test_a_label_made_from_other_input_files_is_segmented_again(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                                caplog: pytest.LogCaptureFixture):
    """Another patient's folder with the same case ID was skipped: the earlier patient's label was kept without a word."""
    out = tmp_path / "out"
    assert _segment(cases[0], "-o", out).exit_code == 0
    other = shutil.copytree(cases[1], tmp_path / "other" / "Phantom_000")
    for f in other.iterdir():
        f.rename(other / f.name.replace("Phantom_001", "Phantom_000"))
    assert _segment(other, "-o", out).exit_code == 0
    assert fake.segmented == ["Phantom_000", "Phantom_000"]
    assert "case 'Phantom_000': its label in" in caplog.text and "was made from other input files" in caplog.text
    (out / "volseg_run.json").unlink()  # a label no record explains: kept, said so
    assert _segment(other, "-o", out).exit_code == 0 and len(fake.segmented) == 2
    assert "1 label map(s) in" in caplog.text and "have no entry in its volseg_run.json, so what made them is unknown: kept (Phantom_000)" in caplog.text


def test_sequences_as_one_comma_separated_text_in_the_api():
    from app.inference.segmenter import _group_loose_files

    [(case_id, images)] = _group_loose_files([Path("a/post.nii.gz"), Path("a/dark.nii.gz")], ("t1", "t1ce", "t2", "flair"), "t1ce, flair", True)
    assert [p.name if p else None for p in images] == [None, "post.nii.gz", None, "dark.nii.gz"]


def test_an_unreadable_run_record_is_named_and_kept_not_overwritten(cases: list[Path], tmp_path: Path, fake: FakeSegmenter,
                                                                    caplog: pytest.LogCaptureFixture):
    """A corrupt volseg_run.json was reported as labels 'with no entry' and silently replaced."""
    out = tmp_path / "out"
    assert _segment(cases[0], "-o", out).exit_code == 0
    (out / "volseg_run.json").write_text('{"cases": [ truncated')
    with caplog.at_level(logging.WARNING):
        assert _segment(cases[0], cases[1], "-o", out).exit_code == 0
    assert "volseg_run.json cannot be read (JSONDecodeError" in caplog.text and "Phantom_000" in caplog.text
    (kept,) = out.glob("volseg_run.unreadable-*.json")
    assert kept.read_text() == '{"cases": [ truncated'
    record = json.loads((out / "volseg_run.json").read_text())
    assert [c["case_id"] for c in record["cases"]] == ["Phantom_000", "Phantom_001"] and fake.segmented == ["Phantom_000", "Phantom_001"]
