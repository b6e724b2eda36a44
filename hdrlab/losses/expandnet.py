"""Training objective of ExpandNet (Marnerides et al., Eurographics 2018), as in the official
``train.py`` (dmarnerides/hdr-expandnet, ``ExpandNetLoss``).

For a prediction ``y_hat`` and target ``y`` (both ``[B, 3, H, W]``, min-max mapped to [0, 1] by the
official training, see :class:`hdrlab.methods.expandnet.ExpandNetMethod`)::

    cos_p = <y_hat_p, y_p> / max(||y_hat_p|| ||y_p||, eps)     per pixel p, over the RGB channels
    L     = mean_{b,c,h,w} |y_hat - y|  +  lambda * mean_{b,h,w} (1 - cos_p)

with ``lambda = 5`` and ``eps = 1e-20`` (``torch.nn.CosineSimilarity(dim=1, eps=1e-20)``; the
official commit 70d0efd lowered eps to this value). Both means are plain means over every element
(``nn.L1Loss()`` default ``reduction="mean"`` and ``.mean()`` over the ``[B, H, W]`` cosine map), so
the two terms are per-element averages, not sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["COSINE_EPS", "EXPANDNET_LAMBDA", "expandnet_loss"]

#: Official weight of the cosine term (``ExpandNetLoss(loss_lambda=5)``).
EXPANDNET_LAMBDA = 5.0
#: Official eps of the per-pixel cosine similarity.
COSINE_EPS = 1e-20


def expandnet_loss(
    pred: torch.Tensor, target: torch.Tensor, *, loss_lambda: float = EXPANDNET_LAMBDA
) -> dict[str, torch.Tensor]:
    """Official ExpandNet loss ``L1 + lambda * mean(1 - cos)`` (module docstring).

    Args:
        pred: ``[B, 3, H, W]`` prediction (official: sigmoid output in (0, 1)).
        target: ``[B, 3, H, W]`` target (official: min-max mapped HDR in [0, 1]).
        loss_lambda: weight of the cosine term (official 5).

    Returns:
        ``{"total", "l1", "cosine"}``: scalar tensors; ``cosine`` is already weighted by ``lambda``.
    """
    l1 = F.l1_loss(pred, target)
    cosine = loss_lambda * (1 - F.cosine_similarity(pred, target, dim=1, eps=COSINE_EPS)).mean()
    return {"total": l1 + cosine, "l1": l1, "cosine": cosine}
