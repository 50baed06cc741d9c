"""Smoke run of the CT template bundle on the real MSD spleen CT (one case: no accuracy claim)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from app import api
from app.bundles import bundle_dir, config_files
from tests.conftest import REPO_ROOT

SPLEEN = REPO_ROOT.parent / "shared" / "data" / "msd_spleen"
MANIFEST = REPO_ROOT / "data_manifests" / "msd_spleen_shared.json"
pytestmark = [pytest.mark.real_data, pytest.mark.slow, pytest.mark.skipif(not SPLEEN.is_dir(), reason=f"no spleen CT at {SPLEEN}")]


def test_train_then_infer_on_real_spleen_ct(tmp_path: Path):
    # one case: train and validate on it for one iteration, then segment it
    overrides = {"max_epochs": 1, "val_interval": 1, "val_split": "training", "batch_size": 1, "num_samples": 1, "device": "$torch.device('cpu')"}
    out = api.train("ct_unet3d", MANIFEST, SPLEEN, tmp_path / "train", overrides, progress=False)
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    root = bundle_dir("ct_unet3d")
    wf = ConfigWorkflow(config_file=config_files("ct_unet3d", "inference"), meta_file=str(root / "configs" / "metadata.json"), logging_file=False,
                        workflow_type=None, bundle_root=str(root), dataset_dir=str(SPLEEN), data_list_file=str(MANIFEST), data_split="training",
                        ckpt_path=str(out / "model.pt"), output_dir=str(tmp_path / "pred"), device="$torch.device('cpu')")
    wf.initialize()
    wf.run()
    pred, image = nib.load(tmp_path / "pred" / "spleen_8_seg.nii.gz"), nib.load(SPLEEN / "imagesTr" / "spleen_8.nii.gz")
    assert pred.shape == image.shape == (512, 512, 32)
    assert np.array_equal(pred.affine, image.affine) and pred.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
