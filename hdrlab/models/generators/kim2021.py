"""Kim, Lee, Kang, "End-to-End Differentiable Learning to HDR Image Synthesis for Multi-exposure
Images", AAAI 2021: recursive up/down exposure networks (official code JungHeeKim29/DiffHDRsyn,
``model/GRU_model.py``, ``model/structure.py``, ``model/combine.py``, ``utils/block.py``).

One set of three networks per direction (up: +1 EV per step, down: -1 EV per step). A step maps the
current image ``I_k`` (RGB in ``[-1, 1]``) and its edge map ``S_k`` to the next exposure:

* **global** (:class:`KimGlobalNet`, 5-level U-Net, ConvGRU bottleneck, conditional instance norm):
  ``G = (tanh(U(I_k)) + I_k) / 2``;
* **structure / local** (:class:`KimStructureNet`, 4 levels): the next edge map
  ``S_{k+1} = sigmoid(...)`` from ``[mean_rgb(I_k), S_k]``;
* **refinement** (:class:`KimRefineNet`, 5 levels): ``I_{k+1} = (tanh(R([I_k, G, S_{k+1}])) + G) / 2``.

The GRU hidden states (global and structure) are carried from step to step within a direction.
Conditional instance norm (:class:`ConditionalInstanceNorm`) holds 6 affine ``InstanceNorm2d``
layers selected by the *target* stack index ``k`` of a 7-image stack (ev ``k - 3``): an up step to
index ``k`` uses layer ``k - 1``, a down step to index ``k`` uses layer ``k``
(:func:`kim_style_index`).

Width: every hidden channel count ``c`` becomes ``max(1, round(c * width))``; image and edge
channels are fixed. At ``width=1`` a direction holds 98,918,403 (global) + 6,188,815 (structure)
+ 11,007,971 (refinement) = 116,115,189 trainable parameters; both directions 232,230,378.

Deviations from the official code (named on purpose):

* The first edge map is computed with ``kornia.filters.canny`` (Gaussian sigma 2, 9x9 kernel,
  thresholds 0.1 / 0.2 on the gradient magnitude) of the grey image with OpenCV's BGR2GRAY
  weights applied to RGB (the official swap, reproduced); the official code uses skimage's
  ``canny(sigma=2)``, whose gradient scaling and hysteresis differ in detail.
* :class:`Kim2021Generator` replicate-pads inputs to a multiple of 32 and crops the stack back
  (the official code resizes every image to 256 x 256).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.generators.base import StackGenerator

#: number of conditional-instance-norm entries (target indices of a 7-image stack)
KIM_STYLES = 6
#: index of the input (ev 0) in the official 7-image stack ev -3..3
KIM_REFERENCE_INDEX = 3
#: official ev set (the input is added at ev 0)
KIM2021_DEFAULT_EV: tuple[float, ...] = (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)
#: OpenCV BGR2GRAY weights applied to RGB channels, as the official edge maps do
OFFICIAL_GREY_WEIGHTS: tuple[float, float, float] = (0.114, 0.587, 0.299)

Norm = Literal["none", "in", "cin"]
Activation = Literal["none", "swish", "tanh", "sigmoid"]


def kim_style_index(target_index: int, *, up: bool) -> int:
    """CIN entry of a step to stack index ``target_index`` (0..6): ``k - 1`` going up, ``k`` going down."""
    return target_index - 1 if up else target_index


class ConditionalInstanceNorm(nn.Module):
    """A bank of ``styles`` affine ``InstanceNorm2d(channels)`` layers; ``forward(x, style)`` uses entry ``style``."""

    def __init__(self, channels: int, *, styles: int = KIM_STYLES) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.InstanceNorm2d(channels, affine=True) for _ in range(styles))

    def forward(self, x: torch.Tensor, style: int = 0) -> torch.Tensor:
        return self.norms[style](x)


class KimConvBlock(nn.Module):
    """``Conv (bias) -> norm -> activation``; ``[B, C_in, H, W] -> [B, C_out, H, W]`` (padding ``k // 2``).

    Args:
        norm: ``"none"``, ``"in"`` (affine InstanceNorm) or ``"cin"`` (:class:`ConditionalInstanceNorm`).
        activation: ``"none"``, ``"swish"`` (``x * sigmoid(x)``), ``"tanh"`` or ``"sigmoid"``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, norm: Norm = "none",
                 activation: Activation = "swish", styles: int = KIM_STYLES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if norm == "cin":
            self.norm: nn.Module = ConditionalInstanceNorm(out_channels, styles=styles)
        elif norm == "in":
            self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        elif norm == "none":
            self.norm = nn.Identity()
        else:
            raise ConfigError(f"KimConvBlock norm={norm!r} is unknown; use 'none', 'in' or 'cin'")
        acts = {"none": nn.Identity, "swish": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
        if activation not in acts:
            raise ConfigError(f"KimConvBlock activation={activation!r} is unknown; use one of {list(acts)}")
        self.act = acts[activation]()
        self.conditional = norm == "cin"

    def forward(self, x: torch.Tensor, style: int = 0) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x, style) if self.conditional else self.norm(x)
        return self.act(x)


class KimDoubleBlock(nn.Module):
    """Two :class:`KimConvBlock` (Swish): ``first_kernel`` conv with ``first_norm``, then 3x3 with ``second_norm``."""

    def __init__(self, in_channels: int, out_channels: int, *, first_kernel: int = 3,
                 first_norm: Norm = "none", second_norm: Norm = "none", styles: int = KIM_STYLES) -> None:
        super().__init__()
        self.conv1 = KimConvBlock(in_channels, out_channels, kernel_size=first_kernel, norm=first_norm, styles=styles)
        self.conv2 = KimConvBlock(out_channels, out_channels, kernel_size=3, norm=second_norm, styles=styles)

    def forward(self, x: torch.Tensor, style: int = 0) -> torch.Tensor:
        return self.conv2(self.conv1(x, style), style)


class ConvGRUCell(nn.Module):
    """Convolutional GRU: ``r, u = sigmoid(Conv[x, h])``, ``n = tanh(Conv[x, r * h])``,
    ``h' = (1 - u) * h + u * n``; ``h = 0`` when not given. ``[B, C_in, H, W] -> [B, C_h, H, W]``."""

    def __init__(self, in_channels: int, hidden_channels: int, *, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        pad = kernel_size // 2
        self.reset_gate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)
        self.update_gate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)
        self.out_gate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        if hidden is None:
            hidden = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        both = torch.cat([x, hidden], dim=1)
        update = torch.sigmoid(self.update_gate(both))
        reset = torch.sigmoid(self.reset_gate(both))
        candidate = torch.tanh(self.out_gate(torch.cat([x, hidden * reset], dim=1)))
        return hidden * (1.0 - update) + candidate * update


