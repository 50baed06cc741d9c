"""Cross-validation end to end on phantoms: fold training, and every case scored once by its fold's model."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from app import api
from app.data.folds import build_cv_manifest
from app.evaluation.cv import fold_checkpoint, format_cv, nested_choice, summarise
from app.networks import create_network

TINY = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "sw_batch_size": 2}


@pytest.fixture(scope="module")
def cv_setup(phantom_root: Path, phantom_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 5-fold datalist over the 5 phantoms and random tiny fold weights (float16, as shipped)."""
    tmp = tmp_path_factory.mktemp("cv")
    build_cv_manifest(phantom_manifest, phantom_root, k=5, seed=0, out=tmp / "cv.json")
    weights = tmp / "models"
    weights.mkdir()
    for fold in range(5):
        torch.manual_seed(fold)
        net = create_network("unet3d", in_channels=4, out_channels=3, channels=[8, 16, 32], num_res_units=2)
        torch.save({k: v.half() for k, v in net.state_dict().items()}, weights / f"fold{fold}.pt")
    return tmp / "cv.json", weights


@pytest.mark.parametrize("mode", ["fast", "accurate"])
def test_every_case_is_scored_once_by_its_own_fold(cv_setup, phantom_root: Path, tmp_path: Path, mode: str):
    manifest, weights = cv_setup
    result = api.cross_validate("brats_unet3d", manifest, weights, tmp_path, phantom_root, mode=mode, backend="torch", device="cpu", overrides=TINY)
    fold_of = {it["case_id"]: it["fold"] for it in json.loads(manifest.read_text())["training"]}
    assert sorted(r["case"] for r in result["rows"]) == sorted(fold_of)
    assert all(r["fold"] == fold_of[r["case"]] for r in result["rows"])
    for row in result["rows"]:
        pred = nib.load(tmp_path / "preds" / f"{row['case']}_seg.nii.gz")
        ref = nib.load(phantom_root / row["case"] / f"{row['case']}_seg.nii.gz")
        assert pred.shape == ref.shape and (pred.affine == ref.affine).all()
        assert 0.0 <= row["WT_dice"] <= 1.0
    summary = json.loads((tmp_path / "cv_summary.json").read_text())
    assert summary["mode"] == mode and summary["cases"] == 5 and set(summary["summary"]) >= {"WT_dice", "TC_dice", "ET_dice", "WT_hd95"}
    assert len((tmp_path / "cv_cases.csv").read_text().splitlines()) == 6
    assert format_cv(result).count("\n") == 5 + 3


def test_summary_is_mean_and_sample_std_without_nans():
    rows = [{f"{r}_{m}": v for r in ("WT", "TC", "ET") for m in ("dice", "hd95")} for v in (0.5, 0.7, float("nan"))]
    s = summarise(rows)
    assert s["WT_dice"]["mean"] == pytest.approx(0.6) and s["WT_dice"]["std"] == pytest.approx(0.1414, abs=1e-4) and s["WT_dice"]["n"] == 2


def test_fold_checkpoint_names_what_it_looked_for(tmp_path: Path):
    (tmp_path / "fold1").mkdir()
    (tmp_path / "fold1" / "model.pt").write_bytes(b"x")
    assert fold_checkpoint(tmp_path, 1) == tmp_path / "fold1" / "model.pt"
    with pytest.raises(FileNotFoundError, match="fold2.pt or fold2/model.pt"):
        fold_checkpoint(tmp_path, 2)


def test_train_fold_holds_out_the_fold_and_keeps_final_weights(cv_setup, phantom_root: Path, tmp_path: Path):
    manifest, _ = cv_setup
    small = {**TINY, "batch_size": 1, "num_samples": 1, "max_epochs": 2}
    out = api.train("brats_unet3d", manifest, phantom_root, tmp_path / "fold3", small, progress=False, fold=3)
    datalist = json.loads((out / "datalist.json").read_text())
    assert [it["fold"] for it in datalist["validation"]] == [3]
    assert all(it["fold"] != 3 for it in datalist["training"]) and len(datalist["training"]) == 4
    assert (out / "model.pt").is_file()
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["checkpointer"]["best_epoch"] == 2  # validated only after the last epoch: no selection on held-out cases
    final = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(final[k], last["model"][k]) for k in final)
    with pytest.raises(ValueError, match="output folder"):
        api.train("brats_unet3d", manifest, phantom_root, None, small, progress=False, fold=0)


def test_a_finished_fold_frees_its_cached_cases(cv_setup, phantom_root: Path, tmp_path: Path):
    """Folds run one after another in one process (`volseg cv train`): each run's datasets, which
    sit in reference cycles, must be gone when it returns, even while the cyclic collector is off
    (with them kept, three BraTS folds held 19 GB and the fourth was killed for memory)."""
    from monai.data import Dataset

    manifest, _ = cv_setup
    small = {**TINY, "batch_size": 1, "num_samples": 1, "max_epochs": 1}
    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, Dataset)}
    gc.disable()
    try:
        api.train("brats_unet3d", manifest, phantom_root, tmp_path / "fold0", small, progress=False, fold=0)
        left = [o for o in gc.get_objects() if isinstance(o, Dataset) and id(o) not in before]
    finally:
        gc.enable()
    assert left == []


