"""Kalantari & Ramamoorthi, "Deep High Dynamic Range Imaging of Dynamic Scenes", SIGGRAPH / ACM TOG
2017: :class:`KalantariNet` and the merger :class:`KalantariMerger` (official MATLAB / MatConvNet code
from the project page, read in a copy; ``CreateNet.m``, ``WeightedAverage.m``, ``EvaluateSystem.m``,
``PrepareInputFeatures.m``; the WIE output as TH3CHARLie's TensorFlow reimplementation).

Inputs (:func:`hdrlab.models.mergers.triplet.gamma_inputs`): three aligned LDR images ``L_i`` (low,
reference, high) in ``[0, 1]`` and their HDR-domain versions ``H_i = L_i^2.2 / t_i``, ``t_i = 2^(ev_i -
ev_min)``, concatenated into 18 channels ``[L1, L2, L3, H1, H2, H3]``.

Network (shared by the three variants), valid convolutions, stride 1:

    conv 7x7 18 -> 100, ReLU;  conv 5x5 100 -> 100, ReLU;  conv 3x3 100 -> 50, ReLU;  conv 1x1 50 -> out, sigmoid

``out`` = 3 (Direct), 9 (WE), 18 (WIE). Each side loses 6 px (``KALANTARI_BORDER``): a 40x40 input
gives 28x28. Init: weights uniform in ``+-sqrt(3 / (kh kw C_in))``, biases 0 (``InitWeight.m``).
Parameters at width 1: Direct 383,603; WE 383,909; WIE 384,368.

Variants (the output ``H_hat [B, 3, H', W']`` is radiance relative to the darkest exposure, in [0, 1]):

* ``"direct"``: ``H_hat`` = the sigmoid output.
* ``"we"`` (weight estimator; the released code): 9 weights ``alpha_i`` (3 per image, per channel),
  ``H_hat = sum_i alpha_i H_i / (sum_i alpha_i + 1e-6)`` with ``H_i`` cropped by 6 px to the output.
* ``"wie"`` (weight and image estimator): 9 weights and 9 refined images ``I_i`` blended the same way,
  ``H_hat = sum_i alpha_i I_i / (sum_i alpha_i + 1e-6)``. The refined images' domain is not in the
  code read (the paper's is unverified); here, as in TH3CHARLie's reimplementation, the sigmoid
  outputs are used directly as radiance relative to the darkest exposure (the domain of ``H_i``
  and of ``H_hat``), so the blend is a convex combination in [0, 1].

Loss: :func:`hdrlab.losses.kalantari.kalantari_loss` (squared L2 of the mu-law tonemaps, mu 5000).

Options that are not in the official code (deviations, each named):

* ``padding``: the official network shrinks its input by 6 px per side (``"none"``; the training
  loss then covers the valid centre, as the official 40 -> 28 patches, and ``preserves_size`` is
  False). ``"replicate"`` (default) or ``"reflect"`` pads the 18-channel input by 6 px once before
  the unchanged valid network, so the output has the input's size (needed by ``TwoStage`` and the
  full-image metrics) and the border pixels are predicted from padded context; the weights are
  the official network's either way.
* ``alignment``: ``"none"`` (default) feeds the images as they are, an identity alignment instead
  of the official optical flow: a generated stack or a synthetic bracket of one static scene has no
  motion. ``"flow"``: the OpenCV DIS stand-in for Liu's flow of
  :func:`hdrlab.models.mergers.alignment.align_to_reference` (warped images fill out-of-frame
  pixels with the re-exposed reference; during training the label is replaced by the reference in
  HDR where the reference is dark (< 0.5) and the high image invalid, or bright and the low image
  invalid, as ``PrepareInputFeatures.m``). The flow runs on detached values; gradients still reach
  the images through the warp.
* ``reduction``: ``"mean"`` (default) or ``"sum"`` (official) of the squared error
  (:mod:`hdrlab.losses.kalantari`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import MU_KALANTARI
from hdrlab.losses.kalantari import check_reduction, kalantari_loss
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.mergers.alignment import align_to_reference
from hdrlab.models.mergers.triplet import KALANTARI_GAMMA, TripletMerger, center_crop
from hdrlab.stack import ExposureStack

__all__ = [
    "KALANTARI_BORDER",
    "KALANTARI_OUTPUTS",
    "KALANTARI_WEIGHT_EPS",
    "KalantariMerger",
    "KalantariNet",
    "kalantari_blend",
]

#: pixels each side loses in the valid convolutions (``param.border``)
KALANTARI_BORDER = 6
#: output channels of each variant
KALANTARI_OUTPUTS: dict[str, int] = {"direct": 3, "we": 9, "wie": 18}
#: the epsilon of the weighted average (``param.weps``)
KALANTARI_WEIGHT_EPS = 1e-6
PADDINGS: tuple[str, ...] = ("replicate", "reflect", "none")
ALIGNMENTS: tuple[str, ...] = ("none", "flow")


def _official_init(conv: nn.Conv2d) -> None:
    """Uniform weights in ``+-sqrt(3 / (kh kw C_in))``, zero biases (``InitWeight.m``)."""
    kh, kw = conv.kernel_size
    bound = math.sqrt(3.0 / (kh * kw * conv.in_channels))
    nn.init.uniform_(conv.weight, -bound, bound)
    nn.init.zeros_(conv.bias)


class KalantariNet(nn.Sequential):
    """The four valid convolutions: ``[B, 18, H, W] -> [B, out, H - 12, W - 12]`` in (0, 1) (sigmoid).

    Args:
        out_channels: 3 (Direct), 9 (WE) or 18 (WIE).
        width: multiplier of the hidden channels 100 / 100 / 50 (1.0 = official).
    """

    def __init__(self, *, out_channels: int = 9, width: float = 1.0) -> None:
        if width <= 0:
            raise ConfigError(f"KalantariNet.width={width} must be > 0 (1.0 = official)")
        c1, c2, c3 = (scale_channels(c, width) for c in (100, 100, 50))
        super().__init__(
            nn.Conv2d(18, c1, 7), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3), nn.ReLU(inplace=True),
            nn.Conv2d(c3, out_channels, 1), nn.Sigmoid(),
        )
        for module in self:
            if isinstance(module, nn.Conv2d):
                _official_init(module)


def kalantari_blend(weights: torch.Tensor, images: torch.Tensor, *, eps: float = KALANTARI_WEIGHT_EPS) -> torch.Tensor:
    """``sum_i w_i I_i / (sum_i w_i + eps)`` per channel (``WeightedAverage.m``).

    Args:
        weights: ``[B, 9, H, W]`` = 3 weights (RGB) per image, images in order low, reference, high.
        images: ``[B, 9, H, W]`` = the three RGB images in the same order.

    Returns:
        ``[B, 3, H, W]``.
    """
    w = weights.unflatten(1, (3, 3))
    x = images.unflatten(1, (3, 3))
    return (w * x).sum(1) / (w.sum(1) + eps)


class KalantariMerger(TripletMerger):
    """Kalantari & Ramamoorthi 2017 merger of (low, reference, high) (module docstring).

    Args:
        variant: ``"direct"``, ``"we"`` (released code) or ``"wie"``.
        width: multiplier of the hidden channels (1.0 = official: 383,603 / 383,909 / 384,368 parameters).
        padding: ``"replicate"`` (default) / ``"reflect"``: pad the input by 6 px so the output keeps
            its size; ``"none"``: the official valid network, output 12 px smaller.
        alignment: ``"none"`` (identity, default) or ``"flow"`` (OpenCV DIS stand-in for Liu's flow).
        reduction: ``"mean"`` (default) or ``"sum"`` (official) of the squared mu-law error.
        select_ev: exposures a composite takes from a generated stack (Kalantari training: -2, 0, 2).
        gamma: camera gamma (official 2.2).
        mu: mu-law strength of the loss (official 5000).
        loss_domain: domain of the loss (``mu_law`` official; ``linear``, ``log``, ``pu21`` for ablations).
    """

    def __init__(
        self,
        *,
        variant: Literal["direct", "we", "wie"] = "we",
        width: float = 1.0,
        padding: Literal["replicate", "reflect", "none"] = "replicate",
        alignment: Literal["none", "flow"] = "none",
        reduction: Literal["mean", "sum"] = "mean",
        select_ev: Sequence[float] = (-2.0, 0.0, 2.0),
        gamma: float = KALANTARI_GAMMA,
        mu: float = MU_KALANTARI,
        loss_domain: Literal["mu_law", "linear", "log", "pu21"] = "mu_law",
    ) -> None:
        super().__init__(select_ev=select_ev, gamma=gamma, mu=mu, loss_domain=loss_domain)
        if variant not in KALANTARI_OUTPUTS:
            raise ConfigError(f"KalantariMerger.variant={variant!r} is unknown; use one of {list(KALANTARI_OUTPUTS)}")
        if padding not in PADDINGS:
            raise ConfigError(f"KalantariMerger.padding={padding!r} is unknown; use one of {list(PADDINGS)}")
        if alignment not in ALIGNMENTS:
            raise ConfigError(f"KalantariMerger.alignment={alignment!r} is unknown; use 'none' or 'flow'")
        check_reduction(reduction, owner="KalantariMerger")
        self.variant = variant
        self.padding = padding
        self.alignment = alignment
        self.reduction = reduction
        self.net = KalantariNet(out_channels=KALANTARI_OUTPUTS[variant], width=width)

    @property
    def preserves_size(self) -> bool:
        """True unless ``padding="none"`` (then the output is 12 px smaller per dimension)."""
        return self.padding != "none"

    @property
    def min_size(self) -> int:
        """Smallest ``H`` / ``W`` a stack may have (13 for the valid network, 7 for reflect padding)."""
        return {"none": 2 * KALANTARI_BORDER + 1, "reflect": KALANTARI_BORDER + 1, "replicate": 1}[self.padding]

    def check_stack(self, stack: ExposureStack) -> None:
        """The arity check of the base class, plus the smallest size the padding allows."""
        super().check_stack(stack)
        height, width = stack.images.shape[-2:]
        if min(height, width) < self.min_size:
            raise ConfigError(
                f"KalantariMerger(padding={self.padding!r}) needs H and W >= {self.min_size}, got {(height, width)}; "
                "use a larger image or padding='replicate'"
            )

    # ------------------------------------------------------------------ network
    def forward_net(self, ldr: torch.Tensor, hdr: torch.Tensor) -> torch.Tensor:
        """``ldr, hdr [B, 3, 3, H, W] -> H_hat [B, 3, H', W']`` in [0, 1] relative to the darkest exposure
        (``H' = H`` with padding, ``H - 12`` without)."""
        x = torch.cat([ldr.flatten(1, 2), hdr.flatten(1, 2)], dim=1)  # [L1, L2, L3, H1, H2, H3]
        if self.padding != "none":
            x = F.pad(x, (KALANTARI_BORDER,) * 4, mode=self.padding)
        out = self.net(x)
        if self.variant == "direct":
            return out
        if self.variant == "wie":
            return kalantari_blend(out[:, :9], out[:, 9:])
        return kalantari_blend(out, center_crop(hdr.flatten(1, 2), out.shape[-2:]))

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:func:`kalantari_loss` (term ``l2_mu``)."""
        value = kalantari_loss(pred, target, mu=self.mu, domain=self.loss_domain, reduction=self.reduction)
        return value, {f"l2_{self.term_domain}": value.detach()}

    # ------------------------------------------------------------------ alignment
    def align(self, stack: ExposureStack) -> tuple[ExposureStack, torch.Tensor | None]:
        """The stack with low / high aligned to the reference (``alignment="flow"``) and the
        ``invalid [B, 2, 1, H, W]`` masks of the filled pixels; the stack itself and ``None`` for ``"none"``."""
        if self.alignment == "none":
            return stack, None
        times = torch.exp2(stack.ev - stack.ev[:, :1])
        images, invalid = align_to_reference(stack.images.clamp(0.0, 1.0), times, gamma=self.gamma)
        return ExposureStack(images=images, ev=stack.ev, reference=stack.reference, crf=stack.crf), invalid

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """:meth:`TripletMerger.merge` of the aligned stack."""
        return super().merge(self.align(stack)[0])

    def objective_inputs(self, stack: ExposureStack, hdr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training inputs of the aligned stack; with ``alignment="flow"`` the label is replaced by
        the reference in HDR where the flow left the needed image invalid (module docstring)."""
        aligned, invalid = self.align(stack)
        ldr, hdr_in, target = super().objective_inputs(aligned, hdr)
        if invalid is not None:
            dark = ldr[:, 1] < 0.5
            bad = (dark & invalid[:, 1]) | (~dark & invalid[:, 0])
            target = torch.where(bad, hdr_in[:, 1], target)
        return ldr, hdr_in, target
