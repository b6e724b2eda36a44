"""The differentiable camera: radiance -> exposure -> clipping -> CRF -> quantisation (-> noise, JPEG).

Image formation (Debevec & Malik 1997 eq. 1; Liu et al. 2020 SingleHDR §3.1; DuHDR eq. 1)::

    ldr = JPEG(Q_bits(f(clip(H * 2**ev + n, 0, 1))))

with ``H`` linear radiance (times the input's exposure, see ``docs/architecture.md``), ``ev`` the
exposure in stops relative to the input, ``n`` optional Poisson-Gaussian sensor noise in the
linear domain, ``f`` the camera response (:class:`hdrlab.camera.CRF`), ``Q_bits`` rounding to
``2**bits - 1`` codes. Everything is batched torch, device-agnostic, and differentiable where it
is meaningful (quantisation and JPEG optionally pass gradients straight through).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from hdrlab.camera.crf import CRF
from hdrlab.errors import ConfigError
from hdrlab.stack import ExposureStack


def _per_image(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar, ``[B]`` or broadcastable tensor, shaped to broadcast against ``x [B, C, H, W]``."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == 1 and x.dim() == 4:
        v = v.view(-1, 1, 1, 1)
    return v


def expose(hdr: torch.Tensor, ev: float | torch.Tensor) -> torch.Tensor:
    """Scale linear radiance by the exposure time ``t = 2**ev``: ``hdr * 2**ev``.

    Args:
        hdr: linear radiance ``[B, 3, H, W]`` or ``[3, H, W]``, non-negative.
        ev: stops relative to the input, a scalar, ``[B]`` (one per image) or a tensor
            broadcastable to ``hdr``.

    Returns:
        Linear exposure, same shape as ``hdr`` (differentiable w.r.t. ``hdr`` and ``ev``).
    """
    return hdr * torch.exp2(_per_image(ev, hdr))


def clip_exposure(x: torch.Tensor) -> torch.Tensor:
    """Sensor saturation: clamp linear exposure to ``[0, 1]`` (gradient 1 inside, 0 outside)."""
    return x.clamp(0.0, 1.0)


def quantize(x: torch.Tensor, *, bits: int = 8, straight_through: bool = True) -> torch.Tensor:
    """Round display values in ``[0, 1]`` (clamped) to ``2**bits - 1`` codes: ``round(x L) / L``.

    The error is at most ``0.5 / L``. With ``straight_through`` the backward pass is the
    identity (Bengio et al. 2013 straight-through estimator); otherwise the gradient is 0.
    """
    if not 1 <= bits <= 16:
        raise ConfigError(f"quantize: bits={bits} must be in 1..16")
    levels = float(2**bits - 1)
    q = torch.round(x.clamp(0.0, 1.0) * levels) / levels
    return x + (q - x).detach() if straight_through else q


def add_sensor_noise(
    x: torch.Tensor,
    *,
    shot: float | torch.Tensor = 1e-4,
    read: float | torch.Tensor = 2e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Heteroscedastic Gaussian approximation of Poisson-Gaussian sensor noise (Foi et al. 2008).

    ``y = relu(x + sqrt(shot * x + read**2) * N(0, 1))`` per pixel and channel, in the linear
    domain before clipping and the CRF (SingleHDR adds its shot + read noise at the same place
    and applies the same ReLU). ``shot`` is the variance gain of the signal-dependent part
    (default ``1e-4``: std 0.007 at x = 0.5), ``read`` the std of the signal-independent part.

    Args:
        x: linear exposure ``[B, C, H, W]`` or ``[C, H, W]``, non-negative.
        shot: scalar or ``[B]`` (per image).
        read: scalar or ``[B]`` (per image).
        generator: random generator (its device is used to draw, the result moves to ``x``'s).

    Returns:
        Noisy linear exposure, same shape; differentiable w.r.t. ``x`` (reparameterised).
    """
    device = generator.device if generator is not None else x.device
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    var = _per_image(shot, x) * x.clamp_min(0.0) + _per_image(read, x) ** 2
    return torch.relu(x + torch.sqrt(var.clamp_min(1e-20)) * z)


