r"""The multi-exposure HDR benchmark protocol of Kalantari & Ramamoorthi 2017 (``kalantari2017``).

Four metrics, registered as ``k17_psnr_l``, ``k17_psnr_mu``, ``k17_ssim_l`` and ``k17_ssim_mu``
(:data:`hdrlab.metrics.collection.PROTOCOLS`). With :math:`\hat H` the estimate, :math:`H` the
ground truth (both linear RGB ``[3, H, W]``), :math:`\mu = 5000` and the range compressor

.. math:: T(x) = \frac{\log(1 + \mu x)}{\log(1 + \mu)},

per image:

- PSNR-L  :math:`= 10 \log_{10}(1 / \mathrm{MSE}(\mathrm{clip}(\hat H), H))`;
- PSNR-mu :math:`= 10 \log_{10}(1 / \mathrm{MSE}(T(\mathrm{clip}(\hat H)), T(H)))`;
- SSIM-L  :math:`= \mathrm{SSIM}(\mathrm{clip}(\hat H), \mathrm{clip}(H))`;
- SSIM-mu :math:`= \mathrm{SSIM}(T(\mathrm{clip}(\hat H)), \mathrm{clip}(T(H)))`;

``clip`` = clamp to ``[0, 1]``; MSE is the mean over every pixel *and* channel; the set value is the
mean of the per-image values.

Conventions and the file each follows:

- **PSNR** (peak 1, MSE over all values of the image, no channel weighting): ``Functions/ComputePSNR.m``;
  **mu-law** ``log(1 + mu x) / log(1 + mu)`` with ``mu = 5000`` (``Functions/InitParam.m``):
  ``Functions/RangeCompressor.m``; **per-image PSNR, averaged over the scenes** (not one MSE over the
  set): ``Functions/TestDuringTraining.m`` (``error + curError / numScenes``) and the per-scene
  ``error.txt`` of ``Functions/GenerateHDR.m``. All in Kalantari's MATLAB release as embedded in
  github.com/nsgaudio/HDR_Dynamic_Scenes, commit 3b9bf17a913569fc8b737258acb8382a9e7c59e4.
- **Normalisation**: none. Values are scored as the ground truth stores them, radiance relative to the
  darkest exposure with ``t = 1`` (the release's ``HDRImg.hdr``; ``Functions/ReadExpoTimes.m`` reads
  exposure biases with the darkest at 0, ``Functions/LDRtoHDR.m`` divides by ``2^bias``), so the
  ground truth lies in ``[0, 1]``; no scale alignment (``align`` must be ``"none"``). In a training or
  test run, where hdrlab's ``hdr`` is relative to the input exposure, ``update(..., scale=s)``
  multiplies both images by ``s`` first (:func:`darkest_relative_scale`).
- **Clipping of the estimate**: the estimate is clamped to ``[0, 1]`` before every metric. The
  release's ``ComputePSNR.m`` does not clip (``im2single`` leaves single data unchanged), but its
  estimate cannot leave ``[0, 1]``: it is a weighted average of ``LDR^gamma / 2^bias`` with LDR in
  ``[0, 1]`` and ``bias >= 0`` (``Functions/WeightedAverage.m``); the later official code below
  predicts through a sigmoid. The clamp therefore changes nothing for those estimates and keeps
  ``T`` defined (``log`` of a negative) for methods whose output is unbounded. The ground truth is
  not clipped for PSNR (as the release), and clipped to ``[0, 1]`` for SSIM (as the SSIM code below).
- **Colour**: RGB as stored, no colour conversion, no luminance.
- **Border crop**: ``border`` pixels removed on every side of both images before scoring; 0 (the
  full frame) in the preset. The nsgaudio copy of ``Functions/GenerateHDR.m`` crops a 50-pixel frame
  (the label by 50, the estimate of the unpadded network, already 6 px smaller, by 44), but that file
  was edited in the copy (it calls the copy's ``TRANSFEREvaluateSystem``), so whether Kalantari's
  release scores with that crop is **unverified**; the widely used Python evaluation of this benchmark
  (the SSIM code below) scores the full frame. ``border=50`` reproduces the ``GenerateHDR.m`` crop.
- **SSIM**: Kalantari's release computes no SSIM. SSIM-L / SSIM-mu follow the official PyTorch code of
  HDR-Transformer (Liu et al. 2022), github.com/liuzhen03/HDR-Transformer-PyTorch, commit
  22389085c67b8111d08575caaa23294bc5cb88d8, ``test.py`` and ``utils/utils.py`` (``calculate_ssim``,
  the evaluation later methods on this benchmark reuse): Wang et al. 2004 SSIM with
  ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, data range ``L = 1`` (theirs: values x 255 with ``L = 255``,
  the same number), an 11 x 11 Gaussian window with sigma 1.5 (normalised to sum 1), population
  (biased) local variances, **valid** windows only (no padding: the map is ``(H - 10) x (W - 10)``),
  each colour channel filtered separately, and the score is the mean of the map over the valid
  positions and the three channels (= the mean of the per-channel SSIMs). Their PSNR-L / PSNR-mu
  (``compare_psnr(..., data_range=1.0)``) equal the release's equations above.
  MATLAB's ``ssim`` differs and is **not** what is implemented: it pads (``'replicate'``) and averages
  the full-size map, and given an ``H x W x 3`` array it treats it as a volume (a 3-D Gaussian also
  across the channels) rather than averaging per-channel SSIMs (from MATLAB's documentation; not run here).

Unverified: the border crop of Kalantari's own release (above); whether every later paper clips
the estimate for PSNR (HDR-Transformer does not, its sigmoid output needs none). Identical images
score 100 dB (:func:`hdrlab.metrics.base.psnr_from_mse`) instead of ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from hdrlab.errors import ConfigError
from hdrlab.metrics.base import HDRImageMetric, _as_batch, psnr_from_mse

__all__ = [
    "K17_MU",
    "K17PSNRL",
    "K17PSNRMu",
    "K17SSIML",
    "K17SSIMMu",
    "KalantariMetric",
    "darkest_relative_scale",
    "range_compressor",
    "ssim_valid",
]

#: mu of the range compressor (``Functions/InitParam.m``).
K17_MU: float = 5000.0
#: SSIM window side and Gaussian sigma (``calculate_ssim`` of HDR-Transformer-PyTorch).
SSIM_WINDOW: int = 11
SSIM_SIGMA: float = 1.5


def range_compressor(x: torch.Tensor, *, mu: float = K17_MU) -> torch.Tensor:
    r""":math:`T(x) = \log(1 + \mu x) / \log(1 + \mu)` (``Functions/RangeCompressor.m``)."""
    return torch.log1p(mu * x) / math.log1p(mu)


def ssim_valid(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0,
               window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-image SSIM: valid Gaussian windows, channels separately, mean over positions and channels.

    Args:
        x: ``[B, C, H, W]``.
        y: ``[B, C, H, W]``.
        data_range: ``L`` in ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.
        window: window side (odd).
        sigma: Gaussian sigma.

    Returns:
        ``[B]`` (float64).

    Raises:
        ConfigError: an image side is smaller than ``window``.
    """
    if min(x.shape[-2:]) < window:
        raise ConfigError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(x.shape[-2:])}; "
                          "score larger images or use a smaller border")
    import pytorch_msssim

    # pytorch_msssim: separable Gaussian window without padding, per channel, mean over positions and channels
    return pytorch_msssim.ssim(x.double(), y.double(), data_range=data_range, size_average=False,
                               win_size=window, win_sigma=sigma, K=(0.01, 0.03))


