"""Debevec & Malik (SIGGRAPH 1997): camera-response recovery and log-domain radiance merge.

Paper model: a pixel code is ``Z_ij = f(E_i * dt_j)``; with ``g = ln f^-1``,
``g(Z_ij) = ln E_i + ln dt_j``. The response is recovered by minimising (paper Eq. 3)

    O = sum_ij [w(Z_ij) (g(Z_ij) - ln E_i - ln dt_j)]^2 + lambda sum_z [w(z) g''(z)]^2

with the gauge ``g(128) = 0``, and the radiance map is the weighted log-mean (paper Eq. 6)

    ln E_i = sum_j w(Z_ij) (g(Z_ij) - ln dt_j) / sum_j w(Z_ij).

The functions here follow OpenCV's ``CalibrateDebevec`` / ``MergeDebevec`` exactly (grid sampling,
row layout, weight tables, mean-over-channels merge weight; OpenCV ``modules/photo/src/calibrate.cpp``,
``merge.cpp`` and ``hdr_common.cpp``, whose ``triangleWeights`` changed in 4.12) but solve
in float64 with ``torch.linalg.lstsq`` (driver ``gelsd``, an SVD-based solver, as the paper says).
:class:`DebevecMerger` wraps them for :class:`hdrlab.stack.ExposureStack` in the project's
radiance convention.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

from hdrlab.camera.lut import lut_apply
from hdrlab.errors import ConfigError
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

WeightKind = Literal["hat", "opencv_legacy"]
ChannelWeights = Literal["mean", "per_channel"]

#: number of 8-bit codes
NUM_CODES = 256
#: OpenCV's (>= 4.12) weight of codes 0 and 255 with the "hat" table
HAT_EPS = 1e-6
#: a pixel whose summed merge weight is below this has no usable exposure (codes units)
NO_WEIGHT_THRESHOLD = 1e-3
#: floor of a linearised value before the logarithm (known-CRF path)
LINEAR_FLOOR = 1e-8
#: display value at or above which a sample counts as saturated (code 255 after rounding)
SATURATED = 1.0 - 0.5 / 255.0


def debevec_weight(codes: torch.Tensor, kind: WeightKind = "hat") -> torch.Tensor:
    """Triangle ("hat") weight of Debevec & Malik on code values.

    ``"hat"`` is the paper's ``w(z) = min(z, 255 - z)`` with a floor of ``1e-6`` (so ``w(0) = w(255) =
    1e-6``): OpenCV >= 4.12 ``triangleWeights``. ``"opencv_legacy"`` is OpenCV <= 4.11:
    ``min(z, 255 - z) + 1`` (``w(0) = w(255) = 1``, saturated pixels still vote).

    Args:
        codes: code values in ``[0, 255]``, any shape; integers give the 256-entry table, continuous
            values (``255 * x`` of a display image) give the piecewise-linear hat.

    Returns:
        weights, same shape and float dtype as ``codes`` (``float64`` for integer input).
    """
    v = codes if codes.is_floating_point() else codes.to(torch.float64)
    tri = torch.minimum(v, 255.0 - v)
    if kind == "hat":
        return tri.clamp_min(HAT_EPS)
    if kind == "opencv_legacy":
        return tri + 1.0
    raise ConfigError(f"unknown Debevec weight kind {kind!r}; use 'hat' or 'opencv_legacy'")


def debevec_weight_table(kind: WeightKind = "hat", *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 256-entry weight table ``w[z]`` for ``z = 0..255`` (see :func:`debevec_weight`)."""
    return debevec_weight(torch.arange(NUM_CODES, dtype=dtype), kind)


def grid_sample_points(height: int, width: int, samples: int) -> torch.Tensor:
    """OpenCV's deterministic sample grid (``CalibrateDebevec`` with ``random=False``).

    ``x_points = floor(sqrt(samples * W / H))``, ``y_points = samples // x_points``, steps
    ``W // x_points`` and ``H // y_points``, points at ``step // 2 + i * step``; points outside
    the image are dropped, so fewer than ``samples`` points may be returned.

    Returns:
        ``[M, 2]`` long tensor of ``(y, x)`` positions, ``M <= samples``.
    """
    x_points = int(math.sqrt(samples * width / height))
    if x_points < 1:
        raise ConfigError(f"samples={samples} is too small for a {width}x{height} image; use more samples")
    if x_points > width:
        raise ConfigError(f"samples={samples} does not fit a {width}x{height} image; use fewer samples")
    y_points = samples // x_points
    if y_points < 1 or y_points > height:
        raise ConfigError(f"samples={samples} does not fit a {width}x{height} image; use fewer samples")
    step_x, step_y = width // x_points, height // y_points
    xs = step_x // 2 + step_x * torch.arange(x_points)
    ys = step_y // 2 + step_y * torch.arange(y_points)
    grid = torch.cartesian_prod(ys, xs)
    keep = (grid[:, 0] < height) & (grid[:, 1] < width)
    return grid[keep]


