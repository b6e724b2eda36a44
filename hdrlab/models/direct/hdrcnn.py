"""HDRCNN (Eilertsen, Kronander, Denes, Mantiuk, Unger, "HDR image reconstruction from a single
exposure using deep CNNs", ACM TOG 36(6), SIGGRAPH Asia 2017) as a plain ``nn.Module`` plus the
official blend of its prediction with the input.

Network (official TensorFlow/TensorLayer code: gabrieleilertsen/hdrcnn ``network.py``)::

    x [B, 3, H, W] RGB in [0, 1], H and W multiples of 32
    encoder : VGG16 conv1_1 .. conv5_3 (3x3 + bias + ReLU), 2x2/2 max-pools, on
              z = 255 x[BGR] - (103.939, 116.779, 123.68)
              taps before each pool: s1 (64 ch, H), s2 (128, H/2), s3 (256, H/4), s4 (512, H/8),
              s5 (512, H/16); s0 = 255 x (RGB)                              -> [B, 512, H/32, W/32]
    latent  : conv3x3 512->512 (bias) + BN + ReLU                          ("encoder/h6")
    decoder : up = ConvTranspose 4x4, stride 2, padding 1 (bias) + BN + ReLU (exactly x2)
              up 512->512; fuse s5; up 512->512; fuse s4; up 512->256; fuse s3; up 256->128;
              fuse s2; up 128->64; fuse s1; conv1x1 64->3 (bias) + BN + ReLU; fuse s0 -> y_hat

    fuse(d, s) = conv1x1(cat[d, log((s / 255)^2 + 1/255)])     (decoder channels first; no activation)

``y_hat`` ``[B, 3, H, W]`` is the log-domain prediction: the linear one is ``exp(y_hat) - 1/255``
(LDR clipping point at 1.0). For ``s0`` the skip transform is ``log(x^2 + 1/255)``, the log of the
gamma-2 linearised input.

Initialisation (official): the transposed convs hold the bilinear kernel ``k k^T``,
``k = [0.25, 0.75, 0.75, 0.25]``, on the channel diagonal (input c -> output c, c < C_out) and zero
elsewhere, zero bias; each fuse conv starts as elementwise addition ``d + T(s)`` (weight 1 from
decoder channel i and from skip channel i into output i, zero bias); the last 1x1 conv is
Xavier-normal with zero bias; the latent conv is TensorLayer's default, truncated normal
(std 0.02) with zero bias; BN gamma ~ N(1, 0.002), beta 0 (TensorLayer ``BatchNormLayer``). The
official encoder is always overwritten by pretrained VGG16 weights (see the deviations).
BN: decay 0.9 (PyTorch momentum 0.1), eps 1e-5.

29,443,358 trainable parameters at ``width=1`` (VGG16 convs 14,714,688; latent and decoder
14,728,670) plus 3,974 BN running-statistic values.

Official blend (``network.get_final``; :func:`hdrcnn_blend`)::

    alpha = clip((max_c x - tau) / (1 - tau), 0, 1)        tau = 0.95, [B, 1, H, W]
    H     = (1 - alpha) x^2 + alpha (exp(y_hat) - 1/255)

Deviations from the official code (all deliberate):

* ``width`` multiplies every hidden channel count (``max(1, round(c * width))``); the 3-channel head
  and the input fuse are fixed. ``width=1`` is the official network.
* Encoder initialisation: the official trunk is VGG16 trained on Places365 (a caffe-tensorflow
  ``.npy``), which does not ship with PyTorch; ``pretrained_encoder=True`` loads torchvision's
  **ImageNet** VGG16 from the local torch hub cache instead, its RGB [0, 1] normalisation folded
  into conv1_1 so the network keeps the official input (:mod:`hdrlab.models.blocks.vgg`; exact
  except on conv1_1's 1-pixel border).
* Without ``pretrained_encoder`` the encoder convs get torchvision's VGG init (Kaiming-normal,
  ``fan_out``, zero bias) instead of TensorLayer's default truncated normal (std 0.02), which the
  official code only has before the VGG16 weights are assigned: on the 0..255 input it shrinks the
  activations with depth (measured std after conv5_3 on a random image: 1e-2 at width 1, 4e-8 at
  width 0.125), the skips then all transform to about log(1/255), and the latent BN's running
  variance falls far below its eps, so eval-mode outputs drift from training-mode ones (measured:
  exp overflow to inf within 200 steps at width 0.125, lr 5e-5).
* BatchNorm is PyTorch's: in training the running variance is updated with the unbiased batch
  variance (TensorFlow: the biased one); ``num_batches_tracked`` is kept as a non-persistent
  buffer (TensorFlow's BN has no such counter; with a fixed momentum it is unused), so the state
  dict holds exactly the 80 official tensors.
* The truncated-normal init draws from the same distribution as TensorFlow with another random
  stream.
"""

