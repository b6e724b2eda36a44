"""Shared protocol of hdrlab's HDR image metrics: clip masks, regions, alignment, accumulation.

Protocol (after Hanji et al. 2022 and Eilertsen et al. 2021), applied by every metric's ``update``:

1. **Clip mask** ``[B, 1, H, W]``: the input LDR's clip mask passed as ``clip_mask``; when it is
   None it is derived from the reference as ``max_c(gt) >= 1`` (the project's radiance
   convention: the input clips where ``hdr >= 1``).
2. **Alignment**: the prediction is rescaled per image (:func:`hdrlab.metrics.alignment.align_scale`)
   fitted on pixels *unclipped* in the input.
3. **Region**: ``"all"``, ``"clipped"`` (clip mask) or ``"unclipped"``. PSNR-type metrics average
   the squared error over the region's pixels only; SSIM-type metrics average their SSIM map over
   the region; metrics without a usable map (MS-SSIM, ColorVideoVDP) score a composite in which the
   prediction is replaced by the reference *outside* the region ("reference fill"), so they see
   only the region's errors (diluted by the region's area: compare methods on equal masks only).
4. **Accumulation**: one value per image; the state is the sum of per-image values and the image
   count (``dist_reduce_fx="sum"``, so DDP syncs), ``compute`` returns their mean. An image whose
   region is empty (e.g. nothing clipped) is skipped; with no counted image ``compute`` is NaN.

Unverified against the papers' code: the p99.9 normalisation of PSNR-mu/PSNR-L, the pixel set of
the scale fit, and pooling per image then averaging (vs pooling over the whole test set).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torchmetrics import Metric

from hdrlab.errors import ConfigError
from hdrlab.metrics.alignment import ALIGN_MODES, align_scale

__all__ = ["REGIONS", "HDRImageMetric", "clip_mask_from_reference", "psnr_from_mse", "reference_fill", "region_mask"]

REGIONS: tuple[str, ...] = ("all", "clipped", "unclipped")


def clip_mask_from_reference(gt: torch.Tensor, *, threshold: float = 1.0) -> torch.Tensor:
    """Clip mask ``max_c(gt) >= threshold`` for when the input LDR is not available.

    Args:
        gt: reference linear HDR ``[B, 3, H, W]`` (input clip level = 1).
        threshold: the radiance at which the input clipped.

    Returns:
        bool mask ``[B, 1, H, W]``.
    """
    return gt.amax(dim=-3, keepdim=True) >= threshold


def region_mask(clip_mask: torch.Tensor, region: str) -> torch.Tensor:
    """Pixels of ``region`` given the input's clip mask.

    Args:
        clip_mask: bool mask ``[B, 1, H, W]``, True where the input is clipped.
        region: ``"all"``, ``"clipped"`` or ``"unclipped"``.

    Returns:
        bool mask ``[B, 1, H, W]``.
    """
    if region == "all":
        return torch.ones_like(clip_mask, dtype=torch.bool)
    if region == "clipped":
        return clip_mask.bool()
    if region == "unclipped":
        return ~clip_mask.bool()
    raise ConfigError(f"unknown region {region!r}; choose one of {list(REGIONS)}")


def reference_fill(pred: torch.Tensor, gt: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``pred`` inside ``region`` and ``gt`` outside (used by metrics without a per-pixel map).

    Args:
        pred: ``[B, C, H, W]``.
        gt: ``[B, C, H, W]``.
        region: bool ``[B, 1, H, W]``.

    Returns:
        ``[B, C, H, W]``.
    """
    return torch.where(region, pred, gt)


def psnr_from_mse(mse: torch.Tensor, peak: float, *, max_db: float = 100.0) -> torch.Tensor:
    r"""``10 log10(peak^2 / mse)``, capped at ``max_db``.

    Identical images (``mse = 0``) give exactly ``max_db`` instead of ``inf`` so that means over a
    test set stay finite; ``max_db = 100`` is far above any real reconstruction.

    Args:
        mse: mean squared errors ``[B]``.
        peak: the signal peak.
        max_db: the cap.

    Returns:
        PSNR in dB ``[B]``.
    """
    floor = peak * peak * 10.0 ** (-max_db / 10.0)
    return (10.0 * torch.log10(peak * peak / mse.clamp_min(floor))).clamp_max(max_db)


