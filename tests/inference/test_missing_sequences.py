"""Segmenting cases that lack sequences, and the uncertainty map: CLI, run record, geometry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from app.constants import MODALITIES
from tests.conftest import case_files


@pytest.fixture(scope="module")
def cases(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom_000 four times, each copy without one sequence, plus a FLAIR + T1ce-only copy."""
    root = tmp_path_factory.mktemp("missing")
    for absent in MODALITIES:
        dst = root / f"No{absent.upper()}"
        dst.mkdir()
        for m, f in zip(MODALITIES, case_files(phantom_root / "Phantom_000")):
            if m != absent:
                shutil.copy(f, dst / f"{dst.name}_{m}.nii.gz")
    dst = root / "FlairT1ce"
    dst.mkdir()
    for m in ("t1ce", "flair"):
        shutil.copy(phantom_root / "Phantom_000" / f"Phantom_000_{m}.nii.gz", dst / f"{dst.name}_{m}.nii.gz")
    return root


def test_cli_segments_every_single_missing_sequence_and_names_it(cases: Path, tmp_path: Path):
    folders = [cases / f"No{m.upper()}" for m in MODALITIES] + [cases / "FlairT1ce"]
    result = CliRunner().invoke(cli, ["segment", *map(str, folders), "--output", str(tmp_path), "--quiet", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    for m in MODALITIES:
        assert f"missing sequences: {m} (zero-filled" in result.output
    assert "missing sequences: t1, t2 (zero-filled" in result.output
    record = {c["case_id"]: c for c in json.loads((tmp_path / "volseg_run.json").read_text())["cases"]}
    assert {k: v["missing_sequences"] for k, v in record.items()} == {**{f"No{m.upper()}": [m] for m in MODALITIES}, "FlairT1ce": ["t1", "t2"]}
    ref = nib.load(next((cases / "NoT1").glob("*_flair.nii.gz")))
    for case_id in record:
        label = nib.load(tmp_path / f"{case_id}_seg.nii.gz")
        assert label.shape == ref.shape and np.allclose(label.affine, ref.affine)
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2, 4}


@pytest.mark.parametrize("n4", [[], ["--n4"]])
def test_cli_uncertainty_map_in_input_geometry(phantom_root: Path, tmp_path: Path, n4: list[str]):
    case = phantom_root / "Phantom_001"
    result = CliRunner().invoke(cli, ["segment", str(case), "--output", str(tmp_path), "--uncertainty", "--quiet", "--backend", "torch", *n4])
    assert result.exit_code == 0, result.output
    assert "quality score" in result.output and "not a Dice estimate" in result.output
    ref = nib.load(case / "Phantom_001_t1.nii.gz")
    unc = nib.load(tmp_path / "Phantom_001_uncertainty.nii.gz")
    assert unc.shape == ref.shape and np.allclose(unc.affine, ref.affine, atol=1e-4)
    data = np.asarray(unc.dataobj)
    assert data.dtype == np.float32 and data.min() >= 0.0 and data.max() <= 1.0
    brain = np.any([np.asarray(nib.load(f).dataobj) != 0 for f in sorted(case.glob("Phantom_001_*.nii.gz")) if not f.name.endswith("_seg.nii.gz")], axis=0)
    assert (~brain).any() and not data[~brain].any() and data[brain].any()  # air in the brain crop was 0.02-0.1 bits: a box around the brain
    record = json.loads((tmp_path / "volseg_run.json").read_text())["cases"][0]
    assert record["missing_sequences"] == [] and 0.0 <= record["quality"] <= 1.0
    assert record["uncertainty"].endswith("Phantom_001_uncertainty.nii.gz")


def test_cv_line_for_missing_sequences_comes_from_bundle_metadata():
    from app.bundles import missing_sequence_cv

    meta = json.loads((Path(__file__).resolve().parents[2] / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    table = meta.get("missing_sequences_cv", {})
    if "t1ce+flair" not in table:
        pytest.skip("bundle has no missing-sequence CV table yet")
    assert missing_sequence_cv("brats_unet3d", ["t1", "t2"]) == table["t1ce+flair"]
    assert set(table["t1ce+flair"]) >= {"WT", "TC", "ET"}


def test_missing_line_quotes_the_n4_figures_when_the_run_used_n4(tmp_path):
    from app.cli import _missing_line

    configs = tmp_path / "b" / "configs"
    configs.mkdir(parents=True)
    (configs / "metadata.json").write_text(json.dumps({
        "missing_sequences_cv": {"t1ce+flair": {"WT": 0.8, "TC": 0.6, "ET": 0.5}, "t1+t1ce+flair": {"WT": 0.81, "TC": 0.7, "ET": 0.6}},
        "missing_sequences_cv_n4": {"t1ce+flair": {"WT": 0.85, "TC": 0.7, "ET": 0.65}}}))
    bundle = str(tmp_path / "b")
    assert "CV Dice with this subset: WT 0.800  TC 0.600" in _missing_line(bundle, ["t1", "t2"])
    assert "CV Dice with this subset with N4: WT 0.850  TC 0.700  ET 0.650" in _missing_line(bundle, ["t1", "t2"], n4=True)
    # no --n4 figure for that subset: the default one, said so
    assert "with this subset without N4: WT 0.810" in _missing_line(bundle, ["t2"], n4=True)
    assert "no CV figure for this subset" in _missing_line(bundle, ["flair"], n4=True)


def test_missing_line_and_run_record_quote_the_int8_figures_when_int8_models_ran(tmp_path):
    from app.bundles import ran_int8, run_subset_cv
    from app.cli import _missing_line
    from app.inference.batch import add_missing_sequence_cv

    configs = tmp_path / "b" / "configs"
    configs.mkdir(parents=True)
    (configs / "metadata.json").write_text(json.dumps({
        "missing_sequences_cv": {"t1ce+flair": {"WT": 0.8, "TC": 0.6, "ET": 0.5}, "t1+t1ce+flair": {"WT": 0.81, "TC": 0.7, "ET": 0.6}},
        "missing_sequences_cv_int8": {"t1ce+flair": {"WT": 0.79, "TC": 0.61, "ET": 0.49}},
        "missing_sequences_cv_n4": {"t1ce+flair": {"WT": 0.85, "TC": 0.7, "ET": 0.65}},
        "missing_sequences_cv_n4_int8": {"t1ce+flair": {"WT": 0.84, "TC": 0.71, "ET": 0.64}}}))
    bundle = str(tmp_path / "b")
    assert ran_int8("int8") and not ran_int8("f32") and not ran_int8("int8+f32") and not ran_int8(None)
    assert "CV Dice with this subset int8: WT 0.790  TC 0.610  ET 0.490" in _missing_line(bundle, ["t1", "t2"], int8=True)
    assert "with this subset with N4, int8: WT 0.840  TC 0.710  ET 0.640" in _missing_line(bundle, ["t1", "t2"], n4=True, int8=True)
    # no int8 figure for no T2: the float32 one, said so; no --n4 either: both said
    assert "with this subset float32: WT 0.810" in _missing_line(bundle, ["t2"], int8=True)
    assert run_subset_cv(bundle, ["t2"], n4=True, int8=True) == ({"WT": 0.81, "TC": 0.7, "ET": 0.6}, "without N4, float32")
    assert "CV Dice with this subset: WT 0.800" in _missing_line(bundle, ["t1", "t2"])  # float32 run: the float32 figures
    # the run record stores what the CLI printed, per case that lacked sequences
    entries = [{"case_id": "a", "missing_sequences": ["t1", "t2"]}, {"case_id": "b", "missing_sequences": []},
               {"case_id": "c", "missing_sequences": ["t1", "flair"]}]
    add_missing_sequence_cv(entries, bundle, n4=True, int8=True)
    assert entries[0]["missing_sequences_cv_dice"] == {"WT": 0.84, "TC": 0.71, "ET": 0.64}
    assert entries[0]["missing_sequences_cv_source"] == "with N4, int8"
    assert "missing_sequences_cv_dice" not in entries[1]
    assert entries[2]["missing_sequences_cv_dice"] == {} and entries[2]["missing_sequences_cv_source"] is None
    # an accurate-mode run quotes fast mode's figures (the fold ensemble cannot be scored on the shared cases) and says so
    line = _missing_line(bundle, ["t1", "t2"], n4=True, int8=True, mode="accurate")
    assert "with this subset with N4, int8, of --mode fast (accurate mode has no CV figures of its own): WT 0.840" in line
    accurate = [{"case_id": "a", "missing_sequences": ["t1", "t2"]}]
    add_missing_sequence_cv(accurate, bundle, n4=True, int8=True, mode="accurate")
    assert accurate[0]["missing_sequences_cv_source"] == "with N4, int8, of --mode fast (accurate mode has no CV figures of its own)"
    assert run_subset_cv(bundle, ["t1", "t2"], mode="accurate")[1] == "of --mode fast (accurate mode has no CV figures of its own)"


def test_api_segment_takes_sequences_for_files_whose_names_say_none(phantom_root: Path, tmp_path: Path):
    """api.segment told users to pass --sequences, which only segment_cases and the CLI had."""
    from app import api
    from app.data.verify import InputError

    t1ce, flair = case_files(phantom_root / "Phantom_001")[1], case_files(phantom_root / "Phantom_001")[3]
    shutil.copy(t1ce, tmp_path / "post_contrast.nii.gz")
    shutil.copy(flair, tmp_path / "dark_fluid.nii.gz")
    files = [tmp_path / "post_contrast.nii.gz", tmp_path / "dark_fluid.nii.gz"]
    with pytest.raises(InputError, match=r"pass --sequences \(sequences= in app.api\)"):
        api.segment(files, device="cpu", backend="torch")
    label, affine = api.segment(files, device="cpu", backend="torch", sequences=["t1ce", "flair"])
    assert label.shape == nib.load(flair).shape and np.allclose(affine, nib.load(flair).affine, atol=1e-4)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4}