from __future__ import annotations

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import check_spatial_multiple, init_tf_truncated_normal_
from hdrlab.models.blocks.vgg import VGG16Encoder, caffe_vgg_input, read_cached_torchvision_vgg16

__all__ = [
    "BLEND_TAU",
    "LOG_EPS",
    "HDRCNN",
    "bilinear_upsampling_kernel",
    "hdrcnn_blend",
    "hdrcnn_linear",
    "skip_to_log_hdr",
]

#: epsilon of the log domain, ``log(y + 1/255)`` (official)
LOG_EPS = 1.0 / 255.0
#: official blend threshold (``network.get_final``: ``thr = 0.05`` -> tau = 1 - 0.05)
BLEND_TAU = 0.95
#: TensorLayer ``BatchNormLayer`` defaults: decay 0.9 -> momentum 0.1, epsilon 1e-5
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def bilinear_upsampling_kernel(size: int = 4) -> torch.Tensor:
    """``[size, size]`` bilinear kernel of a x2 transposed conv (size 4: outer product of
    ``[0.25, 0.75, 0.75, 0.25]``), the official ``deconv_layer`` init."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    k = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(k, k).to(torch.float32)


def skip_to_log_hdr(skip: torch.Tensor) -> torch.Tensor:
    """Official skip transform into the log-HDR domain, ``log((s / 255)^2 + 1/255)``; same shape."""
    return torch.log((skip / 255.0) ** 2 + LOG_EPS)


def hdrcnn_linear(log_pred: torch.Tensor) -> torch.Tensor:
    """Linear HDR ``exp(y_hat) - 1/255`` of the log-domain prediction (clipping point 1.0)."""
    return torch.exp(log_pred) - LOG_EPS


def hdrcnn_blend(ldr: torch.Tensor, log_pred: torch.Tensor, tau: float = BLEND_TAU) -> torch.Tensor:
    """Official blend ``(1 - alpha) x^2 + alpha (exp(y_hat) - 1/255)`` (module docstring).

    Args:
        ldr: ``x`` ``[B, 3, H, W]`` in [0, 1] (the network input).
        log_pred: ``y_hat`` ``[B, 3, H, W]`` (:class:`HDRCNN` output).
        tau: mask threshold in [0, 1) (official 0.95).

    Returns:
        Linear HDR ``[B, 3, H, W]`` (clipping point 1.0); equals ``x^2`` wherever ``max_c x <= tau``.
    """
    if not 0.0 <= tau < 1.0:
        raise ConfigError(f"HDRCNN blend tau={tau} must be in [0, 1) (official 0.95)")
    alpha = ((ldr.amax(dim=1, keepdim=True) - tau) / (1.0 - tau)).clamp(0.0, 1.0)
    return (1.0 - alpha) * ldr**2 + alpha * hdrcnn_linear(log_pred)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    """TensorLayer-like BN: momentum 0.1, eps 1e-5, gamma ~ N(1, 0.002), beta 0, no persistent counter."""
    bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    bn.register_buffer("num_batches_tracked", bn.num_batches_tracked, persistent=False)
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.002)
    return bn


class _UpStep(nn.Module):
    """Official ``deconv_layer``: ConvTranspose 4x4/2 (padding 1, bias, bilinear diagonal init) + BN + ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        self.bn = _batch_norm(c_out)
        with torch.no_grad():
            self.deconv.weight.zero_()
            self.deconv.bias.zero_()
            idx = torch.arange(min(c_in, c_out))
            self.deconv.weight[idx, idx] = bilinear_upsampling_kernel(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.deconv(x)))


class _SkipFuse(nn.Conv2d):
    """Official ``skip_connection_layer``: 1x1 conv over ``cat[d, skip_to_log_hdr(s)]``, initialised
    as elementwise addition ``d + T(s)`` (decoder and skip have the same channel count)."""

    def __init__(self, channels: int) -> None:
        super().__init__(2 * channels, channels, 1)
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()
            idx = torch.arange(channels)
            self.weight[idx, idx] = 1.0
            self.weight[idx, channels + idx] = 1.0

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([decoder, skip_to_log_hdr(skip)], dim=1))


