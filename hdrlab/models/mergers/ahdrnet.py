"""AHDRNet: Yan, Gong, Shi, van den Hengel, Shen, Reid, Zhang, "Attention-guided Network for
Ghost-free High Dynamic Range Imaging", CVPR 2019 (official code: qingsenyangit/AHDRNet, class
``AHDR`` in ``model.py``; PyTorch 0.3.1).

Three exposures (low, middle = reference, high), each given as 6 channels
``x_i = [L_i, H_i]`` with ``L_i`` the LDR image in ``[0, 1]`` and ``H_i = L_i ** 2.2 / t_i``,
``t_i = 2 ** (ev_i - ev_min)`` (:func:`hdrlab.models.mergers.triplet.gamma_inputs`). With ``F = 64``
features and every convolution 3x3 / padding 1 / with bias unless stated:

* shared extractor: ``Z_i = LReLU(conv_{6 -> F}(x_i))`` for ``i = 1, 2, 3`` (one set of weights);
  LeakyReLU slope 0.01 (PyTorch's default, as the official ``nn.LeakyReLU()``);
* attention for the non-reference images, one module each (``i = 1, 3``):
  ``A_i = sigmoid(conv_{2F -> F}(LReLU(conv_{2F -> 2F}([Z_i, Z_2]))))``, ``Z_i' = Z_i * A_i``
  (the reference features ``Z_2`` are not attended);
* merge: ``F_0 = conv_{3F -> F}([Z_1', Z_2, Z_3'])`` (no activation);
* three dilated residual dense blocks (DRDB) in sequence, ``F_k = DRDB_k(F_{k-1})``: 6 dense layers
  ``y <- [y, ReLU(conv3x3_{dilation 2, padding 2}(y))]`` of growth rate 32 (``F -> F + 6 * 32``),
  a 1x1 conv back to ``F``, plus the block input (local residual);
* global feature fusion: ``conv3x3(conv1x1_{3F -> F}([F_1, F_2, F_3])) + Z_2`` (global residual to
  the reference features, no activations);
* output: ``sigmoid(conv_{F -> 3}(conv_{F -> F}(.)))``: radiance relative to the darkest exposure,
  in ``[0, 1]`` (:class:`~hdrlab.models.mergers.triplet.TripletMerger` rescales it to the
  reference exposure).

Every size is kept (no stride): any ``H x W`` works, :attr:`stride` 1. Convolution weights get the
official Kaiming-normal initialisation (``fan_in``, gain ``sqrt(2)``); biases keep PyTorch's
default (uniform in ``+-1/sqrt(fan_in)``, as PyTorch 0.3.1).

Parameters at width 1: **1,441,283**, what this module builds and what ``hdrlab info`` reports
(the module's trainable parameters). The official class additionally creates two convolutions,
``attConv1`` and ``attConv3`` (``F -> F``, 2 x 36,928 parameters), that its ``forward`` never calls;
its state dict therefore holds **1,515,139** values. Those dead weights are not built here: they
would receive no gradient, count as trainable in ``hdrlab info`` and inflate the memory plan, for
no effect on the output. The ``ahdrnet`` format of :mod:`hdrlab.weights_import`
(``hdrlab import-weights ahdrnet``) drops them when it converts a released ``AHDR`` state dict, so
official weights load with ``strict=True``.

Width: ``width`` scales ``F`` and the growth rate (``max(1, round(c * width))``); 1.0 is official.
The official hyper-parameter ``nBlock = 16`` is unused by its code (three DRDBs are hard-wired), so
it has no counterpart here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.ahdrnet import ahdrnet_loss
from hdrlab.losses.domains import MU_KALANTARI
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.mergers.triplet import KALANTARI_GAMMA, TripletMerger

__all__ = [
    "AHDRNET_BLOCKS",
    "AHDRNET_DENSE_LAYERS",
    "AHDRNET_FEATURES",
    "AHDRNET_GROWTH_RATE",
    "AHDRNET_OFFICIAL_UNUSED",
    "AHDRAttention",
    "AHDRNetMerger",
    "DRDB",
]

#: official ``nFeat`` and ``growthRate`` (``script_training.py`` defaults)
AHDRNET_FEATURES = 64
AHDRNET_GROWTH_RATE = 32
#: official ``nDenselayer`` and the number of DRDBs hard-wired in ``AHDR``
AHDRNET_DENSE_LAYERS = 6
AHDRNET_BLOCKS = 3
#: official submodules that ``AHDR.forward`` never uses (not built here; the ``ahdrnet`` format of
#: :mod:`hdrlab.weights_import` drops their tensors)
AHDRNET_OFFICIAL_UNUSED: tuple[str, ...] = ("attConv1", "attConv3")


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class AHDRAttention(nn.Module):
    """Attention of one non-reference exposure: ``Z_i * sigmoid(conv_out(LReLU(conv_in([Z_i, Z_ref]))))``.

    ``conv_in``: 3x3 ``2F -> 2F`` (official ``att11`` / ``att31``); ``conv_out``: 3x3 ``2F -> F``
    (``att12`` / ``att32``).
    """

    def __init__(self, *, features: int = AHDRNET_FEATURES) -> None:
        super().__init__()
        self.conv_in = _conv3x3(2 * features, 2 * features)
        self.conv_out = _conv3x3(2 * features, features)
        self.act = nn.LeakyReLU(0.01)

    def attention_map(self, z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
        """``A_i [B, F, H, W]`` in ``(0, 1)`` from ``Z_i, Z_ref [B, F, H, W]``."""
        return torch.sigmoid(self.conv_out(self.act(self.conv_in(torch.cat([z, z_ref], dim=1)))))

    def forward(self, z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
        """``Z_i' = Z_i * A_i`` ``[B, F, H, W]``."""
        return z * self.attention_map(z, z_ref)


