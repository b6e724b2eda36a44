"""SingleHDR (Liu et al., "Single-Image HDR Reconstruction by Learning to Reverse the Camera
Pipeline", CVPR 2020) as plain ``nn.Module``s.

Pipeline (official code: alex04072000/SingleHDR ``test_real_refinement.py``)::

    LDR x --Dequantization-Net--> C --Linearization-Net (inverse CRF g)--> B = g(C)
      --Hallucination-Net--> A = B + alpha * R --Refinement-Net--> H = ReLU(A + Delta(A, B, C))

Domains: ``x``, ``C`` display-referred in ``[0, 1]``; ``B`` linear in ``[0, 1]`` (g maps [0,1] onto
[0,1]); ``A`` and ``H`` linear, non-negative, >= 1 allowed (the input's clipping point is 1.0, as in
``docs/architecture.md``). All image tensors are ``[B, 3, H, W]`` float32; H and W must be
multiples of 32 (five 2x poolings in the Hallucination-Net encoder).

Deviations from the official TensorFlow code (all deliberate, all documented where they occur):

* ``width`` multiplies every hidden conv's channels (``max(1, round(c * width))``); output heads
  (3 image channels, 11 EMoR weights) are fixed. ``width=1`` is the official network.
* Initialisation follows the official layer types (Glorot-uniform / zero bias for ``tf.layers`` and
  slim convs, truncated normal std 0.02 for TensorLayer convs, identity-sum 1x1 fuse convs,
  Xavier-normal final 1x1), but BN gammas start at exactly 1 (TensorLayer draws N(1, 0.002)).
* The official Linearization trunk starts from ``crf_net_v2.npy`` and the Hallucination encoder
  from VGG16-Places365; neither ships here. The Hallucination-Net encoder uses torchvision's
  ``vgg16().features`` layout, so ImageNet VGG16 weights can be loaded optionally
  (:meth:`HallucinationNet.load_torchvision_vgg16`, or ``pretrained_encoder=True`` from the local
  torch hub cache; nothing is downloaded).
* Monotone fix (:func:`hdrlab.camera.make_monotone`): the sum of differences is clamped to
  >= 1e-12 before normalising, so a constant curve gives zeros instead of NaN (the official code
  divides by zero there).
* The EMoR inverse basis is an argument. Without it, a documented fallback is used: mean curve
  ``g0(v) = v ** 2.2`` and a zero basis - fine for shapes, parameter counts and FLOPs, but then the
  predicted curve ignores the network. For training pass the real basis:
  ``e = hdrlab.camera.EMoRBasis.load(folder, k=11)``, ``SingleHDRNet(inv_mean=e.inv_mean,
  inv_basis=e.inv_basis)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.camera import LUT_SIZE, inverse_gamma_curve, lut_apply, lut_grid, make_monotone
from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import (
    check_spatial_multiple,
    init_tf_glorot_,
    init_tf_truncated_normal_,
    pad_same,
    scale_channels,
)
from hdrlab.models.blocks.features import sobel_edges, soft_histogram_maps
from hdrlab.models.blocks.unet import AvgPoolBilinearUNet
from hdrlab.models.blocks.vgg import CAFFE_BGR_MEAN, fold_torchvision_input, read_cached_torchvision_vgg16

__all__ = [
    "NUM_EMOR_WEIGHTS",
    "OVEREXPOSURE_THRESHOLD",
    "fallback_inverse_crf_basis",
    "VGG_BGR_MEAN",
    "overexposure_mask",
    "linearization_features",
    "fold_torchvision_vgg16_input",
    "DequantizationNet",
    "LinearizationNet",
    "HallucinationNet",
    "RefinementNet",
    "SingleHDRNet",
]

NUM_EMOR_WEIGHTS = 11
"""K: number of inverse-EMoR PCA weights the Linearization-Net predicts (official)."""

OVEREXPOSURE_THRESHOLD = 0.88
"""tau of the hallucination mask; the official code writes it as ``thr = 0.12`` (= 1 - tau)."""

VGG_BGR_MEAN = CAFFE_BGR_MEAN
"""Caffe VGG per-channel mean (B, G, R) on the 0-255 scale."""

# torchvision vgg16().features indices: conv layers and the ReLUs feeding a max-pool (skip taps)
_VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_VGG16_TAPS = (3, 8, 15, 22, 29)


# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------


def overexposure_mask(linear: torch.Tensor, threshold: float = OVEREXPOSURE_THRESHOLD) -> torch.Tensor:
    """Soft over-exposure mask of the Hallucination-Net (official ``thr = 0.12``).

    ``alpha = clip((max_c B - tau) / (1 - tau), 0, 1)``.

    Args:
        linear: linearised image ``B`` ``[B, C, H, W]``, linear in ``[0, 1]``.
        threshold: tau in ``[0, 1)``.

    Returns:
        ``[B, 1, H, W]`` mask in ``[0, 1]``; exactly 0 where ``max_c B <= tau``.
    """
    peak = linear.amax(dim=1, keepdim=True)
    return ((peak - threshold) / (1.0 - threshold)).clamp(0.0, 1.0)


def linearization_features(image: torch.Tensor, bins: tuple[int, ...] = (4, 8, 16)) -> torch.Tensor:
    """Input features of the Linearization-Net: image, Sobel edges, soft histograms.

    Concatenation order (official): image (3), Sobel ``(dy, dx)`` per colour (6), histogram maps for
    each ``N`` in ``bins``, bin-major (``3 (N + 1)`` each). With the default bins: 102 channels.

    Args:
        image: dequantised image ``C`` ``[B, 3, H, W]``, display-referred in ``[0, 1]``.
        bins: histogram bin counts.

    Returns:
        ``[B, 9 + 3 * sum(N + 1), H, W]``.
    """
    return torch.cat([image, sobel_edges(image), soft_histogram_maps(image, bins)], dim=1)


#: torchvision's first VGG16 conv re-expressed for the caffe-style input of the official code
#: (``z = 255 x[BGR] - VGG_BGR_MEAN``; exact except on the 1-pixel border): the generic helper
fold_torchvision_vgg16_input = fold_torchvision_input


# --------------------------------------------------------------------------------------------
# Dequantization-Net
# --------------------------------------------------------------------------------------------


class DequantizationNet(nn.Module):
    """Dequantization-Net: ``C = clip(x + tanh(U(x)), 0, 1)`` (official ``dequantization_net.py``).

    ``U`` is the 5-level U-Net of :class:`AvgPoolBilinearUNet` (head 16 with 7x7 convs, downs
    32/64/128/256 with kernels 5/3/3/3, LeakyReLU 0.1): 1,999,779 parameters at ``width=1``.
    The clip to ``[0, 1]`` is applied by the official caller; it is part of this module here.

    Args:
        width: channel multiplier for every hidden conv.
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        self.unet = AvgPoolBilinearUNet(
            in_channels=3, out_channels=3, head_channels=16, down_channels=(32, 64, 128, 256), width=width
        )

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        """Remove quantisation / JPEG artefacts.

        Args:
            ldr: ``[B, 3, H, W]`` display-referred in ``[0, 1]``, H and W multiples of 16.

        Returns:
            ``C`` ``[B, 3, H, W]`` display-referred in ``[0, 1]``.
        """
        return (ldr + torch.tanh(self.unet(ldr))).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Linearization-Net
