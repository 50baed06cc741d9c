"""A training run's output folder is a complete bundle: segment, evaluate and serve take it.

Synthetic CT phantoms (shape (40, 36, 20), spacing (1.5, 1.5, 4.0) mm), one epoch, shorter than
the validation interval (so ``model.pt`` holds the final weights), with config overrides that
the bundle must carry into inference.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import api
from app.inference import Segmenter

RUN = {"max_epochs": 1, "val_interval": 2, "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1, "spacing_mm": [3.0, 3.0, 4.0],
       "device": "$torch.device('cpu')"}


@pytest.fixture(scope="module")
def trained_ct(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path_factory.mktemp("runs") / "ct_run", dict(RUN), progress=False)


def test_output_folder_has_the_model_zoo_layout_and_the_runs_figures(trained_ct: Path, ct_phantom_root: Path):
    out = trained_ct
    for rel in ("configs/common.yaml", "configs/inference.yaml", "configs/train.yaml", "configs/logging.conf", "configs/datalist.json",
                "models/model.pt", "docs/README.md", "LICENSE"):
        assert (out / rel).is_file(), rel
    assert (out / "models" / "model.pt").read_bytes() == (out / "model.pt").read_bytes()  # final weights: no validation ran
    from app.bundle_tools.large_files import stale_entries

    assert "models/model.pt" in (out / "large_files.yml").read_text() and stale_entries(out) == []
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    run = meta["training_run"]
    assert run["epochs"] == 1 and run["iterations"] == 2 and run["best_metric"] is None and run["num_training_cases"] == 2
    assert run["source_bundle"] == "ct_unet3d" and run["date"] and meta["eval_metrics"] == {} and meta["labels"]["1"] == "spleen"
    assert json.loads((out / "configs" / "datalist.json").read_text())["numTraining"] == 2
    # the template's "ships no trained weights" and its 1.5 mm spacing are not said of the trained bundle
    assert "no trained weights" not in meta["description"] + meta["intended_use"] and "spacing_mm [3.0, 3.0, 4.0]" in meta["description"]
    segmenter = Segmenter(out, device="cpu")
    assert segmenter.parser["spacing_mm"] == [3.0, 3.0, 4.0] and segmenter.parser["roi_size"] == [32, 32, 32]  # the run's overrides
    assert segmenter.parser.get_parsed_content("dataset_dir") == str(ct_phantom_root.resolve())
    assert "volseg segment INPUT --bundle" in (out / "docs" / "README.md").read_text()


def test_segment_evaluate_and_serve_take_the_output_folder(trained_ct: Path, ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    from app.serve import ServerConfig, create_app

    case = json.loads(ct_phantom_manifest.read_text())["test"][0]
    image = ct_phantom_root / case["image"]
    result, = api.segment_cases([image], tmp_path / "pred", bundle=str(trained_ct), device="cpu")
    assert result.error is None, result.error
    pred, ref = nib.load(tmp_path / "pred" / f"{case['case_id']}_seg.nii.gz"), nib.load(image)
    from app.inference.backends import openvino_available

    backend = json.loads((tmp_path / "pred" / "volseg_run.json").read_text())["backend"]
    assert backend == ("openvino" if openvino_available() and not os.environ.get("VOLSEG_BACKEND") else backend)  # the bundle's inference_backend: auto
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine) and set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
    every = api.segment_cases([ct_phantom_root / "imagesTr"], tmp_path / "all", bundle=str(trained_ct), device="cpu")  # a dataset folder: one call
    assert len(every) == 5 and not any(r.error for r in every) and len(list((tmp_path / "all").glob("*_seg.nii.gz"))) == 5
    rows = api.evaluate(tmp_path / "pred", splits=("test",), bundle=str(trained_ct))  # the bundle's datalist and data folder
    assert rows[0]["case"] == case["case_id"] and "spleen_dice" in rows[0] and "WT_dice" not in rows[0]
    info = TestClient(create_app(ServerConfig(tmp_path / "store", None, [str(trained_ct)], "cpu"))).get("/info/").json()
    assert info["models"]["ct_run"]["labels"] == {"spleen": 1} and info["labels"] == {"spleen": 1}


def test_mri_options_on_a_ct_bundle_and_a_template_without_weights_stop_before_anything_is_written(trained_ct: Path, ct_phantom_root: Path,
                                                                                                     ct_phantom_manifest: Path, tmp_path: Path):
    """Options the CT bundle has no use for were run (N4 on HU) or ignored (no uncertainty map
    written, --sequences); the shipped template, which has no weights, said "no fold models for
    --mode accurate". Each is one error line, exit 2, and no output folder is left behind."""
    from typer.testing import CliRunner

    from app.cli import app as cli

    image = ct_phantom_root / json.loads(ct_phantom_manifest.read_text())["test"][0]["image"]
    for bundle, args, message in [
        ("ct_unet3d", [], "bundle 'ct_unet3d' has no trained weights: '.*model.pt' is missing .* volseg train --bundle ct_unet3d"),
        (str(trained_ct), ["--n4"], "has no N4 settings \\(n4_params\\): --n4 corrects the bias field of MRI"),
        (str(trained_ct), ["--uncertainty"], "has no whole-tumour region \\(WT\\): --uncertainty"),
        (str(trained_ct), ["--sequences", "flair"], "--sequences names the sequences of a multi-sequence bundle"),
    ]:
        out = tmp_path / f"out{len(args)}{args[:1]}"
        result = CliRunner().invoke(cli, ["segment", str(image), "--bundle", bundle, "--output", str(out), "--device", "cpu", "--quiet", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert re.search(message, " ".join(result.output.split())), result.output
        assert not out.exists()


def test_an_image_that_is_not_ct_in_hu_is_segmented_with_a_warning_in_the_record(trained_ct: Path, ct_phantom_root: Path, ct_phantom_manifest: Path,
                                                                                  tmp_path: Path):
    image = ct_phantom_root / json.loads(ct_phantom_manifest.read_text())["test"][0]["image"]
    ct = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj).astype(np.int16) + 1100, ct.affine), tmp_path / "mr_like.nii.gz")  # no air: as an MRI
    for name, path in (("ct", image), ("mr", tmp_path / "mr_like.nii.gz")):
        result, = api.segment_cases([path], tmp_path / name, bundle=str(trained_ct), device="cpu")
        assert result.error is None
    records = {name: json.loads((tmp_path / name / "volseg_run.json").read_text())["cases"][0] for name in ("ct", "mr")}
    assert not records["ct"].get("input_warnings")
    assert "not CT in Hounsfield units" in records["mr"]["input_warnings"][0] and "mr_like.nii.gz" in records["mr"]["input_warnings"][0]


