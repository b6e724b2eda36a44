"""Training objective of CEVR (Chen et al., ICCV 2023), as the official training script.

Official code: github skchen1993/2023_CEVR, ``train_strategy/train_warmupLoss.py`` (the last
training script in the history, deleted in commit e3d0c92), with the flags of its only recorded
run (``--FloatLoss --Float_eff=0.1``, default ``--loss_mode=sum``). For an input ``x`` (EV 0), a
target ``y`` at EV step ``s`` and one network ``f`` (the B model for ``s >= 0``, the D model for
``s <= 0``):

    L = L_1 + lambda * [psnr_test > 28 dB] * L_cycle,    lambda = 0.1

* ``L_1 = sum |f(x, s) - y|`` over all ``B*3*H*W`` elements (``nn.L1Loss(reduction='sum')``);
* ``L_cycle = sum |f(f(x, s/2), s/2) - y|`` (the official "FloatLoss": two half steps must land
  on the same target; the intermediate image is not clamped);
* the cycle term is switched on only after a test epoch whose mean PSNR exceeds ``warmup_thr =
  28`` dB (the switch lives in :class:`hdrlab.methods.cevr.CEVRMethod`).

The sum reduction makes the loss scale with ``B*H*W``; Adam (the official optimizer) is nearly
invariant to that scale. ``reduction="mean"`` is offered for other optimizers (not official).
The script's other optional terms (VGG perceptual, CoBi, TV, FloatLoss v2/v3) were off in the
recorded run and are not ported.

All images are display-referred ``[B, 3, H, W]`` (network outputs unclamped, targets in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import nn

from hdrlab.errors import ConfigError

__all__ = ["CEVR_LOSS_WEIGHTS", "CEVRLoss", "cevr_l1", "cycle_prediction"]

#: Official weights: direct L1 and the cycle ("FloatLoss", ``Float_eff``).
CEVR_LOSS_WEIGHTS: dict[str, float] = {"l1": 1.0, "cycle": 0.1}

Reduction = Literal["sum", "mean"]


def cevr_l1(pred: torch.Tensor, target: torch.Tensor, *, reduction: Reduction = "sum") -> torch.Tensor:
    """``sum |pred - target|`` (official) or the mean, over all elements.

    Args:
        pred: ``[B, 3, H, W]`` prediction (unclamped).
        target: ``[B, 3, H, W]`` target in [0, 1].
        reduction: ``"sum"`` (official ``loss_mode``) or ``"mean"``.
    """
    if reduction not in ("sum", "mean"):
        raise ConfigError(f"CEVR loss reduction={reduction!r} is unknown; use 'sum' (official) or 'mean'")
    return nn.functional.l1_loss(pred, target, reduction=reduction)


def cycle_prediction(net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                     step: torch.Tensor) -> torch.Tensor:
    """``f(f(x, s/2), s/2)``: two half steps with the same network (official FloatLoss path).

    Args:
        net: ``(image [B,3,H,W], step [B]) -> image [B,3,H,W]``.
        x: ``[B, 3, H, W]`` input.
        step: ``[B]`` EV steps.
    """
    half = step / 2
    return net(net(x, half), half)


class CEVRLoss(nn.Module):
    """``L = w_l1 * L_1 + w_cycle * L_cycle`` (official ``w = {"l1": 1, "cycle": 0.1}``, sum reduction).

    Args:
        weights: overrides of :data:`CEVR_LOSS_WEIGHTS` (keys ``l1``, ``cycle``).
        reduction: ``"sum"`` (official) or ``"mean"``.
    """

    def __init__(self, *, weights: Mapping[str, float] | None = None, reduction: Reduction = "sum") -> None:
        super().__init__()
        unknown = set(weights or {}) - set(CEVR_LOSS_WEIGHTS)
        if unknown:
            raise ConfigError(f"CEVR loss_weights has unknown keys {sorted(unknown)}; use {sorted(CEVR_LOSS_WEIGHTS)}")
        cevr_l1(torch.zeros(1), torch.zeros(1), reduction=reduction)  # validates the name
        self.weights = {**CEVR_LOSS_WEIGHTS, **(weights or {})}
        self.reduction = reduction

    def forward(self, *, pred: torch.Tensor, target: torch.Tensor,
                cycle: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and the raw terms.

        Args:
            pred: ``f(x, s)`` ``[B, 3, H, W]``.
            target: ``[B, 3, H, W]`` at EV step ``s``.
            cycle: ``f(f(x, s/2), s/2)`` or None (cycle term off, as before the warm-up threshold).

        Returns:
            ``(total, {"l1": L_1, "cycle": L_cycle (only when given)})`` (unweighted terms).
        """
        terms = {"l1": cevr_l1(pred, target, reduction=self.reduction)}
        if cycle is not None:
            terms["cycle"] = cevr_l1(cycle, target, reduction=self.reduction)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms
