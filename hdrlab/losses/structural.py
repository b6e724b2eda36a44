"""SSIM and MS-SSIM losses (``1 - ssim``) via ``pytorch_msssim``, on a chosen domain.

SSIM: Wang et al. 2004 (Gaussian window 11, sigma 1.5, K = (0.01, 0.03), valid convolution);
MS-SSIM: Wang et al. 2003 (5 scales, weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333). HDR values
are unbounded, so the images are first mapped to a bounded domain (default mu-law, mu = 5000,
clamped to ``[0, 1]``, ``data_range = 1``). ``pytorch_msssim.ms_ssim`` (1.0) requires
``min(H, W) > (win_size - 1) * 16`` whatever the number of scales (160 px with the 11-px window);
use a smaller ``win_size`` for small patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_msssim import ms_ssim, ssim
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.tonemap import display, mu_law

__all__ = ["MSSSIMLoss", "SSIMLoss", "bounded_domain"]


def bounded_domain(x: torch.Tensor, domain: str, *, mu: float = 5000.0) -> torch.Tensor:
    """Map linear radiance ``[B, 3, H, W]`` into ``[0, 1]`` for SSIM-type losses.

    Args:
        x: linear radiance (``domain`` "mu_law" / "display") or an image already in [0, 1] ("identity").
        domain: ``"mu_law"`` (:func:`hdrlab.tonemap.mu_law`, clamps to [0, 1]), ``"display"``
            (:func:`hdrlab.tonemap.display`) or ``"identity"``.
        mu: mu of the mu-law.

    Returns:
        ``[B, 3, H, W]`` in ``[0, 1]`` (identity is passed through unchanged).
    """
    if domain == "mu_law":
        return mu_law(x, mu)
    if domain == "display":
        return display(x)
    if domain == "identity":
        return x
    raise ConfigError(f"unknown SSIM loss domain {domain!r}; choose 'mu_law', 'display' or 'identity'")


class SSIMLoss(nn.Module):
    """``1 - SSIM(f(pred), f(target))`` averaged over the batch.

    Args:
        domain: see :func:`bounded_domain`.
        mu: mu of the mu-law domain.
        data_range: dynamic range of the domain (1 for the bounded domains).
        win_size: Gaussian window size (odd).
        nonnegative: clamp the contrast-structure term at 0 (``pytorch_msssim``'s ``nonnegative_ssim``).
    """

    def __init__(self, *, domain: str = "mu_law", mu: float = 5000.0, data_range: float = 1.0,
                 win_size: int = 11, nonnegative: bool = False) -> None:
        super().__init__()
        bounded_domain(torch.zeros(1, 3, 1, 1), domain)  # validates the name early
        self.domain, self.mu, self.data_range, self.win_size = domain, float(mu), float(data_range), int(win_size)
        self.nonnegative = bool(nonnegative)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: pred, target ``[B, 3, H, W]`` linear. Returns: scalar in ``[0, 2]``."""
        p, t = bounded_domain(pred, self.domain, mu=self.mu), bounded_domain(target, self.domain, mu=self.mu)
        return 1.0 - ssim(p, t, data_range=self.data_range, size_average=True, win_size=self.win_size,
                          nonnegative_ssim=self.nonnegative)


class MSSSIMLoss(nn.Module):
    """``1 - MS-SSIM(f(pred), f(target))`` averaged over the batch.

    Args:
        domain: see :func:`bounded_domain`.
        mu: mu of the mu-law domain.
        data_range: dynamic range of the domain.
        win_size: Gaussian window size (odd).
        weights: per-scale exponents (None = the 5 of Wang et al. 2003).
    """

    def __init__(self, *, domain: str = "mu_law", mu: float = 5000.0, data_range: float = 1.0,
                 win_size: int = 11, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        bounded_domain(torch.zeros(1, 3, 1, 1), domain)
        self.domain, self.mu, self.data_range, self.win_size = domain, float(mu), float(data_range), int(win_size)
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: pred, target ``[B, 3, H, W]`` linear. Returns: scalar."""
        need = (self.win_size - 1) * 16
        if min(pred.shape[-2:]) <= need:
            raise ConfigError(
                f"MSSSIMLoss with window {self.win_size} needs images larger than {need} px (pytorch_msssim), "
                f"got {tuple(pred.shape[-2:])}; use a smaller win_size (e.g. 3 -> > 32 px) or larger crops"
            )
        p, t = bounded_domain(pred, self.domain, mu=self.mu), bounded_domain(target, self.domain, mu=self.mu)
        return 1.0 - ms_ssim(p, t, data_range=self.data_range, size_average=True, win_size=self.win_size,
                             weights=self.weights)
