"""Kim, Lee, Kang (AAAI 2021): the differentiable HDR image synthesis layer.

Official code: JungHeeKim29/DiffHDRsyn (``hdrlayer.py``, ``utils/np_DebevecCRF.py``,
``utils/hdr_toolbox.py``, ``utils/sampling.py``). For one stack ``x_j`` (display values in
``[0, 1]``) with exposure times ``t_j``:

1. **Grossberg-Nayar sampling** (:func:`grossberg_samples`): per exposure and channel the 256-bin
   histogram of the codes ``round(255 x)``, its cumulative sum normalised to 1, and for ``S = 256``
   evenly spaced levels ``u`` the code whose CDF is nearest ``u``. The code of level ``u`` in every
   exposure is one "sample" seen at all exposures (no pixel positions).
2. **Debevec-Malik solve** of ``g = ln f^-1`` per channel (paper Eq. 3, ``lambda = 20``,
   gauge ``g(128) = 0``) with the "Deb97" weight ``w(z) = min(z, 1 - z) / 0.5`` on ``z = code/255``;
   :func:`solve_log_response`.
3. **Colour normalisation** (:func:`normalize_response`): the channels are scaled so that the
   curves at code 127 are neutral grey, then all are divided by the maximum of the blue (index 2)
   curve, so white of the reference exposure is about 1.0; entries ``<= 0`` become ``1e-7``.
4. **Linearisation** ``f^-1(x_j)`` by table look-up (:func:`lookup_response`): the official
   straight-through look-up (``lookup="nearest"``: forward ``table[round(255 x)]``, backward the
   per-code backward difference ``table[k] - table[k-1]``) or a true piecewise-linear
   interpolation (``lookup="linear"``, exact derivative).
5. **Merge** (paper Eq. 6, log domain, per channel):
   ``ln E = sum_j w(x_j) (ln f^-1(x_j) - ln t_j) / (sum_j w(x_j) + 1e-9)``, ``E = exp(ln E)``;
   where ``sum_j w <= 1e-4`` (every exposure clipped or black) the HDR Toolbox rule takes the
   shortest exposure's ``f^-1(x)/t`` if the middle exposure is ``> 0.5`` there, else the longest's
   (:func:`kim_merge`).

Gradient path (as the official code): the sampling, the solve, the normalisation and the merge
weights are constants; gradients reach ``stack.images`` only through the look-up ``f^-1(x_j)``
(and the fallback exposures' look-ups). The layer has no parameters.

Deviations from the official code (named on purpose):

* The solve runs in float64 with ``torch.linalg.lstsq`` (``gelsd``) through
  :func:`hdrlab.models.mergers.debevec.recover_response_debevec` (its OpenCV row layout with the
  sample codes given as a one-row image), not ``numpy.linalg.lstsq``. The systems are the same:
  the official last smoothness row (centred at code 255, the off-by-one that touches the first
  ``ln E`` column) is multiplied by ``w(255) = 0`` and is therefore empty; the official weights
  are the code-unit hat divided by 127.5, and scaling every data and smoothness row by one constant
  changes nothing. The only difference is the code-unit table's floor of ``1e-6`` at codes 0 and
  255 (official: exactly 0), a relative ``1e-8`` change of those rows.
* The table is computed in float64 and used in the images' dtype (:func:`working_table`): entries
  that underflow there get the floor ``1e-7`` too, entries that overflow the dtype's largest value,
  so a degenerate stack (an untrained generator's) still merges to finite radiance.
* The channel scales of step 3 are the closed form ``p_c = f^-1_blue(127) / f^-1_c(127)``.
  The official code minimises the scale-invariant misfit of the normalised colours with
  Nelder-Mead (``scipy.optimize.fmin`` from ``(1, 1, 1)``), so its overall scale is wherever the
  simplex stops; here blue keeps its scale, so blue's white is exactly 1. The official fit and the
  blue maximum also mix the whole batch (a norm and a max over all batch elements); here every
  batch element is normalised on its own.
* ``lookup="nearest"`` keeps the official per-code slope (no factor 255: the gradient is that
  of ``x`` measured in codes). The official slope at code 0 is the code of the first pixel (a bug);
  here it is the forward difference ``table[1] - table[0]``.
* Exposure times are ``t_j = 2 ** (ev_j - ev_ref)`` relative to the stack's reference (the
  official ``2 ** k`` for ``k = -3..3`` with the middle image as reference is the same thing), so
  the output follows the project convention (the reference exposure clips near 1.0).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch._subclasses.fake_tensor import is_fake

from hdrlab.camera.lut import lut_apply
from hdrlab.errors import ConfigError
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.models.mergers.debevec import NUM_CODES, recover_response_debevec
from hdrlab.stack import ExposureStack

Lookup = Literal["nearest", "linear"]
LOOKUPS: tuple[str, ...] = ("nearest", "linear")

#: official number of Grossberg samples (quantile levels)
KIM_SAMPLES = 256
#: official smoothness weight lambda of the Debevec solve
KIM_SMOOTHNESS = 20.0
#: official floor of the inverse-CRF table (entries <= 0 are replaced by it)
TABLE_FLOOR = 1e-7
#: official offset added to the summed merge weight before the division
WEIGHT_OFFSET = 1e-9
#: official threshold of the summed weight below which the fallback applies
FALLBACK_THRESHOLD = 1e-4
#: code of the grey point used for the colour normalisation
GREY_CODE = 127
#: channel whose maximum normalises the curves (official: index 2)
NORMALISING_CHANNEL = 2


def kim_weight(x: torch.Tensor) -> torch.Tensor:
    """The official "Deb97" hat on ``[0, 1]``: ``x / 0.5`` for ``x <= 0.5``, ``(1 - x) / 0.5`` above,
    clipped to ``[0, 1]`` (1 at 0.5, 0 at 0 and 1). Same shape and dtype as ``x``."""
    return (torch.where(x <= 0.5, x, 1.0 - x) / 0.5).clamp(0.0, 1.0)


def to_codes(images: torch.Tensor) -> torch.Tensor:
    """8-bit codes ``round(255 * clamp(x, 0, 1))`` as ``long`` (no gradient)."""
    return (images.detach().clamp(0.0, 1.0) * 255.0).round().long()


def grossberg_samples(codes: torch.Tensor, samples: int = KIM_SAMPLES) -> torch.Tensor:
    """Histogram-based corresponding samples of Grossberg & Nayar (official ``GrossbergSampling``).

    Per exposure and channel: the 256-bin histogram of ``codes``, its cumulative sum divided by
    the pixel count (the CDF), and for each of ``samples`` levels ``u = linspace(0, 1, samples)``
    the code whose CDF is nearest ``u`` (the lowest such code on ties).

    Args:
        codes: ``[P, C, H, W]`` integer codes in ``0..255`` (``P`` exposures).
        samples: number of levels ``S``.

    Returns:
        ``[P, C, S]`` long codes; ``[:, c, s]`` is one scene point seen in all exposures.
    """
    if samples < 2:
        raise ConfigError(f"grossberg_samples samples={samples} must be >= 2 (official 256)")
    num, channels = codes.shape[:2]
    flat = codes.reshape(num, channels, -1).long()
    hist = torch.zeros(num, channels, NUM_CODES, dtype=torch.float64, device=codes.device)
    hist.scatter_add_(2, flat, torch.ones_like(flat, dtype=torch.float64))
    cdf = hist.cumsum(dim=2)
    cdf = cdf / cdf[..., -1:]
    levels = torch.linspace(0.0, 1.0, samples, dtype=torch.float64, device=codes.device)
    return (cdf.unsqueeze(-1) - levels).abs().argmin(dim=2)


def solve_log_response(
    samples: torch.Tensor, log_times: torch.Tensor, *, smoothness: float = KIM_SMOOTHNESS
) -> torch.Tensor:
    """``g = ln f^-1`` per channel by the Debevec-Malik least squares on Grossberg samples.

    Rows per channel (official ``gsolve``, hat weights ``w``): data ``w(z)(g(z) - ln E_s) = w(z) ln t_j``,
    gauge ``g(128) = 0``, smoothness ``lambda w(z) (g(z-1) - 2 g(z) + g(z+1))`` for ``z = 1..254``.
    Solved by :func:`hdrlab.models.mergers.debevec.recover_response_debevec` (module docstring).

    Args:
        samples: ``[P, C, S]`` codes from :func:`grossberg_samples`.
        log_times: ``[P]`` natural logarithms of the exposure times.
        smoothness: ``lambda`` (official 20).

    Returns:
        ``[C, 256]`` float64 ``g`` with ``g(128) = 0`` (no gradient).
    """
    num, channels, count = samples.shape
    image = samples.permute(0, 2, 1).reshape(num, 1, count, channels).to(torch.uint8).cpu()
    response = recover_response_debevec(
        image, torch.exp(log_times.detach().double().cpu()), samples=count, smoothness=smoothness,
        weights="hat", sampling="grid",
    )
    return torch.log(response).T.contiguous()


def normalize_response(log_response: torch.Tensor) -> torch.Tensor:
    """Official colour normalisation of ``f^-1 = exp(g)`` (module docstring, step 3).

    Args:
        log_response: ``[C, 256]`` ``g`` per channel (``C = 3``).

    Returns:
        ``[C, 256]`` table ``p_c exp(g_c) / max(exp(g_blue))`` with ``p_c = exp(g_blue(127) - g_c(127))``,
        entries ``<= 0`` replaced by ``1e-7``.
    """
    blue = log_response[NORMALISING_CHANNEL]
    scale = torch.exp(blue[GREY_CODE] - log_response[:, GREY_CODE]).unsqueeze(1)
    table = scale * torch.exp(log_response) / torch.exp(blue).max()
    return torch.where(table > 0, table, torch.full_like(table, TABLE_FLOOR))


def working_table(table: torch.Tensor, *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The float64 table of :func:`normalize_response` in the images' ``dtype``, still positive and finite.

    A degenerate stack (e.g. the nearly constant members of an untrained generator) can give curves
    spanning more than float32's range; entries that underflow to 0 get the official floor ``1e-7``
    (``ln 0`` would make the merge NaN) and entries that overflow get the dtype's largest value.
    """
    table = table.to(dtype=dtype, device=device)
    table = torch.where(table > 0, table, torch.full_like(table, TABLE_FLOOR))
    return table.clamp_max(torch.finfo(dtype).max)


