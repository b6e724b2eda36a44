"""Build the validation metric set by name.

Keys (a contract used by logging and sweeps): ``val/<metric>`` for region ``"all"`` and
``val/<metric>_<region>`` otherwise, e.g. ``val/psnr_mu``, ``val/psnr_mu_clipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torchmetrics import MetricCollection

from hdrlab.errors import ConfigError
from hdrlab.metrics.base import REGIONS, HDRImageMetric
from hdrlab.metrics.bias import Log2Ratio
from hdrlab.metrics.perceptual import CVVDP, LPIPSMetric
from hdrlab.metrics.psnr import PSNRL, PSNRMu, PU21PSNR
from hdrlab.metrics.ssim import MSSSIM, PU21SSIM

__all__ = ["DEFAULT_METRICS", "METRICS", "build_metric", "build_metrics", "metric_key"]

#: metric name -> class.
METRICS: dict[str, Callable[..., HDRImageMetric]] = {
    "psnr_mu": PSNRMu,
    "psnr_l": PSNRL,
    "pu21_psnr": PU21PSNR,
    "pu21_ssim": PU21SSIM,
    "ms_ssim": MSSSIM,
    "lpips": LPIPSMetric,
    "cvvdp": CVVDP,
    "log2_ratio": Log2Ratio,
}
#: the default list (LPIPS needs optional weights, so it is only built when asked for).
DEFAULT_METRICS: tuple[str, ...] = ("psnr_mu", "psnr_l", "pu21_psnr", "pu21_ssim", "ms_ssim", "cvvdp")


def metric_key(name: str, region: str = "all") -> str:
    """The collection key (without prefix) of metric ``name`` on ``region``: ``name`` or ``name_region``."""
    return name if region == "all" else f"{name}_{region}"


def build_metric(
    name: str, *, region: str = "all", align: str = "median", white_nits: float = 200.0, lpips_pretrained: bool = True
) -> HDRImageMetric:
    """Instantiate one metric by name.

    Args:
        name: one of :data:`METRICS`.
        region: ``"all"``, ``"clipped"`` or ``"unclipped"``.
        align: scale alignment ``"none"``, ``"median"`` or ``"lsq_log"``.
        white_nits: cd/m^2 of radiance 1.0.
        lpips_pretrained: False builds LPIPS with a random trunk (tests only, not a valid metric).

    Returns:
        The metric.
    """
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    if region not in REGIONS:
        raise ConfigError(f"unknown region {region!r}; choose one of {list(REGIONS)}")
    kwargs = {"pretrained": lpips_pretrained} if name == "lpips" else {}
    return METRICS[name](region=region, align=align, white_nits=white_nits, **kwargs)


def build_metrics(
    names: Sequence[str] = DEFAULT_METRICS,
    *,
    regions: Sequence[str] = ("all", "clipped"),
    align: str = "median",
    white_nits: float = 200.0,
    prefix: str = "val/",
    lpips_pretrained: bool = True,
) -> MetricCollection:
    """A :class:`torchmetrics.MetricCollection` of every metric on every region.

    ``compute_groups`` is off: these metrics share state names, and grouping would merge metrics
    whose first-batch states happen to coincide.

    Args:
        names: metric names (see :data:`METRICS`); a comma-separated string is accepted too.
        regions: regions to build for each metric.
        align: scale alignment for all metrics.
        white_nits: cd/m^2 of radiance 1.0.
        prefix: key prefix (``"val/"`` gives ``val/psnr_mu``, ``val/psnr_mu_clipped``).
        lpips_pretrained: see :func:`build_metric`.

    Returns:
        The collection; call it with ``(pred, target, clip_mask=...)``.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    metrics = {
        metric_key(name, region): build_metric(
            name, region=region, align=align, white_nits=white_nits, lpips_pretrained=lpips_pretrained
        )
        for name in names
        for region in regions
    }
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)
