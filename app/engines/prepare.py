"""Batch preparation for MONAI engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def channels_last_prepare_batch(batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any) -> Any:
    """MONAI ``default_prepare_batch`` with the image in ``torch.channels_last_3d`` memory format.

    With the network also converted (``net.to(memory_format=torch.channels_last_3d)``) this
    cut a 4 x 4 x 96^3 U-Net training step from 2.2 s to 1.65 s on the 2-core CPU. Values
    and shapes are unchanged: image ``(B, C, H, W, D)``, label ``(B, C, H, W, D)``.
    """
    from monai.engines import default_prepare_batch

    image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
    if image.ndim == 5:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    return image, label


def without_meta(prepare_batch: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a MONAI ``prepare_batch`` so that its tensors come out as plain ``torch.Tensor``.

    For ``SupervisedTrainer(compile=True)``: MONAI 1.6 strips MetaTensor inputs before the compiled
    forward and rebuilds them after it, which fails for batches of more than one sample (the
    collated ``original_channel_dim`` is a tensor: "Boolean value of Tensor with more than one
    value is ambiguous"). Training needs no metadata, so the bundles hand the trainer plain
    tensors; memory format, device and values are unchanged.
    """

    def prepare(batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        from monai.data import MetaTensor

        out = prepare_batch(batchdata, device, non_blocking, **kwargs)
        return tuple(x.as_tensor() if isinstance(x, MetaTensor) else x for x in out)

    return prepare
