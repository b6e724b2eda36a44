"""Lee, An, Kang, "Deep Recursive HDRI: Inverse Tone Mapping using Generative Adversarial Networks", ECCV 2018.

Official code: github.com/Siyeong-Lee/Deep_Recursive_HDRI (``model.py``, ``block.py``, ``solver.py``).
Two conditional GANs: a stop-up generator ``G_up`` (+1 EV) and a stop-down generator ``G_down``
(-1 EV), each a pix2pix-like U-Net (:class:`DeepRecursiveUNet`) judged by a conditional PatchGAN
(:class:`PatchDiscriminator`). Larger exposure changes come from recursion: ``G_up`` applied ``k``
times gives ``+k`` EV, each step reading the previous step's 8-bit output
(:class:`DeepRecursiveGenerator`).

Domains: the networks work in ``[-1, 1]`` (``2 I - 1`` of a display-referred LDR ``I``) and end in
``tanh``; :class:`DeepRecursiveGenerator` takes and returns display-referred ``[0, 1]`` images.

Width scaling: ``width`` multiplies every hidden channel count ``c`` to ``max(1, round(c * width))``;
the RGB input/outputs (3 channels, 6 for the discriminator's pair) stay fixed. At ``width=1``
(``base_filters=64``, the official value) a generator holds 12,414,194 trainable parameters and a
discriminator 6,965,441 (BatchNorm affine and the PReLU slopes included).

What the official code does and this module reproduces (named on purpose):

* **Activations.** ``G_up`` uses PReLU (one shared slope, initialised to 0.25) everywhere except the
  tanh head; ``G_down`` uses the mirrored PReLU ``MPReLU(x) = -PReLU(-x)`` (``x`` for ``x < 0``,
  ``a x`` for ``x >= 0``).
* **Dropout** (p 0.5 after the first three decoder blocks) is always on, also at inference: the
  official code passes ``training=True`` to the dropout call (``dropout_at_inference=True``;
  False switches it off in eval mode, a deviation).
* **BatchNorm** normalises by the batch statistics also at inference: the official test code calls
  ``.train()`` before generating. Here ``batch_statistics=True`` builds the BatchNorm layers with
  ``track_running_stats=False``, which gives exactly that in train and eval mode (the running
  statistics the official checkpoints carry were never used). False gives standard BatchNorm
  (running statistics in eval mode), a deviation.
* **Between recursive steps** the official test script turns the ``tanh`` output into
  ``clamp((g + 1) / 2, 0, 1)``, converts it to 8 bits with ``ToPILImage`` (``byte()`` of ``255 x``:
  truncation, not rounding), writes a PNG, reads it back and resizes it to 256 x 256 with PIL's box
  filter. :func:`requantize` reproduces the truncation (straight-through: the backward pass is the
  identity, so a stack can be trained through the recursion); the resize is an identity once the
  images are at the working size (PIL returns a copy for an unchanged size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.generators.base import StackGenerator

#: Official test stack: G_up and G_down applied 3 times each (``extend=3`` in ``solver.test``):
#: -3 .. +3 EV in 1 EV steps around the input (7 images with the input).
DEEP_RECURSIVE_DEFAULT_EV: tuple[float, ...] = (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)
#: Side of the square the official test resizes every input to (PIL box filter).
DEEP_RECURSIVE_TEST_SIZE = 256
Direction = Literal["up", "down"]
Requantize = Literal["truncate", "round", "none"]
REQUANTIZE_MODES: tuple[str, ...] = ("truncate", "round", "none")


class MirroredPReLU(nn.Module):
    """``MPReLU(x) = -PReLU(-x)``: ``x`` for ``x < 0`` and ``a x`` for ``x >= 0`` (official ``block.MPReLU``).

    Args:
        num_parameters: number of slopes ``a`` (1: one shared slope, as the official code).
        init: initial slope (0.25).
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_parameters,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -F.prelu(-x, self.weight)


def _activation(direction: Direction) -> nn.Module:
    return nn.PReLU() if direction == "up" else MirroredPReLU()


def _batch_norm(channels: int, batch_statistics: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=not batch_statistics)


