"""Pixel reconstruction losses (L1 / L2) in a chosen domain, optionally restricted to a region.

``loss = sum(w * |f(pred) - f(target)|^k) / max(sum(w), 1)`` with ``f`` the domain transform
(:mod:`hdrlab.losses.domains`), ``k = 1`` (L1) or ``2`` (L2, mean squared error) and ``w`` the
region mask broadcast over channels (all ones without a mask, giving the plain mean). The
denominator counts mask entries and is clamped to 1, so an empty mask gives a loss of 0 (and zero
gradient) instead of NaN.
"""

from __future__ import annotations

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import DOMAINS, MU_KALANTARI, to_domain

__all__ = ["LOSS_KINDS", "MASK_MODES", "HDRReconstructionLoss", "masked_mean", "reconstruction_loss"]

LOSS_KINDS: tuple[str, ...] = ("l1", "l2")
MASK_MODES: tuple[str | None, ...] = (None, "clipped", "unclipped")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` with a safe denominator.

    Args:
        values: ``[B, C, H, W]``.
        mask: ``[B, 1, H, W]`` or ``[B, C, H, W]`` weights in ``[0, 1]`` (bool accepted), or None.

    Returns:
        Scalar ``sum(values * mask) / max(sum(mask broadcast to values), 1)``; the plain mean when
        ``mask`` is None; 0 for an empty mask.
    """
    if mask is None:
        return values.mean()
    w = mask.to(values.dtype).expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def reconstruction_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: str = "l1",
    domain: str = "linear",
    mu: float = MU_KALANTARI,
    eps: float = 1.0 / 255.0,
    white_nits: float = 200.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Functional form of :class:`HDRReconstructionLoss`.

    Args:
        pred: predicted linear radiance ``[B, 3, H, W]``.
        target: reference linear radiance ``[B, 3, H, W]``.
        kind: ``"l1"`` or ``"l2"``.
        domain: ``"linear"``, ``"log"``, ``"mu_law"`` or ``"pu21"``.
        mu: mu-law strength.
        eps: log offset.
        white_nits: cd/m^2 of radiance 1.0 (pu21).
        mask: optional ``[B, 1, H, W]`` region weights.

    Returns:
        Scalar loss.
    """
    if kind not in LOSS_KINDS:
        raise ConfigError(f"unknown loss kind {kind!r}; choose one of {list(LOSS_KINDS)}")
    diff = to_domain(pred, domain, mu=mu, eps=eps, white_nits=white_nits) - to_domain(
        target, domain, mu=mu, eps=eps, white_nits=white_nits
    )
    return masked_mean(diff.abs() if kind == "l1" else diff * diff, mask)


class HDRReconstructionLoss(nn.Module):
    """L1/L2 reconstruction loss in a linear, log, mu-law or PU21 domain.

    Args:
        kind: ``"l1"`` or ``"l2"``.
        domain: ``"linear"``, ``"log"``, ``"mu_law"`` or ``"pu21"`` (:mod:`hdrlab.losses.domains`).
        mu: mu of the mu-law domain (5000 Kalantari, 10 SingleHDR, 100 Kim).
        eps: offset of the log domain (1/255 as HDRCNN).
        white_nits: cd/m^2 of radiance 1.0 for the PU21 domain.
        mask: ``None`` (all pixels), ``"clipped"`` or ``"unclipped"``: restrict the loss to the
            input's clipped / unclipped pixels; ``forward`` then needs ``clip_mask``.
    """

    def __init__(
        self,
        *,
        kind: str = "l1",
        domain: str = "linear",
        mu: float = MU_KALANTARI,
        eps: float = 1.0 / 255.0,
        white_nits: float = 200.0,
        mask: str | None = None,
    ) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ConfigError(f"unknown loss kind {kind!r}; choose one of {list(LOSS_KINDS)}")
        if domain not in DOMAINS:
            raise ConfigError(f"unknown loss domain {domain!r}; choose one of {list(DOMAINS)}")
        if mask not in MASK_MODES:
            raise ConfigError(f"unknown loss mask {mask!r}; choose None, 'clipped' or 'unclipped'")
        self.kind, self.domain, self.mask = kind, domain, mask
        self.mu, self.eps, self.white_nits = float(mu), float(eps), float(white_nits)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, clip_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            pred: predicted linear radiance ``[B, 3, H, W]``.
            target: reference linear radiance ``[B, 3, H, W]``.
            clip_mask: the input's clip mask ``[B, 1, H, W]`` (1 = clipped); required when the loss
                was built with ``mask="clipped"`` or ``"unclipped"``, ignored otherwise.

        Returns:
            Scalar loss.
        """
        weights = None
        if self.mask is not None:
            if clip_mask is None:
                raise ConfigError(
                    f"HDRReconstructionLoss(mask={self.mask!r}) needs the batch's clip_mask; pass it to forward "
                    "or build the loss with mask=None"
                )
            clipped = clip_mask.to(pred.dtype)
            weights = clipped if self.mask == "clipped" else 1.0 - clipped
        return reconstruction_loss(
            pred, target, kind=self.kind, domain=self.domain, mu=self.mu, eps=self.eps,
            white_nits=self.white_nits, mask=weights,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, domain={self.domain!r}, mu={self.mu}, eps={self.eps}, mask={self.mask!r}"