class KimRecurrentUnit(nn.Module):
    """``h' = ConvGRU(x, h)``, output ``DoubleBlock(h')`` (3x3 / 3x3, no norm, Swish); returns ``(out, h')``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gru = ConvGRUCell(channels, channels)
        self.block = KimDoubleBlock(channels, channels)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.gru(x, hidden)
        return self.block(hidden), hidden


class _KimUNet(nn.Module):
    """Shared skeleton: init conv, ``levels`` x (DoubleBlock + pool), bottleneck, ``levels`` x
    (concat skip, upsample, DoubleBlock), concat the first skip. Subclasses add heads."""

    def __init__(self, *, in_channels: int, base: int, levels: int, width: float, pool: Literal["avg", "max"],
                 upsample: Literal["bilinear", "nearest"], down_norm: Norm, up_first_kernel: int, up_norm: Norm,
                 recurrent: bool, styles: int) -> None:
        super().__init__()
        chans = [scale_channels(base * 2**i, width) for i in range(levels + 1)]
        self.levels = levels
        self.channels = chans
        self.upsample = upsample
        self.pool = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
        self.init = KimConvBlock(in_channels, chans[0])
        self.down = nn.ModuleList(
            KimDoubleBlock(chans[i], chans[i + 1], second_norm=down_norm, styles=styles) for i in range(levels))
        self.recurrent = recurrent
        self.middle: nn.Module = KimRecurrentUnit(chans[-1]) if recurrent else KimConvBlock(chans[-1], chans[-1])
        self.up = nn.ModuleList(
            KimDoubleBlock(2 * chans[i + 1], chans[i], first_kernel=up_first_kernel, second_norm=up_norm, styles=styles)
            for i in reversed(range(levels)))

    def features(self, x: torch.Tensor, style: int = 0, hidden: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, C_in, H, W] -> ([B, 2 * chans[0], H, W], hidden)``; ``H, W`` divisible by ``2**levels``."""
        out = self.init(x)
        skips = [out]
        for block in self.down:
            out = self.pool(block(out, style))
            skips.append(out)
        if self.recurrent:
            out, hidden = self.middle(out, hidden)
        else:
            out = self.middle(out)
        for k, block in enumerate(self.up):
            out = torch.cat([out, skips[-1 - k]], dim=1)
            out = F.interpolate(out, scale_factor=2.0, mode=self.upsample,
                                align_corners=False if self.upsample == "bilinear" else None)
            out = block(out, style)
        return torch.cat([out, skips[0]], dim=1), hidden


