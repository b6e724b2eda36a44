"""HDRCNN (Eilertsen et al., ACM TOG 36(6), SIGGRAPH Asia 2017) as a method: :class:`HDRCNNMethod`,
the official network (:class:`hdrlab.models.direct.hdrcnn.HDRCNN`) trained with the official
losses (:mod:`hdrlab.losses.hdrcnn`) and predicting with the official blend.

Official training (gabrieleilertsen/hdrcnn ``training_code/hdrcnn_train.py``, README): a "virtual
camera" makes LDR/HDR pairs (random crop and exposure so that 5-15 % of the pixels saturate,
noise, colour jitter, a random sigmoid camera curve, JPEG); the encoder starts from Places365
VGG16; pre-training on Places-derived pseudo-HDR (224 px, batch 16, lr 2e-5), then fine-tuning on
HDR images (320 px, batch 8, lr 5e-5, 100 epochs). Adam (0.9, 0.999, eps 1e-8), the learning rate
multiplied by 0.99 after every epoch (staircase). Loss: illuminance/reflectance (lambda 0.5) or
the direct log L2, both masked by ``clip((max_c y - 0.95) / 0.05, 0, 1)`` of the target.

Here (:meth:`HDRCNNMethod.compute_loss`)::

    y_hat = HDRCNN(batch["ldr"])                        # log domain
    L     = hdrcnn_ir_loss(y_hat, batch["hdr"])         # or hdrcnn_direct_loss

Prediction (:meth:`HDRCNNMethod.predict_image`) is the official ``hdrcnn_predict.py`` output
without file I/O: ``(1 - alpha) x^2 + alpha (exp(y_hat) - 1/255)``, ``alpha`` from the input
(tau = 0.95), ``x^2`` standing in for the inverse camera curve. Linear HDR, clipping point 1.0.
Inputs must be multiples of 32 (:attr:`HDRCNN.stride`, which this method declares).

Deviations from the official training:

* Data: hdrlab's data modules (procedural scenes / HDR folders with
  :class:`hdrlab.data.PairSynthesizer` exposure, clipping and camera curves) instead of the
  C++ virtual camera and its Places pre-training set; the pre-training stage is not reproduced.
* Encoder: ImageNet VGG16 (torchvision, from the local cache; ``pretrained_encoder``) instead of
  Places365 VGG16, which does not ship with PyTorch.
* Schedule: the x0.99 decay is applied after every epoch of the data module
  (``lr_decay``), not after every pass over the official training set; ``lr_decay: 1.0`` turns it
  off and hands the schedule to :class:`HDRMethod`'s ``lr_milestones``.
* The official prediction script's optional "gamma" and pre-scaling controls are not exposed
  (their defaults, 1.0, are the identity).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.losses.hdrcnn import HDRCNN_LAMBDA, hdrcnn_direct_loss, hdrcnn_ir_loss
from hdrlab.methods.base import HDRMethod
from hdrlab.models.direct.hdrcnn import BLEND_TAU, HDRCNN, hdrcnn_blend

__all__ = ["HDRCNN_LR", "HDRCNN_LR_DECAY", "HDRCNNMethod"]

#: official fine-tuning learning rate (``hdrcnn_train.py --learning_rate`` default)
HDRCNN_LR = 5e-5
#: official per-epoch multiplicative learning-rate decay (``exponential_decay(..., 0.99, staircase)``)
HDRCNN_LR_DECAY = 0.99


class HDRCNNMethod(HDRMethod):
    """HDRCNN: LDR -> linear HDR (module docstring for the equations and deviations).

    Args:
        width: channel multiplier of the network (1.0 = official, 29,443,358 parameters).
        pretrained_encoder: start the encoder from torchvision's ImageNet VGG16 in the local torch
            hub cache (official: Places365 VGG16; needs ``width=1``; never downloaded).
        loss: ``"ir"`` (illuminance/reflectance, official default) or ``"direct"`` (log L2).
        loss_lambda: weight of the illuminance term of the ``ir`` loss (official 0.5).
        tau: threshold of the highlight masks (official 0.95 for both): the loss mask
            ``clip((max_c y - tau) / (1 - tau), 0, 1)`` of the ground truth and the prediction blend's
            ``alpha`` of the input (one option, as the official code uses one value for both).
        lr: Adam learning rate (official fine-tuning 5e-5).
        lr_decay: learning-rate factor after every epoch (official 0.99; 1.0 = off, then
            ``lr_milestones`` apply).
        **kwargs: :class:`HDRMethod` options (optimizer, betas, metrics, ...); defaults are the
            official Adam settings.
    """

    output_domain = "linear"
    file_options: ClassVar[tuple[str, ...]] = ("pretrained_encoder",)

    def __init__(
        self,
        *,
        width: float = 1.0,
        pretrained_encoder: bool = False,
        loss: Literal["ir", "direct"] = "ir",
        loss_lambda: float = HDRCNN_LAMBDA,
        tau: float = BLEND_TAU,
        lr: float = HDRCNN_LR,
        lr_decay: float = HDRCNN_LR_DECAY,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        if loss not in ("ir", "direct"):
            raise ConfigError(f"HDRCNNMethod loss={loss!r} is unknown; use 'ir' (official default) or 'direct'")
        if not 0.0 <= loss_lambda <= 1.0:
            raise ConfigError(f"HDRCNNMethod loss_lambda={loss_lambda} must be in [0, 1] (official 0.5)")
        if not 0.0 <= tau < 1.0:
            raise ConfigError(f"HDRCNNMethod tau={tau} must be in [0, 1) (official 0.95)")
        if not 0.0 < lr_decay <= 1.0:
            raise ConfigError(f"HDRCNNMethod lr_decay={lr_decay} must be in (0, 1] (official 0.99 per epoch)")
        self.save_hyperparameters()
        self.loss_kind = loss
        self.loss_lambda = float(loss_lambda)
        self.tau = float(tau)
        self.lr_decay = float(lr_decay)
        self.net = HDRCNN(width=width, pretrained_encoder=pretrained_encoder)

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        """Log-domain network output ``[B, 3, H, W]`` for ``ldr`` ``[B, 3, H, W]`` in [0, 1]."""
        return self.net(ldr)

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Official loss of ``HDRCNN(ldr)`` against ``hdr``: terms ``illuminance`` and ``reflectance``
        (``ir``, already weighted) or ``log_l2`` (``direct``)."""
        log_pred = self(batch["ldr"])
        if self.loss_kind == "ir":
            terms = hdrcnn_ir_loss(log_pred, batch["hdr"], loss_lambda=self.loss_lambda, threshold=self.tau)
        else:
            terms = hdrcnn_direct_loss(log_pred, batch["hdr"], threshold=self.tau)
        total = terms.pop("total")
        return total, terms

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Official prediction: ``(1 - alpha) x^2 + alpha (exp(y_hat) - 1/255)``, linear HDR
        ``[B, 3, H, W]`` (clipping point 1.0) from ``batch["ldr"]``."""
        ldr = batch["ldr"]
        return hdrcnn_blend(ldr, self(ldr), tau=self.tau)

    def scheduler_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Official staircase decay: the learning rate times ``lr_decay`` after every epoch; with
        ``lr_decay=1`` :class:`HDRMethod`'s milestones (or a constant rate)."""
        if self.lr_decay == 1.0:
            return super().scheduler_config(optimizer)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.lr_decay)
        return {"scheduler": scheduler, "interval": "epoch"}
