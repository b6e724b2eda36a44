"""Mertens, Kautz & Van Reeth (Pacific Graphics 2007 / CGF 2009): exposure fusion.

Each exposure ``k`` gets a per-pixel quality weight (paper Eq. 1)

    W_k = C_k^wc * S_k^ws * E_k^we

with contrast ``C`` = |Laplacian| of the grey image, saturation ``S`` = deviation of the channels
from their mean, and well-exposedness ``E = prod_c exp(-(I_c - 0.5)^2 / (2 sigma^2))``, sigma = 0.2.
Weights are normalised over the exposures (Eq. 2) and the images are blended per level of a
Laplacian pyramid with the Gaussian pyramid of the weights (Eq. 3), then the pyramid is collapsed.

The operators reproduce OpenCV's ``MergeMertens`` exactly (spec ``mergers.md`` §2.2): grey with
0.299/0.587/0.114, Laplacian aperture ``[0 1 0; 1 -4 1; 0 1 0]`` with BORDER_REFLECT_101,
saturation ``sqrt(sum_c (I_c - mean)^2)`` (no division by 3), weights ``+ 1e-12`` before the
normalisation, ``floor(ln(min(H, W)) / ln 2) + 1`` pyramid levels, and OpenCV's ``pyrDown`` /
``pyrUp`` border and odd-size rules. kornia's ``pyrdown``/``pyrup`` resample bilinearly and floor
odd sizes, so the pyramid operators here are written as separable 5-tap filters instead. All
functions are differentiable torch on ``[B, C, H, W]`` tensors.

Agreement with OpenCV is ~1e-5 except at *degenerate* pixels where every exposure's weight is at
(or within float32 rounding of) the ``1e-12`` floor -- e.g. an exposure whose grey Laplacian is
exactly 0 while the others are clipped: there the normalised weights are ratios of rounding noise
in OpenCV's float32 arithmetic and can differ by ~1e-3 (61 of 786k pixels on a 1024x768 bracket).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import filter2d

from hdrlab.errors import ConfigError
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

#: OpenCV's additive constant of every weight before normalisation
WEIGHT_EPS = 1e-12
#: OpenCV's Laplacian aperture (ksize=1)
_LAPLACIAN_3X3 = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
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


def _reflect101_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """BORDER_REFLECT_101 padding of the last two axes of ``[N, C, H, W]`` by ``pad`` on every side."""
    h, w = x.shape[-2:]
    if h > pad and w > pad:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    # tiny levels (side < pad + 1): repeated reflection as OpenCV's borderInterpolate
    rows = reflect101_index(h, pad, pad, device=x.device)
    cols = reflect101_index(w, pad, pad, device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _pyr_down_planes(x: torch.Tensor) -> torch.Tensor:
    """:func:`pyr_down` of ``[N, C, H, W]``: one depthwise strided 5x5 convolution for all planes."""
    kernel = _binomial_kernel(x.shape[1], 1.0 / 256.0, dtype=x.dtype, device=x.device)
    return F.conv2d(_reflect101_pad(x, 2), kernel, stride=2, groups=x.shape[1])


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
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    if h > 1:
        padded[..., 0, :] = padded[..., 2, :]  # reflect-101 on the low side (s[-1] = s[1])
    if w > 1:
        padded[..., :, 0] = padded[..., :, 2]
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


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with a zero (not NaN) gradient at 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _safe_pow(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """``x ** exponent`` for ``x >= 0`` (``0 ** 0 = 1``), with finite gradients at 0."""
    if exponent == 0.0:
        return torch.ones_like(x)
    if exponent == 1.0:
        return x
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)) ** exponent, torch.zeros_like(x))


def contrast_measure(images: torch.Tensor) -> torch.Tensor:
    """Mertens contrast ``C = |Laplacian(grey)|`` (OpenCV: RGB2GRAY weights, 3x3 aperture, reflect-101).

    Args:
        images: ``[B, 3, H, W]`` display values in ``[0, 1]`` (RGB; weights 0.299/0.587/0.114).

    Returns:
        ``[B, 1, H, W]``.
    """
    grey = rgb_to_grayscale(images)
    kernel = torch.tensor(_LAPLACIAN_3X3, dtype=images.dtype, device=images.device).unsqueeze(0)
    return filter2d(grey, kernel, border_type="reflect").abs()


def saturation_measure(images: torch.Tensor) -> torch.Tensor:
    """Mertens saturation ``S = sqrt(sum_c (I_c - mean_c I)^2)`` (OpenCV: no division by C).

    Args:
        images: ``[B, C, H, W]``.

    Returns:
        ``[B, 1, H, W]``.
    """
    dev = images - images.mean(dim=1, keepdim=True)
    return _safe_sqrt((dev * dev).sum(dim=1, keepdim=True))


def well_exposedness_measure(images: torch.Tensor, *, sigma: float = 0.2) -> torch.Tensor:
    """Mertens well-exposedness ``E = prod_c exp(-(I_c - 0.5)^2 / (2 sigma^2))``.

    Args:
        images: ``[B, C, H, W]`` display values in ``[0, 1]``.
        sigma: Gaussian width (paper and OpenCV: 0.2, i.e. ``2 sigma^2 = 0.08``).

    Returns:
        ``[B, 1, H, W]``.
    """
    return torch.exp(-((images - 0.5) ** 2).sum(dim=1, keepdim=True) / (2.0 * sigma * sigma))


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
    b, n, c, h, w = images.shape
    flat = images.reshape(b * n, c, h, w)
    weight = _safe_pow(contrast_measure(flat), contrast_weight)
    weight = weight * _safe_pow(saturation_measure(flat), saturation_weight)
    weight = weight * _safe_pow(well_exposedness_measure(flat, sigma=sigma), exposure_weight)
    weight = weight.reshape(b, n, 1, h, w) + WEIGHT_EPS
    return weight / weight.sum(dim=1, keepdim=True)


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
    """
    b, n, c, h, w = images.shape
    weights = mertens_weights(
        images,
        contrast_weight=contrast_weight,
        saturation_weight=saturation_weight,
        exposure_weight=exposure_weight,
        sigma=sigma,
    )
    max_level = pyramid_levels(h, w)
    k = b * n * c
    # one channels-last plane stack [images | weights]: a single depthwise conv per pyramid level
    planes = torch.empty((1, k + b * n, h, w), dtype=images.dtype, device=images.device, memory_format=torch.channels_last)
    planes[:, :k] = images.reshape(1, k, h, w)
    planes[:, k:] = weights.reshape(1, b * n, h, w)
    gauss = [planes]
    for _ in range(max_level):
        gauss.append(_pyr_down_planes(gauss[-1]))

    def blend(level: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """``sum_n W_n * detail_n`` of one level -> ``[b, c, h_l, w_l]``."""
        hl, wl = level.shape[-2:]
        return (detail.view(b, n, c, hl, wl) * level[:, k:].view(b, n, 1, hl, wl)).sum(dim=1)

    fused = blend(gauss[-1], gauss[-1][:, :k])
    for level, coarser in zip(reversed(gauss[:-1]), reversed(gauss[1:])):
        size = (level.shape[-2], level.shape[-1])
        laplacian = level[:, :k] - _pyr_up_planes(coarser[:, :k], size)
        fused = blend(level, laplacian) + _pyr_up_planes(fused, size)
    return fused.contiguous()


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