def test_empty_splits_give_a_clear_error(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    content = json.loads(ct_phantom_manifest.read_text())
    no_training = tmp_path / "no_training.json"
    no_training.write_text(json.dumps({**content, "training": []}))
    with pytest.raises(ValueError, match="'training' split of .* is empty: nothing to train on"):
        api.train("ct_unet3d", no_training, ct_phantom_root, tmp_path / "a", dict(RUN), progress=False)
    no_validation = tmp_path / "no_validation.json"
    no_validation.write_text(json.dumps({**content, "validation": []}))
    with pytest.raises(ValueError, match="'validation' split of .* is empty but validation is due every 1 epoch"):
        api.train("ct_unet3d", no_validation, ct_phantom_root, tmp_path / "b", {**RUN, "val_interval": 1}, progress=False)
    assert not (tmp_path / "b" / "model.pt").exists()


def test_labels_the_network_has_no_output_for_and_zero_epochs_are_refused_before_training(ct_phantom_root: Path, ct_phantom_manifest: Path,
                                                                                           tmp_path: Path):
    """A multi-organ label map on the one-organ template failed in the first step with "index 20 is
    out of bounds for dimension 1 with size 2", naming no file; --max-epochs 0 with 193 lines."""
    import shutil

    with pytest.raises(ValueError, match="max_epochs must be >= 1, got 0"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "zero", {**RUN, "max_epochs": 0}, progress=False)
    root = tmp_path / "data"
    shutil.copytree(ct_phantom_root, root)
    first = root / json.loads(ct_phantom_manifest.read_text())["training"][0]["label"]
    label = nib.load(first)
    organs = np.asarray(label.dataobj).astype(np.uint8) * 20  # organ 20 of a multi-organ map
    nib.save(nib.Nifti1Image(organs, label.affine), first)
    with pytest.raises(ValueError, match=rf"label '.*{first.name}' has the values 0, 20, but the network has num_classes=2 outputs .*--set num_classes=N"):
        api.train("ct_unet3d", ct_phantom_manifest, root, tmp_path / "multi", dict(RUN), progress=False)
    assert not (tmp_path / "multi").exists() and not (tmp_path / "zero").exists()


def test_a_missing_data_root_is_one_line_from_volseg_train(ct_phantom_manifest: Path, tmp_path: Path):
    """MONAI wraps the datalist's FileNotFoundError in "Failed to evaluate ConfigExpression"; the CLI
    gives the cause in one line (it was a 150-line traceback for a user without --data-dir)."""
    from typer.testing import CliRunner

    from app.cli import app as cli

    result = CliRunner().invoke(cli, ["train", "--bundle", "ct_unet3d", "--manifest", str(ct_phantom_manifest), "--data-dir", str(tmp_path / "nowhere"),
                                      "--output-dir", str(tmp_path / "run"), "--max-epochs", "1", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "error: datalist" in result.output and "--data-dir DIR for volseg" in result.output
    assert "Traceback" not in result.output and "ConfigExpression" not in result.output


def test_a_shipped_bundle_trains_into_the_working_folder_by_default(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    """Without --output-dir a run of a shipped bundle wrote into the bundle's folder, which in a wheel
    install is site-packages (read-only on shared machines, and shared by every run)."""
    from app.bundles import bundle_dir

    monkeypatch.chdir(tmp_path)
    before = set((bundle_dir("ct_unet3d") / "runs").rglob("*")) if (bundle_dir("ct_unet3d") / "runs").exists() else set()
    out = api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, None, dict(RUN), progress=False)
    assert out == tmp_path / "runs" / "ct_unet3d" and (out / "models" / "model.pt").is_file()
    after = set((bundle_dir("ct_unet3d") / "runs").rglob("*")) if (bundle_dir("ct_unet3d") / "runs").exists() else set()
    assert after == before  # nothing written into the shipped bundle


def test_new_weights_do_not_inherit_the_source_weights_accurate_n4():
    """A run's bundle starts from the source metadata, but N4 by default in accurate mode was
    chosen for the source's N4-trained weights: the new bundle has it off (``--n4`` still works);
    the other inference settings and the run's own figures stay."""
    from app.engines.trained_bundle import _metadata

    src = json.loads((Path(__file__).resolve().parents[2] / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    assert src["inference"]["accurate_n4"] is True
    meta = _metadata(src, Path("bundles/brats_unet3d"), {"epochs": 1, "final_metric": 0.5}, {})
    assert meta["inference"]["accurate_n4"] is False
    assert meta["inference"]["n4_combine"] == src["inference"]["n4_combine"] and meta["training_run"]["epochs"] == 1
    assert src["inference"]["accurate_n4"] is True  # the source's metadata is not touched


def test_new_weights_do_not_quote_the_source_weights_cv_per_sequence_subset(tmp_path: Path):
    """A 1-epoch bundle trained from brats_deeplab3d printed the shipped model's CV Dice (WT 0.778)
    for a FLAIR + T1ce case it segmented at WT 0.03: the per-subset tables came along."""
    from app.bundles import run_subset_cv
    from app.engines.trained_bundle import _metadata

    src = json.loads((Path(__file__).resolve().parents[2] / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    assert src["missing_sequences_cv"] and src["missing_sequences_cv_n4_int8"]
    meta = _metadata(src, Path("bundles/brats_unet3d"), {"epochs": 1, "final_metric": 0.5}, {})
    assert not [k for k in meta if k.startswith("missing_sequences_cv")] and src["missing_sequences_cv"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert run_subset_cv(tmp_path, ["t1", "t2"], False, False, "fast")[0] in (None, {})
