"""Debevec & Malik (SIGGRAPH 1997): camera-response recovery and log-domain radiance merge.

Paper model: a pixel code is ``Z_ij = f(E_i * dt_j)``; with ``g = ln f^-1``,
``g(Z_ij) = ln E_i + ln dt_j``. The response is recovered by minimising (paper Eq. 3)

    O = sum_ij [w(Z_ij) (g(Z_ij) - ln E_i - ln dt_j)]^2 + lambda sum_z [w(z) g''(z)]^2

with the gauge ``g(128) = 0``, and the radiance map is the weighted log-mean (paper Eq. 6)

    ln E_i = sum_j w(Z_ij) (g(Z_ij) - ln dt_j) / sum_j w(Z_ij).

The functions here follow OpenCV's ``CalibrateDebevec`` / ``MergeDebevec`` exactly (grid sampling,
row layout, weight tables, mean-over-channels merge weight; OpenCV ``modules/photo/src/calibrate.cpp``,
``merge.cpp`` and ``hdr_common.cpp``, whose ``triangleWeights`` changed in 4.12) but solve
in float64: the least-squares minimiser of the same system, from its normal equations with the
per-sample unknowns ``ln E_i`` eliminated in closed form (a 256 x 256 Cholesky solve per channel,
:func:`solve_response_normal_equations`; OpenCV: float32 SVD), falling back to
``torch.linalg.lstsq`` (driver ``gelsd``, SVD-based, the paper's choice) when the system is
rank-deficient (e.g. ``lambda = 0`` with unobserved codes). The merges look the per-code tables
up by ``int32`` code instead of evaluating per-pixel arithmetic.
:class:`DebevecMerger` wraps them for :class:`hdrlab.stack.ExposureStack` in the project's
radiance convention.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

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
#: values per block of rows of the no-autograd recover-mode merge (temporaries of ~1 MiB stay in cache)
BLOCK_ELEMENTS = 1 << 18


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
    ``W // x_points`` and ``H // y_points``, points at ``step // 2 + i * step`` (always inside the
    image); ``x_points * y_points`` may be fewer than ``samples``.

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
    # every point lies inside the image (step // 2 + (n - 1) step < n step <= side), so OpenCV's
    # bounds check never drops one: no data-dependent mask (shape-static under fake tensors)
    return torch.cartesian_prod(ys, xs)


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


def _code_images(images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]) -> list[torch.Tensor]:
    """:func:`as_code_stack`'s checks, but the exposures as a list of ``[H, W, C]`` ``uint8`` views
    (no stacked copy)."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        images = list(torch.as_tensor(images).unbind(0))
    tensors = [torch.as_tensor(i) for i in images]
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
    return [t.unsqueeze(-1) if t.dim() == 2 else t for t in tensors]


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
    ``lambda * w(k + 1) * (1, -2, 1)`` at columns ``k, k+1, k+2`` for ``k = 0..253``
    (:func:`debevec_system`). Solved in float64 by :func:`solve_response` (normal equations with the
    ``ln E_i`` eliminated, ``gelsd`` fallback; OpenCV: float32 SVD), all channels as one batch.

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
    g = solve_response(z, log_t.expand(channels, num_exp), table, smoothness)  # [C, 256]
    return torch.exp(g).T.contiguous()


