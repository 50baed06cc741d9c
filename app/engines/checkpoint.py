"""Atomic best and last checkpoints that survive an interruption and resume training.

MONAI's ``CheckpointSaver`` writes with ``atomic=False``; this handler writes every file through
Ignite's ``DiskSaver(atomic=True)`` (a temporary file in the same folder, then ``os.replace``)
instead, so an interrupted write never leaves a truncated checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.utils import str2bool

from app.engines.rng import capture, data_transform, restore

logger = logging.getLogger(__name__)

LAST_NAME = "last.pt"
#: A run's progress beside ``last.pt`` (:meth:`AtomicCheckpointer.save_progress`).
PROGRESS_NAME = "progress.json"


class AtomicCheckpointer:
    """Save ``last.pt`` (everything needed to resume) and ``model.pt`` (best weights).

    Attach to the trainer (``last.pt`` every ``save_interval`` epochs and at completion) and,
    through :meth:`best_handler`, to the evaluator (``model.pt`` whenever ``key_metric``
    improves). With ``resume``, a ``last.pt`` left by an interrupted run is loaded when the
    trainer starts (MONAI ``CheckpointLoader``): weights, optimizer, scheduler, epoch and
    iteration, and the best score, so a resumed run keeps comparing against it, and the random
    state (:mod:`app.engines.rng`), so it ends with the weights of an uninterrupted run. The trainer
    itself is taken at ``attach`` time, so configs need no circular reference to it. Writers
    are inert where ``enabled`` is False (ranks other than 0 under torchrun).

    Args:
        save_dir: output folder, created if needed.
        save_dict: objects with ``state_dict`` to put in ``last.pt`` (model, optimizer,
            lr scheduler); the trainer and this object are added.
        model: the network whose ``state_dict`` is written to ``model.pt``.
        key_metric: evaluator metric name to maximise, e.g. ``"val_mean_dice"``.
        save_interval: epochs between ``last.pt`` writes.
        best_filename: file name of the best weights.
        enabled: write nothing where False.
        resume: load ``save_dir/last.pt`` when the trainer starts, if it exists. The strings
            ``"false"``/``"true"`` (as ``python -m monai.bundle run --resume false`` passes them)
            count as the booleans (MONAI ``str2bool``).
        map_location: device to load a resumed checkpoint onto.

    Raises:
        ValueError: ``resume`` is a string that is no boolean.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: dict[str, Any],
        model: torch.nn.Module,
        key_metric: str = "val_mean_dice",
        save_interval: int = 1,
        best_filename: str = "model.pt",
        enabled: bool = True,
        resume: bool = True,
        map_location: str | torch.device | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.save_dict = {**save_dict, "checkpointer": self}
        self.model = model
        self.key_metric = key_metric
        self.save_interval = max(1, int(save_interval))
        self.best_filename = best_filename
        self.enabled = enabled
        try:
            self.resume = str2bool(str(resume))  # the runner passes `--resume false` as the string 'false', which is truthy
        except ValueError as err:
            raise ValueError(f"resume must be true or false, got '{resume}'") from err
        self.map_location = map_location
        self.best_metric = -float("inf")
        self.best_epoch = -1
        self._trainer: Engine | None = None
        self._saver: DiskSaver | None = None

    def _save(self, state: dict[str, Any], filename: str) -> None:
        """Write ``state`` to ``save_dir/filename`` atomically (Ignite ``DiskSaver``, created on first use)."""
        if self._saver is None:
            self._saver = DiskSaver(str(self.save_dir), atomic=True, create_dir=True, require_empty=False)
        self._saver(state, filename)

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])

    def attach(self, trainer: Engine) -> None:
        """Attach the ``last.pt`` writer to ``trainer``."""
        from monai.handlers import CheckpointLoader

        self._trainer = trainer
        self.save_dict["trainer"] = trainer
        last = latest_checkpoint(self.save_dir)
        if self.resume and last is not None:
            logger.info(f"resuming from {last}")
            from app.errors import under_monai_bundle

            if under_monai_bundle():  # volseg train says it itself, before the run
                logger.warning(f"resuming the run in {self.save_dir} from its last.pt: the network, optimizer and learning-rate schedule "
                               "continue as saved, so a new --learning_rate is not applied and the schedule keeps the earlier run's length; "
                               "give a new --output_dir (or --resume false) to start a new run")
            CheckpointLoader(last, self.save_dict, map_location=self.map_location).attach(trainer)
            trainer.add_event_handler(Events.STARTED, self._restore_random_state, last)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save_last)
        trainer.add_event_handler(Events.COMPLETED, self.save_last)
        trainer.add_event_handler(Events.COMPLETED, self.save_final_if_missing)

    def best_handler(self) -> _BestHandler:
        """A handler for the evaluator's ``val_handlers`` that writes ``model.pt`` on improvement."""
        return _BestHandler(self)

    def save_last(self, engine: Engine) -> None:
        if not self.enabled:
            return
        state = {k: _unwrap(v).state_dict() for k, v in self.save_dict.items()}
        state["rng"] = capture(data_transform(engine))
        self._save(state, LAST_NAME)
        self.save_progress(engine)

    def save_progress(self, engine: Engine) -> None:
        """``save_dir/progress.json``: the epoch reached of ``max_epochs`` and the best validation
        metric so far, written with each ``last.pt``, so that a caller (``volseg serve``'s
        ``train_stats``, a user's script) can follow a run without loading a checkpoint."""
        import json
        import time

        from app.io.atomic import atomic_write_text

        best = self.best_metric if self.best_epoch >= 0 else None
        progress = {"epoch": int(engine.state.epoch), "total_epochs": int(engine.state.max_epochs or 0), "key_metric": self.key_metric,
                    "best_metric": round(best, 4) if best is not None else None, "best_metric_epoch": self.best_epoch if best is not None else None,
                    "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(self.save_dir / PROGRESS_NAME, json.dumps(progress, indent=2) + "\n")

    def _restore_random_state(self, engine: Engine, path: str) -> None:
        """After ``CheckpointLoader`` (both on ``STARTED``): the random state saved in ``last.pt``."""
        state = torch.load(path, map_location="cpu", weights_only=True).get("rng")
        if state is None:
            logger.warning(f"{path} holds no random state (an older checkpoint): the resumed run draws other augmentations than an uninterrupted one")
            return
        restore(state, data_transform(engine))

    def save_final_if_missing(self, engine: Engine) -> None:
        """A run that never validated (shorter than ``val_interval``) still leaves ``model.pt``:
        the final weights, so every finished run can be used as the bundle's weights."""
        path = self.save_dir / self.best_filename
        if self.enabled and not path.is_file():
            self._save(_unwrap(self.model).state_dict(), self.best_filename)
            logger.info(f"no validation ran: saved the final weights (epoch {engine.state.epoch}) to {path}")

    def save_best(self, evaluator: Engine) -> None:
        score = float(evaluator.state.metrics[self.key_metric])
        if score <= self.best_metric:
            return
        epoch = self._trainer.state.epoch if self._trainer is not None else evaluator.state.epoch
        self.best_metric, self.best_epoch = score, epoch
        if self.enabled:
            self._save(_unwrap(self.model).state_dict(), self.best_filename)
            logger.info(f"new best {self.key_metric} {score:.4f} at epoch {epoch}: saved {self.save_dir / self.best_filename}")


class _BestHandler:
    def __init__(self, checkpointer: AtomicCheckpointer) -> None:
        self.checkpointer = checkpointer

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.checkpointer.save_best)


