"""Photometric units: relative radiance <-> absolute luminance (cd/m^2), Rec.709 luminance.

hdrlab's radiance is relative (the input LDR clips at 1.0); metrics that need absolute
luminance (PU21, ColorVideoVDP) use the single mapping :func:`to_nits` (1.0 -> ``white_nits``).
"""

from __future__ import annotations

import kornia
import torch

from hdrlab.errors import ConfigError

#: Rec.709 / sRGB luminance weights (ITU-R BT.709-6, Y from linear R, G, B)
REC709_WEIGHTS = (0.2126, 0.7152, 0.0722)


def to_nits(x: torch.Tensor, *, white_nits: float = 200.0) -> torch.Tensor:
    """Relative linear radiance -> absolute luminance: ``x * white_nits`` (cd/m^2); any shape."""
    return x * white_nits


def from_nits(x: torch.Tensor, *, white_nits: float = 200.0) -> torch.Tensor:
    """Absolute luminance (cd/m^2) -> relative linear radiance: ``x / white_nits``; any shape."""
    return x / white_nits


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec.709 luminance ``Y = 0.2126 R + 0.7152 G + 0.0722 B`` of linear RGB.

    Args:
        x: linear RGB ``[B, 3, H, W]`` or ``[3, H, W]``.

    Returns:
        ``[B, 1, H, W]`` or ``[1, H, W]`` (kornia's ``rgb_to_grayscale`` with Rec.709 weights).
    """
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ConfigError(f"luminance needs RGB [B,3,H,W] or [3,H,W], got shape {tuple(x.shape)}")
    weights = torch.tensor(REC709_WEIGHTS, dtype=x.dtype, device=x.device)
    return kornia.color.rgb_to_grayscale(x, rgb_weights=weights)
