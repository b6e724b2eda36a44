"""SSIM-type HDR metrics on PU21 luminance: PU21-SSIM and MS-SSIM.

Convention of the reference ``pu21_metric`` (Mantiuk & Azimi 2021): SSIM / MS-SSIM are computed on
the PU21 encoding of absolute **luminance** (``to_nits`` with ``white_nits``, Rec.709 weights) with
dynamic range 256. SSIM is torchmetrics' (Gaussian window 11, sigma 1.5, K = (0.01, 0.03), reflect
padding; Wang et al. 2004, eq. 13); MS-SSIM is torchmetrics' (5 scales, Wang et al. 2003).

Regions: ``pu21_ssim`` averages the SSIM map over the region's pixels; ``ms_ssim`` has no single
map and scores the reference-filled composite (:func:`hdrlab.metrics.base.reference_fill`).
MS-SSIM with the default 11-px window and 5 scales needs ``min(H, W) >= 176``
(``min(H, W) // 16 > 10``); smaller images fall back to SSIM with a warning.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from hdrlab.camera import luminance, to_nits
from hdrlab.metrics.base import HDRImageMetric, reference_fill
from hdrlab.metrics.pu21 import PU21_PSNR_PEAK, pu21_encode

__all__ = ["MSSSIM", "PU21SSIM", "MSSSIM_MIN_SIZE", "pu21_luminance"]

#: smallest image side accepted by 5-scale MS-SSIM with an 11-px window.
MSSSIM_MIN_SIZE: int = 176


def pu21_luminance(x: torch.Tensor, *, white_nits: float = 200.0) -> torch.Tensor:
    """PU21 encoding of the absolute luminance of a relative linear image.

    Args:
        x: linear radiance ``[B, 3, H, W]`` (1.0 -> ``white_nits`` cd/m^2).
        white_nits: cd/m^2 of radiance 1.0.

    Returns:
        PU21 values ``[B, 1, H, W]`` (about ``[0, 595]``).
    """
    return pu21_encode(luminance(to_nits(x, white_nits=white_nits)))


class PU21SSIM(HDRImageMetric):
    """SSIM on PU21 luminance, data range 256 (``pu21_ssim``); the map is averaged over the region.

    Args:
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        p = pu21_luminance(pred.double(), white_nits=self.white_nits)
        t = pu21_luminance(target.double(), white_nits=self.white_nits)
        _, ssim_map = structural_similarity_index_measure(
            p, t, data_range=PU21_PSNR_PEAK, reduction="none", return_full_image=True
        )
        m = region.to(ssim_map.dtype)
        return (ssim_map * m).flatten(1).sum(1) / m.flatten(1).sum(1)


class MSSSIM(HDRImageMetric):
    """MS-SSIM on PU21 luminance, data range 256 (``ms_ssim``); regions by reference fill.

    Images smaller than 176 px fall back to single-scale SSIM (mean map) with a ``UserWarning``.

    Args:
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        filled = reference_fill(pred, target, region)
        p = pu21_luminance(filled.double(), white_nits=self.white_nits)
        t = pu21_luminance(target.double(), white_nits=self.white_nits)
        if min(p.shape[-2:]) < MSSSIM_MIN_SIZE:
            warnings.warn(
                f"ms_ssim: image {tuple(p.shape[-2:])} is smaller than {MSSSIM_MIN_SIZE} px, "
                "the 5-scale MS-SSIM is undefined; falling back to single-scale SSIM",
                UserWarning,
                stacklevel=2,
            )
            return structural_similarity_index_measure(p, t, data_range=PU21_PSNR_PEAK, reduction="none")
        return multiscale_structural_similarity_index_measure(p, t, data_range=PU21_PSNR_PEAK, reduction="none")
