"""``volseg cv n4-copies`` / :func:`app.engines.n4_copies.n4_mixed_datalist`: each case listed as
given and N4-corrected, the copies in the source geometry, folds kept together, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from app.api import cv_folds
from app.cli import app as cli
from app.data import load_datalist
from app.engines.n4_copies import n4_mixed_datalist


def test_each_case_twice_in_the_same_fold_and_the_copies_in_the_source_geometry(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    cv = tmp_path / "cv.json"
    cv_folds(phantom_manifest, cv, phantom_root, k=5, seed=0)
    out = tmp_path / "n4"
    dest = n4_mixed_datalist(cv, phantom_root, out, shrink_factor=2, iterations=(5,))
    mixed = json.loads(dest.read_text())
    original = json.loads(cv.read_text())["training"]
    assert dest == out.resolve() / "cv_n4mix.json" and mixed["numFolds"] == 5
    assert mixed["numTraining"] == len(mixed["training"]) == 2 * len(original)
    by_id = {it["case_id"]: it for it in mixed["training"]}
    for item in original:
        given, copy = by_id[item["case_id"]], by_id[item["case_id"] + "_n4"]
        assert given["fold"] == copy["fold"] == item["fold"] and given["label"] == copy["label"]
        assert Path(given["label"]).is_file() and Path(given["label"]).samefile(phantom_root / item["label"])
        for src, n4 in zip(given["image"], copy["image"]):
            assert Path(n4).parent == out.resolve() / (item["case_id"] + "_n4") and Path(n4).name == Path(src).name
            a, b = nib.load(src), nib.load(n4)
            assert b.shape == a.shape and np.allclose(b.affine, a.affine) and b.get_data_dtype() == np.float32
            x, y = a.get_fdata(), b.get_fdata()
            assert np.array_equal(x == 0, y == 0)  # the background (and a missing sequence) stays zero
            assert not np.allclose(x, y)  # corrected
    # the datalist loads with any data root (absolute paths) and the copies are not remade
    items = load_datalist(dest, "training", tmp_path / "elsewhere")
    assert all(Path(p).is_file() for it in items for p in it["image"])
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    n4_mixed_datalist(cv, phantom_root, out, shrink_factor=2, iterations=(5,))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == stamp


def test_a_missing_image_is_named(phantom_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(phantom_root / "Phantom_000", root / "Phantom_000")
    manifest = tmp_path / "m.json"
    images = [f"Phantom_000/Phantom_000_{m}.nii.gz" for m in ("t1", "t1ce")] + ["Phantom_000/gone_t2.nii.gz", "Phantom_000/Phantom_000_flair.nii.gz"]
    manifest.write_text(json.dumps({"training": [{"case_id": "Phantom_000", "image": images, "label": "Phantom_000/Phantom_000_seg.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="gone_t2.nii.gz"):
        n4_mixed_datalist(manifest, root, tmp_path / "n4", shrink_factor=2, iterations=(5,))
    # a missing second case is found before the first is corrected (it failed after the first case's fits)
    first = {"case_id": "Phantom_000", "image": [f"Phantom_000/Phantom_000_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")],
             "label": "Phantom_000/Phantom_000_seg.nii.gz"}
    manifest.write_text(json.dumps({"training": [first, {**first, "case_id": "Fake_1", "image": ["Fake_1/Fake_1_t1.nii.gz"] * 4}]}))
    with pytest.raises(FileNotFoundError, match=r"4 listed file\(s\) do not exist .*first: Fake_1: .*nothing was corrected"):
        n4_mixed_datalist(manifest, root, tmp_path / "n4b", shrink_factor=2, iterations=(5,))
    assert not (tmp_path / "n4b").exists() or not any((tmp_path / "n4b").rglob("*.nii.gz"))
    with pytest.raises(ValueError, match="lists no case"):
        (tmp_path / "empty.json").write_text(json.dumps({"training": []}))
        n4_mixed_datalist(tmp_path / "empty.json", root, tmp_path / "n4")


def test_cli(phantom_root: Path, phantom_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    result = CliRunner().invoke(cli, ["cv", "n4-copies", "--manifest", str(phantom_manifest), "--data-dir", str(phantom_root), "--out-dir", str(tmp_path / "n4"),
                                      "--shrink-factor", "2", "--iterations", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "n4" / "phantoms_n4mix.json"
    assert f"wrote {dest.resolve()}" in result.output
    content = json.loads(dest.read_text())
    assert [len(content[k]) for k in ("training", "validation", "test")] == [6, 2, 2]
    assert "has no 'fold' keys: the N4-mixed datalist keeps none" in caplog.text  # a plain datalist, not a CV one
    result = CliRunner().invoke(cli, ["cv", "n4-copies", "--manifest", str(tmp_path / "nope.json"), "--out-dir", str(tmp_path / "n4")])
    assert result.exit_code == 2 and "nope.json" in result.output
