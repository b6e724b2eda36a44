"""Camera response functions (CRFs) as look-up tables, and the analytic curves they come from.

Image formation (Debevec & Malik 1997; Liu et al. 2020 SingleHDR §3; DuHDR eq. 1):
``ldr = Q(f(clip(H * t)))`` with ``f`` the CRF mapping linear exposure in ``[0, 1]`` to display
values in ``[0, 1]``. A :class:`CRF` stores ``f`` and ``f^{-1}`` as ``LUT_SIZE``-sample tables
applied with :func:`hdrlab.camera.lut_apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import kornia
import torch
from torch import nn

from hdrlab.camera.lut import LUT_SIZE, invert_monotone_curve, lut_apply, make_monotone, resample_curve
from hdrlab.errors import ConfigError

if TYPE_CHECKING:
    from hdrlab.camera.emor import EMoRBasis


def lut_grid(size: int = LUT_SIZE, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The sample positions ``linspace(0, 1, size)`` of every LUT, ``[size]``."""
    return torch.linspace(0.0, 1.0, size, dtype=dtype, device=device)


def gamma_curve(x: torch.Tensor, g: float | torch.Tensor = 2.2) -> torch.Tensor:
    """Power-law CRF ``f(x) = x^(1/g)``; ``x`` linear in ``[0, 1]`` -> display ``[0, 1]``."""
    return x.clamp(0.0, 1.0).pow(1.0 / g)


def inverse_gamma_curve(y: torch.Tensor, g: float | torch.Tensor = 2.2) -> torch.Tensor:
    """Inverse of :func:`gamma_curve`: ``x = y^g``; display ``[0, 1]`` -> linear ``[0, 1]``."""
    return y.clamp(0.0, 1.0).pow(g)


