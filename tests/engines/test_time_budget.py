"""Training for a wall-clock budget (app.engines.TimeBudget): decay over time, stop past the budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from app import api
from app.engines import TimeBudget


class FakeClock:
    """A settable seconds counter (the steps advance it)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(budget_s: float, seconds_per_iteration: float, iterations_per_epoch: int = 3, max_epochs: int = 50,
         power: float = 0.9) -> tuple[Engine, list[float], torch.optim.Optimizer]:
    clock = FakeClock()
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    lrs: list[float] = []

    def step(engine, _):
        lrs.append(opt.param_groups[0]["lr"])
        clock.now += seconds_per_iteration

    trainer = Engine(step)
    TimeBudget(opt, budget_s=budget_s, base_lr=0.01, power=power, clock=clock).attach(trainer)
    trainer.run(list(range(iterations_per_epoch)), max_epochs=max_epochs)
    return trainer, lrs, opt


def test_rate_decays_with_elapsed_time_and_run_stops_after_the_budget():
    trainer, lrs, _ = _run(budget_s=30.0, seconds_per_iteration=1.0)
    # 1 s an iteration, 3 an epoch: the epoch ending at 30 s is epoch 10, the last one run
    assert trainer.state.epoch == 10 and len(lrs) == 30
    expected = [0.01 * (1 - i / 30.0) ** 0.9 for i in range(30)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] < 0.001  # base_lr replaced the optimizer's 0.5


def test_slower_machine_same_decay_fewer_epochs():
    fast, lrs_fast, _ = _run(budget_s=60.0, seconds_per_iteration=1.0)
    slow, lrs_slow, _ = _run(budget_s=60.0, seconds_per_iteration=4.0)
    assert fast.state.epoch == 20 and slow.state.epoch == 5
    # same fraction of the budget, same rate
    assert lrs_slow[3] == pytest.approx(lrs_fast[12])


def test_max_epochs_still_bounds_and_off_changes_nothing():
    trainer, lrs, _ = _run(budget_s=1000.0, seconds_per_iteration=1.0, max_epochs=4)
    assert trainer.state.epoch == 4
    trainer, lrs, opt = _run(budget_s=0.0, seconds_per_iteration=1.0, max_epochs=4)
    assert trainer.state.epoch == 4 and set(lrs) == {0.5}
    with pytest.raises(ValueError, match="power"):
        TimeBudget(opt, budget_s=10, power=-1)


def test_bundle_training_with_a_budget_stops_and_writes_model(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    """A bundle run with ``time_budget_s`` ends before ``max_epochs`` and still leaves ``model.pt``
    (the checkpointer's ``COMPLETED`` handlers run after the stop)."""
    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1,
             "max_epochs": 10000, "val_interval": 10000, "time_budget_s": 0.001, "compile": False}
    out = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path, small, progress=False)
    last = torch.load(out / "last.pt", weights_only=False)
    assert (out / "model.pt").is_file()
    state = last["trainer"]  # Ignite's state_dict: iteration, epoch_length, max_epochs
    assert 1 <= state["iteration"] // state["epoch_length"] < 10000
    # the output bundle's metadata states the patch it was trained on (the configs read it from there)
    assert json.loads((out / "configs" / "metadata.json").read_text())["training"]["roi_size"] == [32, 32, 32]
