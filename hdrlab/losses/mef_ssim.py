"""MEF-SSIM: structural quality of a multi-exposure fusion against its source images.

Ma, Zeng, Wang, "Perceptual Quality Assessment for Multi-Exposure Image Fusion", IEEE TIP 2015.
For every local patch (Gaussian window) of the ``K`` source images ``x_k`` and the fused image
``y``:

* contrast ``c_k = ||x_k - mu_k||`` (here the Gaussian-weighted standard deviation ``sqrt(sigma_kk)``;
  the patch-norm constant cancels because ``y`` is measured the same way), structure
  ``s_k = (x_k - mu_k) / c_k``;
* desired contrast ``c_hat = max_k c_k``;
* desired structure ``s_hat = s_bar / ||s_bar||`` with ``s_bar = sum_k w_k s_k / sum_k w_k`` and
  ``w_k = c_k ** p`` (p = 4), so ``s_bar`` is proportional to ``sum_k c_k^(p-1) (x_k - mu_k)``;
* desired patch ``x_hat = c_hat * s_hat`` (zero mean: **luminance is ignored**);
* patch score ``Q = (2 sigma_{x_hat y} + C2) / (sigma_{x_hat}^2 + sigma_y^2 + C2)`` (the SSIM
  contrast-structure term), ``C2 = (k2 * data_range)^2``;
* MEF-SSIM = mean of ``Q`` over patches (single scale).

Because ``s_hat`` and ``y - mu_y`` enter only through Gaussian-weighted inner products, every
quantity follows from windowed means and (co)variances of the sources and the fused image
(``K (K + 1) / 2 + K + 1`` covariance maps), so the function is a few ``conv2d`` calls and is
differentiable in ``fused`` (and in ``sources``).

Implementation choices (**UNVERIFIED**: no reference implementation of MEF-SSIM is available
offline here, so nothing below was checked against the authors' MATLAB code):

* window: Gaussian ``win_size = 11``, ``sigma = 1.5`` (kornia kernel), "valid" convolution
  (no padding, like ``pytorch_msssim``); ``k2 = 0.03``; ``p = 4``;
* single scale only (the paper also describes a multi-scale variant, not implemented);
* colour: each RGB channel is scored separately and the channel scores are averaged
  (``grayscale=False``, what a colour loss needs); ``grayscale=True`` scores the Rec.709-weighted
  sum of the display channels (:func:`hdrlab.camera.luminance` applied to display values, a luma)
  instead -- the paper works on grey images;
* numerical guards: ``c_k = sqrt(max(sigma_kk, 0) + eps)`` and ``||s_bar||`` gets ``+ eps`` under
  its square root (``eps = 1e-10``), so flat patches and cancelling source structures stay finite.

Properties (tested): with all sources identical, MEF-SSIM equals the contrast-structure term of
plain SSIM between that source and ``y`` (``pytorch_msssim``'s ``cs``); constant (zero-contrast)
sources do not change the score; ``y`` equal to the only textured source (plus any constant)
scores 1; the score lies in ``[-1, 1]`` (Cauchy-Schwarz).
"""

from __future__ import annotations

import torch
from kornia.filters import filter2d, get_gaussian_kernel2d

from hdrlab.camera import luminance
from hdrlab.errors import ConfigError

__all__ = ["MEF_SSIM_EPS", "mef_ssim", "mef_ssim_map"]

#: guard added to variances under square roots (see the module docstring)
MEF_SSIM_EPS: float = 1e-10


