"""Global scale alignment of a predicted HDR image to its reference.

Single-image HDR reconstruction recovers radiance only up to an unknown exposure (scale), so
HDR metrics first fit one scale per image (Eilertsen et al. 2021, "How to cheat with metrics in
single-image HDR reconstruction", ICCVW; Hanji et al. 2022, "Comparison of single image HDR
reconstruction methods — the caveats of quality assessment", SIGGRAPH). The scale is fitted on
pixels that were *not clipped in the input* and are positive in both images:

- ``"median"``: ``s = median(g / p)`` over the valid channel values (robust; the lower median
  of an even count, as ``torch.median``);
- ``"lsq_log"``: ``s = exp(mean(log g - log p))`` (least squares in the log domain);
- ``"none"``: ``s = 1``.

Unverified: whether the papers fit per channel or on luminance, and on which pixel set exactly;
here one scale per image over all valid channel values.
"""

from __future__ import annotations

import torch

from hdrlab.errors import ConfigError

__all__ = ["ALIGN_MODES", "align_scale", "estimate_scale"]

ALIGN_MODES: tuple[str, ...] = ("none", "median", "lsq_log")


def estimate_scale(
    pred: torch.Tensor, gt: torch.Tensor, *, mode: str = "median", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-image scale ``s`` such that ``s * pred`` best matches ``gt``.

    Args:
        pred: predicted linear HDR ``[B, 3, H, W]`` (or ``[3, H, W]``).
        gt: reference linear HDR, same shape.
        mode: ``"none"``, ``"median"`` or ``"lsq_log"`` (see the module docstring).
        mask: optional bool/0-1 mask ``[B, 1, H, W]`` (broadcast over channels) of pixels to fit
            on, typically the input's *unclipped* pixels. Values ``<= 0`` are always excluded.

    Returns:
        Scales ``[B]`` (a 0-dim tensor for unbatched input); 1 where no pixel is valid.
    """
    if mode not in ALIGN_MODES:
        raise ConfigError(f"unknown alignment mode {mode!r}; choose one of {list(ALIGN_MODES)}")
    unbatched = pred.dim() == 3
    p, g = (pred.unsqueeze(0), gt.unsqueeze(0)) if unbatched else (pred, gt)
    if p.shape != g.shape:
        raise ConfigError(f"prediction {tuple(pred.shape)} and reference {tuple(gt.shape)} differ in shape")
    scales = torch.ones(p.shape[0], dtype=p.dtype, device=p.device)
    if mode != "none":
        valid = (p > 0) & (g > 0)
        if mask is not None:
            m = mask.unsqueeze(0) if mask.dim() == 3 else mask
            valid = valid & (m > 0.5)
        for i in range(p.shape[0]):
            v = valid[i]
            if not bool(v.any()):
                continue
            pi, gi = p[i][v], g[i][v]
            if mode == "median":
                scales[i] = torch.median(gi / pi)
            else:
                scales[i] = torch.exp((torch.log(gi) - torch.log(pi)).mean())
    return scales[0] if unbatched else scales


def align_scale(
    pred: torch.Tensor, gt: torch.Tensor, *, mode: str = "median", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Return ``pred`` multiplied by its per-image :func:`estimate_scale`.

    Args:
        pred: predicted linear HDR ``[B, 3, H, W]`` (or ``[3, H, W]``).
        gt: reference linear HDR, same shape.
        mode: ``"none"``, ``"median"`` or ``"lsq_log"``.
        mask: optional ``[B, 1, H, W]`` mask of pixels used for the fit (unclipped in the input).

    Returns:
        The aligned prediction, same shape as ``pred``.
    """
    s = estimate_scale(pred, gt, mode=mode, mask=mask)
    return pred * (s.view(-1, 1, 1, 1) if pred.dim() == 4 else s)
