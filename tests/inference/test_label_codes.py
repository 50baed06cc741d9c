"""``--label-codes 2023``: label maps written in the BraTS 2023+ codes (1 NCR, 2 SNFH / edema, 3 ET)
by ``volseg segment``, the API and ``python -m monai.bundle run``; volumes, the run record and the
report follow, and other codes or a bundle that is not BraTS are refused before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.labels import BRATS, labels_of


def test_2023_codes_move_et_to_3_and_keep_the_regions():
    manager = BRATS.with_codes("2023")
    assert dict(manager.labels) == {1: "NCR/NET", 2: "ED", 3: "ET"}
    assert dict(manager.regions) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    assert BRATS.with_codes("2018") is BRATS and BRATS.code_map("2018") == {} and BRATS.code_map("2023") == {4: 3}
    assert labels_of("brats_deeplab3d").code_map("2023") == {4: 3}


def test_other_codes_and_non_brats_bundles_are_refused():
    with pytest.raises(ValueError, match=r"label codes must be one of 2018, 2023 \(text or number\), got '2021'"):
        BRATS.code_map("2021")
    with pytest.raises(ValueError, match=r"label codes '2023' .* are for BraTS bundles.*\{1: 'spleen'\}"):
        labels_of("ct_unet3d").code_map("2023")
    assert labels_of("ct_unet3d").code_map("2018") == {}
    assert BRATS.code_map(2023) == {4: 3} and BRATS.code_map(2018) == {}  # the year as a number, as fire and JSON give it
    with pytest.raises(ValueError, match=r"got True"):
        BRATS.code_map(True)


def test_a_refused_setting_stops_before_any_output(phantom_root: Path, tmp_path: Path):
    from app import api

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="label codes must be one of"):
        api.segment_cases([phantom_root / "Phantom_000"], out, device="cpu", backend="torch", label_codes="4")
    with pytest.raises(ValueError, match="are for BraTS bundles"):
        api.segment_cases([phantom_root / "Phantom_000"], out, bundle="ct_unet3d", device="cpu", backend="torch", label_codes="2023")
    assert not out.exists()


def test_segment_writes_2023_codes_with_the_same_voxels(phantom_root: Path, tmp_path: Path):
    """The 2023 map is the 2018 map with ET 4 -> 3; volumes, record and report agree; a label
    made in other codes is made again."""
    from app import api
    from app.evaluation.case_report import _written_names, overlay_pngs

    case = phantom_root / "Phantom_000"
    results = api.segment_cases([case], tmp_path / "y2018", device="cpu", backend="torch")
    assert results[0].error is None
    old = np.asarray(nib.load(results[0].output).dataobj)
    assert (old == 4).any(), "the phantom has enhancing tumour"

    out = tmp_path / "y2023"
    results = api.segment_cases([case], out, device="cpu", backend="torch", report=True, label_codes=2023)  # a number works too
    assert results[0].error is None
    new = np.asarray(nib.load(results[0].output).dataobj)
    assert new.dtype == np.uint8 and set(np.unique(new)) <= {0, 1, 2, 3} and (new == 3).any()
    np.testing.assert_array_equal(new, np.where(old == 4, 3, old))

    record = json.loads((out / "volseg_run.json").read_text())
    assert record["label_codes"] == "2023" and record["cases"][0]["settings"]["label_codes"] == "2023"
    before = json.loads((tmp_path / "y2018" / "volseg_run.json").read_text())
    assert before["label_codes"] == "2018"
    assert record["cases"][0]["volumes_ml"] == before["cases"][0]["volumes_ml"]  # ET read as 3, not lost
    assert record["cases"][0]["volumes_ml"]["ET"] > 0
    assert _written_names(dict(BRATS.labels), "brats_unet3d", "2023") == {1: "NCR/NET", 2: "ED", 3: "ET"}
    assert (out / "report.html").is_file()
    # the report draws ET of a 2023 map as it draws ET of the 2018 one
    assert overlay_pngs(None, results[0].output, _written_names(dict(BRATS.labels), "brats_unet3d", "2023"), "A") == \
        overlay_pngs(None, tmp_path / "y2018" / "Phantom_000_seg.nii.gz", dict(BRATS.labels), "A")

    again = api.segment_cases([case], out, device="cpu", backend="torch", overwrite=False)  # 2018 now: segmented again, not skipped
    assert again[0].note is None and again[0].error is None
    np.testing.assert_array_equal(np.asarray(nib.load(again[0].output).dataobj), old)
    kept = api.segment_cases([case], out, device="cpu", backend="torch", overwrite=False)
    assert kept[0].note is not None  # same settings: skipped


def test_api_segment_returns_2023_codes(phantom_root: Path):
    from app import api

    label, affine = api.segment(phantom_root / "Phantom_000", device="cpu", backend="torch", label_codes=2023)
    old, old_affine = api.segment(phantom_root / "Phantom_000", device="cpu", backend="torch")
    np.testing.assert_array_equal(label, np.where(old == 4, 3, old))
    np.testing.assert_array_equal(affine, old_affine)


@pytest.mark.slow
def test_monai_runner_writes_2023_codes(phantom_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copied bundle folder under ``python -m monai.bundle run ... --label_codes 2023``."""
    from monai.bundle.scripts import run

    from app.bundles import bundle_dir

    bundle = tmp_path / "brats_unet3d"
    shutil.copytree(bundle_dir("brats_unet3d"), bundle, ignore=shutil.ignore_patterns("fold*", "eval", "__pycache__"))
    data = tmp_path / "data"
    shutil.copytree(phantom_root / "Phantom_000", data / "Phantom_000")
    monkeypatch.chdir(bundle)
    written = {}
    for codes in ("2018", 2023):  # fire gives 2023 as an int on the command line
        out = tmp_path / f"out{codes}"
        run(config_file="configs/inference.yaml", meta_file="configs/metadata.json", dataset_dir=str(data), output_dir=str(out),
            label_codes=codes, logging_file=False)
        written[str(codes)] = np.asarray(nib.load(out / "Phantom_000_seg.nii.gz").dataobj)
    assert (written["2018"] == 4).any() and not (written["2023"] == 4).any()
    np.testing.assert_array_equal(written["2023"], np.where(written["2018"] == 4, 3, written["2018"]))
    with pytest.raises(Exception) as refused:
        run(config_file="configs/inference.yaml", meta_file="configs/metadata.json", dataset_dir=str(data), output_dir=str(tmp_path / "bad"),
            label_codes="2021", logging_file=False)
    assert "label codes must be one of 2018, 2023" in f"{refused.value} {refused.value.__cause__}"
    assert not (tmp_path / "bad").exists()


