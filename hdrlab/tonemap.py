"""Display mappings for linear HDR images: mu-law, Reinhard, exposure+gamma, previews.

All functions are pure, differentiable where it makes sense, and take ``[..., 3, H, W]``
tensors (``[3, H, W]`` or ``[B, 3, H, W]``) in the project's linear radiance domain, where
the input LDR clips at ``1.0`` (see ``docs/architecture.md``).

**The project's default display mapping** (:func:`display`, used for LPIPS inputs, CF-Net
style display targets and previews) is fixed to

    ``display(x) = srgb_oetf(clamp(R_w(x), 0, 1))``,  ``R_w(v) = v (1 + v / w^2) / (1 + v)``

applied per channel, with ``w = 16`` (Reinhard et al. 2002, eq. 4, "extended" operator with
white point ``w``, here per channel and *without* the log-average key: the radiance
convention already normalises exposure, the input clip level is 1.0). Properties: it is
pointwise and image-independent (so prediction and reference see the same curve), maps
``0 -> 0``, the clip level ``1 -> 0.502`` (linear, sRGB code 0.735), mid grey
``0.18 -> 0.153`` (sRGB 0.43), and radiance ``16`` (4 stops over the clip) to white, so
hallucinated highlights stay visible. The sRGB OETF is ``kornia.color.linear_rgb_to_rgb``.
Keep this stable: changing it changes every LPIPS number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb

from hdrlab.camera import luminance
from hdrlab.errors import ConfigError

__all__ = [
    "DISPLAY_WHITE",
    "display",
    "display_inverse",
    "exposure_brackets",
    "exposure_gamma",
    "false_color_log_luminance",
    "inverse_mu_law",
    "mu_law",
    "reinhard",
    "reinhard_extended",
    "to_uint8",
]

#: white point (linear radiance, input clip = 1) of the project's default :func:`display` mapping.
DISPLAY_WHITE: float = 16.0


def mu_law(x: torch.Tensor, mu: float = 5000.0) -> torch.Tensor:
    r"""mu-law range compressor :math:`T(x) = \log(1 + \mu x) / \log(1 + \mu)`.

    Kalantari & Ramamoorthi 2017, eq. 2 (mu = 5000). The input is clamped to ``[0, 1]`` first
    (the metric convention: images are normalised so that 1 is the peak).

    Args:
        x: linear image ``[..., 3, H, W]``, nominally in ``[0, 1]``.
        mu: compression strength (> 0).

    Returns:
        Tone-mapped image of the same shape in ``[0, 1]``.
    """
    return torch.log1p(mu * x.clamp(0.0, 1.0)) / math.log1p(mu)


def inverse_mu_law(y: torch.Tensor, mu: float = 5000.0) -> torch.Tensor:
    r"""Inverse of :func:`mu_law`: :math:`x = ((1 + \mu)^y - 1) / \mu`.

    Args:
        y: mu-law encoded image ``[..., 3, H, W]`` in ``[0, 1]`` (clamped).
        mu: the same mu used for encoding.

    Returns:
        Linear image in ``[0, 1]``.
    """
    return torch.expm1(y.clamp(0.0, 1.0) * math.log1p(mu)) / mu


def reinhard(
    x: torch.Tensor, *, key: float = 0.18, white: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    r"""Global Reinhard et al. 2002 operator on luminance, with log-average key.

    Per image: :math:`\bar L = \exp(\mathrm{mean}\log(\epsilon + L))` (eq. 1),
    :math:`L_m = \frac{a}{\bar L} L` (eq. 2), :math:`L_d = L_m (1 + L_m / L_{white}^2) / (1 + L_m)`
    (eq. 4; eq. 3 ``L_m / (1 + L_m)`` when ``white`` is None). Colour is kept by scaling RGB with
    :math:`L_d / L`; the result is clamped to ``[0, 1]``.

    Args:
        x: linear image ``[3, H, W]`` or ``[B, 3, H, W]``.
        key: the key value ``a``.
        white: ``L_white`` in scaled luminance units (after the key scaling), or None.
        eps: the small offset of eq. 1 (also guards the division by ``L``).

    Returns:
        Display-referred **linear** image in ``[0, 1]`` (apply an OETF for viewing), same shape.
    """
    lum = luminance(x.clamp_min(0.0))  # [..., 1, H, W]
    log_avg = torch.exp(torch.log(eps + lum).mean(dim=(-3, -2, -1), keepdim=True))
    scaled = key / log_avg * lum
    if white is None:
        mapped = scaled / (1.0 + scaled)
    else:
        mapped = scaled * (1.0 + scaled / (white * white)) / (1.0 + scaled)
    return (x.clamp_min(0.0) * mapped / (lum + eps)).clamp(0.0, 1.0)


def reinhard_extended(x: torch.Tensor, *, white: float = DISPLAY_WHITE) -> torch.Tensor:
    r"""Per-channel extended Reinhard curve :math:`v (1 + v / w^2) / (1 + v)`, clamped to [0, 1].

    Reinhard et al. 2002, eq. 4, applied to each linear channel with no key scaling.

    Args:
        x: linear image ``[..., 3, H, W]`` (non-negative; negatives are clamped to 0).
        white: the value ``w`` mapped to 1.

    Returns:
        Display-referred linear image in ``[0, 1]``, same shape.
    """
    v = x.clamp_min(0.0)
    return (v * (1.0 + v / (white * white)) / (1.0 + v)).clamp(0.0, 1.0)


def exposure_gamma(x: torch.Tensor, *, ev: float = 0.0, gamma: float = 2.2) -> torch.Tensor:
    r"""Simulated exposure and gamma display: :math:`\mathrm{clamp}(2^{ev} x, 0, 1)^{1/\gamma}`.

    Args:
        x: linear image ``[..., 3, H, W]``.
        ev: exposure offset in stops (positive = brighter, ``t = 2 ** ev``).
        gamma: display gamma.

    Returns:
        Display-referred image in ``[0, 1]``, same shape.
    """
    v = (x * (2.0**ev)).clamp(0.0, 1.0)
    # the tiny offset keeps the gradient of v ** (1/gamma) finite at 0
    return torch.where(v > 0, v.clamp_min(1e-12) ** (1.0 / gamma), torch.zeros_like(v))


def display(x: torch.Tensor) -> torch.Tensor:
    """The project's default display mapping (see the module docstring; keep stable).

    ``srgb_oetf(reinhard_extended(x, white=16))``.

    Args:
        x: linear radiance ``[..., 3, H, W]`` (input clip level = 1).

    Returns:
        Display-referred sRGB image in ``[0, 1]``, same shape.
    """
    return linear_rgb_to_rgb(reinhard_extended(x, white=DISPLAY_WHITE)).clamp(0.0, 1.0)


def display_inverse(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`display` on ``[0, 1]`` (e.g. a fused display label as radiance).

    ``display(x) = srgb_oetf(R_w(x))`` with ``R_w(v) = v (1 + v / w^2) / (1 + v)``, ``w = 16``. The
    inverse decodes sRGB (``kornia.color.rgb_to_linear_rgb``) to ``d`` and solves the quadratic
    ``v^2 / w^2 + (1 - d) v - d = 0`` for its non-negative root, written without cancellation as
    ``v = 2 d / ((1 - d) + sqrt((1 - d)^2 + 4 d / w^2))``.

    Args:
        y: display-referred image ``[..., 3, H, W]`` (values outside ``[0, 1]`` are clamped).

    Returns:
        Linear radiance ``[..., 3, H, W]`` in ``[0, 16]`` (display value 1 -> the white point 16,
        display 0.735 -> 1, the input clip level), same shape and dtype.
    """
    d = rgb_to_linear_rgb(y.clamp(0.0, 1.0)).clamp(0.0, 1.0)
    rest = 1.0 - d
    return 2.0 * d / (rest + torch.sqrt(rest * rest + 4.0 * d / (DISPLAY_WHITE * DISPLAY_WHITE)))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Convert a display-referred image to a channels-last ``uint8`` array (W&B / PNG).

    wandb 0.31 no longer rescales float images, so previews must be ``uint8``.

    Args:
        x: display-referred image ``[3, H, W]`` or ``[B, 3, H, W]`` in ``[0, 1]`` (clamped).

    Returns:
        ``numpy.uint8`` array ``[H, W, 3]`` (or ``[B, H, W, 3]``), values ``round(255 x)``.

    Raises:
        ConfigError: if ``x`` is not ``[3, H, W]`` / ``[B, 3, H, W]``.
    """
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ConfigError(f"to_uint8 expects [3,H,W] or [B,3,H,W], got shape {tuple(x.shape)}")
    u8 = (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return u8.movedim(-3, -1).cpu().numpy()


def _colormap_lut(name: str) -> torch.Tensor:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as err:
        raise ConfigError(f"unknown matplotlib colormap {name!r}; use e.g. 'viridis' or 'turbo'") from err
    return torch.as_tensor(cmap(np.linspace(0.0, 1.0, 256))[:, :3], dtype=torch.float32)


def false_color_log_luminance(
    x: torch.Tensor, *, stops: tuple[float, float] = (-8.0, 8.0), cmap: str = "viridis"
) -> torch.Tensor:
    """False-colour visualisation of log2 luminance over a fixed range (colour-bar friendly).

    ``t = (log2(L) - stops[0]) / (stops[1] - stops[0])`` clamped to ``[0, 1]``, where stop 0 is
    luminance 1.0 (the input clip level), then looked up in a 256-entry matplotlib colormap
    (nearest entry). A colour bar for the figure is ``cmap`` from ``stops[0]`` to ``stops[1]``.

    Args:
        x: linear radiance ``[3, H, W]`` or ``[B, 3, H, W]``.
        stops: the (min, max) of log2 luminance shown; values outside saturate.
        cmap: matplotlib colormap name (``"viridis"``, ``"turbo"``, ...).

    Returns:
        Display-referred RGB ``[..., 3, H, W]`` in ``[0, 1]`` (not differentiable).
    """
    lo, hi = float(stops[0]), float(stops[1])
    if not hi > lo:
        raise ConfigError(f"false_color_log_luminance stops must be (low, high) with low < high, got {stops}")
    lut = _colormap_lut(cmap).to(x.device)
    lum = luminance(x.detach().float().clamp_min(0.0)).squeeze(-3)
    t = ((torch.log2(lum.clamp_min(2.0**lo)) - lo) / (hi - lo)).clamp(0.0, 1.0)
    idx = (t * 255.0).round().long()
    return lut[idx].movedim(-1, -3)


def exposure_brackets(
    x: torch.Tensor, evs: Sequence[float] = (-4, -2, 0, 2, 4), *, gamma: float = 2.2
) -> torch.Tensor:
    """Display a linear image at several exposures (:func:`exposure_gamma` per ev).

    Args:
        x: linear radiance ``[3, H, W]`` or ``[B, 3, H, W]``.
        evs: exposure offsets in stops, returned in the given order.
        gamma: display gamma.

    Returns:
        Display-referred stack ``[N, 3, H, W]`` (or ``[B, N, 3, H, W]``) in ``[0, 1]``.
    """
    return torch.stack([exposure_gamma(x, ev=float(ev), gamma=gamma) for ev in evs], dim=-4)
