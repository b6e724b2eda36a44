"""CEVR: Chen et al., "Learning Continuous Exposure Value Representations for Single-Image HDR
Reconstruction", ICCV 2023 -- a stack generator conditioned on a *continuous* EV step.

Official code (github skchen1993/2023_CEVR; the paper has no other public source). Facts read from it:

* Model: ``core/HDR_model.py::CEVR_NormNoAffine_Maps`` with the decoder blocks of
  ``core/decoder.py`` (``Bottel_neck``, ``Upsample_MLP_multi_ResizeConvUp_Map``, ``MLP``). Released
  configuration (``README.md`` inference command + ``demo_VDS.py`` defaults): ``model_name
  CEVR_NormNoAffine_Maps``, ``decode_name mult_resizeUp_map``, ``EV_info 1`` (only the EV step is
  fed), ``norm_type GroupNorm`` (2 groups), ``NormAffine`` off, ``act leaky_relu`` (slope 0.01),
  ``mlp_num 3``, ``pretrain vgg`` (ImageNet VGG16-BN encoder). Weights:
  ``train_strategy/experiment/CEVR_NormNoAffine_Maps_GN_{B,D}model``.
* Two separate networks of this architecture: the **B**(right) model for EV steps > 0 and the
  **D**(ark) model for steps < 0 (``demo_VDS.py``: ``model_inc`` / ``model_dec``), 3,291,592
  trainable parameters each, 6,583,184 together.
* Architecture (one network, ``x`` the ``[B,3,H,W]`` input in [0, 1], ``s`` the EV step):

  - encoder = torchvision ``vgg16_bn().features[0:23]`` cut in three stages (features[0:6] at H,
    [6:13] at H/2, [13:23] at H/4; 64/128/256 channels, BatchNorm, ReLU), fed the raw [0, 1]
    image (no ImageNet normalisation);
  - bottleneck: MaxPool (``features[23]``) to H/8, GroupNorm(2, 256, no affine), a per-pixel
    MLP on ``[features, s]`` (257 -> 256 -> 256 -> 256), residual;
  - three decoder blocks (256->256 at H/4, 256->128 at H/2, 128->64 at H): bicubic x2 resize +
    Conv3x3, concat with the skip, MLP1 (``2C+1 -> C``), residual of [GroupNorm, MLP3, MLP4]
    (``C+1 -> C/2 -> C/2 -> C`` each); the first two blocks also emit a pair of 1-channel maps
    (alpha, beta) by bicubic resize to H (x4, x2) and two Conv3x3 (C -> 1);
  - head: ``[features, s]`` (65 channels) -> two Conv1x1 -> alpha_3, beta_3;
  - output: intensity transform ``y = ((x a_1 + b_1) a_2 + b_2) a_3 + b_3`` (maps broadcast over
    RGB), not clamped.

  The official ``MLP`` is a stack of ``nn.Linear`` layers *without* activations between them and
  one activation after the last; every MLP input has the step ``s`` appended as an extra channel
  (``pad_EV`` / ``MLP_with_EV`` with ``EV_info=1``). ``s`` is the EV *change* from input to output
  (the cycle loss calls the net twice with ``s / 2``), not an absolute exposure.
* Loss (``train_strategy/train_warmupLoss.py``, deleted in commit e3d0c92, the last training script
  in the history; see :mod:`hdrlab.losses.cevr`): L1 with ``reduction='sum'`` + 0.1 x "FloatLoss"
  (the cycle: ``f(f(x, s/2), s/2)`` against the target), the cycle term enabled once the test PSNR
  exceeds 28 dB (``warmup_thr``).
* Training (same script; flags of the only recorded run, ``train_strategy/wandb/.../
  wandb-metadata.json`` of commit c04b194): Adam lr 2e-4, batch 4, ``LR_CosAnneal``
  (CosineAnnealingWarmRestarts, T_0 = 10 epochs, T_mult = 2, eta_min 0, stepped per iteration),
  ``FloatLoss`` weight 0.1, 1250 epochs; each model trained on its half of the VDS stacks resized to
  256x256 (``core/Data_provider.py``): source EV 0, target EV in {0, 1, 2, 3} (B) or {-3, ..., 0} (D).
* Inference (``demo_VDS.py --Float_Stack1``): EV -3 ... 3 in 0.5 steps around the input,
  :data:`CEVR_DEFAULT_EV`.

Width scaling: ``width`` multiplies every hidden channel count ``c`` to an even
``max(2, 2 * round(c * width / 2))`` (GroupNorm's 2 groups need even counts; width 1 is unchanged);
the RGB input, the EV channel and the 1-channel maps stay fixed.

Deviations from the official code (named on purpose):

* The EV step is broadcast with ``expand`` instead of a Python loop over ``step[n].item()``: same
  values, no host sync (runs under ``FakeTensorMode``).
* :class:`CEVRGenerator` clamps the stack to [0, 1] (the stack contract; the official demo clamps
  when saving the PNGs). :class:`CEVRNet` itself returns the unclamped output, as the official
  model, and the CEVR losses see that. The generator's clamp passes gradients straight through
  (``straight_through_clamp=True``): at random initialisation whole up-exposed images often lie
  outside [0, 1], and a plain clamp would then give a network no gradient at all when it is
  trained through a merger (``TwoStage``); the forward values are the plain clamp's.
* Inputs whose sides are not multiples of 16 are replicate-padded and cropped back (the official
  code resizes to 256x256).
* :class:`CEVRGenerator` runs all positive (and all negative) steps through the B (D) network as
  one batch; with BatchNorm in train mode the encoder statistics then mix the steps (in eval mode
  it is identical to one call per step).
* ``pretrained_encoder`` loads the torchvision ``vgg16_bn-6c64b313.pth`` from the local torch hub
  cache (checked against its sha256 prefix); nothing is downloaded. Default False here (the
  file is a file option); :class:`hdrlab.methods.cevr.CEVRMethod` defaults to True (official).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError, WeightsMissingError
from hdrlab.models.generators.base import StackGenerator
from hdrlab.weights import file_matches_hash_prefix, weights_dir

__all__ = [
    "CEVR_DEFAULT_EV",
    "CEVR_VGG16_BN_FILE",
    "CEVRDecoderBlock",
    "CEVRGenerator",
    "CEVRMLP",
    "CEVRNet",
    "CEVRBottleneck",
    "cevr_channels",
]

#: Official inference set (``demo_VDS.py --Float_Stack1``): -3 ... 3 EV in 0.5 steps, input excluded.
CEVR_DEFAULT_EV: tuple[float, ...] = (-3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)

#: torchvision's ImageNet VGG16-BN file (IMAGENET1K_V1), the official encoder initialisation.
CEVR_VGG16_BN_FILE = "vgg16_bn-6c64b313.pth"
_VGG16_BN_URL = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"

#: Encoder stage ends in ``vgg16_bn().features`` (official ``features[0:6]``, ``[6:13]``, ``[13:23]``).
_STAGE_ENDS = (6, 13, 23)
_NEGATIVE_SLOPE = 0.01  # nn.LeakyReLU default, the official ``act=leaky_relu``


def cevr_channels(channels: int, width: float) -> int:
    """Hidden width ``max(2, 2 * round(channels * width / 2))``: even for GroupNorm(2, C); width 1 keeps ``channels``."""
    if width <= 0:
        raise ConfigError(f"CEVR width={width} must be > 0 (1.0 = official)")
    return max(2, 2 * int(round(channels * width / 2)))


def _append_ev(feature: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` + step ``[B]`` -> ``[B, C + 1, H, W]`` (the step as a constant last channel)."""
    ev_map = step.to(feature.dtype).view(-1, 1, 1, 1).expand(feature.shape[0], 1, *feature.shape[-2:])
    return torch.cat([feature, ev_map], dim=1)