def test_cli_label_codes(phantom_root: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from app.cli import app as cli

    out = tmp_path / "out"
    seg = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_001"), "--output", str(out), "--quiet", "--device", "cpu",
                                   "--backend", "torch", "--label-codes", "2023"])
    assert seg.exit_code == 0, seg.output
    assert "label codes 2023: 1 NCR/NET, 2 ED, 3 ET" in seg.output
    label = np.asarray(nib.load(out / "Phantom_001_seg.nii.gz").dataobj)
    assert (label == 3).any() and not (label == 4).any()
    bad = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_001"), "--output", str(tmp_path / "ct"), "--bundle", "ct_unet3d",
                                   "--label-codes", "2023"])
    assert bad.exit_code == 2 and "are for BraTS bundles" in bad.output and not (tmp_path / "ct").exists()


def test_a_folder_that_would_mix_codes_says_so(phantom_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A second batch in other codes into the same folder: warned, noted in the record, and the
    report names the codes of each group."""
    from app import api

    out = tmp_path / "out"
    api.segment_cases([phantom_root / "Phantom_000"], out, device="cpu", backend="torch", label_codes="2023")
    with caplog.at_level("WARNING"):
        api.segment_cases([phantom_root / "Phantom_001"], out, device="cpu", backend="torch", report=True)
    record = json.loads((out / "volseg_run.json").read_text())
    assert [c["settings"]["label_codes"] for c in record["cases"]] == ["2023", "2018"]
    [note] = [n for n in record["notes"] if "other label codes" in n]
    assert "(Phantom_000)" in note and "--label-codes 2018 --overwrite" in note
    assert any("the folder mixes codes" in r.getMessage() for r in caplog.records)
    page = (out / "report.html").read_text(encoding="utf-8")
    settings = record["cases"][0]["settings"]
    path = f"{settings['mode']}{' + N4' if settings['n4_average'] else ''}"
    assert f"1 {path}, label codes 2023, 1 {path}, label codes 2018 (see each case" in page
    assert "1 NCR/NET, 2 ED, 4 ET (BraTS 2012-2021 codes)" in page  # this batch's codes in the run table
