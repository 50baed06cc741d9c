"""DeepLabV3+-style 3D segmentation network (Chen et al. 2018, arXiv:1802.02611)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, SimpleASPP
from torch import nn


class _ImagePooling(nn.Module):
    """ASPP image-level branch: global average pool, 1x1 conv, broadcast back to the grid."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | tuple, act: str | tuple) -> None:
        super().__init__()
        self.conv = Convolution(3, in_channels, out_channels, kernel_size=1, norm=None, act=act, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(F.adaptive_avg_pool3d(x, 1))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3], x.shape[4])


class DeepLab3D(nn.Module):
    """DeepLabV3+-style 3D network (Chen et al. 2018, arXiv:1802.02611) for volumetric segmentation.

    A residual 3D encoder (a stride-2 stem, then MONAI ``ResidualUnit`` stages with channels
    ``width * (1, 2, 4, 8)`` and strides 1, 2, 2, 2) whose last stage uses atrous (dilated)
    convolutions instead of further striding where ``output_stride`` is 8, so features stay at ``output_stride`` (8 or 16) of the input; an atrous spatial
    pyramid pooling head (MONAI ``SimpleASPP`` for the atrous branches plus an image-level
    pooling branch, fused by a 1x1 convolution); and a decoder that fuses the stride-4
    low-level encoder feature and upsamples trilinearly to the input size.

    Args:
        in_channels: input channels ``C_in`` (4 for BraTS: T1, T1ce, T2, FLAIR).
        out_channels: output channels ``C_out`` (3 for BraTS regions TC, WT, ET).
        width: channels of the first stage; later stages double up to ``8 * width``.
        output_stride: 8 or 16, the encoder's total downsampling.
        dilations: ASPP branch dilations (the first branch is a 1x1 convolution).
        aspp_channels: channels of each ASPP branch and of the decoder.
        norm: normalisation (MONAI name), instance norm by default for small batches.
        act: activation (MONAI name).
        dropout: dropout after the ASPP projection.

    Input ``(B, C_in, H, W, D)``; output ``(B, C_out, H, W, D)`` logits, the same spatial size.
    Inputs whose sides are not multiples of ``output_stride`` are zero-padded at the far end to
    the next multiple and the output is cropped back, so any size >= 1 voxel per side works;
    multiples of ``output_stride`` avoid the padding.

    Raises:
        ValueError: ``output_stride`` other than 8 or 16, or fewer than 2 dilations.

    Example:
        >>> net = DeepLab3D(4, 3, width=8)
        >>> net(torch.zeros(1, 4, 32, 48, 40)).shape
        torch.Size([1, 3, 32, 48, 40])
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        width: int = 16,
        output_stride: int = 8,
        dilations: Sequence[int] = (1, 2, 4, 6),
        aspp_channels: int = 64,
        norm: str | tuple = "INSTANCE",
        act: str | tuple = "PRELU",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if len(dilations) < 2:
            raise ValueError(f"ASPP needs at least 2 dilations, got {tuple(dilations)}")
        self.output_stride = output_stride
        channels = [width, 2 * width, 4 * width, 8 * width]
        strides = [1, 2, 2, 2] if output_stride == 16 else [1, 2, 2, 1]
        stage_dilations = [1, 1, 1, 1] if output_stride == 16 else [1, 1, 1, 2]
        self.stem = Convolution(3, in_channels, width, strides=2, kernel_size=3, norm=norm, act=act)
        stages, prev = [], width
        for ch, s, d in zip(channels, strides, stage_dilations):
            stages.append(nn.Sequential(
                ResidualUnit(3, prev, ch, strides=s, kernel_size=3, subunits=2, norm=norm, act=act),
                ResidualUnit(3, ch, ch, strides=1, kernel_size=3, subunits=2, norm=norm, act=act, dilation=d),
            ))
            prev = ch
        self.stages = nn.ModuleList(stages)
        kernel_sizes = (1,) + (3,) * (len(dilations) - 1)
        self.aspp = SimpleASPP(3, prev, aspp_channels, kernel_sizes=kernel_sizes, dilations=tuple(dilations), norm_type=norm, acti_type=act)
        self.image_pool = _ImagePooling(prev, aspp_channels, norm, act)
        self.project = nn.Sequential(
            Convolution(3, aspp_channels * (len(dilations) + 1), aspp_channels, kernel_size=1, norm=norm, act=act),
            nn.Dropout3d(dropout),
        )
        low_channels = max(8, channels[1] // 2)
        self.low_level = Convolution(3, channels[1], low_channels, kernel_size=1, norm=norm, act=act)
        self.decoder = nn.Sequential(
            Convolution(3, aspp_channels + low_channels, aspp_channels, kernel_size=3, norm=norm, act=act),
            Convolution(3, aspp_channels, aspp_channels, kernel_size=3, norm=norm, act=act),
        )
        self.classifier = nn.Conv3d(aspp_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, d = x.shape[2], x.shape[3], x.shape[4]
        stride = self.output_stride
        ph, pw, pd = (stride - h % stride) % stride, (stride - w % stride) % stride, (stride - d % stride) % stride
        if ph > 0 or pw > 0 or pd > 0:
            x = F.pad(x, [0, pd, 0, pw, 0, ph])
        features = self.stem(x)
        low = features
        for i, stage in enumerate(self.stages):
            features = stage(features)
            if i == 1:
                low = features
        context = self.project(torch.cat([self.aspp(features), self.image_pool(features)], dim=1))
        context = F.interpolate(context, size=low.shape[2:], mode="trilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([context, self.low_level(low)], dim=1)))
        logits = F.interpolate(logits, size=x.shape[2:], mode="trilinear", align_corners=False)
        return logits[:, :, :h, :w, :d]
