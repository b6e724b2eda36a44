"""CF-Net: Deng, Zhang, Xu, Gu, Duan, "Deep Coupled Feedback Network for Joint Exposure Fusion and
Image Super-Resolution", IEEE TIP 2021 (official code: ytZhang99/CF-Net ``model.py``).

Two low-resolution inputs, the under-exposed ``I^u`` and the over-exposed ``I^o`` (an extreme
pair), are super-resolved by ``s in {2, 4}`` and fused into one display-referred image:

* FEB: ``conv3x3 3 -> 256`` (+PReLU on the over branch only, as the official code) ``-> conv1x1
  256 -> 64 + PReLU`` per branch.
* SRB: one pass of the SRFBN feedback block (``G = 6`` up/down projection groups with dense 1x1
  transitions) without hidden state.
* CFB: ``T = 3`` coupled feedback blocks per branch, step ``t`` of a branch taking
  ``[F_in, G_{t-1}, G_{t-1}^{other}]``; after projection group index 2 the new low-resolution
  feature is re-guided by ``G_{t-1}^{other}`` (1x1 conv 128 -> 64).
* REC per output: ``deconv (k, s, p) + PReLU -> conv3x3 64 -> 3``, added to the bilinear ``x s``
  upsampled input, clamped. Each branch emits ``T + 1`` images (SRB output, then CFB 1..T).
* Fusion (test time): ``I_out = 0.5 * I_T^o + 0.5 * I_T^u``.

Projection (deconv / strided conv) kernels ``(kernel, stride, padding)``: ``(6, 2, 2)`` for x2 and
``(8, 4, 2)`` for x4 (SRFBN's). Every activation is a PReLU with one shared slope initialised to 0.2;
there is no normalisation. Parameters at width 1: 17,048,297 (x2) and 28,975,849 (x4).

Domains (a deliberate interface change, numerically equivalent): the official code feeds
``Normalize(0.5, 0.5)`` images in ``[-1, 1]`` and returns ``[0, 255]``. Here inputs and outputs are
display-referred ``[0, 1]``; the network maps ``x -> 2x - 1`` on entry and ``y -> (y + 1) / 2`` on exit,
so official weights would apply unchanged (output / 255).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hdrlab import tonemap
from hdrlab.errors import ConfigError
from hdrlab.losses.cfnet import cfnet_loss, check_structural_loss, ssim_loss
from hdrlab.models.blocks.conv import scale_channels
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

#: Official projection geometry ``scale -> (kernel_size, stride, padding)`` (SRFBN).
CFNET_PROJECTION: dict[int, tuple[int, int, int]] = {2: (6, 2, 2), 4: (8, 4, 2)}


def cfnet_projection_geometry(scale: int) -> tuple[int, int, int]:
    """``(kernel_size, stride, padding)`` of CF-Net's up/down projections for ``scale`` (2 or 4)."""
    if scale not in CFNET_PROJECTION:
        raise ConfigError(f"CF-Net scale={scale} is not supported; the official kernels exist for 2 and 4 only")
    return CFNET_PROJECTION[scale]


def _prelu() -> nn.PReLU:
    return nn.PReLU(num_parameters=1, init=0.2)


class ConvPReLU(nn.Sequential):
    """``Conv2d (bias) [+ PReLU(0.2)]``; ``padding=None`` means ``(kernel_size - 1) // 2``."""

    def __init__(
        self,
        *,
        in_channels: int = 64,
        out_channels: int = 64,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        activation: bool = True,
    ) -> None:
        pad = (kernel_size - 1) // 2 if padding is None else padding
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad)]
        if activation:
            layers.append(_prelu())
        super().__init__(*layers)


class DeconvPReLU(nn.Sequential):
    """``ConvTranspose2d (bias, kernel/stride/padding of the scale) + PReLU(0.2)``: ``[B,C,h,w] -> [B,C,sh,sw]``."""

    def __init__(self, *, channels: int = 64, scale: int = 2) -> None:
        k, s, p = cfnet_projection_geometry(scale)
        super().__init__(nn.ConvTranspose2d(channels, channels, k, s, p), _prelu())


