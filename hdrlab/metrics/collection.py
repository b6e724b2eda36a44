"""Build the validation metric set by name.

Keys (a contract used by logging and sweeps): ``val/<metric>`` for region ``"all"`` and
``val/<metric>_<region>`` otherwise, e.g. ``val/psnr_mu``, ``val/psnr_mu_clipped``. A metric class
that declares ``supported_regions`` (the ``kalantari2017`` metrics: ``("all",)``) is built only on
those regions.

:data:`PROTOCOLS` names complete evaluation protocols (metric list, alignment, regions):
``hdrlab`` (the default everywhere: :data:`DEFAULT_METRICS`, median alignment, regions all and
clipped; :mod:`hdrlab.metrics.base`) and ``kalantari2017`` (PSNR-L, PSNR-mu, SSIM-L, SSIM-mu of the
multi-exposure benchmark, no alignment, whole images; :mod:`hdrlab.metrics.kalantari`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torchmetrics import MetricCollection

from hdrlab.errors import ConfigError
from hdrlab.metrics.base import REGIONS, HDRImageMetric
from hdrlab.metrics.bias import Log2Ratio
from hdrlab.metrics.kalantari import K17PSNRL, K17PSNRMu, K17SSIML, K17SSIMMu
from hdrlab.metrics.perceptual import CVVDP, LPIPSMetric
from hdrlab.metrics.psnr import PSNRL, PSNRMu, PU21PSNR
from hdrlab.metrics.ssim import MSSSIM, PU21SSIM

__all__ = ["DEFAULT_METRICS", "METRICS", "PROTOCOLS", "Protocol", "build_metric", "build_metrics", "get_protocol",
           "metric_key"]

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
    "k17_psnr_mu": K17PSNRMu,
    "k17_psnr_l": K17PSNRL,
    "k17_ssim_mu": K17SSIMMu,
    "k17_ssim_l": K17SSIML,
}
#: the default list (LPIPS needs optional weights, so it is only built when asked for).
DEFAULT_METRICS: tuple[str, ...] = ("psnr_mu", "psnr_l", "pu21_psnr", "pu21_ssim", "ms_ssim", "cvvdp")


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: which metrics, with which scale alignment, on which regions.

    Attributes:
        name: the protocol's name (a key of :data:`PROTOCOLS`).
        metrics: metric names (keys of :data:`METRICS`); the first is the protocol's main metric.
        align: scale alignment (``none`` / ``median`` / ``lsq_log``).
        regions: regions each metric is built on.
        description: one line naming the protocol's source.
    """

    name: str
    metrics: tuple[str, ...]
    align: str
    regions: tuple[str, ...]
    description: str


#: protocol name -> :class:`Protocol`; ``hdrlab`` is the default everywhere.
PROTOCOLS: dict[str, Protocol] = {
    "hdrlab": Protocol("hdrlab", DEFAULT_METRICS, "median", ("all", "clipped"),
                       "hdrlab: median scale alignment on unclipped pixels, regions all and clipped"),
    "kalantari2017": Protocol("kalantari2017", ("k17_psnr_mu", "k17_psnr_l", "k17_ssim_mu", "k17_ssim_l"), "none",
                              ("all",), "Kalantari & Ramamoorthi 2017: PSNR/SSIM on linear and mu-law (mu = 5000) "
                              "RGB, radiance relative to the darkest exposure, no alignment"),
}


def get_protocol(name: str) -> Protocol:
    """The :class:`Protocol` called ``name``; :class:`ConfigError` naming the choices otherwise."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


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
        if region in getattr(METRICS.get(name), "supported_regions", REGIONS)
    }
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)
