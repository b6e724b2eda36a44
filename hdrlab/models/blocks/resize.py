"""Resizing operators that reproduce TensorFlow 1 behaviour.

TensorFlow 1's ``tf.image.resize_bilinear`` (``align_corners=False``, no half-pixel centres) maps
output pixel ``i`` to input coordinate ``i * in / out``. Neither PyTorch's ``F.interpolate``
(half-pixel centres for ``align_corners=False``, ``i * (in-1)/(out-1)`` for ``True``) nor kornia
offers this mapping, so the exact x2 case is written here: for a factor of two the sampling
positions are ``0, 0.5, 1, 1.5, ...`` and the last half-step clamps to the border sample.
"""

from __future__ import annotations

import torch

__all__ = ["upsample2x_bilinear_tf_legacy"]


def _upsample2x_last_dim(x: torch.Tensor) -> torch.Tensor:
    nxt = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    mid = 0.5 * (x + nxt)
    return torch.stack([x, mid], dim=-1).flatten(-2)


def upsample2x_bilinear_tf_legacy(x: torch.Tensor) -> torch.Tensor:
    """Double height and width like TF1 ``resize_bilinear(x, 2 * size)`` (legacy, corner-aligned).

    Along each axis: ``out[2j] = in[j]`` and ``out[2j+1] = (in[j] + in[min(j+1, n-1)]) / 2``.

    Args:
        x: tensor ``[..., H, W]`` (any domain).

    Returns:
        Tensor ``[..., 2H, 2W]``, same dtype and device.
    """
    y = _upsample2x_last_dim(x)
    y = _upsample2x_last_dim(y.transpose(-1, -2)).transpose(-1, -2)
    return y
