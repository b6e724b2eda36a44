"""PSNR-type HDR metrics: PSNR-mu, PSNR-L and PU21-PSNR (protocol in :mod:`hdrlab.metrics.base`).

- ``psnr_mu`` / ``psnr_l`` (Kalantari & Ramamoorthi 2017 convention): after alignment, both images are
  divided by the reference's 99.9th percentile (per image, over all channel values; a nearest-rank
  percentile) and clamped to ``[0, 1]``; PSNR-L is PSNR with peak 1 on these, PSNR-mu on their
  mu-law :math:`T(x) = \\log(1 + \\mu x) / \\log(1 + \\mu)`, mu = 5000 (eq. 2). The p99.9
  normalisation replaces the multi-exposure datasets' natural [0, 1] range; it is our choice,
  unverified against any paper's code.
- ``pu21_psnr`` (Mantiuk & Azimi 2021, reference ``pu21_metric(..., 'PSNR')``): PSNR with peak 256 on
  PU21-encoded **RGB** (``to_nits`` with ``white_nits``; ``pu21_metric`` applies PSNR on colour and
  only SSIM/MS-SSIM on luminance; ``channels="luminance"`` gives its 'PSNRY' variant).

Identical images give 100 dB (cap, see :func:`hdrlab.metrics.base.psnr_from_mse`), not inf.
"""

from __future__ import annotations

import torch

from hdrlab.camera import luminance, to_nits
from hdrlab.errors import ConfigError
from hdrlab.metrics.base import HDRImageMetric, masked_mean_per_image, psnr_from_mse
from hdrlab.metrics.pu21 import PU21_PSNR_PEAK, pu21_encode
from hdrlab.tonemap import mu_law

__all__ = ["PSNRL", "PSNRMu", "PU21PSNR", "normalise_by_reference_percentile"]


def normalise_by_reference_percentile(
    pred: torch.Tensor, target: torch.Tensor, *, q: float = 0.999
) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide both images by the reference's per-image ``q`` percentile and clamp to ``[0, 1]``.

    Args:
        pred: linear ``[B, 3, H, W]``.
        target: linear ``[B, 3, H, W]``.
        q: the percentile in ``(0, 1]`` (nearest rank over all channel values of each reference).

    Returns:
        ``(pred_n, target_n)`` in ``[0, 1]``, same shapes.
    """
    flat = target.flatten(1)
    k = max(1, min(flat.shape[1], int(round(q * flat.shape[1]))))
    ref = flat.kthvalue(k, dim=1).values.clamp_min(torch.finfo(target.dtype).tiny).view(-1, 1, 1, 1)
    return (pred / ref).clamp(0.0, 1.0), (target / ref).clamp(0.0, 1.0)


class PSNRMu(HDRImageMetric):
    """PSNR on mu-law tone-mapped, p99.9-normalised images (``psnr_mu``), in dB.

    Args:
        mu: mu-law strength (5000, Kalantari & Ramamoorthi 2017).
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    def __init__(self, *, mu: float = 5000.0, region: str = "all", align: str = "median",
                 white_nits: float = 200.0, **kwargs) -> None:
        super().__init__(region=region, align=align, white_nits=white_nits, **kwargs)
        self.mu = float(mu)

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        p, t = normalise_by_reference_percentile(pred.double(), target.double())
        mse = masked_mean_per_image((mu_law(p, self.mu) - mu_law(t, self.mu)) ** 2, region)
        return psnr_from_mse(mse, 1.0)


class PSNRL(HDRImageMetric):
    """PSNR on linear p99.9-normalised images, peak 1 (``psnr_l``), in dB.

    Args:
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        p, t = normalise_by_reference_percentile(pred.double(), target.double())
        return psnr_from_mse(masked_mean_per_image((p - t) ** 2, region), 1.0)


class PU21PSNR(HDRImageMetric):
    """PSNR with peak 256 on PU21-encoded absolute RGB (``pu21_psnr``), in dB.

    Args:
        channels: ``"rgb"`` (``pu21_metric`` 'PSNR', default) or ``"luminance"`` ('PSNRY').
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    def __init__(self, *, channels: str = "rgb", region: str = "all", align: str = "median",
                 white_nits: float = 200.0, **kwargs) -> None:
        super().__init__(region=region, align=align, white_nits=white_nits, **kwargs)
        if channels not in ("rgb", "luminance"):
            raise ConfigError(f"PU21PSNR channels must be 'rgb' or 'luminance', got {channels!r}")
        self.channels = channels

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        p = to_nits(pred.double(), white_nits=self.white_nits)
        t = to_nits(target.double(), white_nits=self.white_nits)
        if self.channels == "luminance":
            p, t = luminance(p), luminance(t)
        mse = masked_mean_per_image((pu21_encode(p) - pu21_encode(t)) ** 2, region)
        return psnr_from_mse(mse, PU21_PSNR_PEAK)
