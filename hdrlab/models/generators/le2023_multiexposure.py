"""Le, Le, Nguyen, Hua, "Single-Image HDR Reconstruction by Multi-Exposure Generation", WACV 2023.

Three U-Nets (official code: VinAIResearch/single_image_hdr, ``src/models/ednet.py``):

* **N1** (HDR encoding): ``E_hat = ReLU(I + N1(I * M(I)))`` -- a tanh residual on the input, fed the
  input multiplied by its soft well-exposedness mask ``M`` (paper eq. for the "HDR representation").
* **N2** (up-exposure) and **N3** (down-exposure): ``I_2 = N(E_hat * t_2 / t_1)``, with a normalised
  tanh head ``0.5 * tanh(x) + 0.5`` in ``[0, 1]``. The exposure ratio is the only conditioning.

Domains: the input LDR and all generated images are display-referred ``[0, 1]``; ``E_hat`` is a
non-negative "irradiance-like" map in display units (1.0 = the input's white), unbounded above.

Width scaling: ``width`` multiplies every hidden channel count ``c`` to ``max(1, round(c * width))``;
the RGB input and the 3-channel heads stay fixed. At ``width=1`` the three nets hold 6,916,131 +
2 x 27,639,372 = 62,194,875 trainable parameters (official defaults, BatchNorm affine included).

Deviations from the official code (named on purpose):

* BatchNorm is plain ``nn.BatchNorm2d``; the official 4-GPU run converted it to SyncBatchNorm.
* :class:`Le2023Generator` runs all up-exposures through N2 as one batch (and all down-exposures
  through N3 as one), instead of one call per ev. In eval mode this is identical; in train mode
  BatchNorm would see the ev values together, so train the nets through
  :class:`Le2023MultiExposureNet` on pairs, as the paper does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.generators.base import StackGenerator

#: Official inference ev set: the DrTMO test stacks' 8 non-input exposures, +-2 EV in 0.5 EV steps
#: (ratios 2^-2 ... 2^2 to the middle image ``e.png``), see ``infer_bracketed.py``.
LE2023_DEFAULT_EV: tuple[float, ...] = (-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0)


def well_exposedness_mask(image: torch.Tensor, *, threshold: float = 0.95) -> torch.Tensor:
    """Soft well-exposedness mask of Le et al. (official ``clip_threshold`` tau = 0.95).

    With luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (BT.601, ``kornia.color.rgb_to_grayscale``):
    ``under = max(0, (1 - tau) - Y) / (1 - tau)``, ``over = max(0, Y - tau) / (1 - tau)``,
    ``M = 1 - max(under, over)``. So ``M = 1`` for ``0.05 <= Y <= 0.95`` and falls linearly to 0 at
    ``Y = 0`` and ``Y = 1``.

    Args:
        image: ``[B, 3, H, W]`` display-referred LDR in ``[0, 1]``.
        threshold: tau, in ``(0.5, 1)``.

    Returns:
        ``[B, 1, H, W]`` mask in ``[0, 1]``.
    """
    if not 0.5 < threshold < 1.0:
        raise ConfigError(f"well_exposedness_mask threshold={threshold} must lie in (0.5, 1); the paper uses 0.95")
    luma = kornia.color.rgb_to_grayscale(image)
    span = 1.0 - threshold
    under = (span - luma).clamp(min=0.0) / span
    over = (luma - threshold).clamp(min=0.0) / span
    return 1.0 - torch.maximum(under, over)


def normalized_tanh(x: torch.Tensor) -> torch.Tensor:
    """``0.5 * tanh(x) + 0.5``: maps reals to ``(0, 1)`` (N2/N3 heads)."""
    return 0.5 * torch.tanh(x) + 0.5


def icnr_(weight: torch.Tensor, *, upscale: int = 2) -> torch.Tensor:
    """ICNR initialisation (Aitken et al. 2017) of a conv that feeds ``PixelShuffle(upscale)``, in place.

    A sub-kernel ``[C_out / upscale^2, C_in, k, k]`` is drawn with PyTorch's default conv init
    (kaiming-uniform, ``a = sqrt(5)``, as the official code) and repeated so that the ``upscale^2``
    outputs that PixelShuffle places in one block start identical (no checkerboard at init).

    Args:
        weight: ``[C_out, C_in, k, k]`` with ``C_out`` divisible by ``upscale**2``.
        upscale: the PixelShuffle factor.

    Returns:
        ``weight`` (filled).
    """
    out_channels = weight.shape[0] // (upscale**2)
    sub = torch.empty((out_channels, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    nn.init.kaiming_uniform_(sub, a=math.sqrt(5))
    with torch.no_grad():
        # PixelShuffle reads channel c * upscale^2 + k for sub-pixel k of output channel c.
        weight.copy_(sub.repeat_interleave(upscale**2, dim=0))
    return weight


class Le2023ConvBlock(nn.Sequential):
    """Two ``Conv3x3 (no bias) -> BatchNorm -> Mish`` layers; ``[B, C_in, H, W] -> [B, C_out, H, W]``."""

    def __init__(self, *, in_channels: int = 3, out_channels: int = 16) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Mish(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Mish(),
        )


class Le2023SubPixelUpsampler(nn.Sequential):
    """``Conv1x1 C -> 4C (no bias, ICNR) -> BatchNorm -> Mish -> PixelShuffle(2)``: ``[B,C,H,W] -> [B,C,2H,2W]``."""

    def __init__(self, *, channels: int = 16) -> None:
        conv = nn.Conv2d(channels, 4 * channels, 1, bias=False)
        icnr_(conv.weight, upscale=2)
        super().__init__(conv, nn.BatchNorm2d(4 * channels), nn.Mish(), nn.PixelShuffle(2))


def le2023_encoder_channels(*, base: int, cap: int, levels: int, width: float = 1.0) -> list[int]:
    """Encoder widths ``min(base * 2^i, cap)`` for ``i < levels``, each scaled by ``width``."""
    return [scale_channels(min(base * 2**i, cap), width) for i in range(levels)]


class Le2023UNet(nn.Module):
    """The official template U-Net (``BaseUNet``) used for N1, N2 and N3.

    Encoder level ``i`` (1..L): [MaxPool 2x2 for i > 1] + :class:`Le2023ConvBlock`. Decoder level
    ``i`` (L..2): :class:`Le2023SubPixelUpsampler`, concat ``[skip_{i-1}, up]``, conv block whose
    width is encoder level ``i-2``'s (level 1's at the top). Head: Conv1x1 (bias) + activation; with
    ``concat_input`` the network input is concatenated before the head (``[input, features]``).

    Args:
        base_channels: encoder level-1 width (``nfeats``; N1 16, N2/N3 32).
        max_channels: width cap (``maxfeats``; N1 256, N2/N3 512).
        levels: number of encoder levels (``nlayers`` = 7: input H, W divisible by 64).
        concat_input: N2/N3 (``global_res='concat'``) True; N1 (``'add'``, residual outside) False.
        head: ``"tanh"`` (N1) or ``"normalized_tanh"`` (N2/N3).
        width: hidden-channel multiplier.
    """

    def __init__(
        self,
        *,
        base_channels: int = 32,
        max_channels: int = 512,
        levels: int = 7,
        concat_input: bool = True,
        head: str = "normalized_tanh",
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if head not in ("tanh", "normalized_tanh"):
            raise ConfigError(f"Le2023UNet head={head!r} is unknown; use 'tanh' or 'normalized_tanh'")
        if levels < 2:
            raise ConfigError(f"Le2023UNet levels={levels} must be >= 2")
        enc = le2023_encoder_channels(base=base_channels, cap=max_channels, levels=levels, width=width)
        self.levels = levels
        self.concat_input = concat_input
        self.head_activation = head
        self.pool = nn.MaxPool2d(2, 2)
        self.encoders = nn.ModuleList(
            Le2023ConvBlock(in_channels=c_in, out_channels=c_out) for c_in, c_out in zip([3, *enc[:-1]], enc)
        )
        ups, decs = [], []
        current = enc[-1]
        for i in range(levels - 1, 0, -1):  # 0-based decoder level i merges with encoder level i - 1
            ups.append(Le2023SubPixelUpsampler(channels=current))
            out = enc[i - 2] if i >= 2 else current
            decs.append(Le2023ConvBlock(in_channels=current + enc[i - 1], out_channels=out))
            current = out
        self.upsamplers = nn.ModuleList(ups)
        self.decoders = nn.ModuleList(decs)
        self.head = nn.Conv2d(current + (3 if concat_input else 0), 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` (H, W divisible by ``2**(levels-1)``) -> ``[B, 3, H, W]`` after the head activation."""
        skips = [self.encoders[0](x)]
        for encoder in self.encoders[1:]:
            skips.append(encoder(self.pool(skips[-1])))
        y = skips[-1]
        for k, (up, dec) in enumerate(zip(self.upsamplers, self.decoders)):
            y = dec(torch.cat([skips[-2 - k], up(y)], dim=1))
        if self.concat_input:
            y = torch.cat([x, y], dim=1)
        y = self.head(y)
        return torch.tanh(y) if self.head_activation == "tanh" else normalized_tanh(y)


