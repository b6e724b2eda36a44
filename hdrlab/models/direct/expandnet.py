"""ExpandNet (Marnerides, Bashford-Rogers, Hatchett, Debattista, "ExpandNet: A Deep Convolutional
Neural Network for High Dynamic Range Expansion from Low Dynamic Range Content", Computer Graphics
Forum 37(2), Eurographics 2018) as a plain ``nn.Module`` plus its official inference as pure torch.

Network (official PyTorch code: dmarnerides/hdr-expandnet ``model.py``); every conv has a bias,
"+ SELU" marks the convs followed by SELU::

    x [B, 3, H, W] in [0, 1]
    local   : conv3x3 3->64 + SELU, conv3x3 64->128 + SELU                  -> [B, 128, H, W]
    dilated : 3 x (conv3x3 dil 2, pad 2 + SELU) 3->64->64->64,
              conv3x3 dil 2, pad 2 64->64 (no activation)                   -> [B, 64, H, W]
    global  : resize x to 256x256 (bilinear, align_corners=False),
              6 x (conv3x3 stride 2, pad 1 + SELU) 3->64->...->64 (256 -> 4),
              conv4x4 64->64, no padding, no activation                      -> [B, 64, 1, 1]
              broadcast over H x W                                          -> [B, 64, H, W]
    fusion  : concat (local, dilated, global) 256 -> conv1x1 256->64 + SELU -> conv1x1 64->3
              -> sigmoid                                                    -> y [B, 3, H, W] in (0, 1)

456,899 parameters at ``width=1`` (local 75,648, dilated 112,576, global 252,032, fusion 16,643).
Sub-module names and ``nn.Sequential`` indices are the official ones (``local_net``, ``mid_net``,
``glob_net``, ``end_net``), so the official ``weights.pth`` state dict loads with ``strict=True``
without any key mapping. Initialisation is PyTorch's default, as in the official code.

Official inference (``expand.py``; :func:`expandnet_inference`)::

    x = map_range(ldr)                              # min-max over the whole image -> [0, 1]
    g = glob_net(resize_256(x))                     # global feature, once per image
    y = patchwise(x, g, patch 256, overlap 20)      # local + dilated branches on zero-padded,
                                                    # overlapping tiles, centre crops stitched
    hdr = map_range(y)                              # min-max again -> [0, 1]

Both min-max mappings make the output's absolute scale (and offset) arbitrary: the prediction is
*relative* radiance whose minimum is 0 and maximum 1 in every image, whatever the scene's true
exposure. hdrlab's metrics align the median scale of prediction and reference before scoring, which
handles the scale; the zero offset of the minimum is part of the method and is kept.

Deviations from the official code (all deliberate):

* ``width`` multiplies every hidden channel count (``max(1, round(c * width))``); the 3 output
  channels are fixed. ``width=1`` is the official network.
* SELU is not in-place (same values; safe for autograd in every use).
* The patch-wise prediction accepts a batch ``[B, 3, H, W]`` (official: one image); grey inputs
  (the official code expands 1 channel to 3) are not handled here - hdrlab images are RGB.
* :func:`map_range` of a constant image returns ``low`` everywhere (the official ``np.interp``
  with equal end points is ill-defined there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import scale_channels

__all__ = [
    "GLOBAL_SIZE",
    "PATCH_SIZE",
    "PATCH_OVERLAP",
    "ExpandNet",
    "expandnet_inference",
    "map_range",
]

GLOBAL_SIZE = 256
"""Side of the square bilinear resize the global branch sees (official, fixed by the 4x4 last conv)."""

PATCH_SIZE = 256
"""Official default tile size of the patch-wise inference (``expand.py --patch_size``)."""

PATCH_OVERLAP = 20
"""Official overlap between tiles (``model.py``): each tile keeps its centre, ``overlap / 2`` px
in from every side."""


def map_range(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Per-image min-max mapping ``low + (high - low) (x - min) / (max - min)`` (official ``map_range``).

    Args:
        x: ``[B, C, H, W]``; min and max are taken per image over channels and pixels.
        low, high: the target range.

    Returns:
        ``[B, C, H, W]`` in ``[low, high]``, same dtype. A constant image maps to ``low``.
    """
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - lo
    scale = torch.where(span > 0, (high - low) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(span))
    return low + (x - lo) * scale


