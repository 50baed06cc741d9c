"""Random-number state of a training run, saved in ``last.pt`` so a resumed run draws the same
crops, augmentations and batch order as an uninterrupted one.

Without it a resumed run re-seeds at start (``set_determinism(seed=0)``): its first epoch after
the checkpoint repeats the random draws of epoch 1, and the final weights differ from those of a
run that was never stopped. The state is what MONAI's ``set_rnd`` seeds (the ``R`` random state
of every ``Randomizable`` in the training transform, found the same way: through the objects'
attributes, so nested ones such as ``RandCropByPosNegLabeld.cropper`` count), plus the global
torch (CPU and CUDA), NumPy and Python generators, which the sampler and ``DataLoader`` draw from.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

logger = logging.getLogger(__name__)


def transform_random_states(transform: Any) -> list[np.random.RandomState]:
    """The ``R`` of every ``Randomizable`` reachable from ``transform``, in a fixed order
    (attribute order of objects built by the same config is the same in every process)."""
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)
            return
        if not isinstance(obj, (Transform, Randomizable)) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable) and isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj.R)
        for key, value in vars(obj).items():
            if not key.startswith("__"):
                walk(value)

    walk(transform)
    return found


def _to_plain(state: tuple) -> list:
    """A NumPy ``RandomState`` state as plain Python (``torch.load(weights_only=True)`` reads it)."""
    name, keys, pos, has_gauss, cached = state
    return [str(name), np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def _from_plain(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached


def capture(transform: Any) -> dict[str, Any]:
    """The random state now: global generators and ``transform``'s random states.

    Args:
        transform: the training data transform (``trainer.data_loader.dataset.transform``), or None.

    Returns:
        A dict to store in a checkpoint: tensors and plain Python values only, so MONAI's
        ``CheckpointLoader`` (``torch.load(weights_only=True)``) still reads the file.
    """
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _to_plain(np.random.get_state()), "python": random.getstate(),
            "transforms": [_to_plain(r.get_state()) for r in transform_random_states(transform)] if transform is not None else []}


def restore(state: dict[str, Any], transform: Any) -> bool:
    """Put back a state from :func:`capture`. The transforms' states are restored only where the
    transform has as many random states as the saved one (same config), else a warning is logged.

    Returns:
        True where every saved state was restored.
    """
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(_from_plain(state["numpy"]))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    targets = transform_random_states(transform) if transform is not None else []
    if len(targets) != len(state["transforms"]):
        logger.warning(f"checkpoint holds {len(state['transforms'])} transform random states, the training transform has {len(targets)}: "
                       "augmentations after resuming differ from an uninterrupted run")
        return False
    for r, saved in zip(targets, state["transforms"]):
        r.set_state(_from_plain(saved))
    return True


def data_transform(engine: Any) -> Any:
    """The transform of an engine's dataset (``engine.data_loader.dataset.transform``), or None."""
    return getattr(getattr(getattr(engine, "data_loader", None), "dataset", None), "transform", None)
