"""Mertens, Kautz & Van Reeth (Pacific Graphics 2007 / CGF 2009): exposure fusion.

Each exposure ``k`` gets a per-pixel quality weight (paper Eq. 1)

    W_k = C_k^wc * S_k^ws * E_k^we

with contrast ``C`` = |Laplacian| of the grey image, saturation ``S`` = deviation of the channels
from their mean, and well-exposedness ``E = prod_c exp(-(I_c - 0.5)^2 / (2 sigma^2))``, sigma = 0.2.
Weights are normalised over the exposures (Eq. 2) and the images are blended per level of a
Laplacian pyramid with the Gaussian pyramid of the weights (Eq. 3), then the pyramid is collapsed.

The operators reproduce OpenCV's ``MergeMertens`` (``modules/photo/src/merge.cpp``) exactly: grey with
0.299/0.587/0.114, Laplacian aperture ``[0 1 0; 1 -4 1; 0 1 0]`` with BORDER_REFLECT_101,
saturation ``sqrt(sum_c (I_c - mean)^2)`` (no division by 3), weights ``+ 1e-12`` before the
normalisation, ``floor(ln(min(H, W)) / ln 2) + 1`` pyramid levels, and OpenCV's ``pyrDown`` /
``pyrUp`` border and odd-size rules. kornia's ``pyrdown``/``pyrup`` resample bilinearly and floor
odd sizes, so the pyramid operators here are written as depthwise 5x5 binomial convolutions
instead (strided for ``pyrDown``, transposed for ``pyrUp``) on channels-last plane stacks, one call
per level for all exposures and channels. All
functions are differentiable torch on ``[B, C, H, W]`` tensors.

Agreement with OpenCV: 7.2e-7 max abs difference on every pixel of a 1024x768 3-exposure bracket
(``benchmarks/bench_mergers.py``) when the input is OpenCV's own float conversion of the 8-bit codes,
``codes * float32(1/255)``. The grey image and its Laplacian are rounded exactly as OpenCV's float32
code rounds them (:func:`opencv_grey`, :func:`contrast_measure`): at *degenerate* pixels, where every
other factor of the weight is at the ``1e-12`` floor (flat, clipped areas), the contrast is rounding
noise and alone decides the normalised weights, so one float32 step of difference there (e.g. an
input made as ``codes / 255``, one step away from ``codes * float32(1/255)`` for ~31 % of the codes)
changes the fused value by up to ~5e-3.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from hdrlab.errors import ConfigError
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

#: OpenCV's additive constant of every weight before normalisation
WEIGHT_EPS = 1e-12
LOG2_E = 1.4426950408889634
#: the binomial 5-tap kernel of OpenCV's pyramids (x 1/16 down, x 1/8 per phase up)
_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def reflect101_index(length: int, pad_before: int, pad_after: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Source indices of a BORDER_REFLECT_101-padded axis (``dcb|abcd|cba``), repeated reflection.

    Matches OpenCV's ``borderInterpolate`` for every length, including lengths shorter than the
    padding (length 1 replicates).

    Returns:
        ``[pad_before + length + pad_after]`` long tensor of indices into ``0..length-1``.
    """
    idx = torch.arange(-pad_before, length + pad_after, device=device)
    if length == 1:
        return torch.zeros_like(idx)
    period = 2 * (length - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= length, period - idx, idx)


