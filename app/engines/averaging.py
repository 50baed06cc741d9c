"""Stochastic weight averaging (SWA) of the weights a training run passes through.

Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better Generalization"
(arXiv:1803.05407), with PyTorch's ``torch.optim.swa_utils.AveragedModel``: the equal-weight
average of the weights after each epoch from ``start_epoch`` on replaces the network's weights
after the last epoch, before that epoch's validation and checkpoints, so ``model.pt`` and
``last.pt`` hold the average. Our networks use instance normalisation (no running statistics),
so no batch-norm update pass is needed afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.optim.swa_utils import AveragedModel

logger = logging.getLogger(__name__)


class WeightAveraging:
    """Ignite handler: average the network's weights over the epochs ``start_epoch..max_epochs``.

    Attach it to the trainer before the ``ValidationHandler`` (MONAI ``SupervisedTrainer``'s
    ``train_handlers`` are attached in list order, and Ignite fires handlers in that order), so
    that the last epoch's validation scores the averaged weights. With a ``checkpointer``
    (:class:`app.engines.AtomicCheckpointer`) the running average is saved in ``last.pt`` and
    restored on resume.

    Args:
        network: the trained ``torch.nn.Module`` (its parameters are overwritten by the average
            after the last epoch).
        start_epoch: first epoch (1-based) whose end-of-epoch weights enter the average; 0 or a
            value above the run's ``max_epochs`` turns averaging off (the handler does nothing).
        checkpointer: optional checkpointer whose ``save_dict`` gets ``weight_averaging``.

    Raises:
        ValueError: ``start_epoch`` is negative.
    """

    def __init__(self, network: torch.nn.Module, start_epoch: int = 0, checkpointer: Any = None) -> None:
        if int(start_epoch) < 0:
            raise ValueError(f"start_epoch must be >= 0 (0 turns weight averaging off), got {start_epoch}")
        self.network = network
        self.start_epoch = int(start_epoch)
        self.enabled = self.start_epoch > 0
        self.averaged: AveragedModel | None = None
        if self.enabled:
            self.averaged = AveragedModel(network, device=torch.device("cpu"))
            if checkpointer is not None:
                checkpointer.save_dict["weight_averaging"] = self

    @property
    def n_averaged(self) -> int:
        """Number of epochs averaged so far."""
        return int(self.averaged.n_averaged.item()) if self.averaged is not None else 0

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict() if self.averaged is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.averaged is not None:
            self.averaged.load_state_dict(state)

    def attach(self, trainer: Engine) -> None:
        """Register the per-epoch update on ``trainer`` (nothing when averaging is off)."""
        if self.enabled:
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self.update)

    def update(self, engine: Engine) -> None:
        """Add this epoch's weights to the average; after the last epoch, load the average."""
        epoch, last = int(engine.state.epoch), int(engine.state.max_epochs)
        if epoch < self.start_epoch:
            return
        self.averaged.update_parameters(self.network)
        if epoch == last:
            with torch.no_grad():
                for p, q in zip(self.network.parameters(), self.averaged.module.parameters()):
                    p.copy_(q.to(p.device, p.dtype))
            logger.info(f"weight averaging: the network now holds the average of {self.n_averaged} epochs ({self.start_epoch}..{last})")
