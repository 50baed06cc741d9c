"""Freezing the encoder for fine-tuning: encoder weights stay, decoder weights learn."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from app.networks import encoder_parameter_names, freeze_encoder
from app.networks.deeplab3d import DeepLab3D


def _step(net: torch.nn.Module) -> None:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-2)
    x = torch.randn(1, 4, 16, 16, 16)
    net(x).pow(2).mean().backward()
    opt.step()


def test_unet_encoder_is_down_path_and_bottom_and_stays_fixed():
    net = UNet(3, 4, 3, (4, 8, 16), (2, 2), num_res_units=1)
    names = encoder_parameter_names(net)
    assert names and all(not n.startswith("model.2.") for n in names)
    assert "model.0.conv.unit0.conv.weight" in names and "model.1.submodule.1.submodule.conv.unit0.conv.weight" in names
    assert not any(".2.0." in n or n.startswith("model.2") for n in names)  # no up-convolution
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert freeze_encoder(net) == len(names)
    _step(net)
    after = dict(net.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in names)
    decoder = [n for n in before if n not in names and n.endswith("weight")]
    assert decoder and all(not torch.equal(before[n], after[n]) for n in decoder)


def test_deeplab_encoder_is_the_backbone():
    net = DeepLab3D(in_channels=4, out_channels=3)
    names = encoder_parameter_names(net)
    assert names and all(n.startswith(("stem.", "stages.")) for n in names)
    assert any(n.startswith("aspp.") for n, _ in net.named_parameters() if n not in names)


def test_unsupported_network_is_named():
    with pytest.raises(ValueError, match="Conv3d"):
        encoder_parameter_names(torch.nn.Conv3d(1, 1, 1))


def test_freeze_without_init_is_refused():
    from app.api import train

    with pytest.raises(ValueError, match="--freeze-encoder needs --init-from"):
        train("brats_unet3d", freeze_encoder=True)
