from __future__ import annotations

import pytest
import torch

from app.networks import create_network
from app.networks.deeplab3d import DeepLab3D


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("shape", [(32, 48, 16), (45, 50, 37)])
def test_output_matches_input_size(output_stride: int, shape: tuple[int, int, int]):
    net = DeepLab3D(4, 3, width=4, output_stride=output_stride, aspp_channels=8).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 4, *shape))
    assert out.shape == (2, 3, *shape)


def test_gradients_reach_every_parameter():
    net = DeepLab3D(4, 3, width=4, aspp_channels=8, dropout=0.0)
    net(torch.randn(1, 4, 32, 24, 16)).mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_output_stride_and_bad_arguments():
    net = DeepLab3D(1, 2, width=4, output_stride=16, aspp_channels=8)
    assert net.output_stride == 16
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        DeepLab3D(output_stride=4)
    with pytest.raises(ValueError, match="unknown network 'nope'; registered: deeplab3d, unet3d"):
        create_network("nope")


def test_registered_default_fits_the_weight_size_limit():
    net = create_network("deeplab3d")
    n_params = sum(p.numel() for p in net.parameters())
    print(f"deeplab3d default parameters: {n_params:,}")
    assert 1_000_000 < n_params and n_params * 4 < 25 * 1024 * 1024


def test_torchscript_matches_eager():
    torch.manual_seed(0)
    net = DeepLab3D(4, 3, width=8).eval()
    x = torch.randn(1, 4, 40, 50, 33)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))