# --------------------------------------------------------------------------------------------


def _bn(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class _Bottleneck(nn.Module):
    """caffe ResNet-50 bottleneck (stride on the first 1x1), optional projection shortcut."""

    def __init__(
        self, in_ch: int, mid_ch: int, out_ch: int, *, stride: int, project: bool, momentum: float, eps: float
    ) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(in_ch, mid_ch, 1, stride=stride, bias=False)
        self.bn_a = _bn(mid_ch, momentum, eps)
        self.conv_b = nn.Conv2d(mid_ch, mid_ch, 3, padding=1, bias=False)
        self.bn_b = _bn(mid_ch, momentum, eps)
        self.conv_c = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn_c = _bn(out_ch, momentum, eps)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _bn(out_ch, momentum, eps))
            if project
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn_a(self.conv_a(x)))
        y = torch.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        return torch.relu(self.shortcut(x) + y)


class LinearizationNet(nn.Module):
    """Linearization-Net: predicts a monotone inverse CRF from the dequantised image (official ``linearization_net.py``).

    Features (:func:`linearization_features`, 102 ch) -> truncated caffe ResNet-50 (conv1 7x7/2
    with bias + BN + ReLU + maxpool 3x3/2 with TF 'SAME' padding; res2a-c 64/64/256; res3a-b
    128/128/512, stride 2 in res3a's first 1x1 and projection) -> global average pool -> dense
    to ``K = 11`` weights ``w`` -> ``g = g0 + sum_i w_i hinv_i`` (EMoR inverse PCA) ->
    :func:`hdrlab.camera.make_monotone`. 1,200,971 trainable parameters at ``width=1`` (+ 7,040 BN
    running statistics). BN follows slim: decay 0.999 (momentum 0.001), eps 1e-3.

    Args:
        width: channel multiplier for every hidden conv (the 102 input features and the 11
            outputs are fixed).
        inv_mean: ``[1024]`` EMoR inverse mean curve ``g0`` (``invemor.txt``). Default:
            ``v ** 2.2`` sampled on ``linspace(0, 1, 1024)``.
        inv_basis: ``[11, 1024]`` EMoR inverse basis ``hinv(1..11)``. Default: zeros (the output
            is then ``g0`` regardless of the input: shape-only use).
        histogram_bins: soft-histogram bin counts of the input features.
        bn_momentum: PyTorch BN momentum (= 1 - slim decay).
        bn_eps: BN epsilon.
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        inv_mean: torch.Tensor | None = None,
        inv_basis: torch.Tensor | None = None,
        histogram_bins: tuple[int, ...] = (4, 8, 16),
        bn_momentum: float = 0.001,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        mean = inverse_gamma_curve(lut_grid(LUT_SIZE), 2.2) if inv_mean is None else torch.as_tensor(inv_mean, dtype=torch.float32)
        if mean.ndim != 1 or mean.shape[0] < 2:
            raise ConfigError(
                f"LinearizationNet inv_mean must be a 1-D curve [K] with K >= 2, got shape {tuple(mean.shape)}; "
                "pass EMoRBasis.inv_mean"
            )
        samples = mean.shape[0]
        basis = (
            torch.zeros(NUM_EMOR_WEIGHTS, samples)
            if inv_basis is None
            else torch.as_tensor(inv_basis, dtype=torch.float32)
        )
        if tuple(basis.shape) != (NUM_EMOR_WEIGHTS, samples):
            raise ConfigError(
                f"LinearizationNet inv_basis must have shape ({NUM_EMOR_WEIGHTS}, {samples}), got "
                f"{tuple(basis.shape)}; load it with EMoRBasis.load(folder, k={NUM_EMOR_WEIGHTS})"
            )
        self.register_buffer("inv_mean", mean.clone())
        self.register_buffer("inv_basis", basis.clone())
        self.histogram_bins = tuple(histogram_bins)
        in_ch = 9 + 3 * sum(n + 1 for n in self.histogram_bins)

        def s(c: int) -> int:
            return scale_channels(c, width)

        kw = {"momentum": bn_momentum, "eps": bn_eps}
        self.conv1 = nn.Conv2d(in_ch, s(64), 7, stride=2, bias=True)
        self.bn1 = _bn(s(64), bn_momentum, bn_eps)
        self.res2 = nn.Sequential(
            _Bottleneck(s(64), s(64), s(256), stride=1, project=True, **kw),
            _Bottleneck(s(256), s(64), s(256), stride=1, project=False, **kw),
            _Bottleneck(s(256), s(64), s(256), stride=1, project=False, **kw),
        )
        self.res3 = nn.Sequential(
            _Bottleneck(s(256), s(128), s(512), stride=2, project=True, **kw),
            _Bottleneck(s(512), s(128), s(512), stride=1, project=False, **kw),
        )
        self.fc = nn.Linear(s(512), NUM_EMOR_WEIGHTS)
        init_tf_glorot_(self)

    def pca_weights(self, image: torch.Tensor) -> torch.Tensor:
        """Predict the inverse-EMoR weights.

        Args:
            image: dequantised ``C`` ``[B, 3, H, W]``, display-referred in ``[0, 1]``.

        Returns:
            ``w`` ``[B, 11]``.
        """
        x = linearization_features(image, self.histogram_bins)
        x = torch.relu(self.bn1(self.conv1(pad_same(x, 7, 2))))
        x = F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, stride=2)
        x = self.res3(self.res2(x))
        return self.fc(x.mean(dim=(2, 3)))

    def curve_from_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Monotone inverse CRF from PCA weights: ``fix(g0 + w @ hinv)``.

        Args:
            weights: ``[B, 11]``.

        Returns:
            ``[B, 1, K]`` non-decreasing curve from 0 to 1 (display -> linear), shared by R, G, B.
        """
        curve = self.inv_mean + weights @ self.inv_basis
        return make_monotone(curve).unsqueeze(1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Predict the monotone inverse CRF.

        Args:
            image: dequantised ``C`` ``[B, 3, H, W]``, display-referred in ``[0, 1]``.

        Returns:
            ``[B, 1, K]`` inverse CRF samples (apply with :func:`hdrlab.camera.lut_apply`).
        """
        return self.curve_from_weights(self.pca_weights(image))


# --------------------------------------------------------------------------------------------
# Hallucination-Net
# --------------------------------------------------------------------------------------------


class _UpStep(nn.Module):
    """Nearest x2, pad 1 (reflect; zeros for DuHDR's ITnet), conv3x3 (bias) + ReLU, BN, ReLU (official ``deconv_layer``)."""

    def __init__(self, in_ch: int, out_ch: int, momentum: float, eps: float, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode=pad_mode)
        self.bn = nn.BatchNorm2d(out_ch, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.relu(self.bn(torch.relu(self.conv(x))))


def _fuse_conv(dec_ch: int, skip_ch: int) -> nn.Conv2d:
    """1x1 conv over ``cat[decoder, skip]`` initialised to elementwise addition (HDRCNN fuse)."""
    conv = nn.Conv2d(dec_ch + skip_ch, dec_ch, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        idx = torch.arange(min(dec_ch, skip_ch))
        conv.weight[idx, idx, 0, 0] = 1.0
        conv.weight[idx, dec_ch + idx, 0, 0] = 1.0
    return conv


class HallucinationNet(nn.Module):
    """Hallucination-Net: positive residual for over-exposed regions (official ``hallucination_net.py``).

    HDRCNN-style encoder-decoder on the linear image ``B``: VGG16 conv1_1..pool5 on
    ``255 B[BGR] - VGG_BGR_MEAN``; latent conv3x3 512 + BN + ReLU; five up steps (nearest x2,
    reflect pad, conv3x3 + ReLU, BN, ReLU) to 512/512/256/128/64, each followed by a 1x1 fuse
    with the VGG skip divided by 255; 1x1 conv to 3 + BN + ReLU; fuse with ``B`` itself. Output
    ``R = ReLU(net(B))``, mask ``alpha`` (:func:`overexposure_mask`, tau = 0.88) and
    ``A = B + alpha R`` (official code). 24,569,118 trainable parameters at ``width=1``.

    Deviations: the encoder is laid out like torchvision ``vgg16().features`` (attribute
    ``encoder``) so torchvision ImageNet weights can be loaded (official: VGG16-Places365
    caffe weights); BN is PyTorch's (momentum 0.1, eps 1e-5 = TensorLayer decay 0.9), with
    gamma initialised to 1 instead of N(1, 0.002).

    Args:
        width: channel multiplier for every hidden conv (the 3-channel head is fixed).
        threshold: tau of the over-exposure mask.
        pretrained_encoder: load torchvision's ImageNet VGG16 weights through
            :func:`hdrlab.weights.require_weights` (``vgg16-397923af.pth`` in the torch hub cache,
            sha256-checked, never downloaded; :class:`~hdrlab.errors.WeightsMissingError` if
            absent). Requires ``width=1``.
        bn_momentum: BN momentum.
        bn_eps: BN epsilon.
        upsample_pad: padding of the 3x3 conv after each nearest-neighbour upsampling:
            ``"reflect"`` (SingleHDR's official code) or ``"zeros"`` (TF ``'SAME'``, as DuHDR's ITnet).
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        threshold: float = OVEREXPOSURE_THRESHOLD,
        pretrained_encoder: bool = False,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        upsample_pad: str = "reflect",
    ) -> None:
        super().__init__()
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"HallucinationNet threshold must be in [0, 1), got {threshold}; the official value is 0.88")
        if upsample_pad not in ("reflect", "zeros"):
            raise ConfigError(f"HallucinationNet upsample_pad={upsample_pad!r} is unknown; use 'reflect' (SingleHDR) "
                              "or 'zeros' (DuHDR)")
        self.threshold = threshold
        self.width = width
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG16_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out_ch = scale_channels(int(item), width)
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = out_ch
        self.encoder = nn.Sequential(*layers)
        c512, c256, c128, c64 = (scale_channels(c, width) for c in (512, 256, 128, 64))
        self.latent_conv = nn.Conv2d(c512, c512, 3, padding=1)
        self.latent_bn = nn.BatchNorm2d(c512, eps=bn_eps, momentum=bn_momentum)
        plan = ((c512, c512), (c512, c512), (c512, c256), (c256, c128), (c128, c64))
        self.ups = nn.ModuleList(_UpStep(i, o, bn_momentum, bn_eps, upsample_pad) for i, o in plan)
        self.fuses = nn.ModuleList(_fuse_conv(o, o) for _, o in plan)  # skips s5, s4, s3, s2, s1
        self.head_conv = nn.Conv2d(c64, 3, 1)
        self.head_bn = nn.BatchNorm2d(3, eps=bn_eps, momentum=bn_momentum)
        self.input_fuse = _fuse_conv(3, 3)
        for m in [*self.encoder, self.latent_conv, *(u.conv for u in self.ups)]:
            if isinstance(m, nn.Conv2d):
                init_tf_truncated_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.xavier_normal_(self.head_conv.weight)
        nn.init.zeros_(self.head_conv.bias)
        self.register_buffer("bgr_mean", torch.tensor(VGG_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        if pretrained_encoder:
            self.load_torchvision_vgg16(read_cached_torchvision_vgg16())

    def load_torchvision_vgg16(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load torchvision VGG16 conv weights into the encoder, folding its input normalisation.

        Args:
            state_dict: a torchvision ``vgg16`` state dict (keys ``features.<i>.weight|bias``;
                extra keys such as ``classifier.*`` are ignored) or a ``features`` state dict.

        Raises:
            ConfigError: when ``width != 1`` or the conv shapes do not match VGG16.
        """
        if self.width != 1.0:
            raise ConfigError(f"pretrained VGG16 weights need HallucinationNet width=1, got width={self.width}")
        prefix = "features." if any(k.startswith("features.") for k in state_dict) else ""
        feats = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix) and "classifier" not in k}
        own = self.encoder.state_dict()
        missing = sorted(set(own) - set(feats))
        if missing:
            raise ConfigError(f"VGG16 state dict lacks encoder keys {missing[:4]}...; pass torchvision vgg16().state_dict()")
        for key, value in own.items():
            if tuple(feats[key].shape) != tuple(value.shape):
                raise ConfigError(
                    f"VGG16 weight {prefix}{key} has shape {tuple(feats[key].shape)}, expected {tuple(value.shape)}"
                )
        feats = {k: feats[k].to(torch.float32) for k in own}
        feats["0.weight"], feats["0.bias"] = fold_torchvision_vgg16_input(feats["0.weight"], feats["0.bias"])
        self.encoder.load_state_dict(feats)

    def forward(self, linear: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hallucinate over-exposed content.

        Args:
            linear: ``B`` ``[B, 3, H, W]`` linear in ``[0, 1]``, H and W multiples of 32.

        Returns:
            Dict with ``mask`` ``[B, 1, H, W]`` (alpha in [0, 1]), ``residual`` ``[B, 3, H, W]``
            (``alpha * R``, >= 0, exactly 0 where alpha = 0) and ``hallucinated``
            ``A = B + alpha R`` ``[B, 3, H, W]`` (linear, >= 0).
        """
        mask = overexposure_mask(linear, self.threshold)
        residual = mask * torch.relu(self.raw(linear))
        return {"mask": mask, "residual": residual, "hallucinated": linear + residual}

    def raw(self, linear: torch.Tensor) -> torch.Tensor:
        """The network's output ``f(B)`` ``[B, 3, H, W]`` before the ReLU and the mask (``R = ReLU(f)``),
        for ``linear`` ``[B, 3, H, W]`` with H and W multiples of 32."""
        check_spatial_multiple(linear, 32, name="HallucinationNet")
        x = 255.0 * linear.flip(1) - self.bgr_mean.to(linear.dtype)
        skips = []
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in _VGG16_TAPS:
                skips.append(x)
        y = torch.relu(self.latent_bn(self.latent_conv(x)))
        for up, fuse, skip in zip(self.ups, self.fuses, reversed(skips)):
            y = fuse(torch.cat([up(y), skip / 255.0], dim=1))
        y = torch.relu(self.head_bn(self.head_conv(y)))
        return self.input_fuse(torch.cat([y, linear], dim=1))


# --------------------------------------------------------------------------------------------
# Refinement-Net and the full model
# --------------------------------------------------------------------------------------------


class RefinementNet(nn.Module):
    """Refinement-Net: ``H = ReLU(A + U(cat[A, B, C]))`` (official ``refinement_net.py``).

    ``U`` is the :class:`AvgPoolBilinearUNet` with 9 input channels and a 128-wide bottleneck
    (downs 32/64/128/128): 1,266,947 parameters at ``width=1``.

    Args:
        width: channel multiplier for every hidden conv.
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        self.unet = AvgPoolBilinearUNet(
            in_channels=9, out_channels=3, head_channels=16, down_channels=(32, 64, 128, 128), width=width
        )

    def forward(self, hallucinated: torch.Tensor, linear: torch.Tensor, dequantized: torch.Tensor) -> torch.Tensor:
        """Refine the hallucinated HDR.

        Args:
            hallucinated: ``A`` ``[B, 3, H, W]`` linear, >= 0.
            linear: ``B`` ``[B, 3, H, W]`` linear in ``[0, 1]``.
            dequantized: ``C`` ``[B, 3, H, W]`` display-referred in ``[0, 1]``.

        Returns:
            Final HDR ``[B, 3, H, W]``, linear, >= 0.
        """
        delta = self.unet(torch.cat([hallucinated, linear, dequantized], dim=1))
        return torch.relu(hallucinated + delta)


def fallback_inverse_crf_basis(
    k: int = NUM_EMOR_WEIGHTS, samples: int = LUT_SIZE, *, gamma: float = 2.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CRF basis used when no EMoR files are given (hdrlab fallback, not official).

    Mean curve ``g0(v) = v ** gamma``; basis ``h_i(v) = sin(i pi v)`` for ``i = 1..k``, each
    scaled to unit Euclidean norm over the samples (like the rows of ``invemor.txt``). The
    sines vanish at ``v = 0`` and ``v = 1`` (as EMoR's basis) and are mutually orthogonal, so the
    Linearization-Net stays trainable; they span smooth curves, not EMoR's data-driven space.

    Args:
        k: number of basis curves (official K = 11).
        samples: samples per curve on ``linspace(0, 1, samples)``.
        gamma: exponent of the mean curve.

    Returns:
        ``(inv_mean [samples], inv_basis [k, samples])`` float32.
    """
    grid = lut_grid(samples)
    index = torch.arange(1, k + 1, dtype=torch.float32).unsqueeze(1)
    basis = torch.sin(math.pi * index * grid.unsqueeze(0))
    basis = basis / basis.norm(dim=1, keepdim=True)
    return inverse_gamma_curve(grid, gamma), basis


class SingleHDRNet(nn.Module):
    """The full SingleHDR model: dequantize, linearize, hallucinate, refine.

    Args:
        width: channel multiplier for every hidden conv of all four sub-networks.
        inv_mean: ``[1024]`` EMoR inverse mean curve (see :class:`LinearizationNet`).
        inv_basis: ``[11, 1024]`` EMoR inverse basis (see :class:`LinearizationNet`).
        threshold: tau of the over-exposure mask (official 0.88).
        pretrained_encoder: load torchvision VGG16 weights into the Hallucination-Net encoder
            from the local torch hub cache (see :class:`HallucinationNet`).
        linearization_bn_momentum: BN momentum of the Linearization-Net (official slim decay
            0.999, i.e. 0.001; see :class:`LinearizationNet`).
    """

    stride: int = 32
    """Input height and width must be multiples of this (five 2x poolings in the Hallucination-Net encoder)."""

    def __init__(
        self,
        *,
        width: float = 1.0,
        inv_mean: torch.Tensor | None = None,
        inv_basis: torch.Tensor | None = None,
        threshold: float = OVEREXPOSURE_THRESHOLD,
        pretrained_encoder: bool = False,
        linearization_bn_momentum: float = 0.001,
    ) -> None:
        super().__init__()
        self.dequantization = DequantizationNet(width=width)
        self.linearization = LinearizationNet(
            width=width, inv_mean=inv_mean, inv_basis=inv_basis, bn_momentum=linearization_bn_momentum
        )
        self.hallucination = HallucinationNet(width=width, threshold=threshold, pretrained_encoder=pretrained_encoder)
        self.refinement = RefinementNet(width=width)

    def forward(self, ldr: torch.Tensor, *, inverse_crf: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Reconstruct linear HDR from an LDR image.

        Args:
            ldr: ``[B, 3, H, W]`` display-referred in ``[0, 1]``; H, W multiples of 32 (pad first,
                e.g. symmetric padding as the official ``test_real.py``).
            inverse_crf: optional precomputed ``[B, 1|3, 1024]`` inverse CRF (the image-wide branch),
                e.g. estimated once on a downsampled full image when the image is processed in
                tiles; ``None`` estimates it from ``ldr`` with the Linearization-Net.

        Returns:
            Dict of intermediates:

            * ``dequantized`` - ``C`` ``[B, 3, H, W]``, display-referred in ``[0, 1]``;
            * ``inverse_crf`` - ``g`` ``[B, 1, 1024]``, non-decreasing from 0 to 1;
            * ``linearized`` - ``B = g(C)`` ``[B, 3, H, W]``, linear in ``[0, 1]``;
            * ``mask`` - ``alpha`` ``[B, 1, H, W]`` in ``[0, 1]``;
            * ``residual`` - ``alpha R`` ``[B, 3, H, W]``, >= 0, 0 outside the mask;
            * ``hallucinated`` - ``A = B + alpha R`` ``[B, 3, H, W]``, linear, >= 0;
            * ``hdr`` - refined HDR ``[B, 3, H, W]``, linear, >= 0 (1.0 = input clipping point).

        Raises:
            ConfigError: if the input is not ``[B, C, H, W]`` with H, W multiples of 32.
        """
        check_spatial_multiple(ldr, self.stride, name="SingleHDRNet")
        dequantized = self.dequantization(ldr)
        if inverse_crf is None:
            inverse_crf = self.linearization(dequantized)
        linearized = lut_apply(dequantized, inverse_crf)
        hal = self.hallucination(linearized)
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
