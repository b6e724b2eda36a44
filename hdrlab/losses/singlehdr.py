"""Training objectives of SingleHDR (Liu et al., "Single-Image HDR Reconstruction by Learning to
Reverse the Camera Pipeline", CVPR 2020), as in the official TensorFlow training scripts
(alex04072000/SingleHDR ``train_dequantization_net.py``, ``train_linearization_net.py``,
``train_hallucination_net.py``, ``finetune_real_dataset.py``).

Notation (all images ``[B, 3, H, W]`` float32):

* ``x`` = ``batch["ldr"]`` quantised input, display-referred in ``[0, 1]``;
* ``ldr_float`` = ``CRF(clip(H))`` before quantisation, display-referred in ``[0, 1]``;
* ``H_c`` = ``batch["hdr_clipped"]`` linear in ``[0, 1]``; ``H`` = ``batch["hdr"]`` linear, >= 0;
* ``T(v) = log(1 + 10 v) / log(11)`` the official tone curve
  (:func:`hdrlab.losses.mu_law_domain` with ``mu = MU_SINGLEHDR = 10``);
* ``m_b`` the official per-image loss mask (:func:`image_loss_mask`).

Objectives (official code; the paper's weight set differs, see the class docstring)::

    dequantization  L1 = mean_b m_b * mean (C(x) - ldr_float)^2
    linearization   L2 = mean_b m_b * [mean (g(ldr_float) - H_c)^2 + 0.1 * mean (g - g_gt)^2]
    hallucination   L3 = mean_b m_b * [mean |T(A) - T(H)| + 0.001 * P(T(A), T(H)) + 0.1 * TV(T(A))],
                    A = Hallucination-Net(H_c)
    joint           L4 = mean |T(n(R)) - T(n(H))|,  n(v) = 0.5 v / mean(v)  (per image)
"""

from __future__ import annotations

import kornia
import torch
from torch import nn

from hdrlab.losses.domains import MU_SINGLEHDR, mu_law_domain, to_domain
from hdrlab.losses.perceptual import IMAGENET_MEAN, IMAGENET_STD, PoolFeatures
from hdrlab.losses.total_variation import image_total_variation
from hdrlab.weights import load_vgg_features

__all__ = [
    "GREY_WEIGHTS",
    "SingleHDRPerceptualLoss",
    "dequantization_loss",
    "hallucination_loss",
    "image_loss_mask",
    "joint_loss",
    "linearization_loss",
    "normalize_mean",
    "per_image_mean",
    "symmetric_total_variation",
    "tone_curve",
]

#: Grey weights of ``tf.image.rgb_to_grayscale`` used by the official per-image loss mask.
GREY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.5870, 0.1140)


def tone_curve(x: torch.Tensor, *, mu: float = MU_SINGLEHDR) -> torch.Tensor:
    """Official loss-domain tone curve ``T(v) = log(1 + mu v) / log(1 + mu)`` (code: mu = 10).

    Args:
        x: linear radiance ``[B, C, H, W]`` (negatives clamped to 0; no upper clamp).
        mu: curve strength.

    Returns:
        Same shape; ``T(0) = 0``, ``T(1) = 1``, > 1 above the clipping point.
    """
    return mu_law_domain(x, mu=mu)


def image_loss_mask(
    ldr: torch.Tensor, *, low: float = 6.0, high: float = 249.0, max_fraction: float = 0.5
) -> torch.Tensor:
    """Official per-image loss mask: drop images that are mostly saturated or black.

    ``m_b = 0`` when more than ``max_fraction`` of the pixels have an 8-bit grey value
    (``tf.image.rgb_to_grayscale`` weights :data:`GREY_WEIGHTS`, rounded to a code) ``>= high``
    or ``<= low``; else 1.

    Args:
        ldr: ``[B, 3, H, W]`` display-referred input in ``[0, 1]``.
        low: dark code threshold (official 6).
        high: bright code threshold (official 249).
        max_fraction: largest allowed fraction of extreme pixels (official 0.5).

    Returns:
        ``[B]`` float32 in ``{0, 1}``.
    """
    weights = torch.tensor(GREY_WEIGHTS, dtype=ldr.dtype, device=ldr.device)
    grey = torch.round(kornia.color.rgb_to_grayscale(ldr.clamp(0.0, 1.0), rgb_weights=weights) * 255.0)
    extreme = ((grey >= high) | (grey <= low)).to(ldr.dtype).mean(dim=(1, 2, 3))
    return (extreme <= max_fraction).to(ldr.dtype)


