"""The training loss of AHDRNet (Yan et al., CVPR 2019), as the official ``running_func.train`` computes it.

``L = mean |T(H_pred) - T(H_gt)|`` (``F.l1_loss``: mean over batch, channels and pixels) with the
mu-law tonemap ``T(H) = ln(1 + mu H) / ln(1 + mu)``, ``mu = 5000``, on radiance relative to the
darkest exposure in ``[0, 1]`` (the network's sigmoid output and the Kalantari ground truth).
Kalantari & Ramamoorthi 2017 use the same tonemap with an L2 distance; AHDRNet's is L1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import MU_KALANTARI, to_domain

__all__ = ["ahdrnet_loss"]


def ahdrnet_loss(pred: torch.Tensor, target: torch.Tensor, *, mu: float = MU_KALANTARI, domain: str = "mu_law") -> torch.Tensor:
    """``mean |T(pred) - T(target)|``, ``T`` the mu-law of :func:`hdrlab.losses.domains.mu_law_domain`.

    Args:
        pred: ``[B, 3, H, W]`` network radiance in ``[0, 1]`` (negatives would be clamped to 0).
        target: ``[B, 3, H, W]`` ground-truth radiance in the same domain.
        mu: mu-law strength (official 5000).
        domain: ``T`` as a loss domain of :func:`hdrlab.losses.domains.to_domain` (official ``mu_law``).

    Returns:
        Scalar loss.
    """
    if pred.shape != target.shape:
        raise ConfigError(
            f"ahdrnet_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    return F.l1_loss(to_domain(pred, domain, mu=mu), to_domain(target, domain, mu=mu))
