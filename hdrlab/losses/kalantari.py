"""Training loss of Kalantari & Ramamoorthi 2017 ("Deep High Dynamic Range Imaging of Dynamic Scenes").

    L = || T(H_hat) - T(H_gt) ||_2^2,   T(H) = log(1 + mu H) / log(1 + mu),   mu = 5000

between the merged radiance ``H_hat`` and the ground truth ``H_gt``, both ``[B, 3, H, W]`` in
``[0, 1]`` (radiance relative to the darkest exposure). Official MATLAB ``EvaluateSystem.m``:
``vl_nnpdist(T(H_hat), T(H_gt), 2, 'noRoot', true, 'aggregate', true)``, i.e. the squared error
*summed* over every value of the batch (``RangeCompressor.m`` is ``T``).

Reduction (``reduction``): ``"mean"`` (default here) averages the squared error over all values;
``"sum"`` is the official sum. Adam's update ``m / (sqrt(v) + eps)`` is invariant to a constant
factor on the loss except through ``eps`` (1e-8), so both train alike at the official lr 1e-4; the
mean keeps the logged loss and the gradient scale independent of the batch and patch size (the
official sum over a batch of 20 28x28x3 outputs is 47,040 times the mean).
"""

from __future__ import annotations

from typing import Literal

import torch

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import MU_KALANTARI, to_domain

__all__ = ["KALANTARI_REDUCTIONS", "check_reduction", "kalantari_loss"]

#: choices of :func:`kalantari_loss`'s ``reduction`` ("sum" = the official code)
KALANTARI_REDUCTIONS: tuple[str, ...] = ("mean", "sum")


def check_reduction(reduction: str, *, owner: str = "kalantari_loss") -> None:
    """Raise :class:`ConfigError` for an unknown ``reduction``."""
    if reduction not in KALANTARI_REDUCTIONS:
        raise ConfigError(f"{owner}: reduction={reduction!r} is unknown; use 'mean' or 'sum' (official)")


def kalantari_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    mu: float = MU_KALANTARI,
    reduction: Literal["mean", "sum"] = "mean",
    domain: str = "mu_law",
) -> torch.Tensor:
    """Squared L2 between the mu-law tonemaps of ``pred`` and ``target`` (module docstring).

    Args:
        pred: merged radiance ``[B, 3, H, W]`` in ``[0, 1]``.
        target: ground truth of the same shape, in ``[0, 1]``.
        mu: mu-law strength (official 5000).
        reduction: ``"mean"`` over all values or ``"sum"`` (official).
        domain: the tonemap as a loss domain of :func:`hdrlab.losses.domains.to_domain` (official ``mu_law``).

    Returns:
        Scalar loss.
    """
    check_reduction(reduction)
    if pred.shape != target.shape:
        raise ConfigError(f"kalantari_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    squared = (to_domain(pred, domain, mu=mu) - to_domain(target, domain, mu=mu)).square()
    return squared.sum() if reduction == "sum" else squared.mean()
