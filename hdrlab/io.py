"""HDR and LDR image file I/O.

Canonical in-memory HDR form (see ``docs/architecture.md``): a ``torch.float32`` tensor
``[3, H, W]`` of linear, scene-referred Rec.709 RGB that is finite and non-negative.
LDR images are ``[3, H, W]`` float32 in ``[0, 1]`` (display-referred code values).

Formats and the library that decodes them:

* OpenEXR (``.exr``) through the ``OpenEXR`` 3.x package: half/float/uint channels, scanline,
  tiled and mip-mapped files (level 0), any compression the library knows (incl. DWAA/DWAB),
  luminance/chroma ``Y, RY, BY`` files (chroma upsampled, then converted with the file's
  luminance weights as in OpenEXR's ``RgbaYca``), ``Y``-only files (grey copied to 3 channels),
  multi-view files (the default view = first name of ``multiView``, i.e. the un-prefixed
  channels), the ``chromaticities`` attribute (converted to Rec.709 / D65 with a Bradford
  white adaptation), alpha dropped (RGB is kept premultiplied, as stored).
* Radiance RGBE (``.hdr``, ``.pic``, ``.rgbe``) and PFM (``.pfm``) through OpenCV; headers are
  parsed here first so that absurd sizes fail fast instead of allocating.
* 8/16-bit PNG, JPEG and TIFF through OpenCV; EXIF ``Orientation`` and ``ExposureTime`` through
  PIL (a damaged EXIF block is ignored with a warning). PNG chunks (lengths, critical-chunk CRCs,
  ``IEND``) and JPEG marker segments (lengths, scans, the end-of-image marker) are walked here
  first: libjpeg decodes a JPEG cut short with grey rows and only prints "Premature end of JPEG
  file", and OpenCV is slow on PNG chunk lengths beyond the data, so both are errors before any
  decoding. The declared size (PNG ``IHDR``, JPEG frame header, TIFF through PIL) is checked
  against :data:`MAX_SIDE` / :data:`MAX_PIXELS` and, for PNG, JPEG, PFM and Radiance files, against
  the decoded size.

Every failure to read (missing, empty, truncated or corrupt file, OpenCV / OpenEXR errors) is an
:class:`~hdrlab.errors.HDRIOError` naming the file; ``tests/test_fuzz_readers.py`` checks this on
mutated files of every format.

Negative values. Half-float noise, chroma reconstruction (``Y, RY, BY``) and gamut mapping
(``chromaticities``) leave small negative values in real files. Measured on the shared real set
(31 files), the most negative value relative to the image maximum is 4.3e-3 (``CrissyField.exr``,
luminance/chroma), 1.9e-3 (``Flowers.exr``), and at most 5.1e-5 for RGB files (``Desk.exr``).
Such values are clamped to 0 with a warning giving the count. A value below
``-negative_tolerance * max(image)`` is not noise but signed data (difference images, normals
and motion vectors have negatives of the order of the maximum) and raises
:class:`~hdrlab.errors.HDRIOError`. The tolerance is relative to the image maximum so that it
does not depend on the (arbitrary) radiance scale of the file; the default ``0.05`` (5 % of the
peak) is 11x above the worst real-file value and 20x below the magnitude of signed data.
``strict=True`` rejects any negative value.

All writers are atomic: they write a temporary file in the target folder and ``os.replace``
it onto the target, so a failure never leaves a half-written or temporary file behind. The
written file gets the mode an ordinary ``open`` would give it (``0o666`` less the umask, see
:func:`default_file_mode`), not the ``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import OpenEXR
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_linear_rgb

from hdrlab.errors import HDRIOError

__all__ = [
    "EXR_COMPRESSIONS",
    "HDR_EXTENSIONS",
    "LDR_EXTENSIONS",
    "MAX_PIXELS",
    "REC709_PRIMARIES",
    "D65_WHITE",
    "LDRImage",
    "bradford_adaptation_matrix",
    "chromaticities_to_rec709_matrix",
    "default_file_mode",
    "exr_header_size",
    "luminance_weights_from_chromaticities",
    "pfm_header_size",
    "radiance_header_size",
    "read_exif",
    "read_hdr",
    "read_ldr",
    "rgb_to_xyz_matrix",
    "upsample_chroma",
    "write_exr",
    "write_hdr_image",
    "write_pfm",
    "write_png",
    "write_radiance_hdr",
    "yca_to_rgb",
]

#: Extensions :func:`read_hdr` accepts.
HDR_EXTENSIONS = (".exr", ".hdr", ".pic", ".rgbe", ".pfm")
#: Extensions :func:`read_ldr` accepts.
LDR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Largest image (pixels) a reader accepts; 2**28 px is 3.2 GB as float32 RGB.
MAX_PIXELS = 1 << 28
#: Largest side (pixels) a reader accepts.
MAX_SIDE = 1 << 17
#: EXR compressions :func:`write_exr` offers.
EXR_COMPRESSIONS = {
    "none": OpenEXR.NO_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
}
#: Rec.709 / sRGB primaries (x, y) for R, G, B (ITU-R BT.709-6, table 1 item 1.3).
REC709_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
#: CIE D65 white point (x, y) (ITU-R BT.709-6, item 1.4).
D65_WHITE = (0.3127, 0.3290)
#: Bradford cone-response matrix (Lam 1985), rows = rho, gamma, beta.
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]],
    dtype=np.float64,
)
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (_EXR_MAGIC, "OpenEXR"),
    (b"#?", "Radiance RGBE"),
    (b"PF", "PFM"),
    (b"Pf", "PFM"),
)


# --------------------------------------------------------------------------- helpers


def _file_kind(head: bytes) -> str:
    """Names the format of a file from its first bytes (``"unknown"`` when none matches)."""
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    return "unknown"


def _check_readable(path: str | os.PathLike, expected: str) -> tuple[Path, bytes]:
    """Checks that ``path`` exists, is non-empty and starts with the signature of ``expected``.

    Returns:
        The path and its first 64 bytes.
    """
    path = Path(path)
    if not path.exists():
        raise HDRIOError(f"{path}: file not found; check the path (cwd is {Path.cwd()}).")
    if not path.is_file():
        raise HDRIOError(f"{path}: is not a regular file; pass an image file path.")
    if path.stat().st_size == 0:
        raise HDRIOError(f"{path}: file is empty (0 bytes); re-export or re-download it.")
    with path.open("rb") as fh:
        head = fh.read(64)
    kind = _file_kind(head)
    if kind != expected:
        raise HDRIOError(
            f"{path}: the extension says {expected} but the content is {kind} data; "
            "rename the file to its real format or re-export it."
        )
    return path, head


def _check_size(path: Path, height: int, width: int) -> None:
    """Rejects empty and absurd image sizes declared by a header before anything is decoded."""
    if height <= 0 or width <= 0:
        raise HDRIOError(f"{path}: header declares an empty image ({height}x{width} pixels).")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise HDRIOError(
            f"{path}: header declares an absurd size {height}x{width} pixels (limit {MAX_SIDE} per side, "
            f"{MAX_PIXELS} pixels); the file is corrupt."
        )


def _finalize_hdr(
    rgb: np.ndarray, path: Path, *, strict: bool, negative_tolerance: float
) -> torch.Tensor:
    """Validates a decoded ``[H, W, 3]`` linear image and returns the canonical ``[3, H, W]`` tensor.

    Non-finite values raise; negatives below ``-negative_tolerance * max`` (or any negative when
    ``strict``) raise; the remaining small negatives are clamped to 0 with a warning.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise HDRIOError(f"{path}: decoded to shape {rgb.shape}, expected a non-empty [H, W, 3] image.")
    finite = np.isfinite(rgb)
    if not finite.all():
        bad = int((~finite).sum())
        raise HDRIOError(
            f"{path}: {bad} NaN/Inf values; the file is broken (fix it upstream, e.g. clamp in the renderer)."
        )
    negative = rgb < 0
    n_neg = int(negative.sum())
    if n_neg:
        low = float(rgb.min())
        peak = float(rgb.max())
        if strict:
            raise HDRIOError(f"{path}: {n_neg} negative values (min {low:.3g}) and strict=True.")
        if low < -negative_tolerance * max(peak, 0.0):
            if peak > 0:
                step = 10.0 ** (math.floor(math.log10(-low / peak)) - 1)  # round up to 2 significant digits
                need = float(f"{math.ceil(-low / peak / step) * step:.2g}")
                fix = (f"clamp it to >= 0 where it is made, or clamp it anyway with a tolerance >= {need:g} "
                       f"(hdrlab eval --negative_tolerance {need:g}; read_hdr(negative_tolerance={need:g}))")
            else:
                fix = "no value is positive, so no tolerance helps; fix the file where it is made"
            raise HDRIOError(
                f"{path}: negative values down to {low:.3g}, beyond the noise tolerance "
                f"{negative_tolerance:g} x max ({peak:.3g}); this is signed data, not a radiance map; {fix}."
            )
        warnings.warn(
            f"{path.name}: clamped {n_neg} small negative values (min {low:.3g}, max {peak:.3g}) to 0.",
            stacklevel=3,
        )
        np.maximum(rgb, 0.0, out=rgb)
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())


