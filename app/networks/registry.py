"""Registry of segmentation networks (timm's ``create_model`` pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def unet3d(in_channels: int = 4, out_channels: int = 3, channels: tuple[int, ...] = (16, 32, 64, 128, 256), num_res_units: int = 2, dropout: float = 0.0) -> torch.nn.Module:
    """MONAI residual 3D U-Net (Kerfoot et al. 2018, "Left-Ventricle Quantification Using
    Residual U-Net", STACOM) with stride-2 levels and instance norm.

    Input ``(B, in_channels, H, W, D)`` with H, W, D divisible by ``2 ** (len(channels) - 1)``;
    output ``(B, out_channels, H, W, D)`` logits.
    """
    from monai.networks.nets import UNet

    strides = (2,) * (len(channels) - 1)
    return UNet(3, in_channels, out_channels, channels=channels, strides=strides, num_res_units=num_res_units, norm="INSTANCE", dropout=dropout)


def deeplab3d(in_channels: int = 4, out_channels: int = 3, width: int = 16, output_stride: int = 8, dilations: tuple[int, ...] = (1, 2, 4, 6), aspp_channels: int = 64, dropout: float = 0.1) -> torch.nn.Module:
    """DeepLabV3+-style 3D network (Chen et al. 2018, arXiv:1802.02611); see :class:`app.networks.deeplab3d.DeepLab3D`."""
    from app.networks.deeplab3d import DeepLab3D

    return DeepLab3D(in_channels, out_channels, width=width, output_stride=output_stride, dilations=dilations, aspp_channels=aspp_channels, dropout=dropout)


NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {"unet3d": unet3d, "deeplab3d": deeplab3d}


def to_device(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move ``network`` to ``device``, in ``torch.channels_last_3d`` memory format where asked.

    Channels-last speeds up 3D convolutions on CPU (see ``app.engines.channels_last_prepare_batch``);
    the state dict keys and values are unchanged.
    """
    network = network.to(device)
    return network.to(memory_format=torch.channels_last_3d) if channels_last else network


def create_network(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build a registered network by name.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network '{name}'; registered: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](**kwargs)