def test_cli_cv_evaluate_prints_the_table(cv_setup, phantom_root: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from app.cli import app as cli

    manifest, weights = cv_setup
    sets = [arg for key, value in {**TINY, "min_component_mm3": 0}.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = CliRunner().invoke(cli, ["cv", "evaluate", "--manifest", str(manifest), "--weights", str(weights), "--output", str(tmp_path),
                                      "--data-dir", str(phantom_root), "--backend", "torch", "--device", "cpu", "--quiet", *sets])
    assert result.exit_code == 0, result.output
    assert "| **mean** |" in result.output and result.output.count("| Phantom_") == 5
    bad = CliRunner().invoke(cli, ["cv", "evaluate", "--weights", str(tmp_path / "none"), "--output", str(tmp_path), "--set", "novalue"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output


def test_cv_with_a_subset_of_sequences_scores_uncertainty(cv_setup, phantom_root: Path, tmp_path: Path):
    manifest, weights = cv_setup
    result = api.cross_validate("brats_unet3d", manifest, weights, tmp_path, phantom_root, backend="torch", device="cpu", overrides=TINY,
                                folds=[0, 1, 2], sequences=["FLAIR", "t1ce"], uncertainty=True)
    assert result["sequences"] == ["t1ce", "flair"] and len(result["rows"]) == 3
    assert result["scored_folds"] == [0, 1, 2] and json.loads((tmp_path / "cv_summary.json").read_text())["scored_folds"] == [0, 1, 2]
    assert all(0.0 <= r["quality"] <= 1.0 and (r["WT_unc_auroc"] != r["WT_unc_auroc"] or 0.0 <= r["WT_unc_auroc"] <= 1.0) for r in result["rows"])
    unc = result["summary"]["uncertainty"]
    assert set(unc) == {"WT_auroc_pooled", "WT_auroc_case_mean", "quality_vs_WT_dice_spearman"}
    hist = np.load(tmp_path / "uncertainty_histograms.npy")
    assert hist.shape == (2, 1000) and hist.sum() > 0
    with pytest.raises(ValueError, match="sequences must name"):
        api.cross_validate("brats_unet3d", manifest, weights, tmp_path, phantom_root, backend="torch", overrides=TINY, sequences=["dwi"])


def test_nested_choice_never_scores_a_case_with_a_choice_made_on_it():
    # candidate 1 is best over all 6 cases (+0.1 over candidate 0 in-sample), yet no fold's choice
    # made without it gains on it
    scores = np.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                       [0.7, 0.7, 0.7, 0.7, 0.4, 0.4],
                       [0.4, 0.4, 0.4, 0.4, 0.9, 0.9]])
    folds = [0, 0, 1, 1, 2, 2]
    chosen, gains = nested_choice(scores, folds)
    assert chosen == [2, 2, 1]  # fold 2 is scored with what folds 0 and 1 chose, not with its own best (2)
    assert np.allclose(gains, -0.1)
    chosen, gains = nested_choice(scores[[0, 0]], folds)  # ties: the lower index
    assert chosen == [0, 0, 0] and np.allclose(gains, 0)
    _, gains = nested_choice(scores, folds, baseline=2)
    assert np.allclose(gains, [0.0, 0.0, 0.0, 0.0, -0.5, -0.5])
    with pytest.raises(ValueError, match="one fold per case"):
        nested_choice(scores, [0, 1])
    with pytest.raises(ValueError, match="at least 2 folds"):
        nested_choice(scores, [0] * 6)


def test_the_shipped_fold_models_refuse_a_datalist_whose_folds_would_score_their_training_cases(tmp_path: Path):
    """A `volseg cv folds` datalist of the shared cases gives them other folds than the shipped
    brats2018_cv5.json the fold models were trained on: fold 0's model then 'scored' a case it
    trained on (Dice 0.853) without a word."""
    from app.resources import manifest_path

    shipped = json.loads(Path(manifest_path("brats2018_cv5")).read_text())
    moved = json.loads(json.dumps(shipped))
    case = next(it for it in moved["training"] if it["fold"] == 2)
    case["fold"] = 0
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(moved))
    with pytest.raises(ValueError, match=rf"{case['case_id']} \(fold 0 here, fold 2 in brats2018_cv5.json\).*optimistic.*--weights"):
        api.cross_validate("brats_unet3d", mine, None, tmp_path / "out", tmp_path / "no_data")
    api.check_shipped_folds(mine, folds=[1, 3])  # folds that keep their cases: nothing seen
    api.check_shipped_folds(manifest_path("brats2018_cv5"))
    new = {**shipped, "training": [{**it, "case_id": f"Other_{i}"} for i, it in enumerate(shipped["training"])]}  # cases the shipped folds never saw
    (tmp_path / "new.json").write_text(json.dumps(new))
    api.check_shipped_folds(tmp_path / "new.json")