class CFNetProjectionGroups(nn.Module):
    """The SRFBN feedback-block body: ``groups`` up/down back-projection groups with dense transitions.

    Group ``g``: LR input = concat of all LR features so far (1x1 ``64(g+1) -> 64`` + PReLU for
    ``g > 0``) -> up-projection deconv -> concat of all HR features so far (1x1 transition for
    ``g > 0``) -> down-projection conv -> new LR feature. With ``guide_after = j`` the new LR
    feature of group ``j`` is concatenated with a guide and fused by a 1x1 ``128 -> 64`` conv
    (CF-Net's ``re_guide``). Output: 1x1 ``64 * groups -> 64`` + PReLU over the new LR features.

    Args:
        features: feature width (64 at width 1).
        groups: number of projection groups G (6).
        scale: SR factor, selects the projection kernels.
        guide_after: group index after which the guide is injected (CFB: 2), None for the SRB.
    """

    def __init__(self, *, features: int = 64, groups: int = 6, scale: int = 2, guide_after: int | None = None) -> None:
        super().__init__()
        k, s, p = cfnet_projection_geometry(scale)
        if guide_after is not None and not 0 <= guide_after < groups:
            raise ConfigError(f"guide_after={guide_after} must index one of the {groups} projection groups")
        self.guide_after = guide_after
        self.up = nn.ModuleList(DeconvPReLU(channels=features, scale=scale) for _ in range(groups))
        self.down = nn.ModuleList(
            ConvPReLU(in_channels=features, out_channels=features, kernel_size=k, stride=s, padding=p)
            for _ in range(groups)
        )
        self.lr_transitions = nn.ModuleList(
            ConvPReLU(in_channels=features * (g + 1), out_channels=features) for g in range(1, groups)
        )
        self.hr_transitions = nn.ModuleList(
            ConvPReLU(in_channels=features * (g + 1), out_channels=features) for g in range(1, groups)
        )
        self.re_guide = (
            ConvPReLU(in_channels=2 * features, out_channels=features) if guide_after is not None else None
        )
        self.compress_out = ConvPReLU(in_channels=features * groups, out_channels=features)

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, F, h, w]`` (and ``guide [B, F, h, w]`` if ``guide_after``) -> ``[B, F, h, w]``."""
        lr_feats = [x]
        hr_feats: list[torch.Tensor] = []
        for g, (up, down) in enumerate(zip(self.up, self.down)):
            lr = self.lr_transitions[g - 1](torch.cat(lr_feats, dim=1)) if g else lr_feats[0]
            hr_feats.append(up(lr))
            hr = self.hr_transitions[g - 1](torch.cat(hr_feats, dim=1)) if g else hr_feats[0]
            lr = down(hr)
            if self.re_guide is not None and g == self.guide_after:
                lr = self.re_guide(torch.cat([lr, guide], dim=1))
            lr_feats.append(lr)
        return self.compress_out(torch.cat(lr_feats[1:], dim=1))


class CFNetSRB(nn.Module):
    """Super-resolution block: ``compress_in`` (1x1 + PReLU) then :class:`CFNetProjectionGroups` (no guide)."""

    def __init__(self, *, features: int = 64, groups: int = 6, scale: int = 2) -> None:
        super().__init__()
        self.compress_in = ConvPReLU(in_channels=features, out_channels=features)
        self.groups = CFNetProjectionGroups(features=features, groups=groups, scale=scale)

    def forward(self, f_in: torch.Tensor) -> torch.Tensor:
        """``F_in [B, F, h, w] -> G_0 [B, F, h, w]``."""
        return self.groups(self.compress_in(f_in))


class CFNetCFB(nn.Module):
    """Coupled feedback block: ``G_t = CFB([F_in, G_{t-1}, G_{t-1}^other])`` with re-guidance after group 2."""

    def __init__(self, *, features: int = 64, groups: int = 6, scale: int = 2, guide_after: int = 2) -> None:
        super().__init__()
        self.compress_in = ConvPReLU(in_channels=3 * features, out_channels=features)
        self.groups = CFNetProjectionGroups(features=features, groups=groups, scale=scale, guide_after=guide_after)

    def forward(self, f_in: torch.Tensor, g_own: torch.Tensor, g_other: torch.Tensor) -> torch.Tensor:
        """Three ``[B, F, h, w]`` -> ``G_t [B, F, h, w]``."""
        return self.groups(self.compress_in(torch.cat([f_in, g_own, g_other], dim=1)), g_other)


class CFNetReconstruction(nn.Sequential):
    """REC: ``deconv (projection geometry) + PReLU -> conv3x3 F -> 3`` (residual, no activation)."""

    def __init__(self, *, features: int = 64, scale: int = 2) -> None:
        super().__init__(
            DeconvPReLU(channels=features, scale=scale),
            ConvPReLU(in_channels=features, out_channels=3, kernel_size=3, activation=False),
        )


class CFNetOutput(NamedTuple):
    """CF-Net outputs, display-referred ``[B, 3, s*h, s*w]`` in ``[0, 1]``.

    Attributes:
        under: ``T + 1`` under-branch images (SRB output, then CFB 1..T).
        over: ``T + 1`` over-branch images.
        fused: ``w_u * under[-1] + w_o * over[-1]`` (official 0.5 / 0.5).
    """

    under: tuple[torch.Tensor, ...]
    over: tuple[torch.Tensor, ...]
    fused: torch.Tensor


class CFNet(nn.Module):
    """CF-Net (TIP 2021): LR under/over pair ``[B, 3, h, w]`` in [0, 1] -> ``x scale`` fused image in [0, 1].

    Args:
        scale: SR factor, 2 or 4 (projection kernels (6, 2, 2) / (8, 4, 2)).
        width: hidden-channel multiplier (64 and 256 feature widths -> ``max(1, round(c * width))``);
            the RGB input/output convs stay 3-channel.
        num_groups: projection groups G per SRB/CFB (official 6).
        num_cfbs: coupled feedback steps T (official 3).
        fusion_weights: ``(w_u, w_o)`` of the final fusion (official 0.5, 0.5).
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        width: float = 1.0,
        num_groups: int = 6,
        num_cfbs: int = 3,
        fusion_weights: tuple[float, float] = (0.5, 0.5),
    ) -> None:
        super().__init__()
        cfnet_projection_geometry(scale)
        if num_cfbs < 1:
            raise ConfigError(f"CF-Net num_cfbs={num_cfbs} must be >= 1 (official 3)")
        self.scale = scale
        self.fusion_weights = (float(fusion_weights[0]), float(fusion_weights[1]))
        feats = scale_channels(64, width)
        wide = scale_channels(256, width)
        # FEB: the official under branch has no activation after its 3x3 conv.
        self.feb_under = nn.Sequential(
            ConvPReLU(in_channels=3, out_channels=wide, kernel_size=3, activation=False),
            ConvPReLU(in_channels=wide, out_channels=feats),
        )
        self.feb_over = nn.Sequential(
            ConvPReLU(in_channels=3, out_channels=wide, kernel_size=3),
            ConvPReLU(in_channels=wide, out_channels=feats),
        )
        self.srb_under = CFNetSRB(features=feats, groups=num_groups, scale=scale)
        self.srb_over = CFNetSRB(features=feats, groups=num_groups, scale=scale)
        self.cfbs_under = nn.ModuleList(
            CFNetCFB(features=feats, groups=num_groups, scale=scale) for _ in range(num_cfbs)
        )
        self.cfbs_over = nn.ModuleList(
            CFNetCFB(features=feats, groups=num_groups, scale=scale) for _ in range(num_cfbs)
        )
        self.rec_under = nn.ModuleList(CFNetReconstruction(features=feats, scale=scale) for _ in range(num_cfbs + 1))
        self.rec_over = nn.ModuleList(CFNetReconstruction(features=feats, scale=scale) for _ in range(num_cfbs + 1))

    def forward(self, under: torch.Tensor, over: torch.Tensor) -> CFNetOutput:
        """Super-resolve and fuse.

        Args:
            under: ``[B, 3, h, w]`` under-exposed LR image, display-referred ``[0, 1]``.
            over: ``[B, 3, h, w]`` over-exposed LR image, display-referred ``[0, 1]``.

        Returns:
            :class:`CFNetOutput` with ``[B, 3, scale*h, scale*w]`` images in ``[0, 1]``.
        """
        if under.shape != over.shape or under.dim() != 4 or under.shape[1] != 3:
            raise ConfigError(
                f"CF-Net needs two [B, 3, h, w] images of one shape, got {tuple(under.shape)} and {tuple(over.shape)}"
            )
        x_u, x_o = 2.0 * under - 1.0, 2.0 * over - 1.0  # official Normalize(0.5, 0.5)
        base_u = F.interpolate(x_u, scale_factor=self.scale, mode="bilinear", align_corners=False)
        base_o = F.interpolate(x_o, scale_factor=self.scale, mode="bilinear", align_corners=False)
        f_u, f_o = self.feb_under(x_u), self.feb_over(x_o)
        g_u, g_o = [self.srb_under(f_u)], [self.srb_over(f_o)]
        for cfb_u, cfb_o in zip(self.cfbs_under, self.cfbs_over):
            g_u_prev, g_o_prev = g_u[-1], g_o[-1]
            g_u.append(cfb_u(f_u, g_u_prev, g_o_prev))
            g_o.append(cfb_o(f_o, g_o_prev, g_u_prev))
        out_u = tuple(((rec(g) + base_u).clamp(-1.0, 1.0) + 1.0) * 0.5 for rec, g in zip(self.rec_under, g_u))
        out_o = tuple(((rec(g) + base_o).clamp(-1.0, 1.0) + 1.0) * 0.5 for rec, g in zip(self.rec_over, g_o))
        w_u, w_o = self.fusion_weights
        return CFNetOutput(under=out_u, over=out_o, fused=w_u * out_u[-1] + w_o * out_o[-1])


