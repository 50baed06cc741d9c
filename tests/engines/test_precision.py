"""Mixed precision: the loss runs in float32 under autocast; a run of NaN losses stops training; a step with NaN gradients is skipped."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss

from app.bundles import bundle_dir, config_files
from app.engines import Float32Loss, NonFiniteGradientSkip, NonFiniteLossGuard


def _bundle_loss(name: str = "brats_unet3d") -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(config_files(name, "train"))
    parser.read_meta(str(bundle_dir(name) / "configs" / "metadata.json"))
    return parser.get_parsed_content("loss", lazy=False)


def test_wrapped_loss_is_the_float32_loss_under_float16_autocast():
    """A batch of 2 x 3 x 128^3 (the training crops): DiceCE with squared_pred in float16 would
    square a vector norm of about 1.7e3 (3e6, over float16's 65504); wrapped, the value under
    float16 autocast is the float32 loss of the same logits."""
    torch.manual_seed(0)
    loss = _bundle_loss()
    assert isinstance(loss, DiceCELoss)
    logits = (torch.randn(2, 3, 128, 128, 128) * 3).half()
    target = (torch.rand(2, 3, 128, 128, 128) > 0.8).float()
    with torch.autocast("cpu", dtype=torch.float16):
        wrapped = Float32Loss(loss)(logits, target)
    reference = loss(logits.float(), target)
    assert wrapped.dtype == torch.float32 and math.isfinite(float(wrapped))
    assert float(wrapped) == pytest.approx(float(reference), rel=1e-5)


def test_gradient_flows_through_the_wrapper():
    logits = torch.randn(1, 3, 8, 8, 8, requires_grad=True)
    target = (torch.rand(1, 3, 8, 8, 8) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Float32Loss(DiceCELoss(sigmoid=True))(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["brats_unet3d", "brats_deeplab3d", "ct_unet3d"])
def test_bundle_trainers_use_the_float32_loss_the_guard_and_the_skip(name: str):
    parser = ConfigParser()
    parser.read_config(config_files(name, "train"))
    meta = bundle_dir(name) / "configs" / "metadata.json"
    parser.read_meta(str(meta))
    loss = parser.get_parsed_content("train#trainer#loss_function")  # distillation off by default: the plain loss, wrapped
    assert isinstance(loss, Float32Loss) and loss.loss is parser.get_parsed_content("loss")
    targets = [h.get("_target_") for h in parser["train"]["handlers"] if isinstance(h, dict)]
    assert "app.engines.NonFiniteLossGuard" in targets and "app.engines.NonFiniteGradientSkip" in targets


def _run(losses: list[float], patience: int) -> Engine:
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(losses[engine.state.iteration - 1])})
    NonFiniteLossGuard(patience=patience).attach(trainer)
    trainer.run([0] * len(losses), max_epochs=1)
    return trainer


def test_guard_stops_a_run_of_nan_losses_with_an_error():
    nan = float("nan")
    with pytest.raises(RuntimeError, match=r"nan for 3 iterations in a row \(epoch 1, iteration 5\).*amp=false.*compile=false"):
        _run([0.9, 0.8, nan, nan, nan, 0.5], patience=3)


def test_guard_tolerates_isolated_non_finite_losses():
    nan, inf = float("nan"), float("inf")
    trainer = _run([0.9, nan, nan, 0.7, inf, nan, 0.5], patience=3)  # never 3 in a row
    assert trainer.state.iteration == 7
    with pytest.raises(ValueError, match="patience"):
        NonFiniteLossGuard(patience=0)


def _skip_run(nan_at: set[int], patience: int = 20, skip: bool = True) -> tuple[list[torch.Tensor], NonFiniteGradientSkip]:
    """A MONAI SupervisedTrainer (float32, CPU) over 5 one-item batches whose gradients are NaN
    at the iterations ``nan_at`` while the loss stays finite; the weights after each iteration."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 1, 1)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, network=network,
                                optimizer=torch.optim.AdamW(network.parameters(), lr=0.1),
                                loss_function=torch.nn.MSELoss(), train_data_loader=[{"image": torch.rand(1, 1, 2, 2, 2), "label": torch.zeros(1, 1, 2, 2, 2)}] * 5)
    network.weight.register_hook(lambda g: torch.full_like(g, float("nan")) if trainer.state.iteration in nan_at else g)
    handler = NonFiniteGradientSkip(patience=patience)
    if skip:
        handler.attach(trainer)
    weights: list[torch.Tensor] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: weights.append(network.weight.detach().clone()))
    trainer.run()
    return weights, handler


def test_a_step_with_nan_gradients_is_skipped_and_training_goes_on(caplog: pytest.LogCaptureFixture):
    with caplog.at_level("WARNING", logger="app.engines.precision"):
        weights, handler = _skip_run({2, 3})
    assert handler.skipped == 2 and all(torch.isfinite(w).all() for w in weights)
    assert torch.equal(weights[1], weights[0]) and torch.equal(weights[2], weights[0])  # skipped: not even weight decay moved them
    assert not torch.equal(weights[3], weights[2])  # the next finite step trains again
    assert "iteration 2: gradients of 1 parameter(s) hold NaN or inf (weight)" in caplog.text


def test_without_the_skip_one_nan_step_poisons_the_weights():
    weights, _ = _skip_run({2}, skip=False)  # the failure the handler exists for
    assert torch.isfinite(weights[0]).all() and not torch.isfinite(weights[-1]).all()


def test_a_run_of_nan_gradients_stops_with_an_error():
    with pytest.raises(RuntimeError, match=r"NaN or inf for 3 iterations in a row \(epoch 1, iteration 4; first: weight\).*train#inferer#enabled=false"):
        _skip_run({2, 3, 4}, patience=3)
    with pytest.raises(ValueError, match="patience"):
        NonFiniteGradientSkip(patience=0)
