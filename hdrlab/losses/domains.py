"""Loss domains: the transforms applied to prediction and target before a reconstruction loss.

All take linear radiance ``[B, 3, H, W]`` (input clip level 1.0; negatives are clamped to 0) and
are differentiable:

- ``linear``: ``x``.
- ``log``: ``log(x + eps)``; HDRCNN (Eilertsen et al. 2017) trains on ``log(y + 1/255)``,
  hence the default ``eps = 1/255``.
- ``mu_law``: ``log(1 + mu x) / log(1 + mu)`` **without** the upper clamp of the metric's mu-law
  (:func:`hdrlab.tonemap.mu_law`), so highlights above 1 keep a gradient. Published mu values:
  5000 (Kalantari & Ramamoorthi 2017; also AHDRNet, Wu et al.), 10 (SingleHDR, Liu et al. 2020:
  ``T(v) = log(1 + 10 v) / log(11)`` on the unclipped exposure-scaled HDR, official training code),
  100 (Kim et al. 2021, official code).
- ``pu21``: ``pu21_encode(to_nits(x, white_nits)) / 256``: PU21 (Mantiuk & Azimi 2021) of absolute
  RGB, divided by the PSNR peak 256 so that 100 cd/m^2 is about 1. The encoding clamps at
  0.005 cd/m^2, so very dark pixels have no gradient.
"""

from __future__ import annotations

import math

import torch

from hdrlab.camera import to_nits
from hdrlab.errors import ConfigError
from hdrlab.metrics.pu21 import PU21_PSNR_PEAK, pu21_encode

__all__ = [
    "DOMAINS",
    "MU_KALANTARI",
    "MU_KIM",
    "MU_SINGLEHDR",
    "linear_domain",
    "log_domain",
    "mu_law_domain",
    "pu21_domain",
    "to_domain",
]

DOMAINS: tuple[str, ...] = ("linear", "log", "mu_law", "pu21")
#: published mu-law strengths (see the module docstring).
MU_KALANTARI: float = 5000.0
MU_SINGLEHDR: float = 10.0
MU_KIM: float = 100.0


def linear_domain(x: torch.Tensor) -> torch.Tensor:
    """Identity: linear radiance ``[B, 3, H, W]``."""
    return x


def log_domain(x: torch.Tensor, *, eps: float = 1.0 / 255.0) -> torch.Tensor:
    """``log(max(x, 0) + eps)`` of linear radiance ``[B, 3, H, W]`` (HDRCNN: eps = 1/255)."""
    return torch.log(x.clamp_min(0.0) + eps)


def mu_law_domain(x: torch.Tensor, *, mu: float = MU_KALANTARI) -> torch.Tensor:
    """``log(1 + mu max(x, 0)) / log(1 + mu)`` of linear radiance ``[B, 3, H, W]``, no upper clamp."""
    return torch.log1p(mu * x.clamp_min(0.0)) / math.log1p(mu)


def pu21_domain(x: torch.Tensor, *, white_nits: float = 200.0) -> torch.Tensor:
    """``pu21_encode(to_nits(x)) / 256`` of linear radiance ``[B, 3, H, W]`` (per channel)."""
    return pu21_encode(to_nits(x.clamp_min(0.0), white_nits=white_nits)) / PU21_PSNR_PEAK


def to_domain(
    x: torch.Tensor,
    domain: str,
    *,
    mu: float = MU_KALANTARI,
    eps: float = 1.0 / 255.0,
    white_nits: float = 200.0,
) -> torch.Tensor:
    """Apply the named loss domain.

    Args:
        x: linear radiance ``[B, 3, H, W]``.
        domain: ``"linear"``, ``"log"``, ``"mu_law"`` or ``"pu21"``.
        mu: mu of ``"mu_law"``.
        eps: offset of ``"log"``.
        white_nits: cd/m^2 of radiance 1.0 for ``"pu21"``.

    Returns:
        The transformed tensor, same shape.
    """
    if domain == "linear":
        return linear_domain(x)
    if domain == "log":
        return log_domain(x, eps=eps)
    if domain == "mu_law":
        return mu_law_domain(x, mu=mu)
    if domain == "pu21":
        return pu21_domain(x, white_nits=white_nits)
    raise ConfigError(f"unknown loss domain {domain!r}; choose one of {list(DOMAINS)}")