def per_image_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension: ``[B, ...]`` -> ``[B]``."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normalize_mean(x: torch.Tensor, *, target: float = 0.5, eps: float = 1e-8) -> torch.Tensor:
    """Scale every image to mean ``target`` (official stage 4 normalises prediction and GT to 0.5).

    Args:
        x: linear radiance ``[B, C, H, W]``, >= 0.
        target: mean after scaling.
        eps: floor of the mean (an all-black image stays black instead of NaN; the official
            code has no floor).

    Returns:
        ``target * x / max(mean(x), eps)``, same shape.
    """
    mean = per_image_mean(x).clamp_min(eps).view(-1, *([1] * (x.dim() - 1)))
    return x * (target / mean)


def symmetric_total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-image official TV: ``mean|dy x| + mean|dx x|`` with symmetric padding at the far end.

    The official code pads the last row/column by symmetry (a zero difference) and averages
    over all ``C H W`` positions, i.e. the sums of kornia's anisotropic TV divided by
    ``C H W`` (not by ``C (H - 1) W`` as ``reduction="mean"`` would).

    Args:
        x: ``[B, C, H, W]`` (any domain; official: ``T(A)``).

    Returns:
        ``[B]``.
    """
    return image_total_variation(x, reduction="pixel_mean")


def _weighted_batch_mean(per_image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``mean_b(m_b * l_b)`` (official: masked per-image losses averaged over the batch)."""
    return per_image.mean() if mask is None else (per_image * mask).mean()


