"""Endo, Kanamori, Mitani, "Deep Reverse Tone Mapping" (DrTMO), ACM TOG 36(6) 177, SIGGRAPH Asia 2017.

Two networks of the same architecture (official Chainer class ``CNNAE3D512``, ``network.py``): the
**up-exposure** model and the **down-exposure** model. Each maps one LDR image ``x`` ``[B, 3, H, W]``
in ``[0, 1]`` to ``S = 8`` images at once: output slot ``k = 1..8`` is the scene at exposure
``tau^k`` (up) or ``tau^-k`` (down) times the input's, ``tau = sqrt(2)``, i.e. ``ev = +-0.5 k``.
Together with the input they make the official 17-image stack ``[down_8 .. down_1, x, up_1 .. up_8]``
spanning +-4 EV (:data:`DRTMO_DEFAULT_EV`).

Architecture of one model (:class:`DrTMONet`, official widths at ``width=1``):

* 2D encoder: 9 layers ``Conv2d 4x4, stride 2, pad 1`` (bias), widths 64, 128, 256, 512 x 6,
  BatchNorm on all but the first, ``LeakyReLU(0.2)`` after each.
* 3D decoder over ``(C, D = exposure axis, H, W)``: the bottleneck gets ``D = 1``; 9 transposed
  3D convolutions (bias). The first three have kernel ``(4, 4, 4)``, stride 2 on every axis, so
  ``D`` goes 1 -> 2 -> 4 -> 8; the rest have kernel ``(3, 4, 4)``, stride ``(1, 2, 2)`` (``D``
  stays 8). Every layer but the last: ``BatchNorm3d -> [Dropout(0.5) in the first three] -> ReLU``,
  then the encoder feature of the same spatial size is repeated along ``D`` and concatenated
  after the decoder channels (exposure-axis broadcast skips).
* Output: ``y = sigmoid(dc_last(h) + x)`` with ``x`` the raw ``[0, 1]`` input broadcast along ``D``
  (the paper's "residual unit with sigmoid"; no logit of ``x``).

At ``width=1`` one model holds 23,737,536 (encoder) + 150,760,259 (decoder) = **174,497,795**
trainable parameters, the pair **348,995,590** (BatchNorm affine included, running statistics not).

**BatchNorm at inference (official behaviour, kept by default).** The official ``main.py`` builds
the models with ``train=True`` and only switches dropout off, so Chainer's BatchNorm normalises by
the statistics of the batch being predicted (batch 1 at inference), never by running averages.
:class:`DrTMOBatchNorm` does the same while the module is in eval mode when
``batch_stats_at_inference=True`` (default); ``False`` gives PyTorch's usual running-statistics
inference. Dropout follows the module's train/eval mode (off in eval, as the official inference).
With a ``1 x 1`` map and batch 1 (the innermost encoder layer at 512 px) a BatchNorm output equals
its shift ``beta``: that layer passes no input-dependent signal there, exactly as in the official
code (PyTorch's own BatchNorm refuses one value per channel in training mode; Chainer computes it).

**Truncation (official ``main.py``):** :func:`monotonic_run` keeps the contiguous run of generated
images around the input whose neighbours never invert by more than 64 8-bit levels;
:func:`drtmo_exposure_times` gives the official exposure times of the kept images (the darkest gets
1/1024 s, each next one x sqrt(2)), which equal ``2 ** ev`` up to one common factor.

Deviations from the official code (named on purpose):

* Channels are RGB (the official code feeds OpenCV's BGR arrays to the network); released Chainer
  weights would need their first encoder and last decoder layers' channel order flipped.
* :class:`DrTMOGenerator` replicate-pads inputs whose sides are not multiples of
  :attr:`DrTMOGenerator.net_stride` (512 at the official depth) at the bottom/right and crops the stack
  back; the official code accepts only multiples of 512.
* ``levels`` (official 9) can reduce the depth for CPU-sized tests: the innermost 512-channel
  encoder layers and their decoder partners are dropped (``levels >= 4``; the three ``D``-doubling
  decoder layers stay, so there are always 8 slots).
* In eval mode with batch statistics the running averages are not updated (Chainer updates them at
  inference too; they are never read in the official pipeline, so outputs are identical).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.camera.pipeline import drtmo_evs
from hdrlab.errors import ConfigError
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.generators.base import StackGenerator
from hdrlab.stack import ExposureStack

#: exposure ratio between neighbouring slots (official tau = sqrt 2)
DRTMO_TAU: float = math.sqrt(2.0)
#: ev step between neighbouring slots, ``log2(tau)``
DRTMO_EV_STEP: float = 0.5
#: images each model predicts (official ``predicted_window_len``)
DRTMO_SLOTS: int = 8
#: official encoder widths (``c0 .. c8``)
DRTMO_ENCODER_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512, 512, 512)
#: number of decoder layers that double the exposure axis (1 -> 2 -> 4 -> 8)
DRTMO_DEPTH_DOUBLINGS: int = 3
#: official monotonicity threshold of the truncation, in 8-bit levels
DRTMO_THRESHOLD: int = 64
#: official exposure time of the darkest kept image (seconds)
DRTMO_LOWEST_TIME: float = 1.0 / 1024.0
#: Chainer's BatchNormalization epsilon
CHAINER_BN_EPS: float = 2e-5
#: the official 16 generated exposures (ev = +-0.5 k, k = 1..8), ascending; with the input: 17 images
DRTMO_DEFAULT_EV: tuple[float, ...] = tuple(v for v in drtmo_evs(DRTMO_SLOTS, DRTMO_TAU) if v != 0.0)


def slot_of_ev(ev: float) -> tuple[bool, int]:
    """``(up, slot)`` of a generated exposure: ``ev = +0.5 (slot + 1)`` (up) or ``-0.5 (slot + 1)`` (down).

    Raises:
        ConfigError: ``ev`` is 0, not a multiple of 0.5 or beyond +-4.
    """
    k = round(abs(ev) / DRTMO_EV_STEP)
    if ev == 0.0 or abs(abs(ev) - k * DRTMO_EV_STEP) > 1e-6 or not 1 <= k <= DRTMO_SLOTS:
        raise ConfigError(
            f"DrTMO cannot generate ev {ev}: its slots are ev = +-0.5 k for k = 1..8; "
            f"pick values from {list(DRTMO_DEFAULT_EV)}"
        )
    return ev > 0, k - 1


class DrTMOBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over ``[B, C, H, W]`` or ``[B, C, D, H, W]`` with Chainer's defaults and the official
    inference behaviour.

    Normalises by the batch's own statistics in training mode, and in eval mode too when
    ``batch_stats_at_inference`` (official: the Chainer models run with ``test=False`` at
    inference). Also accepts one value per channel (``1 x 1`` map, batch 1), where the output is
    ``beta`` (Chainer's result; ``torch.nn.BatchNorm`` raises there).

    Args:
        num_features: channels ``C``.
        eps: Chainer default 2e-5.
        momentum: running-average rate (Chainer decay 0.9 -> 0.1).
        batch_stats_at_inference: use batch statistics in eval mode (official True).
    """

    def __init__(self, num_features: int, *, eps: float = CHAINER_BN_EPS, momentum: float = 0.1,
                 batch_stats_at_inference: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.batch_stats_at_inference = bool(batch_stats_at_inference)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (4, 5):
            raise ConfigError(f"DrTMOBatchNorm needs [B, C, H, W] or [B, C, D, H, W], got shape {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` per channel (shape kept)."""
        self._check_input_dim(x)
        if not (self.training or self.batch_stats_at_inference):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        update = self.training and self.track_running_stats
        if update:
            self.num_batches_tracked.add_(1)
        if x.numel() // x.shape[1] > 1:
            return F.batch_norm(x, self.running_mean if update else None, self.running_var if update else None,
                                self.weight, self.bias, True, self.momentum, self.eps)
        # One value per channel: batch mean = x, variance 0 -> (x - mean) = 0 and the output is beta.
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims, keepdim=True)
        centered = x - mean
        var = centered.square().mean(dim=dims, keepdim=True)
        if update:
            with torch.no_grad():  # Chainer's unbiased factor m / max(m - 1, 1) is 1 here
                # the running buffers stay float32 under autocast (bf16 / fp16 activations)
                self.running_mean.lerp_(mean.flatten().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(var.flatten().to(self.running_var.dtype), self.momentum)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return centered * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class DrTMONet(nn.Module):
    """One DrTMO model (official ``CNNAE3D512``): LDR ``[B, 3, H, W]`` -> ``[B, 3, 8, H, W]`` in ``(0, 1)``.

    Layer table (``levels=9``, ``width=1``; ``L`` = ``levels``):

    ==========  ==============  ==========  ==========  ================================
    layer       channels        kernel      stride      after
    ==========  ==============  ==========  ==========  ================================
    conv 0      3 -> 64         4x4         2           LeakyReLU(0.2)
    conv i>0    enc[i-1]->enc[i] 4x4        2           BN, LeakyReLU(0.2)
    deconv 0-2  2 enc -> enc    4x4x4       2,2,2       BN, Dropout(0.5), ReLU, skip
    deconv 3..  2 enc -> enc    3x4x4       1,2,2       BN, ReLU, skip
    deconv L-1  2*enc[0] -> 3   3x4x4       1,2,2       + x, sigmoid
    ==========  ==============  ==========  ==========  ================================

    ``enc = (64, 128, 256, 512, 512, 512, 512, 512, 512)[:levels]`` scaled by ``width``; decoder
    layer ``j`` outputs ``enc[L-2-j]`` channels and reads its predecessor's output concatenated
    with the (depth-broadcast) encoder feature ``enc[L-1-j]`` (``j = 0`` reads the bottleneck).
    Weights ``N(0, 0.02)``, biases 0, BN ``gamma = 1``, ``beta = 0`` (official initialisation).

    Args:
        width: hidden-channel multiplier (``max(1, round(c * width))``; 1.0 = official).
        levels: encoder depth (official 9; inputs must be multiples of ``2 ** levels``; >= 4).
        dropout: dropout rate of the first three decoder layers (official 0.5).
        negative_slope: LeakyReLU slope of the encoder (Chainer default 0.2).
        batch_stats_at_inference: BatchNorm uses batch statistics in eval mode (official True).
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        levels: int = 9,
        dropout: float = 0.5,
        negative_slope: float = 0.2,
        batch_stats_at_inference: bool = True,
    ) -> None:
        super().__init__()
        if not DRTMO_DEPTH_DOUBLINGS + 1 <= levels <= len(DRTMO_ENCODER_CHANNELS):
            raise ConfigError(f"DrTMONet levels={levels} must lie in 4..9 (official 9)")
        if width <= 0:
            raise ConfigError(f"DrTMONet width={width} must be > 0 (1.0 = official)")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"DrTMONet dropout={dropout} must lie in [0, 1) (official 0.5)")
        self.levels = levels
        self.negative_slope = float(negative_slope)
        enc = [scale_channels(c, width) for c in DRTMO_ENCODER_CHANNELS[:levels]]
        self.encoder_channels = tuple(enc)

        def norm(channels: int) -> DrTMOBatchNorm:
            return DrTMOBatchNorm(channels, batch_stats_at_inference=batch_stats_at_inference)

        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1) for c_in, c_out in zip([3, *enc[:-1]], enc))
        # conv 0 has no BatchNorm (official): identity keeps the indices aligned
        self.conv_norms = nn.ModuleList([nn.Identity(), *(norm(c) for c in enc[1:])])
        deconvs, deconv_norms = [], []
        for j in range(levels):
            c_in = enc[-1] if j == 0 else 2 * enc[levels - 1 - j]
            c_out = enc[levels - 2 - j] if j < levels - 1 else 3
            doubling = j < DRTMO_DEPTH_DOUBLINGS
            kernel, stride = ((4, 4, 4), (2, 2, 2)) if doubling else ((3, 4, 4), (1, 2, 2))
            deconvs.append(nn.ConvTranspose3d(c_in, c_out, kernel, stride=stride, padding=1))
            if j < levels - 1:
                deconv_norms.append(norm(c_out))
        self.deconvs = nn.ModuleList(deconvs)
        self.deconv_norms = nn.ModuleList(deconv_norms)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @property
    def stride(self) -> int:
        """``2 ** levels`` (512 at the official 9 levels): the multiple ``H`` and ``W`` must have."""
        return 2**self.levels

    def reset_parameters(self) -> None:
        """Official initialisation: conv/deconv weights ``N(0, 0.02)``, biases 0, BN ``(1, 0)``."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose3d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, DrTMOBatchNorm):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` (``H, W`` multiples of :attr:`stride`) -> ``[B, 3, 8, H, W]`` in ``(0, 1)``.

        Slot ``k`` (0-based) of the exposure axis is the exposure ``tau^(k+1)`` (up model) or
        ``tau^-(k+1)`` (down model) relative to the input.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"DrTMONet input must be [B, 3, H, W], got shape {tuple(x.shape)}")
        if x.shape[-1] % self.stride or x.shape[-2] % self.stride:
            raise ConfigError(
                f"DrTMONet input size {tuple(x.shape[-2:])} must be a multiple of {self.stride} "
                f"(2 ** levels); pad the image (DrTMOGenerator does)"
            )
        features = []
        h = x
        for conv, norm in zip(self.convs, self.conv_norms):
            h = F.leaky_relu(norm(conv(h)), self.negative_slope)
            features.append(h)
        h = features[-1].unsqueeze(2)  # [B, C, D=1, h, w]
        for j, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if j == len(self.deconvs) - 1:
                break
            h = self.deconv_norms[j](h)
            if j < DRTMO_DEPTH_DOUBLINGS:
                h = self.dropout(h)
            h = F.relu(h)
            skip = features[self.levels - 2 - j].unsqueeze(2).expand(-1, -1, h.shape[2], -1, -1)
            h = torch.cat([h, skip], dim=1)
        return torch.sigmoid(h + x.unsqueeze(2))


def monotonic_run(codes: torch.Tensor, reference: int, *, threshold: float = DRTMO_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """The official selection: the contiguous run of a stack around ``reference`` with no inversion.

    Walking down from the reference, a darker member is dropped (with all darker ones) as soon as
    any of its values exceeds its brighter neighbour's by more than ``threshold``; walking up, a
    brighter member is dropped (with all brighter ones) as soon as any value is below its darker
    neighbour's by more than ``threshold``. Values are compared per pixel and channel.

    Args:
        codes: ``[B, N, 3, H, W]`` 8-bit codes (any real dtype; official: generated images as
            ``floor(255 y)``, the input as its own codes), sorted by ascending exposure.
        reference: index of the input in ``N``.
        threshold: allowed inversion in code levels (official 64).

    Returns:
        ``(first [B], last [B])`` long tensors: members ``first .. last`` (inclusive) are kept;
        ``first <= reference <= last``.
    """
    if codes.dim() != 5 or not 0 <= reference < codes.shape[1]:
        raise ConfigError(f"monotonic_run needs codes [B, N, 3, H, W] and 0 <= reference < N, got "
                          f"{tuple(codes.shape)} and {reference}")
    c = codes.to(torch.float32)
    brighter_up = c[:, 1:] - c[:, :-1]  # member n+1 minus member n, [B, N-1, ...]
    inverted = (brighter_up < -threshold).flatten(2).any(dim=2)  # n+1 darker than n by > threshold
    rising_down = (-brighter_up > threshold).flatten(2).any(dim=2)  # n brighter than n+1 by > threshold
    up_ok = (~inverted[:, reference:]).long().cumprod(dim=1).sum(dim=1)
    down_ok = (~rising_down[:, :reference].flip(1)).long().cumprod(dim=1).sum(dim=1)
    return reference - down_ok, reference + up_ok


def drtmo_exposure_times(count: int, *, lowest: float = DRTMO_LOWEST_TIME) -> torch.Tensor:
    """Official exposure times of ``count`` kept images: ``lowest * sqrt(2) ** i``, ``i = 0..count-1`` (float64).

    ``log2(t_i / t_ref)`` equals the kept members' ``ev`` (0.5 EV apart), so a merge relative to the
    input is the same with either; the official absolute times only fix an overall scale.
    """
    if count < 1:
        raise ConfigError(f"drtmo_exposure_times needs count >= 1, got {count}")
    return lowest * DRTMO_TAU ** torch.arange(count, dtype=torch.float64)


def generated_codes(stack: ExposureStack) -> torch.Tensor:
    """Official 8-bit codes of a generated stack: ``floor(255 y)`` for generated members (Chainer's
    ``astype(uint8)`` truncates) and ``round(255 x)`` for the input (it is 8-bit already);
    ``[B, N, 3, H, W]`` float tensor of whole numbers."""
    codes = torch.floor(stack.images.clamp(0.0, 1.0) * 255.0)
    ref = stack.reference
    return torch.cat([codes[:, :ref], torch.round(stack.images[:, ref:ref + 1].clamp(0.0, 1.0) * 255.0),
                      codes[:, ref + 1:]], dim=1)


class DrTMOGenerator(StackGenerator):
    """DrTMO as a :class:`StackGenerator`: LDR ``[B, 3, H, W]`` -> stack ``[B, N, 3, H, W]`` (ascending ev).

    ``up`` and ``down`` are two :class:`DrTMONet` s. Exposure ``ev > 0`` is up slot
    ``ev / 0.5 - 1``, ``ev < 0`` is down slot ``-ev / 0.5 - 1`` (:func:`slot_of_ev`); the official
    set is :data:`DRTMO_DEFAULT_EV` (+-0.5 .. +-4 EV, 17 images with the input). A model runs only
    when the ev set needs one of its slots. The generator returns the full stack (static shape);
    the official truncation (:func:`monotonic_run`) is data-dependent and is applied by
    :class:`hdrlab.methods.drtmo.DrTMOMethod` before merging.

    The networks need sides that are multiples of :attr:`net_stride` = ``2 ** levels`` (512
    officially); other sizes are replicate-padded at the bottom/right and the stack is cropped back,
    so the declared :attr:`stride` is 1 (any size works). A crop smaller than ``net_stride`` costs as
    much compute as a ``net_stride`` one; full-size training uses 512 x 512 (official) crops. (Declaring
    512 would refuse the project's 64 px CPU override, whose patch must be a multiple of the stride.)

    Args:
        ev: exposure values to generate (non-zero multiples of 0.5 within +-4; the input is added at ev 0).
        width: hidden-channel multiplier of both models (1.0 = official, 2 x 174,497,795 parameters).
        levels: encoder depth (official 9).
        dropout: decoder dropout rate (official 0.5; active in train mode only).
        batch_stats_at_inference: BatchNorm normalises by the batch in eval mode too (official True).
    """

    def __init__(
        self,
        *,
        ev: Sequence[float] = DRTMO_DEFAULT_EV,
        width: float = 1.0,
        levels: int = 9,
        dropout: float = 0.5,
        batch_stats_at_inference: bool = True,
    ) -> None:
        super().__init__(ev=ev, include_input=True)
        for value in self.ev:
            if value != 0.0:
                slot_of_ev(value)
        kwargs = dict(width=width, levels=levels, dropout=dropout, batch_stats_at_inference=batch_stats_at_inference)
        self.up = DrTMONet(**kwargs)
        self.down = DrTMONet(**kwargs)

    @property
    def stride(self) -> int:
        """1: any input size works (inputs are replicate-padded to :attr:`net_stride`, see the class docstring)."""
        return 1

    @property
    def net_stride(self) -> int:
        """``2 ** levels``: the multiple the networks themselves need (nine stride-2 stages: 512 officially)."""
        return self.up.stride

    def pad(self, ldr: torch.Tensor) -> torch.Tensor:
        """Replicate-pad ``[B, 3, H, W]`` at the bottom/right to multiples of :attr:`net_stride`."""
        pad_h, pad_w = (-ldr.shape[-2]) % self.net_stride, (-ldr.shape[-1]) % self.net_stride
        return F.pad(ldr, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else ldr

    def slots(self, ldr: torch.Tensor, *, up: bool) -> torch.Tensor:
        """All 8 slots of one model: ``[B, 3, H, W]`` (any size) -> ``[B, 8, 3, H, W]`` in ``(0, 1)``,
        slot ``k`` at ``ev = +-0.5 (k + 1)`` (increasing exposure for ``up``, decreasing for down)."""
        height, width = ldr.shape[-2:]
        net = self.up if up else self.down
        return net(self.pad(ldr)).transpose(1, 2)[..., :height, :width]

    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        """Predict the (non-zero, ascending) ``ev`` exposures: ``[B, 3, H, W] -> [B, len(ev), 3, H, W]`` in (0, 1)."""
        where = [slot_of_ev(v) for v in ev]
        outputs = {up: self.slots(ldr, up=up) for up in (False, True) if any(u == up for u, _ in where)}
        return torch.stack([outputs[up][:, slot] for up, slot in where], dim=1)


__all__ = [
    "DRTMO_DEFAULT_EV", "DRTMO_EV_STEP", "DRTMO_SLOTS", "DRTMO_TAU", "DRTMO_THRESHOLD", "DrTMOBatchNorm",
    "DrTMOGenerator", "DrTMONet", "drtmo_exposure_times", "generated_codes", "monotonic_run", "slot_of_ev",
]
