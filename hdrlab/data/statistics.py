"""Image statistics of linear HDR radiance maps.

Small pure functions used to check that procedural scenes (:mod:`hdrlab.data.procedural`)
look like real HDR photographs, and to describe data sets in benchmarks and notes.

Every function takes a linear, scene-referred, non-negative image ``[3, H, W]`` or a batch
``[B, 3, H, W]`` (float) and returns a tensor of shape ``[]`` or ``[B]`` respectively.
Luminance is Rec.709 (``0.2126 R + 0.7152 G + 0.0722 B``, :func:`hdrlab.camera.luminance`).
"""

from __future__ import annotations

import math

import kornia
import torch
from torch import Tensor

from hdrlab.camera import luminance
from hdrlab.errors import ConfigError

__all__ = [
    "log_luminance",
    "dynamic_range_stops",
    "clipped_fraction",
    "radial_power_spectrum",
    "power_spectrum_slope",
    "gradient_kurtosis",
]

def _as_batch(hdr: Tensor) -> tuple[Tensor, bool]:
    """Return ``hdr`` as ``[B, 3, H, W]`` float and whether the input was unbatched."""
    if hdr.dim() == 3:
        hdr, single = hdr[None], True
    elif hdr.dim() == 4:
        single = False
    else:
        raise ConfigError(f"expected an image [3, H, W] or a batch [B, 3, H, W], got shape {tuple(hdr.shape)}")
    if hdr.shape[1] != 3:
        raise ConfigError(f"expected 3 colour channels in dim -3, got shape {tuple(hdr.shape)}")
    return hdr.float(), single


def _unbatch(values: Tensor, single: bool) -> Tensor:
    return values[0] if single else values


def log_luminance(hdr: Tensor, *, floor_rel: float = 1e-4) -> Tensor:
    """Natural log of luminance with a relative floor: ``ln(Y + floor_rel * median(Y))``.

    The floor (relative, so the result is invariant to exposure up to an additive constant)
    keeps exact zeros and tiny negative noise of real files from producing ``-inf``.

    Args:
        hdr: linear RGB ``[3, H, W]`` or ``[B, 3, H, W]``.
        floor_rel: floor as a fraction of the per-image median luminance.

    Returns:
        ``[1, H, W]`` or ``[B, 1, H, W]`` log luminance.
    """
    batch, single = _as_batch(hdr)
    y = luminance(batch).clamp_min(0.0)
    med = y.flatten(1).median(dim=1).values.clamp_min(torch.finfo(torch.float32).tiny)
    floor = (floor_rel * med).view(-1, 1, 1, 1)
    return _unbatch(torch.log(y + floor), single)


def dynamic_range_stops(hdr: Tensor, *, low: float = 0.001, high: float = 0.999) -> Tensor:
    """Dynamic range in stops: ``log2(Q_high(Y) / Q_low(Y))`` of the luminance ``Y``.

    With the defaults this is ``log2(p99.9 / p0.1)``, the robust dynamic range used in the
    project notes (it ignores the 0.1 % most extreme pixels at each end). When the low
    percentile is not positive the result is ``+inf``.

    Args:
        hdr: linear RGB ``[3, H, W]`` or ``[B, 3, H, W]``.
        low: lower quantile in ``[0, 1)``.
        high: upper quantile in ``(low, 1]``.

    Returns:
        Stops, shape ``[]`` or ``[B]``.
    """
    if not 0.0 <= low < high <= 1.0:
        raise ConfigError(f"quantiles must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
    batch, single = _as_batch(hdr)
    y = luminance(batch).flatten(1)
    q = torch.quantile(y, torch.tensor([low, high], dtype=y.dtype, device=y.device), dim=1)
    lo, hi = q[0], q[1]
    stops = torch.where(lo > 0, torch.log2(hi / lo.clamp_min(torch.finfo(y.dtype).tiny)), torch.full_like(lo, math.inf))
    return _unbatch(stops, single)


def clipped_fraction(hdr: Tensor, ev: float | Tensor, *, threshold: float = 1.0) -> Tensor:
    """Fraction of pixels a camera clips at exposure ``ev``: ``mean(max_c(hdr * 2**ev) >= threshold)``.

    Args:
        hdr: linear RGB ``[3, H, W]`` or ``[B, 3, H, W]``.
        ev: exposure in stops (scalar, or ``[B]`` for a batch); ``2**ev`` multiplies the radiance.
        threshold: linear value at which the sensor saturates (1.0 by the radiance-scale convention).

    Returns:
        Fraction in ``[0, 1]``, shape ``[]`` or ``[B]``.
    """
    batch, single = _as_batch(hdr)
    ev_t = torch.as_tensor(ev, dtype=batch.dtype, device=batch.device).reshape(-1, 1, 1)
    peak = batch.amax(dim=1) * torch.exp2(ev_t)
    frac = (peak >= threshold).flatten(1).float().mean(dim=1)
    return _unbatch(frac, single)


def radial_power_spectrum(
    hdr: Tensor, *, band: tuple[float, float] = (1 / 64, 1 / 4), bins: int = 16, floor_rel: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """Radially averaged power spectrum of the (Hann-windowed, zero-mean) log luminance.

    Frequencies are in cycles per pixel; ``bins`` log-spaced rings cover ``band``.

    Args:
        hdr: linear RGB ``[3, H, W]`` or ``[B, 3, H, W]``.
        band: ``(f_low, f_high)`` radial frequency band in cycles/pixel, ``0 < f_low < f_high <= 0.5``.
        bins: number of log-spaced rings.
        floor_rel: see :func:`log_luminance`.

    Returns:
        ``(freq [bins], power [bins])`` or ``(freq [bins], power [B, bins])``: ring-centre
        frequencies (geometric mean of the ring's pixels) and mean power in each ring.
    """
    f_lo, f_hi = band
    if not 0.0 < f_lo < f_hi <= 0.5:
        raise ConfigError(f"band must satisfy 0 < f_low < f_high <= 0.5 cycles/pixel, got {band}")
    batch, single = _as_batch(hdr)
    logy = log_luminance(batch, floor_rel=floor_rel)[:, 0]
    b, h, w = logy.shape
    logy = logy - logy.mean(dim=(1, 2), keepdim=True)
    window = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False)).to(logy)
    power = torch.fft.fft2(logy * window).abs().square().flatten(1)
    fy = torch.fft.fftfreq(h, device=logy.device)
    fx = torch.fft.fftfreq(w, device=logy.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).flatten()
    edges = torch.logspace(math.log10(f_lo), math.log10(f_hi), bins + 1, device=logy.device)
    ring = torch.bucketize(radius, edges, right=True) - 1
    keep = (ring >= 0) & (ring < bins)
    ring, radius, power = ring[keep], radius[keep], power[:, keep]
    count = torch.bincount(ring, minlength=bins).to(power.dtype)
    if bool((count == 0).any()):
        raise ConfigError(f"image {h}x{w} is too small for {bins} rings in band {band}; use fewer bins or a larger image")
    freq = torch.exp(torch.zeros(bins, dtype=power.dtype, device=power.device).index_add_(0, ring, radius.log()) / count)
    ring_power = torch.zeros(b, bins, dtype=power.dtype, device=power.device).index_add_(1, ring, power) / count
    return freq, _unbatch(ring_power, single)


