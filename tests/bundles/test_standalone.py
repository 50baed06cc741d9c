"""Each bundle folder, copied alone into an empty folder, runs MONAI's own bundle commands there
(issue 12: "cp -r bundles/<each bundle> into an empty folder; there verify_metadata,
verify_net_in_out ... --config_file configs/inference.yaml and monai.bundle run --config_file
configs/inference.yaml --dataset_dir DIR --output_dir OUT pass and write labels").

The commands run in this process (``monai.bundle.scripts``, what ``python -m monai.bundle``
calls), from the copied folder, with VolSeg imported from this environment;
``test_standalone_wheel.py`` runs them as commands with VolSeg installed from its wheel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.bundle.scripts import run, verify_metadata, verify_net_in_out

from app.bundles import BUNDLES, bundle_dir, default_root
from app.data.phantom import make_brats_phantom, make_ct_phantom
from tests.conftest import REPO_ROOT

SCHEMA = REPO_ROOT / "bundles" / "meta_schema.json"
#: Label values each kind of bundle may write.
VALUES = {"brats": {0, 1, 2, 4}, "ct": {0, 1}}


def copy_bundle(name: str, dest: Path) -> Path:
    """``cp -r bundles/<name> <dest>/``, links kept as links (a link would then dangle), without
    the outputs of earlier runs."""
    out = dest / name
    shutil.copytree(bundle_dir(name), out, symlinks=True, ignore=shutil.ignore_patterns("runs", "eval", "__pycache__"))
    return out


def case_dir(kind: str, dest: Path) -> tuple[Path, Path]:
    """A folder holding one phantom case of the kind a bundle reads, and the case's reference image."""
    if kind == "brats":
        make_brats_phantom(dest, "Phantom_000", shape=(40, 48, 36), spacing_mm=(1.0, 0.9, 1.5), seed=0)
        return dest, dest / "Phantom_000" / "Phantom_000_t1.nii.gz"
    make_ct_phantom(dest, "ct_000", shape=(40, 36, 20), spacing_mm=(1.5, 1.5, 4.0), seed=0)
    return dest / "imagesTr", dest / "imagesTr" / "ct_000.nii.gz"


def add_untrained_weights(bundle: Path) -> None:
    """``models/model.pt`` for a bundle that ships none (ct_unet3d), from its own network_def."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_copied_bundle_runs_monai_commands(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bundle = copy_bundle(name, tmp_path / "elsewhere")
    data, reference = case_dir(BUNDLES[name].data_kind, tmp_path / "data")
    if not BUNDLES[name].ships_weights:
        add_untrained_weights(bundle)
    monkeypatch.chdir(bundle)
    assert default_root(name) == str(bundle)  # bundle_root: the folder it runs from, not the shipped copy

    verify_metadata(meta_file="configs/metadata.json", filepath=str(SCHEMA))
    verify_net_in_out("network_def", meta_file="configs/metadata.json", config_file="configs/inference.yaml", device="cpu")
    run(config_file="configs/inference.yaml", dataset_dir=str(data), output_dir=str(tmp_path / "out"), logging_file=False)

    (label_file,) = (tmp_path / "out").iterdir()
    assert label_file.name in ("Phantom_000_seg.nii.gz", "ct_000_seg.nii.gz")
    label, ref = nib.load(label_file), nib.load(reference)
    assert label.shape == ref.shape and np.allclose(label.affine, ref.affine)
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) <= VALUES[BUNDLES[name].data_kind]


def test_the_template_without_weights_says_so_under_monais_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`python -m monai.bundle run` on a copy of ct_unet3d (no weights) failed inside the checkpoint
    loader with a bare FileNotFoundError; the config's initialize now names the fix first."""
    bundle = copy_bundle("ct_unet3d", tmp_path / "elsewhere")
    data, _ = case_dir("ct", tmp_path / "data")
    monkeypatch.chdir(bundle)
    with pytest.raises(Exception) as err:
        run(config_file="configs/inference.yaml", dataset_dir=str(data), output_dir=str(tmp_path / "out"), logging_file=False)
    chain = []
    cause: BaseException | None = err.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert any("has no trained weights" in c and "volseg train --bundle" in c for c in chain), chain
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_copied_bundle_run_from_another_folder_is_its_own_bundle_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture):
    """Run from any folder but its own without --bundle_root, a copied (or trained) bundle loaded the
    installed copy's weights and wrote its outputs inside the installed package."""
    import subprocess
    import sys

    bundle = copy_bundle("ct_unet3d", tmp_path / "elsewhere")
    add_untrained_weights(bundle)
    data, reference = case_dir("ct", tmp_path / "data")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    for argv in (["--config_file", "../elsewhere/ct_unet3d/configs/inference.yaml"],
                 ["--config_file", "['../elsewhere/ct_unet3d/configs/common.yaml','../elsewhere/ct_unet3d/configs/train.yaml']"],
                 ["--config_file=../elsewhere/ct_unet3d/configs/common.yaml,../elsewhere/ct_unet3d/configs/evaluate.yaml"]):
        monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", *argv])
        assert default_root("ct_unet3d") == str(bundle), argv
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", "--config_file", "my_inference.yaml"])
    assert default_root("ct_unet3d") == str(bundle_dir("ct_unet3d"))
    assert "pass --bundle_root <bundle folder>" in caplog.text
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "../elsewhere/ct_unet3d/configs/inference.yaml",
                           "--dataset_dir", str(data)], capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (label,) = (bundle / "eval" / "inference").iterdir()  # the copy's own output folder, read with the copy's weights
    assert label.name == "ct_000_seg.nii.gz" and nib.load(label).shape == nib.load(reference).shape
    assert str(bundle / "models" / "model.pt") in done.stdout + done.stderr


def test_a_misspelt_override_on_monais_command_line_is_warned_about(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """`--overlpa 0.25 --sw_batchsize 2` ran with the defaults without a word."""
    import sys

    import app.bundles

    monkeypatch.setattr(app.bundles, "_warned_overrides", [])
    config = bundle_dir("brats_unet3d") / "configs" / "inference.yaml"
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", "--config_file", str(config), "--overlpa", "0.25", "--sw_batchsize", "2",
                                      "--network_def#dropout", "0.1", "--dataset_dir", "/data", "--overlap", "0.5", "--bundle_root", "x"])
    assert default_root("brats_unet3d") == str(bundle_dir("brats_unet3d"))
    warnings = [r.getMessage() for r in caplog.records if "is no key of" in r.getMessage()]
    assert len(warnings) == 2 and "--overlpa is no key of inference.yaml" in warnings[0] and "did you mean --overlap" in warnings[0]
    assert "--sw_batchsize" in warnings[1] and "--sw_batch_size" in warnings[1]


def test_a_folder_named_like_a_shipped_bundle_is_used_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """--bundle brats_deeplab3d run beside a copied folder of that name used the copy without a word."""
    import logging

    from app.bundles import bundle_dir, bundle_path

    (tmp_path / "ct_unet3d" / "configs").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="app.bundles"):
        assert bundle_path("ct_unet3d").resolve() == (tmp_path / "ct_unet3d").resolve()
    assert f"the folder {(tmp_path / 'ct_unet3d').resolve()} (a folder of that name here), not the shipped bundle" in caplog.text
    caplog.clear()
    monkeypatch.chdir(bundle_dir("ct_unet3d").parent)
    with caplog.at_level(logging.INFO, logger="app.bundles"):
        bundle_path("ct_unet3d")  # the shipped bundle's own folder: nothing to say
    assert not caplog.text