def _binomial_kernel(channels: int, scale: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Depthwise ``[channels, 1, 5, 5]`` kernel ``outer(b, b) * scale`` with ``b = [1 4 6 4 1]``."""
    taps = torch.tensor(_BINOMIAL_5, dtype=dtype, device=device)
    return (torch.outer(taps, taps) * scale).expand(channels, 1, 5, 5).contiguous()


def _as_planes(x: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` -> ``[1, prod(...), H, W]`` in channels-last memory (a view when possible).

    Channels-last (``H, W, C`` interleaved, OpenCV's layout) makes the depthwise convolutions of the
    pyramid vectorise over the planes: ~5-10x faster on CPU than one plane at a time.
    """
    planes = x.reshape(1, -1, *x.shape[-2:])
    return planes.contiguous(memory_format=torch.channels_last)


def _empty_like_planes(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Uninitialised ``[..., height, width]`` tensor like ``x`` (channels-last when ``x`` is a channels-last stack)."""
    fmt = (
        torch.channels_last
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    return torch.empty((*x.shape[:-2], height, width), dtype=x.dtype, device=x.device, memory_format=fmt)


def _reflect101_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """BORDER_REFLECT_101 padding of the last two axes of ``[N, C, H, W]`` by ``pad`` on every side."""
    h, w = x.shape[-2:]
    if h > pad and w > pad:
        if _needs_grad(x):
            return F.pad(x, (pad, pad, pad, pad), mode="reflect")
        # F.pad's reflect kernel is ~15x slower than a copy on channels-last plane stacks
        padded = _empty_like_planes(x, h + 2 * pad, w + 2 * pad)
        padded[..., pad : pad + h, pad : pad + w] = x
        return _reflect101_border(padded, pad)
    # tiny levels (side < pad + 1): repeated reflection as OpenCV's borderInterpolate
    rows = reflect101_index(h, pad, pad, device=x.device)
    cols = reflect101_index(w, pad, pad, device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _reflect101_border(padded: torch.Tensor, pad: int) -> torch.Tensor:
    """Fill the ``pad``-wide border of ``[N, C, H + 2 pad, W + 2 pad]`` in place by BORDER_REFLECT_101.

    The interior must hold the image (``H, W > pad``); rows are reflected first, then whole columns,
    so the corners are reflected in both axes. Returns ``padded``.
    """
    height, width = padded.shape[-2] - 2 * pad, padded.shape[-1] - 2 * pad
    for j in range(1, pad + 1):
        padded[..., pad - j, pad : pad + width] = padded[..., pad + j, pad : pad + width]
        padded[..., pad + height - 1 + j, pad : pad + width] = padded[..., pad + height - 1 - j, pad : pad + width]
    for j in range(1, pad + 1):
        padded[..., :, pad - j] = padded[..., :, pad + j]
        padded[..., :, pad + width - 1 + j] = padded[..., :, pad + width - 1 - j]
    return padded


def _pyr_down_padded(padded: torch.Tensor) -> torch.Tensor:
    """Strided depthwise 5x5 binomial blur of a reflect-101 padded (by 2) ``[N, C, H + 4, W + 4]``."""
    kernel = _binomial_kernel(padded.shape[1], 1.0 / 256.0, dtype=padded.dtype, device=padded.device)
    return F.conv2d(padded, kernel, stride=2, groups=padded.shape[1])


def _pyr_down_planes(x: torch.Tensor) -> torch.Tensor:
    """:func:`pyr_down` of ``[N, C, H, W]``: one depthwise strided 5x5 convolution for all planes."""
    return _pyr_down_padded(_reflect101_pad(x, 2))


def _pyr_up_source(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, h, w]`` padded by one sample for :func:`_pyr_up_planes`: ``s[-1] = s[1]`` (reflect-101),
    ``s[n] = s[n-1]`` (replicate)."""
    h, w = x.shape[-2:]
    if _needs_grad(x):
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        if h > 1:
            padded[..., 0, :] = padded[..., 2, :]  # reflect-101 on the low side (s[-1] = s[1])
        if w > 1:
            padded[..., :, 0] = padded[..., :, 2]
        return padded
    # a copy into a preallocated stack and the border rows/columns: ~4x faster than F.pad's kernel
    padded = _empty_like_planes(x, h + 2, w + 2)
    padded[..., 1 : h + 1, 1 : w + 1] = x
    padded[..., 0, 1 : w + 1] = padded[..., 2 if h > 1 else 1, 1 : w + 1]
    padded[..., h + 1, 1 : w + 1] = padded[..., h, 1 : w + 1]
    padded[..., :, 0] = padded[..., :, 2 if w > 1 else 1]
    padded[..., :, w + 1] = padded[..., :, w]
    return padded


def _pyr_up_planes(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`pyr_up` of ``[N, C, h, w]`` to ``[N, C, H, W]``: one depthwise transposed convolution.

    The input is padded by one sample (``s[-1] = s[1]`` reflect-101, ``s[n] = s[n-1]`` replicate);
    the stride-2 transposed convolution with ``outer(b, b) / 64`` then yields exactly the polyphase
    sums ``(s[i-1] + 6 s[i] + s[i+1]) / 8`` (even outputs) and ``(s[i] + s[i+1]) / 2`` (odd outputs)
    per axis, i.e. zero insertion followed by the ``[1 4 6 4 1] / 8`` filter.
    """
    h, w = x.shape[-2:]
    out_h, out_w = size
    for n, m in ((h, out_h), (w, out_w)):
        if not 2 * n - 1 <= m <= 2 * n:
            raise ConfigError(f"pyr_up: output length {m} must be 2n or 2n-1 for input length {n}")
    padded = _pyr_up_source(x)
    kernel = _binomial_kernel(x.shape[1], 1.0 / 64.0, dtype=x.dtype, device=x.device)
    return F.conv_transpose2d(
        padded, kernel, stride=2, padding=4, output_padding=(out_h - 2 * h + 1, out_w - 2 * w + 1), groups=x.shape[1]
    )


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """OpenCV ``pyrDown``: 5x5 binomial ``[1 4 6 4 1]/16`` blur (BORDER_REFLECT_101), keep even rows/cols.

    Args:
        x: ``[..., H, W]``.

    Returns:
        ``[..., ceil(H/2), ceil(W/2)]`` (channels-last strides when ``x`` has leading axes).
    """
    if x.dim() < 2:
        raise ConfigError(f"pyr_down needs [..., H, W], got shape {tuple(x.shape)}")
    out = _pyr_down_planes(_as_planes(x))
    return out.reshape(*x.shape[:-2], *out.shape[-2:])


def pyr_up(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """OpenCV ``pyrUp(src, dstsize)``: 2x upsampling with the ``[1 4 6 4 1]/8`` polyphase filter.

    Per axis: ``out[2i] = (s[i-1] + 6 s[i] + s[i+1]) / 8``, ``out[2i+1] = (s[i] + s[i+1]) / 2``, with
    ``s[-1] = s[1]`` (reflect-101) and ``s[n] = s[n-1]`` (replicate), cropped to ``size``.

    Args:
        x: ``[..., h, w]``.
        size: output ``(H, W)`` with ``H`` in ``{2h-1, 2h}`` and ``W`` in ``{2w-1, 2w}`` (default ``2h, 2w``).

    Returns:
        ``[..., H, W]``.
    """
    h, w = x.shape[-2:]
    out_size = (int(size[0]), int(size[1])) if size is not None else (2 * h, 2 * w)
    out = _pyr_up_planes(_as_planes(x), out_size)
    return out.reshape(*x.shape[:-2], *out.shape[-2:])


def pyramid_levels(height: int, width: int) -> int:
    """OpenCV's ``maxlevel = int(logf(min(H, W)) / logf(2))`` (float32 arithmetic, as in OpenCV).

    The pyramids have ``maxlevel + 1`` levels.
    """
    m = np.float32(min(height, width))
    return int(np.float32(np.log(m)) / np.float32(np.log(np.float32(2.0))))


def gaussian_pyramid(x: torch.Tensor, max_level: int) -> list[torch.Tensor]:
    """``[x, pyr_down(x), ...]``, ``max_level + 1`` tensors (OpenCV ``buildPyramid``)."""
    levels = [x]
    for _ in range(max_level):
        levels.append(pyr_down(levels[-1]))
    return levels


def laplacian_pyramid(x: torch.Tensor, max_level: int) -> list[torch.Tensor]:
    """Laplacian pyramid: ``G_l - pyr_up(G_{l+1})`` for ``l < max_level``, top level ``G_max_level``."""
    gauss = gaussian_pyramid(x, max_level)
    lap = [g - pyr_up(g_next, tuple(g.shape[-2:])) for g, g_next in zip(gauss[:-1], gauss[1:])]
    return lap + [gauss[-1]]


def collapse_laplacian_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid`: ``R_{l-1} = L_{l-1} + pyr_up(R_l)`` from the top."""
    out = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        out = level + pyr_up(out, tuple(level.shape[-2:]))
    return out


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not NaN) gradient at 0."""
    if not _needs_grad(x):
        return torch.sqrt(x)
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _safe_pow(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """``x ** exponent`` for ``x >= 0`` (``0 ** 0 = 1``), with finite gradients at 0."""
    if exponent == 0.0:
        return torch.ones_like(x)
    if exponent == 1.0:
        return x
    if not _needs_grad(x):
        return x**exponent
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)) ** exponent, torch.zeros_like(x))


def opencv_grey(images: torch.Tensor) -> torch.Tensor:
    """Grey ``0.299 R + 0.587 G + 0.114 B`` of ``[B, 3, H, W]`` -> ``[B, 1, H, W]``, rounded as OpenCV.

    OpenCV's float ``cvtColor(RGB2GRAY)`` evaluates ``fma(B, 0.114, fma(R, 0.299, G * 0.587))`` in
    float32 (coefficients rounded to float32). For float32 input the two fused multiply-adds are
    evaluated in float64 (the product of two float32 values is exact there) and rounded back, which
    reproduces OpenCV's grey bit for bit; other dtypes use the plain sum in their own precision.
    """
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    c_r, c_g, c_b = (float(np.float32(v)) for v in (0.299, 0.587, 0.114))
    if images.dtype != torch.float32:
        return green * c_g + red * c_r + blue * c_b
    acc = (green * c_g).double()
    acc = torch.add(acc, red.double(), alpha=c_r).float().double()
    return torch.add(acc, blue.double(), alpha=c_b).float()


def contrast_measure(images: torch.Tensor) -> torch.Tensor:
    """Mertens contrast ``C = |Laplacian(grey)|`` (OpenCV: RGB2GRAY weights, 3x3 aperture, reflect-101).

    The grey is :func:`opencv_grey`; the aperture ``[0 1 0; 1 -4 1; 0 1 0]`` is applied as shifted
    sums in OpenCV ``filter2D``'s order (up, left, ``-4`` centre, right, down), so for float32 input
    ``C`` equals OpenCV's bit for bit. That matters where every other factor of the weight is at the
    ``1e-12`` floor: a ``1e-7`` rounding residue of ``C`` in a flat region then decides the normalised
    weights (a grey off by one float32 ulp moved such pixels' fused values by up to ``5e-3``).

    Args:
        images: ``[B, 3, H, W]`` display values in ``[0, 1]`` (RGB; weights 0.299/0.587/0.114).

    Returns:
        ``[B, 1, H, W]``.
    """
    grey = opencv_grey(images)
    h, w = grey.shape[-2:]
    padded = _reflect101_pad(grey, 1)
    laplacian = padded[..., 0:h, 1 : w + 1] + padded[..., 1 : h + 1, 0:w]
    if _needs_grad(laplacian):
        laplacian = laplacian - 4.0 * grey + padded[..., 1 : h + 1, 2:] + padded[..., 2:, 1 : w + 1]
        return laplacian.abs()
    laplacian.add_(grey, alpha=-4.0).add_(padded[..., 1 : h + 1, 2:]).add_(padded[..., 2:, 1 : w + 1])
    return laplacian.abs_()


def _channel_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``(sum_c (I_c - m)^2, m)`` with ``m`` the channel mean; ``[B, 1, H, W]`` each.

    Plane-wise arithmetic (deviations from the mean, no ``E[I^2] - m^2`` cancellation); on CPU this
    is ~10x faster than ``torch.var_mean`` over the channel axis.
    """
    channels = images.unbind(dim=1)
    total = channels[0]
    for plane in channels[1:]:
        total = total + plane
    mean = total / len(channels)
    deviation = channels[0] - mean
    spread = deviation * deviation
    for plane in channels[1:]:
        deviation = plane - mean
        spread = torch.addcmul(spread, deviation, deviation)
    return spread.unsqueeze(1), mean.unsqueeze(1)


def saturation_measure(images: torch.Tensor) -> torch.Tensor:
    """Mertens saturation ``S = sqrt(sum_c (I_c - mean_c I)^2)`` (OpenCV: no division by C).

    Args:
        images: ``[B, C, H, W]``.

    Returns:
        ``[B, 1, H, W]``.
    """
    return _safe_sqrt(_channel_moments(images)[0])


def _well_exposedness_from_moments(spread: torch.Tensor, mean: torch.Tensor, channels: int, sigma: float) -> torch.Tensor:
    """``exp(-sum_c (I_c - 0.5)^2 / (2 sigma^2))`` with ``sum_c (I_c - 0.5)^2 = spread + C (m - 0.5)^2``."""
    offset = mean - 0.5
    exponent = torch.addcmul(spread, offset, offset, value=float(channels)).mul_(-1.0 / (2.0 * sigma * sigma))
    return exponent.exp() if _needs_grad(exponent) else exponent.exp_()


def well_exposedness_measure(images: torch.Tensor, *, sigma: float = 0.2) -> torch.Tensor:
    """Mertens well-exposedness ``E = prod_c exp(-(I_c - 0.5)^2 / (2 sigma^2))``.

    Computed as ``exp(-(sum_c (I_c - m)^2 + C (m - 0.5)^2) / (2 sigma^2))`` (the same sum, split
    about the channel mean ``m``), from the moments shared with :func:`saturation_measure`.

    Args:
        images: ``[B, C, H, W]`` display values in ``[0, 1]``.
        sigma: Gaussian width (paper and OpenCV: 0.2, i.e. ``2 sigma^2 = 0.08``).

    Returns:
        ``[B, 1, H, W]``.
    """
    spread, mean = _channel_moments(images)
    return _well_exposedness_from_moments(spread, mean, images.shape[1], sigma)


def _unnormalised_weights(
    images: torch.Tensor, *, contrast_weight: float, saturation_weight: float, exposure_weight: float, sigma: float
) -> torch.Tensor:
    """``C^wc S^ws E^we + 1e-12`` (paper Eq. 1, OpenCV's floor) of ``[B, N, 3, H, W]`` -> ``[B, N, 1, H, W]``."""
    b, n, c, h, w = images.shape
    flat = images.reshape(b * n, c, h, w)
    weight = _safe_pow(contrast_measure(flat), contrast_weight)
    if saturation_weight != 0.0 or exposure_weight != 0.0:
        spread, mean = _channel_moments(flat)
        if saturation_weight != 0.0:
            weight = weight * _safe_pow(_safe_sqrt(spread), saturation_weight)
        if exposure_weight != 0.0:
            weight = weight * _safe_pow(_well_exposedness_from_moments(spread, mean, c, sigma), exposure_weight)
    return weight.reshape(b, n, 1, h, w).add_(WEIGHT_EPS)


_FLT_MIN = float(np.finfo(np.float32).tiny)

#: pixels (all exposures) per row block of the no-autograd weight computation: its temporaries
#: stay in the CPU caches, and none of them is a large allocation (page faults on every call);
#: 2^17 measured ~10 % faster than 2^16 (fewer per-op overheads), 2^18 no faster
WEIGHT_BLOCK_PIXELS = 1 << 17


def _normalised_weights_into(
    images: torch.Tensor,
    out: torch.Tensor,
    *,
    contrast_weight: float,
    saturation_weight: float,
    exposure_weight: float,
    sigma: float,
    planar: torch.Tensor | None = None,
    blend: torch.Tensor | None = None,
    copy: torch.Tensor | None = None,
) -> None:
    """No-autograd :func:`mertens_weights` of float32 ``[B, N, 3, H, W]`` written into ``out`` ``[B, N, C, H, W]``
    (any strides; every ``C`` plane gets the weight), by blocks of rows.

    The float32 operations of :func:`_unnormalised_weights` on row blocks of a planar copy of the
    input: each block is read once from ``images`` (whatever its layout) and its temporaries stay in
    cache. The grey and contrast are bit-identical (OpenCV's rounding, which decides the degenerate
    pixels); saturation and well-exposedness agree to float32 rounding (the exponential is evaluated as
    ``exp2``, ~2.5x faster in torch on CPU, and ``C S E + 1e-12`` is one ``addcmul``). Needs ``H, W >= 2``.

    Optionally also writes the weights into ``planar`` (contiguous ``[B N, H, W]``) and the weighted
    sum of the images ``sum_n W_n I_n`` into ``blend`` (``[B, C, H, W]``), and a copy of the images into
    ``copy`` (``[B, N, C, H, W]``, any strides), from the cached block.
    """
    b, n, c, h, w = images.shape
    bn = b * n
    rows = max(1, min(h, WEIGHT_BLOCK_PIXELS // max(1, bn * w)))
    c_r, c_g, c_b = (float(np.float32(v)) for v in (0.299, 0.587, 0.114))
    dtype, device = images.dtype, images.device
    img_buf = torch.empty(bn * c * (rows + 2) * w, dtype=dtype, device=device)
    grey_buf = torch.empty(bn * (rows + 2) * (w + 2), dtype=dtype, device=device)
    rb_buf = torch.empty(bn * 2 * (rows + 2) * w, dtype=torch.float64, device=device)
    acc_buf = torch.empty(bn * (rows + 2) * w, dtype=torch.float64, device=device)
    tmp_buf = torch.empty(bn * c * rows * w, dtype=dtype, device=device)
    # per-pixel temporaries (mean, spread, well-exposedness, weight total): written with out=, as fresh
    # ~0.5 MB results are page-faulted on every block while glibc's mmap threshold is still low
    moments_buf = torch.empty(4, bn * rows * w, dtype=dtype, device=device)
    eps = torch.tensor(WEIGHT_EPS, dtype=dtype, device=device)
    src = images.reshape(bn, c, h, w)
    dst = out.reshape(bn, out.shape[2], h, w)
    for top in range(0, h, rows):
        r = min(rows, h - top)
        lo, hi = max(top - 1, 0), min(top + r + 1, h)  # grey rows with the Laplacian's halo
        count = hi - lo
        blk = img_buf[: bn * c * count * w].view(bn, c, count, w)
        blk.copy_(src[:, :, lo:hi])
        if copy is not None:  # from the planar block in cache: ~2x faster than from the interleaved input
            copy[:, :, :, top : top + r] = blk[:, :, top - lo : top - lo + r].view(b, n, c, r, w)
        # grey (opencv_grey): fma(B, cb, fma(R, cr, G cg)) in float32: each fma is one add with a
        # float64 operand (the product of two float32 values is exact there) rounded to the float32 output
        grey = grey_buf[: bn * (r + 2) * (w + 2)].view(bn, r + 2, w + 2)
        first = 1 if top == 0 else 0  # row -1 is reflected below
        g_int = grey[:, first : first + count, 1 : w + 1]
        red_blue = rb_buf[: bn * 2 * count * w].view(bn, 2, count, w)
        acc = acc_buf[: bn * count * w].view(bn, count, w)
        red_blue.copy_(blk[:, 0::2])  # mixed-dtype ops would each make such a float64 copy
        torch.mul(blk[:, 1], c_g, out=g_int)
        acc.copy_(g_int).add_(red_blue[:, 0], alpha=c_r)
        g_int.copy_(acc)
        acc.copy_(g_int).add_(red_blue[:, 1], alpha=c_b)
        g_int.copy_(acc)
        if top == 0:
            grey[:, 0, 1 : w + 1] = grey[:, 2, 1 : w + 1]
        if top + r == h:
            grey[:, r + 1, 1 : w + 1] = grey[:, r - 1, 1 : w + 1]
        grey[:, :, 0] = grey[:, :, 2]
        grey[:, :, w + 1] = grey[:, :, w - 1]
        # contrast (contrast_measure): up + left - 4 centre + right + down, OpenCV's order
        centre = grey[:, 1 : r + 1, 1 : w + 1]
        if planar is None:
            weight = torch.add(grey[:, 0:r, 1 : w + 1], grey[:, 1 : r + 1, 0:w])
        else:
            weight = torch.add(grey[:, 0:r, 1 : w + 1], grey[:, 1 : r + 1, 0:w], out=planar[:, top : top + r])
        weight.add_(centre, alpha=-4.0).add_(grey[:, 1 : r + 1, 2:]).add_(grey[:, 2:, 1 : w + 1]).abs_()
        if contrast_weight != 1.0:
            weight = weight.fill_(1.0) if contrast_weight == 0.0 else weight.pow_(contrast_weight)
        inner = blk[:, :, top - lo : top - lo + r]  # [BN, C, r, W] without the halo rows
        tmp = tmp_buf[: bn * c * r * w].view(bn, c, r, w)
        with_eps = False
        if saturation_weight != 0.0 or exposure_weight != 0.0:
            # _channel_moments: deviations from the channel mean, summed over the channels
            mean = torch.add(inner[:, 0], inner[:, 1], out=moments_buf[0, : bn * r * w].view(bn, r, w))
            for k in range(2, c):
                mean.add_(inner[:, k])
            mean.div_(c)
            dev = torch.sub(inner, mean.unsqueeze(1), out=tmp).mul_(tmp)  # squared deviations
            spread = torch.add(dev[:, 0], dev[:, 1], out=moments_buf[1, : bn * r * w].view(bn, r, w))
            for k in range(2, c):
                spread.add_(dev[:, k])
            if exposure_weight != 0.0:
                # exp(-x / (2 sigma^2)) as 2^(-x log2(e) / (2 sigma^2)): torch's exp2 is ~2.5x faster
                offset = mean.sub_(0.5)
                expo = torch.addcmul(
                    spread, offset, offset, value=float(c), out=moments_buf[2, : bn * r * w].view(bn, r, w)
                )
                expo.mul_(-LOG2_E / (2.0 * sigma * sigma)).exp2_()
                if exposure_weight != 1.0:
                    expo.pow_(exposure_weight)
            if saturation_weight != 0.0:
                # torch's CPU sqrt takes a ~6x slower path on zeros (every neutral pixel): the spread is
                # floored at the smallest normal float32, which moves such weights by <= 4.4e-19 (C <= 4),
                # under 4e-7 of the 1e-12 floor they sit on
                sat = spread.clamp_min_(_FLT_MIN).sqrt_()
                if saturation_weight != 1.0:
                    sat.pow_(saturation_weight)
                weight.mul_(sat)
            if exposure_weight != 0.0:
                torch.addcmul(eps, weight, expo, out=weight)  # C S E + 1e-12
                with_eps = True
        if not with_eps:
            weight.add_(WEIGHT_EPS)
        weight = weight.view(b, n, r, w)
        total = moments_buf[3, : b * r * w].view(b, r, w)
        torch.add(weight[:, 0], weight[:, 1], out=total) if n > 1 else total.copy_(weight[:, 0])
        for k in range(2, n):
            total.add_(weight[:, k])
        weight.div_(total.unsqueeze(1))
        for k in range(dst.shape[1]):
            dst[:, k, top : top + r].copy_(weight.view(bn, r, w))
        if blend is not None:  # sum_n W_n I_n
            # one product and n - 1 multiply-adds straight into the output: no pass through a products buffer
            images_n, weights_n = inner.view(b, n, c, r, w), weight.view(b, n, 1, r, w)
            acc_blend = torch.mul(images_n[:, 0], weights_n[:, 0], out=blend[:, :, top : top + r])
            for k in range(1, n):
                acc_blend.addcmul_(images_n[:, k], weights_n[:, k])


def mertens_weights(
    images: torch.Tensor,
    *,
    contrast_weight: float = 1.0,
    saturation_weight: float = 1.0,
    exposure_weight: float = 1.0,
    sigma: float = 0.2,
) -> torch.Tensor:
    """Normalised Mertens weights (paper Eqs. 1-2), OpenCV's ``+1e-12`` rule.

    Args:
        images: ``[B, N, 3, H, W]`` display values in ``[0, 1]``.
        contrast_weight, saturation_weight, exposure_weight: exponents ``wc, ws, we``.
        sigma: well-exposedness width.

    Returns:
        ``[B, N, 1, H, W]`` weights summing to 1 over ``N``.
    """
    weight = _unnormalised_weights(
        images,
        contrast_weight=contrast_weight,
        saturation_weight=saturation_weight,
        exposure_weight=exposure_weight,
        sigma=sigma,
    )
    return weight / weight.sum(dim=1, keepdim=True)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """``[1, C, h, w]`` channels-last planes -> ``[h w, C]`` (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _blend_level(
    detail: torch.Tensor, weight: torch.Tensor, coarser_fused: torch.Tensor | None, b: int, n: int, c: int, in_place: bool
) -> torch.Tensor:
    """``coarser_fused + sum_n W_n detail_n`` -> ``[1, B 3, h_l, w_l]`` planes (``detail`` and
    ``coarser_fused`` may be overwritten). The sum over ``n`` is ``n`` adds of pixel-interleaved
    ``[h w, B, 3]`` slices (a 0/1-matrix ``addmm`` costs ~2x more)."""
    weighted = detail.mul_(weight) if in_place else detail * weight
    terms = _pixels(weighted).view(-1, b, n, c)
    if coarser_fused is None:
        out = terms[:, :, 0].clone()
        first = 1
    else:
        out, first = _pixels(coarser_fused).view(-1, b, c), 0
    for j in range(first, n):
        out = out.add_(terms[:, :, j]) if in_place else out + terms[:, :, j]
    return out.reshape(1, *detail.shape[-2:], b * c).permute(0, 3, 1, 2)


def _blend_collapse(
    gauss: list[tuple[torch.Tensor, torch.Tensor]], b: int, n: int, c: int, in_place: bool
) -> torch.Tensor:
    """Blend the Laplacian pyramid of the images (Gaussian levels ``gauss[l][0]``, ``[1, B N 3, h_l, w_l]``
    channels-last) with the weights' Gaussian pyramid (``gauss[l][1]``, repeated per channel) and
    collapse it: the fused ``[1, B 3, h_0, w_0]`` planes of the first level (channels-last)."""
    top_img, top_wt = gauss[-1]
    fused = _blend_level(top_img.clone(memory_format=torch.channels_last), top_wt, None, b, n, c, in_place)
    for (level_img, level_wt), (coarser_img, _) in zip(reversed(gauss[:-1]), reversed(gauss[1:])):
        size = (level_img.shape[-2], level_img.shape[-1])
        expanded = _pyr_up_planes(coarser_img, size)
        laplacian = torch.sub(level_img, expanded, out=expanded) if in_place else level_img - expanded
        fused = _blend_level(laplacian, level_wt, _pyr_up_planes(fused, size), b, n, c, in_place)
    return fused


def _repeat_planes(x: torch.Tensor, repeats: int) -> torch.Tensor:
    """``[1, P, h, w]`` -> ``[1, P repeats, h, w]`` channels-last, every plane ``repeats`` times in a row."""
    p, h, w = x.shape[1:]
    out = torch.empty((1, p * repeats, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    source = x.permute(0, 2, 3, 1).reshape(h * w, p, 1)
    out.permute(0, 2, 3, 1).view(h * w, p, repeats).copy_(source.expand(-1, -1, repeats))
    return out


#: full-resolution rows per block of the no-autograd level-0 expansion and blend (even): the
#: expanded planes of a block stay in cache
UP_BLOCK_ROWS = 64

#: per-thread work buffers of :func:`_fuse_mertens_fast`, keyed by shape/dtype/device/inference mode: the
#: large stacks (~47 MB at 1024x768, 3 exposures) are otherwise page-faulted afresh on most calls (~17 %
#: of the call). Internal only: no returned tensor aliases them. At most ``_WORK_CACHE_SIZE`` shapes and
#: ``_WORK_CACHE_BYTES`` per thread are kept (larger sets are allocated per call, as before).
_WORK_CACHE = threading.local()
_WORK_CACHE_SIZE = 2
_WORK_CACHE_BYTES = 256 << 20


def _work_buffers(
    key: tuple, make: Callable[[], tuple[torch.Tensor, ...]], like: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """``make()`` cached per thread under ``key`` for plain CPU tensors outside any dispatch mode (fake/meta
    tensors, tracing and other devices get fresh buffers every call)."""
    if type(like) is not torch.Tensor or like.device.type != "cpu" or _get_current_dispatch_mode() is not None:
        return make()
    cache = getattr(_WORK_CACHE, "buffers", None)
    if cache is None:
        cache = _WORK_CACHE.buffers = {}
    key = (*key, torch.is_inference_mode_enabled())
    buffers = cache.pop(key, None)
    if buffers is None:
        buffers = make()
        size = sum(t.numel() * t.element_size() for t in buffers)
        if size > _WORK_CACHE_BYTES:
            return buffers
        held = lambda: sum(t.numel() * t.element_size() for bufs in cache.values() for t in bufs)  # noqa: E731
        while cache and (len(cache) >= _WORK_CACHE_SIZE or held() + size > _WORK_CACHE_BYTES):
            cache.pop(next(iter(cache)))  # least recently used first
    cache[key] = buffers  # most recently used last
    return buffers


def _fuse_mertens_fast(images: torch.Tensor, **measures: float) -> torch.Tensor:
    """No-autograd :func:`fuse_mertens` of float32 ``[B, N, 3, H, W]`` with ``H, W >= 3``.

    The weights are computed once per exposure (one plane, not one per colour channel) by row blocks
    (:func:`_normalised_weights_into`), which also accumulate the full-resolution term ``sum_n W_n I_n``
    straight into the planar output, and copies the images into the padded plane stack from its cached
    planar block. The weights' Gaussian pyramid is built on that one plane per exposure and each coarser
    level repeated per colour channel, as the blend there wants it. The large work stacks are reused
    from call to call (:func:`_work_buffers`). The full-resolution level is then finished by row blocks:
    ``out += sum_n W_n pyrUp(R_1 - G_1(I_n))`` (``sum_n W_n = 1``) with the expanded planes of each block in cache,
    so the full-resolution Laplacians, products and the layout change of the output never pass
    through memory.
    """
    b, n, c, h, w = images.shape
    bn, k = b * n, b * n * c
    dtype, device = images.dtype, images.device
    max_level = pyramid_levels(h, w)
    cl = torch.channels_last

    def make() -> tuple[torch.Tensor, ...]:
        return (
            torch.empty((1, k, h + 4, w + 4), dtype=dtype, device=device, memory_format=cl),
            torch.empty((1, bn, h + 4, w + 4), dtype=dtype, device=device, memory_format=cl),
            torch.empty((bn, h, w), dtype=dtype, device=device),
        )

    padded_img, padded_wt, weights = _work_buffers(("fast", b, n, c, h, w, dtype, device), make, images)
    planes_5d = padded_img[..., 2 : 2 + h, 2 : 2 + w].view(b, n, c, h, w)
    out = torch.empty((b, c, h, w), dtype=dtype, device=device)
    _normalised_weights_into(
        images,
        padded_wt[..., 2 : 2 + h, 2 : 2 + w].view(b, n, 1, h, w),
        planar=weights,
        blend=out,
        copy=planes_5d,
        **measures,
    )
    # the weights' pyramid is built on one plane per exposure (3x fewer taps than on the planes repeated
    # per colour channel); each level is repeated per channel afterwards for the blend (~1/4 the cost)
    g1_img = g_img = _pyr_down_padded(_reflect101_border(padded_img, 2))
    g_wt = _pyr_down_padded(_reflect101_border(padded_wt, 2))
    gauss = [(g_img, _repeat_planes(g_wt, c))]
    for _ in range(max_level - 1):
        g_img, g_wt = _pyr_down_planes(g_img), _pyr_down_planes(g_wt)
        gauss.append((g_img, _repeat_planes(g_wt, c)))
    fused = _blend_collapse(gauss, b, n, c, True)  # R_1, [1, B 3, h_1, w_1]
    # sum_n W_n = 1, so pyrUp(R_1) - sum_n W_n pyrUp(G_1(I_n)) = sum_n W_n pyrUp(R_1 - G_1(I_n)): one
    # expansion of the 3 N differences (formed at level 1, in the padded expansion source) per block
    w1 = g1_img.shape[-1]
    source, fused_source = _pyr_up_source(g1_img), _pyr_up_source(fused)
    for i in range(b):  # per exposure: a broadcast over the exposures is ~3x slower on interleaved planes
        for j in range(n):
            planes = source[:, (i * n + j) * c : (i * n + j + 1) * c]
            torch.sub(fused_source[:, i * c : (i + 1) * c], planes, out=planes)
    up_kernel = _binomial_kernel(k, 1.0 / 64.0, dtype=dtype, device=device)
    pad_w = w - 2 * w1 + 1
    wts = weights.view(b, n, 1, h, w)
    for r0 in range(0, h, UP_BLOCK_ROWS):
        r1 = min(r0 + UP_BLOCK_ROWS, h)
        lo, hi = r0 // 2, (r1 + 5) // 2  # rows of the padded level 1 that reach output rows r0..r1-1
        pad_h = (r1 - r0) - (2 * (hi - lo) - 5)
        expanded = F.conv_transpose2d(
            source[:, :, lo:hi], up_kernel, stride=2, padding=4, output_padding=(pad_h, pad_w), groups=k
        ).view(b, n, c, r1 - r0, w)
        block = out[:, :, r0:r1]
        for j in range(n):
            block.addcmul_(wts[:, j, :, r0:r1], expanded[:, j])
    return out


def fuse_mertens(
    images: torch.Tensor,
    *,
    contrast_weight: float = 1.0,
    saturation_weight: float = 1.0,
    exposure_weight: float = 1.0,
    sigma: float = 0.2,
) -> torch.Tensor:
    """Exposure fusion of ``[B, N, 3, H, W]`` display images into ``[B, 3, H, W]`` (paper Eq. 3).

    Laplacian pyramid of each image blended with the Gaussian pyramid of its normalised weight,
    ``floor(log2(min(H, W))) + 1`` levels, collapsed. Not clipped: values may leave ``[0, 1]``
    slightly, as in OpenCV.

    Implementation (CPU-friendly, no Python loop over exposures or levels' channels): the images
    and their weights (repeated per colour channel) are channels-last plane stacks
    ``[1, B N 3, H, W]`` (pixel-interleaved, as OpenCV stores images), so each pyramid level is
    one depthwise strided convolution for every exposure and channel, and each expansion one
    depthwise transposed convolution. Per level the blend ``sum_n W_n L_n`` plus the expanded
    coarser result is one elementwise product and ``N`` slice adds. Without autograd (float32,
    ``H, W >= 3``) :func:`_fuse_mertens_fast` is used instead: one weight plane per exposure, the
    full-resolution level by row blocks straight into the planar output.
    """
    b, n, c, h, w = images.shape
    in_place = not (torch.is_grad_enabled() and images.requires_grad)
    measures = dict(contrast_weight=contrast_weight, saturation_weight=saturation_weight,
                    exposure_weight=exposure_weight, sigma=sigma)
    if in_place and images.dtype == torch.float32 and min(h, w) >= 3:
        return _fuse_mertens_fast(images, **measures)
    blocked = in_place and images.dtype == torch.float32 and min(h, w) >= 2
    max_level = pyramid_levels(h, w)
    k = b * n * c
    # the plane stack is allocated with the reflect-101 border of the first pyr_down, so the
    # full-resolution level is written once and never padded (copied) again
    pad = 2 if min(h, w) > 2 else 0
    # two plane stacks (images; weights repeated per colour channel), each allocated with the reflect-101
    # border of the first pyr_down, so the full-resolution level is written once and never padded
    # (copied) again; two stacks rather than one keep each allocation below glibc's mmap threshold
    # (32 MiB at 1024x768), so it is recycled from call to call instead of page-faulted afresh
    def stack() -> torch.Tensor:
        return torch.empty(
            (1, k, h + 2 * pad, w + 2 * pad), dtype=images.dtype, device=images.device, memory_format=torch.channels_last
        )

    padded_img, padded_wt = stack(), stack()
    planes = padded_img[..., pad : pad + h, pad : pad + w]
    weight_planes = padded_wt[..., pad : pad + h, pad : pad + w]
    planes_5d = planes.view(b, n, c, h, w)
    for j in range(n):  # per exposure: no intermediate copy whatever the input's layout
        planes_5d[:, j] = images[:, j]
    weight_5d = weight_planes.view(b, n, c, h, w)
    if blocked:  # Eq. 1-2 by row blocks, written straight into the planes
        _normalised_weights_into(images, weight_5d, **measures)
    else:
        weights = _unnormalised_weights(images, **measures)
        total = weights.sum(dim=1)  # [B, 1, H, W]; Eq. 2 normalisation written straight into the planes
        for channel in range(c):  # per-plane writes: much faster than one stride-0 broadcast copy
            if in_place:
                torch.div(weights[:, :, 0], total, out=weight_5d[:, :, channel])
            else:
                weight_5d[:, :, channel] = weights[:, :, 0] / total
    gauss = [(planes, weight_planes)]
    if max_level > 0:
        if pad:
            gauss.append(tuple(_pyr_down_padded(_reflect101_border(p, pad)) for p in (padded_img, padded_wt)))
        else:
            gauss.append((_pyr_down_planes(planes), _pyr_down_planes(weight_planes)))
    for _ in range(max_level - 1):
        gauss.append(tuple(_pyr_down_planes(p) for p in gauss[-1]))

    fused = _blend_collapse(gauss, b, n, c, in_place)
    return fused.reshape(b, c, h, w).contiguous()


class MertensMerger(StackMerger):
    """Mertens exposure fusion of an :class:`ExposureStack` -> display ``[B, 3, H, W]``.

    Defaults are the paper's exponents ``wc = ws = we = 1`` (Mertens' MATLAB reference uses the
    same). OpenCV's ``createMergeMertens`` defaults to ``(1, 1, 0)`` (well-exposedness off, kept
    for API compatibility); pass ``exposure_weight=0.0`` and ``clip=False`` to reproduce it.
    Needs no exposure times and no CRF; fully differentiable.

    Args:
        contrast_weight: exponent ``wc`` of the contrast measure.
        saturation_weight: exponent ``ws`` of the saturation measure.
        exposure_weight: exponent ``we`` of the well-exposedness measure.
        sigma: width of the well-exposedness Gaussian (0.2).
        clip: clamp the fused image to ``[0, 1]`` (the display-domain contract); ``False`` keeps
            the small over/undershoots of the pyramid blend, as OpenCV does.
    """

    output_domain = "display"
    accepts = StackArity(min_exposures=2, reference="any")
    differentiable = True

    def __init__(
        self,
        *,
        contrast_weight: float = 1.0,
        saturation_weight: float = 1.0,
        exposure_weight: float = 1.0,
        sigma: float = 0.2,
        clip: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("contrast_weight", contrast_weight),
            ("saturation_weight", saturation_weight),
            ("exposure_weight", exposure_weight),
        ):
            if value < 0:
                raise ConfigError(f"MertensMerger {name}={value} must be >= 0 (0 turns the measure off)")
        if sigma <= 0:
            raise ConfigError(f"MertensMerger sigma={sigma} must be > 0 (paper: 0.2)")
        self.contrast_weight = contrast_weight
        self.saturation_weight = saturation_weight
        self.exposure_weight = exposure_weight
        self.sigma = sigma
        self.clip = clip

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """Fuse ``stack.images`` into ``[B, 3, H, W]`` display values."""
        fused = fuse_mertens(
            stack.images,
            contrast_weight=self.contrast_weight,
            saturation_weight=self.saturation_weight,
            exposure_weight=self.exposure_weight,
            sigma=self.sigma,
        )
        return fused.clamp(0.0, 1.0) if self.clip else fused
