"""Sub-pixel rewrite of stride-2 transposed convolutions: same outputs, other layers untouched."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from app.networks.subpixel import SubpixelConvTranspose3d, to_subpixel


@pytest.mark.parametrize("bias", [True, False])
def test_layer_equals_transposed_conv(bias: bool):
    torch.manual_seed(0)
    conv = torch.nn.ConvTranspose3d(5, 3, 3, stride=2, padding=1, output_padding=1, bias=bias)
    x = torch.randn(2, 5, 6, 7, 9)
    with torch.no_grad():
        expected, got = conv(x), SubpixelConvTranspose3d(conv)(x)
    assert got.shape == expected.shape == (2, 3, 12, 14, 18)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_monai_unet_rewritten_and_equal():
    torch.manual_seed(0)
    net = UNet(3, 4, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()
    fast = to_subpixel(net)
    assert sum(isinstance(m, torch.nn.ConvTranspose3d) for m in net.modules()) == 2  # the original is untouched
    assert sum(isinstance(m, torch.nn.ConvTranspose3d) for m in fast.modules()) == 0
    assert sum(isinstance(m, SubpixelConvTranspose3d) for m in fast.modules()) == 2
    x = torch.randn(1, 4, 24, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=1e-4, rtol=1e-4)


def test_other_transposed_convs_are_refused():
    with pytest.raises(ValueError, match="only ConvTranspose3d"):
        SubpixelConvTranspose3d(torch.nn.ConvTranspose3d(4, 4, 2, stride=2))
    net = torch.nn.Sequential(torch.nn.ConvTranspose3d(4, 4, 2, stride=2))
    assert isinstance(to_subpixel(net)[0], torch.nn.ConvTranspose3d)
