"""HDR image metrics as torchmetrics ``Metric``s, PU21 encoding and scale alignment.

The shared evaluation protocol (clip mask, alignment, regions, accumulation) is described in
:mod:`hdrlab.metrics.base`.
"""

from hdrlab.metrics.alignment import ALIGN_MODES, align_scale, estimate_scale
from hdrlab.metrics.bias import Log2Ratio
from hdrlab.metrics.base import REGIONS, HDRImageMetric, clip_mask_from_reference, region_mask
from hdrlab.metrics.collection import (
    DEFAULT_METRICS,
    METRICS,
    PROTOCOLS,
    Protocol,
    build_metric,
    build_metrics,
    get_protocol,
    metric_key,
)
from hdrlab.metrics.kalantari import K17PSNRL, K17PSNRMu, K17SSIML, K17SSIMMu, darkest_relative_scale
from hdrlab.metrics.perceptual import CVVDP, LPIPSMetric
from hdrlab.metrics.psnr import PSNRL, PSNRMu, PU21PSNR
from hdrlab.metrics.pu21 import PU21_PSNR_PEAK, pu21_decode, pu21_encode
from hdrlab.metrics.ssim import MSSSIM, PU21SSIM, pu21_luminance

__all__ = [
    "ALIGN_MODES",
    "CVVDP",
    "DEFAULT_METRICS",
    "K17PSNRL",
    "K17PSNRMu",
    "K17SSIML",
    "K17SSIMMu",
    "METRICS",
    "PROTOCOLS",
    "Protocol",
    "MSSSIM",
    "PSNRL",
    "PSNRMu",
    "PU21PSNR",
    "PU21SSIM",
    "PU21_PSNR_PEAK",
    "REGIONS",
    "HDRImageMetric",
    "LPIPSMetric",
    "Log2Ratio",
    "align_scale",
    "build_metric",
    "build_metrics",
    "clip_mask_from_reference",
    "darkest_relative_scale",
    "estimate_scale",
    "get_protocol",
    "metric_key",
    "pu21_decode",
    "pu21_encode",
    "pu21_luminance",
    "region_mask",
]
