"""Procedural HDR scenes, image statistics and ``hdrlab synth``.

Run with ``-s`` to see the measured numbers (dynamic range, clipped fractions, spectral slopes,
gradient kurtosis of 100 procedural scenes against the real HDR images).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hdrlab.camera import luminance
from hdrlab.commands import synth
from hdrlab.data import statistics as stats
from hdrlab.data.procedural import (
    MID_GREY,
    ProceduralSceneConfig,
    box_sdf,
    convex_polygon_sdf,
    coverage,
    default_exposure_ev,
    ellipse_sdf,
    emitter_glare,
    fractal_noise,
    render_scene,
    sample_periodic,
)
from hdrlab.errors import ConfigError, HDRLabError

NUM_SCENES = 100
REAL_SIZE = 256


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return xs.float(), ys.float()


# ----------------------------------------------------------------------------- primitives


def test_fractal_noise_has_the_requested_spectrum():
    gen = torch.Generator().manual_seed(3)
    for beta in (1.5, 2.0, 2.5):
        field = fractal_noise(256, 256, beta=beta, generator=gen)
        assert field.shape == (256, 256)
        assert abs(float(field.mean())) < 1e-5 and abs(float(field.std()) - 1) < 1e-4
        # log luminance of exp(field) is the field itself -> its spectral slope is -beta
        slope = float(stats.power_spectrum_slope(torch.exp(field).expand(3, -1, -1)))
        assert slope == pytest.approx(-beta, abs=0.25)


def test_sample_periodic_hits_pixel_centres_and_wraps():
    tile = torch.arange(12.0).view(1, 3, 4)
    v, u = torch.meshgrid((torch.arange(3) + 0.5) / 3, (torch.arange(4) + 0.5) / 4, indexing="ij")
    assert torch.allclose(sample_periodic(tile, u, v), tile, atol=1e-5)
    assert torch.allclose(sample_periodic(tile[0], u + 3.0, v - 2.0), tile[0], atol=1e-4)
    # half way between the last and first column wraps to their mean
    mid = sample_periodic(tile[0], torch.tensor([[0.0]]), torch.tensor([[0.5 / 3]]))
    assert float(mid) == pytest.approx((tile[0, 0, 0] + tile[0, 0, 3]) / 2)


def test_shape_coverages_match_closed_form_areas():
    xs, ys = _grid(200, 200)
    box = coverage(box_sdf(xs, ys, 20.3, 30.7, 120.3, 90.7))
    assert float(box.sum()) == pytest.approx(100.0 * 60.0, rel=2e-3)
    ellipse = coverage(ellipse_sdf(xs, ys, 100.0, 100.0, 60.0, 60.0))
    assert float(ellipse.sum()) == pytest.approx(math.pi * 60.0**2, rel=2e-3)
    tri = np.array([[20.0, 20.0], [180.0, 40.0], [60.0, 170.0]])
    shoelace = 0.5 * abs(np.cross(tri[1] - tri[0], tri[2] - tri[0]))
    for verts in (tri, tri[::-1]):  # orientation does not matter
        poly = coverage(convex_polygon_sdf(xs, ys, verts))
        assert float(poly.sum()) == pytest.approx(shoelace, rel=5e-3)
    # exact distance outside the box corner (3-4-5 triangle)
    assert float(box_sdf(torch.tensor(13.0), torch.tensor(14.0), 16.0, 18.0, 30.0, 30.0)) == pytest.approx(5.0)


def test_emitter_glare_closed_form():
    xs, ys = _grid(64, 64)
    g = emitter_glare(xs, ys, 32.5, 32.5, 4.0, power=2.0, cutoff=8.0)
    assert float(g[32, 32]) == pytest.approx(1.0)
    # d = 8 = 2r: (1/2)^2 * exp(-8 / 32)
    assert float(g[32, 40]) == pytest.approx(0.25 * math.exp(-0.25), rel=1e-5)
    pure = emitter_glare(xs, ys, 32.5, 32.5, 4.0, power=3.0, cutoff=None)
    assert float(pure[32, 48]) == pytest.approx(0.5**6, rel=1e-5)


# ----------------------------------------------------------------------------- statistics


def test_dynamic_range_and_clipped_fraction_closed_form():
    img = torch.ones(3, 100, 100)
    img[:, :50] = 2.0**12
    assert float(stats.dynamic_range_stops(img)) == pytest.approx(12.0, abs=1e-4)
    img[:, 0, 0] = 0.0  # a single zero is outside p0.1 .. p99.9
    assert float(stats.dynamic_range_stops(img)) == pytest.approx(12.0, abs=1e-4)
    assert math.isinf(float(stats.dynamic_range_stops(torch.zeros(3, 8, 8))))
    ramp = torch.linspace(0.0, 1.0, 1000).view(1, 1, 1000).expand(3, 1, 1000).clone()
    ramp[0] *= 2  # red clips first
    # max channel 2 * t >= 1 / 2**ev  <=>  t >= 0.5 / 2**ev
    assert float(stats.clipped_fraction(ramp, 0.0)) == pytest.approx(0.5, abs=2e-3)
    assert float(stats.clipped_fraction(ramp, 1.0)) == pytest.approx(0.75, abs=2e-3)
    batch = torch.stack([ramp, ramp])
    assert torch.allclose(stats.clipped_fraction(batch, torch.tensor([0.0, 1.0])), torch.tensor([0.5, 0.75]), atol=2e-3)
    with pytest.raises(ConfigError):
        stats.dynamic_range_stops(img, low=0.5, high=0.1)
    with pytest.raises(ConfigError):
        stats.clipped_fraction(torch.ones(4, 8, 8), 0.0)


def test_gradient_kurtosis_matches_opencv_sobel_and_numpy():
    x = render_scene(5, height=96, width=128)
    logy = stats.log_luminance(x)[0].numpy().astype(np.float64)
    gx = cv2.Sobel(logy, cv2.CV_64F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(logy, cv2.CV_64F, 0, 1, ksize=3) / 8.0
    mag = np.sqrt(gx**2 + gy**2)[1:-1, 1:-1].ravel()
    c = mag - mag.mean()
    reference = float(np.mean(c**4) / np.mean(c**2) ** 2)
    assert float(stats.gradient_kurtosis(x)) == pytest.approx(reference, rel=1e-3)


def test_log_luminance_floor_and_spectrum_band_errors():
    img = torch.zeros(3, 32, 32)
    img[:, :, 8:] = 1.0
    logy = stats.log_luminance(img, floor_rel=1e-4)
    assert torch.isfinite(logy).all()
    assert float(logy.min()) == pytest.approx(math.log(1e-4), rel=1e-5)  # median is 1
    with pytest.raises(ConfigError):
        stats.power_spectrum_slope(img, band=(0.3, 0.1))


def test_default_exposure_ev_maps_median_to_mid_grey():
    img = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0)) * 7 + 0.01
    ev = default_exposure_ev(img)
    assert float(luminance(img * 2**ev).median()) == pytest.approx(MID_GREY, rel=1e-5)
    assert default_exposure_ev(torch.stack([img, 2 * img])).tolist() == pytest.approx([float(ev), float(ev) - 1], abs=1e-5)


# ----------------------------------------------------------------------------- scenes


def test_render_scene_is_deterministic_positive_and_seed_dependent():
    a = render_scene(7)
    assert a.shape == (3, 256, 256) and a.dtype == torch.float32
    assert torch.equal(a, render_scene(7))
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(a, render_scene(7))
    b = render_scene(8)
    assert (a - b).abs().mean() > 0.01
    assert torch.isfinite(a).all() and bool((a > 0).all())
    small = render_scene(-3, height=48, width=80, device="cpu")
    assert small.shape == (3, 48, 80) and bool((small > 0).all())
    assert float(default_exposure_ev(a)) == pytest.approx(0.0, abs=1e-5)


def test_render_scene_config_and_argument_errors():
    dim = render_scene(1, config=ProceduralSceneConfig(emitter_range=(10.0, 10.0), highlight_fraction=(0.0, 0.0)))
    bright = render_scene(1)
    assert float(stats.dynamic_range_stops(dim)) < float(stats.dynamic_range_stops(bright))
    with pytest.raises(ConfigError):
        ProceduralSceneConfig(emitter_range=(1e5, 1e3))
    with pytest.raises(ConfigError):
        ProceduralSceneConfig(highlight_fraction=(0.1, 0.9))
    with pytest.raises(ConfigError):
        render_scene(0, height=8, width=8)


@pytest.fixture(scope="module")
def scenes() -> torch.Tensor:
    return torch.stack([render_scene(seed) for seed in range(NUM_SCENES)])


def _real_crop(img: torch.Tensor) -> torch.Tensor:
    """Central crop of a real HDR image (central band of a lat-long panorama), area-resized."""
    _, h, w = img.shape
    if abs(w / h - 2.0) < 0.05:  # 360x180 lat-long panorama: the central band (+-45 deg latitude)
        img = img[:, h // 4 : h // 4 + h // 2]
        _, h, w = img.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = img[:, y0 : y0 + side, x0 : x0 + side]
    return F.interpolate(crop[None], size=(REAL_SIZE, REAL_SIZE), mode="area")[0]


@pytest.fixture(scope="module")
def real_crops(real_hdr_dir: Path) -> dict[str, torch.Tensor]:
    from hdrlab.io import read_hdr

    files = sorted(p for p in real_hdr_dir.rglob("*") if p.suffix.lower() in (".exr", ".hdr"))
    assert len(files) >= 30
    with warnings.catch_warnings():  # the reader warns about clamped tiny negatives (CandleGlass.exr)
        warnings.simplefilter("ignore")
        return {str(p.relative_to(real_hdr_dir)): _real_crop(read_hdr(p)) for p in files}


def test_dynamic_range_and_clipping_targets(scenes):
    dr = stats.dynamic_range_stops(scenes)
    assert torch.isfinite(dr).all()
    p01 = torch.quantile(luminance(scenes).flatten(1), 0.001, dim=1)
    assert bool((p01 > 0).all())
    ev = default_exposure_ev(scenes)
    clipped = stats.clipped_fraction(scenes, ev)
    in_range = int(((clipped >= 0.02) & (clipped <= 0.20)).sum())
    print(
        f"\n{NUM_SCENES} scenes: dynamic range median {float(dr.median()):.2f} stops "
        f"(min {float(dr.min()):.2f}, max {float(dr.max()):.2f}); clipped at default exposure: "
        f"median {100 * float(clipped.median()):.2f}%, {in_range}/{NUM_SCENES} in [2%, 20%]"
    )
    assert float(dr.median()) >= 14.0
    assert in_range >= 95
    assert 0.02 <= float(clipped.median()) <= 0.20


def test_image_statistics_within_real_range(scenes, real_crops):
    real = torch.stack(list(real_crops.values()))
    real_slope, real_kurt = stats.power_spectrum_slope(real), stats.gradient_kurtosis(real)
    slope, kurt = stats.power_spectrum_slope(scenes), stats.gradient_kurtosis(scenes)
    s_lo, s_hi = float(real_slope.min()), float(real_slope.max())
    k_lo, k_hi = float(real_kurt.min()), float(real_kurt.max())
    slope_in = int(((slope >= s_lo) & (slope <= s_hi)).sum())
    kurt_in = int(((kurt >= k_lo) & (kurt <= k_hi)).sum())
    print(
        f"\nreal ({len(real_crops)} files): spectral slope [{s_lo:.2f}, {s_hi:.2f}] median {float(real_slope.median()):.2f}; "
        f"gradient kurtosis [{k_lo:.1f}, {k_hi:.1f}] median {float(real_kurt.median()):.1f}\n"
        f"procedural ({NUM_SCENES}): slope median {float(slope.median()):.2f}, {slope_in}/{NUM_SCENES} in range; "
        f"kurtosis median {float(kurt.median()):.1f}, {kurt_in}/{NUM_SCENES} in range"
    )
    assert s_lo <= float(slope.median()) <= s_hi
    assert k_lo <= float(kurt.median()) <= k_hi
    assert slope_in >= 80
    assert kurt_in >= 80


# ----------------------------------------------------------------------------- hdrlab synth


def test_synth_command_end_to_end(tmp_path, capsys):
    from hdrlab.io import read_hdr, read_ldr

    out = tmp_path / "scenes"
    assert synth.main(["--count", "3", "--seed", "5", "-o", str(out), "--size", "48x64"]) == 0
    printed = capsys.readouterr().out
    assert "3 scene(s)" in printed and str(out) in printed and "median dynamic range" in printed
    for seed in (5, 6, 7):
        back = read_hdr(out / f"scene_{seed}.exr")
        expected = render_scene(seed, height=48, width=64)
        assert back.shape == (3, 48, 64)
        assert torch.allclose(back, expected, rtol=1e-3, atol=0)  # float32 EXR: lossless in practice
    sheet = read_ldr(out / "contact_sheet.png")
    assert tuple(sheet.image.shape[-2:]) == (48, 3 * 64 + 2 * 2)
    assert not list(out.glob("*.tmp*"))


def test_synth_command_rejects_bad_arguments(tmp_path):
    from hdrlab.cli import main as cli_main

    with pytest.raises(ConfigError):
        synth.main(["--count", "0", "-o", str(tmp_path)])
    with pytest.raises(ConfigError):
        synth.main(["--count", "1", "-o", str(tmp_path), "--size", "big"])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HDRLabError):
        synth.main(["--count", "1", "-o", str(blocker / "sub")])
    assert cli_main(["synth", "--count", "-2", "-o", str(tmp_path)]) == 2


def test_private_quantile_and_batched_periodic_lookup_match_references():
    from hdrlab.data.procedural import _pad_periodic, _quantile, _sample_padded

    values = torch.rand(1001, generator=torch.Generator().manual_seed(4))
    for q in (0.0, 0.04, 0.5, 0.123, 1.0):
        assert float(_quantile(values, q)) == pytest.approx(float(torch.quantile(values, q)), abs=1e-7)
    tiles = fractal_noise(16, 16, generator=torch.Generator().manual_seed(5)), fractal_noise(16, 16)
    u = torch.rand(2, 9, 7, generator=torch.Generator().manual_seed(6)) * 5 - 2
    v = torch.rand(2, 9, 7, generator=torch.Generator().manual_seed(7)) * 5 - 2
    batched = _sample_padded(_pad_periodic(torch.stack(tiles)[:, None]), u, v)[:, 0]
    for i, tile in enumerate(tiles):
        assert torch.equal(batched[i], sample_periodic(tile, u[i], v[i]))




# ----------------------------------------------------------------------------- speed-ups stay exact


@pytest.mark.parametrize("height", [48, 64, 128, 256])
def test_optical_blur_matches_kornia_bit_for_bit(height):
    """The direct depthwise blur (and its skip of a negligible kernel) equals kornia's separable filter."""
    import kornia

    from hdrlab.data.procedural import _gaussian_kernel1d, _optical_blur

    gen = torch.Generator().manual_seed(height)
    image = torch.exp(4 * torch.randn(3, height, height + 8, generator=gen))  # radiance-like, ~1e-5 .. 1e5
    sigma = 0.4 * height / 256.0
    ksize = 2 * math.ceil(3 * sigma) + 1
    kernel = _gaussian_kernel1d(ksize, sigma)
    expected = kornia.filters.filter2d_separable(image[None], kernel, kernel, border_type="reflect")[0]
    assert torch.equal(_optical_blur(image, ksize, sigma), expected)
    spread = image.clone()
    spread[0, 0, 0] = 1e30  # the negligible-kernel skip must not apply where a tap could still count
    expected = kornia.filters.filter2d_separable(spread[None], kernel, kernel, border_type="reflect")[0]
    assert torch.equal(_optical_blur(spread, ksize, sigma), expected)


def test_render_scene_returns_an_ordinary_tensor_and_cached_grids_stay_unchanged():
    """Rendering runs in inference mode internally; callers get a normal tensor they may modify."""
    from hdrlab.data.procedural import _pixel_grid

    ys, xs = _pixel_grid(32, 40)
    before = (ys.clone(), xs.clone())
    a = render_scene(11, height=32, width=40)
    assert not a.is_inference() and not a.requires_grad
    a.mul_(2.0)  # in place on the result is allowed
    assert torch.equal(render_scene(11, height=32, width=40) * 2.0, a)
    ys2, xs2 = _pixel_grid(32, 40)
    assert torch.equal(ys2, before[0]) and torch.equal(xs2, before[1])
    assert torch.equal(xs2[0], torch.arange(40, dtype=torch.float32) + 0.5)