class Le2023MultiExposureNet(nn.Module):
    """N1 + N2 + N3 of Le et al. with the official widths (N1 16/256, N2 = N3 32/512, 7 levels).

    Args:
        width: hidden-channel multiplier (1.0 = official, 62,194,875 parameters).
        clip_threshold: tau of :func:`well_exposedness_mask` (0.95).
        levels: U-Net depth (official 7; input sides must be divisible by ``2**(levels-1)``).
    """

    def __init__(self, *, width: float = 1.0, clip_threshold: float = 0.95, levels: int = 7) -> None:
        super().__init__()
        self.clip_threshold = clip_threshold
        self.levels = levels
        self.hdr_encoder = Le2023UNet(
            base_channels=16, max_channels=256, levels=levels, concat_input=False, head="tanh", width=width
        )
        self.up_exposure = Le2023UNet(base_channels=32, max_channels=512, levels=levels, width=width)
        self.down_exposure = Le2023UNet(base_channels=32, max_channels=512, levels=levels, width=width)

    def check_size(self, image: torch.Tensor) -> None:
        """Raise :class:`ConfigError` unless H and W are divisible by ``2**(levels-1)`` (64 by default)."""
        factor = 2 ** (self.levels - 1)
        if image.shape[-1] % factor or image.shape[-2] % factor:
            raise ConfigError(
                f"Le2023 input size {tuple(image.shape[-2:])} must be divisible by {factor}; crop or pad the image"
            )

    def hdr_representation(self, ldr: torch.Tensor) -> torch.Tensor:
        """``E_hat = ReLU(I + N1(I * M(I)))``: ``[B, 3, H, W]`` LDR in [0, 1] -> non-negative ``[B, 3, H, W]``."""
        self.check_size(ldr)
        mask = well_exposedness_mask(ldr, threshold=self.clip_threshold)
        return torch.relu(ldr + self.hdr_encoder(ldr * mask))

    def expose(self, hdr: torch.Tensor, ratio: torch.Tensor | float, *, up: bool) -> torch.Tensor:
        """``N2(E_hat * ratio)`` if ``up`` else ``N3(E_hat * ratio)``; ``ratio = t_2 / t_1`` (scalar or ``[B]``).

        Returns:
            ``[B, 3, H, W]`` display-referred image in ``[0, 1]``.
        """
        if isinstance(ratio, torch.Tensor) and ratio.dim() == 1:
            ratio = ratio.view(-1, 1, 1, 1)
        net = self.up_exposure if up else self.down_exposure
        return net(hdr * ratio)

    def forward(
        self, ldr: torch.Tensor, ratio: torch.Tensor | float, *, up: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One official ``EDNet.forward``: returns ``(I_2 [B,3,H,W] in [0,1], E_hat [B,3,H,W] >= 0)``."""
        hdr = self.hdr_representation(ldr)
        return self.expose(hdr, ratio, up=up), hdr


class Le2023Generator(StackGenerator):
    """Le et al. (WACV 2023) as a :class:`StackGenerator`: LDR ``[B,3,H,W]`` -> stack ``[B,N,3,H,W]``.

    ``E_hat`` is computed once; every ev > 0 goes through N2 and every ev < 0 through N3 with the
    ratio ``2**ev``. The official inference set is :data:`LE2023_DEFAULT_EV` (+-2 EV, 0.5 EV steps,
    9 images with the input); the authors merge it with Photomatix.

    :attr:`stride` is ``2 ** (levels - 1)`` (64 at the official 7 levels): training crops must be
    multiples of it. Other input sizes are replicate-padded at the bottom/right to the stride and
    the stack cropped back (the official code requires 512 x 512 inputs).

    Args:
        ev: exposure values to generate (the input is added as ev 0).
        width: hidden-channel multiplier of the three U-Nets.
        clip_threshold: tau of the soft mask.
        levels: U-Net depth.
    """

    def __init__(
        self,
        *,
        ev: Sequence[float] = LE2023_DEFAULT_EV,
        width: float = 1.0,
        clip_threshold: float = 0.95,
        levels: int = 7,
    ) -> None:
        super().__init__(ev=ev, include_input=True)
        self.net = Le2023MultiExposureNet(width=width, clip_threshold=clip_threshold, levels=levels)

    @property
    def stride(self) -> int:
        """``2 ** (levels - 1)``: six 2x poolings at the official 7 levels (64)."""
        return 2 ** (self.net.levels - 1)

    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        """Predict the (non-zero, ascending) ``ev`` exposures: ``[B, 3, H, W] -> [B, len(ev), 3, H, W]`` in [0, 1]
        (any ``H, W``: padded to :attr:`stride` and cropped back)."""
        height, width = ldr.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            ldr = F.pad(ldr, (0, pad_w, 0, pad_h), mode="replicate")
        hdr = self.net.hdr_representation(ldr)
        batch = ldr.shape[0]
        parts = []
        for up, values in ((False, [v for v in ev if v < 0]), (True, [v for v in ev if v > 0])):
            if not values:
                continue
            ratios = torch.tensor([2.0**v for v in values], dtype=hdr.dtype, device=hdr.device)
            scaled = (hdr.unsqueeze(1) * ratios.view(1, -1, 1, 1, 1)).flatten(0, 1)  # [B*K, 3, H, W]
            net = self.net.up_exposure if up else self.net.down_exposure
            parts.append(net(scaled).unflatten(0, (batch, len(values))))
        return torch.cat(parts, dim=1)[..., :height, :width]
