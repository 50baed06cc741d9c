"""The volseg CLI: fast help, manifest, train, segment and evaluate through the commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app as cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_help_does_not_import_torch():
    code = "import sys; from app.cli import app; assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "segment" in result.output and "evaluate" in result.output


def test_version_is_the_package_version():
    from app import __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output == f"volseg {__version__}\n"


def test_help_texts_keep_square_brackets_and_give_the_exit_codes():
    segment = CliRunner().invoke(cli, ["segment", "--help"], terminal_width=200)
    assert segment.exit_code == 0 and "(needs volseg[dicom])" in segment.output  # not dropped as Rich markup
    assert "Exit status: 0 when every case was written; 1 when a case failed" in " ".join(segment.output.split())
    evaluate = CliRunner().invoke(cli, ["evaluate", "--help"], terminal_width=200)
    assert evaluate.exit_code == 0 and "volseg[lesion]" in evaluate.output


def test_segment_skips_unused_imports_only_for_segment():
    code = ("import sys, os; from app.cli import skip_unused_imports, SEGMENT_SKIPPED_IMPORTS as S; "
            "assert skip_unused_imports(['evaluate']) == []; "
            "os.environ['VOLSEG_FULL_IMPORT'] = '1'; assert skip_unused_imports(['segment']) == []; "
            "os.environ['VOLSEG_FULL_IMPORT'] = '0'; assert skip_unused_imports(['segment']) == list(S); "
            "import monai; from monai.transforms import RemoveSmallObjectsd; "
            "assert 'ignite.engine' not in sys.modules and 'sklearn.metrics' not in sys.modules; "
            "import importlib; importlib.import_module('ignite')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", cwd=REPO_ROOT)
    assert done.returncode == 1 and "ModuleNotFoundError: import of ignite halted" in done.stderr, done.stderr[-1500:]


def test_manifest_command(phantom_root: Path, tmp_path: Path):
    out = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["manifest", "brats", str(phantom_root), "--out", str(out), "--seed", "1", "--folds", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(out.read_text())
    assert manifest["numFolds"] == 2 and len(manifest["training"]) + len(manifest["validation"]) + len(manifest["test"]) == 5
    bad = CliRunner().invoke(cli, ["manifest", "brats", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_segment_then_evaluate_with_png(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    case = json.loads(phantom_manifest.read_text())["test"][0]["case_id"]
    out = tmp_path / "pred"
    seg = CliRunner().invoke(cli, ["segment", str(phantom_root / case), "--output", str(out), "--quiet", "--device", "cpu"])
    assert seg.exit_code == 0, seg.output
    pred, ref = nib.load(out / f"{case}_seg.nii.gz"), nib.load(phantom_root / case / f"{case}_flair.nii.gz")
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine) and pred.get_data_dtype() == np.uint8
    ev = CliRunner().invoke(cli, ["evaluate", "--pred", str(out), "--manifest", str(phantom_manifest), "--data-dir", str(phantom_root), "--split", "test", "--png"])
    assert ev.exit_code == 0, ev.output
    assert "WT dice" in ev.output and case in ev.output
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case,WT_dice,WT_hd95") and rows[1].startswith(case) and rows[2].startswith("mean")
    assert (out / f"{case}_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_without_data_runs_on_announced_phantom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VOLSEG_BRATS_DIR", str(tmp_path / "no_data"))  # the default data folder, empty
    result = CliRunner().invoke(cli, ["demo", "--output-dir", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC phantom" in result.output and "Dice  WT" in result.output
    assert (tmp_path / "demo" / "Phantom_001_seg.nii.gz").is_file() and (tmp_path / "demo" / "Phantom_001_overlay.png").is_file()


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    assert len(blocks) == 2
    assert blocks[1] in (REPO_ROOT / ".ci" / "run").read_text()


def test_bundles_lists_every_installed_bundle_with_its_weights():
    from app.bundles import BUNDLES

    result = CliRunner().invoke(cli, ["bundles"])
    assert result.exit_code == 0, result.output
    for name in BUNDLES:
        assert f"{name}\n  folder:" in result.output
    assert "fold0.pt" in result.output and "model.pt" in result.output


def test_demo_on_a_given_folder_without_brats_cases_says_so(tmp_path: Path):
    """An explicit --data-dir without BraTS cases ran the synthetic phantom with a warning only."""
    result = CliRunner().invoke(cli, ["demo", "--data-dir", str(tmp_path / "no_data"), "--output-dir", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 2 and f"--data-dir '{tmp_path / 'no_data'}' holds no BraTS case to demonstrate on" in result.output
    assert not (tmp_path / "demo").exists()


def test_demo_on_one_case_folder(phantom_root: Path, tmp_path: Path):
    result = CliRunner().invoke(cli, ["demo", "--data-dir", str(phantom_root / "Phantom_002"), "--output-dir", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "case Phantom_002: real BraTS case" in result.output and (tmp_path / "demo" / "Phantom_002_seg.nii.gz").is_file()


def test_cv_and_export_commands_refuse_unusable_output_paths_before_any_work(tmp_path: Path, phantom_manifest: Path):
    """These commands ended with a Python traceback naming a temporary file (IsADirectoryError,
    FileExistsError, NotADirectoryError) where an output path was a folder or lay under a file."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    runs = {
        "--out '{0}/adir' is a folder; give a file name": ["cv", "folds", str(phantom_manifest), "--out", str(tmp_path / "adir")],
        "cannot write --out '{0}/afile/x.json': '{0}/afile' is a file": ["cv", "folds", str(phantom_manifest), "--out", str(tmp_path / "afile" / "x.json")],
        "manifest '{0}/adir' is a folder; give the datalist JSON file": ["cv", "folds", str(tmp_path / "adir"), "--out", str(tmp_path / "x.json")],
        "--out-dir '{0}/afile' is an existing file, not a folder": ["cv", "n4-copies", "--out-dir", str(tmp_path / "afile")],
        "--output '{0}/afile' is an existing file, not a folder": ["cv", "evaluate", "--output", str(tmp_path / "afile")],
        "DEST '{0}/afile' is an existing file, not a folder": ["export-monailabel", "brats_unet3d", str(tmp_path / "afile")],
    }
    for expected, args in runs.items():
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and expected.format(tmp_path) in result.output and "Traceback" not in result.output, (args, result.output)
    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["cv", "folds", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and f"manifest '{tmp_path / 'bad.json'}' is not valid JSON" in result.output
