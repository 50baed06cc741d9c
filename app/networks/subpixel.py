"""Transposed convolutions rewritten as sub-pixel convolutions, for faster CPU inference.

A stride-2 ``ConvTranspose3d`` with kernel 3, padding 1 and output padding 1 (MONAI ``UNet``'s
up-sampling layers) doubles each side. Each of its 8 output phases (odd or even along each axis)
is a 2 x 2 x 2 convolution of the input at input resolution, so the layer equals one ``Conv3d``
with ``8 * C_out`` channels followed by a 3D pixel shuffle (MONAI's ``pixelshuffle``; sub-pixel
convolution, Shi et al. 2016, arXiv:1609.05158, and "Is the deconvolution layer the same as a
convolutional layer?", arXiv:1609.07009). The result is the same to float rounding. OpenVINO runs transposed 3D convolutions with a slow float32 kernel (76 of
375 ms for the last MONAI ``UNet`` layer on 4 x 96^3 windows, 2 CPU cores) and ordinary
convolutions with its fast bf16/int8 ones, so the rewrite pays off there.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from monai.networks.utils import pixelshuffle
from torch import nn

# taps of the transposed kernel (k=3, stride 2, padding 1) feeding output phase r from input offset d
_TAP = {(0, 0): 1, (1, 0): 2, (1, 1): 0}


class SubpixelConvTranspose3d(nn.Module):
    """Same output as ``conv`` (a ``ConvTranspose3d`` with kernel 3, stride 2, padding 1, output
    padding 1, no groups or dilation): ``(B, C_in, H, W, D)`` in, ``(B, C_out, 2H, 2W, 2D)`` out.

    Args:
        conv: the transposed convolution to copy the weights from.

    Raises:
        ValueError: ``conv`` has another kernel, stride, padding, groups or dilation.
    """

    def __init__(self, conv: nn.ConvTranspose3d) -> None:
        super().__init__()
        if not is_convertible(conv):
            raise ValueError(f"only ConvTranspose3d(kernel 3, stride 2, padding 1, output_padding 1) converts; got {conv}")
        c_in, c_out = conv.in_channels, conv.out_channels
        w = conv.weight.detach()  # (C_in, C_out, 3, 3, 3)
        weight = w.new_zeros(c_out, 2, 2, 2, c_in, 2, 2, 2)  # (C_out, r1, r2, r3, C_in, d1, d2, d3): MONAI pixelshuffle's channel order
        for (r1, d1), t1 in _TAP.items():
            for (r2, d2), t2 in _TAP.items():
                for (r3, d3), t3 in _TAP.items():
                    weight[:, r1, r2, r3, :, d1, d2, d3] = w[:, :, t1, t2, t3].T
        self.conv = nn.Conv3d(c_in, 8 * c_out, kernel_size=2, bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(8 * c_out, c_in, 2, 2, 2))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().repeat_interleave(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixelshuffle(self.conv(F.pad(x, (0, 1, 0, 1, 0, 1))), spatial_dims=3, scale_factor=2)  # (B, 8 C_out, H, W, D) -> (B, C_out, 2H, 2W, 2D)


def is_convertible(module: nn.Module) -> bool:
    """True for a ``ConvTranspose3d`` that :class:`SubpixelConvTranspose3d` reproduces."""
    return (isinstance(module, nn.ConvTranspose3d) and module.kernel_size == (3, 3, 3) and module.stride == (2, 2, 2)
            and module.padding == (1, 1, 1) and module.output_padding == (1, 1, 1) and module.groups == 1
            and module.dilation == (1, 1, 1) and module.padding_mode == "zeros")


def to_subpixel(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with every convertible ``ConvTranspose3d`` replaced by a
    :class:`SubpixelConvTranspose3d`; other modules (and ``network`` itself) are untouched.

    Returns:
        The copy, in the mode ``network`` was in; a network without such layers comes back as a plain copy.
    """
    network = copy.deepcopy(network)
    for name, module in list(network.named_modules()):
        for child_name, child in list(module.named_children()):
            if is_convertible(child):
                setattr(module, child_name, SubpixelConvTranspose3d(child))
    return network
