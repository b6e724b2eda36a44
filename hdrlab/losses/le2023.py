"""Training losses of Le et al., WACV 2023 (weakly supervised: LDR pairs + exposure times, no HDR).

Official code: VinAIResearch/single_image_hdr ``src/models/losses.py`` with the weights that
``EDNet`` passes in. For a pair ``(x, t_x)`` (lower exposure) and ``(y, t_y)`` (higher):
``y_hat = N2(E_x * t_y / t_x)`` and ``x_hat = N3(E_y * t_x / t_y)``, and

    L = 100 * L_r + 1 * L_h + 1e-5 * L_tv + 0.1 * L_p,

every term summed over the up (``y``) and down (``x``) branches.

Reductions (official; they decide the balance):

* ``L_r``: mean over all ``B*3*H*W`` elements of ``|pred - target| * M_target`` (patch-size free).
* ``L_h``: mean absolute difference of ``log(E + 1/255)`` (patch-size free).
* ``L_tv``: anisotropic L1 total variation **summed** over C, H, W, then averaged over the batch.
  It grows with ``H*W``: the official 1e-5 is tuned for 256x256 crops; at a P x P patch use
  ``1e-5 * (256 / P)**2`` to keep the same balance (:func:`le2023_tv_weight_for_patch`).
* ``L_p``: piq ``ContentLoss`` semantics: per feature layer the spatial mean of ``|f(a) - f(b)|``,
  **summed over channels** and layers (weights 1, 1, 1), averaged over the batch. It is
  independent of patch size but scales with the extractor's channel count (VGG19 pool1..pool3:
  64 + 128 + 256 channels).

All images are display-referred ``[0, 1]``; ``E`` is the non-negative HDR representation.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia
import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.perceptual import IMAGENET_MEAN, IMAGENET_STD
from hdrlab.losses.total_variation import image_total_variation

#: Official loss weights (``EDNet``): reconstruction, HDR representation, TV, perceptual.
LE2023_LOSS_WEIGHTS: dict[str, float] = {"recon": 1e2, "hdr": 1e0, "tv": 1e-5, "perceptual": 1e-1}



def le2023_tv_weight_for_patch(patch_size: int, *, weight_at_256: float = 1e-5) -> float:
    """TV weight giving the official TV/other balance at a square ``patch_size`` crop: ``w * (256 / P)^2``."""
    if patch_size <= 0:
        raise ConfigError(f"patch_size={patch_size} must be positive")
    return weight_at_256 * (256.0 / patch_size) ** 2


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_r = mean(|pred - target| * M)`` over all ``B*3*H*W`` elements.

    Args:
        pred: ``[B, 3, H, W]`` display-referred prediction in ``[0, 1]``.
        target: ``[B, 3, H, W]`` display-referred target in ``[0, 1]``.
        mask: ``[B, 1, H, W]`` soft mask of the **target** (broadcast over RGB).

    Returns:
        Scalar loss.
    """
    return ((pred - target).abs() * mask).mean()


def log_hdr_representation_loss(
    rescaled: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0 / 255.0
) -> torch.Tensor:
    """``L_h = mean|log(E_a * t_b / t_a + eps) - log(E_b + eps)|`` (one direction; no stop-gradient).

    Args:
        rescaled: ``[B, 3, H, W]`` HDR representation of image ``a`` times ``t_b / t_a`` (>= 0).
        target: ``[B, 3, H, W]`` HDR representation of image ``b`` (>= 0).
        eps: offset inside the log (official 1/255).

    Returns:
        Scalar loss.
    """
    return (torch.log(rescaled + eps) - torch.log(target + eps)).abs().mean()


def total_variation_loss(image: torch.Tensor) -> torch.Tensor:
    """``L_tv``: anisotropic L1 TV summed over C, H, W (:func:`hdrlab.losses.total_variation.image_total_variation`,
    ``reduction="sum"``), mean over the batch. ``[B, 3, H, W]`` -> scalar."""
    return image_total_variation(image, reduction="sum").mean()


