"""Mixed precision that trains: the loss in float32, and a clear stop when the loss stops being a number.

With AMP on CUDA (MONAI ``SupervisedTrainer(amp=True)``: ``torch.autocast`` float16), the whole
forward pass, loss included, runs under autocast. MONAI's ``DiceLoss(squared_pred=True)`` takes
``torch.linalg.vector_norm`` of the float16 probabilities and squares it back: over a batch of
2 x 3 x 128^3 voxels that square is about 3e6, past float16's largest value (65504), so the loss
is inf - inf = NaN at every step, ``GradScaler`` skips every optimiser step and the weights never
move (seen on an H200: 5 folds x 53 epochs of NaN). :class:`Float32Loss` computes the loss in
float32 with autocast off, as PyTorch's AMP guide advises for reductions over many elements
(https://pytorch.org/docs/stable/amp.html); :class:`NonFiniteLossGuard` turns a run of NaN losses,
whatever their cause, into one error instead of minutes of silent non-training.
"""

from __future__ import annotations

import logging
import math

import torch
from ignite.engine import Engine, Events


class Float32Loss(torch.nn.Module):
    """Wrap a loss so that it runs in float32 with autocast disabled.

    Args:
        loss: a loss module taking ``(input, target)``, e.g. MONAI ``DiceCELoss``.

    Shapes: as the wrapped loss (``(B, C, H, W, D)`` logits and targets for the BraTS bundles);
    the inputs are cast to float32, so the value and its gradient do not depend on the autocast
    dtype (float16 on CUDA, bfloat16 on CPU) beyond the network's own outputs.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=input.device.type, enabled=False):
            return self.loss(input.float(), target.float())


class NonFiniteLossGuard:
    """Ignite handler: raise when the training loss is NaN or infinite ``patience`` iterations in a row.

    A single non-finite loss can happen (``GradScaler`` skips that step); a run of them means the
    model is not training, and every further epoch is lost time.

    Args:
        patience: consecutive non-finite losses tolerated before the error.

    Raises:
        RuntimeError: from the trainer, naming the epoch and iteration and what to try.
    """

    def __init__(self, patience: int = 20) -> None:
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.count = 0

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output  # MONAI: a dict, or a list of per-sample dicts (decollated)
        loss = (output[0] if isinstance(output, list) else output)["loss"]
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        self.count = 0 if math.isfinite(value) else self.count + 1
        if self.count >= self.patience:
            raise RuntimeError(
                f"training loss is {value} for {self.count} iterations in a row (epoch {engine.state.epoch}, iteration "
                f"{engine.state.iteration}): the model is not training. With AMP (float16 on CUDA) try --set amp=false, "
                "with a compiled step (torch.compile) --set compile=false; check that the images are finite and normalised and that the learning rate is not too high")


class NonFiniteGradientSkip:
    """Ignite handler: skip the optimiser step of an iteration whose gradients hold NaN or inf.

    On CUDA with AMP, ``GradScaler`` already skips such a step; this does the same for the
    other trainers (float32, or bfloat16 autocast on a CPU). A single poisoned step otherwise
    turns every weight NaN for good (AdamW carries the NaN into its moments). Seen: oneDNN's
    bfloat16 ``Conv3d`` weight gradient on an AVX-512 BF16 CPU (torch 2.13.0) for 128 channels of
    2 x 2 x 2 voxels (the bottom of brats_unet3d at ``roi_size`` 32) held NaN in 1-4 of 200
    backward passes of the network while the loss was finite; float32 and 64^3 crops: none
    (``benchmarks/bf16_conv_grads.py``, docs/performance.md).

    Runs on MONAI's ``IterationEvents.BACKWARD_COMPLETED`` (after ``loss.backward()`` and, with
    DDP, after the gradients are averaged over the ranks, so every rank skips alike). A skipped
    step sets every gradient to None: ``torch.optim`` optimisers then leave the weights, moments
    and weight decay of that step untouched. Each skip is logged with the parameters whose
    gradients were not finite.

    Args:
        patience: consecutive skipped steps tolerated before the error.

    Raises:
        RuntimeError: from the trainer, after ``patience`` skipped steps in a row.
        ValueError: ``patience`` below 1.
    """

    def __init__(self, patience: int = 20) -> None:
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.count = 0
        self.skipped = 0

    def attach(self, trainer: Engine) -> None:
        from monai.engines.utils import IterationEvents

        trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            return  # GradScaler checks the (scaled) gradients and skips the step itself
        named = [(name, p) for name, p in engine.network.named_parameters() if p.grad is not None]
        if not named or bool(torch.stack([torch.isfinite(p.grad).all() for _, p in named]).all()):  # one device sync a step
            self.count = 0
            return
        bad = [name for name, p in named if not bool(torch.isfinite(p.grad).all())]
        self.count += 1
        self.skipped += 1
        for _, p in named:
            p.grad = None
        logging.getLogger(__name__).warning(
            "epoch %d, iteration %d: gradients of %d parameter(s) hold NaN or inf (%s%s); the optimiser step is skipped (%d skipped so far)",
            engine.state.epoch, engine.state.iteration, len(bad), ", ".join(bad[:3]), ", ..." if len(bad) > 3 else "", self.skipped)
        if self.count >= self.patience:
            raise RuntimeError(
                f"gradients were NaN or inf for {self.count} iterations in a row (epoch {engine.state.epoch}, iteration "
                f"{engine.state.iteration}; first: {bad[0]}): the model is not training. With bfloat16 autocast on a CPU try "
                "--set train#inferer#enabled=false, with a compiled step --set compile=false; check that the images are finite "
                "and normalised and that the learning rate is not too high")
