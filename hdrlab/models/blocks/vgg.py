"""VGG16 convolutional trunk (conv1_1 .. conv5_3 and the five 2x2 max-pools) in the Caffe input
convention, with torchvision's ImageNet weights read from the local torch hub cache.

Input convention ("Caffe style", the one of the original VGG release and of the TensorFlow ports
that encoder-decoder networks built on VGG16 use)::

    z = 255 * x[B, G, R] - (103.939, 116.779, 123.68)       x: RGB in [0, 1], [B, 3, H, W]

(:func:`caffe_vgg_input`). torchvision's VGG16 was trained on ``n_c = (x_c - mu_c) / sigma_c``
instead (RGB, ImageNet mean ``mu`` and std ``sigma``). ``n`` is affine in ``z``, so the first conv
can be rewritten to read ``z`` (:func:`fold_torchvision_input`); every later layer is unchanged.
The two agree exactly except on the 1-pixel border of the first conv, where its zero padding stands
for a slightly different colour in the two conventions (``z = 0`` is ``x = mean / 255`` =
(0.485, 0.458, 0.408) RGB, ``n = 0`` is ``x = mu`` = (0.485, 0.456, 0.406)).

:class:`VGG16Encoder` returns the pooled ``[B, C5, H/32, W/32]`` output and the five skip taps (the
last ReLU output of each stage, before its pool). Its ``width`` multiplies every channel count;
ImageNet weights need ``width=1``. :func:`read_cached_torchvision_vgg16` reads the torchvision file
(``vgg16-397923af.pth``) from the torch hub cache through :func:`hdrlab.weights.require_weights`
(sha256-checked) and never downloads.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import scale_channels

__all__ = [
    "CAFFE_BGR_MEAN",
    "TORCHVISION_RGB_MEAN",
    "TORCHVISION_RGB_STD",
    "TORCHVISION_VGG16_CONVS",
    "VGG16_STAGES",
    "VGG16Encoder",
    "caffe_vgg_input",
    "fold_torchvision_input",
    "read_cached_torchvision_vgg16",
    "torchvision_vgg16_convs",
]

#: output channels of the convs of each VGG16 stage (each stage ends with a 2x2 max-pool)
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: per-channel mean (B, G, R) subtracted from the 0..255 BGR input of the Caffe convention
CAFFE_BGR_MEAN: tuple[float, float, float] = (103.939, 116.779, 123.68)
#: torchvision's ImageNet input normalisation (RGB, on [0, 1])
TORCHVISION_RGB_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
TORCHVISION_RGB_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: indices of the 13 convs in torchvision's ``vgg16().features``, in network order
TORCHVISION_VGG16_CONVS: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def caffe_vgg_input(rgb: torch.Tensor) -> torch.Tensor:
    """``255 x[BGR] - CAFFE_BGR_MEAN`` of ``rgb`` ``[B, 3, H, W]`` in [0, 1]; same shape and dtype."""
    mean = torch.tensor(CAFFE_BGR_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return 255.0 * rgb.flip(1) - mean


def fold_torchvision_input(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite torchvision's first VGG conv so it reads the Caffe-style input (module docstring).

    With ``x_c = (z_{2-c} + m_{2-c}) / 255`` (``m`` = :data:`CAFFE_BGR_MEAN`)::

        W'[:, 2-c] = W[:, c] / (255 sigma_c)
        b'         = b + sum_{c, kh, kw} W[:, c] (m_{2-c} / 255 - mu_c) / sigma_c

    Args:
        weight: ``[C, 3, k, k]`` torchvision ``features.0.weight`` (RGB, normalised input).
        bias: ``[C]`` torchvision ``features.0.bias``.

    Returns:
        ``(weight', bias')`` of a conv on ``z`` (BGR, Caffe convention).
    """
    kw = {"dtype": weight.dtype, "device": weight.device}
    mu = torch.tensor(TORCHVISION_RGB_MEAN, **kw).view(1, 3, 1, 1)
    sigma = torch.tensor(TORCHVISION_RGB_STD, **kw).view(1, 3, 1, 1)
    mean_rgb = torch.tensor(CAFFE_BGR_MEAN[::-1], **kw).view(1, 3, 1, 1)
    new_bias = bias + (weight * (mean_rgb / 255.0 - mu) / sigma).sum(dim=(1, 2, 3))
    return (weight / (255.0 * sigma)).flip(1), new_bias


