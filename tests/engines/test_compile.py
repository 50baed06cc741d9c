"""The bundles' `compile` key: MONAI's SupervisedTrainer trains a torch.compile'd network and the
checkpoints still hold the plain network's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app import api
from app.bundles import bundle_dir, config_files
from app.engines import compile_supported


def test_probe_honours_the_switch(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VOLSEG_COMPILE", "0")
    compile_supported.cache_clear()
    assert compile_supported("cpu") is False
    compile_supported.cache_clear()


def test_bundle_default_reads_the_probe():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files("brats_unet3d", "train"))
    assert parser["compile"] == "$app.engines.compile_supported(@device) and not app.engines.cpu_bf16_supported(@device)"
    assert parser["train"]["trainer"]["compile"] == "$app.bundle_config.flag(@compile, 'compile')"  # text from the command line read as on/off


@pytest.mark.slow
def test_compiled_training_runs_and_saves_plain_weights(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    compile_supported.cache_clear()
    if not compile_supported("cpu"):  # conftest switches it off; ask TorchInductor directly
        import os

        os.environ["VOLSEG_COMPILE"] = "1"
        compile_supported.cache_clear()
        try:
            available = compile_supported("cpu")
        finally:
            os.environ["VOLSEG_COMPILE"] = "0"
            compile_supported.cache_clear()
        if not available:
            pytest.skip("TorchInductor cannot compile on this machine (no C++ compiler)")
    # batch 2 (MONAI's compile path once failed on batches of metadata) and a short last batch (a second graph)
    small = {"roi_size": [32, 32, 32], "sw_batch_size": 2, "batch_size": 2, "num_samples": 1, "val_interval": 1, "max_epochs": 1,
             "compile": True, "network_def#channels": [8, 16, 32]}
    api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path, small, progress=False)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state and not any(key.startswith("_orig_mod.") for key in state)  # the plain network's keys, loadable without compile
    from monai.networks.nets import UNet

    UNet(3, 4, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=2).load_state_dict(state)
    assert (bundle_dir("brats_unet3d") / "models" / "model.pt").is_file()  # the shipped weights are untouched
