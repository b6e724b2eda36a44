"""Wu, Xu, Tai, Tang, "Deep High Dynamic Range Imaging with Large Foreground Motions", ECCV 2018
(official code: elliottwu/DeepHDR, TensorFlow 1.4, MIT; ``model.py`` ``generator``, ``ops.py``).

The released network is the paper's ResNet variant with U-Net-style skip connections (the only one
in the official code). Three exposures (low, middle = reference, high), no optical flow. With
``F = 64`` (``gf_dim``) at width 1 and every 5x5 conv at stride 2 with TF-"same" REFLECT padding:

* three separate encoders (no weight sharing), per exposure ``i`` on ``[LDR_i, HDR_i]`` (6 ch):
  ``e_i1 = conv(6 -> F)`` (no norm, no activation), ``e_i2 = BN(conv(LReLU_0.2(e_i1), F -> 2F))``;
* merger: ``e3 = BN(conv(LReLU_0.2([e_12, e_22, e_32]), 6F -> 4F))`` (1/8 resolution), then 9
  residual blocks ``x = ReLU(r); y = BN(conv3x3(pad_r(x))); y = BN(conv3x3(pad_r(ReLU(y)))); r = y + x``
  (``pad_r``: reflect by 1);
* decoder (5x5 stride-2 transposed convs, TF "same": output exactly ``2x`` the input):
  ``d1 = BN(deconv(ReLU([r, e3]), 8F -> 2F))``, ``d2 = BN(deconv(ReLU([d1, e_12, e_22, e_32]), 8F -> F))``,
  ``d3 = BN(deconv(ReLU([d2, e_11, e_21, e_31]), 4F -> F))``,
  ``out = tanh(conv5x5_s1(ReLU(d3), F -> 3))`` (reflect pad 2), HDR ``= (out + 1) / 2``.

Parameters at width 1 (trainable, incl. every conv bias and BN gamma/beta): 16,606,339 = encoders
644,544 + merger 13,089,024 + decoder 2,872,771. H and W must be multiples of 8 (three stride-2
convs) and at least 16 (reflect padding needs a pad smaller than the padded size: the 1/4-scale
map is padded by 2, the 1/8-scale map by 1).

Official details reproduced:

* REFLECT "same" padding of ``ops.conv2d``: along an axis of size ``n`` with stride ``s`` and kernel
  ``k``, ``total = max(k - s, 0)`` when ``n % s == 0`` (else ``max(k - n % s, 0)``), ``total // 2``
  before and the rest after, then a VALID conv. For the 5x5 stride-2 convs on even sizes that is
  ``(1, 2)`` (top/left 1, bottom/right 2), output ``n / 2``; for the 5x5 stride-1 output conv ``(2, 2)``.
* ``tf.nn.conv2d_transpose`` with "SAME" padding and output ``2n``: the adjoint of a 5x5 stride-2
  SAME conv on ``2n`` (which pads ``(1, 2)``), i.e. ``ConvTranspose2d(k=5, s=2, padding=1)`` (output
  ``2n + 1``) cropped to its first ``2n`` rows and columns. The kernel is not flipped between the two
  frameworks (both compute the gradient of the forward conv), so official weights map by transposing
  TF ``[k, k, out, in]`` to PyTorch ``[in, out, k, k]`` (convs: ``[k, k, in, out] -> [out, in, k, k]``).
* BatchNorm: TF contrib ``batch_norm(decay=0.9, epsilon=1e-5, scale=True)``; PyTorch momentum
  ``1 - 0.9 = 0.1``, eps 1e-5. Batch statistics in training, moving averages at test (``train=False``).
* Init: convs (incl. the residual 3x3 and the output conv) truncated normal, std 0.02, cut at
  2 std (TF ``truncated_normal_initializer``); transposed convs normal, std 0.02; biases 0; BN
  gamma 1, beta 0.
* Every conv has a bias, also in front of a BN (as ``ops.conv2d``): under batch statistics those
  biases get a zero gradient and stay at 0 (kept for the exact count and for weight import).

Domains (an interface change, numerically equivalent): the official network takes ``LDR * 2 - 1`` and
``HDR_i = 2 (LDR^2.2 / t_i) - 1`` (``t_i = 2^(ev_i - ev_min)``) and returns ``tanh`` in ``[-1, 1]``;
:class:`WuMerger` takes :func:`~hdrlab.models.mergers.triplet.gamma_inputs` (``[0, 1]``), encodes
them so on entry and returns ``(out + 1) / 2`` in ``[0, 1]`` (radiance relative to the darkest
exposure), the frame's network domain.

Data property, not reproduced here: the official training (``convert_to_tfrecord.py``) and test
code read the Kalantari 16-bit TIFFs with ``cv2.imread``'s default flags, i.e. as **8-bit** images,
then divide by 255; the network therefore saw 8-bit-quantised LDRs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import MU_KALANTARI
from hdrlab.losses.wu import wu_loss
from hdrlab.models.blocks.conv import init_tf_truncated_normal_, same_padding_amounts, scale_channels
from hdrlab.models.mergers.triplet import KALANTARI_GAMMA, TripletMerger
from hdrlab.stack import ExposureStack

__all__ = [
    "WU_BN_EPS",
    "WU_BN_MOMENTUM",
    "WU_MIN_SIZE",
    "WU_STRIDE",
    "WuMerger",
    "WuNet",
    "WuResidualBlock",
]

#: BatchNorm of the official ``ops.batch_norm`` (TF decay 0.9 -> PyTorch momentum 0.1, eps 1e-5)
WU_BN_MOMENTUM = 0.1
WU_BN_EPS = 1e-5
#: three stride-2 convs: H and W multiples of 8
WU_STRIDE = 8
#: smallest H, W the reflect padding allows (the 1/4-scale map is padded by 2: it needs > 2 pixels)
WU_MIN_SIZE = 16
#: std of the official weight initialisers
WU_INIT_STD = 0.02


def check_wu_size(height: int, width: int, *, name: str = "WuMerger") -> None:
    """Raise :class:`ConfigError` unless ``height`` and ``width`` are multiples of 8 and at least 16."""
    if height % WU_STRIDE or width % WU_STRIDE or min(height, width) < WU_MIN_SIZE:
        raise ConfigError(
            f"{name} needs H and W that are multiples of {WU_STRIDE} and at least {WU_MIN_SIZE}, got "
            f"{height}x{width}; crop or pad the stack (e.g. the official test crops 1000x1500 to 960x1440)"
        )


class ReflectSameConv2d(nn.Conv2d):
    """``Conv2d`` (bias) after the official REFLECT "same" padding (:func:`hdrlab.models.blocks.conv.same_padding_amounts`, TF's ``SAME`` amounts):
    ``[B, C_in, H, W] -> [B, C_out, ceil(H / s), ceil(W / s)]``. Init: truncated normal std 0.02 (2 std), bias 0."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=True)
        init_tf_truncated_normal_(self.weight, std=WU_INIT_STD)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding_amounts(x.shape[-2], k, s)
        left, right = same_padding_amounts(x.shape[-1], k, s)
        return super().forward(F.pad(x, (left, right, top, bottom), mode="reflect"))


class SameConvTranspose2d(nn.ConvTranspose2d):
    """TF ``conv2d_transpose`` with "SAME" padding to ``stride x`` the input (bias):
    ``[B, C_in, h, w] -> [B, C_out, s h, s w]``.

    The adjoint of a SAME conv on ``s h`` pads ``before = (k - s) // 2``: ``ConvTranspose2d(padding=before)``
    gives ``s h + (k - s - 2 before)`` rows, cropped at the end to ``s h``. Init: normal std 0.02, bias 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=max(kernel_size - stride, 0) // 2)
        nn.init.normal_(self.weight, std=WU_INIT_STD)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        s = self.stride[0]
        return super().forward(x)[..., : s * x.shape[-2], : s * x.shape[-1]]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=WU_BN_EPS, momentum=WU_BN_MOMENTUM)


class WuResidualBlock(nn.Module):
    """``x = ReLU(r)``; ``y = BN(conv3x3(pad(x)))``; ``y = BN(conv3x3(pad(ReLU(y))))``; return ``y + x``
    (reflect pad 1, stride 1, ``[B, C, h, w] -> [B, C, h, w]``; the official ``residule_block``
    called on ``ReLU(r)``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ReflectSameConv2d(channels, channels, 3, 1)
        self.bn1 = _bn(channels)
        self.conv2 = ReflectSameConv2d(channels, channels, 3, 1)
        self.bn2 = _bn(channels)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = F.relu(r)
        y = self.bn1(self.conv1(x))
        y = self.bn2(self.conv2(F.relu(y)))
        return y + x


class WuEncoder(nn.Module):
    """One exposure's encoder: ``[B, 6, H, W] -> (e1 [B, F, H/2, W/2], e2 [B, 2F, H/4, W/4])``;
    ``e1 = conv(x)``, ``e2 = BN(conv(LReLU_0.2(e1)))``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = ReflectSameConv2d(6, features)
        self.conv2 = ReflectSameConv2d(features, 2 * features)
        self.bn2 = _bn(2 * features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.conv1(x)
        return e1, self.bn2(self.conv2(F.leaky_relu(e1, 0.2)))


class WuMergerTrunk(nn.Module):
    """The official ``merger`` scope: ``[B, 6F, H/4, W/4] -> (e3 [B, 4F, H/8, W/8], res [B, 4F, H/8, W/8])``."""

    def __init__(self, features: int, num_res_blocks: int) -> None:
        super().__init__()
        self.conv = ReflectSameConv2d(6 * features, 4 * features)
        self.bn = _bn(4 * features)
        self.res_blocks = nn.Sequential(*(WuResidualBlock(4 * features) for _ in range(num_res_blocks)))

    def forward(self, e2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e3 = self.bn(self.conv(F.leaky_relu(e2, 0.2)))
        return e3, self.res_blocks(e3)


class WuDecoder(nn.Module):
    """The official ``decoder`` scope: skips ``e3, res [B, 4F, H/8]``, ``e2s [B, 6F, H/4]``,
    ``e1s [B, 3F, H/2]`` -> ``tanh`` output ``[B, 3, H, W]`` in ``[-1, 1]``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.deconv1 = SameConvTranspose2d(8 * features, 2 * features)
        self.bn1 = _bn(2 * features)
        self.deconv2 = SameConvTranspose2d(8 * features, features)
        self.bn2 = _bn(features)
        self.deconv3 = SameConvTranspose2d(4 * features, features)
        self.bn3 = _bn(features)
        self.out_conv = ReflectSameConv2d(features, 3, 5, 1)

    def forward(self, res: torch.Tensor, e3: torch.Tensor, e2s: torch.Tensor, e1s: torch.Tensor) -> torch.Tensor:
        d1 = self.bn1(self.deconv1(F.relu(torch.cat([res, e3], dim=1))))
        d2 = self.bn2(self.deconv2(F.relu(torch.cat([d1, e2s], dim=1))))
        d3 = self.bn3(self.deconv3(F.relu(torch.cat([d2, e1s], dim=1))))
        return torch.tanh(self.out_conv(F.relu(d3)))


class WuNet(nn.Module):
    """The official DeepHDR generator (module docstring) in the official ``[-1, 1]`` encoding.

    Args:
        width: channel multiplier (1.0 = official ``gf_dim = 64``: 16,606,339 parameters).
        num_res_blocks: residual blocks of the merger (official 9).
    """

    def __init__(self, *, width: float = 1.0, num_res_blocks: int = 9) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"WuNet.width={width} must be > 0 (1.0 = official)")
        if num_res_blocks < 0:
            raise ConfigError(f"WuNet.num_res_blocks={num_res_blocks} must be >= 0 (official 9)")
        features = scale_channels(64, width)
        self.encoders = nn.ModuleList(WuEncoder(features) for _ in range(3))
        self.merger = WuMergerTrunk(features, num_res_blocks)
        self.decoder = WuDecoder(features)

    def forward(self, ldr: torch.Tensor, hdr: torch.Tensor) -> torch.Tensor:
        """``ldr, hdr [B, 3, 3, H, W]`` (exposures low, mid, high) in ``[-1, 1]`` -> ``tanh`` output
        ``[B, 3, H, W]`` in ``[-1, 1]`` (HDR relative to the darkest exposure, ``[-1, 1]``-encoded)."""
        if ldr.ndim != 5 or ldr.shape[1:3] != (3, 3) or hdr.shape != ldr.shape:
            raise ConfigError(
                f"WuNet expects ldr and hdr [B, 3, 3, H, W] (three exposures), got {tuple(ldr.shape)} "
                f"and {tuple(hdr.shape)}"
            )
        check_wu_size(ldr.shape[-2], ldr.shape[-1], name="WuNet")
        e1s, e2s = zip(*(enc(torch.cat([ldr[:, i], hdr[:, i]], dim=1)) for i, enc in enumerate(self.encoders)))
        e2 = torch.cat(e2s, dim=1)
        e3, res = self.merger(e2)
        return self.decoder(res, e3, e2, torch.cat(e1s, dim=1))


class WuMerger(TripletMerger):
    """Wu et al. (ECCV 2018) as a three-exposure linear merger (module docstring).

    ``forward_net``: :func:`gamma_inputs` ``ldr, hdr [B, 3, 3, H, W]`` in ``[0, 1]`` ->
    ``(WuNet(2 ldr - 1, 2 hdr - 1) + 1) / 2`` ``[B, 3, H, W]`` in ``[0, 1]`` (radiance relative to
    the darkest exposure); :meth:`merge` (the frame's) rescales it to the reference exposure.
    ``loss``: :func:`hdrlab.losses.wu.wu_loss` (official mu-law MSE in the ``[-1, 1]`` encoding).

    Args:
        width: channel multiplier (1.0 = official, 16,606,339 parameters).
        num_res_blocks: residual blocks of the merger (official 9).
        select_ev: exposures taken from a generated stack (nearest available; Kalantari spacing -2, 0, 2).
        gamma: camera gamma of the LDR -> HDR input mapping (official 2.2).
        mu: mu of the loss's mu-law (official 5000).
        loss_domain: domain of the loss (``mu_law`` official; ``linear``, ``log``, ``pu21`` for ablations).
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        num_res_blocks: int = 9,
        select_ev: Sequence[float] = (-2.0, 0.0, 2.0),
        gamma: float = KALANTARI_GAMMA,
        mu: float = MU_KALANTARI,
        loss_domain: Literal["mu_law", "linear", "log", "pu21"] = "mu_law",
    ) -> None:
        super().__init__(select_ev=select_ev, gamma=gamma, mu=mu, loss_domain=loss_domain)
        self.net = WuNet(width=width, num_res_blocks=num_res_blocks)

    @property
    def stride(self) -> int:
        """8: three stride-2 convs (H, W must also be at least 16)."""
        return WU_STRIDE

    def check_stack(self, stack: ExposureStack) -> None:
        """The frame's arity check, plus ``H, W`` multiples of 8 and at least 16."""
        super().check_stack(stack)
        check_wu_size(stack.images.shape[-2], stack.images.shape[-1], name=type(self).__name__)

    def forward_net(self, ldr: torch.Tensor, hdr: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` inputs -> official ``[-1, 1]`` encoding -> :class:`WuNet` -> ``(out + 1) / 2``
        ``[B, 3, H, W]``."""
        return (self.net(ldr * 2.0 - 1.0, hdr * 2.0 - 1.0) + 1.0) / 2.0

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:func:`wu_loss` (official) between network-domain ``pred`` and ``target`` ``[B, 3, H, W]`` in ``[0, 1]``."""
        value = wu_loss(pred, target, mu=self.mu, domain=self.loss_domain)
        return value, {f"{self.term_domain}_mse": value.detach()}
