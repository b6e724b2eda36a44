"""Wu, Xu, Tai, Tang, ECCV 2018, "Deep High Dynamic Range Imaging with Large Foreground Motions" as a
method: :class:`Wu2018`, the official DeepHDR network (:class:`hdrlab.models.mergers.wu.WuMerger`)
trained on the batch's exposure bracket with its own loss.

Official training (elliottwu/DeepHDR ``train.sh``, ``train.py``, ``model.py``, ``load_data.py``):
Adam lr 2e-4, beta1 0.5 (beta2 TF default 0.999), batch 16, 50 epochs over 256x256 patches cut with
stride 64 from the Kalantari training set (border patches included; about 153k patches); online
random horizontal flip and ``rot90`` by ``k = floor(4u + 0.5)`` (``k = 4`` equals ``k = 0``, so the
four rotations are not uniform); loss :func:`hdrlab.losses.wu.wu_loss`.

Deviations from the official training:

* Data: procedural scenes with synthetic brackets (``data.init_args.bracket_ev: [-2, 0, 2]``, the
  datamodule's CRFs) instead of the Kalantari set (real, background-aligned scenes, gamma-2.2 16-bit
  TIFFs that the official code reads as **8-bit**, a data property not reproduced by the merger).
  An "epoch" is the datamodule's, not 153k patches.
* Augmentation: the datamodule's random flips; the official rot90 scheme is not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from hdrlab.methods.bracket_merger import BracketMergerMethod
from hdrlab.models.mergers.wu import WuMerger

__all__ = ["Wu2018"]


class Wu2018(BracketMergerMethod):
    """Wu et al. (ECCV 2018) trained on the batch's bracket (module docstring); output: linear radiance
    relative to the ev-0 exposure.

    Args:
        width: channel multiplier (1.0 = official, 16,606,339 parameters).
        num_res_blocks: residual blocks of the merger (official 9).
        select_ev: the three bracket exposures used (nearest available; official spacing -2, 0, 2).
        loss_domain: domain of the paper's loss distance (``mu_law`` official; ``linear``, ``log``,
            ``pu21``: ablations, :func:`hdrlab.losses.domains.to_domain`).
        lr: Adam learning rate (official 2e-4).
        betas: Adam betas (official (0.5, 0.999)).
        **kwargs: :class:`hdrlab.methods.base.HDRMethod` options.
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        num_res_blocks: int = 9,
        select_ev: Sequence[float] = (-2.0, 0.0, 2.0),
        loss_domain: Literal["mu_law", "linear", "log", "pu21"] = "mu_law",
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, betas=betas, **kwargs)
        self.save_hyperparameters()
        self.merger = WuMerger(width=width, num_res_blocks=num_res_blocks, select_ev=select_ev,
                               loss_domain=loss_domain)
        self.check_merger()
