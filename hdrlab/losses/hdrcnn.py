"""Training objectives of HDRCNN (Eilertsen et al., SIGGRAPH Asia 2017), as in the official
``training_code/hdrcnn_train.py`` (gabrieleilertsen/hdrcnn).

``y_hat`` ``[B, 3, H, W]`` is the network's log-domain output, ``y`` ``[B, 3, H, W]`` the linear HDR
target with the LDR clipping point at 1.0 (hdrlab's ``batch["hdr"]``), ``eps = 1/255``. Both
losses are driven only near and inside saturated regions, through a mask from the target::

    m = clip((max_c y - 0.95) / 0.05, 0, 1)                       [B, 1, H, W], broadcast over RGB

Direct loss (``sep_loss=false``)::

    L_direct = mean_{b,c,h,w} [ (y_hat - log(y + eps)) m ]^2

Illuminance / reflectance loss (default ``sep_loss=true``, ``lambda_ir = 0.5``)::

    Lum(v)  = 0.213 v_R + 0.715 v_G + 0.072 v_B
    I_gt    = G * log(Lum(y) + eps)                I_pred = G * log(Lum(exp(y_hat) - eps) + eps)
    R_gt    = log(y + eps) - I_gt                  R_pred = y_hat - I_pred         (per channel)
    L_ir    = mean_{b,c,h,w} [ lambda (I_pred - I_gt)^2 + (1 - lambda) (R_pred - R_gt)^2 ] m

``G *`` is a 13x13 Gaussian blur with zero 'SAME' padding (6 px per side). Its kernel: the
standard-normal CDF differences over 14 equally spaced edges spanning +-(2 + 5/26) (i.e. 13 bins of
width 5/13 covering +-2.5 "sigma" units), the square root of their outer product, normalised to sum
1; its effective 1-D std is about 3.19 px. The I term is broadcast over the three channels, so
``L_ir = lambda mean(dI^2 m) + (1 - lambda) mean(dR^2 m)``; the two parts are returned as terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hdrlab.errors import ConfigError

__all__ = [
    "HDRCNN_LAMBDA",
    "LOSS_EPS",
    "LUMINANCE_WEIGHTS",
    "MASK_THRESHOLD",
    "hdrcnn_direct_loss",
    "hdrcnn_gaussian_kernel",
    "hdrcnn_ir_loss",
    "highlight_mask",
]

#: official ``lambda_ir``: weight of the illuminance term
HDRCNN_LAMBDA = 0.5
#: epsilon of the log domain (official ``eps = 1/255``)
LOSS_EPS = 1.0 / 255.0
#: official luminance weights (R, G, B)
LUMINANCE_WEIGHTS = (0.213, 0.715, 0.072)
#: official threshold of the target mask (``thr = 0.05`` -> 1 - 0.05)
MASK_THRESHOLD = 0.95
#: official Gaussian: 13 taps, edges at +-(nsig + interval / 2) with nsig = 2
GAUSSIAN_SIZE = 13
GAUSSIAN_NSIG = 2.0


def highlight_mask(hdr: torch.Tensor, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """``clip((max_c y - threshold) / (1 - threshold), 0, 1)`` ``[B, 1, H, W]`` of ``hdr`` ``[B, 3, H, W]``."""
    return ((hdr.amax(dim=1, keepdim=True) - threshold) / (1.0 - threshold)).clamp(0.0, 1.0)


def hdrcnn_gaussian_kernel(size: int = GAUSSIAN_SIZE, nsig: float = GAUSSIAN_NSIG) -> torch.Tensor:
    """The official illuminance kernel ``[size, size]`` (float64, sums to 1; module docstring)."""
    interval = (2 * nsig + 1.0) / size
    edges = torch.linspace(-nsig - interval / 2, nsig + interval / 2, size + 1, dtype=torch.float64)
    bins = torch.special.ndtr(edges).diff()
    raw = torch.outer(bins, bins).sqrt()
    return raw / raw.sum()


def _log_luminance(linear: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=linear.dtype, device=linear.device).view(1, 3, 1, 1)
    return torch.log((linear * weights).sum(dim=1, keepdim=True) + LOSS_EPS)


def _illuminance(log_lum: torch.Tensor) -> torch.Tensor:
    kernel = hdrcnn_gaussian_kernel().to(dtype=log_lum.dtype, device=log_lum.device)
    return F.conv2d(log_lum, kernel[None, None], padding=GAUSSIAN_SIZE // 2)


def hdrcnn_direct_loss(
    log_pred: torch.Tensor, hdr: torch.Tensor, *, threshold: float = MASK_THRESHOLD
) -> dict[str, torch.Tensor]:
    """Official direct loss ``mean([(y_hat - log(y + eps)) m]^2)`` (module docstring).

    Args:
        log_pred: ``y_hat`` ``[B, 3, H, W]`` (log domain).
        hdr: ``y`` ``[B, 3, H, W]`` linear HDR, clipping point 1.0.
        threshold: where the mask ``m`` starts rising (official 0.95).

    Returns:
        ``{"total", "log_l2"}`` (equal scalars).
    """
    mask = highlight_mask(hdr, threshold)
    loss = ((log_pred - torch.log(hdr + LOSS_EPS)) * mask).square().mean()
    return {"total": loss, "log_l2": loss}


def hdrcnn_ir_loss(
    log_pred: torch.Tensor, hdr: torch.Tensor, *, loss_lambda: float = HDRCNN_LAMBDA,
    threshold: float = MASK_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """Official illuminance/reflectance loss (module docstring).

    Args:
        log_pred: ``y_hat`` ``[B, 3, H, W]`` (log domain).
        hdr: ``y`` ``[B, 3, H, W]`` linear HDR, clipping point 1.0.
        loss_lambda: weight of the illuminance term in [0, 1] (official 0.5).
        threshold: where the mask ``m`` starts rising (official 0.95).

    Returns:
        ``{"total", "illuminance", "reflectance"}``: scalars, the terms already weighted
        (``lambda`` and ``1 - lambda``) and summing to ``total``.
    """
    if not 0.0 <= loss_lambda <= 1.0:
        raise ConfigError(f"HDRCNN loss_lambda={loss_lambda} must be in [0, 1] (official 0.5)")
    mask = highlight_mask(hdr, threshold)
    ill_gt = _illuminance(_log_luminance(hdr))
    ill_pred = _illuminance(_log_luminance(torch.exp(log_pred) - LOSS_EPS))
    refl_gt = torch.log(hdr + LOSS_EPS) - ill_gt
    refl_pred = log_pred - ill_pred
    illuminance = loss_lambda * ((ill_pred - ill_gt).square() * mask).mean()
    reflectance = (1.0 - loss_lambda) * ((refl_pred - refl_gt).square() * mask).mean()
    return {"total": illuminance + reflectance, "illuminance": illuminance, "reflectance": reflectance}
