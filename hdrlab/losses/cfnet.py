"""Training loss of CF-Net (Deng et al., TIP 2021) as implemented in the official ``train.py``.

    L = sum_{b in {u, o}} [ (1 - SSIM(I_sr^b, HR^b)) + sum_{t=1..T} (1 - SSIM(I_t^b, HR_gt)) ]

``I_sr^b`` is branch ``b``'s SRB output (supervised by the HR version of its own input exposure),
``I_t^b`` the output of coupled feedback step ``t`` (supervised by the fused ground truth). All
terms have unit weight. SSIM is ``pytorch_msssim.ssim`` with a 7x7 Gaussian window (sigma 1.5),
``nonnegative_ssim=True``, averaged over the batch.

Domain: display-referred ``[0, 1]`` with ``data_range=1``. The official code uses ``[0, 255]`` with
``data_range=255``; SSIM is invariant to that common rescaling (C1, C2 scale with the data range),
so the values agree.

Option ``structural_loss="mef_ssim"`` (not the official code, UNVERIFIED): the paper describes
its fusion loss with MEF-SSIM (Ma, Zeng, Wang, TIP 2015; :func:`hdrlab.losses.mef_ssim.mef_ssim`);
then every feedback output is scored against the HR source pair instead of the fused ground truth,

    L = sum_b [ (1 - SSIM(I_sr^b, HR^b)) + sum_t (1 - MEF-SSIM(I_t^b, {HR^u, HR^o})) ]

(SRB terms unchanged: they have a single source). Unit weights are kept: the paper's per-step
weights could not be verified, and neither could the MEF-SSIM implementation (no reference code
offline; see :mod:`hdrlab.losses.mef_ssim` for the window, C2 and colour handling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hdrlab.errors import ConfigError
from hdrlab.losses.mef_ssim import mef_ssim
from hdrlab.losses.structural import SSIMLoss

#: CF-Net's ``1 - SSIM`` term: official settings, images already in [0, 1] (identity domain)
ssim_loss = SSIMLoss(domain="identity", win_size=7, nonnegative=True)

#: choices of :func:`cfnet_loss`'s ``structural_loss`` ("ssim" = the official code)
STRUCTURAL_LOSSES: tuple[str, ...] = ("ssim", "mef_ssim")


def check_structural_loss(name: str, *, owner: str = "cfnet_loss") -> str:
    """Return ``name`` if it is one of :data:`STRUCTURAL_LOSSES`.

    Raises:
        ConfigError: unknown name (the message names ``owner`` and the choices).
    """
    if name not in STRUCTURAL_LOSSES:
        raise ConfigError(
            f"{owner}: structural_loss={name!r} is unknown; use 'ssim' (official code) or 'mef_ssim' "
            "(the paper's MEF-SSIM, unverified)"
        )
    return name


def cfnet_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch-mean SSIM of CF-Net's loss (7x7 Gaussian window, sigma 1.5, non-negative, data range 1).

    Args:
        pred: ``[B, 3, H, W]`` display image in ``[0, 1]`` (H, W >= 7).
        target: ``[B, 3, H, W]`` display image in ``[0, 1]``.

    Returns:
        Scalar SSIM in ``[0, 1]``.
    """
    return 1.0 - ssim_loss(pred, target)


def cfnet_loss(
    under: Sequence[torch.Tensor],
    over: Sequence[torch.Tensor],
    *,
    hr_under: torch.Tensor,
    hr_over: torch.Tensor,
    hr_fused: torch.Tensor | None,
    structural_loss: str = "ssim",
) -> torch.Tensor:
    """CF-Net loss over both branches (unit weights, ``2 * (T + 1)`` structural terms).

    Args:
        under: the under branch's ``T + 1`` outputs ``[B, 3, H, W]`` in [0, 1] (SRB first).
        over: the over branch's ``T + 1`` outputs.
        hr_under: high-resolution under-exposed source (target of ``under[0]``).
        hr_over: high-resolution over-exposed source (target of ``over[0]``).
        hr_fused: fused ground truth (target of ``under[1:]`` and ``over[1:]`` with ``"ssim"``;
            unused, may be None, with ``"mef_ssim"``).
        structural_loss: ``"ssim"`` (official code: ``1 - SSIM(I_t^b, HR_gt)``) or ``"mef_ssim"``
            (``1 - MEF-SSIM(I_t^b, {HR^u, HR^o})``, module docstring; unverified).

    Returns:
        Scalar loss in ``[0, 2 * (T + 1)]`` (``"ssim"``) or ``[0, 2 + 4 T]`` (``"mef_ssim"``, which
        can be negative per patch).

    Raises:
        ConfigError: unknown ``structural_loss``, mismatched branches, or ``"ssim"`` without ``hr_fused``.
    """
    check_structural_loss(structural_loss)
    if len(under) != len(over) or len(under) < 2:
        raise ConfigError(
            f"cfnet_loss needs the same number (>= 2) of under/over outputs, got {len(under)} and {len(over)}"
        )
    loss = ssim_loss(under[0], hr_under) + ssim_loss(over[0], hr_over)
    if structural_loss == "mef_ssim":
        sources = torch.stack([hr_under, hr_over], dim=1)
        for img_u, img_o in zip(under[1:], over[1:]):
            loss = loss + (1.0 - mef_ssim(img_u, sources).mean()) + (1.0 - mef_ssim(img_o, sources).mean())
        return loss
    if hr_fused is None:
        raise ConfigError("cfnet_loss with structural_loss='ssim' needs hr_fused (the fused ground truth)")
    for img_u, img_o in zip(under[1:], over[1:]):
        loss = loss + ssim_loss(img_u, hr_fused) + ssim_loss(img_o, hr_fused)
    return loss
