"""Cross-validation folds: disjoint, covering every case once, stratified, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.data.folds import build_cv_manifest, fold_datalist, stratified_folds
from tests.conftest import REPO_ROOT

SIZES = {f"case{i:02d}": float((i * 37) % 101) for i in range(15)}


def test_folds_are_disjoint_and_cover_every_case_once():
    folds = stratified_folds(SIZES, k=5, seed=0)
    flat = [cid for fold in folds for cid in fold]
    assert sorted(flat) == sorted(SIZES) and len(flat) == len(set(flat))
    assert [len(f) for f in folds] == [3, 3, 3, 3, 3]


def test_folds_are_stratified_by_size():
    folds = stratified_folds(SIZES, k=5, seed=3)
    ordered = sorted(SIZES, key=SIZES.get)
    terciles = [set(ordered[:5]), set(ordered[5:10]), set(ordered[10:])]
    for fold in folds:  # one small, one medium, one large tumour per fold
        assert [len(set(fold) & t) for t in terciles] == [1, 1, 1]


def test_folds_are_seeded_and_independent_of_input_order():
    reversed_sizes = dict(reversed(list(SIZES.items())))
    assert stratified_folds(SIZES, 5, seed=1) == stratified_folds(reversed_sizes, 5, seed=1)
    assert stratified_folds(SIZES, 5, seed=1) != stratified_folds(SIZES, 5, seed=2)


def test_uneven_case_count():
    folds = stratified_folds({f"c{i}": i for i in range(7)}, k=3)
    assert sorted(len(f) for f in folds) == [2, 2, 3]
    with pytest.raises(ValueError, match="k-fold needs"):
        stratified_folds({"a": 1.0}, k=2)


def test_fold_datalists_hold_out_each_case_once(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    cv = build_cv_manifest(phantom_manifest, phantom_root, k=5, seed=0, out=tmp_path / "cv.json")
    assert cv["numFolds"] == 5 and len(cv["training"]) == 5
    held_out = []
    for fold in range(5):
        datalist = fold_datalist(tmp_path / "cv.json", fold, out=tmp_path / f"fold{fold}.json")
        train_ids = {it["case_id"] for it in datalist["training"]}
        val_ids = {it["case_id"] for it in datalist["validation"]}
        assert not train_ids & val_ids and len(train_ids | val_ids) == 5
        held_out += sorted(val_ids)
        assert json.loads((tmp_path / f"fold{fold}.json").read_text())["validation"] == datalist["validation"]
    assert sorted(held_out) == sorted(it["case_id"] for it in cv["training"])
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        fold_datalist(tmp_path / "cv.json", 5)
    with pytest.raises(ValueError, match="no cross-validation folds"):
        fold_datalist(phantom_manifest, 0)


def test_shipped_cv_manifest_covers_the_15_shared_cases():
    cv = json.loads((REPO_ROOT / "data_manifests" / "brats2018_cv5.json").read_text())
    shared = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    all_ids = sorted(it["case_id"] for key in ("training", "validation", "test") for it in shared[key])
    assert sorted(it["case_id"] for it in cv["training"]) == all_ids and len(all_ids) == 15
    assert sorted(it["fold"] for it in cv["training"]) == sorted(list(range(5)) * 3)


def test_a_wrong_data_root_is_named_with_the_way_out(phantom_manifest: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"image file\(s\) of the manifest not found \(data root '.*nowhere' does not exist\): case .*--data-dir DIR"):
        build_cv_manifest(phantom_manifest, tmp_path / "nowhere")


def test_a_missing_image_is_named_before_any_fold_is_written(phantom_manifest: Path, phantom_root: Path, tmp_path: Path):
    """`volseg cv folds` checks every image the datalist names, not only the labels it reads for the
    strata: a missing sequence would otherwise surface at the first epoch of a fold's training."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(phantom_root, root)
    item = next(it for key in ("training", "validation", "test") for it in json.loads(phantom_manifest.read_text()).get(key, []) if "label" in it)
    gone = item["image"][1] if isinstance(item["image"], list) else item["image"]
    (root / gone).unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 image file\(s\) of the manifest not found \(data root '.*data'\): case '{item['case_id']}': image '.*{Path(gone).name}'"):
        build_cv_manifest(phantom_manifest, root, out=tmp_path / "cv.json")
    assert not (tmp_path / "cv.json").exists()


def test_cli_takes_a_shipped_datalist_by_its_repository_path_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The README's `data_manifests/brats2018_shared.json` exists only in the source checkout; from a
    wheel install in another folder the CLI takes the shipped copy and says so."""
    from typer.testing import CliRunner

    from app.cli import _shipped_manifest
    from app.resources import manifests_root

    monkeypatch.chdir(tmp_path)
    assert _shipped_manifest(Path("data_manifests/brats2018_shared.json")) == manifests_root() / "brats2018_shared.json"
    assert _shipped_manifest(Path("elsewhere/brats2018_shared.json")) == Path("elsewhere/brats2018_shared.json")  # not ours to guess
    assert _shipped_manifest(Path("data_manifests/mine.json")) == Path("data_manifests/mine.json")
    from app.cli import app as cli

    result = CliRunner().invoke(cli, ["cv", "folds", "data_manifests/brats2018_shared.json", "--out", "cv.json", "--data-dir", str(tmp_path / "nowhere")])
    assert "using the shipped datalist" in result.output and "data root" in result.output and result.exit_code == 2
