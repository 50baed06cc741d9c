"""Sliding-window segmentation of volumes too large to stitch in float32 (CT at 512 x 512 x 1000)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def sliding_window_labels(
    image: torch.Tensor | np.ndarray,
    network: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
    stitch_dtype: torch.dtype = torch.float16,
    chunk: int = 64,
) -> np.ndarray:
    """Label map of a large volume by sliding windows, with the stitching buffers in half precision.

    MONAI's ``sliding_window_inference`` allocates its output and weight buffers in the input's
    dtype; given a float16 input, they take half the memory of float32. Each window still runs in
    float32 (the network sees ``window.float()``) and its logits are accumulated in
    ``stitch_dtype``. The argmax over classes then runs slab by slab along the last axis into a
    uint8 map, so no full-size int64 or float32 array is made. Peak memory is about
    ``2 * (C_in + C_out + 1) * H * W * D`` bytes plus the network's activations for
    ``sw_batch_size`` windows (docs/performance.md: 512 x 512 x 1000 CT, 2 classes).

    Args:
        image: ``(C_in, H, W, D)`` preprocessed volume (any float or integer dtype).
        network: ``(B, C_in, *roi_size)`` float32 -> ``(B, C_out, *roi_size)`` logits.
        roi_size, sw_batch_size, overlap, mode: as MONAI ``sliding_window_inference``.
        stitch_dtype: accumulation dtype, ``torch.float16`` (default) or ``torch.float32``.
        chunk: slices per slab of the final argmax.

    Returns:
        ``(H, W, D)`` uint8 class indices (argmax over the ``C_out`` logits; for one output channel,
        logits > 0).

    Raises:
        ValueError: ``image`` is not 4D ``(C, H, W, D)``, or more than 255 classes.
    """
    from monai.inferers import sliding_window_inference

    image = torch.as_tensor(image)
    if image.ndim != 4:
        raise ValueError(f"expected a (C, H, W, D) volume, got shape {tuple(image.shape)}")

    def predict(window: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(window.float()).to(stitch_dtype)

    with torch.no_grad():
        logits = sliding_window_inference(image[None].to(stitch_dtype), roi_size, sw_batch_size, predict, overlap=overlap, mode=mode)[0]
    if logits.shape[0] > 255:
        raise ValueError(f"{logits.shape[0]} classes do not fit a uint8 label map")
    labels = np.empty(logits.shape[1:], dtype=np.uint8)
    for z in range(0, logits.shape[-1], chunk):
        slab = logits[..., z:z + chunk]
        labels[..., z:z + chunk] = (slab[0] > 0 if slab.shape[0] == 1 else slab.argmax(0)).numpy().astype(np.uint8)
    return labels