class CEVRMLP(nn.Module):
    """The official per-pixel ``MLP`` on ``[features, s]``: Linear layers with **no** activation
    between them, one LeakyReLU after the last.

    ``[B, C_in, H, W]`` + step ``[B]`` -> ``[B, C_out, H, W]`` (Linear acts on the channel axis;
    the step is appended as input channel ``C_in``, so the first Linear has ``C_in + 1`` inputs).

    Args:
        in_channels: feature channels (without the step).
        out_channels: output channels.
        hidden: widths of the hidden Linear layers.
    """

    def __init__(self, *, in_channels: int, out_channels: int, hidden: Sequence[int] = ()) -> None:
        super().__init__()
        sizes = [in_channels + 1, *hidden, out_channels]
        self.layers = nn.Sequential(*(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])))
        self.act = nn.LeakyReLU(_NEGATIVE_SLOPE)

    def forward(self, feature: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        x = _append_ev(feature, step).movedim(1, -1)
        return self.act(self.layers(x)).movedim(-1, 1)


class CEVRBottleneck(nn.Module):
    """MaxPool 2x2, then ``y + MLP(GroupNorm(y), s)`` (official ``Bottel_neck``, residual on).

    ``[B, C, H, W] -> [B, C, H/2, W/2]``; MLP ``C+1 -> hidden -> hidden -> C`` (``mlp_num=3``).
    """

    def __init__(self, *, channels: int = 256, hidden: int = 256) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2)
        self.norm = nn.GroupNorm(2, channels, affine=False)
        self.mlp = CEVRMLP(in_channels=channels, out_channels=channels, hidden=(hidden, hidden))

    def forward(self, x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        return y + self.mlp(self.norm(y), step)


class CEVRDecoderBlock(nn.Module):
    """Official ``Upsample_MLP_multi_ResizeConvUp_Map`` (residual on, ``mlp_num=3``).

    ``x [B, C_up, h, w]``, skip ``[B, C_skip, 2h, 2w]`` ->
    ``u = Conv3x3(bicubic_x2(x))`` (``C_up -> C_skip``); ``z = MLP1([u, skip], s)`` (``2 C_skip + 1 -> C``);
    ``out = z + MLP4(MLP3(GroupNorm(z), s), s)`` (``C + 1 -> C/2 -> C/2 -> C``).
    With ``map_scale > 1`` it also returns ``alpha, beta = Conv3x3(bicubic_{map_scale}(out))``
    (``[B, 1, 2h*map_scale, 2w*map_scale]`` each).

    Args:
        up_channels: channels of the incoming (coarser) features.
        skip_channels: channels of the encoder skip (= ``conv_resize`` output).
        out_channels: block width ``C``.
        map_scale: upsampling of the block output to full resolution for the maps; 1 = no maps.
    """

    def __init__(self, *, up_channels: int, skip_channels: int, out_channels: int, map_scale: int = 1) -> None:
        super().__init__()
        half = out_channels // 2
        self.map_scale = map_scale
        self.conv_resize = nn.Conv2d(up_channels, skip_channels, 3, padding=1)
        self.mlp1 = CEVRMLP(in_channels=2 * skip_channels, out_channels=out_channels)
        self.norm = nn.GroupNorm(2, out_channels, affine=False)
        self.mlp3 = CEVRMLP(in_channels=out_channels, out_channels=out_channels, hidden=(half, half))
        self.mlp4 = CEVRMLP(in_channels=out_channels, out_channels=out_channels, hidden=(half, half))
        if map_scale != 1:
            self.conv_mul = nn.Conv2d(out_channels, 1, 3, padding=1)
            self.conv_rgb = nn.Conv2d(out_channels, 1, 3, padding=1)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, step: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Returns ``(features [B, C, 2h, 2w], (alpha, beta) or None)``."""
        up = self.conv_resize(F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
        z = self.mlp1(torch.cat([up, skip], dim=1), step)
        out = z + self.mlp4(self.mlp3(self.norm(z), step), step)
        if self.map_scale == 1:
            return out, None
        full = F.interpolate(out, scale_factor=self.map_scale, mode="bicubic", align_corners=False)
        return out, (self.conv_mul(full), self.conv_rgb(full))


def _vgg16_bn_stem(c1: int, c2: int, c3: int) -> nn.Sequential:
    """``vgg16_bn().features[0:23]`` with widths ``c1, c2, c3`` (same indices, so same state-dict keys)."""
    layers: list[nn.Module] = []
    c_in = 3
    for stage, (c_out, convs) in enumerate(((c1, 2), (c2, 2), (c3, 3))):
        if stage:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(convs):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
    return nn.Sequential(*layers)


def _read_vgg16_bn_features() -> dict[str, torch.Tensor]:
    """``features.*`` tensors of the checked local ``vgg16_bn-6c64b313.pth`` (keys without the prefix)."""
    folder = weights_dir()
    path = Path(folder) / CEVR_VGG16_BN_FILE
    if not path.is_file():
        raise WeightsMissingError(
            f"pretrained file {CEVR_VGG16_BN_FILE} (VGG16-BN IMAGENET1K_V1: CEVR encoder) is missing from {folder}. "
            f"Copy the official torchvision file there unrenamed (it is {_VGG16_BN_URL}; fetch it on a machine with "
            "internet access), or set pretrained_encoder: false. hdrlab never downloads."
        )
    if not file_matches_hash_prefix(path):
        raise WeightsMissingError(
            f"{path} does not match the sha256 prefix in its name: replace it with the official {_VGG16_BN_URL}."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


class CEVRNet(nn.Module):
    """One CEVR network (official ``CEVR_NormNoAffine_Maps``): ``(x [B,3,H,W], s [B]) -> y [B,3,H,W]``.

    ``x`` is display-referred in [0, 1] with ``H, W`` multiples of 16; ``s`` the EV change (any real;
    one network is trained for ``s >= 0``, another for ``s <= 0``). ``y`` is the display-referred
    image at exposure ``2**s`` times the input's, **not clamped** (official).

    At ``width=1``: 3,291,592 trainable parameters (encoder 1,737,792; bottleneck 197,632; decoders
    891,394 + 371,970 + 92,672; head 132).

    Args:
        width: hidden-channel multiplier (1.0 = official).
        pretrained_encoder: load the ImageNet VGG16-BN encoder (``vgg16_bn-6c64b313.pth`` from the
            torch hub cache; width 1 only).
    """

    stride = 16

    def __init__(self, *, width: float = 1.0, pretrained_encoder: bool = False) -> None:
        super().__init__()
        c1, c2, c3 = (cevr_channels(c, width) for c in (64, 128, 256))
        self.width = float(width)
        self.encoder = _vgg16_bn_stem(c1, c2, c3)
        self.neck = CEVRBottleneck(channels=c3, hidden=cevr_channels(256, width))
        self.decoders = nn.ModuleList([
            CEVRDecoderBlock(up_channels=c3, skip_channels=c3, out_channels=c3, map_scale=4),
            CEVRDecoderBlock(up_channels=c3, skip_channels=c2, out_channels=c2, map_scale=2),
            CEVRDecoderBlock(up_channels=c2, skip_channels=c1, out_channels=c1, map_scale=1),
        ])  # fmt: skip
        self.conv_mul = nn.Conv2d(c1 + 1, 1, 1)
        self.conv_rgb = nn.Conv2d(c1 + 1, 1, 1)
        if pretrained_encoder:
            self.load_torchvision_vgg16_bn(_read_vgg16_bn_features())

    def load_torchvision_vgg16_bn(self, features: dict[str, torch.Tensor]) -> None:
        """Copy ``vgg16_bn().features[0:23]`` tensors (keys ``"<index>.<name>"``) into the encoder.

        Raises:
            ConfigError: ``width != 1`` or a missing / mis-shaped tensor.
        """
        if self.width != 1.0:
            raise ConfigError(f"pretrained VGG16-BN weights need CEVR width=1, got width={self.width}; "
                              "set pretrained_encoder: false")
        own = self.encoder.state_dict()
        missing = sorted(k for k in own if k not in features or features[k].shape != own[k].shape)
        if missing:
            raise ConfigError(f"VGG16-BN state dict lacks or mis-shapes encoder tensors {missing[:4]}; "
                              "pass torchvision vgg16_bn().state_dict()")
        self.encoder.load_state_dict({k: features[k] for k in own})

    def forward(self, x: torch.Tensor, step: torch.Tensor | float) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] and step ``[B]`` (or a float) -> unclamped ``[B, 3, H, W]``."""
        if x.shape[-1] % self.stride or x.shape[-2] % self.stride:
            raise ConfigError(f"CEVR input size {tuple(x.shape[-2:])} must be divisible by {self.stride}; "
                              "pad the image (CEVRGenerator does) or crop it")
        if not isinstance(step, torch.Tensor) or step.dim() == 0:
            step = torch.as_tensor(step, dtype=x.dtype, device=x.device).expand(x.shape[0])
        step = step.reshape(x.shape[0])
        skips = []
        feature = x
        start = 0
        for end in _STAGE_ENDS:
            for layer in self.encoder[start:end]:
                feature = layer(feature)
            skips.append(feature)
            start = end
        feature = self.neck(feature, step)
        maps = []
        for decoder, skip in zip(self.decoders, reversed(skips)):
            feature, pair = decoder(feature, skip, step)
            if pair is not None:
                maps.append(pair)
        feature = _append_ev(feature, step)
        maps.append((self.conv_mul(feature), self.conv_rgb(feature)))
        y = x
        for alpha, beta in maps:
            y = y * alpha + beta
        return y


class CEVRGenerator(StackGenerator):
    """CEVR as a :class:`StackGenerator`: LDR ``[B,3,H,W]`` -> stack at any real EV set.

    Each ev > 0 is produced by the **B** network (:attr:`increase`) with step ``s = ev``, each ev < 0
    by the **D** network (:attr:`decrease`); the ev values are continuous (e.g. ``[-3, -1.5, 0.7, 2]``).
    Official inference set :data:`CEVR_DEFAULT_EV` (-3 ... 3 EV in 0.5 steps, 13 images with the input).
    Output images are clamped to [0, 1].

    :attr:`stride` is 16 (four 2x poolings); other sizes are replicate-padded at the bottom/right
    and the stack cropped back.

    Args:
        ev: exposure values to generate (the input is added as ev 0).
        width: hidden-channel multiplier of both networks (1.0 = official, 2 x 3,291,592 parameters).
        pretrained_encoder: start both encoders from the local ImageNet VGG16-BN file.
        straight_through_clamp: the [0, 1] clamp of the stack passes gradients unchanged
            (False: ``torch.clamp``'s zero gradient outside the range).
    """

    file_options = ("pretrained_encoder",)

    def __init__(self, *, ev: Sequence[float] = CEVR_DEFAULT_EV, width: float = 1.0,
                 pretrained_encoder: bool = False, straight_through_clamp: bool = True) -> None:
        super().__init__(ev=ev, include_input=True)
        self.straight_through_clamp = straight_through_clamp
        self.increase = CEVRNet(width=width, pretrained_encoder=pretrained_encoder)
        self.decrease = CEVRNet(width=width, pretrained_encoder=pretrained_encoder)

    @property
    def stride(self) -> int:
        """16: the encoder's three stages plus the bottleneck pool each halve the size."""
        return CEVRNet.stride

    def expose(self, ldr: torch.Tensor, step: torch.Tensor | float, *, up: bool) -> torch.Tensor:
        """Unclamped ``[B, 3, H, W]`` of the B (``up``) or D network at step ``s`` (``[B]`` or float)."""
        return (self.increase if up else self.decrease)(ldr, step)

    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, len(ev), 3, H, W]`` in [0, 1] for the non-zero ascending ``ev`` (any H, W)."""
        height, width = ldr.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            ldr = F.pad(ldr, (0, pad_w, 0, pad_h), mode="replicate")
        batch = ldr.shape[0]
        parts = []
        for up, values in ((False, [v for v in ev if v < 0]), (True, [v for v in ev if v > 0])):
            if not values:
                continue
            steps = torch.tensor(values, dtype=ldr.dtype, device=ldr.device).repeat(batch)  # [B*K], b-major
            inputs = ldr.repeat_interleave(len(values), dim=0)
            parts.append(self.expose(inputs, steps, up=up).unflatten(0, (batch, len(values))))
        stack = torch.cat(parts, dim=1)[..., :height, :width]
        clamped = stack.clamp(0.0, 1.0)
        return stack + (clamped - stack).detach() if self.straight_through_clamp else clamped
