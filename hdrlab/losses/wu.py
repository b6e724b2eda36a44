"""Training loss of Wu, Xu, Tai, Tang (ECCV 2018), as the official code computes it
(elliottwu/DeepHDR ``model.py``: ``tonemap`` and ``g_loss``).

The official images live in a ``[-1, 1]`` encoding ``x' = 2x - 1`` of radiance ``x in [0, 1]``
(relative to the darkest exposure). Its mu-law works in that encoding:

    T'(x') = 2 ln(1 + mu (x' + 1) / 2) / ln(1 + mu) - 1,    mu = 5000,

and the loss is the mean over all elements (batch, channels, pixels) of ``(T'(G') - T'(H_gt'))^2``.
Since ``T'(x') = 2 T(x) - 1`` with ``T(x) = ln(1 + mu x) / ln(1 + mu)``, it equals **4x** the MSE of the
``[0, 1]``-domain mu-law (:func:`hdrlab.losses.domains.mu_law_domain`); the factor is kept, as in the
official code (with Adam it only rescales the loss, not the updates).
"""

from __future__ import annotations

import math

import torch

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import MU_KALANTARI, to_domain

__all__ = ["wu_loss", "wu_tonemap"]


def wu_tonemap(x: torch.Tensor, *, mu: float = MU_KALANTARI) -> torch.Tensor:
    """Official ``tonemap``: ``2 ln(1 + mu (x + 1) / 2) / ln(1 + mu) - 1`` of ``x`` in ``[-1, 1]`` (same shape)."""
    return 2.0 * torch.log1p(mu * (x + 1.0) / 2.0) / math.log1p(mu) - 1.0


def wu_loss(pred: torch.Tensor, target: torch.Tensor, *, mu: float = MU_KALANTARI, domain: str = "mu_law") -> torch.Tensor:
    """Official ``g_loss``: ``mean((T'(2 pred - 1) - T'(2 target - 1))^2)``.

    Args:
        pred: network output ``[B, 3, H, W]``, radiance in ``[0, 1]`` (``(tanh + 1) / 2``).
        target: ground truth ``[B, 3, H, W]`` in ``[0, 1]``, same scale.
        mu: mu-law strength (official 5000).
        domain: ``mu_law`` (official ``T'``) or another loss domain ``D`` of
            :func:`hdrlab.losses.domains.to_domain`, used in the same encoding ``2 D(x) - 1``.

    Returns:
        Scalar loss (4x the ``[0, 1]``-domain mu-law MSE).

    Raises:
        ConfigError: ``pred`` and ``target`` differ in shape.
    """
    if pred.shape != target.shape:
        raise ConfigError(f"wu_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if domain == "mu_law":
        return (wu_tonemap(pred * 2.0 - 1.0, mu=mu) - wu_tonemap(target * 2.0 - 1.0, mu=mu)).square().mean()
    return (2.0 * to_domain(pred, domain, mu=mu) - 2.0 * to_domain(target, domain, mu=mu)).square().mean()
