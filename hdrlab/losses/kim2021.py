"""Training losses of Kim, Lee, Kang (AAAI 2021), as the official ``solver.py`` wires them.

Official code: JungHeeKim29/DiffHDRsyn (``solver.py``, ``utils/img_utils.py``, ``cobi_loss.py``).
Images are in ``[-1, 1]`` (the networks' domain) unless stated; ``L1`` is ``nn.L1Loss`` (mean over
all elements).

* ``L_int = L1(G, I) + 0.01 L1(hist(G), hist(I))`` (global network output ``G``), :func:`histogram_l1`;
* ``L_edge = L1(S_pred, S_gt)`` (edge maps in ``[0, 1]``);
* ``L_exp = L1(R, I) + 0.1 (CoBi_relu3_4 + CoBi_relu4_4)`` on ``(R + 1) / 2`` and ``(I + 1) / 2``
  (refined output ``R``), :class:`ContextualBilateralLoss`;
* ``L_HDR = L1(mu(H_pred), mu(H_gt))`` with ``mu(x) = ln(1 + 100 x) / ln(101)``, :func:`mu_law`.

Reductions: every L1 is a mean over all its elements (batch, exposures, channels, pixels; for the
histogram: batch, channels, 256 bins). CoBi is a mean over the batch of ``-ln(mean_i max_j CX_ij + 1e-5)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.perceptual import IMAGENET_MEAN, IMAGENET_STD, vgg_relu_names

#: official weights: histogram term inside L_int, CoBi term inside L_exp
KIM_HIST_WEIGHT = 0.01
KIM_COBI_WEIGHT = 0.1
#: official mu of the HDR loss
KIM_MU = 100.0


def mu_law(x: torch.Tensor, mu: float = KIM_MU) -> torch.Tensor:
    """``ln(1 + mu x) / ln(1 + mu)`` (official ``mu_law``; ``x >= 0`` linear radiance)."""
    return torch.log1p(mu * x) / math.log1p(mu)


def soft_histogram(x: torch.Tensor) -> torch.Tensor:
    """The official differentiable 256-bin histogram (``extract_hist``).

    ``v = clamp(255 (x + 1) / 2, 0, 255)``; each value is added (its own value, not 1) to bin
    ``floor(v)``, and bin ``k`` is divided by ``max(k, 1)`` and by 255. So a value ``k + f`` counts
    ``(k + f) / (255 k)``: about ``1/255`` per pixel, with gradient ``1 / (255 * 255 k)`` (bin 0
    gets ``v``, bin 255 only ``v = 255``).

    Args:
        x: ``[..., C, H, W]`` images in ``[-1, 1]`` (leading dims are flattened into the batch).

    Returns:
        ``[N, C, 256]`` histograms.
    """
    x = x.reshape(-1, *x.shape[-3:])
    v = (255.0 * (x + 1.0) / 2.0).clamp(0.0, 255.0)
    n, c = v.shape[:2]
    flat = v.reshape(n, c, -1)
    hist = torch.zeros(n, c, 256, dtype=x.dtype, device=x.device).scatter_add(-1, flat.detach().long(), flat)
    divisor = torch.arange(256, dtype=x.dtype, device=x.device).clamp_min(1.0)
    return hist / divisor / 255.0


def histogram_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L1(hist(pred), hist(target))``, mean over ``[N, C, 256]`` (:func:`soft_histogram`)."""
    return F.l1_loss(soft_histogram(pred), soft_histogram(target))