def random_sample_points(
    height: int, width: int, samples: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``samples`` uniformly random ``(y, x)`` positions (OpenCV's ``random=True``, but seedable)."""
    ys = torch.randint(0, height, (samples,), generator=generator)
    xs = torch.randint(0, width, (samples,), generator=generator)
    return torch.stack([ys, xs], dim=1)


def as_code_stack(images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]) -> torch.Tensor:
    """8-bit exposures as one ``uint8`` tensor ``[P, H, W, C]`` (``[H, W]`` grey images get ``C = 1``).

    Raises:
        ConfigError: when the images are not ``uint8`` or differ in size.
    """
    tensors = [torch.as_tensor(np.ascontiguousarray(i) if isinstance(i, np.ndarray) else i) for i in images]
    if not tensors:
        raise ConfigError("Debevec needs at least one 8-bit image")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ConfigError(f"all exposures must have the same size, got shapes {sorted(shapes)}")
    if any(t.dtype != torch.uint8 for t in tensors):
        raise ConfigError(
            "Debevec calibration/merge works on 8-bit codes: pass uint8 images "
            "(e.g. round(255 * x) for display values x in [0, 1])"
        )
    codes = torch.stack(tensors)
    return codes.unsqueeze(-1) if codes.dim() == 3 else codes


def _log_times(times: torch.Tensor | Sequence[float], count: int) -> torch.Tensor:
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if t.numel() != count:
        raise ConfigError(f"got {count} exposures but {t.numel()} exposure times; give one time per exposure")
    if not bool((t > 0).all()):
        raise ConfigError(f"exposure times must be positive, got {t.tolist()}")
    return torch.log(t)


def recover_response_debevec(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    times: torch.Tensor | Sequence[float],
    *,
    samples: int = 70,
    smoothness: float = 10.0,
    weights: WeightKind = "hat",
    sampling: Literal["grid", "random"] = "grid",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Recover the inverse camera response ``exp(g)`` by Debevec & Malik's least squares (paper Eq. 3).

    The system per channel is OpenCV's ``CalibrateDebevec`` (``modules/photo/src/calibrate.cpp``): one data row per
    (sample, exposure) with ``+w(z)`` at column ``z``, ``-w(z)`` at column ``256 + i`` and right-hand
    side ``w(z) ln t_j``; the gauge row ``g(128) = 0`` (unscaled); smoothness rows
    ``lambda * w(k + 1) * (1, -2, 1)`` at columns ``k, k+1, k+2`` for ``k = 0..253``. Solved in float64
    with ``torch.linalg.lstsq(driver="gelsd")`` (OpenCV: float32 SVD), all channels as one batch.

    Args:
        images: ``P`` exposures of 8-bit codes, ``uint8`` ``[P, H, W, C]`` or a list of ``[H, W(, C)]``.
        times: ``[P]`` exposure times (positive; any unit, the result is relative anyway).
        samples: number of sample pixels (grid: at most this many, see :func:`grid_sample_points`).
        smoothness: ``lambda`` of the smoothness term.
        weights: weight table, ``"hat"`` (paper; OpenCV >= 4.12) or ``"opencv_legacy"`` (OpenCV <= 4.11).
        sampling: ``"grid"`` (OpenCV's deterministic grid) or ``"random"`` (uses ``generator``).
        generator: random generator for ``sampling="random"``.

    Returns:
        ``[256, C]`` float64 response ``exp(g(z))``: linear exposure of code ``z`` relative to code 128
        (OpenCV's convention, ``response[128] = 1``), channels in the input order.
    """
    codes = as_code_stack(images)
    num_exp, height, width, channels = codes.shape
    log_t = _log_times(times, num_exp)
    if smoothness < 0:
        raise ConfigError(f"smoothness (lambda) must be >= 0, got {smoothness}")
    if sampling == "grid":
        points = grid_sample_points(height, width, samples)
    elif sampling == "random":
        points = random_sample_points(height, width, samples, generator=generator)
    else:
        raise ConfigError(f"unknown sampling {sampling!r}; use 'grid' or 'random'")
    table = debevec_weight_table(weights)

    z = codes[:, points[:, 0], points[:, 1], :].long().permute(2, 1, 0)  # [C, M, P]
    num_pts = z.shape[1]
    w = table[z]  # [C, M, P]
    n_data = num_pts * num_exp
    rows = n_data + 1 + (NUM_CODES - 2)
    cols = NUM_CODES + num_pts
    a = torch.zeros(channels, rows, cols, dtype=torch.float64)
    b = torch.zeros(channels, rows, dtype=torch.float64)

    ch = torch.arange(channels).view(channels, 1, 1).expand_as(z)
    row = torch.arange(n_data).view(1, num_pts, num_exp).expand_as(z)
    pt = torch.arange(num_pts).view(1, num_pts, 1).expand_as(z)
    a[ch, row, z] = w
    a[ch, row, NUM_CODES + pt] = -w
    b[ch, row] = w * log_t.view(1, 1, num_exp)
    a[:, n_data, NUM_CODES // 2] = 1.0

    k = torch.arange(NUM_CODES - 2)
    smooth_rows = n_data + 1 + k
    lam_w = smoothness * table[k + 1]
    for offset, coeff in ((0, 1.0), (1, -2.0), (2, 1.0)):
        a[:, smooth_rows, k + offset] = coeff * lam_w

    # The system is tiny (~300 x 330 per channel): LAPACK threads cost more than they save and are
    # 10x slower on a busy machine, so the solve runs single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        solution = torch.linalg.lstsq(a, b.unsqueeze(-1), driver="gelsd").solution[..., 0]
    finally:
        torch.set_num_threads(threads)
    g = solution[:, :NUM_CODES]  # [C, 256]
    return torch.exp(g).T.contiguous()


def merge_debevec(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    times: torch.Tensor | Sequence[float],
    response: torch.Tensor | np.ndarray | None = None,
    *,
    weights: WeightKind = "hat",
    channel_weights: ChannelWeights = "mean",
) -> torch.Tensor:
    """Radiance map by the weighted log-mean over exposures (paper Eq. 6), OpenCV ``MergeDebevec``.

    ``ln E_c = sum_j w_j (ln r_c(Z_jc) - ln t_j) / sum_j w_j``. With ``channel_weights="mean"`` the
    weight is one scalar per pixel and exposure, the mean over channels of ``w(Z_jc)`` (OpenCV);
    ``"per_channel"`` uses ``w(Z_jc)`` per channel (the paper). Pixels where every weight is the
    ``1e-6`` floor (black/white in all exposures) get the unweighted log-mean, as in OpenCV.

    Args:
        images: ``P`` exposures, ``uint8`` ``[P, H, W, C]`` or a list of ``[H, W(, C)]``.
        times: ``[P]`` exposure times.
        response: ``[256, C]`` (or OpenCV's ``[256, 1, C]``) linear response per code; ``None`` uses
            OpenCV's default linear response ``r(z) = z`` with ``r(0) = 1``.
        weights: weight table (see :func:`debevec_weight`).
        channel_weights: ``"mean"`` (OpenCV) or ``"per_channel"`` (paper).

    Returns:
        ``[H, W, C]`` float32 relative radiance (unit: code with ``response = 1`` at time 1).
    """
    codes = as_code_stack(images).long()
    num_exp, _, _, channels = codes.shape
    log_t = _log_times(times, num_exp).view(num_exp, 1, 1, 1)
    if response is None:
        resp = torch.arange(NUM_CODES, dtype=torch.float64).clamp_min(1.0).unsqueeze(1).expand(NUM_CODES, channels)
    else:
        resp = torch.as_tensor(response, dtype=torch.float64).reshape(NUM_CODES, -1)
        if resp.shape[1] not in (1, channels):
            raise ConfigError(f"response must be [256, {channels}], got {tuple(resp.shape)}")
        resp = resp.expand(NUM_CODES, channels)
    if channel_weights not in ("mean", "per_channel"):
        raise ConfigError(f"unknown channel_weights {channel_weights!r}; use 'mean' or 'per_channel'")
    log_r = torch.log(resp)[codes, torch.arange(channels)]  # [P, H, W, C]
    w = debevec_weight_table(weights)[codes]
    if channel_weights == "mean":
        w = w.mean(dim=-1, keepdim=True)
    ln_e = (w * (log_r - log_t)).sum(0) / w.sum(0)
    return torch.exp(ln_e).to(torch.float32)


def log_domain_merge(
    log_linear: torch.Tensor,
    weight: torch.Tensor,
    ev: torch.Tensor,
    images: torch.Tensor,
    *,
    fallback: Literal["extreme", "opencv"] = "extreme",
    saturation_bound: bool = False,
) -> torch.Tensor:
    """Batched weighted log-mean over exposures (paper Eq. 6) with a fallback for unusable pixels.

    Args:
        log_linear: ``[B, N, 3, H, W]`` ``ln f^-1(x)`` of every exposure.
        weight: ``[B, N, 1|3, H, W]`` merge weights (code units, floor ``1e-6``).
        ev: ``[B, N]`` log2 exposure relative to the output's reference (``t = 2 ** ev``).
        images: ``[B, N, 3, H, W]`` display values in ``[0, 1]`` (decide bright vs dark on fallback).
        fallback: where the summed weight is below :data:`NO_WEIGHT_THRESHOLD` (every exposure
            clipped or black): ``"extreme"`` takes the shortest exposure if the pixel is bright
            (mean display value >= 0.5) else the longest, so a pixel clipped everywhere gets the
            clipping level of the shortest exposure; ``"opencv"`` keeps the weighted mean
            (OpenCV's unweighted log-mean).
        saturation_bound: treat a saturated value (display ``>= SATURATED``, per channel) as the
            censored observation it is: exposure ``j`` saturated means ``E >= 1 / t_j``, so the
            merged ``ln E`` is raised to ``max_j -ln t_j`` over the saturated exposures. Not part
            of Debevec & Malik (their weights only drop such samples); it matters when the
            unsaturated exposures disagree with the saturated ones, e.g. a *generated* stack
            whose under-exposures are too dark where the input clipped. Off by default.

    Returns:
        ``[B, 3, H, W]`` radiance ``exp(ln E)``.
    """
    log_t = (ev * math.log(2.0)).to(log_linear.dtype)[:, :, None, None, None]
    per_exposure = log_linear - log_t
    den = weight.sum(dim=1)
    ln_e = (weight * per_exposure).sum(dim=1) / den
    if fallback == "extreme":
        batch = torch.arange(ev.shape[0], device=ev.device)
        shortest = per_exposure[batch, ev.argmin(dim=1)]
        longest = per_exposure[batch, ev.argmax(dim=1)]
        bright = images.mean(dim=(1, 2), keepdim=False).unsqueeze(1) >= 0.5
        extreme = torch.where(bright, shortest, longest)
        ln_e = torch.where(den < NO_WEIGHT_THRESHOLD, extreme, ln_e)
    elif fallback != "opencv":
        raise ConfigError(f"unknown fallback {fallback!r}; use 'extreme' or 'opencv'")
    if saturation_bound:
        saturated = images.detach() >= SATURATED
        bound = torch.where(saturated, -log_t.expand_as(saturated), torch.full_like(log_linear, -math.inf))
        ln_e = torch.maximum(ln_e, bound.amax(dim=1))
    return torch.exp(ln_e)


class DebevecMerger(StackMerger):
    """Debevec & Malik radiance merge of an :class:`ExposureStack` -> linear ``[B, 3, H, W]``.

    Output convention: radiance relative to the *reference* exposure (``t = 2 ** (ev - ev_ref)``,
    so ``t = 1`` for the reference), i.e. the project's ``hdr`` scale where the reference
    exposure clips at 1.0.

    Modes:

    * ``crf="recover"``: the response is recovered from the stack itself per batch element
      (:func:`recover_response_debevec` on the 8-bit codes ``round(255 x)``) and scaled so that
      code 255 maps to 1 per channel (the Debevec solve only defines it up to a per-channel scale;
      this puts "white" at the clipping level). The solve and the weights (table at the codes)
      are constants; gradients flow to the images through a piecewise-linear lookup of
      ``ln response`` at the continuous values ``255 x`` (slope per unit ``x``).
    * ``crf="known"``: linearises with ``stack.crf.inverse`` (fully differentiable, no
      quantisation, no device synchronisation); weights are the continuous hat
      ``debevec_weight(255 x)`` of the display values.

    Args:
        crf: ``"recover"`` or ``"known"`` (needs ``stack.crf``).
        samples: sample pixels of the response solve (recover mode).
        smoothness: ``lambda`` of the response solve (recover mode).
        weights: ``"hat"`` (paper, OpenCV >= 4.12) or ``"opencv_legacy"``.
        channel_weights: ``"mean"`` (OpenCV: one weight per pixel, mean over channels) or
            ``"per_channel"`` (paper).
        sampling: ``"grid"`` (OpenCV) or ``"random"``.
        fallback: handling of pixels with no usable exposure (see :func:`log_domain_merge`).
        saturation_bound: raise the merge to the lower bound implied by saturated values
            (``E >= 1 / t_j`` where exposure ``j`` clips; see :func:`log_domain_merge`). An hdrlab
            option, not in the paper: off by default.
    """

    output_domain = "linear"
    accepts = StackArity(min_exposures=2, reference="any")
    differentiable = True

    def __init__(
        self,
        *,
        crf: Literal["recover", "known"] = "recover",
        samples: int = 70,
        smoothness: float = 10.0,
        weights: WeightKind = "hat",
        channel_weights: ChannelWeights = "mean",
        sampling: Literal["grid", "random"] = "grid",
        fallback: Literal["extreme", "opencv"] = "extreme",
        saturation_bound: bool = False,
    ) -> None:
        super().__init__()
        if crf not in ("recover", "known"):
            raise ConfigError(f"DebevecMerger crf={crf!r} is unknown; use 'recover' or 'known'")
        if weights not in ("hat", "opencv_legacy"):
            raise ConfigError(f"DebevecMerger weights={weights!r} is unknown; use 'hat' or 'opencv_legacy'")
        if channel_weights not in ("mean", "per_channel"):
            raise ConfigError(
                f"DebevecMerger channel_weights={channel_weights!r} is unknown; use 'mean' or 'per_channel'"
            )
        if sampling not in ("grid", "random"):
            raise ConfigError(f"DebevecMerger sampling={sampling!r} is unknown; use 'grid' or 'random'")
        if fallback not in ("extreme", "opencv"):
            raise ConfigError(f"DebevecMerger fallback={fallback!r} is unknown; use 'extreme' or 'opencv'")
        if samples < 1:
            raise ConfigError(f"DebevecMerger samples={samples} must be >= 1 (OpenCV default 70)")
        if smoothness < 0:
            raise ConfigError(f"DebevecMerger smoothness={smoothness} must be >= 0 (OpenCV default 10)")
        self.crf = crf
        self.samples = samples
        self.smoothness = smoothness
        self.weights = weights
        self.channel_weights = channel_weights
        self.sampling = sampling
        self.fallback = fallback
        self.saturation_bound = bool(saturation_bound)

    def check_stack(self, stack: ExposureStack) -> None:
        """Arity check; ``crf="known"`` also needs ``stack.crf`` with an ``inverse`` method."""
        super().check_stack(stack)
        if self.crf == "known" and not callable(getattr(stack.crf, "inverse", None)):
            raise ConfigError(
                "DebevecMerger(crf='known') needs stack.crf (a CRF with .inverse), but the stack has none; "
                "synthesise the stack with hdrlab.camera.synthesize_stack or use DebevecMerger(crf='recover')"
            )

    def recover_log_response(self, stack: ExposureStack) -> torch.Tensor:
        """``ln`` of the recovered response per batch element, ``[B, 3, 256]``, with ``ln r(255) = 0``.

        Constant (no gradient); solved on ``round(255 * clamp(x, 0, 1))`` and ``t = 2 ** (ev - ev_ref)``.
        """
        images = stack.images.detach()
        codes = (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
        rel_ev = (stack.ev - stack.ev[:, stack.reference : stack.reference + 1]).detach().cpu().double()
        curves = []
        for b in range(images.shape[0]):
            response = recover_response_debevec(
                codes[b].permute(0, 2, 3, 1),
                torch.exp2(rel_ev[b]),
                samples=self.samples,
                smoothness=self.smoothness,
                weights=self.weights,
                sampling=self.sampling,
            )
            log_r = torch.log(response).T  # [3, 256]
            curves.append(log_r - log_r[:, -1:])
        return torch.stack(curves).to(device=images.device)

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """Merge ``stack`` into ``[B, 3, H, W]`` linear radiance relative to the reference exposure."""
        images = stack.images
        bsz, num, ch, height, width = images.shape
        rel_ev = stack.ev - stack.ev[:, stack.reference : stack.reference + 1]
        if self.crf == "recover":
            log_r = self.recover_log_response(stack).to(images.dtype)  # [B, 3, 256]
            log_linear = torch.stack([lut_apply(images[:, n], log_r) for n in range(num)], dim=1)
            codes = (images.detach().clamp(0.0, 1.0) * 255.0).round()
            weight = debevec_weight(codes, self.weights)
        else:
            linear = torch.stack([stack.crf.inverse(images[:, n]) for n in range(num)], dim=1)
            log_linear = torch.log(linear.clamp_min(LINEAR_FLOOR))
            weight = debevec_weight(images.clamp(0.0, 1.0) * 255.0, self.weights)
        if self.channel_weights == "mean":
            weight = weight.mean(dim=2, keepdim=True)
        return log_domain_merge(log_linear, weight, rel_ev, images, fallback=self.fallback,
                                saturation_bound=self.saturation_bound).to(images.dtype)
