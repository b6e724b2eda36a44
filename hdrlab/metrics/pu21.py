"""PU21 perceptually uniform encoding of absolute luminance (Mantiuk & Azimi 2021).

R. K. Mantiuk and M. Azimi, "PU21: A novel perceptually uniform encoding for adapting existing
quality metrics for HDR", Picture Coding Symposium 2021. The encoding is

    ``V(L) = p7 * (((p1 + p2 * L^p4) / (1 + p3 * L^p4)) ^ p5 - p6)``

with ``L`` in cd/m^2 clamped to ``[0.005, 10000]`` (the reference ``pu21_encoder`` convention).
The "banding_glare" parameters are the recommended default. ``V(0.005) = 0``,
``V(100) = 256.4`` (hence PSNR peak 256 in ``pu21_metric``), ``V(10000) = 595.4``.

The same formula is in ``pycvvdp.utils.PU`` (used only as an independent reference in tests);
this module is plain torch, differentiable and float64-capable.
"""

from __future__ import annotations

import torch

from hdrlab.errors import ConfigError

__all__ = ["PU21_L_MAX", "PU21_L_MIN", "PU21_PARAMS", "PU21_PSNR_PEAK", "pu21_decode", "pu21_encode"]

#: fitted parameters p1..p7 of the PU21 variants (Mantiuk & Azimi 2021, Table 1 / reference code).
PU21_PARAMS: dict[str, tuple[float, ...]] = {
    "banding": (1.070275272, 0.4088273932, 0.153224308, 0.2520326168, 1.063512885, 1.14115047, 521.4527484),
    "banding_glare": (
        0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204, 596.3148142,
    ),
    "peaks": (1.043882782, 0.6459495343, 0.3194584211, 0.374025247, 1.114783422, 1.095360363, 384.9217577),
    "peaks_glare": (816.885024, 1479.463946, 0.001253215609, 0.9329636822, 0.06746643971, 1.573435413, 419.6006374),
}
#: luminance range (cd/m^2) of the encoding; inputs are clamped to it.
PU21_L_MIN: float = 0.005
PU21_L_MAX: float = 10000.0
#: the PSNR peak used by the reference ``pu21_metric`` (about V(100 cd/m^2)).
PU21_PSNR_PEAK: float = 256.0


def _params(kind: str) -> tuple[float, ...]:
    if kind not in PU21_PARAMS:
        raise ConfigError(f"unknown PU21 variant {kind!r}; choose one of {sorted(PU21_PARAMS)}")
    return PU21_PARAMS[kind]


def pu21_encode(L_nits: torch.Tensor, *, kind: str = "banding_glare") -> torch.Tensor:
    """Encode absolute luminance (or linear RGB in cd/m^2) with PU21.

    Args:
        L_nits: absolute linear values in cd/m^2, any shape (luminance ``[..., 1, H, W]`` or RGB).
            Values are clamped to ``[0.005, 10000]``; the gradient is zero outside.
        kind: PU21 variant, default ``"banding_glare"``.

    Returns:
        PU values of the same shape and dtype, about ``[0, 595.4]`` for "banding_glare".
    """
    p1, p2, p3, p4, p5, p6, p7 = _params(kind)
    y = L_nits.clamp(PU21_L_MIN, PU21_L_MAX) ** p4
    return p7 * (((p1 + p2 * y) / (1.0 + p3 * y)) ** p5 - p6)


def pu21_decode(V: torch.Tensor, *, kind: str = "banding_glare") -> torch.Tensor:
    """Inverse of :func:`pu21_encode` on its range.

    Args:
        V: PU21 values, any shape.
        kind: PU21 variant used for encoding.

    Returns:
        Absolute linear values in cd/m^2 (about ``[0.005, 10000]``), same shape and dtype.
    """
    p1, p2, p3, p4, p5, p6, p7 = _params(kind)
    vp = (V / p7 + p6).clamp_min(0.0) ** (1.0 / p5)
    return ((vp - p1).clamp_min(0.0) / (p2 - p3 * vp)) ** (1.0 / p4)