class HDRCNN(nn.Module):
    """HDRCNN: LDR ``[B, 3, H, W]`` in [0, 1] -> log-domain HDR ``y_hat`` ``[B, 3, H, W]``.

    See the module docstring for the layers, initialisation, blend and deviations. Sub-modules map
    one-to-one onto the official TensorLayer layers: ``encoder.stages.<s>.<2k>`` = ``encoder/h<s+1>/conv_<k+1>``,
    ``latent_conv``/``latent_bn`` = ``encoder/h6/conv``/``batch_norm``, ``ups.<i>`` =
    ``decoder/h<i+1>/decon2d`` (+ ``batch_norm_dc``), ``fuses.<i>`` =
    ``decoder/h<i+2>/fuse_skip_connection``, ``head_conv``/``head_bn`` = ``decoder/h7/conv2d``/``batch_norm``,
    ``input_fuse`` = ``decoder/h7/fuse_skip_connection``.

    Args:
        width: channel multiplier of every hidden conv (1.0 = official, 29,443,358 parameters).
        pretrained_encoder: load torchvision's ImageNet VGG16 into the encoder from the local torch
            hub cache (official: Places365 VGG16, not available; needs ``width=1``; nothing is
            downloaded, a missing file raises :class:`~hdrlab.errors.ConfigError`).
    """

    #: H and W must be multiples of this (five 2x2 pools)
    stride = 32

    def __init__(self, *, width: float = 1.0, pretrained_encoder: bool = False) -> None:
        super().__init__()
        if not width > 0:
            raise ConfigError(f"HDRCNN width={width} must be > 0 (1.0 = official)")
        if pretrained_encoder and width != 1.0:
            raise ConfigError(f"HDRCNN pretrained_encoder=True needs width=1 (VGG16 shapes), got width={width:g}")
        self.width = float(width)
        self.encoder = VGG16Encoder(width=width)
        c1, c2, c3, c4, c5 = self.encoder.channels
        self.latent_conv = nn.Conv2d(c5, c5, 3, padding=1)
        self.latent_bn = _batch_norm(c5)
        plan = ((c5, c5), (c5, c4), (c4, c3), (c3, c2), (c2, c1))
        self.ups = nn.ModuleList(_UpStep(c_in, c_out) for c_in, c_out in plan)
        self.fuses = nn.ModuleList(_SkipFuse(c) for c in (c5, c4, c3, c2, c1))  # skips s5, s4, s3, s2, s1
        self.head_conv = nn.Conv2d(c1, 3, 1)
        self.head_bn = _batch_norm(3)
        self.input_fuse = _SkipFuse(3)
        for conv in self.encoder.convs():  # torchvision's VGG init (see the deviations)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        init_tf_truncated_normal_(self.latent_conv.weight, std=0.02)
        nn.init.zeros_(self.latent_conv.bias)
        nn.init.xavier_normal_(self.head_conv.weight)
        nn.init.zeros_(self.head_conv.bias)
        if pretrained_encoder:
            self.encoder.load_torchvision_vgg16(read_cached_torchvision_vgg16())

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        """``ldr`` ``[B, 3, H, W]`` RGB in [0, 1] (H, W multiples of 32) -> ``y_hat`` ``[B, 3, H, W]``
        (log domain; :func:`hdrcnn_linear` gives the linear HDR, :func:`hdrcnn_blend` the official output).

        Raises:
            ConfigError: not ``[B, 3, H, W]`` with H, W multiples of 32.
        """
        check_spatial_multiple(ldr, self.stride, name="HDRCNN")
        if ldr.shape[1] != 3:
            raise ConfigError(f"HDRCNN expects RGB input [B, 3, H, W], got {tuple(ldr.shape)}")
        pooled, taps = self.encoder(caffe_vgg_input(ldr))
        y = torch.relu(self.latent_bn(self.latent_conv(pooled)))
        y = self.ups[0](y)
        for fuse, up, skip in zip(self.fuses[:4], self.ups[1:], reversed(taps[1:])):  # s5, s4, s3, s2
            y = up(fuse(y, skip))
        y = self.fuses[4](y, taps[0])
        y = torch.relu(self.head_bn(self.head_conv(y)))
        return self.input_fuse(y, 255.0 * ldr)