def _unwrap(obj: Any) -> Any:
    return obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj


def latest_checkpoint(save_dir: str | Path) -> str | None:
    """Path of ``last.pt`` in ``save_dir`` if a previous run left one (resume), else None."""
    path = Path(save_dir) / LAST_NAME
    return str(path) if path.is_file() else None


def unfinished_run(run_dir: str | Path) -> str | None:
    """Whether a ``volseg train`` run folder stopped before its last epoch, and where.

    A run writes ``model.pt`` (the best validation so far) at each validation and its bundle
    (``models/model.pt``) only when it finishes, so a ``model.pt`` alone does not mean a finished
    run. The run's ``progress.json`` (epoch reached of ``total_epochs``, written with each
    ``last.pt``) says; a run of a version without it counts as finished when its bundle is written.

    Args:
        run_dir: the run's output folder.

    Returns:
        None for a finished run or a folder without a run's ``last.pt`` or ``progress.json``;
        else a phrase such as ``"stopped at epoch 7 of 60"``.
    """
    import json

    run = Path(run_dir)
    if not (run / "last.pt").is_file() and not (run / PROGRESS_NAME).is_file():
        return None  # no run's records: weights put there by hand, or nothing
    try:
        progress = json.loads((run / PROGRESS_NAME).read_text(encoding="utf-8"))
        epoch, total = int(progress["epoch"]), int(progress["total_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None if (run / "models" / "model.pt").is_file() else "has no finished bundle (models/model.pt)"
    return None if total and epoch >= total else f"stopped at epoch {epoch} of {total}"