class ExpandNet(nn.Module):
    """ExpandNet: LDR ``[B, 3, H, W]`` in [0, 1] -> relative HDR ``[B, 3, H, W]`` in (0, 1) (sigmoid).

    See the module docstring for the layers, equations and deviations.

    Args:
        width: channel multiplier of every hidden conv (1.0 = official, 456,899 parameters).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ConfigError(f"ExpandNet width={width} must be > 0 (1.0 = official)")
        c64, c128 = scale_channels(64, width), scale_channels(128, width)
        self.global_channels = c64

        def conv_selu(c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation), nn.SELU())

        self.local_net = nn.Sequential(conv_selu(3, c64, 3, 1, 1), conv_selu(c64, c128, 3, 1, 1))
        self.mid_net = nn.Sequential(
            conv_selu(3, c64, 3, 1, 2, 2),
            conv_selu(c64, c64, 3, 1, 2, 2),
            conv_selu(c64, c64, 3, 1, 2, 2),
            nn.Conv2d(c64, c64, 3, 1, 2, 2),
        )
        self.glob_net = nn.Sequential(
            conv_selu(3, c64, 3, 2, 1),
            *(conv_selu(c64, c64, 3, 2, 1) for _ in range(5)),
            nn.Conv2d(c64, c64, 4, 1, 0),
        )
        self.end_net = nn.Sequential(
            conv_selu(c128 + 2 * c64, c64, 1, 1, 0), nn.Conv2d(c64, 3, 1, 1, 0), nn.Sigmoid()
        )

    def global_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global branch ``[B, C_g, 1, 1]`` of ``x [B, 3, H, W]`` (any size), computed on its 256x256
        bilinear resize (``align_corners=False``, no antialiasing, as the official code)."""
        resized = F.interpolate(x, (GLOBAL_SIZE, GLOBAL_SIZE), mode="bilinear", align_corners=False)
        return self.glob_net(resized)

    def fuse(self, x: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """Local and dilated branches of ``x [B, 3, h, w]`` fused with the given global feature
        ``glob [B, C_g, 1, 1]``; returns ``[B, 3, h, w]`` in (0, 1)."""
        local = self.local_net(x)
        mid = self.mid_net(x)
        b, _, h, w = local.shape
        return self.end_net(torch.cat((local, mid, glob.expand(b, self.global_channels, h, w)), dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-image forward (the official training path): ``x [B, 3, H, W]`` in [0, 1] ->
        ``[B, 3, H, W]`` in (0, 1). No output min-max mapping."""
        return self.fuse(x, self.global_features(x))

    def predict_patches(
        self,
        x: torch.Tensor,
        *,
        patch_size: int = PATCH_SIZE,
        overlap: int = PATCH_OVERLAP,
        glob: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Official low-memory prediction: global feature once, local/dilated branches on tiles.

        ``x`` is zero-padded by ``s = overlap / 2`` on every side; tiles of ``patch_size`` start
        every ``patch_size - overlap`` px of the padded image (the last ones truncated at its
        border); each tile's centre (``s`` px cropped per side) fills the next
        ``patch_size - overlap`` output rows/columns. With ``patch_size >= H + overlap`` and
        ``>= W + overlap`` this equals the whole-image :meth:`forward` on the input zero-padded by
        ``s`` and cropped back.

        Args:
            x: ``[B, 3, H, W]`` in [0, 1] (already min-max mapped for the official inference).
            patch_size: tile side in padded pixels (official default 256).
            overlap: even overlap between tiles (official 20).
            glob: precomputed :meth:`global_features` (default: computed from ``x``).

        Returns:
            ``[B, 3, H, W]`` in (0, 1), no output min-max mapping.
        """
        if overlap < 0 or overlap % 2:
            raise ConfigError(f"ExpandNet overlap={overlap} must be even and >= 0 (official 20)")
        if patch_size <= overlap:
            raise ConfigError(f"ExpandNet patch_size={patch_size} must exceed overlap={overlap} (official 256)")
        if glob is None:
            glob = self.global_features(x)
        skip, step = overlap // 2, patch_size - overlap
        height, width = x.shape[-2:]
        padded = F.pad(x, (skip, skip, skip, skip))
        out = x.new_empty(x.shape[0], 3, height, width)
        for top in range(0, height + overlap, step):
            rows = min(step, height - top)
            if rows <= 0:
                continue
            for left in range(0, width + overlap, step):
                cols = min(step, width - left)
                if cols <= 0:
                    continue
                tile = padded[..., top : top + patch_size, left : left + patch_size]
                pred = self.fuse(tile, glob)
                out[..., top : top + rows, left : left + cols] = pred[..., skip : skip + rows, skip : skip + cols]
        return out


def expandnet_inference(
    net: ExpandNet,
    ldr: torch.Tensor,
    *,
    patch_size: int = PATCH_SIZE,
    overlap: int = PATCH_OVERLAP,
) -> torch.Tensor:
    """The official ``expand.py`` prediction, without file I/O and without the optional resize.

    ``map_range(ldr)`` -> global feature on its 256x256 resize -> :meth:`ExpandNet.predict_patches`
    -> ``map_range`` of the output. Runs under ``no_grad`` like the official ``predict``.

    Args:
        net: the network (eval mode has no effect: no BatchNorm / dropout).
        ldr: ``[B, 3, H, W]`` RGB display-referred LDR, any range (the official script feeds 8-bit
            values as float 0..255; the min-max mapping makes 0..1 and 0..255 inputs identical).
        patch_size, overlap: tiling (official 256 and 20).

    Returns:
        ``[B, 3, H, W]`` relative linear HDR in [0, 1]: each image's minimum is 0 and maximum 1,
        so its absolute scale is arbitrary (see the module docstring).
    """
    with torch.no_grad():
        x = map_range(ldr.float())
        return map_range(net.predict_patches(x, patch_size=patch_size, overlap=overlap))