# --------------------------------------------------------------------------- colour maths


def rgb_to_xyz_matrix(
    primaries: tuple[tuple[float, float], ...], white: tuple[float, float]
) -> np.ndarray:
    """Normalised primary matrix (SMPTE RP 177-1993, eq. 1-4): linear RGB -> CIE XYZ.

    Args:
        primaries: ``((xr, yr), (xg, yg), (xb, yb))`` chromaticities of the RGB primaries.
        white: ``(xw, yw)`` chromaticity of the white point (RGB = 1 maps to it with Y = 1).

    Returns:
        ``[3, 3]`` float64 matrix ``M`` with ``XYZ = M @ RGB``.
    """
    xyz = np.array([[x / y, 1.0, (1.0 - x - y) / y] for x, y in primaries], dtype=np.float64).T
    xw, yw = white
    white_xyz = np.array([xw / yw, 1.0, (1.0 - xw - yw) / yw], dtype=np.float64)
    scale = np.linalg.solve(xyz, white_xyz)
    return xyz * scale[None, :]


def bradford_adaptation_matrix(src_white: tuple[float, float], dst_white: tuple[float, float]) -> np.ndarray:
    """Bradford chromatic adaptation (von Kries in the Bradford cone space) between two whites.

    ``M = B^-1 diag(B w_dst / B w_src) B`` with ``B`` the Bradford matrix and ``w`` the white XYZ
    (Y = 1).

    Returns:
        ``[3, 3]`` float64 matrix acting on XYZ.
    """

    def _xyz(w: tuple[float, float]) -> np.ndarray:
        return np.array([w[0] / w[1], 1.0, (1.0 - w[0] - w[1]) / w[1]], dtype=np.float64)

    gain = (_BRADFORD @ _xyz(dst_white)) / (_BRADFORD @ _xyz(src_white))
    return np.linalg.inv(_BRADFORD) @ np.diag(gain) @ _BRADFORD


