"""Half-precision stitching of large volumes gives the labels of float32 stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.inference.large import sliding_window_labels
from app.networks import create_network


@pytest.mark.parametrize("out_channels", [1, 3])
def test_float16_stitching_matches_float32(out_channels: int):
    torch.manual_seed(0)
    net = create_network("unet3d", in_channels=1, out_channels=out_channels, channels=(4, 8, 16, 32, 64), num_res_units=1).eval()
    image = torch.rand(1, 70, 50, 90)
    half = sliding_window_labels(image.half(), net, (32, 32, 32), sw_batch_size=2, overlap=0.25, chunk=16)
    full = sliding_window_labels(image, net, (32, 32, 32), sw_batch_size=2, overlap=0.25, stitch_dtype=torch.float32)
    assert half.dtype == np.uint8 and half.shape == (70, 50, 90)
    assert set(np.unique(full)) <= set(range(max(out_channels, 2))) and len(np.unique(full)) > 1
    assert (half == full).mean() > 0.995


def test_rejects_non_4d():
    with pytest.raises(ValueError, match=r"\(C, H, W, D\)"):
        sliding_window_labels(torch.zeros(8, 8, 8), torch.nn.Identity(), (8, 8, 8))
