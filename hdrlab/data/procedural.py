"""Procedural HDR scenes: hdrlab's embedded default data (no files, no downloads).

:func:`render_scene` turns an integer seed into a photographic-looking linear radiance map
``[3, H, W]`` (float32, Rec.709 linear, strictly positive): an outdoor view (sky gradient with
clouds, sun disc with circumsolar glow, textured ground plane in perspective with aerial haze)
or an interior (textured back wall with bright windows, lamps, tiled or planked floor in
perspective), populated by a few objects (boxes with a lit and a shaded face, spheres with
Lambert shading, polygons) that cast soft shadows on the ground.

Radiometry. Surfaces follow the Lambert model

    L = rho * (E_key * c_key * s * v + E_amb * c_amb)                                       (1)

with albedo ``rho`` (multi-octave 1/f texture, stripes or checks), key-light colour ``c_key``
(sun or lamp, tinted), shading ``s = max(n . l, 0)`` (or a per-face constant), visibility
``v`` (0 in cast shadows, soft penumbra) and an ambient/sky term. The diffuse level
``rho = E_key = 1`` is radiance 1 before the final normalisation. A broadband 1/f log-normal
modulation (relief, dirt, uneven light) multiplies all surfaces. The sky (outdoors) or the
window views (indoors) are set to 0.8 .. 3 (sky) or 3 .. 20 (windows) times the median surface
luminance. Emitters (sun, lamps; specular glints at 2-20 % of that) have radiance
``emitter_range`` (default ``1e3 .. 1e5``) times the diffuse level, and each visible emitter
(occluded fraction removed) gets a power-law bloom and a veiling glare, both of the form

    G(d) = (r / max(d, r))**p * exp(-d / (c r))                                             (2)

(disc radius ``r``, distance ``d`` in pixels). The bloom has amplitude ``L_emitter``, no
cut-off and ``p`` chosen so that it falls to the clipping level at 1.5 .. 2.5 radii (a soft,
lens-like transition instead of a hard disc edge). The glare (``p ~ U(2, 3)``, ``c = 8``) has
an amplitude ``A`` solved in closed form (a quantile) so that a drawn fraction
``f ~ U(highlight_fraction)`` of the pixels reaches the clipping level ``1 / 0.18`` times the
median luminance. Hence, under :func:`default_exposure_ev` (median luminance to mid grey 0.18)
about ``f`` of the pixels clip -- the amount of missing highlight content is a scene design
parameter (scenes whose surfaces alone clip more keep their larger fraction).
Finally a 0.4 px Gaussian optical blur (kornia), 1 % multiplicative grain and a tiny positive
noise floor (no exact zeros) are applied, and the image is scaled so that its median luminance
is 0.18, i.e. ``default_exposure_ev(render_scene(s)) == 0`` up to float rounding.

Determinism: every random choice comes from ``numpy.random.default_rng(seed)`` and a
``torch.Generator`` seeded with ``seed`` (the global RNGs are never touched); the scene is
rendered on the CPU and moved to ``device`` at the end, so it is identical everywhere.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hdrlab.camera import REC709_WEIGHTS, luminance
from hdrlab.errors import ConfigError

__all__ = [
    "MID_GREY",
    "ProceduralSceneConfig",
    "default_exposure_ev",
    "fractal_noise",
    "sample_periodic",
    "coverage",
    "box_sdf",
    "ellipse_sdf",
    "convex_polygon_sdf",
    "emitter_glare",
    "render_scene",
]

#: Luminance the default auto exposure maps the scene median to.
MID_GREY: float = 0.18


@dataclass(frozen=True, kw_only=True)
class ProceduralSceneConfig:
    """Knobs of :func:`render_scene` (all relative to the diffuse level 1 of eq. 1).

    Attributes:
        emitter_range: radiance range (log-uniform) of sun / lamp discs.
        highlight_fraction: range (uniform) of the fraction of pixels that clip under
            :func:`default_exposure_ev`.
        indoor_probability: probability of an interior instead of an outdoor view.
        num_objects: inclusive range of the number of objects.
        grain: standard deviation of the multiplicative (log-normal) grain.
        noise_floor: positive floor added to every pixel (relative to the diffuse level).
        blur_sigma: optical blur in pixels at 256 px image height (scales with the height).
    """

    emitter_range: tuple[float, float] = (1e3, 1e5)
    highlight_fraction: tuple[float, float] = (0.04, 0.12)
    indoor_probability: float = 0.35
    num_objects: tuple[int, int] = (2, 6)
    grain: float = 0.01
    noise_floor: float = 1e-4
    blur_sigma: float = 0.4

    def __post_init__(self) -> None:
        lo, hi = self.emitter_range
        if not 0 < lo <= hi:
            raise ConfigError(f"ProceduralSceneConfig.emitter_range must be 0 < low <= high, got {self.emitter_range}")
        flo, fhi = self.highlight_fraction
        if not 0 <= flo <= fhi < 0.5:
            raise ConfigError(
                f"ProceduralSceneConfig.highlight_fraction must be 0 <= low <= high < 0.5, got {self.highlight_fraction}"
            )
        if not 0 <= self.indoor_probability <= 1:
            raise ConfigError(f"ProceduralSceneConfig.indoor_probability must be in [0, 1], got {self.indoor_probability}")
        nlo, nhi = self.num_objects
        if not 0 <= nlo <= nhi:
            raise ConfigError(f"ProceduralSceneConfig.num_objects must be 0 <= low <= high, got {self.num_objects}")
        if self.noise_floor <= 0 or self.grain < 0 or self.blur_sigma < 0:
            raise ConfigError("ProceduralSceneConfig: noise_floor must be > 0, grain and blur_sigma >= 0")


def default_exposure_ev(hdr: Tensor, *, key: float = MID_GREY) -> Tensor:
    """Default auto exposure: the ev that maps the median luminance to ``key`` (mid grey).

    ``ev = log2(key / median(Y))`` with Rec.709 luminance ``Y``; the exposed image is
    ``hdr * 2**ev`` and clips where its max channel is ``>= 1``.

    Args:
        hdr: linear radiance ``[3, H, W]`` or ``[B, 3, H, W]``.
        key: target luminance of the median pixel (0.18 = mid grey).

    Returns:
        ev in stops, shape ``[]`` or ``[B]``.
    """
    y = luminance(hdr)
    med = y.flatten(-3).median(dim=-1).values
    return torch.log2(key / med.clamp_min(torch.finfo(y.dtype).tiny))


# ----------------------------------------------------------------------------- primitives


def fractal_noise(height: int, width: int, *, beta: float = 2.0, generator: torch.Generator | None = None) -> Tensor:
    """Periodic Gaussian noise with power spectrum ``P(f) ~ f**-beta`` (multi-octave 1/f texture).

    White Gaussian noise is filtered in the Fourier domain by ``|f|**(-beta / 2)`` (DC removed)
    and normalised to zero mean, unit standard deviation.

    Args:
        height, width: tile size in pixels.
        beta: spectral exponent (2 = natural-image-like 1/f amplitude).
        generator: torch random generator (CPU).

    Returns:
        ``[height, width]`` float32 tile, periodic in both axes.
    """
    return _fractal_fields(height, width, [beta], generator=generator)[0]


def _fractal_fields(height: int, width: int, betas: list[float], *, generator: torch.Generator | None) -> Tensor:
    """``len(betas)`` :func:`fractal_noise` fields ``[K, height, width]`` from one batched FFT.

    Same values as ``K`` sequential calls (the white noise is drawn in the same order).
    """
    white = torch.randn(len(betas), height, width, generator=generator)
    radius = _fft_radius(height, width)
    gain = torch.stack([radius ** (-beta / 2.0) for beta in betas])
    gain[:, 0, 0] = 0.0
    field = torch.fft.irfft2(torch.fft.rfft2(white) * gain, s=(height, width))
    mean = field.mean(dim=(-2, -1), keepdim=True)
    std = field.flatten(-2).std(dim=-1)[:, None, None]
    return (field - mean) / std.clamp_min(1e-12)


@functools.lru_cache(maxsize=16)
def _fft_radius(height: int, width: int) -> Tensor:
    """Radial frequency ``|f|`` of the ``rfft2`` grid, floored at ``1 / max(h, w)`` (cached, read-only)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / max(height, width))


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``(ys, xs)``, each ``[height, width]`` float32 (cached; never modified in place)."""
    return torch.meshgrid(
        torch.arange(height, dtype=torch.float32) + 0.5, torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij"
    )


def sample_periodic(tile: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Bilinear lookup of a periodic tile at continuous coordinates measured in tile periods.

    Args:
        tile: ``[C, h, w]`` (or ``[h, w]``) periodic texture.
        u, v: ``[H, W]`` horizontal / vertical coordinates; 1.0 is one tile width / height.

    Returns:
        ``[C, H, W]`` (or ``[H, W]``) samples; wrap-around is seamless.
    """
    squeeze = tile.dim() == 2
    tile3 = tile[None] if squeeze else tile
    out = _sample_padded(_pad_periodic(tile3[None]), u[None], v[None])[0]
    return out[0] if squeeze else out


