"""Look-up tables (LUTs) of 1-D curves on ``[0, 1]``: apply, invert, make monotone, resample.

A curve is stored as ``K`` samples on the uniform grid ``linspace(0, 1, K)`` (``K = LUT_SIZE = 1024``
everywhere in hdrlab, as in EMoR and DoRF) and evaluated by piecewise-linear interpolation
at index ``x * (K - 1)`` -- the operator SingleHDR uses to apply CRFs (Liu et al., CVPR 2020,
training code: linear interpolation at ``v * 1023``).
"""

from __future__ import annotations

import torch

from hdrlab.errors import ConfigError

#: number of samples of every CRF look-up table in hdrlab (EMoR/DoRF resolution)
LUT_SIZE = 1024


def _check_lut(lut: torch.Tensor, name: str = "lut") -> None:
    if lut.dim() not in (2, 3) or lut.shape[-1] < 2:
        raise ConfigError(f"{name} must be [C, K] or [B, C, K] with K >= 2, got shape {tuple(lut.shape)}")


def lut_apply(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Evaluate a sampled curve at ``x`` by piecewise-linear interpolation.

    ``y = lerp(lut[i], lut[i + 1], p - i)`` with ``p = clamp(x, 0, 1) * (K - 1)``, ``i = floor(p)``.

    Args:
        x: values in ``[0, 1]`` (clamped), ``[B, C, H, W]`` or ``[C, H, W]``.
        lut: curve samples on ``linspace(0, 1, K)``, ``[C', K]`` (shared over the batch) or
            ``[B, C', K]`` (one curve per image) with ``C'`` in ``{1, C}``.

    Returns:
        ``lut(x)`` with the shape, dtype and device of ``x``. Differentiable w.r.t. ``x``
        (slope of the segment; zero outside ``[0, 1]``) and ``lut``.
    """
    _check_lut(lut)
    unbatched = x.dim() == 3
    if unbatched:
        if lut.dim() == 3:
            raise ConfigError(f"lut_apply: an unbatched x [C,H,W] needs lut [C',K], got {tuple(lut.shape)}")
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ConfigError(f"lut_apply: x must be [B,C,H,W] or [C,H,W], got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    lut = lut.to(dtype=x.dtype, device=x.device)
    if lut.dim() == 2:
        lut = lut.unsqueeze(0)
    if lut.shape[1] not in (1, c) or lut.shape[0] not in (1, b):
        raise ConfigError(
            f"lut_apply: lut {tuple(lut.shape)} does not fit x {tuple(x.shape)} (need [1|B, 1|C, K])"
        )
    k = lut.shape[-1]
    lut = lut.expand(b, c, k)
    pos = x.clamp(0.0, 1.0).reshape(b, c, h * w) * (k - 1)
    idx = pos.detach().floor().clamp(0, k - 2).long()
    frac = pos - idx.to(pos.dtype)
    y0 = torch.gather(lut, 2, idx)
    y1 = torch.gather(lut, 2, idx + 1)
    y = torch.lerp(y0, y1, frac).reshape(b, c, h, w)
    return y[0] if unbatched else y


def curve_apply(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Evaluate curves ``[..., K]`` at points ``x [..., M]`` (same leading dims); piecewise linear.

    Args:
        x: query points in ``[0, 1]`` (clamped), ``[..., M]``.
        curve: samples on ``linspace(0, 1, K)``, ``[..., K]``; leading dims broadcast with ``x``.

    Returns:
        ``[..., M]`` interpolated values.
    """
    k = curve.shape[-1]
    lead = torch.broadcast_shapes(x.shape[:-1], curve.shape[:-1])
    x = x.expand(*lead, x.shape[-1])
    curve = curve.to(dtype=x.dtype, device=x.device).expand(*lead, k)
    pos = x.clamp(0.0, 1.0) * (k - 1)
    idx = pos.detach().floor().clamp(0, k - 2).long()
    frac = pos - idx.to(pos.dtype)
    return torch.lerp(torch.gather(curve, -1, idx), torch.gather(curve, -1, idx + 1), frac)


def resample_curve(curve: torch.Tensor, size: int = LUT_SIZE) -> torch.Tensor:
    """Resample curves ``[..., K]`` on ``linspace(0, 1, K)`` to ``[..., size]`` (piecewise linear)."""
    if curve.shape[-1] == size:
        return curve
    grid = torch.linspace(0.0, 1.0, size, dtype=curve.dtype, device=curve.device)
    return curve_apply(grid.expand(*curve.shape[:-1], size), curve)


def invert_monotone_curve(curve: torch.Tensor, size: int = LUT_SIZE) -> torch.Tensor:
    """Inverse LUT of monotone non-decreasing curves on ``[0, 1]``.

    For each ``y`` in ``linspace(0, 1, size)`` returns the smallest ``x`` with ``curve(x) = y``
    (piecewise-linear curve), clamped to ``[0, 1]``; flat segments map to their left end, values
    outside the curve's range map to the nearest end. A running maximum guards against tiny
    non-monotone wiggles.

    Args:
        curve: ``[..., K]`` samples on ``linspace(0, 1, K)``, non-decreasing, values in ``[0, 1]``.
        size: number of samples of the inverse.

    Returns:
        ``[..., size]`` samples of ``curve^{-1}`` on ``linspace(0, 1, size)``.
    """
    if curve.shape[-1] < 2:
        raise ConfigError(f"invert_monotone_curve needs at least 2 samples, got shape {tuple(curve.shape)}")
    k = curve.shape[-1]
    mono = torch.cummax(curve, dim=-1).values
    lead = mono.shape[:-1]
    y = torch.linspace(0.0, 1.0, size, dtype=curve.dtype, device=curve.device).expand(*lead, size).contiguous()
    idx = torch.searchsorted(mono.detach().contiguous(), y, right=False).clamp(1, k - 1)
    y0 = torch.gather(mono, -1, idx - 1)
    y1 = torch.gather(mono, -1, idx)
    step = y1 - y0
    safe = torch.where(step > 0, step, torch.ones_like(step))
    t = torch.where(step > 0, (y - y0) / safe, torch.zeros_like(step)).clamp(0.0, 1.0)
    return ((idx - 1).to(curve.dtype) + t) / (k - 1)


def make_monotone(curve: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """SingleHDR's monotonic fix of a predicted curve (Liu et al., CVPR 2020, Linearization-Net).

    As in the official code (alex04072000/SingleHDR ``linearization_net.py``): take the first
    differences ``d`` of the curve; if ``min(d) < 0`` add ``-min(d)`` to every difference (here
    branch-free: ``d - clamp(min(d), max=0)``); normalise the differences to sum 1; the cumulative
    sum with 0 prepended is the result. Note that the shift is applied to *all* differences,
    not only the negative ones, exactly as the official code does.

    Args:
        curve: ``[..., K]`` samples on ``linspace(0, 1, K)`` (any values).
        eps: floor of the difference sum (a constant curve becomes all zeros instead of NaN).

    Returns:
        ``[..., K]`` non-decreasing curve with ``f(0) = 0`` and ``f(1) = 1``; differentiable.
    """
    d = curve[..., 1:] - curve[..., :-1]
    d = d - d.amin(dim=-1, keepdim=True).clamp(max=0.0)
    d = d / d.sum(dim=-1, keepdim=True).clamp_min(eps)
    return torch.cat([torch.zeros_like(curve[..., :1]), torch.cumsum(d, dim=-1)], dim=-1)
