"""Display-domain metrics, for methods whose output is a display image (``output_domain = "display"``).

Display mergers (Mertens, CF-Net) produce a fused image in ``[0, 1]``, not radiance. They are scored
against the documented display mapping of the ground truth, ``hdrlab.tonemap.display(hdr)``, with
their own metric columns (``display_psnr``, ``display_ssim``) so they are never mixed with the HDR
metrics. No scale alignment (a display image has a fixed scale); the clip mask and regions follow
:mod:`hdrlab.metrics.base`.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.functional.image import structural_similarity_index_measure

from hdrlab.metrics.base import HDRImageMetric, masked_mean_per_image, psnr_from_mse

__all__ = ["DisplayPSNR", "DisplaySSIM", "build_display_metrics"]


class DisplayPSNR(HDRImageMetric):
    """PSNR (peak 1) between display images in ``[0, 1]`` over the region (``display_psnr``), in dB."""

    def __init__(self, *, region: str = "all", **kwargs) -> None:
        super().__init__(region=region, align="none", **kwargs)

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        err = (pred.clamp(0, 1) - target.clamp(0, 1)).square().mean(dim=1, keepdim=True)
        return psnr_from_mse(masked_mean_per_image(err, region), 1.0)


class DisplaySSIM(HDRImageMetric):
    """SSIM (data range 1) between display images; the SSIM map is averaged over the region (``display_ssim``)."""

    def __init__(self, *, region: str = "all", **kwargs) -> None:
        super().__init__(region=region, align="none", **kwargs)

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        _, ssim_map = structural_similarity_index_measure(
            pred.clamp(0, 1), target.clamp(0, 1), data_range=1.0, reduction="none", return_full_image=True
        )
        return masked_mean_per_image(ssim_map.mean(dim=1, keepdim=True), region)


def build_display_metrics(*, regions: tuple[str, ...] = ("all", "clipped"), prefix: str = "val/") -> MetricCollection:
    """``{prefix}display_psnr[_clipped]`` and ``{prefix}display_ssim[_clipped]``."""
    metrics = {}
    for region in regions:
        suffix = "" if region == "all" else f"_{region}"
        metrics[f"{prefix}display_psnr{suffix}"] = DisplayPSNR(region=region)
        metrics[f"{prefix}display_ssim{suffix}"] = DisplaySSIM(region=region)
    return MetricCollection(metrics, compute_groups=False)
