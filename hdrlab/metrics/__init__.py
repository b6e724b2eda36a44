"""HDR image metrics as torchmetrics ``Metric``s, PU21 encoding and scale alignment.

The shared evaluation protocol (clip mask, alignment, regions, accumulation) is described in
:mod:`hdrlab.metrics.base`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module; imported on first use (PEP 562), so that ``hdrlab.metrics.alignment`` and
#: the command line's early checks do not pay for torchmetrics
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ALIGN_MODES", "align_scale", "estimate_scale"), "hdrlab.metrics.alignment"),
    "Log2Ratio": "hdrlab.metrics.bias",
    **dict.fromkeys(("REGIONS", "HDRImageMetric", "clip_mask_from_reference", "region_mask"), "hdrlab.metrics.base"),
    **dict.fromkeys(("DEFAULT_METRICS", "METRICS", "PROTOCOLS", "Protocol", "build_metric", "build_metrics",
                     "get_protocol", "metric_key"), "hdrlab.metrics.collection"),
    **dict.fromkeys(("K17PSNRL", "K17PSNRMu", "K17SSIML", "K17SSIMMu", "darkest_relative_scale"),
                    "hdrlab.metrics.kalantari"),
    **dict.fromkeys(("CVVDP", "LPIPSMetric"), "hdrlab.metrics.perceptual"),
    **dict.fromkeys(("PSNRL", "PSNRMu", "PU21PSNR"), "hdrlab.metrics.psnr"),
    **dict.fromkeys(("PU21_PSNR_PEAK", "pu21_decode", "pu21_encode"), "hdrlab.metrics.pu21"),
    **dict.fromkeys(("MSSSIM", "PU21SSIM", "pu21_luminance"), "hdrlab.metrics.ssim"),
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdrlab.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


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
