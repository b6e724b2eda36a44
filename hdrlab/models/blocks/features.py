"""Hand-crafted per-pixel image features used as extra CNN input channels.

* :func:`sobel_edges` - TensorFlow ``tf.image.sobel_edges`` layout built on kornia's Sobel kernel
  and ``filter2d`` (reflect border = TF ``REFLECT`` = OpenCV ``BORDER_REFLECT_101``).
* :func:`soft_histogram_maps` - triangular soft-binning maps. kornia's histogram functions
  (``kornia.enhance.histogram``) return *image-level* Gaussian-kernel histograms, not per-pixel
  bin memberships, so this one is written here (it is one line of tensor code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from kornia.filters import filter2d, get_spatial_gradient_kernel2d

__all__ = ["sobel_edges", "soft_histogram_maps"]


def sobel_edges(image: torch.Tensor) -> torch.Tensor:
    """Unnormalised 3x3 Sobel derivatives, ordered per channel as (d/dy, d/dx).

    Correlation with ``[[-1,-2,-1],[0,0,0],[1,2,1]]`` (d/dy) and its transpose (d/dx), reflect
    border, no normalisation - the same numbers as ``tf.image.sobel_edges`` reshaped to channels
    (SingleHDR Linearization-Net edge branch).

    Args:
        image: ``[B, C, H, W]``, any domain.

    Returns:
        ``[B, 2C, H, W]`` with channels ``c0_dy, c0_dx, c1_dy, c1_dx, ...``.
    """
    kernel = get_spatial_gradient_kernel2d("sobel", 1).to(device=image.device, dtype=image.dtype)
    dx = filter2d(image, kernel[0:1], border_type="reflect")
    dy = filter2d(image, kernel[1:2], border_type="reflect")
    return torch.stack([dy, dx], dim=2).flatten(1, 2)


def soft_histogram_maps(image: torch.Tensor, bins: int | Sequence[int]) -> torch.Tensor:
    """Per-pixel triangular bin memberships (SingleHDR "histogram layer").

    For ``N`` bins, channel ``(k, c)`` is ``ReLU(1 - N * |x_c - k / N|)`` for ``k = 0..N``, laid out
    bin-major, colour-minor (``k * C + c``). For ``x`` in ``[0, 1]`` the ``N + 1`` maps of one colour
    sum to 1. Several ``N`` are concatenated in the given order.

    Args:
        image: ``[B, C, H, W]`` display-referred values in ``[0, 1]``.
        bins: ``N`` or a sequence of ``N`` (official: ``(4, 8, 16)``).

    Returns:
        ``[B, C * sum(N + 1), H, W]``.
    """
    counts = [bins] if isinstance(bins, int) else list(bins)
    maps = []
    for n in counts:
        centres = torch.arange(n + 1, device=image.device, dtype=image.dtype) / n
        diff = image.unsqueeze(1) - centres.view(1, -1, 1, 1, 1)  # [B, N+1, C, H, W]
        maps.append(torch.relu(1.0 - n * diff.abs()).flatten(1, 2))
    return torch.cat(maps, dim=1)
