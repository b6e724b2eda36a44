"""Total-variation regulariser (anisotropic L1, Rudin et al. 1992) via ``kornia.losses.total_variation``."""

from __future__ import annotations

import torch
from kornia.losses import total_variation
from torch import nn

from hdrlab.errors import ConfigError

__all__ = ["TotalVariationLoss"]


class TotalVariationLoss(nn.Module):
    r"""Anisotropic total variation of an image batch, averaged over batch and channels.

    Per image and channel, kornia computes
    ``reduction="mean"``: :math:`\mathrm{mean}|I_{y+1,x} - I_{y,x}| + \mathrm{mean}|I_{y,x+1} - I_{y,x}|`
    (each term averaged over its own count, ``(H-1) W`` and ``H (W-1)``), or
    ``reduction="sum"``: the two sums. This loss returns the mean of that ``[B, C]`` result.

    Args:
        reduction: kornia's spatial reduction, ``"mean"`` (resolution independent, default) or ``"sum"``.
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"TotalVariationLoss reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Args: img ``[B, C, H, W]`` (any domain). Returns: scalar."""
        return total_variation(img, reduction=self.reduction).mean()
