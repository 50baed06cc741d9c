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


def checked_roi_size(roi_size, divisor: int = 16) -> list[int]:
    """A bundle's ``roi_size`` (training crops and sliding windows, voxels), checked against the
    network: the U-Net and DeepLab bundles halve the resolution four times, so each side must be
    a multiple of ``divisor`` (16), else the network fails deep inside with a size mismatch.

    Args:
        roi_size: three sides (or one for all three), in voxels.
        divisor: what each side must be a multiple of.

    Returns:
        The sides as a list of ints.

    Raises:
        ValueError: not 1 or 3 positive integers, or a side not a multiple of ``divisor``; the
            message gives the nearest valid sizes.
    """
    sides = [roi_size] * 3 if isinstance(roi_size, (int, float)) and not isinstance(roi_size, bool) else list(roi_size) if isinstance(roi_size, (list, tuple)) else None
    if sides is None or len(sides) != 3 or any(isinstance(v, bool) or not float(v).is_integer() or v <= 0 for v in sides):
        raise ValueError(f"roi_size must be three positive whole numbers of voxels, e.g. [128, 128, 128]; got {roi_size!r}")
    sides = [int(v) for v in sides]
    bad = [v for v in sides if v % divisor]
    if bad:
        near = [max(divisor, divisor * round(v / divisor)) for v in sides]
        raise ValueError(f"roi_size {sides}: each side must be a multiple of {divisor} voxels for this bundle (its U-Net halves the resolution "
                         f"{divisor.bit_length() - 1} times; the BraTS bundles share this check); e.g. {near}")
    return sides
