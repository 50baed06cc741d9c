"""Every bundle: synthetic data, one epoch; train, resume, evaluate and inference configs run to the end."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from app import api
from app.bundles import BUNDLES, bundle_dir, config_files

SMALL = {"roi_size": [32, 32, 32], "sw_batch_size": 2, "batch_size": 1, "num_samples": 1, "val_interval": 1}


def _workflow(name: str, overlay: str, **overrides) -> ConfigWorkflow:
    root = bundle_dir(name)
    wf = ConfigWorkflow(config_file=config_files(name, overlay), meta_file=str(root / "configs" / "metadata.json"), logging_file=False,
                        workflow_type=None, bundle_root=str(root), **overrides)
    wf.initialize()
    return wf


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def trained(request, bundle_data, tmp_path_factory: pytest.TempPathFactory):
    name = request.param
    root, manifest, _ = bundle_data[BUNDLES[name].data_kind]
    out = tmp_path_factory.mktemp(f"{name}_train")
    common = {"dataset_dir": str(root), "data_list_file": str(manifest), "device": "$torch.device('cpu')"}
    api.train(name, manifest, root, out, {**SMALL, "max_epochs": 1}, progress=False)
    return name, out, common


def test_train_writes_best_and_last_and_run_record(trained):
    name, out, _ = trained
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["trainer"]["iteration"] == last["trainer"]["epoch_length"] > 0 and "optimizer" in last and last["checkpointer"]["best_epoch"] == 1
    assert json.loads((out / "run_info.json").read_text())["monai"]
    assert json.loads((out / "run_config.json").read_text())["max_epochs"] == 1
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary files


def test_train_resumes_from_last_checkpoint(trained, tmp_path: Path):
    name, out, common = trained
    before = torch.load(out / "last.pt", weights_only=False)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "last.pt").write_bytes((out / "last.pt").read_bytes())
    wf = _workflow(name, "train", **common, **SMALL, max_epochs=2, output_dir=str(resumed))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * before["trainer"]["iteration"]  # one new epoch, not two


def test_evaluate_config(trained, tmp_path: Path):
    name, out, common = trained
    wf = _workflow(name, "evaluate", **common, **SMALL, ckpt_path=str(out / "model.pt"), output_dir=str(tmp_path))
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= evaluator.state.metrics["val_mean_dice"] <= 1.0
    if BUNDLES[name].data_kind == "brats":
        assert {"val_dice_TC", "val_dice_WT", "val_dice_ET"} <= set(evaluator.state.metrics)
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "val_mean_dice_raw.csv").read_text().count(".nii.gz") == 1


def test_inference_config_writes_labels_in_input_geometry(trained, bundle_data, tmp_path: Path):
    name, out, common = trained
    root, manifest, values = bundle_data[BUNDLES[name].data_kind]
    wf = _workflow(name, "inference", **common, **SMALL, ckpt_path=str(out / "model.pt"), output_dir=str(tmp_path), data_split="test")
    wf.run()
    item = json.loads(manifest.read_text())["test"][0]
    pred = nib.load(tmp_path / f"{item['case_id']}_seg.nii.gz")
    image = item["image"][0] if isinstance(item["image"], list) else item["image"]
    ref = nib.load(root / image)
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    assert pred.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(pred.dataobj))) <= values


def test_training_output_is_a_bundle_that_segments(trained, bundle_data):
    from app.inference import Segmenter
    from app.labels import LabelManager

    name, out, _ = trained
    root, manifest, values = bundle_data[BUNDLES[name].data_kind]
    assert (out / "models" / "model.pt").is_file() and (out / "docs" / "README.md").is_file()
    assert LabelManager.from_bundle(out) == LabelManager.from_bundle(name)
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["training_run"]["best_epoch"] == 1 and meta["eval_metrics"]  # validated once: its figures, not the source's
    item = json.loads(manifest.read_text())["test"][0]
    images = [root / p for p in (item["image"] if isinstance(item["image"], list) else [item["image"]])]
    segmenter = Segmenter(out, device="cpu")
    assert segmenter.parser["roi_size"] == SMALL["roi_size"]  # the run's overrides are the bundle's settings
    label, _ = segmenter.predict(images)
    assert label.shape == nib.load(images[0]).shape and set(np.unique(label)) <= values


def test_the_runner_segments_a_case_that_lacks_sequences(phantom_root: Path, tmp_path: Path):
    """python -m monai.bundle run refused a case folder without T1 and T2, a datalist with null
    (as its own error message advised) failed in the DataLoader's collate, and a JSON datalist's
    relative paths beside a null were not joined to dataset_dir; volseg segment takes such cases."""
    case = tmp_path / "data" / "Phantom_004"
    case.mkdir(parents=True)
    for m in ("t1ce", "flair"):
        (case / f"Phantom_004_{m}.nii.gz").write_bytes((phantom_root / "Phantom_004" / f"Phantom_004_{m}.nii.gz").read_bytes())
    device = {"device": "$torch.device('cpu')", "inference_backend": "torch"}
    _workflow("brats_unet3d", "inference", dataset_dir=str(case.parent), output_dir=str(tmp_path / "folder"), **device).run()
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": [None, "Phantom_004/Phantom_004_t1ce.nii.gz", None, "Phantom_004/Phantom_004_flair.nii.gz"]}]}))
    _workflow("brats_unet3d", "inference", dataset_dir=str(case.parent), data_list_file=str(datalist), data_split="test",
              output_dir=str(tmp_path / "split"), **device).run()
    labels = [np.asarray(nib.load(tmp_path / run / "Phantom_004_seg.nii.gz").dataobj) for run in ("folder", "split")]
    ref = nib.load(case / "Phantom_004_flair.nii.gz")
    assert labels[0].shape == ref.shape and np.array_equal(labels[0], labels[1]) and set(np.unique(labels[0])) <= {0, 1, 2, 4}
    label, _ = api.segment(case, device="cpu", backend="torch")
    assert np.array_equal(label, labels[0])  # the runner's label is volseg segment's


def test_evaluate_without_weights_or_cases_says_so(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    """ct_unet3d's evaluate.yaml ran nothing and exited 0 on the shipped datalist's empty test split,
    and failed with a bare FileNotFoundError for models/model.pt on another split."""
    common = {"dataset_dir": str(ct_phantom_root), "data_list_file": str(ct_phantom_manifest), "device": "$torch.device('cpu')", "output_dir": str(tmp_path)}
    with pytest.raises(RuntimeError) as no_weights:
        _workflow("ct_unet3d", "evaluate", **common, ckpt_path=str(tmp_path / "none.pt"))
    assert "has no trained weights" in str(no_weights.value.__cause__) and "evaluate with --bundle_root R" in str(no_weights.value.__cause__)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**json.loads(ct_phantom_manifest.read_text()), "test": []}))
    weights = tmp_path / "model.pt"
    torch.save({}, weights)
    with pytest.raises(RuntimeError) as no_cases:
        _workflow("ct_unet3d", "evaluate", **{**common, "data_list_file": str(empty)}, ckpt_path=str(weights))
    assert "split 'test' of datalist" in str(no_cases.value.__cause__) and "holds no case" in str(no_cases.value.__cause__)