def mef_ssim_map(
    fused: torch.Tensor,
    sources: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k2: float = 0.03,
    p: float = 4.0,
    grayscale: bool = False,
    eps: float = MEF_SSIM_EPS,
) -> torch.Tensor:
    """Per-patch MEF-SSIM quality map ``Q`` (Ma et al. 2015; module docstring; UNVERIFIED).

    Args:
        fused: ``[B, C, H, W]`` fused image, display-referred (e.g. ``[0, 1]``), ``H, W >= win_size``.
        sources: ``[B, K, C, H, W]`` the ``K >= 1`` source exposures in the same domain.
        data_range: value range of the images (``C2 = (k2 * data_range) ** 2``).
        win_size: side of the Gaussian window (odd).
        sigma: standard deviation of the Gaussian window in pixels.
        k2: SSIM's contrast constant (0.03).
        p: exponent of the contrast weights ``w_k = c_k ** p`` of the desired structure (4).
        grayscale: score the Rec.709 luminance (``C`` must be 3) instead of every channel.
        eps: variance guard (module docstring).

    Returns:
        ``[B, C', H - win_size + 1, W - win_size + 1]`` map in ``[-1, 1]`` (``C' = 1`` with
        ``grayscale``, else ``C``).

    Raises:
        ConfigError: shapes do not match, the window is even or larger than the image.
    """
    if fused.dim() != 4 or sources.dim() != 5 or sources.shape[0] != fused.shape[0] or sources.shape[2:] != fused.shape[1:]:
        raise ConfigError(
            f"mef_ssim needs fused [B, C, H, W] and sources [B, K, C, H, W] of the same B, C, H, W; got "
            f"{tuple(fused.shape)} and {tuple(sources.shape)}"
        )
    if win_size % 2 != 1 or min(fused.shape[-2:]) < win_size:
        raise ConfigError(
            f"mef_ssim win_size={win_size} must be odd and at most the image side {min(fused.shape[-2:])}; "
            "use a smaller window or larger crops"
        )
    if grayscale:
        fused = luminance(fused)
        sources = torch.stack([luminance(sources[:, k]) for k in range(sources.shape[1])], dim=1)
    num = sources.shape[1]
    kernel = get_gaussian_kernel2d((win_size, win_size), (sigma, sigma))  # [1, w, w], sums to 1
    c2 = (k2 * data_range) ** 2

    mean = lambda x: filter2d(x, kernel.to(x), padding="valid")  # noqa: E731 - Gaussian local mean, "valid"
    mu_y = mean(fused)
    mu = [mean(sources[:, k]) for k in range(num)]
    var_y = mean(fused * fused) - mu_y * mu_y
    cov_y = [mean(sources[:, k] * fused) - mu[k] * mu_y for k in range(num)]
    cov = {}
    for j in range(num):
        for k in range(j, num):
            cov[j, k] = cov[k, j] = mean(sources[:, j] * sources[:, k]) - mu[j] * mu[k]

    contrast = torch.stack([torch.sqrt(cov[k, k].clamp_min(0.0) + eps) for k in range(num)])  # [K, B, C, h, w]
    desired_contrast = contrast.amax(dim=0)
    beta = (contrast / desired_contrast) ** (p - 1.0)  # proportional to w_k / c_k, in [0, 1]
    var_u = sum(beta[j] * beta[k] * cov[j, k] for j in range(num) for k in range(num))
    cov_uy = sum(beta[k] * cov_y[k] for k in range(num))
    cov_desired_y = desired_contrast * cov_uy / torch.sqrt(var_u.clamp_min(0.0) + eps)
    return (2.0 * cov_desired_y + c2) / (desired_contrast**2 + var_y + c2)


def mef_ssim(
    fused: torch.Tensor,
    sources: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k2: float = 0.03,
    p: float = 4.0,
    grayscale: bool = False,
    eps: float = MEF_SSIM_EPS,
) -> torch.Tensor:
    """MEF-SSIM per image: the mean of :func:`mef_ssim_map` over patches (and channels). UNVERIFIED.

    Args:
        fused: ``[B, C, H, W]`` fused image, display-referred ``[0, 1]`` by default.
        sources: ``[B, K, C, H, W]`` source exposures (``K >= 1``), same domain.
        data_range, win_size, sigma, k2, p, grayscale, eps: see :func:`mef_ssim_map`.

    Returns:
        ``[B]`` scores in ``[-1, 1]`` (1: the fused image has the desired contrast and structure everywhere).
    """
    q = mef_ssim_map(fused, sources, data_range=data_range, win_size=win_size, sigma=sigma, k2=k2, p=p,
                     grayscale=grayscale, eps=eps)
    return q.flatten(1).mean(dim=1)