def chromaticities_to_rec709_matrix(
    chromaticities: tuple[float, ...] | None, *, adaptation: str = "bradford"
) -> np.ndarray:
    """Matrix from the RGB of an EXR ``chromaticities`` attribute to linear Rec.709 (D65).

    Args:
        chromaticities: the 8 floats ``(xr, yr, xg, yg, xb, yb, xw, yw)`` of the EXR attribute;
            ``None`` means Rec.709 (the OpenEXR default), giving the identity.
        adaptation: ``"bradford"`` adapts the file white to D65 (file white stays neutral);
            ``"none"`` keeps absolute XYZ (file white may get a tint).

    Returns:
        ``[3, 3]`` float64 matrix ``M`` with ``rgb709 = M @ rgb_file``.
    """
    if chromaticities is None:
        return np.eye(3)
    c = [float(v) for v in chromaticities]
    primaries = ((c[0], c[1]), (c[2], c[3]), (c[4], c[5]))
    white = (c[6], c[7])
    to_xyz = rgb_to_xyz_matrix(primaries, white)
    from_xyz = np.linalg.inv(rgb_to_xyz_matrix(REC709_PRIMARIES, D65_WHITE))
    if adaptation == "bradford":
        return from_xyz @ bradford_adaptation_matrix(white, D65_WHITE) @ to_xyz
    if adaptation == "none":
        return from_xyz @ to_xyz
    raise HDRIOError(f"unknown chromatic adaptation {adaptation!r}; use 'bradford' or 'none'.")


def luminance_weights_from_chromaticities(chromaticities: tuple[float, ...] | None) -> np.ndarray:
    """Luminance weights ``Yw`` (the Y row of the RGB->XYZ matrix), as OpenEXR's ``computeYw``.

    Rec.709 chromaticities (the default when ``None``) give ``(0.2126, 0.7152, 0.0722)``.

    Returns:
        ``[3]`` float64 weights summing to 1.
    """
    if chromaticities is None:
        primaries, white = REC709_PRIMARIES, D65_WHITE
    else:
        c = [float(v) for v in chromaticities]
        primaries, white = ((c[0], c[1]), (c[2], c[3]), (c[4], c[5])), (c[6], c[7])
    return rgb_to_xyz_matrix(primaries, white)[1]