class DRDB(nn.Module):
    """Dilated residual dense block: ``x + conv1x1(dense(x))``, ``[B, F, H, W] -> [B, F, H, W]``.

    ``dense``: ``layers`` times ``y <- [y, ReLU(conv3x3(y, dilation 2, padding 2))]`` adding ``growth``
    channels each (official ``make_dilation_dense``); ``fuse``: 1x1 ``F + layers * growth -> F``
    (official ``conv_1x1``).
    """

    def __init__(self, *, features: int = AHDRNET_FEATURES, growth: int = AHDRNET_GROWTH_RATE,
                 layers: int = AHDRNET_DENSE_LAYERS) -> None:
        super().__init__()
        self.dense = nn.ModuleList(
            nn.Conv2d(features + i * growth, growth, kernel_size=3, padding=2, dilation=2) for i in range(layers)
        )
        self.fuse = nn.Conv2d(features + layers * growth, features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in self.dense:
            y = torch.cat([y, torch.relu(conv(y))], dim=1)
        return x + self.fuse(y)


class AHDRNetMerger(TripletMerger):
    """AHDRNet (module docstring) as a three-exposure :class:`TripletMerger` with its own objective.

    ``merger(stack)``: ``ExposureStack(images [B, 3, 3, H, W] in [0, 1], ev [B, 3])`` (ascending ev,
    middle reference) -> ``[B, 3, H, W]`` linear radiance relative to the reference exposure
    (the network's darkest-relative sigmoid output times ``2 ** (ev_ref - ev_min)``, e.g. up to 4
    for a ``-2, 0, +2`` bracket). :meth:`objective` trains on ``batch["hdr"]`` with the official loss
    (:func:`hdrlab.losses.ahdrnet.ahdrnet_loss`, L1 of the mu-law, mu 5000).

    Args:
        width: channel multiplier of the features (64) and growth rate (32); 1.0 = official
            (1,441,283 parameters).
        select_ev: the exposures taken from a generated stack (nearest available; default the
            Kalantari training spacing -2, 0, +2).
        gamma: camera gamma of ``H_i = L_i ** gamma / t_i`` (official 2.2).
        mu: mu of the loss's mu-law (official 5000).
        loss_domain: domain of the loss (``mu_law`` official; ``linear``, ``log``, ``pu21`` for ablations).
    """

    def __init__(self, *, width: float = 1.0, select_ev: Sequence[float] = (-2.0, 0.0, 2.0),
                 gamma: float = KALANTARI_GAMMA, mu: float = MU_KALANTARI,
                 loss_domain: Literal["mu_law", "linear", "log", "pu21"] = "mu_law") -> None:
        super().__init__(select_ev=select_ev, gamma=gamma, mu=mu, loss_domain=loss_domain)
        if not width > 0:
            raise ConfigError(f"AHDRNetMerger.width={width} must be > 0 (1.0 = the official network)")
        feats = scale_channels(AHDRNET_FEATURES, width)
        growth = scale_channels(AHDRNET_GROWTH_RATE, width)
        self.extract = _conv3x3(6, feats)
        self.attend_low = AHDRAttention(features=feats)
        self.attend_high = AHDRAttention(features=feats)
        self.merge_in = _conv3x3(3 * feats, feats)
        self.drdbs = nn.ModuleList(DRDB(features=feats, growth=growth) for _ in range(AHDRNET_BLOCKS))
        self.gff_1x1 = nn.Conv2d(AHDRNET_BLOCKS * feats, feats, kernel_size=1)
        self.gff_3x3 = _conv3x3(feats, feats)
        self.conv_up = _conv3x3(feats, feats)
        self.conv_out = _conv3x3(feats, 3)
        self.act = nn.LeakyReLU(0.01)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)  # official weights_init_kaiming

    def forward_inputs(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        """The network on the official inputs (``AHDR.forward``).

        Args:
            x1, x2, x3: ``[B, 6, H, W]`` = ``[L_i, H_i]`` of the low, reference and high exposure.

        Returns:
            ``[B, 3, H, W]`` radiance relative to the darkest exposure, in ``[0, 1]``.
        """
        z1, z2, z3 = (self.act(self.extract(x)) for x in (x1, x2, x3))
        f = self.merge_in(torch.cat([self.attend_low(z1, z2), z2, self.attend_high(z3, z2)], dim=1))
        levels = []
        for block in self.drdbs:
            f = block(f)
            levels.append(f)
        f = self.gff_3x3(self.gff_1x1(torch.cat(levels, dim=1))) + z2
        return torch.sigmoid(self.conv_out(self.conv_up(f)))

    def forward_net(self, ldr: torch.Tensor, hdr: torch.Tensor) -> torch.Tensor:
        """``ldr, hdr [B, 3, 3, H, W]`` (:func:`~hdrlab.models.mergers.triplet.gamma_inputs`) ->
        ``[B, 3, H, W]`` darkest-relative radiance in ``[0, 1]``."""
        if ldr.dim() != 5 or ldr.shape[1:3] != (3, 3) or hdr.shape != ldr.shape:
            raise ConfigError(
                "AHDRNetMerger needs ldr and hdr of shape [B, 3, 3, H, W], "
                f"got {tuple(ldr.shape)} and {tuple(hdr.shape)}"
            )
        x1, x2, x3 = (torch.cat([ldr[:, i], hdr[:, i]], dim=1) for i in range(3))
        return self.forward_inputs(x1, x2, x3)

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Official loss: ``mean |T(pred) - T(target)|``, mu-law ``T`` with ``mu`` (term ``mu_l1``)."""
        value = ahdrnet_loss(pred, target, mu=self.mu, domain=self.loss_domain)
        return value, {f"{self.term_domain}_l1": value.detach()}
