"""Total variation (anisotropic L1, Rudin et al. 1992) via ``kornia.losses.total_variation``: the one
implementation every paper objective uses.

Per image, with ``dy = I[y+1, x] - I[y, x]`` and ``dx = I[y, x+1] - I[y, x]`` over every channel:

* ``reduction="sum"``: ``sum|dy| + sum|dx|`` over C, H, W (Le et al. 2023's ``L_tv``);
* ``reduction="mean"``: per channel ``mean|dy| + mean|dx|`` (each over its own count, ``(H-1) W`` and
  ``H (W-1)``), averaged over the channels (resolution independent);
* ``reduction="pixel_mean"``: the sums divided by ``C H W``, i.e. the far row / column padded by
  symmetry (a zero difference) and every position averaged (SingleHDR's official ``TV``).
"""

from __future__ import annotations

import torch
from kornia.losses import total_variation
from torch import nn

from hdrlab.errors import ConfigError

__all__ = ["TV_REDUCTIONS", "TotalVariationLoss", "image_total_variation"]

#: reductions of :func:`image_total_variation` (module docstring)
TV_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "pixel_mean")


def image_total_variation(img: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Per-image anisotropic total variation (module docstring).

    Args:
        img: ``[B, C, H, W]`` (any domain).
        reduction: ``"mean"``, ``"sum"`` or ``"pixel_mean"``.

    Returns:
        ``[B]``.
    """
    if reduction not in TV_REDUCTIONS:
        raise ConfigError(f"total variation reduction must be one of {list(TV_REDUCTIONS)}, got {reduction!r}")
    if reduction == "mean":
        return total_variation(img, reduction="mean").mean(dim=1)
    sums = total_variation(img, reduction="sum").sum(dim=1)
    if reduction == "sum":
        return sums
    c, h, w = img.shape[1:]
    return sums / float(c * h * w)


class TotalVariationLoss(nn.Module):
    """Batch mean of :func:`image_total_variation`.

    Args:
        reduction: ``"mean"`` (resolution independent, default), ``"sum"`` or ``"pixel_mean"``.
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in TV_REDUCTIONS:
            raise ConfigError(f"TotalVariationLoss reduction must be one of {list(TV_REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Args: img ``[B, C, H, W]`` (any domain). Returns: scalar."""
        return image_total_variation(img, reduction=self.reduction).mean()
