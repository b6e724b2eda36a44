"""AHDRNet (Yan et al., CVPR 2019, "Attention-guided Network for Ghost-free High Dynamic Range
Imaging") as a method: the learned three-exposure merger trained on the batch's bracket.

The network, its inputs ``[L_i, L_i ** 2.2 / t_i]`` and the official loss (L1 of the mu-law,
mu 5000, on radiance relative to the darkest exposure) belong to
:class:`~hdrlab.models.mergers.ahdrnet.AHDRNetMerger`; :class:`AHDRNet` feeds it the bracket
(:class:`~hdrlab.methods.bracket_merger.BracketMergerMethod`) and sets the official optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from hdrlab.methods.bracket_merger import BracketMergerMethod
from hdrlab.models.mergers.ahdrnet import AHDRNetMerger

__all__ = ["AHDRNet"]


class AHDRNet(BracketMergerMethod):
    """AHDRNet trained on the batch's exposure bracket (e.g. ``bracket_ev: [-2, 0, 2]``); output:
    linear radiance relative to the ev-0 exposure, scored with the HDR metrics.

    Official training (``script_training.py``, ``running_func.py``): Adam, lr 1e-4, betas
    (0.9, 0.999), eps 1e-8 (PyTorch's default), batch 8, random 256 x 256 crops with one of
    identity / left-right flip / up-down flip / 180-degree rotation (the data module's ``flips``:
    independent left-right and up-down flips with p = 0.5, the same four outcomes at 1/4 each),
    Kaiming-normal convolution weights. The code multiplies the lr by 0.1 after 80% of its ``epochs``; with the default
    800,000 epochs of 74 scenes that point is never reached, so the rate is constant (the default
    here: no milestones). The paper's own learning rate, patch stride and iteration count are
    unverified.

    Args:
        width: channel multiplier (1.0 = official, 1,441,283 parameters).
        select_ev: the exposures the merger takes from a bracket with more than three members
            (nearest available; default -2, 0, +2).
        loss_domain: domain of the paper's loss distance (``mu_law`` official; ``linear``, ``log``,
            ``pu21``: ablations, :func:`hdrlab.losses.domains.to_domain`).
        lr: Adam learning rate (official 1e-4).
        betas: Adam betas (official (0.9, 0.999)).
        **kwargs: :class:`~hdrlab.methods.base.HDRMethod` options (``lr_milestones``, ``metrics``, ...).

    Deviations from the official code:

    * Data: procedural scenes with synthetic brackets (``data.init_args.bracket_ev``) instead of
      the Kalantari set; the brackets are perfectly aligned (no motion, so no ghosts to remove),
      and their CRFs are drawn from the data module's ``crf_family`` while the inputs
      ``H_i = L_i ** 2.2 / t_i`` assume the official gamma 2.2 (exact for the Kalantari TIFFs).
    * Ground truth: ``clip(hdr * 2 ** ev_min, 0, 1)`` (the network's range ends where the darkest
      exposure clips; procedural radiance can exceed it, the Kalantari ground truth does not).
    * The two unused official convolutions (``attConv1``, ``attConv3``) are not built (see
      :mod:`hdrlab.models.mergers.ahdrnet`).
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        select_ev: Sequence[float] = (-2.0, 0.0, 2.0),
        loss_domain: Literal["mu_law", "linear", "log", "pu21"] = "mu_law",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, betas=betas, **kwargs)
        self.save_hyperparameters()
        self.merger = AHDRNetMerger(width=width, select_ev=select_ev, loss_domain=loss_domain)
        self.check_merger()
