"""Training losses of Deep Recursive HDRI (Lee, An, Kang, ECCV 2018): L1 + least-squares GAN.

Official code: Siyeong-Lee/Deep_Recursive_HDRI ``model.GANLoss`` and ``solver.Solver.train``. For
an adjacent-EV pair (condition ``c``, target ``y``, both in ``[-1, 1]``), a generator ``G`` and its
conditional discriminator ``D`` (sigmoid output, applied to ``candidate ++ condition``):

    L_GAN(p, t) = mean((p - t)^2)                                 (MSE over every patch score)
    L_D = 0.5 * L_GAN(D(y, c), 0.9) + 0.5 * L_GAN(D(G(c), c), 0.1)
    L_G = mean|G(c) - y| + 0.01 * L_GAN(D(G(c), c), 0.9)

* Least squares on the sigmoid output with **label smoothing** on both sides: real target 0.9,
  fake target 0.1 (the generator's adversarial target is the smoothed real label 0.9 too).
* The L1 term is the mean over all ``B*3*H*W`` elements **in the [-1, 1] domain** (twice the L1 of
  the same images in ``[0, 1]``): the 0.01 weight is balanced against that scale.
* Pre-training (official 10 epochs) uses the L1 term alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError

#: Official constants: GAN weight in the generator loss, smoothed real / fake targets.
DEEP_RECURSIVE_GAN_WEIGHT = 1e-2
DEEP_RECURSIVE_REAL_LABEL = 0.9
DEEP_RECURSIVE_FAKE_LABEL = 0.1


def lsgan_loss(scores: torch.Tensor, target: float) -> torch.Tensor:
    """``mean((scores - target)^2)`` over every element (official ``GANLoss`` with ``use_lsgan``).

    Args:
        scores: discriminator output ``[B, 1, h, w]`` (probabilities, any shape).
        target: the label (0.9 real, 0.1 fake in the official code).

    Returns:
        Scalar loss.
    """
    return F.mse_loss(scores, torch.full_like(scores, float(target)))


def l1_content_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean|pred - target|`` over all elements; both in the networks' ``[-1, 1]`` domain."""
    return F.l1_loss(pred, target)


class DeepRecursiveLoss(nn.Module):
    """The official objectives of one direction (module docstring); no parameters.

    Args:
        gan_weight: weight of the adversarial term in the generator loss (official 0.01).
        real_label: smoothed real target (official 0.9).
        fake_label: smoothed fake target (official 0.1).
    """

    def __init__(
        self,
        *,
        gan_weight: float = DEEP_RECURSIVE_GAN_WEIGHT,
        real_label: float = DEEP_RECURSIVE_REAL_LABEL,
        fake_label: float = DEEP_RECURSIVE_FAKE_LABEL,
    ) -> None:
        super().__init__()
        if gan_weight < 0:
            raise ConfigError(f"DeepRecursiveLoss gan_weight={gan_weight} must be >= 0 (official 0.01)")
        for name, value in (("real_label", real_label), ("fake_label", fake_label)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"DeepRecursiveLoss {name}={value} must lie in [0, 1] (official 0.9 / 0.1)")
        self.gan_weight = float(gan_weight)
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def discriminator(self, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
        """``L_D = 0.5 L_GAN(D(real), real_label) + 0.5 L_GAN(D(fake), fake_label)`` (scalar)."""
        return 0.5 * lsgan_loss(real_scores, self.real_label) + 0.5 * lsgan_loss(fake_scores, self.fake_label)

    def generator(
        self, pred: torch.Tensor, target: torch.Tensor, fake_scores: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Generator objective.

        Args:
            pred: ``G(c)`` ``[B, 3, H, W]`` in ``[-1, 1]``.
            target: ``y`` ``[B, 3, H, W]`` in ``[-1, 1]``.
            fake_scores: ``D(G(c), c)``; ``None`` during L1-only pre-training.

        Returns:
            ``{"total", "l1"}`` plus ``"gan"`` (the weighted adversarial term) when ``fake_scores`` is given.
        """
        l1 = l1_content_loss(pred, target)
        if fake_scores is None:
            return {"total": l1, "l1": l1}
        gan = self.gan_weight * lsgan_loss(fake_scores, self.real_label)
        return {"total": l1 + gan, "l1": l1, "gan": gan}


__all__ = [
    "DEEP_RECURSIVE_FAKE_LABEL",
    "DEEP_RECURSIVE_GAN_WEIGHT",
    "DEEP_RECURSIVE_REAL_LABEL",
    "DeepRecursiveLoss",
    "l1_content_loss",
    "lsgan_loss",
]