def darkest_relative_scale(batch: Mapping[str, Any]) -> torch.Tensor:
    """Per-image factor taking a batch's ``hdr`` (relative to the input exposure) to the protocol's scale.

    - With an exposure bracket (``ev [B, N]``, ``log2(t / t_input)``, ascending): ``2 ** ev[:, 0]``,
      radiance relative to the darkest exposure with ``t = 1``, where that exposure clips at 1 (the
      scale of Kalantari's ``HDRImg.hdr``).
    - Without one (single-image data): ``1 / max(hdr)`` per image (over all channel values), so the
      ground truth spans ``[0, 1]`` as a darkest exposure that just does not clip would give.

    Args:
        batch: a mapping with ``hdr [B, 3, H, W]`` and optionally ``ev [B, N]``.

    Returns:
        ``[B]`` scales in the dtype of ``hdr`` (float32 for integer data).
    """
    hdr = batch["hdr"]
    dtype = hdr.dtype if hdr.is_floating_point() else torch.float32
    ev = batch.get("ev")
    if ev is not None:
        return torch.exp2(ev[:, 0].to(device=hdr.device, dtype=dtype))
    peak = hdr.to(dtype).flatten(1).amax(1)
    return 1.0 / peak.clamp_min(torch.finfo(dtype).tiny)


