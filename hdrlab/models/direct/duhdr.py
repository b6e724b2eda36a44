"""DuHDR (She, Ye, Li, Zhao, Zhu, Wang, "Single-image HDR reconstruction by dual learning the camera
imaging process") as plain ``nn.Module``s: the primal chain of SingleHDR's networks plus the dual
(camera-forward) networks.

Official code followed: DoomsdayLeaf/DualHDR (TF1): ``Block/rfb.py``, ``Block/differential_net.py``,
``SingleImageNet/refinement_net.py`` (OOnet), ``Dual_SingleImageNet/non_linearization_net.py`` (Nnet),
``clipping_net.py`` + ``ops.guidedfilter`` (clipping dual), ``quantization_net.py`` (Q),
``SingleImageNet/Dual_Hal/train_dual_hal_synth.py`` (the 3-pass ITnet iteration).

Camera model and its inverse (paper Eqs. 1-2, 15, 21)::

    forward (dual):  L~ = Q(Nnet(C(H)))          C = soft clip, Nnet = forward CRF, Q = 8-bit (+JPEG)
    inverse (primal): C = Dnet(L)  -> g = INnet(C), B = g(C) -> A = ITnet(B) = B + alpha R
                      -> H_OO = OOnet(A, B, C) = ReLU(A + Delta)

    ITnet iteration (training script, ``iterations`` passes):  Y_1 = B + alpha(B) ReLU(f(B)),
        Y_k = B + alpha(B) ReLU(f(Clip(Y_{k-1}))), k = 2..n   (residual always on the original B)
    Clip(H) = clip(b, 0, 1) * H / (b + 1e-15),  b = self-guided filter of H (per channel, 5x5 box,
        reflect border, eps 0.01)
    Nnet: f = fix(f0 + sum_i w_i h_i) (EMoR forward basis, K = 11), L_n = f(x)

Domains: ``L``, ``C``, Nnet/Q outputs display-referred in ``[0, 1]``; ``B``, ``Clip(.)`` linear in
``[0, 1]`` (up to detail overshoot of the soft clip); ``A``, ``H`` linear >= 0, 1.0 = clipping point.
Images are ``[B, 3, H, W]`` float32; the chain needs H, W multiples of :attr:`DuHDRNet.stride` = 32
(five poolings in ITnet; OOnet's four poolings plus the differential net's stride-2 conv).

Networks and parameters at ``width=1`` (counted, see ``tests/test_models_duhdr.py``):

* Dnet = :class:`DequantizationNet` 1,999,779; INnet = :class:`LinearizationNet` 1,200,971;
  ITnet = :class:`HallucinationNet` with ``upsample_pad="zeros"`` 24,569,118;
  OOnet (:class:`OONet`) RFB + diff 2,553,479 (RFB only 773,767, diff only 3,046,659, plain
  1,266,947); inference chain 30,323,347.
* Nnet (:class:`CRFNet`): 1,201,103 with global pooling (default), 5,002,703 with the official
  resolution-bound FC at ``input_size=256`` (fc11 346,112 x 11 + 11, dense 11 x 11 + 11).
* learnable Q (``DuHDRNet.quantization``) = a :class:`DequantizationNet`, 1,999,779.

Deviations from the official code, each deliberate:

* RFB batch norm: the official ``tf.layers.batch_normalization`` is called without ``training``,
  so it always runs in inference mode with running statistics 0/1 that never update - an affine
  layer ``gamma x / sqrt(1 + 1e-5) + beta``. The paper says BN "accelerates convergence", i.e. a
  normal BN: default here is train-mode BN (PyTorch momentum 0.01 = the RFBNet value the TF
  ``momentum=0.01`` was transcribed from, eps 1e-5). ``rfb_bn_always_inference=True`` reproduces
  the official behaviour. Official checkpoints load either way (their moving stats are 0/1).
* Differential-net SE: the official reshape hard-codes the batch size; here any batch works.
  ``depth_to_space`` keeps TF's channel order (block row, block col, channel), not PyTorch's
  ``PixelShuffle`` order, so official kernels load without permutation (:func:`depth_to_space_tf`).
* The non-local block of ``refinement_net.py`` is off in every used config and is not implemented.
* OOnet input: ``cat[A, B, C]`` as the paper's Eq. (21) and the training script's intent;
  ``Dual_Ref/test_now.py`` feeds ``cat[L, B, C]`` (and adds the residual to ``L``), and
  ``train_dual_refinement.py`` feeds the undefined ``ref_hdr_non_loc`` - neither is copied.
* Nnet pooling: the official Nnet flattens a 7x7/1 VALID average pool of the trunk into a dense
  layer whose size depends on the input resolution (346,112 x 11 at 256^2), so it only accepts
  that one size. Default here: global average pooling (any size; 1,201,103 params); pass
  ``crf_input_size=256`` for the official head (5,002,703 params, 256^2 inputs only).
* The official released ``ckpt_inet`` shares INnet's trunk with Nnet (``share_params``); here Nnet
  has its own trunk (copy ``crf_feature_net/*`` into both when converting).
* Quantisation dual: 8-bit rounding + JPEG quality 90..100 over the batch as the official
  ``Quantization_net.get_output``, with a straight-through gradient (official: none, so its
  "unpaired" objectives train nothing - paper Eq. 6 needs a gradient). JPEG uses libjpeg through
  :func:`hdrlab.camera.jpeg_compress` (official: ``tf.image.adjust_jpeg_quality``).
* Learnable Q U-Net = :class:`DequantizationNet` (official ``Quantization_net.model`` is the same
  U-Net with ``x + tanh(U(x))``); the result is clamped to ``[0, 1]`` here, not officially.
* The Dual-Refinement-Net of ``train_dual_refinement.py`` is undefined in the official code; the
  OOnet dual chain ends at Q (paper Eq. 25).
* ``width`` scales every hidden conv (``max(1, round(c * width))``); RFB inner widths are
  ``max(1, in // 8)``.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from hdrlab.camera import LUT_SIZE, gamma_curve, jpeg_compress, lut_apply, lut_grid, make_monotone, quantize
from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import (
    check_spatial_multiple,
    conv2d_same,
    init_tf_glorot_,
    pad_same,
    scale_channels,
)
from hdrlab.models.blocks.resize import upsample2x_bilinear_tf_legacy
from hdrlab.models.direct.singlehdr import (
    NUM_EMOR_WEIGHTS,
    OVEREXPOSURE_THRESHOLD,
    DequantizationNet,
    HallucinationNet,
    LinearizationNet,
    fallback_inverse_crf_basis,
    linearization_features,
    overexposure_mask,
)

__all__ = [
    "CLIP_EPS",
    "CLIP_BOX_SIZE",
    "RFB",
    "DifferentialNet",
    "OONet",
    "CRFNet",
    "ClippingNet",
    "QuantizationDual",
    "DuHDRNet",
    "depth_to_space_tf",
    "fallback_crf_basis",
    "soft_clip",
]

CLIP_BOX_SIZE = 5
"""Box size of the clipping net's guided filter (official ``guidedfilter(hdr, 5, 0.01)``: 5 is the size)."""
CLIP_EPS = 0.01
"""Regulariser of the clipping net's guided filter."""


