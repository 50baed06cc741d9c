"""Checking a requested compute device before any model or data is loaded.

``torch.device("cuda")`` is accepted on a machine without CUDA; the failure comes later, deep in
a config expression, as a page of traceback. :func:`check_device` says it in one line instead.

Example:
    >>> check_device("cpu")
    >>> check_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: --device 'tpu' is not a device VolSeg runs on; use cpu or cuda (cuda:N for the N-th GPU)
"""

from __future__ import annotations

__all__ = ["check_device"]


def check_device(device: str | None) -> None:
    """Refuse a device this machine cannot run on: an unknown name, CUDA where torch has none,
    or a GPU index past the last GPU. None (the default: CUDA where available) always passes.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None.

    Raises:
        ValueError: one line naming the device, why it cannot be used and the fix.
    """
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"--device '{device}' is not a device VolSeg runs on; use cpu or cuda (cuda:N for the N-th GPU)")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"--device {device}: CUDA is not available on this machine ({why}; torch {torch.__version__}); use --device cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...); choose one of them")