class KalantariMetric(HDRImageMetric):
    """Base of the ``kalantari2017`` metrics (module docstring): no alignment, region ``all`` only,
    optional border crop and per-image scale, the estimate clamped to ``[0, 1]``.

    Args:
        border: pixels cropped from every side before scoring (0: full frame).
        mu: range-compressor strength.
        region: must be ``"all"`` (the protocol scores whole images).
        align: must be ``"none"`` (the protocol scores on the stored scale).
        white_nits: unused (kept for a uniform constructor).
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    #: the regions this metric can be built on (:func:`hdrlab.metrics.collection.build_metrics`).
    supported_regions: tuple[str, ...] = ("all",)

    def __init__(self, *, border: int = 0, mu: float = K17_MU, region: str = "all", align: str = "none",
                 white_nits: float = 200.0, **kwargs) -> None:
        name = type(self).__name__
        if region != "all":
            raise ConfigError(f"{name} scores whole images (region 'all'), got region={region!r}; "
                              "use hdrlab's own metrics for clipped/unclipped regions")
        if align != "none":
            raise ConfigError(f"{name} scores on the ground truth's stored scale without alignment, got "
                              f"align={align!r}; use align 'none' (--protocol kalantari2017 sets it)")
        if not (isinstance(border, int) and border >= 0):
            raise ConfigError(f"{name}.border must be a whole number of pixels >= 0, got {border!r}")
        if not mu > 0:
            raise ConfigError(f"{name}.mu must be > 0, got {mu}")
        super().__init__(region=region, align=align, white_nits=white_nits, **kwargs)
        self.border = border
        self.mu = float(mu)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        b = self.border
        if b == 0:
            return x
        if min(x.shape[-2:]) <= 2 * b:
            raise ConfigError(f"{type(self).__name__}: border {b} leaves nothing of a {tuple(x.shape[-2:])} image; "
                              "use a smaller border")
        return x[..., b:-b, b:-b]

    def per_image(self, pred: torch.Tensor, target: torch.Tensor, clip_mask: torch.Tensor | None = None,
                  *, scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """Per-image values ``[B]`` (float64) without touching the state.

        Args:
            pred: estimate ``[B, 3, H, W]`` or ``[3, H, W]``, linear.
            target: ground truth, same shape, linear.
            clip_mask: ignored (the protocol has no regions or alignment).
            scale: per-image factor ``[B]`` (or a number) applied to both images first; None uses
                the values as given (:func:`darkest_relative_scale` gives it for hdrlab batches).
        """
        p = _as_batch(pred, "prediction").double()
        t = _as_batch(target, "reference").double()
        if p.shape != t.shape or p.shape[1] != 3:
            raise ConfigError(f"prediction {tuple(p.shape)} and reference {tuple(t.shape)} must both be [B,3,H,W]")
        if scale is not None:
            s = torch.as_tensor(scale, dtype=torch.float64, device=p.device).reshape(-1)
            if s.numel() not in (1, p.shape[0]):
                raise ConfigError(f"scale has {s.numel()} values for {p.shape[0]} images; give one per image")
            s = s.view(-1, 1, 1, 1)
            p, t = p * s, t * s
        p, t = self._crop(p), self._crop(t)
        return self._score(p.clamp(0.0, 1.0), t)

    def _score(self, est: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """``[B]`` values of the clamped estimate ``est`` against the ground truth ``gt`` (both cropped)."""
        raise NotImplementedError

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        return self._score(self._crop(pred.double()).clamp(0.0, 1.0), self._crop(target.double()))

    def update(self, pred: torch.Tensor, target: torch.Tensor, clip_mask: torch.Tensor | None = None,
               *, scale: torch.Tensor | float | None = None) -> None:
        """Accumulate a batch (arguments of :meth:`per_image`)."""
        values = self.per_image(pred, target, clip_mask, scale=scale)
        keep = ~torch.isnan(values)
        self.value_sum += values[keep].sum()
        self.n_images += keep.sum()


class K17PSNRL(KalantariMetric):
    """PSNR-L (``k17_psnr_l``): PSNR, peak 1, of the linear images, in dB (module docstring)."""

    def _score(self, est: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return psnr_from_mse(((est - gt) ** 2).flatten(1).mean(1), 1.0)


class K17PSNRMu(KalantariMetric):
    """PSNR-mu (``k17_psnr_mu``): PSNR, peak 1, of the range-compressed images, in dB (module docstring)."""

    def _score(self, est: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        diff = range_compressor(est, mu=self.mu) - range_compressor(gt, mu=self.mu)
        return psnr_from_mse((diff**2).flatten(1).mean(1), 1.0)


class K17SSIML(KalantariMetric):
    """SSIM-L (``k17_ssim_l``): SSIM of the linear images clamped to ``[0, 1]`` (module docstring)."""

    def _score(self, est: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return ssim_valid(est, gt.clamp(0.0, 1.0))


class K17SSIMMu(KalantariMetric):
    """SSIM-mu (``k17_ssim_mu``): SSIM of the range-compressed images clamped to ``[0, 1]`` (module docstring)."""

    def _score(self, est: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return ssim_valid(range_compressor(est, mu=self.mu), range_compressor(gt, mu=self.mu).clamp(0.0, 1.0))