def downsample_pair_image(
    image: torch.Tensor, *, scale: int, mode: Literal["bicubic", "area"] = "bicubic"
) -> torch.Tensor:
    """Shrink ``[B, 3, H, W]`` (H, W divisible by ``scale``) to ``[B, 3, H/scale, W/scale]``, display [0, 1].

    ``"bicubic"``: antialiased bicubic (a = -0.5, kernel widened by ``scale``), the filter of MATLAB
    ``imresize(1/s)`` with which CF-Net's training LR images were made (PIL's BICUBIC matches it);
    clamped to [0, 1] against overshoot. ``"area"``: the mean of each ``scale x scale`` block
    (OpenCV ``INTER_AREA`` for integer factors).
    """
    if image.shape[-1] % scale or image.shape[-2] % scale:
        raise ConfigError(f"image size {tuple(image.shape[-2:])} must be divisible by the CF-Net scale {scale}")
    if mode == "area":
        return F.avg_pool2d(image, scale)
    if mode == "bicubic":
        small = F.interpolate(image, scale_factor=1.0 / scale, mode="bicubic", align_corners=False, antialias=True)
        return small.clamp(0.0, 1.0)
    raise ConfigError(f"downsample mode {mode!r} is unknown; use 'bicubic' or 'area'")


class CFNetMerger(StackMerger):
    """CF-Net as a :class:`StackMerger`: the extreme pair of a stack -> fused display image in [0, 1].

    The darkest (``ev`` min, index 0) and brightest (index ``N - 1``) members are the under/over
    inputs (CF-Net's arity is fixed at 2; middle exposures are ignored, and a composite generates
    only the extreme pair: ``select_rule = "extremes"``). With ``same_resolution`` (default) the pair
    is first downsampled by ``scale`` (:func:`downsample_pair_image`) and CF-Net ``x scale`` brings it
    back to ``[B, 3, H, W]`` (then ``H, W`` must be multiples of ``scale``: :attr:`stride`); no new
    kernels are introduced. Otherwise the output is ``[B, 3, scale*H, scale*W]``.

    Own objective (:meth:`objective`, official ``train.py``; :func:`hdrlab.losses.cfnet.cfnet_loss`):
    the SRB outputs of each branch are supervised by the full-resolution member they came from,
    every coupled-feedback output by the fused ground truth ``hdrlab.tonemap.display(batch["hdr"])``
    (``structural_loss="ssim"``) or by the source pair with MEF-SSIM (``"mef_ssim"``, which uses no
    ground truth: :attr:`objective_supervised` is False).

    Args:
        scale: SR factor 2 or 4.
        width: hidden-channel multiplier.
        num_groups: projection groups G per SRB/CFB (official 6).
        num_cfbs: coupled feedback steps T (official 3).
        same_resolution: downsample-then-super-resolve so the output matches the stack size.
        downsample: ``"bicubic"`` (antialiased, like the MATLAB training data) or ``"area"``.
        structural_loss: the objective's feedback term, ``"ssim"`` (official code) or ``"mef_ssim"``
            (the paper's MEF-SSIM, Ma et al. 2015; unverified, :mod:`hdrlab.losses.mef_ssim`).
    """

    output_domain = "display"
    accepts = StackArity(min_exposures=2)
    select_rule = "extremes"
    differentiable = True
    has_objective = True
    pixelwise = False  # convolutional: an output pixel sees a neighbourhood

    def __init__(
        self,
        *,
        scale: int = 2,
        width: float = 1.0,
        num_groups: int = 6,
        num_cfbs: int = 3,
        same_resolution: bool = True,
        downsample: Literal["bicubic", "area"] = "bicubic",
        structural_loss: Literal["ssim", "mef_ssim"] = "ssim",
    ) -> None:
        super().__init__()
        if downsample not in ("bicubic", "area"):
            raise ConfigError(f"CFNetMerger downsample={downsample!r} is unknown; use 'bicubic' or 'area'")
        self.same_resolution = bool(same_resolution)
        self.downsample = downsample
        self.structural_loss = check_structural_loss(structural_loss, owner="CFNetMerger")
        self.net = CFNet(scale=scale, width=width, num_groups=num_groups, num_cfbs=num_cfbs)

    @property
    def scale(self) -> int:
        """The SR factor (2 or 4)."""
        return self.net.scale

    @property
    def stride(self) -> int:
        """``scale`` with ``same_resolution`` (the pair is downsampled by it), else 1."""
        return self.net.scale if self.same_resolution else 1

    @property
    def preserves_size(self) -> bool:
        """True with ``same_resolution``; otherwise the output is ``scale`` times larger."""
        return self.same_resolution

    @property
    def objective_supervised(self) -> bool:
        """False with ``structural_loss="mef_ssim"`` (scored against the source pair only)."""
        return self.structural_loss == "ssim"

    def check_stack(self, stack: ExposureStack) -> None:
        """Arity check of the base class, plus ``H, W`` divisible by ``scale`` for same-resolution use."""
        super().check_stack(stack)
        scale = self.net.scale
        if self.same_resolution and (stack.images.shape[-1] % scale or stack.images.shape[-2] % scale):
            raise ConfigError(
                f"CFNetMerger(scale={scale}, same_resolution=True) needs H and W divisible by {scale}, "
                f"got {tuple(stack.images.shape[-2:])}; crop the stack or use same_resolution=False"
            )

    def outputs(self, stack: ExposureStack) -> CFNetOutput:
        """Every CF-Net output (both branches: SRB, then the ``T`` feedback steps) for a validated stack."""
        self.check_stack(stack)
        under, over = stack.images[:, 0], stack.images[:, -1]
        if self.same_resolution:
            under = downsample_pair_image(under, scale=self.net.scale, mode=self.downsample)
            over = downsample_pair_image(over, scale=self.net.scale, mode=self.downsample)
        return self.net(under, over)

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """``[B, N, 3, H, W]`` stack -> ``[B, 3, H, W]`` (or ``x scale``) display image in [0, 1]."""
        return self.outputs(stack).fused

    def objective(self, stack: ExposureStack, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CF-Net's loss (class docstring) on the stack's extreme pair; terms ``sr`` (SRB outputs vs
        their full-resolution sources) and ``fusion`` (feedback outputs).

        Args:
            stack: ``[B, N, 3, H, W]`` with ``H, W`` divisible by ``scale`` (``same_resolution``).
            batch: ``hdr [B, 3, H, W]`` (read with ``structural_loss="ssim"``).
        """
        if not self.same_resolution:
            raise ConfigError("CFNetMerger.objective needs same_resolution=True (the HR pair supervises the SR outputs)")
        out = self.outputs(stack)
        under, over = stack.images[:, 0].detach(), stack.images[:, -1].detach()
        fused_gt = tonemap.display(batch["hdr"]) if self.structural_loss == "ssim" else None
        sr = ssim_loss(out.under[0], under) + ssim_loss(out.over[0], over)
        total = cfnet_loss(out.under, out.over, hr_under=under, hr_over=over, hr_fused=fused_gt,
                           structural_loss=self.structural_loss)
        return total, {"sr": sr.detach(), "fusion": (total - sr).detach()}