def power_spectrum_slope(
    hdr: Tensor, *, band: tuple[float, float] = (1 / 64, 1 / 4), bins: int = 16, floor_rel: float = 1e-4
) -> Tensor:
    """Spectral slope ``alpha`` of log luminance: least-squares fit of ``log P(f) = c + alpha log f``.

    ``P(f)`` is the radially averaged power spectrum (:func:`radial_power_spectrum`) of the
    Hann-windowed log luminance; the fit uses ``bins`` log-spaced rings over the mid-frequency
    ``band`` (default 1/64 to 1/4 cycles/pixel, i.e. 4 to 64 cycles on a 256-pixel image).
    Natural images give ``alpha`` near -2 (amplitude ~ 1/f; van der Schaaf & van Hateren 1996).

    Args:
        hdr: linear RGB ``[3, H, W]`` or ``[B, 3, H, W]``.
        band: fit band in cycles/pixel.
        bins: number of log-spaced rings.
        floor_rel: see :func:`log_luminance`.

    Returns:
        Slope (dimensionless, negative for natural images), shape ``[]`` or ``[B]``.
    """
    freq, power = radial_power_spectrum(hdr, band=band, bins=bins, floor_rel=floor_rel)
    batched = power.dim() == 2
    power = power if batched else power[None]
    x = freq.log()
    y = power.clamp_min(torch.finfo(power.dtype).tiny).log()
    xc = x - x.mean()
    slope = ((y - y.mean(dim=1, keepdim=True)) * xc).sum(dim=1) / xc.square().sum()
    return slope if batched else slope[0]


def gradient_kurtosis(hdr: Tensor, *, floor_rel: float = 1e-4) -> Tensor:
    """Kurtosis of the gradient magnitude of log luminance: ``E[(g - mu)^4] / Var(g)^2``.

    ``g = |grad ln Y|`` from kornia's normalised 3x3 Sobel filter (``spatial_gradient``);
    the one-pixel border is excluded. Pearson (not excess) kurtosis: 3 for a Gaussian
    variable, much larger for natural images (sparse, heavy-tailed edges).

    Args:
        hdr: linear RGB ``[3, H, W]`` or ``[B, 3, H, W]``.
        floor_rel: see :func:`log_luminance`.

    Returns:
        Kurtosis, shape ``[]`` or ``[B]``.
    """
    batch, single = _as_batch(hdr)
    logy = log_luminance(batch, floor_rel=floor_rel)
    grad = kornia.filters.spatial_gradient(logy, mode="sobel", order=1, normalized=True)[:, 0]
    mag = grad.square().sum(dim=1).sqrt()[:, 1:-1, 1:-1].flatten(1)
    centred = mag - mag.mean(dim=1, keepdim=True)
    var = centred.square().mean(dim=1)
    kurt = centred.pow(4).mean(dim=1) / var.square().clamp_min(torch.finfo(var.dtype).tiny)
    return _unbatch(kurt, single)