# --------------------------------------------------------------------------------------------
# small pieces
# --------------------------------------------------------------------------------------------


def depth_to_space_tf(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """TensorFlow ``depth_to_space``: channel ``(i * block + j) * C' + c`` -> pixel ``(i, j)`` of channel ``c``.

    PyTorch's ``PixelShuffle`` orders the input channels ``c * block^2 + i * block + j`` instead;
    this keeps TF's order so official kernels need no permutation.

    Args:
        x: ``[B, C' * block^2, H, W]``.
        block: upscale factor.

    Returns:
        ``[B, C', H * block, W * block]``.
    """
    b, c, h, w = x.shape
    out = c // (block * block)
    y = x.reshape(b, block, block, out, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(b, out, h * block, w * block)


def soft_clip(hdr: torch.Tensor, *, box_size: int = CLIP_BOX_SIZE, eps: float = CLIP_EPS) -> dict[str, torch.Tensor]:
    """The clipping dual of ITnet (official ``Clipping_Net.model``): clip the base, keep the detail.

    ``b`` = self-guided filter of each channel (``kornia.filters.guided_blur``, box ``box_size``,
    reflect border), ``d = hdr / (b + 1e-15)``, output ``clip(b, 0, 1) * d``.

    Args:
        hdr: linear radiance ``[B, C, H, W]``, >= 0.
        box_size: odd box size.
        eps: guided-filter regulariser.

    Returns:
        ``{"clipped": clip(b) d, "base": clip(b, 0, 1), "detail": d}``, each ``[B, C, H, W]``.
    """
    b, c, h, w = hdr.shape
    flat = hdr.reshape(b * c, 1, h, w)
    base = kornia.filters.guided_blur(flat, flat, box_size, eps, border_type="reflect").reshape(b, c, h, w)
    detail = hdr / (base + 1e-15)
    clipped_base = base.clamp(0.0, 1.0)
    return {"clipped": clipped_base * detail, "base": clipped_base, "detail": detail}


class ClippingNet(nn.Module):
    """Parameter-free clipping dual ``C`` of ITnet (:func:`soft_clip`); returns the clipped image only."""

    def __init__(self, *, box_size: int = CLIP_BOX_SIZE, eps: float = CLIP_EPS) -> None:
        super().__init__()
        if box_size < 1 or box_size % 2 == 0:
            raise ConfigError(f"ClippingNet box_size={box_size} must be odd and >= 1; the official value is 5")
        self.box_size, self.eps = int(box_size), float(eps)

    def forward(self, hdr: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` linear -> soft-clipped ``[B, C, H, W]`` (base <= 1, detail kept)."""
        return soft_clip(hdr, box_size=self.box_size, eps=self.eps)["clipped"]


def _is_shape_only(x: torch.Tensor) -> bool:
    """True for meta / FakeTensor inputs (FLOP and memory estimation): the JPEG round trip is a
    shape-preserving, parameter-free host op and is skipped there."""
    return x.device.type == "meta" or isinstance(x, FakeTensor)


class QuantizationDual(nn.Module):
    """Non-learnable dual of Dnet (paper Eq. 3, official ``Quantization_net.get_output``).

    ``Q(x) = round(255 clip(x)) / 255``, then (``jpeg=True``) a JPEG round trip with quality
    ``round(90 + 10 i / (B - 1))`` for image ``i`` of the batch (official spread). The backward
    pass is the identity (straight-through) unless ``straight_through=False``. On meta / fake
    tensors (shape-only FLOP and memory estimates) the JPEG step is skipped.

    Args:
        bits: quantisation bits (official 8).
        jpeg: add the JPEG round trip (official yes; the paper's Eq. 3 has rounding only).
        quality_range: lowest and highest JPEG quality spread over the batch.
        straight_through: identity gradient (official: none).
    """

    def __init__(
        self,
        *,
        bits: int = 8,
        jpeg: bool = True,
        quality_range: tuple[int, int] = (90, 100),
        straight_through: bool = True,
    ) -> None:
        super().__init__()
        lo, hi = (int(q) for q in quality_range)
        if not 1 <= lo <= hi <= 100:
            raise ConfigError(f"QuantizationDual quality_range={quality_range} must satisfy 1 <= lo <= hi <= 100")
        if not 1 <= bits <= 16:
            raise ConfigError(f"QuantizationDual bits={bits} must be in 1..16; the official value is 8")
        self.bits, self.jpeg, self.quality_range, self.straight_through = int(bits), bool(jpeg), (lo, hi), bool(straight_through)

    def qualities(self, batch: int) -> list[int]:
        """JPEG quality of each image of a batch of ``batch`` (one image: the lowest)."""
        lo, hi = self.quality_range
        return [int(round(lo + (hi - lo) * i / (batch - 1))) if batch > 1 else lo for i in range(batch)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Display image ``[B, 3, H, W]`` in ``[0, 1]`` -> quantised (and JPEG-coded) ``[B, 3, H, W]``."""
        y = quantize(x, bits=self.bits, straight_through=self.straight_through)
        if self.jpeg and not _is_shape_only(y):
            y = jpeg_compress(y, quality=self.qualities(x.shape[0]), straight_through=self.straight_through)
        return y


# --------------------------------------------------------------------------------------------
# OOnet: RFB down blocks + differential (MS-SE) bottleneck
# --------------------------------------------------------------------------------------------


class _InferenceOnlyBatchNorm2d(nn.BatchNorm2d):
    """BN that always normalises with its running statistics and never updates them (the official
    RFB's ``tf.layers.batch_normalization`` without ``training``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class _ConvBN(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, dilation: int, relu: bool, frozen_bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
        bn = _InferenceOnlyBatchNorm2d if frozen_bn else nn.BatchNorm2d
        self.bn = bn(out_ch, eps=1e-5, momentum=0.01)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.relu else y


class RFB(nn.Module):
    """Receptive-field block (Liu et al. 2018, official ``Block/rfb.py``), stride 1.

    ``inter = in // 8``; three branches (1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 dil 2; 1x1 -> 3x3 (1.5 inter)
    -> 3x3 -> 3x3 dil 3), each conv bias-free + BN (+ ReLU except each branch's last), concatenated
    (6 inter), 1x1 + BN, scaled by ``scale`` and added to a 1x1 + BN shortcut, then ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        scale: weight of the branch sum (official 0.1).
        bn_always_inference: reproduce the official BN that never leaves inference mode.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, scale: float = 0.1, bn_always_inference: bool = False
    ) -> None:
        super().__init__()
        inter = max(1, in_channels // 8)
        mid = max(1, (inter // 2) * 3)

        def cb(i: int, o: int, k: int, d: int = 1, relu: bool = True) -> _ConvBN:
            return _ConvBN(i, o, k, dilation=d, relu=relu, frozen_bn=bn_always_inference)

        self.branch0 = nn.Sequential(cb(in_channels, 2 * inter, 1), cb(2 * inter, 2 * inter, 3, relu=False))
        self.branch1 = nn.Sequential(
            cb(in_channels, inter, 1), cb(inter, 2 * inter, 3), cb(2 * inter, 2 * inter, 3, d=2, relu=False)
        )
        self.branch2 = nn.Sequential(
            cb(in_channels, inter, 1), cb(inter, mid, 3), cb(mid, 2 * inter, 3), cb(2 * inter, 2 * inter, 3, d=3, relu=False)
        )
        self.fuse = cb(6 * inter, out_channels, 1, relu=False)
        self.shortcut = cb(in_channels, out_channels, 1, relu=False)
        self.scale = float(scale)
        init_tf_glorot_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] -> [B, out, H, W]`` (>= 0)."""
        y = self.fuse(torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1))
        return torch.relu(self.scale * y + self.shortcut(x))


class _CUBlock(nn.Module):
    """Multi-scale depthwise convs (3/5/7, each ReLU, summed) -> SE gate -> 1x1 + ReLU -> residual."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.dw = nn.ModuleList(nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels) for k in (3, 5, 7))
        self.se_reduce = nn.Linear(channels, max(1, channels // reduction), bias=False)
        self.se_expand = nn.Linear(max(1, channels // reduction), channels, bias=False)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = sum(torch.relu(conv(x)) for conv in self.dw)
        gate = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(n.mean(dim=(2, 3))))))
        n = n * gate[:, :, None, None]
        return x + torch.relu(self.project(n))


class DifferentialNet(nn.Module):
    """OOnet bottleneck, the paper's MS-SE block (official ``Block/differential_net.py``).

    ``n1 = ReLU(conv5x5 c->c)``; ``ReLU(conv5x5/2 c->2c)``, ``ReLU(conv1x1 2c->2c)``; three cu-blocks;
    ``depth_to_space(2)`` (TF order) -> ``c/2`` channels at the input resolution;
    ``ReLU(conv1x1 cat[n1, .] -> c)``.

    Args:
        channels: ``c`` (official 128 at width 1); must be even.
        num_blocks: cu-blocks (official 3).
    """

    stride: int = 2

    def __init__(self, channels: int, *, num_blocks: int = 3) -> None:
        super().__init__()
        if channels % 2:
            raise ConfigError(f"DifferentialNet channels={channels} must be even (depth_to_space of 2c channels); "
                              "choose a width giving an even bottleneck")
        c = channels
        self.conv_in = conv2d_same(c, c, 5)
        self.conv_down = nn.Conv2d(c, 2 * c, 5, stride=2)
        self.conv_mix = nn.Conv2d(2 * c, 2 * c, 1)
        self.blocks = nn.Sequential(*(_CUBlock(2 * c) for _ in range(num_blocks)))
        self.fuse = nn.Conv2d(c + c // 2, c, 1)
        init_tf_glorot_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, c, H, W] -> [B, c, H, W]`` (H, W even)."""
        n1 = torch.relu(self.conv_in(x))
        n = torch.relu(self.conv_down(pad_same(n1, 5, 2)))
        n = self.blocks(torch.relu(self.conv_mix(n)))
        return torch.relu(self.fuse(torch.cat([n1, depth_to_space_tf(n, 2)], dim=1)))


class _PlainDown(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = conv2d_same(in_ch, out_ch, kernel)
        self.conv2 = conv2d_same(out_ch, out_ch, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.1)), 0.1)


class _Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, skip_ch: int) -> None:
        super().__init__()
        self.conv1 = conv2d_same(in_ch, out_ch, 3)
        self.conv2 = conv2d_same(out_ch + skip_ch, out_ch, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(upsample2x_bilinear_tf_legacy(x)), 0.1)
        return F.leaky_relu(self.conv2(torch.cat([x, skip], dim=1)), 0.1)


class OONet(nn.Module):
    """Overall optimisation network (official ``Refinement_net`` with ``use_rfb``/``use_diff``).

    SingleHDR's Refinement U-Net (9 input channels, head 16 with 7x7 convs, downs 32/64/128/128,
    TF1-legacy bilinear ups, LeakyReLU 0.1) whose down blocks are 2x2 average pool + :class:`RFB`
    (``rfb=True``) and whose bottleneck is followed by :class:`DifferentialNet` (``diff=True``).
    ``H_OO = ReLU(A + Delta(cat[A, B, C]))``.

    Parameters at width 1: RFB + diff 2,553,479; RFB only 773,767; diff only 3,046,659; neither
    1,266,947 (= SingleHDR's Refinement-Net).

    Args:
        width: channel multiplier of every hidden conv.
        rfb: RFB down blocks (official train/test config: yes).
        diff: differential-net bottleneck (official: yes).
        rfb_bn_always_inference: the official RFB BN defect (module docstring); default False.
    """

    def __init__(
        self, *, width: float = 1.0, rfb: bool = True, diff: bool = True, rfb_bn_always_inference: bool = False
    ) -> None:
        super().__init__()
        c0 = scale_channels(16, width)
        cs = [scale_channels(c, width) for c in (32, 64, 128, 128)]
        widths = [c0, *cs]
        self.head1 = conv2d_same(9, c0, 7)
        self.head2 = conv2d_same(c0, c0, 7)
        kernels = (5, 3, 3, 3)
        self.down = nn.ModuleList(
            RFB(widths[i], widths[i + 1], bn_always_inference=rfb_bn_always_inference)
            if rfb
            else _PlainDown(widths[i], widths[i + 1], kernels[i])
            for i in range(4)
        )
        self.bottleneck = DifferentialNet(widths[4]) if diff else nn.Identity()
        self.up = nn.ModuleList(_Up(widths[4 - i], widths[3 - i], widths[3 - i]) for i in range(4))
        self.tail = conv2d_same(c0, 3, 3)
        for m in (self.head1, self.head2, self.tail, *self.up, *(d for d in self.down if isinstance(d, _PlainDown))):
            init_tf_glorot_(m)
        self.stride = 32 if diff else 16

    def forward(self, hallucinated: torch.Tensor, linear: torch.Tensor, dequantized: torch.Tensor) -> torch.Tensor:
        """Refine ``A`` given ``B`` and ``C`` (each ``[B, 3, H, W]``, H and W multiples of :attr:`stride`).

        Returns:
            ``H_OO`` ``[B, 3, H, W]`` linear, >= 0.
        """
        x = torch.cat([hallucinated, linear, dequantized], dim=1)
        check_spatial_multiple(x, self.stride, name="OONet")
        s = F.leaky_relu(self.head2(F.leaky_relu(self.head1(x), 0.1)), 0.1)
        skips = [s]
        for block in self.down:
            skips.append(block(F.avg_pool2d(skips[-1], 2)))
        y = self.bottleneck(skips[-1])
        for i, block in enumerate(self.up):
            y = block(y, skips[3 - i])
        return torch.relu(hallucinated + self.tail(y))


# --------------------------------------------------------------------------------------------
# Nnet: forward CRF (dual of INnet)
# --------------------------------------------------------------------------------------------


def fallback_crf_basis(k: int = NUM_EMOR_WEIGHTS, samples: int = LUT_SIZE, *, gamma: float = 2.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-CRF basis used without EMoR files (hdrlab fallback): mean ``v ** (1 / gamma)`` and the
    same ``k`` orthonormal sines as :func:`hdrlab.models.direct.singlehdr.fallback_inverse_crf_basis`.

    Returns:
        ``(mean [samples], basis [k, samples])`` float32.
    """
    _, basis = fallback_inverse_crf_basis(k, samples, gamma=gamma)
    return gamma_curve(lut_grid(samples), gamma), basis


class CRFNet(LinearizationNet):
    """Nnet: predicts a monotone forward CRF from a clipped linear image (official ``Non_Linearization_net``).

    Same 102-channel features (:func:`linearization_features` of the linear input) and truncated
    ResNet-50 trunk as INnet; then either global average pooling + dense 512 -> 11 (default) or the
    official ``avg_pool 7x7/1 VALID -> flatten -> dense -> 11`` (``input_size`` given), then
    ``dense 11 -> 11``; ``f = fix(f0 + w @ h)`` with the EMoR *forward* basis (``emor.txt``).
    Parameters at width 1: 1,201,103 (global) / 5,002,703 (``input_size=256``).

    Args:
        width: channel multiplier of the trunk.
        mean: ``[1024]`` EMoR forward mean ``f0``; default :func:`fallback_crf_basis`.
        basis: ``[11, 1024]`` EMoR forward basis ``h``.
        input_size: None (global pooling, any size) or the one square input size of the official
            resolution-bound head (official 256; a multiple of 8, >= 56).
        bn_momentum: trunk BN momentum (slim decay 0.999).
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        mean: torch.Tensor | None = None,
        basis: torch.Tensor | None = None,
        input_size: int | None = None,
        bn_momentum: float = 0.001,
    ) -> None:
        if (mean is None) != (basis is None):
            raise ConfigError("CRFNet needs both mean and basis (EMoRBasis.mean, EMoRBasis.basis) or neither")
        if mean is None:
            mean, basis = fallback_crf_basis()
        super().__init__(width=width, inv_mean=mean, inv_basis=basis, bn_momentum=bn_momentum)
        # the parent stores the curve basis as inv_*: rename to the forward names
        self.register_buffer("mean", self._buffers.pop("inv_mean"))
        self.register_buffer("basis", self._buffers.pop("inv_basis"))
        self.input_size = input_size
        if input_size is not None:
            if input_size % 8 or input_size < 56:
                raise ConfigError(f"CRFNet input_size={input_size} must be a multiple of 8 and >= 56 (official 256), "
                                  "or None for global pooling")
            side = input_size // 8 - 6
            self.fc = nn.Linear(scale_channels(512, width) * side * side, NUM_EMOR_WEIGHTS)
        self.decode = nn.Linear(NUM_EMOR_WEIGHTS, NUM_EMOR_WEIGHTS)
        init_tf_glorot_(self.fc)
        init_tf_glorot_(self.decode)

    def pca_weights(self, image: torch.Tensor) -> torch.Tensor:
        """Forward-EMoR weights ``[B, 11]`` of the clipped linear ``image`` ``[B, 3, H, W]``."""
        if self.input_size is not None and tuple(image.shape[-2:]) != (self.input_size, self.input_size):
            raise ConfigError(f"CRFNet with input_size={self.input_size} takes {self.input_size}x{self.input_size} "
                              f"inputs only, got {tuple(image.shape[-2:])}; use input_size=None (global pooling)")
        x = linearization_features(image, self.histogram_bins)
        x = torch.relu(self.bn1(self.conv1(pad_same(x, 7, 2))))
        x = F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, stride=2)
        x = self.res3(self.res2(x))
        x = x.mean(dim=(2, 3)) if self.input_size is None else F.avg_pool2d(x, 7, stride=1).flatten(1)
        return self.decode(self.fc(x))

    def curve_from_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Monotone forward CRF ``fix(f0 + w @ h)`` ``[B, 1, K]`` (linear -> display)."""
        return make_monotone(self.mean + weights @ self.basis).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# the whole model
# --------------------------------------------------------------------------------------------


class DuHDRNet(nn.Module):
    """DuHDR: SingleHDR's primal chain (ITnet with zero padding, OOnet with RFB + MS-SE) and its duals.

    Primal (attribute names as :class:`~hdrlab.models.direct.SingleHDRNet`): ``dequantization``
    (Dnet), ``linearization`` (INnet), ``hallucination`` (ITnet), ``refinement`` (OOnet).
    Duals: ``crf`` (Nnet, :class:`CRFNet`), ``quantization`` (the learnable Q U-Net), plus the
    parameter-free ``clipping`` (:class:`ClippingNet`) and ``quantize`` (:class:`QuantizationDual`).

    Args:
        width: channel multiplier of every network (1 = official).
        inv_mean, inv_basis: EMoR inverse basis for INnet (see :class:`LinearizationNet`).
        crf_mean, crf_basis: EMoR forward basis for Nnet (see :class:`CRFNet`).
        threshold: tau of ITnet's over-exposure mask (official 0.88; the paper says 0.95).
        iterations: ITnet passes (official training script 3; 1 = a single pass).
        rfb, diff, rfb_bn_always_inference: OOnet options (:class:`OONet`).
        crf_input_size: Nnet's official resolution-bound head (:class:`CRFNet`), None = global pool.
        jpeg: the quantisation dual adds JPEG (:class:`QuantizationDual`).
        pretrained_encoder: ITnet encoder from torchvision's ImageNet VGG16 (see :class:`HallucinationNet`).
        linearization_bn_momentum: BN momentum of INnet and Nnet (slim decay 0.999 = 0.001).
    """

    stride: int = 32
    """H and W must be multiples of this (ITnet: five 2x poolings; OOnet: four + the stride-2 diff conv)."""

    def __init__(
        self,
        *,
        width: float = 1.0,
        inv_mean: torch.Tensor | None = None,
        inv_basis: torch.Tensor | None = None,
        crf_mean: torch.Tensor | None = None,
        crf_basis: torch.Tensor | None = None,
        threshold: float = OVEREXPOSURE_THRESHOLD,
        iterations: int = 3,
        rfb: bool = True,
        diff: bool = True,
        rfb_bn_always_inference: bool = False,
        crf_input_size: int | None = None,
        jpeg: bool = True,
        pretrained_encoder: bool = False,
        linearization_bn_momentum: float = 0.001,
    ) -> None:
        super().__init__()
        if not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"DuHDRNet iterations={iterations!r} must be an int >= 1 (official training: 3)")
        self.iterations = iterations
        self.threshold = threshold
        self.dequantization = DequantizationNet(width=width)
        self.linearization = LinearizationNet(
            width=width, inv_mean=inv_mean, inv_basis=inv_basis, bn_momentum=linearization_bn_momentum
        )
        self.hallucination = HallucinationNet(
            width=width, threshold=threshold, pretrained_encoder=pretrained_encoder, upsample_pad="zeros"
        )
        self.refinement = OONet(width=width, rfb=rfb, diff=diff, rfb_bn_always_inference=rfb_bn_always_inference)
        self.crf = CRFNet(
            width=width, mean=crf_mean, basis=crf_basis, input_size=crf_input_size, bn_momentum=linearization_bn_momentum
        )
        self.quantization = DequantizationNet(width=width)
        self.clipping = ClippingNet()
        self.quantize = QuantizationDual(jpeg=jpeg)

    # ------------------------------------------------------------------ pieces
    def hallucinate(self, linear: torch.Tensor, *, iterations: int | None = None) -> dict[str, torch.Tensor]:
        """ITnet with the official training iteration (module docstring).

        Args:
            linear: ``B`` ``[B, 3, H, W]`` linear in ``[0, 1]``.
            iterations: passes (None: :attr:`iterations`).

        Returns:
            ``{"mask": alpha(B) [B,1,H,W], "residual": alpha R_n, "hallucinated": Y_n}``.
        """
        n = self.iterations if iterations is None else int(iterations)
        if n < 1:
            raise ConfigError(f"DuHDRNet.hallucinate iterations={n} must be >= 1")
        # every pass masks with alpha of the original B and adds its residual to B (official training)
        mask = overexposure_mask(linear, self.threshold)
        hallucinated = linear
        for k in range(n):
            source = self.clipping(hallucinated) if k else linear
            residual = mask * torch.relu(self.hallucination.raw(source))
            hallucinated = linear + residual
        return {"mask": mask, "residual": residual, "hallucinated": hallucinated}

    def camera(self, linear: torch.Tensor) -> dict[str, torch.Tensor]:
        """The dual (forward) chain ``Q(Nnet(C(H)))`` of a linear image.

        Returns:
            ``{"clipped": C(H), "crf": f [B,1,1024], "display": f(C(H)), "ldr": Q(f(C(H)))}``.
        """
        clipped = self.clipping(linear)
        curve = self.crf(clipped)
        display = lut_apply(clipped, curve)
        return {"clipped": clipped, "crf": curve, "display": display, "ldr": self.quantize(display)}

    def forward(
        self, ldr: torch.Tensor, *, inverse_crf: torch.Tensor | None = None, iterations: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Reconstruct linear HDR from an LDR image (primal chain).

        Args:
            ldr: ``[B, 3, H, W]`` display-referred in ``[0, 1]``; H, W multiples of 32.
            inverse_crf: optional precomputed ``[B, 1|3, 1024]`` inverse CRF (image-wide branch).
            iterations: ITnet passes (None: :attr:`iterations`).

        Returns:
            ``dequantized`` C, ``inverse_crf`` g ``[B, 1, 1024]``, ``linearized`` B, ``mask``,
            ``residual``, ``hallucinated`` A (``[B, 3, H, W]`` linear >= 0) and ``hdr`` = OOnet output.
        """
        check_spatial_multiple(ldr, self.stride, name="DuHDRNet")
        dequantized = self.dequantization(ldr)
        if inverse_crf is None:
            inverse_crf = self.linearization(dequantized)
        linearized = lut_apply(dequantized, inverse_crf)
        hal = self.hallucinate(linearized, iterations=iterations)
        hdr = self.refinement(hal["hallucinated"], linearized, dequantized)
        return {
            "dequantized": dequantized,
            "inverse_crf": inverse_crf,
            "linearized": linearized,
            "mask": hal["mask"],
            "residual": hal["residual"],
            "hallucinated": hal["hallucinated"],
            "hdr": hdr,
        }