def jpeg_compress(
    x: torch.Tensor, *, quality: int | Sequence[int] = 90, straight_through: bool = True
) -> torch.Tensor:
    """JPEG round trip of display images via ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` (libjpeg).

    Args:
        x: display RGB in ``[0, 1]``, ``[B, 3, H, W]`` or ``[3, H, W]``; coded as 8-bit.
        quality: 1..100, one for all images or one per image (SingleHDR spreads 90..100 over a batch).
        straight_through: backward pass is the identity; otherwise the output carries no gradient.

    Returns:
        Decoded images in ``[0, 1]`` on ``x``'s device and dtype.
    """
    unbatched = x.dim() == 3
    xb = x.unsqueeze(0) if unbatched else x
    if xb.dim() != 4 or xb.shape[1] not in (1, 3):
        raise ConfigError(f"jpeg_compress needs [B,3,H,W] or [3,H,W], got shape {tuple(x.shape)}")
    qualities = [int(quality)] * xb.shape[0] if isinstance(quality, (int, float)) else [int(q) for q in quality]
    if len(qualities) != xb.shape[0] or not all(1 <= q <= 100 for q in qualities):
        raise ConfigError(f"jpeg_compress: quality {quality} must be in 1..100, one value or one per image")
    codes = torch.round(xb.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu()
    decoded = [decode_jpeg(encode_jpeg(img, quality=q)) for img, q in zip(codes, qualities)]
    y = torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255.0
    y = y[0] if unbatched else y
    return x + (y - x).detach() if straight_through else y


def render_ldr(
    hdr: torch.Tensor,
    crf: CRF,
    *,
    ev: float | torch.Tensor = 0.0,
    bits: int | None = 8,
    noise: Mapping[str, Any] | None = None,
    jpeg_quality: int | Sequence[int] | None = None,
    straight_through: bool = True,
) -> dict[str, torch.Tensor]:
    """Render the LDR a camera with response ``crf`` records of ``hdr`` at exposure ``ev``.

    Args:
        hdr: linear radiance ``[B, 3, H, W]`` or ``[3, H, W]``, non-negative.
        crf: the camera response (shared, per channel or batched ``[B, C, 1024]``).
        ev: stops relative to the input, scalar or ``[B]``.
        bits: quantisation bit depth, ``None`` for no quantisation.
        noise: ``None`` or keyword arguments of :func:`add_sensor_noise` (``shot``, ``read``,
            ``generator``).
        jpeg_quality: ``None`` (no JPEG) or the quality of :func:`jpeg_compress`.
        straight_through: straight-through gradients for quantisation and JPEG.

    Returns:
        ``ldr_float``: ``crf(clip(hdr * 2**ev))`` before noise and quantisation, display [0, 1];
        ``ldr``: the recorded image (noise, quantisation, JPEG applied), display [0, 1];
        ``clip_mask``: ``[B, 1, H, W]`` float, 1 where the max channel of ``hdr * 2**ev`` is ``>= 1``;
        ``hdr_clipped``: ``clip(hdr * 2**ev)``, linear [0, 1].
    """
    if hdr.dim() not in (3, 4) or hdr.shape[-3] != 3:
        raise ConfigError(f"render_ldr needs hdr [B,3,H,W] or [3,H,W], got shape {tuple(hdr.shape)}")
    exposed = expose(hdr, ev)
    clip_mask = (exposed.amax(dim=-3, keepdim=True) >= 1.0).to(hdr.dtype)
    hdr_clipped = clip_exposure(exposed)
    ldr_float = crf(hdr_clipped)
    if noise is not None:
        unknown = set(noise) - {"shot", "read", "generator"}
        if unknown:
            raise ConfigError(f"render_ldr noise keys {sorted(unknown)} unknown; use shot, read, generator")
        ldr = crf(clip_exposure(add_sensor_noise(exposed, **noise)))
    else:
        ldr = ldr_float
    if bits is not None:
        ldr = quantize(ldr, bits=bits, straight_through=straight_through)
    if jpeg_quality is not None:
        ldr = jpeg_compress(ldr, quality=jpeg_quality, straight_through=straight_through)
    return {"ldr_float": ldr_float, "ldr": ldr, "clip_mask": clip_mask, "hdr_clipped": hdr_clipped}


def linearize(ldr: torch.Tensor, crf: CRF) -> torch.Tensor:
    """Undo the camera response: ``crf^{-1}(ldr)``, display [0, 1] -> linear [0, 1] (same shape)."""
    return crf.inverse(ldr)


def drtmo_evs(T: int = 8, tau: float = math.sqrt(2.0)) -> list[float]:
    """DrTMO's bracket: ``ev = k log2(tau)`` for ``k = -T..T`` (``2T + 1`` exposures, ascending,
    rounded to 12 decimals).

    Endo, Kanamori, Mitani 2017 (official Chainer code, ``main.py``, from the project page
    http://www.npal.cs.tsukuba.ac.jp/~endo/projects/DrTMO/): each of the two networks
    predicts ``T = 8`` images at ``tau^{+-k}``, ``tau = sqrt(2)`` (0.5 EV per slot), assembled as
    ``[down_8 .. down_1, input, up_1 .. up_8]`` = 17 images spanning +-4 EV.
    """
    if T < 0 or tau <= 0:
        raise ConfigError(f"drtmo_evs needs T >= 0 and tau > 0, got T={T}, tau={tau}")
    step = math.log2(tau)
    return [round(k * step, 12) for k in range(-T, T + 1)]  # 12 decimals: log2(sqrt 2) = 0.5 exactly


def synthesize_stack(
    hdr: torch.Tensor,
    ev: Sequence[float] | torch.Tensor,
    crf: CRF,
    *,
    bits: int | None = 8,
    reference_ev: float = 0.0,
    straight_through: bool = True,
) -> ExposureStack:
    """Render an exposure bracket of ``hdr`` with :func:`render_ldr`.

    Args:
        hdr: linear radiance ``[B, 3, H, W]`` (``[3, H, W]`` is treated as ``B = 1``).
        ev: exposures in stops, a list / ``[N]`` tensor (same for every image) or ``[B, N]``.
        crf: the camera response; recorded in the returned stack.
        bits: quantisation bit depth (``None``: none).
        reference_ev: the stack's ``reference`` is the exposure nearest to this ev (must be the
            same index for every image).

    Returns:
        :class:`~hdrlab.stack.ExposureStack` with ``images [B, N, 3, H, W]`` sorted by ascending ev.
    """
    if hdr.dim() == 3:
        hdr = hdr.unsqueeze(0)
    if hdr.dim() != 4 or hdr.shape[1] != 3:
        raise ConfigError(f"synthesize_stack needs hdr [B,3,H,W], got shape {tuple(hdr.shape)}")
    b = hdr.shape[0]
    evs = torch.as_tensor(ev, dtype=hdr.dtype, device=hdr.device)
    if evs.dim() == 1:
        evs = evs.unsqueeze(0).expand(b, -1)
    if evs.dim() != 2 or evs.shape[0] != b or evs.shape[1] < 1:
        raise ConfigError(f"synthesize_stack: ev must be a list, [N] or [B={b}, N], got shape {tuple(evs.shape)}")
    evs = evs.sort(dim=1).values
    n_ev = evs.shape[1]
    if crf.forward_lut.dim() == 2 and (hdr[0].numel() % 64 == 0 or b * n_ev == 1):
        images = _render_bracket(hdr, evs, crf, bits=bits, straight_through=straight_through)
    else:
        images = torch.stack(
            [
                render_ldr(hdr, crf, ev=evs[:, n], bits=bits, straight_through=straight_through)["ldr"]
                for n in range(n_ev)
            ],
            dim=1,
        )
    ref = (evs - reference_ev).abs().argmin(dim=1)
    if bool((ref != ref[0]).any()):
        raise ConfigError(
            f"synthesize_stack: the exposure nearest reference_ev={reference_ev} has different indices "
            f"{ref.tolist()} across the batch; give every image the same ev layout"
        )
    return ExposureStack(images=images, ev=evs, reference=int(ref[0]), crf=crf)


def _render_bracket(
    hdr: torch.Tensor, evs: torch.Tensor, crf: CRF, *, bits: int | None, straight_through: bool
) -> torch.Tensor:
    """``render_ldr(hdr, crf, ev=evs[:, n], ...)["ldr"]`` for every ``n``, stacked ``[B, N, 3, H, W]``, in one pass.

    The same element-wise operations as the per-exposure loop of :func:`synthesize_stack` on all
    ``B * N`` images at once (the exposure factors come from the same ``exp2`` calls), so the
    result is bit-identical; the caller only takes this path when every image holds a multiple of
    64 values (vectorised kernels then split each image exactly as they do alone).
    """
    b, n_ev = evs.shape
    scale = torch.stack([torch.exp2(evs[:, n]) for n in range(n_ev)], dim=1)  # [B, N], as expose() computes it
    x = hdr.unsqueeze(1) * scale.view(b, n_ev, 1, 1, 1)
    ldr = crf(clip_exposure(x.reshape(b * n_ev, *hdr.shape[1:])))
    if bits is not None:
        ldr = quantize(ldr, bits=bits, straight_through=straight_through)
    return ldr.view(b, n_ev, *hdr.shape[1:])


def auto_exposure_ev(
    hdr: torch.Tensor, *, clipped_fraction: float | torch.Tensor
) -> torch.Tensor:
    """The ev at which a given fraction of pixels clips (max channel ``>= 1`` after exposure).

    With ``m`` the per-pixel max channel and ``n = round(p * N)`` the wanted number of clipped
    pixels, the threshold ``q`` is the midpoint between the ``(N - n)``-th and ``(N - n + 1)``-th
    smallest ``m`` (so that exactly ``n`` pixels reach ``m 2**ev >= 1`` barring ties), and
    ``ev = -log2(q)``. ``p = 0`` puts the brightest pixel at 2/3; an all-black image gets a large
    finite ev. Sorting-based, batched, no host synchronisation.

    Args:
        hdr: linear radiance ``[B, 3, H, W]`` or ``[3, H, W]``.
        clipped_fraction: fraction ``p`` in ``[0, 1]``, scalar or ``[B]``.

    Returns:
        ``[B]`` ev per image (a 0-d tensor for ``[3, H, W]`` input).
    """
    unbatched = hdr.dim() == 3
    x = hdr.unsqueeze(0) if unbatched else hdr
    if x.dim() != 4:
        raise ConfigError(f"auto_exposure_ev needs [B,3,H,W] or [3,H,W], got shape {tuple(hdr.shape)}")
    m = x.amax(dim=1).flatten(1)
    b, n_pix = m.shape
    p = torch.as_tensor(clipped_fraction, dtype=m.dtype, device=m.device).expand(b)
    ordered = m.sort(dim=1).values
    top = ordered[:, -1:]
    ext = torch.cat([torch.zeros_like(top), ordered, 2.0 * top], dim=1)
    idx = (n_pix - torch.round(p.clamp(0.0, 1.0) * n_pix)).long().unsqueeze(1)
    q = 0.5 * (ext.gather(1, idx) + ext.gather(1, idx + 1))
    ev = -torch.log2(q.clamp_min(torch.finfo(m.dtype).tiny)).squeeze(1)
    return ev[0] if unbatched else ev