def _pad_periodic(tiles: Tensor) -> Tensor:
    """``[N, C, h, w]`` periodic tiles -> ``[N, C, h + 2, w + 2]`` with a one-pixel wrap-around border."""
    return F.pad(tiles, (1, 1, 1, 1), mode="circular")


def _sample_padded(padded: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """:func:`sample_periodic` of ``N`` pre-padded tiles ``[N, C, h + 2, w + 2]`` at ``u, v`` ``[N, H, W]``.

    One ``grid_sample`` call for all ``N`` lookups; returns ``[N, C, H, W]``.
    """
    h, w = padded.shape[-2] - 2, padded.shape[-1] - 2
    if h == w:  # square tiles (the renderer's): both coordinates in one pass, the same values
        uv = torch.stack([u, v], dim=-1)
        grid = (((uv - uv.floor()) * w + 0.5) / (w + 1) * 2 - 1).to(padded.dtype)
    else:
        gx = ((u - u.floor()) * w + 0.5) / (w + 1) * 2 - 1
        gy = ((v - v.floor()) * h + 0.5) / (h + 1) * 2 - 1
        grid = torch.stack([gx, gy], dim=-1).to(padded.dtype)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=True)


def coverage(sdf: Tensor, softness: float = 1.0) -> Tensor:
    """Anti-aliased coverage ``clamp(0.5 - sdf / softness, 0, 1)`` of a signed distance (pixels).

    Args:
        sdf: signed distance in pixels, negative inside.
        softness: width of the edge ramp in pixels (1 = box-filter anti-aliasing, larger = soft).

    Returns:
        Coverage in ``[0, 1]``, same shape as ``sdf``.
    """
    if softness == 1.0:  # sdf / 1.0 == sdf exactly: one op less on the most common call
        return (0.5 - sdf).clamp(0.0, 1.0)
    return (0.5 - sdf / max(softness, 1e-6)).clamp(0.0, 1.0)


