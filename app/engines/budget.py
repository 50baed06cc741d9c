"""Training for a wall-clock budget rather than a number of epochs.

A lent GPU, a queue slot or a session gives a fixed number of minutes, and how many epochs fit
in them depends on the machine (data loading on its cores, the GPU's speed). With an epoch
count, a guess too low wastes the time and one too high stops the run mid-schedule, at a high
learning rate. :class:`TimeBudget` instead spreads nnU-Net's polynomial decay (Isensee et al.
2021, Nat. Methods 18:203: ``lr = base_lr * (1 - progress) ** 0.9``) over the elapsed time, and
ends the run after the first epoch that finishes past the budget, so the learning rate reaches
about zero whatever the speed.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class TimeBudget:
    """Ignite handler: polynomial learning-rate decay over ``budget_s`` seconds of training, then stop.

    From the trainer's first iteration, before each iteration the learning rate of every
    parameter group is set to ``base_lr * max(0, 1 - elapsed / budget_s) ** power``; after each
    epoch, once ``elapsed >= budget_s``, the trainer is terminated (Ignite then fires
    ``COMPLETED``, so checkpointers write their final files). ``max_epochs`` stays an upper
    bound. An epoch-based scheduler may stay attached: this handler sets the rate before every
    iteration, so the clock decides. Weight averaging
    (:class:`app.engines.WeightAveraging`) is epoch-based: it needs a run that reaches
    ``max_epochs``. The clock restarts when a run resumes from ``last.pt``.

    Args:
        optimizer: the trainer's optimizer.
        budget_s: training time in seconds; 0 (or less) turns the handler off.
        base_lr: learning rate at the start (default: each group's rate when the run starts).
        power: exponent of the decay (nnU-Net: 0.9; 0 keeps the rate constant).
        clock: seconds counter (``time.monotonic``; tests pass a fake one).

    Raises:
        ValueError: a negative ``power``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, budget_s: float = 0.0, base_lr: float | None = None,
                 power: float = 0.9, clock: Callable[[], float] = time.monotonic) -> None:
        if float(power) < 0:
            raise ValueError(f"power must be >= 0, got {power}")
        self.optimizer = optimizer
        self.budget_s = float(budget_s or 0.0)
        self.base_lr = base_lr
        self.power = float(power)
        self.clock = clock
        self.enabled = self.budget_s > 0
        self._t0: float | None = None
        self._base: list[float] = []

    def attach(self, trainer: Engine) -> None:
        """Register the per-iteration rate and the per-epoch stop on ``trainer`` (nothing when off)."""
        if not self.enabled:
            return
        trainer.add_event_handler(Events.ITERATION_STARTED, self.set_lr)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.check)

    def elapsed(self) -> float:
        """Seconds since the first iteration (0 before it)."""
        return 0.0 if self._t0 is None else self.clock() - self._t0

    def lr_factor(self) -> float:
        """``max(0, 1 - elapsed / budget_s) ** power``: the fraction of ``base_lr`` in use now."""
        return max(0.0, 1.0 - self.elapsed() / self.budget_s) ** self.power

    def set_lr(self, engine: Engine) -> None:
        if self._t0 is None:
            self._t0 = self.clock()
            self._base = [float(self.base_lr) if self.base_lr is not None else float(g["lr"]) for g in self.optimizer.param_groups]
        factor = self.lr_factor()
        for group, base in zip(self.optimizer.param_groups, self._base):
            group["lr"] = base * factor

    def check(self, engine: Engine) -> None:
        if self.elapsed() >= self.budget_s:
            logger.info(f"time budget: {self.elapsed():.0f} s >= {self.budget_s:.0f} s after epoch {engine.state.epoch}; stopping")
            engine.terminate()