def upsample_chroma(channel: np.ndarray, height: int, width: int, x_sampling: int, y_sampling: int) -> np.ndarray:
    """Bilinearly upsamples a subsampled EXR channel to the full data window.

    OpenEXR stores sample ``(i, j)`` of a channel with sampling ``(xs, ys)`` at pixel
    ``(i * ys, j * xs)`` (data windows starting at 0), so full-resolution pixel ``(y, x)`` reads
    the sample grid at ``(y / ys, x / xs)`` (clamped at the border).

    Args:
        channel: ``[h, w]`` samples (``h = ceil(height / ys)``, ``w = ceil(width / xs)``).
        height, width: full-resolution size.
        x_sampling, y_sampling: the channel's ``xSampling`` / ``ySampling``.

    Returns:
        ``[height, width]`` float32.
    """
    src = torch.from_numpy(np.ascontiguousarray(channel, dtype=np.float32))[None, None]
    h, w = src.shape[-2:]
    ys = torch.arange(height, dtype=torch.float64) / y_sampling
    xs = torch.arange(width, dtype=torch.float64) / x_sampling
    # grid_sample with align_corners=True maps -1/+1 to the centres of the first/last samples
    gy = (2.0 * ys / max(h - 1, 1) - 1.0) if h > 1 else torch.zeros_like(ys)
    gx = (2.0 * xs / max(w - 1, 1) - 1.0) if w > 1 else torch.zeros_like(xs)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).to(torch.float32)[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


def yca_to_rgb(y: np.ndarray, ry: np.ndarray, by: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Luminance/chroma to RGB (OpenEXR ``RgbaYca``: ``RY = (R - Y) / Y``, ``BY = (B - Y) / Y``).

    ``R = (RY + 1) Y``, ``B = (BY + 1) Y``, ``G = (Y - wr R - wb B) / wg``; pixels with
    ``RY = BY = 0`` are grey (``R = G = B = Y``) exactly.

    Args:
        y, ry, by: ``[H, W]`` full-resolution planes (linear).
        weights: ``[3]`` luminance weights ``(wr, wg, wb)`` of the file's primaries.

    Returns:
        ``[H, W, 3]`` float32 linear RGB in the file's primaries.
    """
    y = y.astype(np.float64)
    r = (ry.astype(np.float64) + 1.0) * y
    b = (by.astype(np.float64) + 1.0) * y
    g = (y - weights[0] * r - weights[2] * b) / weights[1]
    return np.stack([r, g, b], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------- OpenEXR


def _exr_window_size(header: dict[str, Any]) -> tuple[int, int]:
    lo, hi = header["dataWindow"]
    return int(hi[1]) - int(lo[1]) + 1, int(hi[0]) - int(lo[0]) + 1


def exr_header_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of the data window of an OpenEXR file (first part), read from the header only."""
    path, _ = _check_readable(path, "OpenEXR")
    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            return _exr_window_size(dict(exr.header()))
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
        raise HDRIOError(f"{path}: unreadable OpenEXR header ({err}); the file is corrupt or truncated.") from err


def _default_view_channels(header: dict[str, Any], names: list[str]) -> dict[str, str]:
    """Maps base channel names (``R``, ``Y``, ...) to the stored names of the default view.

    Un-prefixed channels belong to the default view (OpenEXR multi-view convention); channels
    prefixed with the default view's name (first entry of ``multiView``) are accepted too.
    """
    chosen = {n: n for n in names if "." not in n}
    views = header.get("multiView") or []
    if views and isinstance(views, (list, tuple)) and isinstance(views[0], str):
        prefix = f"{views[0]}."
        for n in names:
            if n.startswith(prefix) and "." not in n[len(prefix):]:
                chosen.setdefault(n[len(prefix):], n)
    return chosen


def _exr_chromaticities(path: Path, header: dict[str, Any]) -> tuple[float, ...] | None:
    """The 8 floats of the ``chromaticities`` attribute (``None`` when absent); raises when malformed."""
    chroma = header.get("chromaticities")
    if chroma is None:
        return None
    try:
        values = tuple(float(v) for v in chroma)
    except (TypeError, ValueError) as err:
        raise HDRIOError(f"{path}: malformed chromaticities attribute ({err}); the file is corrupt.") from err
    if len(values) != 8 or not all(math.isfinite(v) for v in values):
        raise HDRIOError(f"{path}: malformed chromaticities attribute {values}; the file is corrupt.")
    return values


def _read_exr_rgb(path: Path, adaptation: str) -> np.ndarray:
    """Decodes the default-view colour of an EXR file to ``[H, W, 3]`` float32 linear Rec.709."""
    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            header = dict(exr.header())  # copied: the File clears its dicts on close
        height, width = _exr_window_size(header)
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as err:
        raise HDRIOError(f"{path}: unreadable OpenEXR header ({err}); the file is corrupt or truncated.") from err
    _check_size(path, height, width)
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            header = dict(exr.header())
            channels = dict(exr.channels())
    except (RuntimeError, ValueError, OSError, KeyError, IndexError) as err:
        raise HDRIOError(f"{path}: OpenEXR could not decode the pixels ({err}); the file is corrupt or truncated.") from err
    if not channels:
        raise HDRIOError(f"{path}: OpenEXR decoded no channels; the file is corrupt or truncated.")
    names = _default_view_channels(header, list(channels))

    def plane(name: str) -> np.ndarray:
        ch = channels[names[name]]
        data = np.asarray(ch.pixels, dtype=np.float32)
        xs, ysamp = int(ch.xSampling), int(ch.ySampling)
        if data.shape == (height, width):
            return data
        if xs > 1 or ysamp > 1:
            return upsample_chroma(data, height, width, xs, ysamp)
        raise HDRIOError(f"{path}: channel {names[name]!r} has shape {data.shape}, expected {(height, width)}.")

    chroma = _exr_chromaticities(path, header)
    if all(c in names for c in ("R", "G", "B")):
        rgb = np.stack([plane("R"), plane("G"), plane("B")], axis=-1)
    elif all(c in names for c in ("Y", "RY", "BY")):
        with np.errstate(all="ignore"):
            try:
                weights = luminance_weights_from_chromaticities(chroma)
            except (np.linalg.LinAlgError, ZeroDivisionError) as err:
                raise HDRIOError(f"{path}: degenerate chromaticities {chroma} ({err}); the file is corrupt.") from err
        if not (np.isfinite(weights).all() and weights[1] != 0):
            raise HDRIOError(f"{path}: degenerate chromaticities {chroma}; the file is corrupt.")
        rgb = yca_to_rgb(plane("Y"), plane("RY"), plane("BY"), weights)
    elif "Y" in names:
        rgb = np.repeat(plane("Y")[..., None], 3, axis=-1)
    else:
        raise HDRIOError(
            f"{path}: no colour channels in the default view (found {sorted(channels)}); "
            "hdrlab reads R,G,B or Y[,RY,BY] images."
        )
    if chroma is not None:
        with np.errstate(all="ignore"):
            try:
                matrix = chromaticities_to_rec709_matrix(chroma, adaptation=adaptation)
            except (np.linalg.LinAlgError, ZeroDivisionError) as err:
                raise HDRIOError(f"{path}: degenerate chromaticities {chroma} ({err}); the file is corrupt.") from err
        if not np.isfinite(matrix).all():
            raise HDRIOError(f"{path}: degenerate chromaticities {chroma}; the file is corrupt.")
        if not np.allclose(matrix, np.eye(3), atol=1e-6):
            rgb = (rgb.astype(np.float64) @ matrix.T).astype(np.float32)
    return rgb


# --------------------------------------------------------------------------- Radiance / PFM


_RADIANCE_RES = re.compile(rb"^([-+])([YX]) (\d+) ([-+])([YX]) (\d+)$")


def radiance_header_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` from the resolution line (``-Y H +X W``) of a Radiance RGBE file."""
    path, _ = _check_readable(path, "Radiance RGBE")
    with path.open("rb") as fh:
        blob = fh.read(1 << 16)
    lines = blob.split(b"\n")
    for i, line in enumerate(lines):
        if line.strip() == b"" and i + 1 < len(lines):
            res = lines[i + 1].strip()
            m = _RADIANCE_RES.match(res)
            if m is None:
                break
            if m.group(1, 2, 4, 5) != (b"-", b"Y", b"+", b"X"):
                raise HDRIOError(
                    f"{path}: Radiance orientation {res.decode(errors='replace')!r} is not supported; "
                    "re-save it with the standard '-Y H +X W' orientation."
                )
            return int(m.group(3)), int(m.group(6))
    raise HDRIOError(f"{path}: no valid resolution line ('-Y H +X W') in the Radiance header; the file is corrupt.")


def pfm_header_size(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(H, W, C)`` from a PFM header (``PF`` colour, ``Pf`` grey); checks the data length."""
    path, _ = _check_readable(path, "PFM")
    with path.open("rb") as fh:
        tokens: list[bytes] = []
        while len(tokens) < 4:
            line = fh.readline(256)
            if not line:
                break
            tokens += line.split()
        offset = fh.tell()
    if len(tokens) < 4 or tokens[0] not in (b"PF", b"Pf"):
        raise HDRIOError(f"{path}: malformed PFM header; the file is corrupt.")
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError as err:
        raise HDRIOError(f"{path}: malformed PFM header ({err}); the file is corrupt.") from err
    if scale == 0 or not math.isfinite(scale):
        raise HDRIOError(f"{path}: PFM scale {scale} is invalid (must be non-zero; sign gives endianness).")
    _check_size(path, height, width)
    channels = 3 if tokens[0] == b"PF" else 1
    need = offset + 4 * height * width * channels
    if path.stat().st_size < need:
        raise HDRIOError(f"{path}: truncated PFM ({path.stat().st_size} bytes, header needs {need}).")
    return height, width, channels


#: JPEG markers without a length field: TEM (0x01), RST0..7 (0xD0..0xD7), SOI (0xD8)
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD9)))


def _check_jpeg_structure(path: Path) -> tuple[int, int]:
    """Walks the marker segments of a JPEG file from SOI to EOI and raises if the walk breaks off.

    libjpeg (inside OpenCV) decodes a file cut short with its missing rows grey and only prints
    "Premature end of JPEG file", so the structure is checked here: every segment's length must fit
    in the file, a marker must follow every segment, the entropy-coded data of each scan must end
    at a marker (``FF`` followed by neither ``00`` stuffing nor a restart marker), and an EOI
    (``FF D9``) must come after at least one scan. Data after the EOI (padding, an appended
    preview) is accepted; an embedded thumbnail inside an APP segment is skipped with its segment.

    Returns:
        ``(H, W)`` from the first start-of-frame segment.
    """
    data = path.read_bytes()
    size = len(data)

    def broken(why: str) -> HDRIOError:
        return HDRIOError(f"{path}: truncated or corrupt JPEG ({why}); re-export or re-copy it.")

    pos, scans, frame = 2, 0, None
    while True:
        if pos >= size:
            raise broken(f"the data ends at byte {size} without the end-of-image marker FF D9")
        if data[pos] != 0xFF:
            raise broken(f"no segment marker at byte {pos}")
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            raise broken(f"the data ends at byte {size} without the end-of-image marker FF D9")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            if scans == 0 or frame is None:
                raise broken("end-of-image marker before any frame header and image data")
            return frame
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0x00:
            raise broken(f"stuffed byte FF 00 outside a scan at byte {pos - 2}")
        if pos + 2 > size:
            raise broken(f"the data ends at byte {size} inside the segment FF {marker:02X}")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > size:
            raise broken(f"segment FF {marker:02X} at byte {pos - 2} declares {length} bytes, {size - pos} are left")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and frame is None and length >= 7:
            frame = ((data[pos + 3] << 8) | data[pos + 4], (data[pos + 5] << 8) | data[pos + 6])
        pos += length
        if marker != 0xDA:
            continue
        scans += 1
        while True:  # entropy-coded data: up to the next FF that is not stuffing or a restart marker
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= size:
                raise broken(f"the data ends at byte {size} inside scan {scans}, without the end-of-image marker FF D9")
            nxt = data[pos + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                pos += 2
                continue
            break


def _check_png_structure(path: Path) -> tuple[int, int]:
    """Walks the chunks of a PNG file from the signature to ``IEND`` and raises if the walk breaks off.

    Every chunk's length must fit in the file (and below ``2**31``, PNG spec 5.3), the first chunk
    must be ``IHDR``, critical chunks (upper-case first letter) must match their CRC-32, and an
    ``IEND`` must come after at least one ``IDAT``; data after ``IEND`` is accepted. Ancillary chunks
    with a bad CRC are left to the decoder (libpng skips them). The walk makes a file cut short an
    error before OpenCV, which is slow on declared chunk lengths beyond the end of the data.

    Returns:
        ``(H, W)`` from ``IHDR``.
    """
    data = path.read_bytes()
    size = len(data)

    def broken(why: str) -> HDRIOError:
        return HDRIOError(f"{path}: truncated or corrupt PNG ({why}); re-export or re-copy it.")

    pos, frame, idat = 8, None, False
    while True:
        if pos + 8 > size:
            raise broken(f"the data ends at byte {size} without the IEND chunk")
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        if not ctype.isalpha():
            raise broken(f"invalid chunk type {ctype!r} at byte {pos}")
        if length >= 1 << 31 or pos + 12 + length > size:
            raise broken(f"chunk {ctype.decode()} at byte {pos} declares {length} bytes, {max(size - pos - 12, 0)} are left")
        body = data[pos + 8:pos + 8 + length]
        if frame is None and ctype != b"IHDR":
            raise broken(f"first chunk is {ctype.decode()}, not IHDR")
        if ctype[:1].isupper() and zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(
            data[pos + 8 + length:pos + 12 + length], "big"
        ):
            raise broken(f"CRC mismatch in chunk {ctype.decode()} at byte {pos}")
        if ctype == b"IHDR":
            if length != 13 or frame is not None:
                raise broken("malformed IHDR chunk")
            frame = (int.from_bytes(body[4:8], "big"), int.from_bytes(body[0:4], "big"))
        elif ctype == b"IDAT":
            idat = True
        elif ctype == b"IEND":
            if not idat:
                raise broken("IEND before any IDAT image data")
            return frame
        pos += 12 + length


def _ldr_header_size(path: Path, kind: str) -> tuple[int, int]:
    """``(H, W)`` declared by a PNG (``IHDR``), JPEG (start of frame) or TIFF header, before decoding.

    JPEG files get the full marker walk of :func:`_check_jpeg_structure`. TIFF sizes come from PIL's
    header parser; a TIFF that PIL cannot parse is left to OpenCV (``(1, 1)`` is returned).
    """
    if kind == "JPEG":
        return _check_jpeg_structure(path)
    if kind == "PNG":
        return _check_png_structure(path)
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as err:
        raise HDRIOError(f"{path}: header declares an absurd size ({err}); the file is corrupt.") from err
    except Exception:  # noqa: BLE001 - PIL's TIFF parser raises many types; OpenCV decides then
        return 1, 1
    return height, width


def _cv2_read(path: Path, expected: tuple[int, int] | None = None) -> np.ndarray:
    """Decodes ``path`` with OpenCV; ``expected`` is the ``(H, W)`` its header declares, if parsed here."""
    try:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise HDRIOError(f"{path}: OpenCV could not decode the pixels ({reason}); the file is corrupt.") from err
    if img is not None and expected is not None and tuple(img.shape[:2]) != tuple(expected):
        raise HDRIOError(
            f"{path}: decoded {img.shape[0]}x{img.shape[1]} pixels but the header declares "
            f"{expected[0]}x{expected[1]}; the file is corrupt."
        )
    if img is None:
        raise HDRIOError(f"{path}: OpenCV could not decode the pixels; the file is corrupt or truncated.")
    return img


def _to_rgb(img: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV ``[H, W]`` / ``[H, W, 1|3|4]`` BGR(A) -> ``[H, W, 3]`` RGB (grey copied, alpha dropped)."""
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise HDRIOError(f"{path}: unsupported channel layout {img.shape}; expected grey, RGB or RGBA.")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img[..., 2::-1]


# --------------------------------------------------------------------------- public readers


def read_hdr(
    path: str | os.PathLike,
    *,
    strict: bool = False,
    negative_tolerance: float = 0.05,
    adaptation: str = "bradford",
) -> torch.Tensor:
    """Reads an HDR file (``.exr``, ``.hdr``/``.pic``/``.rgbe``, ``.pfm``) to the canonical form.

    Args:
        path: the file.
        strict: reject any negative value instead of clamping small ones.
        negative_tolerance: negatives down to ``-negative_tolerance * max(image)`` are clamped to 0
            with a warning; lower ones raise (see the module docstring for the default ``0.05``).
        adaptation: white adaptation used with an EXR ``chromaticities`` attribute
            (``"bradford"`` or ``"none"``).

    Returns:
        ``[3, H, W]`` float32 linear Rec.709 RGB, finite and ``>= 0`` (``H, W`` = EXR data window).

    Raises:
        HDRIOError: missing/empty/truncated/corrupt file, wrong or unknown extension, absurd or
            empty size, no colour channels, NaN/Inf, negatives beyond the tolerance.
    """
    ext = Path(path).suffix.lower()
    if ext == ".exr":
        p, _ = _check_readable(path, "OpenEXR")
        rgb = _read_exr_rgb(p, adaptation)
    elif ext in (".hdr", ".pic", ".rgbe"):
        p, _ = _check_readable(path, "Radiance RGBE")
        size = radiance_header_size(p)
        _check_size(p, *size)
        rgb = _to_rgb(_cv2_read(p, size), p)
    elif ext == ".pfm":
        p, _ = _check_readable(path, "PFM")
        rgb = _to_rgb(_cv2_read(p, pfm_header_size(p)[:2]), p)
    else:
        raise HDRIOError(
            f"{path}: unknown HDR extension {ext!r}; read_hdr supports {', '.join(HDR_EXTENSIONS)} "
            "(use read_ldr for PNG/JPEG/TIFF)."
        )
    return _finalize_hdr(rgb, p, strict=strict, negative_tolerance=negative_tolerance)


@dataclass(frozen=True)
class LDRImage:
    """A decoded LDR file.

    Attributes:
        image: ``[3, H, W]`` float32 in ``[0, 1]`` (display-referred, or linear when read with
            ``srgb_decode=True``), EXIF orientation applied.
        bit_depth: bits per channel of the stored samples (8 or 16).
        exposure_time: EXIF ``ExposureTime`` in seconds, ``None`` when absent.
        path: the file read.
    """

    image: torch.Tensor
    bit_depth: int
    exposure_time: float | None
    path: Path


_LDR_KIND = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
#: EXIF orientation (1..8) -> numpy operations that display the stored [H, W, C] array upright.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def read_exif(path: str | os.PathLike) -> tuple[int, float | None]:
    """EXIF ``(Orientation, ExposureTime)`` of an image via PIL (``(1, None)`` when absent)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on every malformed EXIF entry it skips
            with Image.open(path) as im:
                exif = im.getexif()
                orientation = exif.get(0x0112, 1)
                exposure = exif.get_ifd(0x8769).get(0x829A)
                if exposure is None:
                    exposure = exif.get(0x829A)
    except (UnidentifiedImageError, OSError):
        return 1, None
    except Exception as err:  # noqa: BLE001 - PIL's EXIF parser raises many types on a damaged block
        warnings.warn(f"{Path(path).name}: unreadable EXIF block ({type(err).__name__}: {err}); ignored.",
                      stacklevel=2)
        return 1, None
    try:
        orientation = int(orientation or 1)
    except (TypeError, ValueError, OverflowError):
        orientation = 1
    try:
        exposure_time = float(exposure) if exposure is not None else None
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        exposure_time = None
    if exposure_time is not None and not (math.isfinite(exposure_time) and exposure_time > 0):
        exposure_time = None
    return (orientation if orientation in _ORIENT else 1), exposure_time


def read_ldr(path: str | os.PathLike, *, srgb_decode: bool = False) -> LDRImage:
    """Reads an 8/16-bit PNG, JPEG or TIFF.

    Args:
        path: the file.
        srgb_decode: apply the sRGB EOTF (IEC 61966-2-1, ``kornia.color.rgb_to_linear_rgb``) so the
            result is linear; otherwise the code values are returned as stored, divided by
            ``2**bits - 1``.

    Returns:
        :class:`LDRImage` with ``image`` ``[3, H, W]`` float32 in ``[0, 1]``, EXIF orientation applied.

    Raises:
        HDRIOError: missing/empty/truncated/corrupt file (a JPEG without its end-of-image marker, a
            PNG without ``IEND`` or with a bad critical-chunk CRC), absurd declared size, wrong or
            unknown extension, float data.
    """
    ext = Path(path).suffix.lower()
    if ext not in _LDR_KIND:
        raise HDRIOError(
            f"{path}: unknown LDR extension {ext!r}; read_ldr supports {', '.join(LDR_EXTENSIONS)} "
            "(use read_hdr for EXR/HDR/PFM)."
        )
    p, _ = _check_readable(path, _LDR_KIND[ext])
    size = _ldr_header_size(p, _LDR_KIND[ext])
    _check_size(p, *size)
    img = _cv2_read(p, size if _LDR_KIND[ext] != "TIFF" else None)
    if img.dtype == np.uint8:
        bits, scale = 8, 255.0
    elif img.dtype == np.uint16:
        bits, scale = 16, 65535.0
    else:
        raise HDRIOError(f"{p}: sample type {img.dtype} is not 8/16-bit integer; use read_hdr for float data.")
    orientation, exposure_time = read_exif(p)
    rgb = _ORIENT[orientation](_to_rgb(img, p))
    image = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(scale)).permute(2, 0, 1)
    image = image.contiguous()
    if srgb_decode:
        image = rgb_to_linear_rgb(image).clamp(0.0, 1.0)
    return LDRImage(image=image, bit_depth=bits, exposure_time=exposure_time, path=p)


# --------------------------------------------------------------------------- writers


def _as_hwc(img: torch.Tensor | np.ndarray, path: Path, *, allow_int: bool = False) -> np.ndarray:
    """Converts a ``[3, H, W]`` tensor or ``[H, W, 3]`` array to a contiguous ``[H, W, 3]`` array."""
    if isinstance(img, torch.Tensor):
        if img.ndim != 3 or img.shape[0] != 3:
            raise HDRIOError(f"{path}: cannot write a tensor of shape {tuple(img.shape)}; expected [3, H, W].")
        arr = img.detach().cpu().permute(1, 2, 0).numpy()
    elif isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3:
            raise HDRIOError(f"{path}: cannot write an array of shape {img.shape}; expected [H, W, 3].")
        arr = img
    else:
        raise HDRIOError(f"{path}: cannot write a {type(img).__name__}; pass a torch.Tensor or numpy array.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise HDRIOError(f"{path}: cannot write an empty image of shape {arr.shape}.")
    if np.issubdtype(arr.dtype, np.integer) and allow_int:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise HDRIOError(f"{path}: cannot write dtype {arr.dtype}; pass float data.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        raise HDRIOError(f"{path}: refusing to write {int((~finite).sum())} NaN/Inf values.")
    if (arr < 0).any():
        raise HDRIOError(
            f"{path}: refusing to write {int((arr < 0).sum())} negative values (min {float(arr.min()):.3g}); "
            "clamp to >= 0 first."
        )
    return arr


def default_file_mode() -> int:
    """The mode a newly created file gets from ``open``: ``0o666`` less the process umask.

    :func:`tempfile.mkstemp` creates ``0o600`` files whatever the umask, so every atomic writer
    (temporary file + ``os.replace``) ``chmod``s its temporary file to this mode before the rename.
    The umask can only be read by setting it, so this sets it and restores it at once; the umask is
    process-wide, so a thread creating a file in between would see ``0``, which is acceptable for
    the output files this package writes.
    """
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Runs ``write(tmp)`` on a temporary file next to ``path`` and moves it onto ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise HDRIOError(f"{path}: folder {path.parent} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if os.path.getsize(tmp) == 0:
            raise HDRIOError(f"{path}: the encoder wrote nothing.")
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except HDRIOError:
        _remove(tmp)
        raise
    except Exception as err:
        _remove(tmp)
        raise HDRIOError(f"{path}: writing failed ({err}).") from err
    return path


def _remove(tmp: str) -> None:
    try:
        os.remove(tmp)
    except FileNotFoundError:
        pass


def _cv2_write(tmp: str, bgr: np.ndarray, params: list[int] | None = None) -> None:
    if not cv2.imwrite(tmp, bgr, params or []):
        raise HDRIOError(f"{tmp}: OpenCV refused to write the image.")


def write_exr(
    path: str | os.PathLike, img: torch.Tensor | np.ndarray, *, half: bool = False, compression: str = "zip"
) -> Path:
    """Writes a linear RGB image as a scanline OpenEXR file (channels ``R, G, B``).

    Args:
        path: target ``.exr``.
        img: ``[3, H, W]`` tensor or ``[H, W, 3]`` array, finite and ``>= 0``.
        half: store 16-bit half floats (relative error <= 2**-11) instead of float32 (lossless).
        compression: ``"zip"``, ``"piz"`` or ``"none"`` (all lossless).

    Returns:
        The written path.
    """
    path = Path(path)
    if compression not in EXR_COMPRESSIONS:
        raise HDRIOError(f"{path}: unknown EXR compression {compression!r}; use one of {sorted(EXR_COMPRESSIONS)}.")
    arr = _as_hwc(img, path)
    if half:
        if float(arr.max()) > 65504.0:
            raise HDRIOError(f"{path}: values up to {float(arr.max()):.3g} overflow half floats (max 65504); use half=False.")
        arr = arr.astype(np.float16)
    header = {"compression": EXR_COMPRESSIONS[compression], "type": OpenEXR.scanlineimage}
    channels = {c: np.ascontiguousarray(arr[..., i]) for i, c in enumerate("RGB")}

    def write(tmp: str) -> None:
        with OpenEXR.File(header, channels) as exr:
            exr.write(tmp)

    return _atomic_write(path, write)


def write_radiance_hdr(path: str | os.PathLike, img: torch.Tensor | np.ndarray) -> Path:
    """Writes a Radiance RGBE ``.hdr`` through OpenCV (error <= ~0.8 % of each pixel's max channel)."""
    path = Path(path)
    arr = _as_hwc(img, path)
    return _atomic_write(path, lambda tmp: _cv2_write(tmp, np.ascontiguousarray(arr[..., ::-1])))


def write_pfm(path: str | os.PathLike, img: torch.Tensor | np.ndarray) -> Path:
    """Writes a colour PFM (float32, lossless) through OpenCV."""
    path = Path(path)
    arr = _as_hwc(img, path)
    return _atomic_write(path, lambda tmp: _cv2_write(tmp, np.ascontiguousarray(arr[..., ::-1])))


def write_png(path: str | os.PathLike, img: torch.Tensor | np.ndarray, *, bits: int = 8) -> Path:
    """Writes an 8- or 16-bit PNG.

    Args:
        path: target ``.png``.
        img: ``[3, H, W]`` tensor or ``[H, W, 3]`` array: float in ``[0, 1]`` (quantised as
            ``round(x * (2**bits - 1))``) or integers already at the target depth
            (uint8 for 8 bits, uint8/uint16 for 16 bits; uint8 is widened by x257).
        bits: 8 or 16.

    Returns:
        The written path.
    """
    path = Path(path)
    if bits not in (8, 16):
        raise HDRIOError(f"{path}: PNG bit depth {bits} is not supported; use 8 or 16.")
    arr = _as_hwc(img, path, allow_int=True)
    top = (1 << bits) - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint8:
            q = arr.astype(dtype) * (1 if bits == 8 else 257)
        elif arr.dtype == np.uint16 and bits == 16:
            q = arr
        else:
            raise HDRIOError(f"{path}: integer dtype {arr.dtype} does not fit a {bits}-bit PNG; pass floats in [0, 1].")
    else:
        if float(arr.max()) > 1.0:
            raise HDRIOError(f"{path}: PNG input must be in [0, 1] (max is {float(arr.max()):.3g}); tone-map first.")
        q = np.rint(arr * top).astype(dtype)
    return _atomic_write(path, lambda tmp: _cv2_write(tmp, np.ascontiguousarray(q[..., ::-1])))


def write_hdr_image(path: str | os.PathLike, img: torch.Tensor | np.ndarray, **kw: Any) -> Path:
    """Writes ``img`` in the format named by the extension (``.exr``, ``.hdr``, ``.pfm``, ``.png``).

    Keyword arguments go to the format's writer (e.g. ``half=True`` for EXR, ``bits=16`` for PNG).
    """
    writers: dict[str, Callable[..., Path]] = {
        ".exr": write_exr,
        ".hdr": write_radiance_hdr,
        ".pfm": write_pfm,
        ".png": write_png,
    }
    ext = Path(path).suffix.lower()
    if ext not in writers:
        raise HDRIOError(f"{path}: unknown output extension {ext!r}; use one of {', '.join(writers)}.")
    try:
        return writers[ext](path, img, **kw)
    except TypeError as err:
        raise HDRIOError(f"{path}: bad writer option for {ext} ({err}).") from err