class KimGlobalNet(_KimUNet):
    """Global network (official ``Generator_up/down``, in 3, nf 32, 5 levels, ConvGRU bottleneck).

    ``forward(x [B,3,H,W] in [-1,1], style, hidden) -> ((tanh(head) + x) / 2 in [-1,1], hidden)``.
    98,918,403 parameters at width 1.
    """

    def __init__(self, *, width: float = 1.0, styles: int = KIM_STYLES) -> None:
        super().__init__(in_channels=3, base=32, levels=5, width=width, pool="avg", upsample="bilinear",
                         down_norm="none", up_first_kernel=1, up_norm="cin", recurrent=True, styles=styles)
        self.head = KimConvBlock(2 * self.channels[0], 3, activation="tanh")

    def forward(self, x: torch.Tensor, style: int = 0, hidden: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, hidden = self.features(x, style, hidden)
        return (self.head(feats) + x) / 2.0, hidden


class KimStructureNet(_KimUNet):
    """Structure (local / edge) network (official ``Structure_up/down``, in 2, nf 16, 4 levels).

    Input ``[mean_rgb(I) in [-1,1], edge in [0,1]]``; output the next edge map in ``(0, 1)``:
    ``sigmoid(Conv([Swish(CIN(Conv(feats))), input]))``. The official up network calls its 32->2
    block without the exposure index (CIN entry 0 always); ``up=True`` reproduces that.
    6,188,815 parameters at width 1.
    """

    def __init__(self, *, width: float = 1.0, up: bool = True, styles: int = KIM_STYLES) -> None:
        super().__init__(in_channels=2, base=16, levels=4, width=width, pool="max", upsample="nearest",
                         down_norm="cin", up_first_kernel=1, up_norm="cin", recurrent=True, styles=styles)
        self.up_direction = up
        self.out_conv = KimConvBlock(2 * self.channels[0], 2, norm="cin", styles=styles)
        self.final = KimConvBlock(4, 1, activation="sigmoid")

    def forward(self, x: torch.Tensor, style: int = 0, hidden: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, hidden = self.features(x, style, hidden)
        out = self.out_conv(feats, 0 if self.up_direction else style)
        return self.final(torch.cat([out, x], dim=1)), hidden


class KimRefineNet(_KimUNet):
    """Refinement network (official ``CombineNet``, in 7, nf 16, 5 levels, affine IN in the decoder).

    ``forward([I, G, S] [B,7,H,W]) -> (tanh(head) + G) / 2`` in ``[-1, 1]``. 11,007,971 parameters at width 1.
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__(in_channels=7, base=16, levels=5, width=width, pool="avg", upsample="bilinear",
                         down_norm="none", up_first_kernel=3, up_norm="in", recurrent=False, styles=1)
        self.head = KimConvBlock(2 * self.channels[0], 3, activation="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self.features(x)
        return (self.head(feats) + x[:, 3:6]) / 2.0


class KimDirection(nn.Module):
    """The three networks of one direction and one recursion step (official ``Up_ev_model`` / ``Down_ev_model``)."""

    def __init__(self, *, width: float = 1.0, up: bool = True) -> None:
        super().__init__()
        self.up = up
        self.global_net = KimGlobalNet(width=width)
        self.structure_net = KimStructureNet(width=width, up=up)
        self.refine_net = KimRefineNet(width=width)

    def step(self, image: torch.Tensor, edge: torch.Tensor, style: int,
             hidden: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One exposure step.

        Args:
            image: ``[B, 3, H, W]`` current image in ``[-1, 1]``.
            edge: ``[B, 1, H, W]`` its edge map in ``[0, 1]``.
            style: CIN entry (:func:`kim_style_index`).
            hidden: GRU states ``(global, structure)`` (``None``: zeros).

        Returns:
            ``(refined [B,3,H,W], global [B,3,H,W]`` in ``[-1, 1]``, ``edge [B,1,H,W]`` in ``(0, 1)``,
            new hidden states).
        """
        glob, h_img = self.global_net(image, style, hidden[0])
        grey = image.mean(dim=1, keepdim=True)
        next_edge, h_edge = self.structure_net(torch.cat([grey, edge], dim=1), style, hidden[1])
        refined = self.refine_net(torch.cat([image, glob, next_edge], dim=1))
        return refined, glob, next_edge, (h_img, h_edge)


class Kim2021Net(nn.Module):
    """Both directions (``up``: +1 EV per step, ``down``: -1 EV per step); 232,230,378 parameters at width 1."""

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        self.up = KimDirection(width=width, up=True)
        self.down = KimDirection(width=width, up=False)


def kim_edge_map(image: torch.Tensor, *, sigma: float = 2.0, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """Binary Canny edge map ``[B, 1, H, W]`` in ``{0, 1}`` of ``image [B, 3, H, W]`` in ``[0, 1]`` (no gradient).

    Grey = OpenCV BGR2GRAY weights on RGB channels (the official swap); ``kornia.filters.canny`` with
    a Gaussian of ``sigma`` (kernel ``2 * ceil(2 sigma) + 1``) and hysteresis thresholds ``low`` / ``high``.
    Under ``FakeTensorMode`` (shape-only runs) the map is all zeros: Canny's hysteresis reads values.
    """
    if is_fake(image):  # shape-only runs (FLOP counts, memory plans): Canny's hysteresis loop reads values
        return image.new_zeros(image.shape[0], 1, *image.shape[2:])
    weights = torch.tensor(OFFICIAL_GREY_WEIGHTS, dtype=image.dtype, device=image.device)
    grey = kornia.color.rgb_to_grayscale(image.detach().clamp(0.0, 1.0), rgb_weights=weights)
    size = 2 * math.ceil(2.0 * sigma) + 1
    _, edges = kornia.filters.canny(grey, low_threshold=low, high_threshold=high,
                                    kernel_size=(size, size), sigma=(sigma, sigma))
    return (edges > 0).to(image.dtype)


Feedback = Literal["refined", "global"]


class Kim2021Generator(StackGenerator):
    """Kim et al. (AAAI 2021) as a :class:`StackGenerator`: LDR ``[B,3,H,W]`` -> stack ``[B,N,3,H,W]``.

    Recursion (official ``HDR_model`` / ``test.py``): from the input (stack index 3, ev 0) the up
    direction makes ev +1, +2, +3 and the down direction ev -1, -2, -3, one step per EV, feeding the
    output of each step (``feedback="refined"``: the refined image, as at inference and after the
    official ``refine_step``; ``"global"``: the global network's output, as before it) and the
    predicted edge map back, and carrying both GRU states. The first edge map is
    :func:`kim_edge_map` of the input. Only as many steps as the requested ev set needs are run.

    ev values must be whole, non-zero and in ``-3..3`` (the 6 CIN entries). Inputs are
    replicate-padded to a multiple of :attr:`stride` (32) and the stack cropped back.

    Args:
        ev: exposure values to generate (the input is added as ev 0); official ``-3..3``.
        width: hidden-channel multiplier of the six networks.
        feedback: which output is fed to the next step (``"refined"`` or ``"global"``).
    """

    def __init__(self, *, ev: Sequence[float] = KIM2021_DEFAULT_EV, width: float = 1.0,
                 feedback: Feedback = "refined") -> None:
        super().__init__(ev=ev, include_input=True)
        self._check_ev(self.ev)
        if feedback not in ("refined", "global"):
            raise ConfigError(f"Kim2021Generator feedback={feedback!r} is unknown; use 'refined' or 'global'")
        self.feedback = feedback
        self.net = Kim2021Net(width=width)

    @staticmethod
    def _check_ev(ev: Sequence[float]) -> None:
        bad = [v for v in ev if v != int(v) or abs(v) > KIM_REFERENCE_INDEX]
        if bad:
            raise ConfigError(
                f"Kim2021Generator ev {list(ev)} has {bad}: the recursion makes whole EV steps within -3..3 "
                "(6 conditional-norm entries); use e.g. ev=[-3, -2, -1, 1, 2, 3]")

    def output_ev(self, ev: Sequence[float] | None = None) -> tuple[float, ...]:
        out = super().output_ev(ev)
        self._check_ev(out)
        return out

    @property
    def stride(self) -> int:
        """32: five 2x poolings in the global and refinement networks."""
        return 2**5

    def recurse(self, image: torch.Tensor, edge: torch.Tensor, steps: int, *, up: bool,
                start: int = KIM_REFERENCE_INDEX, feedback: Feedback | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Run ``steps`` recursion steps of one direction from the image at stack index ``start``.

        Args:
            image: ``[B, 3, H, W]`` start image in ``[-1, 1]`` (``H, W`` multiples of 32).
            edge: ``[B, 1, H, W]`` its edge map.
            steps: number of EV steps (target indices ``start +- 1 .. start +- steps`` within 0..6).
            up: direction.
            start: stack index of ``image`` (3 = the ev-0 input; training recursions start at 2..4).
            feedback: override of :attr:`feedback` for this call.

        Returns:
            ``(refined, global, edges)``: lists of ``steps`` tensors in ``[-1, 1]`` / ``(0, 1)``,
            ordered by increasing ``|ev|``.
        """
        direction = self.net.up if up else self.net.down
        hidden: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        refined, globals_, edges = [], [], []
        feedback = self.feedback if feedback is None else feedback
        for s in range(1, steps + 1):
            target = start + (s if up else -s)
            if not 0 <= target <= 2 * KIM_REFERENCE_INDEX:
                raise ConfigError(f"Kim2021Generator.recurse: step to stack index {target} is outside 0..6")
            out, glob, edge, hidden = direction.step(image, edge, kim_style_index(target, up=up), hidden)
            refined.append(out)
            globals_.append(glob)
            edges.append(edge)
            image = out if feedback == "refined" else glob
        return refined, globals_, edges

    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        """Predict the (non-zero, ascending) ``ev`` exposures: ``[B,3,H,W] -> [B,len(ev),3,H,W]`` in ``[0, 1]``."""
        self._check_ev(ev)
        height, width = ldr.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            ldr = F.pad(ldr, (0, pad_w, 0, pad_h), mode="replicate")
        image = ldr * 2.0 - 1.0
        edge = kim_edge_map(ldr)
        by_ev: dict[float, torch.Tensor] = {}
        for up in (False, True):
            steps = int(max((abs(v) for v in ev if (v > 0) == up), default=0))
            if steps:
                refined, _, _ = self.recurse(image, edge, steps, up=up)
                for s, out in enumerate(refined, start=1):
                    by_ev[float(s if up else -s)] = out
        images = torch.stack([by_ev[float(v)] for v in ev], dim=1)
        return ((images + 1.0) / 2.0)[..., :height, :width]


__all__ = [
    "ConditionalInstanceNorm", "ConvGRUCell", "KimConvBlock", "KimDoubleBlock", "KimRecurrentUnit",
    "KimGlobalNet", "KimStructureNet", "KimRefineNet", "KimDirection", "Kim2021Net", "Kim2021Generator",
    "kim_edge_map", "kim_style_index", "KIM2021_DEFAULT_EV", "KIM_STYLES",
]
