"""Training loss of CF-Net (Deng et al., TIP 2021) as implemented in the official ``train.py``.

    L = sum_{b in {u, o}} [ (1 - SSIM(I_sr^b, HR^b)) + sum_{t=1..T} (1 - SSIM(I_t^b, HR_gt)) ]

``I_sr^b`` is branch ``b``'s SRB output (supervised by the HR version of its own input exposure),
``I_t^b`` the output of coupled feedback step ``t`` (supervised by the fused ground truth). All
terms have unit weight. SSIM is ``pytorch_msssim.ssim`` with a 7x7 Gaussian window (sigma 1.5),
``nonnegative_ssim=True``, averaged over the batch.

Domain: display-referred ``[0, 1]`` with ``data_range=1``. The official code uses ``[0, 255]`` with
``data_range=255``; SSIM is invariant to that common rescaling (C1, C2 scale with the data range),
so the values agree.

Deviation / caveat: the paper describes its loss with MEF-SSIM and per-step weights; that
formulation could not be verified against the paper and is **not** implemented here -- this is the
loss the released code trains with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pytorch_msssim import ssim

from hdrlab.errors import ConfigError


def cfnet_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch-mean SSIM of CF-Net's loss (7x7 Gaussian window, sigma 1.5, non-negative, data range 1).

    Args:
        pred: ``[B, 3, H, W]`` display image in ``[0, 1]`` (H, W >= 7).
        target: ``[B, 3, H, W]`` display image in ``[0, 1]``.

    Returns:
        Scalar SSIM in ``[0, 1]``.
    """
    return ssim(pred, target, data_range=1.0, win_size=7, size_average=True, nonnegative_ssim=True)


def cfnet_loss(
    under: Sequence[torch.Tensor],
    over: Sequence[torch.Tensor],
    *,
    hr_under: torch.Tensor,
    hr_over: torch.Tensor,
    hr_fused: torch.Tensor,
) -> torch.Tensor:
    """Official CF-Net loss over both branches (unit weights, ``2 * (T + 1)`` SSIM terms).

    Args:
        under: the under branch's ``T + 1`` outputs ``[B, 3, H, W]`` in [0, 1] (SRB first).
        over: the over branch's ``T + 1`` outputs.
        hr_under: high-resolution under-exposed source (target of ``under[0]``).
        hr_over: high-resolution over-exposed source (target of ``over[0]``).
        hr_fused: fused ground truth (target of ``under[1:]`` and ``over[1:]``).

    Returns:
        Scalar loss in ``[0, 2 * (T + 1)]``.
    """
    if len(under) != len(over) or len(under) < 2:
        raise ConfigError(
            f"cfnet_loss needs the same number (>= 2) of under/over outputs, got {len(under)} and {len(over)}"
        )
    loss = (1.0 - cfnet_ssim(under[0], hr_under)) + (1.0 - cfnet_ssim(over[0], hr_over))
    for img_u, img_o in zip(under[1:], over[1:]):
        loss = loss + (1.0 - cfnet_ssim(img_u, hr_fused)) + (1.0 - cfnet_ssim(img_o, hr_fused))
    return loss