def intermediate_loss(glob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_int = L1(G, I) + 0.01 L1(hist(G), hist(I))`` (images in ``[-1, 1]``, any leading dims)."""
    return F.l1_loss(glob, target) + KIM_HIST_WEIGHT * histogram_l1(glob, target)


def _relative_cx(dist: torch.Tensor, band_width: float) -> torch.Tensor:
    """Contextual similarity: ``d / (min_j d + 1e-5)``, ``exp((1 - d~) / h)``, normalised over ``j``."""
    rel = dist / (dist.min(dim=2, keepdim=True).values + 1e-5)
    w = torch.exp((1.0 - rel) / band_width)
    return w / w.sum(dim=2, keepdim=True)


def contextual_bilateral(x: torch.Tensor, y: torch.Tensor, *, weight_sp: float = 0.5,
                         band_width: float = 0.5) -> torch.Tensor:
    """CoBi (Zhang et al. 2019) of feature maps ``x, y [N, C, h, w]`` (official ``contextual_bilateral_loss``).

    Feature distance: cosine distance after centring both by the mean of ``y`` over (N, h, w);
    spatial distance: squared L2 of grid coordinates ``(row / (h + 1), col / (w + 1))``. Each becomes
    a CX matrix (:func:`_relative_cx`); ``CX = (1 - w_sp) CX_feat + w_sp CX_sp``;
    loss ``mean_N -ln(mean_i max_j CX_ij + 1e-5)``.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device) / (h + 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device) / (w + 1)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).reshape(2, -1)
    dist_sp = (grid.unsqueeze(2) - grid.unsqueeze(1)).pow(2).sum(0).clamp_min(0.0).expand(n, -1, -1)
    mu = y.mean(dim=(0, 2, 3), keepdim=True)
    xn = F.normalize(x - mu, dim=1).reshape(n, c, -1)
    yn = F.normalize(y - mu, dim=1).reshape(n, c, -1)
    dist_feat = 1.0 - torch.bmm(xn.transpose(1, 2), yn)
    cx = (1.0 - weight_sp) * _relative_cx(dist_feat, band_width) + weight_sp * _relative_cx(dist_sp, band_width)
    return torch.mean(-torch.log(cx.max(dim=2).values.mean(dim=1) + 1e-5))


class ContextualBilateralLoss(nn.Module):
    """``CoBi_relu3_4 + CoBi_relu4_4`` of VGG19 features of ImageNet-normalised ``[0, 1]`` images.

    Official: two ``ContextualBilateralLoss`` objects (``relu3_4``, ``relu4_4``) called with the
    band width passed where the spatial weight goes, so the effective ``w_sp = 0.5`` (class default
    0.1) and ``h = 0.5``.

    Args:
        features: a torchvision ``vgg19.features`` trunk (frozen here).
        layers: relu names (official ``relu3_4``, ``relu4_4``).
        weight_sp: spatial weight (effective official 0.5).
        band_width: ``h`` (0.5).
    """

    def __init__(self, features: nn.Sequential, *, layers: tuple[str, ...] = ("relu3_4", "relu4_4"),
                 weight_sp: float = 0.5, band_width: float = 0.5) -> None:
        super().__init__()
        names = vgg_relu_names(features)
        missing = [name for name in layers if name not in names]
        if missing:
            raise ConfigError(f"ContextualBilateralLoss layers {missing} are not in the trunk; use e.g. relu3_4, relu4_4")
        self.indices = [names[name] for name in layers]
        self.trunk = features[: max(self.indices) + 1].requires_grad_(False).eval()
        self.weight_sp, self.band_width = float(weight_sp), float(band_width)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, feats = (x - self.mean) / self.std, []
        for i, layer in enumerate(self.trunk):
            out = layer(out)
            if i in self.indices:
                feats.append(out)
        return feats

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum over the layers of :func:`contextual_bilateral`; ``pred, target [B, 3, H, W]`` in ``[0, 1]``."""
        return sum(contextual_bilateral(a, b, weight_sp=self.weight_sp, band_width=self.band_width)
                   for a, b in zip(self._features(pred), self._features(target)))


def exposure_loss(refined: torch.Tensor, target: torch.Tensor, cobi: ContextualBilateralLoss | None) -> torch.Tensor:
    """``L_exp = L1(R, I) + 0.1 CoBi((R+1)/2, (I+1)/2)`` for ``[B, 3, H, W]`` in ``[-1, 1]`` (no CoBi when ``None``)."""
    loss = F.l1_loss(refined, target)
    if cobi is not None:
        loss = loss + KIM_COBI_WEIGHT * cobi((refined + 1.0) / 2.0, (target + 1.0) / 2.0)
    return loss


def hdr_loss(pred: torch.Tensor, target: torch.Tensor, *, mu: float = KIM_MU) -> torch.Tensor:
    """``L_HDR = L1(mu(H_pred), mu(H_gt))``, mean over all elements (radiance ``>= 0``)."""
    return F.l1_loss(mu_law(pred.clamp_min(0.0), mu), mu_law(target.clamp_min(0.0), mu))


__all__ = [
    "ContextualBilateralLoss", "contextual_bilateral", "exposure_loss", "hdr_loss", "histogram_l1",
    "intermediate_loss", "mu_law", "soft_histogram", "KIM_COBI_WEIGHT", "KIM_HIST_WEIGHT", "KIM_MU",
]
