"""A training run shorter than its validation interval still writes model.pt (its final weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from app import api


def test_run_shorter_than_val_interval_writes_final_weights(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1, "max_epochs": 1, "val_interval": 10}
    out = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path, small, progress=False)
    last = torch.load(out / "last.pt", weights_only=False)
    assert last["checkpointer"]["best_epoch"] == -1  # no validation ran
    final = torch.load(out / "model.pt", weights_only=True)
    assert final.keys() == last["model"].keys() and all(torch.equal(final[k], last["model"][k]) for k in final)


def test_init_from_starts_from_given_weights_and_freeze_keeps_encoder(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    from monai.networks.nets import UNet

    from app.networks import encoder_parameter_names

    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1, "max_epochs": 1, "val_interval": 10}
    donor = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path / "donor", small, progress=False)
    init = torch.load(donor / "model.pt", weights_only=True)
    out = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path / "tuned", small, progress=False, init_from=donor / "model.pt", freeze_encoder=True)
    tuned = torch.load(out / "model.pt", weights_only=True)
    net = UNet(3, 4, 3, (8, 16, 32), (2, 2), num_res_units=2)
    frozen = [k for k in encoder_parameter_names(net)]
    assert frozen and all(torch.equal(tuned[k], init[k]) for k in frozen)  # started from the donor, encoder unchanged
    assert any(not torch.equal(tuned[k], init[k]) for k in tuned if k not in frozen and k.endswith("weight"))


def test_resume_false_from_the_command_line_does_not_resume(tmp_path: Path):
    """`python -m monai.bundle run ... --resume false` passes the string 'false', which is truthy."""
    import pytest
    import torch

    from app.engines.checkpoint import AtomicCheckpointer

    net = torch.nn.Linear(2, 2)
    assert AtomicCheckpointer(tmp_path, {"model": net}, net, resume="false").resume is False
    assert AtomicCheckpointer(tmp_path, {"model": net}, net, resume="True").resume is True
    assert [AtomicCheckpointer(tmp_path, {"model": net}, net, resume=v).resume for v in (True, False, "0", "yes")] == [True, False, False, True]
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        AtomicCheckpointer(tmp_path, {"model": net}, net, resume="maybe")
