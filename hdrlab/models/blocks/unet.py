"""Five-level average-pool / bilinear U-Net (the SingleHDR Dequantization- and Refinement-Net trunk).

Layout (Liu et al., CVPR 2020, official ``dequantization_net.py``/``refinement_net.py``), all convs
stride 1, TF ``'SAME'`` padding, bias, LeakyReLU(0.1):

* head: conv ``k_head`` in->c0, conv ``k_head`` c0->c0  -> skip s1 (full resolution)
* 4 down blocks: 2x2 average pool, then two convs of kernel ``k_i`` to ``down_channels[i]``
  -> skips s2, s3, s4 and the bottleneck at H/16
* 4 up blocks: TF1-legacy bilinear x2, conv3x3 to the skip's width, concatenate the skip
  (decoder first), conv3x3 back to the skip's width
* tail: conv3x3 c0 -> ``out_channels`` with no activation (callers add tanh / residual / ReLU).

Input height and width must be multiples of 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import check_spatial_multiple, conv2d_same, init_tf_glorot_, scale_channels
from hdrlab.models.blocks.resize import upsample2x_bilinear_tf_legacy

__all__ = ["AvgPoolBilinearUNet"]


class _DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, slope: float) -> None:
        super().__init__()
        self.conv1 = conv2d_same(in_channels, out_channels, kernel_size)
        self.conv2 = conv2d_same(out_channels, out_channels, kernel_size)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2)
        x = F.leaky_relu(self.conv1(x), self.slope)
        return F.leaky_relu(self.conv2(x), self.slope)


class _UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, slope: float) -> None:
        super().__init__()
        self.conv1 = conv2d_same(in_channels, out_channels, 3)
        self.conv2 = conv2d_same(out_channels + skip_channels, out_channels, 3)
        self.slope = slope

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = upsample2x_bilinear_tf_legacy(x)
        x = F.leaky_relu(self.conv1(x), self.slope)
        return F.leaky_relu(self.conv2(torch.cat([x, skip], dim=1)), self.slope)


class AvgPoolBilinearUNet(nn.Module):
    """Five-level U-Net with average-pool downsampling and TF1-legacy bilinear upsampling.

    Maps ``[B, in_channels, H, W] -> [B, out_channels, H, W]`` (H, W multiples of 16). The output
    is the raw tail conv (no activation). Hidden widths are scaled by ``width``
    (``max(1, round(c * width))``); ``in_channels``/``out_channels`` are not.

    Args:
        in_channels: input channels.
        out_channels: output channels of the tail conv.
        head_channels: width of the two full-resolution head convs (c0).
        down_channels: widths of the 4 down blocks; the last is the bottleneck.
        head_kernel: kernel size of the head convs.
        down_kernels: kernel size of each down block.
        negative_slope: LeakyReLU slope.
        width: channel multiplier for every hidden conv.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        head_channels: int = 16,
        down_channels: Sequence[int] = (32, 64, 128, 256),
        head_kernel: int = 7,
        down_kernels: Sequence[int] = (5, 3, 3, 3),
        negative_slope: float = 0.1,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if len(down_channels) != 4 or len(down_kernels) != 4:
            raise ConfigError(
                f"AvgPoolBilinearUNet needs exactly 4 down_channels and 4 down_kernels, got "
                f"{tuple(down_channels)} and {tuple(down_kernels)}; pass 4 values each"
            )
        c0 = scale_channels(head_channels, width)
        cs = [scale_channels(c, width) for c in down_channels]
        self.negative_slope = negative_slope
        self.head1 = conv2d_same(in_channels, c0, head_kernel)
        self.head2 = conv2d_same(c0, c0, head_kernel)
        widths = [c0, *cs]
        self.down = nn.ModuleList(
            _DownBlock(widths[i], widths[i + 1], down_kernels[i], negative_slope) for i in range(4)
        )
        # up i goes from widths[4-i] to the width of skip widths[3-i]
        self.up = nn.ModuleList(
            _UpBlock(widths[4 - i], widths[3 - i], widths[3 - i], negative_slope) for i in range(4)
        )
        self.tail = conv2d_same(c0, out_channels, 3)
        init_tf_glorot_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the U-Net.

        Args:
            x: input ``[B, in_channels, H, W]``, H and W multiples of 16.

        Returns:
            Raw tail output ``[B, out_channels, H, W]``.
        """
        check_spatial_multiple(x, 16, name=type(self).__name__)
        s = F.leaky_relu(self.head1(x), self.negative_slope)
        s = F.leaky_relu(self.head2(s), self.negative_slope)
        skips = [s]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips[-1]
        for i, block in enumerate(self.up):
            y = block(y, skips[3 - i])
        return self.tail(y)