def read_cached_torchvision_vgg16() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 state dict from the torch hub cache (never downloaded).

    Raises:
        WeightsMissingError: the file ``vgg16-397923af.pth`` is missing from the cache folder or its
            checksum differs; the message names the file, the folder and how to get it.
        ConfigError: the file is not loadable.
    """
    from hdrlab.weights import require_weights

    path = require_weights("vgg16")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ConfigError(f"{path} could not be read as a torchvision VGG16 state dict ({type(err).__name__}); "
                          "replace it with the official vgg16-397923af.pth") from err


def torchvision_vgg16_convs(state_dict: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The 13 ``(weight, bias)`` pairs of a torchvision VGG16 state dict, in network order.

    Args:
        state_dict: ``vgg16().state_dict()`` (keys ``features.<i>.weight|bias``; other keys such
            as ``classifier.*`` are ignored) or ``vgg16().features.state_dict()``.

    Raises:
        ConfigError: a conv tensor is missing.
    """
    prefix = "features." if any(k.startswith("features.") for k in state_dict) else ""
    pairs = []
    for index in TORCHVISION_VGG16_CONVS:
        keys = (f"{prefix}{index}.weight", f"{prefix}{index}.bias")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ConfigError(f"VGG16 state dict lacks {missing[0]!r}; pass torchvision's vgg16().state_dict()")
        pairs.append((state_dict[keys[0]], state_dict[keys[1]]))
    return pairs


class VGG16Encoder(nn.Module):
    """VGG16 conv1_1 .. pool5 on the Caffe-style input; returns the pooled output and the 5 taps.

    ``stages[s]`` is ``nn.Sequential(conv3x3, ReLU, conv3x3, ReLU[, conv3x3, ReLU])`` (convs at the
    even indices; 3x3, stride 1, padding 1, bias); every stage is followed by a 2x2/2 max-pool.

    Args:
        width: channel multiplier of every conv (``max(1, round(c * width))``; 1.0 = VGG16).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ConfigError(f"VGG16Encoder width={width} must be > 0 (1.0 = VGG16)")
        self.width = float(width)
        stages = []
        c_in = 3
        for plan in VGG16_STAGES:
            layers: list[nn.Module] = []
            for channels in plan:
                c_out = scale_channels(channels, width)
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2, 2)
        #: channels of the five taps (and of the pooled output, the last one)
        self.channels = tuple(scale_channels(plan[-1], width) for plan in VGG16_STAGES)

    def convs(self) -> list[nn.Conv2d]:
        """The 13 convs in network order."""
        return [m for stage in self.stages for m in stage if isinstance(m, nn.Conv2d)]

    def load_torchvision_vgg16(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy torchvision VGG16 conv weights, folding its input normalisation into conv1_1.

        Raises:
            ConfigError: a tensor is missing or has another shape (e.g. ``width != 1``).
        """
        pairs = torchvision_vgg16_convs(state_dict)
        convs = self.convs()
        for n, (conv, (weight, bias)) in enumerate(zip(convs, pairs)):
            if tuple(weight.shape) != tuple(conv.weight.shape) or tuple(bias.shape) != tuple(conv.bias.shape):
                raise ConfigError(f"VGG16 conv {n} ({TORCHVISION_VGG16_CONVS[n]}) has shape {tuple(weight.shape)}, "
                                  f"the encoder expects {tuple(conv.weight.shape)}; ImageNet weights need width=1 "
                                  f"(got width={self.width:g})")
        with torch.no_grad():
            for n, (conv, (weight, bias)) in enumerate(zip(convs, pairs)):
                weight, bias = weight.to(torch.float32), bias.to(torch.float32)
                if n == 0:
                    weight, bias = fold_torchvision_input(weight, bias)
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``z`` ``[B, 3, H, W]`` (:func:`caffe_vgg_input`; H, W multiples of 32) ->
        (``[B, C5, H/32, W/32]``, taps ``[s1 (H), s2 (H/2), s3 (H/4), s4 (H/8), s5 (H/16)]``, all >= 0)."""
        taps = []
        for stage in self.stages:
            z = stage(z)
            taps.append(z)
            z = self.pool(z)
        return z, taps
