"""Kalantari & Ramamoorthi 2017 ("Deep High Dynamic Range Imaging of Dynamic Scenes", SIGGRAPH) as a
method: :class:`Kalantari2017`, the merger :class:`~hdrlab.models.mergers.kalantari.KalantariMerger`
trained with its own objective on the batch's (low, reference, high) bracket.

Training sample (from a procedural batch with ``bracket_ev: [-2, 0, 2]``, the spacing of the
Kalantari data set's {0, 2, 4} EV biases): the bracket is the network's input, ``batch["hdr"]``
(relative to the ev-0 reference) is mapped into the network's domain (relative to the darkest
exposure, clipped at 1) by :meth:`TripletMerger.network_target`; the loss is the squared error of the
mu-law tonemaps (mu 5000, :mod:`hdrlab.losses.kalantari`). Prediction: the merged radiance rescaled
to the ev-0 exposure and scored against ``batch["hdr"]`` (:class:`BracketMergerMethod`).

Official training (MATLAB ``InitParam.m``): Adam lr 1e-4, betas (0.9, 0.999), eps 1e-8, batch 20
patches of 40x40 (stride 20, 50 px border cropped), 10 of 48 augmentations per scene, patch
selection (keep a patch when more than 50 % of the reference patch's values are > 0.8 or < 0.2),
about 2,000,000 iterations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from hdrlab.data.batch import HDRBatch
from hdrlab.methods.bracket_merger import BracketMergerMethod
from hdrlab.methods.two_stage import rescale_to_input
from hdrlab.models.mergers.kalantari import KALANTARI_BORDER, KalantariMerger
from hdrlab.stack import ExposureStack

__all__ = ["Kalantari2017"]


class Kalantari2017(BracketMergerMethod):
    """Kalantari & Ramamoorthi 2017 trained on the batch's bracket (module docstring).

    Args:
        variant: ``"direct"``, ``"we"`` (released code, default) or ``"wie"``.
        width: channel multiplier (1.0 = official: 383,909 parameters for WE).
        padding: ``"replicate"`` (default) / ``"reflect"``: the merger pads its input by 6 px and keeps
            the size, the loss covers the whole patch; ``"none"``: the official valid network, the
            loss covers the valid centre (40 -> 28 px) and :meth:`predict_image` replicate-pads the
            bracket by 6 px so that the scored image has the input's size.
        alignment: ``"none"`` (identity, default) or ``"flow"`` (OpenCV DIS stand-in for Liu's flow).
        select_ev: the three exposures taken from a larger bracket (nearest available ones).
        loss_domain: domain of the paper's loss distance (``mu_law`` official; ``linear``, ``log``,
            ``pu21``: ablations, :func:`hdrlab.losses.domains.to_domain`).
        loss_reduction: ``"mean"`` (default) or ``"sum"`` (official) of the squared mu-law error.
        lr: Adam learning rate (official 1e-4).
        betas: Adam betas (official (0.9, 0.999)).
        **kwargs: :class:`~hdrlab.methods.base.HDRMethod` options.

    Deviations from the official code (see also :mod:`hdrlab.models.mergers.kalantari`):

    * Data: procedural scenes with synthetic static brackets instead of the 74 Kalantari training
      scenes; the official patch selection (> 50 % of the reference's values > 0.8 or < 0.2), the
      48-way augmentation (the datamodule's flips instead) and the 2,000,000 iterations are not
      reproduced.
    * No optical flow by default (``alignment="none"``): the synthetic brackets have no motion.
    * Border padding by default (``padding="replicate"``) and the mean instead of the sum of the loss.
    """

    def __init__(
        self,
        *,
        variant: Literal["direct", "we", "wie"] = "we",
        width: float = 1.0,
        padding: Literal["replicate", "reflect", "none"] = "replicate",
        alignment: Literal["none", "flow"] = "none",
        select_ev: Sequence[float] = (-2.0, 0.0, 2.0),
        loss_reduction: Literal["mean", "sum"] = "mean",
        loss_domain: Literal["mu_law", "linear", "log", "pu21"] = "mu_law",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, betas=betas, **kwargs)
        self.save_hyperparameters()
        self.merger = KalantariMerger(variant=variant, width=width, padding=padding, alignment=alignment,
                                      reduction=loss_reduction, select_ev=select_ev,
                                      loss_domain=loss_domain)
        self.check_merger()

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Linear radiance ``[B, 3, H, W]`` relative to the ev-0 exposure; with ``padding="none"`` the
        bracket is replicate-padded by 6 px first, so the valid network returns ``H x W``."""
        stack = self.stack(batch)
        if not self.merger.preserves_size:
            images = F.pad(stack.images.flatten(0, 1), (KALANTARI_BORDER,) * 4, mode="replicate")
            stack = ExposureStack(images=images.unflatten(0, stack.images.shape[:2]), ev=stack.ev,
                                  reference=stack.reference, crf=stack.crf)
        return rescale_to_input(self.merger(stack), stack)