def init_normal_(module: nn.Module, *, std: float = 0.02) -> nn.Module:
    """Official ``weights_init_normal``: conv/linear weights ``N(0, std)``, BatchNorm weights
    ``N(1, std)``, biases 0; PReLU slopes keep 0.25. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


class DeepRecursiveUNet(nn.Module):
    """One Deep Recursive HDRI generator (``G_up`` or ``G_down``): ``[B, 3, H, W]`` in ``[-1, 1]`` -> same.

    Encoder (Conv 4x4 stride 2 pad 1 + activation; BatchNorm and no bias except at ``e1``):
    ``3 -> f -> 2f -> 4f -> 8f -> 8f`` (``e1 .. e5``, ``H / 32`` at ``e5``). Decoder
    ("resize-convolution": nearest x2, Conv 3x3 no bias, BatchNorm, activation):
    ``d4 = drop(up(e5)) ++ e4``, ``d5 = drop(up(d4)) ++ e3``, ``d6 = drop(up(d5)) ++ e2``,
    ``d7 = up(d6) ++ e1``, ``d8 = up(d7)`` (3 channels, with BatchNorm and activation), then
    ``tanh(Conv3x3(d8 ++ x))`` (6 -> 3, no bias). Channels ``8f, 4f, 2f, f, 3`` (``++`` concat).

    Args:
        direction: ``"up"`` (PReLU) or ``"down"`` (mirrored PReLU).
        base_filters: ``f`` (official 64).
        width: hidden-channel multiplier.
        dropout: dropout probability of the first three decoder blocks (official 0.5).
        dropout_at_inference: keep dropout on in eval mode (official True, see the module docstring).
        batch_statistics: BatchNorm always normalises by the batch (official True).
    """

    #: five stride-2 convolutions
    stride = 32

    def __init__(
        self,
        *,
        direction: Direction = "up",
        base_filters: int = 64,
        width: float = 1.0,
        dropout: float = 0.5,
        dropout_at_inference: bool = True,
        batch_statistics: bool = True,
    ) -> None:
        super().__init__()
        if direction not in ("up", "down"):
            raise ConfigError(f"DeepRecursiveUNet direction={direction!r} is unknown; use 'up' or 'down'")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"DeepRecursiveUNet dropout={dropout} must lie in [0, 1) (official 0.5)")
        self.direction = direction
        self.dropout = float(dropout)
        self.dropout_at_inference = bool(dropout_at_inference)
        f1, f2, f4, f8 = (scale_channels(base_filters * m, width) for m in (1, 2, 4, 8))

        def down(c_in: int, c_out: int, *, norm: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm)]
            if norm:
                layers.append(_batch_norm(c_out, batch_statistics))
            layers.append(_activation(direction))
            return nn.Sequential(*layers)

        def up(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
                _batch_norm(c_out, batch_statistics),
                _activation(direction),
            )

        self.encoders = nn.ModuleList([
            down(3, f1, norm=False), down(f1, f2, norm=True), down(f2, f4, norm=True),
            down(f4, f8, norm=True), down(f8, f8, norm=True),
        ])
        self.decoders = nn.ModuleList([up(f8, f8), up(2 * f8, f4), up(2 * f4, f2), up(2 * f2, f1), up(2 * f1, 3)])
        self.head = nn.Conv2d(6, 3, 3, 1, 1, bias=False)
        init_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, H, W]`` in ``[-1, 1]`` (H, W multiples of 32) -> ``[B, 3, H, W]`` in ``(-1, 1)``."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ConfigError(
                f"DeepRecursiveUNet expects [B, 3, H, W] with H and W multiples of {self.stride}, got "
                f"{tuple(x.shape)}; pad the image (DeepRecursiveGenerator pads for you)"
            )
        skips = []
        y = x
        for encoder in self.encoders:
            y = encoder(y)
            skips.append(y)
        drop = self.training or self.dropout_at_inference
        y = skips[-1]
        for i, decoder in enumerate(self.decoders[:-1]):
            y = decoder(y)
            if i < 3 and self.dropout > 0:
                y = F.dropout(y, self.dropout, training=drop)
            y = torch.cat([y, skips[-2 - i]], dim=1)
        y = self.decoders[-1](y)
        return torch.tanh(self.head(torch.cat([y, x], dim=1)))


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN of Deep Recursive HDRI (official ``NLayerDiscriminator``, ``n_layers=4``).

    ``[B, 6, H, W]`` (candidate ++ condition, both in ``[-1, 1]``) -> ``[B, 1, H/16 - 2, W/16 - 2]``
    probabilities (sigmoid). Layers (all convs 4x4 pad 1 with bias): stride 2 ``6 -> f`` +
    LeakyReLU(0.2); stride 2 ``f -> 2f -> 4f -> 8f`` each + BatchNorm + LeakyReLU(0.2); stride 1
    ``8f -> 8f`` + BatchNorm + LeakyReLU(0.2); stride 1 ``8f -> 1``; sigmoid. Channel multipliers
    are ``min(2^n, 8)``. Sides must be at least 48 (the two stride-1 4x4 convs shrink by 1 each).

    Args:
        in_channels: 6 (a candidate image and its condition).
        base_filters: ``f`` (official 64).
        n_layers: number of stride-2 convolutions (official 4).
        width: hidden-channel multiplier.
    """

    stride = 16

    def __init__(self, *, in_channels: int = 6, base_filters: int = 64, n_layers: int = 4, width: float = 1.0) -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"PatchDiscriminator n_layers={n_layers} must be >= 1 (official 4)")
        self.stride = 2**n_layers
        widths = [scale_channels(base_filters * min(2**n, 8), width) for n in range(n_layers + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for n in range(1, n_layers + 1):
            layers += [nn.Conv2d(widths[n - 1], widths[n], 4, 2 if n < n_layers else 1, 1),
                       nn.BatchNorm2d(widths[n]), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 1), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)
        init_normal_(self)

    def forward(self, candidate: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``D(candidate ++ condition)``: two ``[B, 3, H, W]`` in ``[-1, 1]`` -> ``[B, 1, h, w]`` in ``(0, 1)``."""
        return self.model(torch.cat([candidate, condition], dim=1))


def requantize(image: torch.Tensor, *, mode: Requantize = "truncate", bits: int = 8) -> torch.Tensor:
    """8-bit re-quantisation between recursive steps, straight-through.

    * ``"truncate"`` (official): ``floor(clamp(x, 0, 1) * L) / L`` with ``L = 2**bits - 1`` (what
      ``ToPILImage`` does to a float image: ``byte()`` of ``255 x``);
    * ``"round"``: ``round(...)`` (a camera's quantiser; not the official code);
    * ``"none"``: ``clamp(x, 0, 1)`` only.

    The backward pass is the identity inside ``[0, 1]`` (straight-through estimator, Bengio et al.
    2013), so gradients reach every recursive step.

    Args:
        image: display-referred values (``[0, 1]`` after the clamp), any shape.
        mode: ``"truncate"``, ``"round"`` or ``"none"``.
        bits: code depth (8).

    Returns:
        Tensor of the same shape in ``[0, 1]``.
    """
    if mode not in REQUANTIZE_MODES:
        raise ConfigError(f"requantize mode={mode!r} is unknown; use one of {REQUANTIZE_MODES}")
    x = image.clamp(0.0, 1.0)
    if mode == "none":
        return x
    levels = float(2**bits - 1)
    q = (torch.floor(x * levels) if mode == "truncate" else torch.round(x * levels)) / levels
    return x + (q - x).detach()


def box_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Box-filter resize ``[B, C, H, W] -> [B, C, *size]`` (area averaging; identity for an unchanged size).

    For integer downscale factors this equals PIL's ``Image.BOX`` filter (``resample=4``, used by the
    official test); for other ratios ``F.interpolate(mode="area")`` averages whole-pixel bins
    instead of PIL's fractional pixel weights (a named approximation).
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="area")


class DeepRecursiveGenerator(StackGenerator):
    """Deep Recursive HDRI as a :class:`StackGenerator`: LDR ``[B, 3, H, W]`` -> stack ``[B, N, 3, H, W]``.

    For every ev ``+k`` (``-k``) of the set, ``G_up`` (``G_down``) is applied ``k`` times:
    ``x_0 = ldr``, ``x_{i+1} = requantize((G(2 x_i - 1) + 1) / 2)``; the ev set must be whole
    multiples of ``step_ev`` (one recursive step, official 1 EV). Each direction recurses once, to
    its largest ``|ev|``, and the requested members are taken on the way. The official stack is
    :data:`DEEP_RECURSIVE_DEFAULT_EV` (-3 .. +3 EV, 7 images with the input).

    :attr:`stride` is 32 (five stride-2 convolutions). Other sizes are replicate-padded at the
    bottom/right to the stride at every step and cropped back.

    Deviations from the official test code (named on purpose):

    * ``working_size=None`` (default) runs the recursion at the input's own resolution. The official
      test box-resizes every input to 256 x 256 (aspect not kept) and returns 256 x 256 images; with
      ``working_size=256`` the input is box-resized (:func:`box_resize`) to that square, recursed
      there, and every generated image is resized back to ``H x W`` (bilinear) so the stack keeps
      the input's size (the stack contract). At 256 x 256 inputs both settings equal the official
      behaviour.
    * The first step reads the ``ldr`` as given (the official script reads an 8-bit file); only the
      generated images are re-quantised.

    Args:
        ev: exposure values to generate (the input is added as ev 0), multiples of ``step_ev``.
        width: hidden-channel multiplier of both U-Nets (1.0 = official, 12,414,194 parameters each).
        base_filters: ``f`` (official 64).
        step_ev: EV change of one recursive step (official 1, the generators' training pairs).
        requantize: re-quantisation between steps (:func:`requantize`; official ``"truncate"``).
        working_size: ``None`` or the square side the recursion runs at (official test: 256).
        dropout: decoder dropout probability (official 0.5).
        dropout_at_inference: dropout stays on in eval mode (official True).
        batch_statistics: BatchNorm normalises by the batch also at inference (official True).
    """

    def __init__(
        self,
        *,
        ev: Sequence[float] = DEEP_RECURSIVE_DEFAULT_EV,
        width: float = 1.0,
        base_filters: int = 64,
        step_ev: float = 1.0,
        requantize: Requantize = "truncate",
        working_size: int | None = None,
        dropout: float = 0.5,
        dropout_at_inference: bool = True,
        batch_statistics: bool = True,
    ) -> None:
        super().__init__(ev=ev, include_input=True)
        if not (math.isfinite(step_ev) and step_ev > 0):
            raise ConfigError(f"DeepRecursiveGenerator step_ev={step_ev} must be a positive number of EV (official 1)")
        if requantize not in REQUANTIZE_MODES:
            raise ConfigError(f"DeepRecursiveGenerator requantize={requantize!r} is unknown; use one of {REQUANTIZE_MODES}")
        if working_size is not None and (working_size < 32 or working_size % 32):
            raise ConfigError(f"DeepRecursiveGenerator working_size={working_size} must be a multiple of 32 "
                              "(official 256) or null")
        self.step_ev = float(step_ev)
        self.requantize = requantize
        self.working_size = working_size
        self.steps_for(self.ev)
        options = dict(base_filters=base_filters, width=width, dropout=dropout,
                       dropout_at_inference=dropout_at_inference, batch_statistics=batch_statistics)
        self.up = DeepRecursiveUNet(direction="up", **options)
        self.down = DeepRecursiveUNet(direction="down", **options)

    @property
    def stride(self) -> int:
        """32: five stride-2 convolutions per U-Net."""
        return DeepRecursiveUNet.stride

    def steps_for(self, ev: Sequence[float]) -> dict[float, int]:
        """Signed recursive step counts ``{ev: round(ev / step_ev)}``; raises :class:`ConfigError`
        for a value that is not a whole multiple of ``step_ev``."""
        steps = {}
        for value in ev:
            k = round(value / self.step_ev)
            if abs(k * self.step_ev - value) > 1e-6:
                raise ConfigError(
                    f"DeepRecursiveGenerator ev {value} is not a whole number of {self.step_ev} EV recursive steps; "
                    "use e.g. ev=[-3, -2, -1, 1, 2, 3]"
                )
            steps[float(value)] = k
        return steps

    def step(self, image: torch.Tensor, *, up: bool) -> torch.Tensor:
        """One recursive step: ``[B, 3, h, w]`` in ``[0, 1]`` -> the image one ``step_ev`` brighter
        (``up``) or darker, re-quantised, ``[B, 3, h, w]`` in ``[0, 1]`` (padded to the stride and cropped)."""
        height, width = image.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        x = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else image
        net = self.up if up else self.down
        y = (net(2.0 * x - 1.0)[..., :height, :width] + 1.0) / 2.0
        return requantize(y, mode=self.requantize)

    def recurse(self, ldr: torch.Tensor, count: int, *, up: bool) -> list[torch.Tensor]:
        """``count`` recursive steps from ``ldr`` ``[B, 3, h, w]``: the list ``[x_1, ..., x_count]`` in ``[0, 1]``."""
        outputs, x = [], ldr
        for _ in range(count):
            x = self.step(x, up=up)
            outputs.append(x)
        return outputs

    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        """Predict the (non-zero, ascending) ``ev`` exposures: ``[B, 3, H, W] -> [B, len(ev), 3, H, W]`` in [0, 1]."""
        steps = self.steps_for(ev)
        height, width = ldr.shape[-2:]
        x = ldr if self.working_size is None else box_resize(ldr, (self.working_size, self.working_size))
        up = self.recurse(x, max([k for k in steps.values() if k > 0], default=0), up=True)
        down = self.recurse(x, max([-k for k in steps.values() if k < 0], default=0), up=False)
        images = [up[k - 1] if k > 0 else down[-k - 1] for k in (steps[v] for v in ev)]
        out = torch.stack(images, dim=1)
        if self.working_size is not None and (height, width) != (self.working_size, self.working_size):
            out = F.interpolate(out.flatten(0, 1), size=(height, width), mode="bilinear",
                                align_corners=False).clamp(0.0, 1.0).unflatten(0, out.shape[:2])
        return out


__all__ = [
    "DEEP_RECURSIVE_DEFAULT_EV",
    "DEEP_RECURSIVE_TEST_SIZE",
    "DeepRecursiveGenerator",
    "DeepRecursiveUNet",
    "MirroredPReLU",
    "PatchDiscriminator",
    "REQUANTIZE_MODES",
    "box_resize",
    "init_normal_",
    "requantize",
]
