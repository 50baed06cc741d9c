"""The CT workflow on real CT, as a user with a Decathlon folder runs it, through the CLI:
``volseg manifest decathlon`` -> ``volseg train --bundle ct_unet3d --output-dir R`` ->
``volseg segment CT --bundle R`` -> ``volseg evaluate --bundle R`` -> ``volseg serve --bundle R``.

One short run on the MSD spleen CT (one case: 512 x 512 x 32, 0.79 x 0.79 x 7.5 mm), coarse
(4 x 4 x 7.5 mm, 32^3 windows) so that it takes seconds: the test checks the path, the geometry
and the names, not Dice. Then the TotalSegmentator example CT (another scanner and grid, 3 mm),
scored against TotalSegmentator's own spleen (label 1 of its multi-organ output: a model's
output, not a manual reference).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from monai.bundle import ConfigWorkflow
from typer.testing import CliRunner

from app.cli import app as cli
from tests.conftest import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "data"
SPLEEN, TOTALSEG = SHARED / "msd_spleen", SHARED / "totalseg_refs"
pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.skipif(not SPLEEN.is_dir(), reason=f"no spleen CT at {SPLEEN}")]

SHORT = ["--max-epochs", "1", "--device", "cpu", "--quiet", "--set", "roi_size=[32,32,32]", "--set", "spacing_mm=[4.0,4.0,7.5]",
         "--set", "batch_size=1", "--set", "num_samples=1"]


def _run(*args: str) -> str:
    """``volseg ARGS`` in this process (Typer's runner)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, f"volseg {' '.join(args)}\n{result.output}"
    return result.output


def _train(*args: str) -> subprocess.CompletedProcess:
    """``volseg train ARGS`` in its own process, as a user runs it: the bundle's logging.conf
    (``logging.config.fileConfig``) would reconfigure this test process's logging."""
    return subprocess.run([sys.executable, "-m", "app.cli", "train", *args], capture_output=True, encoding="utf-8", errors="replace", cwd=REPO_ROOT, timeout=600,
                          env={**os.environ, "VOLSEG_COMPILE": "0"})


def _same_geometry(label_path: Path, image_path: Path) -> np.ndarray:
    label, image = nib.load(label_path), nib.load(image_path)
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-4)
    assert np.allclose(label.header.get_zooms()[:3], image.header.get_zooms()[:3]) and label.get_data_dtype() == np.uint8
    return np.asarray(label.dataobj)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ct_chain")
    assert "wrote" in _run("manifest", "decathlon", str(SPLEEN), "--out", str(tmp / "spleen.json"))
    manifest = json.loads((tmp / "spleen.json").read_text())
    assert manifest["numTraining"] == 1 and manifest["validation"] == []  # one case: every case trains
    done = _train("--bundle", "ct_unet3d", "--manifest", str(tmp / "spleen.json"), "--data-dir", str(SPLEEN), "--output-dir", str(tmp / "R"), *SHORT)
    assert done.returncode == 0 and "training outputs in" in done.stdout, done.stderr[-2000:]
    return tmp / "R"


def test_empty_validation_split_is_a_clear_error(tmp_path: Path):
    manifest = tmp_path / "spleen.json"
    _run("manifest", "decathlon", str(SPLEEN), "--out", str(manifest))
    done = _train("--bundle", "ct_unet3d", "--manifest", str(manifest), "--data-dir", str(SPLEEN), "--output-dir", str(tmp_path / "R"), *SHORT,
                  "--set", "val_interval=1")
    assert done.returncode == 2 and "'validation' split" in done.stderr and "is empty" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "R" / "model.pt").exists()


def test_training_output_is_a_bundle(trained: Path):
    assert (trained / "models" / "model.pt").is_file() and (trained / "docs" / "README.md").is_file()
    run = json.loads((trained / "configs" / "metadata.json").read_text())["training_run"]
    assert run["epochs"] == 1 and run["num_training_cases"] == 1 and run["num_validation_cases"] == 0


def test_segment_evaluate_and_serve_the_trained_bundle(trained: Path, tmp_path: Path):
    image = SPLEEN / "imagesTr" / "spleen_8.nii.gz"
    assert "spleen_8" in _run("segment", str(image), "--bundle", str(trained), "--output", str(tmp_path / "pred"), "--device", "cpu", "--quiet")
    label = _same_geometry(tmp_path / "pred" / "spleen_8_seg.nii.gz", image)
    assert set(np.unique(label)) <= {0, 1}
    table = _run("evaluate", "--pred", str(tmp_path / "pred"), "--bundle", str(trained))  # the bundle's datalist and data folder
    assert "spleen dice" in table and "spleen_8" in table and "WT" not in table
    assert (tmp_path / "pred" / "metrics.csv").read_text().startswith("case,spleen_dice,spleen_hd95")
    from app.serve import ServerConfig, create_app

    info = TestClient(create_app(ServerConfig(tmp_path / "store", None, [str(trained)], "cpu"))).get("/info/").json()
    assert info["models"][trained.name]["labels"] == {"spleen": 1}


def test_monai_bundle_run_of_the_trained_bundle(trained: Path, tmp_path: Path):
    wf = ConfigWorkflow(config_file=str(trained / "configs" / "inference.yaml"), meta_file=str(trained / "configs" / "metadata.json"),
                        logging_file=False, workflow_type=None, bundle_root=str(trained), data_split="training", output_dir=str(tmp_path),
                        device="$torch.device('cpu')")
    wf.initialize()
    wf.run()
    label = _same_geometry(tmp_path / "spleen_8_seg.nii.gz", SPLEEN / "imagesTr" / "spleen_8.nii.gz")
    assert set(np.unique(label)) <= {0, 1}


@pytest.mark.skipif(not TOTALSEG.is_dir(), reason=f"no TotalSegmentator CT at {TOTALSEG}")
def test_totalsegmentator_ct(trained: Path, tmp_path: Path):
    image = TOTALSEG / "example_ct_sm.nii.gz"
    _run("segment", str(image), "--bundle", str(trained), "--output", str(tmp_path / "pred"), "--device", "cpu", "--quiet")
    assert set(np.unique(_same_geometry(tmp_path / "pred" / "example_ct_sm_seg.nii.gz", image))) <= {0, 1}
    manifest = tmp_path / "totalseg.json"
    manifest.write_text(json.dumps({"training": [], "validation": [], "test": [{"case_id": "example_ct_sm", "image": image.name, "label": "example_seg.nii.gz"}]}))
    table = _run("evaluate", "--pred", str(tmp_path / "pred"), "--manifest", str(manifest), "--data-dir", str(TOTALSEG), "--bundle", str(trained), "--split", "test")
    assert "spleen dice" in table and "example_ct_sm" in table