class MaskedPerceptualLoss(nn.Module):
    """``L_p``: piq-style content loss between ``pred * M`` and ``target * M`` (MAE, no feature normalisation).

    Per layer ``l``: ``mean_{H,W} |f_l(a) - f_l(b)|`` -> ``[B, C_l]``; multiply by the layer weight,
    concatenate over layers, **sum over channels**, mean over the batch.

    Args:
        feature_extractor: module mapping ``[B, 3, H, W]`` to a sequence of feature maps (the
            official one is VGG19 pool1, pool2, pool3: ``PoolFeatures(trunk=vgg19().features)``).
        layer_weights: one weight per returned feature map (official 1, 1, 1).
        imagenet_normalize: subtract the ImageNet mean / divide by std before the extractor (official).
    """

    def __init__(
        self,
        *,
        feature_extractor: nn.Module,
        layer_weights: Sequence[float] = (1.0, 1.0, 1.0),
        imagenet_normalize: bool = True,
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.normalize = (
            kornia.enhance.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD))
            if imagenet_normalize
            else nn.Identity()
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss; ``pred``/``target`` ``[B, 3, H, W]`` in [0, 1], ``mask`` ``[B, 1, H, W]`` or None."""
        if mask is not None:
            pred, target = pred * mask, target * mask
        fp = self.feature_extractor(self.normalize(pred))
        ft = self.feature_extractor(self.normalize(target))
        if len(fp) != len(self.layer_weights):
            raise ConfigError(
                f"feature extractor returned {len(fp)} maps but layer_weights has {len(self.layer_weights)}"
            )
        per_layer = [w * (a - b).abs().mean(dim=(2, 3)) for w, a, b in zip(self.layer_weights, fp, ft)]
        return torch.cat(per_layer, dim=1).sum(dim=1).mean()


class Le2023Loss(nn.Module):
    """Total loss of Le et al.: ``100 L_r + 1 L_h + 1e-5 L_tv + 0.1 L_p`` over both branches.

    Args:
        perceptual: a :class:`MaskedPerceptualLoss` (or None to drop ``L_p``, e.g. without VGG weights).
        weights: term weights, keys ``recon``, ``hdr``, ``tv``, ``perceptual`` (official
            :data:`LE2023_LOSS_WEIGHTS`; rescale ``tv`` with :func:`le2023_tv_weight_for_patch`).
        eps: offset of the log in ``L_h`` (1/255).
    """

    def __init__(
        self,
        *,
        perceptual: nn.Module | None = None,
        weights: dict[str, float] | None = None,
        eps: float = 1.0 / 255.0,
    ) -> None:
        super().__init__()
        merged = dict(LE2023_LOSS_WEIGHTS)
        if weights is not None:
            unknown = set(weights) - set(merged)
            if unknown:
                raise ConfigError(f"Le2023Loss weights has unknown keys {sorted(unknown)}; use {sorted(merged)}")
            merged.update(weights)
        self.weights = merged
        self.perceptual = perceptual
        self.eps = eps

    def forward(
        self,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        x_hat: torch.Tensor,
        y_hat: torch.Tensor,
        hdr_x: torch.Tensor,
        hdr_y: torch.Tensor,
        mask_x: torch.Tensor,
        mask_y: torch.Tensor,
        ratio_y_over_x: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """All terms and the weighted total.

        Args:
            x, y: ``[B, 3, H, W]`` lower / higher exposure in [0, 1] (``t_x <= t_y``).
            x_hat, y_hat: predictions of ``x`` (by N3 from ``y``) and ``y`` (by N2 from ``x``).
            hdr_x, hdr_y: ``E_hat`` of ``x`` and of ``y`` (``[B, 3, H, W]`` >= 0).
            mask_x, mask_y: ``[B, 1, H, W]`` soft masks of ``x`` and ``y``.
            ratio_y_over_x: ``t_y / t_x``, ``[B]`` or ``[B, 1, 1, 1]``.

        Returns:
            dict with ``total`` and ``up_*`` / ``down_*`` for ``recon``, ``hdr``, ``tv``, ``perceptual``.
        """
        ratio = ratio_y_over_x.reshape(-1, 1, 1, 1)
        terms = {
            "up_recon": masked_reconstruction_loss(y_hat, y, mask_y),
            "down_recon": masked_reconstruction_loss(x_hat, x, mask_x),
            "up_hdr": log_hdr_representation_loss(hdr_x * ratio, hdr_y, eps=self.eps),
            "down_hdr": log_hdr_representation_loss(hdr_y / ratio, hdr_x, eps=self.eps),
            "up_tv": total_variation_loss(y_hat),
            "down_tv": total_variation_loss(x_hat),
        }
        if self.perceptual is not None:
            terms["up_perceptual"] = self.perceptual(y_hat, y, mask_y)
            terms["down_perceptual"] = self.perceptual(x_hat, x, mask_x)
        total = sum(
            self.weights[name] * (terms[f"up_{name}"] + terms[f"down_{name}"])
            for name in ("recon", "hdr", "tv", "perceptual")
            if f"up_{name}" in terms
        )
        return {"total": total, **terms}