def debevec_system(
    z: torch.Tensor, log_t: torch.Tensor, table: torch.Tensor, smoothness: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV ``CalibrateDebevec``'s dense least-squares system ``A x ~ b`` of a batch of channels.

    Unknowns ``x = [g(0..255), ln E_1..ln E_M]``; rows: one per (sample, exposure) with ``+w(z)`` at
    column ``z``, ``-w(z)`` at column ``256 + i`` and right-hand side ``w(z) ln t_j``; the gauge row
    ``g(128) = 0`` (unscaled); smoothness rows ``lambda * w(k + 1) * (1, -2, 1)`` at columns
    ``k, k+1, k+2`` for ``k = 0..253``.

    Args:
        z: ``[K, M, P]`` long codes of ``M`` samples in ``P`` exposures, ``K`` independent systems.
        log_t: ``[K, P]`` float64 ``ln t_j``.
        table: 256-entry float64 weight table.
        smoothness: ``lambda``.

    Returns:
        ``A [K, M P + 255, 256 + M]`` and ``b [K, M P + 255]``, float64.
    """
    count, num_pts, num_exp = z.shape
    w = table[z]  # [K, M, P]
    n_data = num_pts * num_exp
    rows = n_data + 1 + (NUM_CODES - 2)
    cols = NUM_CODES + num_pts
    a = torch.zeros(count, rows, cols, dtype=torch.float64)
    b = torch.zeros(count, rows, dtype=torch.float64)
    ch = torch.arange(count).view(count, 1, 1).expand_as(z)
    row = torch.arange(n_data).view(1, num_pts, num_exp).expand_as(z)
    pt = torch.arange(num_pts).view(1, num_pts, 1).expand_as(z)
    a[ch, row, z] = w
    a[ch, row, NUM_CODES + pt] = -w
    b[ch, row] = w * log_t.view(count, 1, num_exp)
    a[:, n_data, NUM_CODES // 2] = 1.0
    k = torch.arange(NUM_CODES - 2)
    smooth_rows = n_data + 1 + k
    lam_w = smoothness * table[k + 1]
    for offset, coeff in ((0, 1.0), (1, -2.0), (2, 1.0)):
        a[:, smooth_rows, k + offset] = coeff * lam_w
    return a, b


def smoothness_gram(table: torch.Tensor, smoothness: float) -> torch.Tensor:
    """``L^T L + e_128 e_128^T`` ``[256, 256]``: the smoothness rows' and the gauge row's normal matrix.

    Row ``k`` of ``L`` is ``lambda w(k + 1) (1, -2, 1)`` at columns ``k, k+1, k+2``, so ``L^T L`` is
    pentadiagonal: ``(L^T L)[k + a, k + b] += (lambda w(k + 1))^2 c_a c_b`` with ``c = (1, -2, 1)``.
    """
    k = torch.arange(NUM_CODES - 2)
    lam_w2 = (smoothness * table[k + 1].to(torch.float64)).square()
    gram = torch.zeros(NUM_CODES, NUM_CODES, dtype=torch.float64)
    coeffs = (1.0, -2.0, 1.0)
    for a, ca in enumerate(coeffs):
        for b, cb in enumerate(coeffs):
            gram.index_put_((k + a, k + b), ca * cb * lam_w2, accumulate=True)
    gram[NUM_CODES // 2, NUM_CODES // 2] += 1.0
    return gram


def solve_response_normal_equations(
    z: torch.Tensor, log_t: torch.Tensor, table: torch.Tensor, smoothness: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``g`` of :func:`debevec_system` from the normal equations, ``ln E`` eliminated.

    With data weights ``v_ij = w(Z_ij)^2`` the normal equations of the data rows are, per sample
    ``i``, ``d_i ln E_i = sum_j v_ij (g(Z_ij) - ln t_j)`` with ``d_i = sum_j v_ij``; substituting
    ``ln E_i`` leaves the 256 x 256 system (Schur complement)

        (diag(sum_ij v_ij e_Z_ij) - sum_i u_i u_i^T / d_i + L^T L + e_128 e_128^T) g
            = sum_ij v_ij ln t_j e_Z_ij - sum_i u_i (sum_j v_ij ln t_j) / d_i,

    ``u_i = sum_j v_ij e_Z_ij``, ``L`` the smoothness rows and ``e_128`` the gauge row. It is
    symmetric positive definite whenever the full system has full column rank, and is solved by
    Cholesky in float64; its minimiser is the full system's least-squares solution (within ~1e-8
    in ``g`` of ``gelsd``'s on OpenCV's default system). The gauge is then imposed exactly
    (``g -= g(128)``: a constant shift of ``g`` and ``ln E`` leaves every other residual unchanged).

    Args:
        z: ``[K, M, P]`` long codes; log_t: ``[K, P]`` float64 ``ln t``; table: 256-entry float64
            weight table; smoothness: ``lambda``.

    Returns:
        ``(g [K, 256], ok [K] bool)``: ``ok`` is False where the Cholesky factorisation failed
        (rank-deficient system); ``g`` is not meaningful there.
    """
    count, num_pts, num_exp = z.shape
    v = table[z].square()  # [K, M, P]
    v_lt = v * log_t.view(count, 1, num_exp)
    d = v.sum(dim=2)  # [K, M]
    flat = z.reshape(count, -1)
    diag = torch.zeros(count, NUM_CODES, dtype=torch.float64).scatter_add_(1, flat, v.reshape(count, -1))
    rhs = torch.zeros(count, NUM_CODES, dtype=torch.float64).scatter_add_(1, flat, v_lt.reshape(count, -1))
    # u_i / sqrt(d_i) as the columns of U [K, 256, M]
    u = torch.zeros(count, NUM_CODES, num_pts, dtype=torch.float64)
    u.scatter_add_(1, z.transpose(1, 2), (v / d.sqrt().unsqueeze(2)).transpose(1, 2))
    s = torch.diag_embed(diag) + smoothness_gram(table, smoothness)
    s = torch.baddbmm(s, u, u.transpose(1, 2), alpha=-1.0)
    rhs = rhs - torch.bmm(u, (v_lt.sum(dim=2) / d.sqrt()).unsqueeze(2))[..., 0]
    factor, info = torch.linalg.cholesky_ex(s)
    g = torch.cholesky_solve(rhs.unsqueeze(2), factor)[..., 0]
    # adding a constant to g and every ln E changes no residual but the gauge's, so the exact
    # minimiser has g(128) = 0: remove the solve's rounding residue there (~1e-9)
    g = g - g[:, NUM_CODES // 2 : NUM_CODES // 2 + 1]
    return g, (info == 0) & torch.isfinite(g).all(dim=1)


def solve_response(z: torch.Tensor, log_t: torch.Tensor, table: torch.Tensor, smoothness: float) -> torch.Tensor:
    """``g [K, 256]`` of :func:`debevec_system`: normal equations, ``gelsd`` where they fail.

    :func:`solve_response_normal_equations` for every system; those it cannot factor
    (rank-deficient: e.g. ``lambda = 0`` and codes no sample shows) get the minimum-norm solution of
    the dense system by ``torch.linalg.lstsq(driver="gelsd")``. Runs single-threaded: the systems
    are tiny and LAPACK threads cost more than they save (10x slower on a busy machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g, ok = solve_response_normal_equations(z, log_t, table, smoothness)
        if _concrete(ok) and not bool(ok.all()):  # fake/meta tensors (estimators): shapes only
            bad = (~ok).nonzero()[:, 0]
            a, b = debevec_system(z[bad], log_t[bad], table, smoothness)
            g[bad] = torch.linalg.lstsq(a, b.unsqueeze(-1), driver="gelsd").solution[..., :NUM_CODES, 0]
    finally:
        torch.set_num_threads(threads)
    return g


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
    codes = _code_images(images)
    num_exp = len(codes)
    height, width, channels = codes[0].shape
    log_t = _log_times(times, num_exp)
    if response is None:
        resp = torch.arange(NUM_CODES, dtype=torch.float64).clamp_min(1.0).unsqueeze(1).expand(NUM_CODES, channels)
    else:
        resp = torch.as_tensor(response, dtype=torch.float64).reshape(NUM_CODES, -1)
        if resp.shape[1] not in (1, channels):
            raise ConfigError(f"response must be [256, {channels}], got {tuple(resp.shape)}")
        resp = resp.expand(NUM_CODES, channels)
    if channel_weights not in ("mean", "per_channel"):
        raise ConfigError(f"unknown channel_weights {channel_weights!r}; use 'mean' or 'per_channel'")
    mean = channel_weights == "mean"
    # per-(exposure, channel) tables ln r_c(z) - ln t_j (float32, as OpenCV), looked up by int32 code;
    # blocks of rows of ~BLOCK_ELEMENTS codes, planar, so the temporaries stay in the CPU caches
    log_table = (torch.log(resp).T.unsqueeze(0) - log_t.view(num_exp, 1, 1)).to(torch.float32).contiguous()  # [P, C, 256]
    w64 = debevec_weight_table(weights)
    if mean:
        # the channel mean of w as a sum of w / C; channels 0 and 1 through one 65536-entry pair table
        w64 = w64 / channels
        pair_table = (w64.view(-1, 1) + w64.view(1, -1)).to(torch.float32).reshape(-1)
    w_table = w64.to(torch.float32)
    out = torch.empty((height, width, channels), dtype=torch.float32)
    rows = max(1, BLOCK_ELEMENTS // (num_exp * width * channels))
    rows = min(rows, height)
    idx_buf = torch.empty(num_exp * channels * rows * width, dtype=torch.int32)
    per_buf = torch.empty(num_exp * channels * rows * width, dtype=torch.float32)
    w_buf = torch.empty((num_exp * rows * width) if mean else (num_exp * channels * rows * width), dtype=torch.float32)
    pair_buf = torch.empty(num_exp * rows * width, dtype=torch.int32) if mean and channels > 1 else None
    for top in range(0, height, rows):
        h = min(rows, height - top)
        count = num_exp * channels * h * width
        # planar int32 codes [P, C, h, W] (one transposing conversion per exposure)
        idx = idx_buf[:count].view(num_exp, channels, h, width)
        for j, img in enumerate(codes):
            idx[j].copy_(img[top : top + h].permute(2, 0, 1))
        per = per_buf[:count].view(num_exp, channels, h, width)
        for j in range(num_exp):
            for c in range(channels):
                torch.index_select(log_table[j, c], 0, idx[j, c].view(-1), out=per[j, c].view(-1))
        if mean:
            w = w_buf[: num_exp * h * width].view(num_exp, 1, h, width)
            if channels > 1:
                pair = torch.add(idx[:, 1], idx[:, 0], alpha=NUM_CODES, out=pair_buf[: num_exp * h * width].view(num_exp, h, width))
                torch.index_select(pair_table, 0, pair.view(-1), out=w.view(-1))
            else:
                torch.index_select(w_table, 0, idx[:, 0].reshape(-1), out=w.view(-1))
            for c in range(2, channels):
                w.view(num_exp, h, width).add_(w_table.index_select(0, idx[:, c].reshape(-1)).view(num_exp, h, width))
        else:
            w = w_buf[:count].view(num_exp, channels, h, width)
            torch.index_select(w_table, 0, idx.view(-1), out=w.view(-1))
        # sum_j w_j (ln r(Z_j) - ln t_j) accumulated in place, then / sum_j w_j and exp on the planar block
        num = per[0].mul_(w[0])
        for j in range(1, num_exp):
            num.addcmul_(per[j], w[j])
        # exp on the contiguous planar block (vectorised; on the strided HWC view it is scalar, ~10x slower)
        out[top : top + h].permute(2, 0, 1).copy_(num.div_(w.sum(0)).exp_())
    return out


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
    return _weighted_log_mean(log_linear - log_t, weight, ev, images, log_t, fallback=fallback,
                              saturation_bound=saturation_bound)


def _weighted_log_mean(
    per_exposure: torch.Tensor,
    weight: torch.Tensor,
    ev: torch.Tensor,
    images: torch.Tensor,
    log_t: torch.Tensor,
    *,
    fallback: str,
    saturation_bound: bool,
) -> torch.Tensor:
    """:func:`log_domain_merge` given ``per_exposure = ln f^-1(x_j) - ln t_j`` ``[B, N, 3, H, W]``.

    Without autograd (neither input requires a gradient) ``per_exposure`` is overwritten and the
    temporaries are updated in place. On plain CPU tensors the ``"extreme"`` fallback is only
    evaluated when some pixel needs it; elsewhere (other devices: no synchronisation; fake/meta
    tensors and other subclasses, e.g. the FLOP/memory estimators' ``FakeTensorMode``: no
    data-dependent control flow) always.
    """
    if fallback not in ("extreme", "opencv"):
        raise ConfigError(f"unknown fallback {fallback!r}; use 'extreme' or 'opencv'")
    in_place = not (torch.is_grad_enabled() and (per_exposure.requires_grad or weight.requires_grad))
    den = weight.sum(dim=1)
    extreme = None
    if fallback == "extreme":
        missing = den < NO_WEIGHT_THRESHOLD
        if not _concrete_cpu(per_exposure) or bool(missing.any()):
            batch = torch.arange(ev.shape[0], device=ev.device)
            shortest = per_exposure[batch, ev.argmin(dim=1)]
            longest = per_exposure[batch, ev.argmax(dim=1)]
            bright = images.detach().mean(dim=(1, 2), keepdim=False).unsqueeze(1) >= 0.5
            extreme = torch.where(bright, shortest, longest)
    weighted = per_exposure.mul_(weight) if in_place else weight * per_exposure
    ln_e = weighted.sum(dim=1)
    ln_e = ln_e.div_(den) if in_place else ln_e / den
    if extreme is not None:
        ln_e = torch.where(missing, extreme, ln_e)
    if saturation_bound:
        saturated = images.detach() >= SATURATED
        bound = torch.where(saturated, -log_t.expand_as(saturated), torch.full_like(per_exposure, -math.inf))
        ln_e = torch.maximum(ln_e, bound.amax(dim=1))
    return ln_e.exp_() if in_place else torch.exp(ln_e)


def _concrete(x: torch.Tensor) -> bool:
    """True for a plain tensor with values (not fake, meta or another subclass such as the FLOP/memory
    estimators' ``FakeTensorMode`` tensors): only then may a Python branch depend on its values."""
    return type(x) is torch.Tensor and x.device.type != "meta"


def _concrete_cpu(x: torch.Tensor) -> bool:
    """:func:`_concrete` on CPU: reading a value there costs no device synchronisation."""
    return _concrete(x) and x.device.type == "cpu"


def _hat_of_codes(codes: torch.Tensor, kind: WeightKind) -> torch.Tensor:
    """:func:`debevec_weight` of float ``codes`` in ``[0, 255]``, computed in place in ``codes``."""
    if kind not in ("hat", "opencv_legacy"):
        raise ConfigError(f"unknown Debevec weight kind {kind!r}; use 'hat' or 'opencv_legacy'")
    tri = torch.minimum(codes, torch.rsub(codes, 255.0), out=codes)
    return tri.clamp_min_(HAT_EPS) if kind == "hat" else tri.add_(1.0)


def _lerp_tables(log_r: torch.Tensor, log_t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat intercept/slope tables of ``ln r(p) - ln t_j`` (piecewise linear in ``p = 255 x``).

    For ``i = floor(p)``: ``ln r(p) - ln t_j = a[i] + p s[i]`` with ``s[i] = ln r[i + 1] - ln r[i]``
    and ``a[i] = ln r[i] - i s[i] - ln t_j`` (the segment of :func:`hdrlab.camera.lut.lut_apply` at
    ``x = p / 255``); entry 255 (``p = 255``) repeats segment 254, so ``i`` needs no clamp. ``log_r`` ``[B, C, 256]``, ``log_t`` ``[B, N]`` -> two ``[B N C 256]`` tables,
    entry ``((b N + n) C + c) 256 + i``.
    """
    log_r = log_r.to(torch.float64)
    slope = torch.diff(log_r, dim=-1)
    slope = torch.cat([slope, slope[..., -1:]], dim=-1)  # entry 255 (p = 255): segment 254
    codes = torch.arange(NUM_CODES, dtype=torch.float64, device=log_r.device)
    intercept = (log_r - codes * slope).unsqueeze(1) - log_t.to(torch.float64)[:, :, None, None]
    slope = slope.unsqueeze(1).expand_as(intercept)
    return intercept.to(dtype).reshape(-1), slope.to(dtype).reshape(-1)


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
    pixelwise = True  # per-pixel log-mean; recover mode: given the response solved once (merge_state)

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
        bsz, num, channels, height, width = images.shape
        if self.sampling == "grid":
            points = grid_sample_points(height, width, self.samples).to(images.device).expand(bsz, -1, 2)
        else:
            points = torch.stack([random_sample_points(height, width, self.samples) for _ in range(bsz)])
            points = points.to(images.device)
        batch = torch.arange(bsz, device=images.device).unsqueeze(1)
        picked = images.permute(0, 3, 4, 1, 2)[batch, points[..., 0], points[..., 1]]  # [B, M, N, C]
        z = (picked.clamp(0.0, 1.0) * 255.0).round().long().cpu().permute(0, 3, 1, 2)  # [B, C, M, N]
        rel_ev = (stack.ev - stack.ev[:, stack.reference : stack.reference + 1]).detach().cpu().double()
        log_t = (rel_ev * math.log(2.0)).repeat_interleave(channels, dim=0)  # [B C, N]
        table = debevec_weight_table(self.weights)
        g = solve_response(z.reshape(bsz * channels, -1, num), log_t, table, self.smoothness)
        log_r = g.view(bsz, channels, NUM_CODES)
        return (log_r - log_r[..., -1:]).to(device=images.device)

    def merge_state(self, stack: ExposureStack) -> torch.Tensor | None:
        """The image-wide state of the merge: recover mode: :meth:`recover_log_response` of the whole
        stack (its sample grid spans the whole image); known CRF: ``None``."""
        return self.recover_log_response(stack) if self.crf == "recover" else None

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """Merge ``stack`` into ``[B, 3, H, W]`` linear radiance relative to the reference exposure.

        Without autograd the recover-mode merge (every operation is per pixel) runs on blocks of
        rows of about :data:`BLOCK_ELEMENTS` values, so its temporaries stay in the CPU caches.
        """
        return self.merge_part(stack, self.merge_state(stack))

    def merge_part(self, stack: ExposureStack, state: torch.Tensor | None) -> torch.Tensor:
        """:meth:`merge` of ``stack`` (e.g. a strip of rows of a larger stack) with the response
        ``state`` of :meth:`merge_state` (recover mode; solved from the whole stack)."""
        if self.crf == "recover" and state is None:
            raise ConfigError("DebevecMerger(crf='recover').merge_part needs the recovered response: "
                              "pass merge_state(stack) of the whole stack")
        images = stack.images
        bsz, num, ch, height, width = images.shape
        rel_ev = stack.ev - stack.ev[:, stack.reference : stack.reference + 1]
        if self.crf != "recover":
            linear = torch.stack([stack.crf.inverse(images[:, n]) for n in range(num)], dim=1)
            log_t = (rel_ev * math.log(2.0)).to(images.dtype)[:, :, None, None, None]
            per_exposure = torch.log(linear.clamp_min(LINEAR_FLOOR)) - log_t
            weight = debevec_weight(images.clamp(0.0, 1.0) * 255.0, self.weights)
            if self.channel_weights == "mean":
                weight = weight.mean(dim=2, keepdim=True)
            return _weighted_log_mean(per_exposure, weight, rel_ev, images, log_t, fallback=self.fallback,
                                      saturation_bound=self.saturation_bound).to(images.dtype)
        log_r = state  # [B, 3, 256]
        tables = _lerp_tables(log_r, rel_ev.detach() * math.log(2.0), images.dtype)
        grad = torch.is_grad_enabled() and images.requires_grad
        rows = height if grad else max(1, BLOCK_ELEMENTS // max(1, bsz * num * ch * width))
        if rows >= height:
            return self._merge_recovered(images, rel_ev, tables, grad)
        out = torch.empty((bsz, ch, height, width), dtype=images.dtype, device=images.device)
        for top in range(0, height, rows):
            out[..., top : top + rows, :] = self._merge_recovered(images[..., top : top + rows, :], rel_ev, tables, grad)
        return out

    def _merge_recovered(
        self, images: torch.Tensor, rel_ev: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor], grad: bool
    ) -> torch.Tensor:
        """Recover-mode merge of ``images`` ``[B, N, 3, h, w]`` given :func:`_lerp_tables`' ``tables``."""
        bsz, num, ch = images.shape[:3]
        intercept, slope = tables
        log_t = (rel_ev * math.log(2.0)).to(images.dtype)[:, :, None, None, None]
        # ln r(255 x) - ln t_j by int32 table lookups: a[i] + p s[i], p = 255 clamp(x, 0, 1), i = floor(p)
        # (lut_apply's segment); gradient 255 s[i] through p only. p in the standard (planar) layout:
        # every later pass vectorises over whole planes
        if grad:
            p = (images.clamp(0.0, 1.0) * 255.0).contiguous()
        else:
            p = torch.mul(images, 255.0, out=torch.empty(images.shape, dtype=images.dtype,
                                                          device=images.device)).clamp_(0.0, 255.0)
        base = torch.arange(bsz * num * ch, device=images.device, dtype=torch.int32) * NUM_CODES
        # i = floor(p) (int32 truncation, p >= 0); i = 255 (p = 255) uses the tables' copy of segment 254
        idx = p.detach().to(torch.int32).add_(base.view(bsz, num, ch, 1, 1)).view(-1)
        a_i = intercept.index_select(0, idx).view_as(p)
        s_i = slope.index_select(0, idx).view_as(p)
        per_exposure = torch.addcmul(a_i, p, s_i) if grad else a_i.addcmul_(p, s_i)
        # weight table at the codes round(p), evaluated in closed form (cheaper than a lookup)
        weight = _hat_of_codes(torch.round(p.detach()), self.weights)
        if self.channel_weights == "mean":
            weight = weight.mean(dim=2, keepdim=True)
        return _weighted_log_mean(per_exposure, weight, rel_ev, images, log_t, fallback=self.fallback,
                                  saturation_bound=self.saturation_bound).to(images.dtype)