def dequantization_loss(
    dequantized: torch.Tensor, target: torch.Tensor, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Stage 1 (official): ``mean_b m_b * mean (C - ldr_float)^2``.

    Args:
        dequantized: ``C`` ``[B, 3, H, W]`` display-referred in ``[0, 1]``.
        target: ``ldr_float`` ``[B, 3, H, W]`` (CRF output before quantisation).
        mask: ``[B]`` per-image loss mask (:func:`image_loss_mask`) or None.

    Returns:
        Scalar.
    """
    return _weighted_batch_mean(per_image_mean((dequantized - target) ** 2), mask)


def linearization_loss(
    linearized: torch.Tensor,
    target: torch.Tensor,
    inverse_crf: torch.Tensor,
    inverse_crf_gt: torch.Tensor,
    *,
    crf_weight: float = 0.1,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Stage 2 (official): ``mean_b m_b [mean (g(I) - H_c)^2 + crf_weight * mean (g - g_gt)^2]``.

    Args:
        linearized: ``g(ldr_float)`` ``[B, 3, H, W]`` linear in ``[0, 1]``.
        target: ``H_c`` = ``hdr_clipped`` ``[B, 3, H, W]`` linear in ``[0, 1]``.
        inverse_crf: predicted ``g`` ``[B, 1, K]``.
        inverse_crf_gt: ``crf_inverse`` ``[B, 1 | 3, K]`` (broadcast against ``g``).
        crf_weight: weight of the curve term (official 0.1; the paper's "10" is not in the code).
        mask: ``[B]`` per-image loss mask or None.

    Returns:
        ``{"image_l2", "crf_l2"}`` (``crf_l2`` already weighted) and ``"total"``.
    """
    image = _weighted_batch_mean(per_image_mean((linearized - target) ** 2), mask)
    curve = crf_weight * _weighted_batch_mean(per_image_mean((inverse_crf - inverse_crf_gt) ** 2), mask)
    return {"image_l2": image, "crf_l2": curve, "total": image + curve}


class SingleHDRPerceptualLoss(nn.Module):
    """Official stage-3 perceptual term: ``P = sum_{l in pool1..3} mean |phi_l(a) - phi_l(b)|``.

    ``phi_l`` are VGG16 max-pool outputs (``PoolFeatures`` over torchvision's ``vgg16().features``;
    official: tensorflow-vgg ``vgg16.npy`` with caffe BGR mean subtraction, here torchvision's
    ImageNet weights with their own normalisation, applied with ``kornia.enhance.Normalize``).
    Inputs are ``T(A)`` and ``T(H)`` treated as RGB in ``[0, 1]``. The trunk is frozen and kept in
    eval mode.

    Args:
        pretrained: load the ImageNet VGG16 (``hdrlab.weights.load_vgg_features``); False uses a
            random trunk (tests, tiny configs).
        num_pools: number of pooling outputs (official 3).
    """

    def __init__(self, *, pretrained: bool = True, num_pools: int = 3) -> None:
        super().__init__()
        trunk = load_vgg_features("vgg16", pretrained=pretrained)
        self.features = PoolFeatures(trunk=trunk, count=num_pools).eval().requires_grad_(False)
        self.normalize = kornia.enhance.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD))

    def train(self, mode: bool = True) -> SingleHDRPerceptualLoss:
        """Keep the frozen trunk in eval mode whatever the parent's mode."""
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image perceptual distance.

        Args:
            pred: ``[B, 3, H, W]`` (official: ``T(A)``), H and W >= 8.
            target: ``[B, 3, H, W]`` (official: ``T(H)``); no gradient flows into it.

        Returns:
            ``[B]``: sum over the pool layers of the per-image mean absolute feature difference.
        """
        fp = self.features(self.normalize(pred))
        ft = self.features(self.normalize(target.detach()))
        return sum(per_image_mean((a - b).abs()) for a, b in zip(fp, ft))  # type: ignore[return-value]


def hallucination_loss(
    hallucinated: torch.Tensor,
    target: torch.Tensor,
    *,
    perceptual: SingleHDRPerceptualLoss | None = None,
    perceptual_weight: float = 1e-3,
    tv_weight: float = 0.1,
    mu: float = MU_SINGLEHDR,
    mask: torch.Tensor | None = None,
    domain: str = "mu_law",
) -> dict[str, torch.Tensor]:
    """Stage 3 (official): ``mean_b m_b [L1 + 0.001 P + 0.1 TV]``, all in the ``T`` domain.

    Args:
        hallucinated: ``A = B + alpha R`` ``[B, 3, H, W]`` linear, >= 0.
        target: ``H`` = ``hdr`` ``[B, 3, H, W]`` linear, unclipped.
        perceptual: the VGG16 term (None drops it).
        perceptual_weight: weight of ``P`` (official 0.001).
        tv_weight: weight of ``TV(T(A))`` (official 0.1).
        mu: strength of ``T`` (official 10).
        mask: ``[B]`` per-image loss mask or None.
        domain: loss domain replacing ``T`` (:func:`hdrlab.losses.to_domain`): ``"mu_law"``
            (official ``T`` with ``mu``), ``"linear"``, ``"log"`` or ``"pu21"`` (hdrlab option).

    Returns:
        ``{"l1", "perceptual", "tv"}`` (weighted; ``perceptual`` only with a module) and ``"total"``.
    """
    pred_t, target_t = to_domain(hallucinated, domain, mu=mu), to_domain(target, domain, mu=mu)
    terms = {"l1": _weighted_batch_mean(per_image_mean((pred_t - target_t).abs()), mask)}
    if perceptual is not None and perceptual_weight > 0:
        terms["perceptual"] = perceptual_weight * _weighted_batch_mean(perceptual(pred_t, target_t), mask)
    terms["tv"] = tv_weight * _weighted_batch_mean(symmetric_total_variation(pred_t), mask)
    terms["total"] = sum(terms.values())  # type: ignore[assignment]
    return terms


def joint_loss(hdr: torch.Tensor, target: torch.Tensor, *, mu: float = MU_SINGLEHDR,
               domain: str = "mu_law") -> torch.Tensor:
    """Stage 4 (official joint fine-tuning): ``mean |T(n(R)) - T(n(H))|``, ``n`` = mean-0.5 scaling.

    Args:
        hdr: refined prediction ``R`` ``[B, 3, H, W]`` linear, >= 0.
        target: ``H`` ``[B, 3, H, W]`` linear.
        mu: strength of ``T`` (official 10).
        domain: loss domain replacing ``T`` (see :func:`hallucination_loss`; official ``"mu_law"``).

    Returns:
        Scalar (invariant to a per-image scale of either argument).
    """
    pred, ref = normalize_mean(hdr), normalize_mean(target)
    return (to_domain(pred, domain, mu=mu) - to_domain(ref, domain, mu=mu)).abs().mean()