def sigmoid_gamma_curve(
    x: torch.Tensor, gamma: float | torch.Tensor = 2.2, shoulder: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Parametric sigmoid-gamma CRF ``f(x) = (1 + a) u / (u + a)``, ``u = x^(1/gamma)``, ``a = shoulder``.

    The saturating (Michaelis-Menten / Naka-Rushton) form is the camera curve of HDRCNN's virtual
    camera (Eilertsen et al. 2017, ``f(H) = (1 + a) H^n / (H^n + a)``) with ``n = 1/gamma``; it keeps
    ``f(0) = 0`` and ``f(1) = 1``; ``a -> inf`` gives the pure gamma curve, small ``a`` a strong
    shoulder (highlight compression). ``x`` linear ``[0, 1]`` -> display ``[0, 1]``.
    """
    u = x.clamp(0.0, 1.0).pow(1.0 / gamma)
    return (1.0 + shoulder) * u / (u + shoulder)


def inverse_sigmoid_gamma_curve(
    y: torch.Tensor, gamma: float | torch.Tensor = 2.2, shoulder: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Closed-form inverse of :func:`sigmoid_gamma_curve`: ``u = a y / (1 + a - y)``, ``x = u^gamma``."""
    y = y.clamp(0.0, 1.0)
    u = shoulder * y / (1.0 + shoulder - y)
    return u.clamp(0.0, 1.0).pow(gamma)


def srgb_curve(x: torch.Tensor) -> torch.Tensor:
    """sRGB OETF (IEC 61966-2-1) via ``kornia.color.linear_rgb_to_rgb``; any shape, linear -> display."""
    flat = x.clamp(0.0, 1.0).reshape(1, 1, -1).expand(3, 1, -1)
    return kornia.color.linear_rgb_to_rgb(flat)[0].reshape(x.shape)


def inverse_srgb_curve(y: torch.Tensor) -> torch.Tensor:
    """sRGB EOTF (IEC 61966-2-1) via ``kornia.color.rgb_to_linear_rgb``; any shape, display -> linear."""
    flat = y.clamp(0.0, 1.0).reshape(1, 1, -1).expand(3, 1, -1)
    return kornia.color.rgb_to_linear_rgb(flat)[0].reshape(y.shape)


def _as_lut(lut: torch.Tensor | Sequence[float], name: str) -> torch.Tensor:
    lut = torch.as_tensor(lut, dtype=torch.float32) if not isinstance(lut, torch.Tensor) else lut
    if lut.dim() == 1:
        lut = lut.unsqueeze(0)
    if lut.dim() not in (2, 3) or lut.shape[-2] not in (1, 3) or lut.shape[-1] < 2:
        raise ConfigError(
            f"CRF {name} must be [K], [C, K] or [B, C, K] with C in {{1, 3}} and K >= 2, "
            f"got shape {tuple(lut.shape)}"
        )
    if not torch.is_floating_point(lut):
        lut = lut.float()
    return resample_curve(lut, LUT_SIZE)


class CRF(nn.Module):
    """A camera response ``f`` (linear -> display) and its inverse, as ``LUT_SIZE``-sample tables.

    Buffers:
        forward_lut: ``[C, 1024]`` samples of ``f`` on ``linspace(0, 1, 1024)`` (``C = 1`` shared by
            all colour channels, ``C = 3`` per channel); ``[B, C, 1024]`` holds one CRF per image
            of a batch (see :meth:`stack`).
        inverse_lut: same shape, samples of ``f^{-1}``.

    Build with :meth:`gamma`, :meth:`srgb`, :meth:`linear`, :meth:`sigmoid_gamma`, :meth:`from_lut`,
    :meth:`emor`, :meth:`inverse_emor` or :meth:`stack`.
    """

    forward_lut: torch.Tensor
    inverse_lut: torch.Tensor

    def __init__(
        self,
        *,
        forward_lut: torch.Tensor | None = None,
        inverse_lut: torch.Tensor | None = None,
        name: str = "custom",
    ) -> None:
        super().__init__()
        grid = lut_grid()
        fwd = grid.unsqueeze(0) if forward_lut is None else _as_lut(forward_lut, "forward_lut")
        if inverse_lut is None:
            inv = invert_monotone_curve(fwd.double(), LUT_SIZE).to(fwd.dtype)
        else:
            inv = _as_lut(inverse_lut, "inverse_lut")
            if inv.shape != fwd.shape:
                raise ConfigError(
                    f"CRF inverse_lut {tuple(inv.shape)} must match forward_lut {tuple(fwd.shape)}"
                )
        self.name = name
        self.register_buffer("forward_lut", fwd)
        self.register_buffer("inverse_lut", inv)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls) -> "CRF":
        """Identity response ``f(x) = x`` (a linear camera / RAW)."""
        grid = lut_grid().unsqueeze(0)
        return cls(forward_lut=grid, inverse_lut=grid.clone(), name="linear")

    @classmethod
    def gamma(cls, g: float = 2.2) -> "CRF":
        """Power-law response ``f(x) = x^(1/g)`` (inverse ``y^g``, sampled in closed form)."""
        if not g > 0:
            raise ConfigError(f"CRF.gamma needs g > 0, got {g}")
        grid = lut_grid().unsqueeze(0)
        return cls(forward_lut=gamma_curve(grid, g), inverse_lut=inverse_gamma_curve(grid, g), name=f"gamma{g:g}")

    @classmethod
    def srgb(cls) -> "CRF":
        """The sRGB transfer curve (IEC 61966-2-1; kornia's implementation sampled on the grid)."""
        grid = lut_grid().unsqueeze(0)
        return cls(forward_lut=srgb_curve(grid), inverse_lut=inverse_srgb_curve(grid), name="srgb")

    @classmethod
    def sigmoid_gamma(cls, gamma: float = 2.2, shoulder: float = 1.0) -> "CRF":
        """The parametric family of :func:`sigmoid_gamma_curve` (closed-form inverse)."""
        if not (gamma > 0 and shoulder > 0):
            raise ConfigError(f"CRF.sigmoid_gamma needs gamma > 0 and shoulder > 0, got {gamma}, {shoulder}")
        grid = lut_grid(dtype=torch.float64).unsqueeze(0)
        fwd = sigmoid_gamma_curve(grid, gamma, shoulder).float()
        inv = inverse_sigmoid_gamma_curve(grid, gamma, shoulder).float()
        return cls(forward_lut=fwd, inverse_lut=inv, name=f"sigmoid_gamma(g={gamma:.3g},a={shoulder:.3g})")

    @classmethod
    def from_lut(
        cls, forward_lut: torch.Tensor, inverse_lut: torch.Tensor | None = None, *, name: str = "lut"
    ) -> "CRF":
        """A CRF from sampled curves ``[K]``, ``[C, K]`` or ``[B, C, K]`` on ``linspace(0, 1, K)``.

        ``K != 1024`` is resampled piecewise-linearly; a missing ``inverse_lut`` is computed with
        :func:`invert_monotone_curve` (the forward curve must be non-decreasing).
        """
        return cls(forward_lut=forward_lut, inverse_lut=inverse_lut, name=name)

    @classmethod
    def emor(cls, weights: torch.Tensor | Sequence[float], basis: "EMoRBasis") -> "CRF":
        """EMoR forward model ``f = make_monotone(f0 + sum_k w_k h_k)`` (Grossberg & Nayar 2003).

        Args:
            weights: ``[k]`` (shared curve) or ``[C, k]`` / ``[B, C, k]`` with ``k <= basis.k``.
            basis: a loaded :class:`~hdrlab.camera.emor.EMoRBasis`.
        """
        w = torch.as_tensor(weights, dtype=basis.mean.dtype, device=basis.mean.device)
        fwd = make_monotone(basis.curve(w))
        return cls(forward_lut=fwd, name="emor")

    @classmethod
    def inverse_emor(cls, weights: torch.Tensor | Sequence[float], basis: "EMoRBasis") -> "CRF":
        """Inverse-EMoR model ``f^{-1} = make_monotone(g0 + sum_k w_k hinv_k)`` (SingleHDR's
        Linearization-Net head, K = 11); the forward curve is its numerical inverse."""
        w = torch.as_tensor(weights, dtype=basis.inv_mean.dtype, device=basis.inv_mean.device)
        inv = _as_lut(make_monotone(basis.inverse_curve(w)), "inverse_lut")
        fwd = invert_monotone_curve(inv.double(), LUT_SIZE).to(inv.dtype)
        return cls(forward_lut=fwd, inverse_lut=inv, name="inverse_emor")

    @classmethod
    def stack(cls, crfs: Sequence["CRF"]) -> "CRF":
        """One batched CRF (``[B, C, 1024]`` buffers) from ``B`` unbatched CRFs, image ``b`` using ``crfs[b]``.

        Mixed channel counts are broadcast to 3 channels.
        """
        if not crfs:
            raise ConfigError("CRF.stack needs at least one CRF")
        if any(c.forward_lut.dim() != 2 for c in crfs):
            raise ConfigError("CRF.stack takes unbatched CRFs ([C, K] tables)")
        channels = max(c.num_channels for c in crfs)
        fwd = torch.stack([c.forward_lut.expand(channels, -1) for c in crfs])
        inv = torch.stack([c.inverse_lut.expand(channels, -1) for c in crfs])
        return cls(forward_lut=fwd, inverse_lut=inv, name="stack")

    # ------------------------------------------------------------------ use
    @property
    def num_channels(self) -> int:
        """Number of colour channels the tables hold (1 = shared curve, 3 = per channel)."""
        return int(self.forward_lut.shape[-2])

    def forward(self, x_linear: torch.Tensor) -> torch.Tensor:
        """Apply ``f``: linear exposure ``[B, 3, H, W]`` / ``[3, H, W]`` (clamped to [0, 1]) -> display [0, 1]."""
        return lut_apply(x_linear.clamp(0.0, 1.0), self.forward_lut)

    def inverse(self, y_display: torch.Tensor) -> torch.Tensor:
        """Apply ``f^{-1}``: display values ``[B, 3, H, W]`` / ``[3, H, W]`` in [0, 1] -> linear [0, 1]."""
        return lut_apply(y_display.clamp(0.0, 1.0), self.inverse_lut)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, lut={tuple(self.forward_lut.shape)}"
