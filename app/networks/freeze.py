"""Freeze a network's encoder for fine-tuning (transfer learning with a fixed feature extractor)."""

from __future__ import annotations

import re

import torch

from app.networks.deeplab3d import DeepLab3D

_UNET_LEVEL = re.compile(r"^(?:1\.submodule\.)*")


def encoder_parameter_names(network: torch.nn.Module) -> list[str]:
    """Names of the encoder's parameters.

    MONAI ``UNet`` (nested ``Sequential(down, SkipConnection(...), up)`` blocks): the down
    convolutions of every level and the bottom block. :class:`app.networks.deeplab3d.DeepLab3D`:
    ``stem`` and ``stages`` (the atrous backbone); ASPP and decoder stay trainable.

    Raises:
        ValueError: another network type (the message names it).
    """
    from monai.networks.nets import UNet

    names = [n for n, _ in network.named_parameters()]
    if isinstance(network, UNet):
        return [n for n in names if not _UNET_LEVEL.sub("", n.removeprefix("model.")).startswith("2.")
                and not _is_unet_output(n)]
    if isinstance(network, DeepLab3D):
        return [n for n in names if n.startswith(("stem.", "stages."))]
    raise ValueError(f"VolSeg cannot freeze the encoder of a {type(network).__name__}; supported: MONAI UNet, DeepLab3D")


def _is_unet_output(name: str) -> bool:
    """``model.2.*``: the outermost up block (the output layer) is decoder, never encoder."""
    return name.startswith("model.2.")


def freeze_encoder(network: torch.nn.Module) -> int:
    """Set ``requires_grad=False`` on :func:`encoder_parameter_names`; returns how many tensors.

    The optimizer still holds the frozen tensors, but they get no gradient, so AdamW leaves them
    unchanged (weight decay applies only to parameters with a gradient).

    Raises:
        ValueError: unsupported network type.
    """
    frozen = set(encoder_parameter_names(network))
    for name, param in network.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return len(frozen)
