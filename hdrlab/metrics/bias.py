"""Signed exposure bias of a prediction: how many stops it sits above (+) or below (-) the truth.

``log2_ratio`` = per image, the mean over the region's channel values of
``log2(max(pred, floor) / max(gt, floor))`` after the protocol's scale alignment
(:mod:`hdrlab.metrics.base`). On the *clipped* region it separates over-hallucination (> 0) from
under-hallucination (< 0; a method that leaves clipped pixels at the clipping level sits below
the truth there). A diagnostic, not a quality score: 0 is best and errors of opposite sign
cancel, so read it next to a PSNR-type metric.
"""

from __future__ import annotations

import torch

from hdrlab.metrics.base import HDRImageMetric, masked_mean_per_image

__all__ = ["Log2Ratio"]


class Log2Ratio(HDRImageMetric):
    """Mean ``log2(pred / gt)`` over the region (stops; ``log2_ratio``), signed.

    Args:
        floor: relative radiance below which values are clamped before the logarithm.
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    higher_is_better = None

    def __init__(self, *, floor: float = 1e-6, region: str = "all", align: str = "median",
                 white_nits: float = 200.0, **kwargs) -> None:
        super().__init__(region=region, align=align, white_nits=white_nits, **kwargs)
        self.floor = float(floor)

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        ratio = torch.log2(pred.double().clamp_min(self.floor)) - torch.log2(target.double().clamp_min(self.floor))
        return masked_mean_per_image(ratio, region)