class _NearestCodeLookup(torch.autograd.Function):
    """``table[round(255 x)]`` with the straight-through slope ``table[k] - table[k-1]`` per code."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:  # noqa: D401
        codes = (x.clamp(0.0, 1.0) * 255.0).round().long()  # [B, C, H, W]
        slope = torch.cat([table[..., 1:2] - table[..., 0:1], table[..., 1:] - table[..., :-1]], dim=-1)
        b, c = codes.shape[:2]
        flat = codes.reshape(b, c, -1)
        ctx.save_for_backward(torch.gather(slope.expand(b, c, -1), 2, flat).reshape(codes.shape))
        return torch.gather(table.expand(b, c, -1), 2, flat).reshape(codes.shape)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (slope,) = ctx.saved_tensors
        return grad_output * slope, None


def lookup_response(x: torch.Tensor, table: torch.Tensor, lookup: Lookup = "nearest") -> torch.Tensor:
    """Linearise display values with the inverse-CRF table.

    Args:
        x: ``[B, C, H, W]`` display values (clamped to ``[0, 1]``).
        table: ``[B, C, 256]`` ``f^-1`` at ``code/255`` (positive; a constant).
        lookup: ``"nearest"`` (official straight-through look-up: forward at the nearest code,
            backward the per-code backward difference) or ``"linear"`` (piecewise-linear
            interpolation with its exact derivative, :func:`hdrlab.camera.lut.lut_apply`).

    Returns:
        ``[B, C, H, W]`` linear values ``f^-1(x)``.
    """
    table = table.detach().to(dtype=x.dtype, device=x.device)
    if lookup == "nearest":
        return _NearestCodeLookup.apply(x, table)
    if lookup == "linear":
        return lut_apply(x, table)
    raise ConfigError(f"lookup={lookup!r} is unknown; use one of {LOOKUPS}")


def kim_merge(
    images: torch.Tensor,
    log_times: torch.Tensor,
    table: torch.Tensor,
    *,
    lookup: Lookup = "nearest",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Official log-domain merge with the HDR Toolbox fallback (module docstring, step 5).

    Args:
        images: ``[B, N, C, H, W]`` display values (clamped to ``[0, 1]``).
        log_times: ``[B, N]`` ``ln t_j``.
        table: ``[B, C, 256]`` normalised inverse CRF (:func:`normalize_response`).
        lookup: look-up rule (:func:`lookup_response`).
        weight: ``[B, N, C, H, W]`` merge weights; ``None`` (official): :func:`kim_weight` of the
            clamped images. Either way a constant (detached).

    Returns:
        ``[B, C, H, W]`` radiance ``E``.
    """
    bsz, num = images.shape[:2]
    x = images.clamp(0.0, 1.0)
    linear = torch.stack([lookup_response(x[:, j], table, lookup) for j in range(num)], dim=1)
    log_t = log_times.to(images.dtype)[:, :, None, None, None]
    weight = kim_weight(x.detach()) if weight is None else weight.detach()
    total = weight.sum(dim=1) + WEIGHT_OFFSET
    merged = torch.exp((weight * (torch.log(linear) - log_t)).sum(dim=1) / total)
    rows = torch.arange(bsz, device=images.device)
    shortest = linear[rows, log_times.argmin(dim=1)] / log_t[rows, log_times.argmin(dim=1)].exp()
    longest = linear[rows, log_times.argmax(dim=1)] / log_t[rows, log_times.argmax(dim=1)].exp()
    middle = x.detach()[:, num // 2]
    empty = total <= FALLBACK_THRESHOLD
    bright = (empty & (middle > 0.5)).any(dim=1, keepdim=True)
    dark = (empty & (middle < 0.5)).any(dim=1, keepdim=True)
    merged = torch.where(bright, shortest, merged)
    return torch.where(dark, longest, merged)


class KimSynthesisMerger(StackMerger):
    """Kim et al. (AAAI 2021) HDR synthesis layer: ``ExposureStack -> [B, 3, H, W]`` linear radiance.

    The inverse CRF is recovered from the stack itself per batch element (Grossberg sampling,
    Debevec solve with ``lambda = 20``, colour normalisation; constants) and the stack is merged in
    the log domain with the "Deb97" hat weights (constants); gradients flow to ``stack.images``
    through the look-up of the inverse CRF (module docstring). Output: radiance relative to the
    reference exposure (``t = 2 ** (ev - ev_ref)``), white of the reference near 1.0.

    Args:
        samples: Grossberg levels (official 256).
        smoothness: ``lambda`` of the Debevec solve (official 20).
        lookup: ``"nearest"`` (official straight-through look-up) or ``"linear"`` (piecewise-linear
            interpolation with its exact derivative; smooth, passes ``gradcheck``).
    """

    output_domain = "linear"
    accepts = StackArity(min_exposures=2, reference="any")
    differentiable = True
    pixelwise = False  # per pixel given its response table, but it has no merge_state/merge_part yet

    def __init__(
        self,
        *,
        samples: int = KIM_SAMPLES,
        smoothness: float = KIM_SMOOTHNESS,
        lookup: Lookup = "nearest",
    ) -> None:
        super().__init__()
        if samples < 2:
            raise ConfigError(f"KimSynthesisMerger samples={samples} must be >= 2 (official 256)")
        if smoothness < 0:
            raise ConfigError(f"KimSynthesisMerger smoothness={smoothness} must be >= 0 (official 20)")
        if lookup not in LOOKUPS:
            raise ConfigError(f"KimSynthesisMerger lookup={lookup!r} is unknown; use one of {LOOKUPS}")
        self.samples = int(samples)
        self.smoothness = float(smoothness)
        self.lookup = lookup

    @staticmethod
    def log_times(stack: ExposureStack) -> torch.Tensor:
        """``[B, N]`` ``ln t_j`` with ``t_j = 2 ** (ev_j - ev_ref)``."""
        rel = stack.ev - stack.ev[:, stack.reference : stack.reference + 1]
        return rel * math.log(2.0)

    def recover_table(self, stack: ExposureStack) -> torch.Tensor:
        """Normalised inverse CRF per batch element, ``[B, 3, 256]`` in the images' dtype (a constant).

        Under ``FakeTensorMode`` (shape-only runs: FLOP counts, memory plans) the CPU solve, which
        reads values, is replaced by the gamma-2.2 table of the same shape.
        """
        if is_fake(stack.images):
            curve = torch.linspace(0.0, 1.0, NUM_CODES, dtype=stack.images.dtype, device=stack.images.device)
            return curve.pow(2.2).clamp_min(TABLE_FLOOR).expand(stack.images.shape[0], 3, NUM_CODES)
        codes = to_codes(stack.images).cpu()
        log_t = self.log_times(stack).detach().cpu().double()
        tables = []
        for b in range(codes.shape[0]):
            z = grossberg_samples(codes[b], self.samples)
            tables.append(normalize_response(solve_log_response(z, log_t[b], smoothness=self.smoothness)))
        return working_table(torch.stack(tables), dtype=stack.images.dtype, device=stack.images.device)

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """Merge ``stack`` into ``[B, 3, H, W]`` linear radiance relative to the reference exposure."""
        table = self.recover_table(stack)
        return kim_merge(stack.images, self.log_times(stack), table, lookup=self.lookup)


__all__ = [
    "KimSynthesisMerger", "grossberg_samples", "kim_merge", "kim_weight", "lookup_response",
    "normalize_response", "solve_log_response", "to_codes", "working_table", "LOOKUPS",
]