def masked_mean_per_image(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values [B, C, H, W]`` over ``mask [B, 1, H, W]`` (broadcast over C) per image.

    Returns ``[B]``; NaN for an image with an empty mask.
    """
    m = mask.to(values.dtype).expand_as(values)
    return (values * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ConfigError(f"{what} must be [B,C,H,W] or [C,H,W], got shape {tuple(x.shape)}")
    return x


class HDRImageMetric(Metric):
    """Base class: clip mask, alignment, region and per-image accumulation (module docstring).

    Subclasses implement :meth:`_per_image` returning one value per image (NaN = skip).

    Args:
        region: ``"all"``, ``"clipped"`` or ``"unclipped"``.
        align: scale alignment ``"none"``, ``"median"`` or ``"lsq_log"``.
        white_nits: cd/m^2 of relative radiance 1.0 (``hdrlab.camera.to_nits``).
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    value_sum: torch.Tensor
    n_images: torch.Tensor

    def __init__(self, *, region: str = "all", align: str = "median", white_nits: float = 200.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if region not in REGIONS:
            raise ConfigError(f"unknown region {region!r}; choose one of {list(REGIONS)}")
        if align not in ALIGN_MODES:
            raise ConfigError(f"unknown alignment {align!r}; choose one of {list(ALIGN_MODES)}")
        if not white_nits > 0:
            raise ConfigError(f"white_nits must be > 0 (cd/m^2 of radiance 1.0), got {white_nits}")
        self.region = region
        self.align = align
        self.white_nits = float(white_nits)
        self.add_state("value_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def prepare(
        self, pred: torch.Tensor, target: torch.Tensor, clip_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-3 of the protocol.

        Args:
            pred: predicted linear HDR ``[B, 3, H, W]`` or ``[3, H, W]``.
            target: reference linear HDR, same shape.
            clip_mask: the input's clip mask ``[B, 1, H, W]`` / ``[1, H, W]`` (bool or 0/1), or None.

        Returns:
            ``(aligned_pred, target, region)``: ``[B, 3, H, W]`` x2 (float32, or float64 when ``pred`` is)
            and bool ``[B, 1, H, W]``.
        """
        pred = _as_batch(pred, "prediction")
        pred = pred if pred.is_floating_point() else pred.float()  # float64 input stays float64
        target = _as_batch(target, "reference").to(pred.dtype)
        if pred.shape != target.shape or pred.shape[1] != 3:
            raise ConfigError(
                f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} must both be [B,3,H,W]"
            )
        if clip_mask is None:
            clip = clip_mask_from_reference(target)
        else:
            clip = _as_batch(clip_mask, "clip_mask") if clip_mask.dim() != 2 else clip_mask[None, None]
            if clip.shape[0] != pred.shape[0] or clip.shape[-2:] != pred.shape[-2:] or clip.shape[1] != 1:
                raise ConfigError(
                    f"clip_mask {tuple(clip_mask.shape)} must be [B,1,H,W] matching the images {tuple(pred.shape)}"
                )
            clip = clip > 0.5 if clip.is_floating_point() else clip.bool()
        aligned = align_scale(pred, target, mode=self.align, mask=~clip)
        return aligned, target, region_mask(clip, self.region)

    @abstractmethod
    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """One value per image ``[B]`` for images with a non-empty region.

        Args:
            pred: aligned prediction ``[B, 3, H, W]``, linear.
            target: reference ``[B, 3, H, W]``, linear.
            region: bool ``[B, 1, H, W]``.
        """

    def per_image(
        self, pred: torch.Tensor, target: torch.Tensor, clip_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-image values ``[B]`` without touching the state (NaN where the region is empty)."""
        aligned, target, region = self.prepare(pred, target, clip_mask)
        values = torch.full((aligned.shape[0],), float("nan"), dtype=torch.float64, device=aligned.device)
        keep = region.flatten(1).any(1)
        if bool(keep.any()):
            values[keep] = self._per_image(aligned[keep], target[keep], region[keep]).to(torch.float64)
        return values

    def update(self, pred: torch.Tensor, target: torch.Tensor, clip_mask: torch.Tensor | None = None) -> None:
        """Accumulate a batch.

        Args:
            pred: predicted linear HDR ``[B, 3, H, W]`` (radiance x input exposure).
            target: reference linear HDR ``[B, 3, H, W]``.
            clip_mask: the input LDR's clip mask ``[B, 1, H, W]``; None derives it from ``target``.
        """
        values = self.per_image(pred, target, clip_mask)
        keep = ~torch.isnan(values)
        self.value_sum += values[keep].sum()
        self.n_images += keep.sum()

    def compute(self) -> torch.Tensor:
        """Mean of the per-image values (NaN when no image was counted)."""
        return (self.value_sum / self.n_images).float()
