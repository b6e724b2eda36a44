"""Convolution helpers shared by the model zoo: channel scaling and TensorFlow 'SAME' padding.

Ports of TensorFlow 1 networks need two things PyTorch does not give directly:

* a channel-width multiplier (``width``) applied uniformly to every hidden convolution, and
* TensorFlow's ``padding='SAME'`` for strided layers, which pads asymmetrically (the extra pixel
  goes to the bottom/right), unlike PyTorch's symmetric ``padding=k // 2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError

__all__ = ["check_spatial_multiple", "pad_to_multiple", "scale_channels", "same_padding_amounts", "pad_same", "conv2d_same", "init_tf_glorot_",
           "init_tf_truncated_normal_"]


def scale_channels(channels: int, width: float) -> int:
    """Scale a hidden channel count by a width multiplier.

    Args:
        channels: channel count of the reference (width 1) network.
        width: multiplier, > 0.

    Returns:
        ``max(1, round(channels * width))``.
    """
    return max(1, int(round(channels * width)))


def check_spatial_multiple(x: torch.Tensor, multiple: int, *, name: str) -> None:
    """Raise :class:`~hdrlab.errors.ConfigError` unless ``x`` is ``[B, C, H, W]`` with H, W multiples of ``multiple``.

    Shape-only check (no data access): safe under ``FakeTensorMode`` and ``torch.compile``.

    Args:
        x: the network input.
        multiple: required divisor of H and W (``2 ** number_of_downsamplings``).
        name: network name for the message.
    """
    if x.ndim != 4 or x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ConfigError(
            f"{name} expects a batch [B, C, H, W] with H and W multiples of {multiple}, got "
            f"{tuple(x.shape)}; pad or resize the image first (the official code pads symmetrically)"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` ``[B, C, H, W]`` at the bottom and right to multiples of ``multiple`` (reflection,
    or edge replication where a side is too short to reflect); returns the padded tensor and the
    original ``(H, W)`` to crop back to."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def same_padding_amounts(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """Padding TensorFlow's ``'SAME'`` mode applies along one spatial axis.

    TensorFlow chooses the output size ``ceil(size / stride)`` and pads
    ``total = max((out - 1) * stride + kernel_size - size, 0)`` pixels, ``total // 2`` before and
    the rest after. Example: a 7x7 stride-2 conv on an even size pads (2, 3).

    Args:
        size: input length along the axis.
        kernel_size: kernel length along the axis.
        stride: stride along the axis.

    Returns:
        ``(before, after)`` pad amounts.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` ``[B, C, H, W]`` the way TensorFlow's ``'SAME'`` padding does for a square kernel.

    Args:
        x: feature map ``[B, C, H, W]``.
        kernel_size: square kernel size of the following conv/pool.
        stride: its stride.
        value: constant pad value (``-inf`` before a max-pool, 0 before a conv).

    Returns:
        The padded tensor; a following op with ``padding=0`` yields ``ceil(H / stride)`` rows.
    """
    top, bottom = same_padding_amounts(x.shape[-2], kernel_size, stride)
    left, right = same_padding_amounts(x.shape[-1], kernel_size, stride)
    return F.pad(x, (left, right, top, bottom), value=value)


def conv2d_same(in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True) -> nn.Conv2d:
    """A stride-1 convolution with TensorFlow ``'SAME'`` padding (symmetric ``k // 2`` for odd ``k``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd square kernel size.
        bias: whether the conv has a bias.

    Returns:
        ``nn.Conv2d`` mapping ``[B, in, H, W] -> [B, out, H, W]``.
    """
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def init_tf_glorot_(module: nn.Module) -> nn.Module:
    """Initialise every conv/linear like ``tf.layers`` / slim: Glorot-uniform weights, zero bias.

    Args:
        module: module whose ``nn.Conv2d`` and ``nn.Linear`` children are re-initialised in place.

    Returns:
        ``module``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def init_tf_truncated_normal_(weight: torch.Tensor, *, std: float) -> torch.Tensor:
    """Fill ``weight`` in place with TF's ``truncated_normal`` init: N(0, std^2) cut at +-2 std.

    Inverse-CDF sampling (uniform between the CDF values of -+2, then ``erfinv``), because
    ``nn.init.trunc_normal_``'s rejection loop reads the data and fails on meta / fake tensors.
    Same distribution as TF; a different random stream.
    """
    lo = 0.5 * (1.0 + math.erf(-2.0 / math.sqrt(2.0)))  # Phi(-2)
    with torch.no_grad():
        weight.uniform_(lo, 1.0 - lo).mul_(2.0).sub_(1.0).erfinv_().mul_(std * math.sqrt(2.0))
    return weight
