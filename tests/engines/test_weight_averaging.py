"""Stochastic weight averaging (app.engines.WeightAveraging): the final weights are the epoch average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from app import api
from app.engines import WeightAveraging


def _run(start_epoch: int, max_epochs: int = 4) -> tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """Train a stand-in network for ``max_epochs`` one-iteration epochs whose step moves the
    weights at random; return it, the raw weights after each step and the weights each epoch
    ends with as a handler attached after the averaging one (as ValidationHandler) sees them."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 3)
    raw, seen = [], []

    def step(engine, _):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        raw.append(net.weight.detach().clone())

    trainer = Engine(step)
    WeightAveraging(net, start_epoch=start_epoch).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(net.weight.detach().clone()))
    trainer.run([0], max_epochs=max_epochs)
    return net, raw, seen


def test_final_weights_are_the_average_of_epochs_from_start():
    net, raw, seen = _run(start_epoch=2)
    mean = torch.stack(raw[1:]).mean(0)  # epochs 2, 3, 4
    assert torch.allclose(net.weight, mean, atol=1e-6)
    assert torch.equal(seen[-1], net.weight)  # the last epoch's validation sees the average
    assert all(torch.equal(s, r) for s, r in zip(seen[:-1], raw[:-1]))  # earlier epochs untouched
    assert not torch.allclose(mean, raw[-1])


def test_off_leaves_weights_and_rejects_negative():
    net, raw, seen = _run(start_epoch=0)
    assert torch.equal(net.weight, raw[-1])
    net, raw, seen = _run(start_epoch=9)  # after the last epoch: off as well
    assert torch.equal(net.weight, raw[-1])
    with pytest.raises(ValueError, match="start_epoch"):
        WeightAveraging(torch.nn.Linear(1, 1), start_epoch=-1)


def test_bundle_training_saves_average_in_model_and_last(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1,
             "max_epochs": 2, "val_interval": 10, "swa_start_epoch": 1, "compile": False}
    out = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path, small, progress=False)
    last = torch.load(out / "last.pt", weights_only=False)
    swa = last["weight_averaging"]
    assert int(swa["n_averaged"]) == 2
    final = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(final[k], swa[f"module.{k}"]) for k in final)
    assert all(torch.equal(final[k], last["model"][k]) for k in final)