def box_sdf(x: Tensor, y: Tensor, x0: float, y0: float, x1: float, y1: float) -> Tensor:
    """Exact signed distance to the axis-aligned box ``[x0, x1] x [y0, y1]`` (negative inside)."""
    dx = torch.maximum(x0 - x, x - x1)
    dy = torch.maximum(y0 - y, y - y1)
    outside = torch.sqrt(dx.clamp_min(0) ** 2 + dy.clamp_min(0) ** 2)
    return outside + torch.maximum(dx, dy).clamp_max(0)


def ellipse_sdf(x: Tensor, y: Tensor, cx: float, cy: float, rx: float, ry: float) -> Tensor:
    """Approximate signed distance to an axis-aligned ellipse (exact for circles).

    ``(sqrt(((x-cx)/rx)**2 + ((y-cy)/ry)**2) - 1) * min(rx, ry)``.
    """
    return (torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1.0) * min(rx, ry)


def convex_polygon_sdf(x: Tensor, y: Tensor, vertices: np.ndarray) -> Tensor:
    """Signed distance bound of a convex polygon: max over edges of the distance to the edge line.

    Exact inside and near edges, an under-estimate near outside corners (fine for coverage).

    Args:
        x, y: ``[H, W]`` pixel coordinates.
        vertices: ``[K, 2]`` (x, y) vertices of a convex polygon, any orientation.

    Returns:
        ``[H, W]`` signed distance (negative inside).
    """
    verts = np.asarray(vertices, dtype=np.float64)
    area = 0.5 * np.sum(verts[:, 0] * np.roll(verts[:, 1], -1) - np.roll(verts[:, 0], -1) * verts[:, 1])
    if area < 0:
        verts = verts[::-1]
    sdf = torch.full_like(x, -math.inf)
    for (ax, ay), (bx, by) in zip(verts, np.roll(verts, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        norm = math.hypot(ex, ey)
        if norm == 0:
            continue
        # outward normal of a counter-clockwise polygon in (x right, y down) image coordinates
        nx, ny = ey / norm, -ex / norm
        sdf = torch.maximum(sdf, (x - ax) * nx + (y - ay) * ny)
    return -sdf if area == 0 else sdf


def emitter_glare(
    x: Tensor, y: Tensor, cx: float, cy: float, radius: float, *, power: float = 2.5, cutoff: float | None = 8.0
) -> Tensor:
    """Bloom / veiling-glare shape of eq. (2): ``(r / max(d, r))**p * exp(-d / (cutoff * r))``.

    Equal to 1 on the emitter disc; ``cutoff=None`` drops the exponential (pure power law).

    Args:
        x, y: ``[H, W]`` pixel coordinates.
        cx, cy: emitter centre in pixels.
        radius: emitter disc radius ``r`` in pixels.
        power: fall-off exponent ``p``.
        cutoff: exponential cut-off length in disc radii, or ``None``.

    Returns:
        ``[H, W]`` shape in ``(0, 1]``.
    """
    d = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    shape = (radius / d.clamp_min(radius)) ** power
    if cutoff is not None:
        shape = shape * torch.exp(-d / (cutoff * radius))
    return shape


# ----------------------------------------------------------------------------- scene pieces


def _luma(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, REC709_WEIGHTS))


def _tint(rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random colour of luminance 1 (log-normal channels, spread ``strength``)."""
    rgb = np.exp(strength * rng.standard_normal(3))
    return rgb / _luma(rgb)


def _illuminant(rng: np.random.Generator, warmth: float) -> np.ndarray:
    """Tinted white of luminance 1; ``warmth`` > 0 is orange (low CCT), < 0 is blue."""
    rgb = np.array([1.0 + 0.45 * warmth, 1.0, 1.0 - 0.55 * warmth]).clip(0.2, None)
    rgb = rgb * np.exp(0.04 * rng.standard_normal(3))
    return rgb / _luma(rgb)


def _albedo(rng: np.random.Generator, low: float = 0.03, high: float = 0.8) -> np.ndarray:
    level = math.exp(rng.uniform(math.log(low), math.log(high)))
    return (level * _tint(rng, rng.uniform(0.1, 0.6))).clip(0.004, 0.95)


def _col(rgb: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(rgb, dtype=np.float32)).view(3, 1, 1)


def _material(
    rng: np.random.Generator,
    tiles: Tensor,
    u: Tensor,
    v: Tensor,
    fade: Tensor | float = 1.0,
    albedo_range: tuple[float, float] = (0.03, 0.8),
) -> Tensor:
    """Albedo ``[3, H, W]`` at surface coordinates ``(u, v)``: 1/f texture x stripes / checks.

    ``tiles`` are the renderer's noise tiles pre-padded by :func:`_pad_periodic` (``[K, 1, h+2, w+2]``);
    the three texture lookups (pattern, fine and finer grime) are one batched ``grid_sample``.
    ``fade`` in ``[0, 1]`` scales the pattern contrast (aerial perspective, anti-moire).
    """
    a, b = _albedo(rng, *albedo_range), _albedo(rng, *albedo_range)
    kind = rng.choice(["noise", "stripes", "checker", "stripes_noise"])
    scale = math.exp(rng.uniform(math.log(0.15), math.log(1.5)))
    offset_u, offset_v = rng.uniform(0, 1, size=2)
    count = tiles.shape[0]
    channel = int(rng.integers(count))
    su, sv = u * scale, v * scale
    lookups = _sample_padded(
        tiles.index_select(0, _tile_index(channel, count)),
        torch.stack([su + offset_u, su * 2.3, su * 9.1 + 0.37]),
        torch.stack([sv + offset_v, sv * 2.3, sv * 9.1 + 0.61]),
    )[:, 0]
    noise, fine, finer = lookups[0], lookups[1], lookups[2]
    if kind == "noise":
        mix = torch.sigmoid(rng.uniform(0.5, 3.0) * noise)
    else:
        freq = math.exp(rng.uniform(math.log(2.0), math.log(12.0)))
        sharp = rng.uniform(2.0, 8.0)
        wave = torch.sin(2 * math.pi * freq * u)
        if kind == "checker":
            wave = wave * torch.sin(2 * math.pi * freq * v * rng.uniform(0.7, 1.5))
        mix = 0.5 + 0.5 * (sharp * wave).clamp(-1.0, 1.0)
        if kind == "stripes_noise":
            mix = (mix + 0.35 * noise).clamp(0.0, 1.0)
    mix = 0.5 + (mix - 0.5) * fade
    albedo = _col(a) * (1 - mix) + _col(b) * mix
    grime = torch.exp(fade * (rng.uniform(0.1, 0.5) * fine + rng.uniform(0.05, 0.3) * finer))
    return (albedo * grime).clamp(0.003, 0.95)


@functools.lru_cache(maxsize=64)
def _tile_index(channel: int, count: int) -> Tensor:
    """Indices ``[channel, channel + 1, channel + 2]`` (mod ``count``) of :func:`_material`'s three lookups (cached)."""
    return torch.tensor([channel, (channel + 1) % count, (channel + 2) % count])


def _ground_coords(x: Tensor, y: Tensor, horizon: float, focal: float, cx: float) -> tuple[Tensor, Tensor, Tensor]:
    """Ground-plane coordinates ``(u, v)`` and depth ``z`` of pixels below the horizon."""
    dy = (y - horizon).clamp_min(0.5)
    z = focal / dy
    u = (x - cx) * z / focal
    return u, z, z


def _window(y0: float, y1: float, x0: float, x1: float, h: int, w: int, *, pad: float) -> tuple[slice, slice] | None:
    """Integer pixel window ``(rows, cols)`` covering ``[y0, y1] x [x0, x1]`` plus ``pad``; None if empty."""
    r0, r1 = max(int(math.floor(y0 - pad)), 0), min(int(math.ceil(y1 + pad)) + 1, h)
    c0, c1 = max(int(math.floor(x0 - pad)), 0), min(int(math.ceil(x1 + pad)) + 1, w)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


@functools.lru_cache(maxsize=32)
def _gaussian_kernel1d(ksize: int, sigma: float) -> Tensor:
    """kornia's normalised 1-D Gaussian ``[1, ksize]`` (cached: building it costs more than the blur)."""
    return kornia.filters.get_gaussian_kernel1d(ksize, sigma)


@functools.lru_cache(maxsize=32)
def _blur_weights(ksize: int, sigma: float, channels: int) -> tuple[Tensor, Tensor, float]:
    """Depthwise conv weights ``[C, 1, 1, k]`` / ``[C, 1, k, 1]`` of :func:`_gaussian_kernel1d` (as kornia builds
    them) and the relative weight of the off-centre taps when the centre tap is exactly 1 (else ``inf``)."""
    kernel = _gaussian_kernel1d(ksize, sigma)[0]
    weight_x = kernel.view(1, 1, 1, ksize).expand(channels, 1, 1, ksize).contiguous()
    weight_y = kernel.view(1, 1, ksize, 1).expand(channels, 1, ksize, 1).contiguous()
    taps = kernel.double()
    centre = float(taps[ksize // 2])
    side = float(taps[: ksize // 2].sum() + taps[ksize // 2 + 1 :].sum()) if centre == 1.0 else math.inf
    return weight_x, weight_y, side


def _optical_blur(image: Tensor, ksize: int, sigma: float) -> Tensor:
    """``kornia.filters.filter2d_separable(image[None], k, k, border_type="reflect")[0]`` with the 1-D Gaussian
    ``k = _gaussian_kernel1d(ksize, sigma)``, bit for bit, without kornia's per-call overhead.

    Shortcut (exact): when the centre tap is exactly 1 and the off-centre taps are so small that
    ``side * max(image) < 2**-26 * min(image)`` (e.g. ``sigma = 0.1`` px at 64 px: taps ``2e-22``),
    each pass adds less than a quarter unit in the last place to every pixel, so in float32 both
    passes return ``image`` unchanged whatever the summation order; the convolution is skipped.
    """
    c = image.shape[0]
    weight_x, weight_y, side = _blur_weights(ksize, sigma, c)
    if side < math.inf:
        low, high = float(image.amin()), float(image.amax())
        if low > 0 and math.isfinite(high) and side * high < low * 2.0**-26:
            return image
    pad = ksize // 2
    x = F.conv2d(F.pad(image[None], [pad, pad, 0, 0], mode="reflect"), weight_x, groups=c)
    return F.conv2d(F.pad(x, [0, 0, pad, pad], mode="reflect"), weight_y, groups=c)[0]


def _quantile(values: Tensor, q: float) -> Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) of a 1-D tensor via two O(n) selections."""
    n = values.numel()
    position = q * (n - 1)
    low = int(math.floor(position))
    high = min(low + 1, n - 1)
    v_low = values.kthvalue(low + 1).values
    if high == low or position == low:
        return v_low
    return v_low + (values.kthvalue(high + 1).values - v_low) * (position - low)


def _shadow_quad(x: Tensor, y: Tensor, x0: float, x1: float, base: float, dx: float, dy: float, soft: float) -> Tensor:
    """Soft cast-shadow mask: parallelogram spanned by the base segment and the shadow vector."""
    width = max(x1 - x0, 1.0)
    dy = dy if abs(dy) > 0.5 else math.copysign(0.5, dy if dy != 0 else 1.0)
    t = (y - base) / dy
    a = (x - x0 - t * dx) / width
    length = math.hypot(dx, dy)
    sdf = torch.maximum(torch.maximum(-a, a - 1) * width, torch.maximum(-t, t - 1) * length)
    return coverage(sdf, soft)


def render_scene(
    seed: int,
    *,
    height: int = 256,
    width: int = 256,
    device: torch.device | str | None = None,
    config: ProceduralSceneConfig | None = None,
) -> Tensor:
    """Render procedural scene ``seed`` as linear radiance (see the module docstring, eqs. 1-2).

    Args:
        seed: any integer; the same seed always gives the same image.
        height, width: size in pixels (>= 16).
        device: device of the returned tensor (rendering happens on the CPU).
        config: scene knobs (:class:`ProceduralSceneConfig`); defaults when ``None``.

    Returns:
        ``[3, height, width]`` float32 linear Rec.709 radiance, finite and > 0, scaled so that
        the median luminance is 0.18 (:func:`default_exposure_ev` is 0); about
        ``config.highlight_fraction`` of the pixels are ``>= 1`` in their max channel.
    """
    cfg = config if config is not None else ProceduralSceneConfig()
    if height < 16 or width < 16:
        raise ConfigError(f"render_scene: height and width must be >= 16 pixels, got {height}x{width}")
    # Inference mode skips autograd bookkeeping on the ~1000 small tensor ops of a scene (same values);
    # the clone returns an ordinary tensor (callers may modify it in place or use it under autograd).
    with torch.inference_mode():
        image = _render(int(seed), int(height), int(width), cfg)
    return image.clone().to(device=device)


def _render(seed: int, height: int, width: int, cfg: ProceduralSceneConfig) -> Tensor:
    """Body of :func:`render_scene` (float32 ``[3, height, width]`` on the CPU)."""
    rng = np.random.default_rng(np.random.SeedSequence(abs(seed), spawn_key=(int(seed < 0),)))
    gen = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
    h, w = int(height), int(width)
    px = h / 256.0  # pixel scale relative to the design size
    ys, xs = _pixel_grid(h, w)

    tile = 128
    tiles = _fractal_fields(tile, tile, [float(rng.uniform(1.2, 2.4)) for _ in range(3)], generator=gen)
    tiles = _pad_periodic(tiles[:, None])  # [3, 1, tile + 2, tile + 2], padded once for every lookup

    indoor = bool(rng.uniform() < cfg.indoor_probability)
    horizon = h * rng.uniform(0.3, 0.62)
    focal = h * rng.uniform(0.6, 1.4)
    cx = w * rng.uniform(0.3, 0.7)
    ground = coverage(horizon - ys, 1.0)  # 1 below the horizon
    e_lo, e_hi = (math.log(v) for v in cfg.emitter_range)

    key_col = _illuminant(rng, rng.uniform(-0.2, 0.8) if not indoor else rng.uniform(0.2, 1.0))
    amb_col = _illuminant(rng, rng.uniform(-1.0, -0.2) if not indoor else rng.uniform(-0.3, 0.5))
    ambient = math.exp(rng.uniform(math.log(0.03), math.log(0.3)))
    emitters: list[tuple[float, float, float, float, np.ndarray]] = []  # (cx, cy, r, radiance, colour)

    # Two layers: ``surf`` holds absolute radiance (surfaces, emitters); ``bright`` holds the
    # sky / window views at unit median luminance, scaled relative to the surfaces at the end.
    if not indoor:
        t = ((horizon - ys) / horizon).clamp(0.0, 1.0).sqrt()
        zenith, horizon_col = _col(_illuminant(rng, rng.uniform(-1.4, -0.6))), _col(_illuminant(rng, rng.uniform(-0.3, 0.6)))
        sky = (zenith * t + horizon_col * (1 - t)) * (1.0 - 0.5 * t)
        cu, cv = xs / (w * rng.uniform(0.6, 1.5)), ys / (h * rng.uniform(0.2, 0.5))
        clouds = _sample_padded(tiles[:2], torch.stack([cu, xs / w * 2.0]), torch.stack([cv, ys / h * 3.0]))[:, 0]
        cover = torch.sigmoid(rng.uniform(2.0, 6.0) * (clouds[0] - rng.uniform(-0.5, 1.5)))
        cloud_shade = torch.exp(0.4 * clouds[1])
        cloud = rng.uniform(0.6, 1.6) * cloud_shade * _col(_illuminant(rng, rng.uniform(-0.2, 0.4)))
        bright = (sky * (1 - cover) + cloud * cover) * (1 - ground)
        bright_ratio = rng.uniform(0.8, 3.0)
        surf = torch.zeros(3, h, w)
        sun_x, sun_y = w * rng.uniform(0.08, 0.92), horizon * rng.uniform(0.15, 0.9)
        sun_r = px * rng.uniform(4.0, 6.0)
        emitters.append((sun_x, sun_y, sun_r, math.exp(rng.uniform(e_lo, e_hi)), key_col))
        light_x, light_y = sun_x, sun_y
        irradiance = torch.ones(h, w)
    else:
        light_x, light_y = w * rng.uniform(0.15, 0.85), horizon * rng.uniform(0.1, 0.6)
        irradiance = torch.zeros(h, w)
        for k in range(int(rng.integers(1, 4))):
            lx = light_x if k == 0 else w * rng.uniform(0.05, 0.95)
            ly = light_y if k == 0 else horizon * rng.uniform(0.05, 0.8)
            spread = h * rng.uniform(0.15, 0.6)
            irradiance = irradiance + rng.uniform(0.5, 1.5) / (1 + ((xs - lx) ** 2 + (ys - ly) ** 2) / spread**2)
            emitters.append((lx, ly, px * rng.uniform(3.0, 5.0), math.exp(rng.uniform(e_lo, e_hi)), key_col))
        irradiance = irradiance / irradiance.amax()
    key = _col(key_col) * irradiance
    amb = _col(amb_col) * ambient

    if indoor:  # textured back wall with windows onto a bright exterior (dark mullions)
        wall = _material(rng, tiles, xs / h, ys / h, fade=rng.uniform(0.3, 1.0))
        surf = wall * (key * rng.uniform(0.3, 0.9) + amb) * (1 - ground)
        bright = torch.zeros(3, h, w)
        bright_ratio = math.exp(rng.uniform(math.log(3.0), math.log(20.0)))
        for _ in range(int(rng.integers(0, 3))):
            ww, wh = w * rng.uniform(0.06, 0.2), horizon * rng.uniform(0.2, 0.5)
            wx, wy = w * rng.uniform(0.05, 0.95), horizon * rng.uniform(0.05, 0.5)
            inside = coverage(box_sdf(xs, ys, wx - ww / 2, wy, wx + ww / 2, min(wy + wh, horizon - 2)), 1.0)
            mullion = torch.maximum(
                coverage((xs - wx).abs() - px * 1.5, 1.0), coverage((ys - (wy + wh / 2)).abs() - px * 1.5, 1.0)
            )
            view = _col(_illuminant(rng, rng.uniform(-1.0, 0.2))) * torch.exp(0.3 * _sample_padded(tiles[2:], (xs / w)[None], (ys / h)[None])[0, 0])
            frame = _col(_albedo(rng, 0.02, 0.5)) * (key * 0.5 + amb)
            surf = surf * (1 - inside) + frame * mullion * inside
            bright = bright * (1 - inside) + view * (1 - mullion) * inside
    lights = torch.zeros(3, h, w)  # emitter discs (absolute radiance)
    discs = []  # coverage of each background emitter's disc (re-used by the glare below)
    for ex, ey, er, e_rad, e_col in emitters:  # sun / lamp discs, behind the objects
        discs.append(coverage(ellipse_sdf(xs, ys, ex, ey, er, er), 1.0))
        disc = discs[-1] * (1 - ground)
        lights = lights * (1 - disc) + e_rad * _col(e_col) * disc
        surf = surf * (1 - disc)
        bright = bright * (1 - disc)

    # -- ground plane in perspective
    u, v, z = _ground_coords(xs, ys, horizon, focal, cx)
    haze = torch.exp(-z / rng.uniform(8.0, 40.0))
    ground_albedo = _material(
        rng, tiles, u * rng.uniform(0.3, 1.5), v * rng.uniform(0.3, 1.5), fade=haze, albedo_range=(0.03, 0.35)
    )
    visibility = torch.ones(h, w)

    # -- objects, far to near; cast shadows onto the ground first
    n_obj = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    bases = np.sort(rng.uniform(horizon + 0.04 * h, 1.12 * h, size=n_obj))
    objects = []
    for base in bases:
        dist = base - horizon
        o_h = min(dist * rng.uniform(0.6, 2.5), 0.7 * h, base - 2.0)
        o_w = o_h * rng.uniform(0.3, 1.4)
        ox = w * rng.uniform(-0.05, 1.05)
        kind = rng.choice(["box", "ellipse", "polygon"])
        # shadow vector: away from the key light, foreshortened on the ground
        away_x, away_y = ox - light_x, base - light_y
        norm = math.hypot(away_x, away_y) + 1e-6
        length = o_h * rng.uniform(0.4, 1.5)
        sdx = away_x / norm * length
        sdy = away_y / norm * length * (dist / h) * rng.uniform(0.5, 1.5)
        soft = px * rng.uniform(1.0, 4.0)
        x0, x1 = ox - o_w / 2 + min(0.0, sdx), ox + o_w / 2 + max(0.0, sdx)
        win = _window(min(base, base + sdy), max(base, base + sdy), x0, x1, h, w, pad=soft + 2.0)
        if win is not None:
            shadow = _shadow_quad(xs[win], ys[win], ox - o_w / 2, ox + o_w / 2, base, sdx, sdy, soft)
            visibility[win].mul_(1 - shadow * ground[win])
        objects.append((base, o_h, o_w, ox, kind))
    surf = surf + ground_albedo * (key * visibility * rng.uniform(0.6, 1.0) + amb) * ground

    n_background_emitters = len(emitters)
    unoccluded = torch.ones(h, w)  # 1 where no object covers the background
    for base, o_h, o_w, ox, kind in objects:
        top = base - o_h
        win = _window(top, base, ox - o_w / 2, ox + o_w / 2, h, w, pad=3.0 * px)
        if win is None:
            continue
        x, y = xs[win], ys[win]
        edge = px * rng.uniform(0.8, 1.5)
        ou = (x - ox) / max(o_w, 1.0)
        ov = (y - top) / max(o_h, 1.0)
        albedo = _material(rng, tiles, ou * rng.uniform(0.5, 2.0), ov * rng.uniform(0.5, 2.0))
        lit_side = 1.0 if light_x > ox else -1.0
        if kind == "box":
            mask = coverage(box_sdf(x, y, ox - o_w / 2, top, ox + o_w / 2, base), edge)
            split = ox + o_w * rng.uniform(-0.3, 0.3)
            face = coverage(lit_side * (split - x), edge)  # 1 on the face turned to the light
            shading = face * rng.uniform(0.5, 1.0) + (1 - face) * rng.uniform(0.0, 0.25)
        elif kind == "ellipse":
            ry = o_h / 2
            cy = base - ry
            mask = coverage(ellipse_sdf(x, y, ox, cy, o_w / 2, ry), edge)
            nx = ((x - ox) / (o_w / 2)).clamp(-1, 1)
            ny = ((y - cy) / ry).clamp(-1, 1)
            nz = (1 - nx**2 - ny**2).clamp_min(0).sqrt()
            lvec = np.array([lit_side * rng.uniform(0.2, 1.0), -rng.uniform(0.1, 0.9), rng.uniform(-0.3, 0.8)])
            lvec = lvec / np.linalg.norm(lvec)
            shading = (nx * lvec[0] + ny * lvec[1] + nz * lvec[2]).clamp_min(0)
        else:
            k = int(rng.integers(3, 6))
            angles = np.sort(rng.uniform(0, 2 * math.pi, size=k))
            verts = np.stack([ox + o_w / 2 * np.cos(angles), base - o_h / 2 + o_h / 2 * np.sin(angles)], axis=1)
            verts[np.argmax(verts[:, 1]), 1] = base
            mask = coverage(convex_polygon_sdf(x, y, verts), edge)
            shading = torch.full_like(x, rng.uniform(0.1, 1.0))
        obj_vis = 1.0 if rng.uniform() < 0.7 else rng.uniform(0.0, 0.5)  # in the shadow of something out of view
        radiance = albedo * (key[(slice(None), *win)] * shading * obj_vis + amb)
        keep = 1 - mask
        surf[(slice(None), *win)].mul_(keep).add_(radiance * mask)
        bright[(slice(None), *win)].mul_(keep)
        lights[(slice(None), *win)].mul_(keep)
        unoccluded[win].mul_(keep)
        if rng.uniform() < 0.2:  # a specular glint of the key light on a glossy object
            gx, gy = ox + o_w * rng.uniform(-0.3, 0.3), base - o_h * rng.uniform(0.3, 0.8)
            gr = px * rng.uniform(1.5, 3.0)
            glint = coverage(ellipse_sdf(x, y, gx, gy, gr, gr), 1.0) * mask
            g_rad = math.exp(rng.uniform(e_lo, e_hi)) * rng.uniform(0.02, 0.2)
            lights[(slice(None), *win)].add_(g_rad * _col(key_col) * glint)
            emitters.append((gx, gy, gr, g_rad, key_col))

    # -- sky / window level relative to the median surface luminance
    y_bright = luminance(bright)[0]
    y_surf = luminance(surf)[0]
    solid = y_surf > 0  # surfaces, not the sky / window views or emitter discs
    surf_median = y_surf[solid].median()
    open_view = y_bright > 0.5 * y_bright.amax()
    bright_median = y_bright[open_view].median() if bool(open_view.any()) else torch.tensor(1.0)
    # broadband 1/f modulation of the surfaces (dirt, small-scale relief, uneven illumination)
    relief = fractal_noise(h, w, beta=float(rng.uniform(1.3, 2.0)), generator=gen)
    surf = surf * torch.exp(rng.uniform(0.2, 0.45) * relief)
    image = surf + (bright_ratio * surf_median / bright_median) * bright + lights

    # -- optics: blur; bloom of eq. (2) around each visible emitter; veiling glare solved for the
    # drawn highlight fraction
    if cfg.blur_sigma > 0:
        sigma = cfg.blur_sigma * px
        ksize = 2 * math.ceil(3 * sigma) + 1
        image = _optical_blur(image, ksize, sigma)
    clip_level = float(surf_median) / MID_GREY
    glare = torch.zeros(3, h, w)
    glare_power = rng.uniform(2.0, 3.0)
    for k, (ex, ey, er, e_rad, e_col) in enumerate(emitters):
        if k < n_background_emitters:
            disc = discs[k]
            visible = float((disc * unoccluded).sum() / disc.sum().clamp_min(1e-6))
        else:
            disc, visible = None, 1.0
        if visible <= 0.0:
            continue
        # bloom: falls from the disc radiance to the clip level at ``reach`` disc radii
        reach = rng.uniform(1.5, 2.5)
        power = min(max(math.log(max(e_rad / clip_level, 1.0 + 1e-6)) / math.log(reach), 2.0), 10.0)
        # eq. (2) for the bloom (no cut-off) and the glare share the distance d of every pixel
        distance = torch.sqrt((xs - ex) ** 2 + (ys - ey) ** 2)
        ratio = er / distance.clamp_min(er)
        shape = ratio**power
        if disc is not None:
            shape = shape * (1 - disc)
        image = image + (visible * e_rad) * _col(e_col) * shape
        glare = glare + visible * _col(e_col) * (ratio**glare_power * torch.exp(-distance / (8.0 * er)))
    target = rng.uniform(*cfg.highlight_fraction)
    if float(glare.amax()) > 0:
        image = image + _solve_glare_amplitude(image, glare, target) * glare

    grain = torch.exp(cfg.grain * torch.randn(3, h, w, generator=gen))
    image = image * grain + cfg.noise_floor * (0.5 + torch.rand(3, h, w, generator=gen))
    image = image * (MID_GREY / luminance(image).median())
    return image.to(dtype=torch.float32)


def _solve_glare_amplitude(image: Tensor, glare: Tensor, fraction: float, *, iterations: int = 2) -> float:
    """Amplitude ``A`` such that ``fraction`` of the pixels of ``image + A * glare`` reach the clip level.

    The clip level is ``max_c >= median(Y) / MID_GREY`` (:func:`default_exposure_ev`). For a
    fixed median, the amplitude a pixel needs is ``min_c (T - image_c) / glare_c`` (0 when it
    already clips), so ``A`` is the ``fraction`` quantile of those needs; the median moves a
    little with ``A``, hence a couple of fixed-point iterations.
    """
    amp = 0.0
    for _ in range(iterations):
        threshold = luminance(image + amp * glare).median() / MID_GREY
        need = ((threshold - image) / glare.clamp_min(1e-12)).amin(dim=0).clamp_min(0.0)
        amp = float(_quantile(need.flatten(), fraction))
    return amp
