"""``hdrlab merge`` on small synthetic brackets written as JPEG (EXIF exposure times) and PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from hdrlab import cli
from hdrlab.commands.merge import main
from hdrlab.errors import ConfigError, HDRLabError
from hdrlab.io import read_hdr, read_ldr

EVS = (-2.0, 0.0, 2.0)
TIMES = (1, 120), (1, 30), (2, 15)  # 4x apart, the middle is the reference


def scene(height: int = 72, width: int = 96) -> np.ndarray:
    """Smooth radiance ``[H, W, 3]`` relative to the middle exposure (about 8 stops), with a
    band-limited 5 % texture (white pixel noise would be JPEG's worst case, unlike photographs)."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=np.float64)[:, None, None]
    base = np.exp(2.0 * np.sin(3 * xx + 1) * np.cos(2 * yy) + xx - 1.2)
    texture = 1.0 + 0.05 * np.sin(40 * xx[..., None] + np.arange(3)) * np.cos(31 * yy)[..., None]
    return np.stack([0.8 * base, base, 1.2 * base], axis=-1) * texture


def codes_at(hdr: np.ndarray, ev: float) -> np.ndarray:
    return np.round(255 * np.clip(hdr * 2.0**ev, 0, 1) ** (1 / 2.2)).astype(np.uint8)


@pytest.fixture(scope="module")
def bracket(tmp_path_factory) -> tuple[np.ndarray, list[Path], list[Path]]:
    """The radiance, 3 JPEGs with EXIF ExposureTime (written in shuffled order) and 3 PNGs without."""
    folder = tmp_path_factory.mktemp("bracket")
    hdr = scene()
    jpegs, pngs = [], []
    for ev, (num, den) in zip(EVS, TIMES):
        codes = codes_at(hdr, ev)
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x829A] = IFDRational(num, den)
        jpg = folder / f"shot_{den}.jpg"
        Image.fromarray(codes).save(jpg, exif=exif, quality=97, subsampling=0)
        png = folder / f"shot_ev{ev:+.0f}.png"
        Image.fromarray(codes).save(png)
        jpegs.append(jpg)
        pngs.append(png)
    return hdr, [jpegs[2], jpegs[0], jpegs[1]], pngs


def median_rel_error(out: np.ndarray, hdr: np.ndarray, ok: np.ndarray) -> float:
    return float(np.median(np.abs(out[ok] / hdr[ok] - 1)))


def recoverable(hdr: np.ndarray) -> np.ndarray:
    return (codes_at(hdr, EVS[0]).max(-1) < 255) & (codes_at(hdr, EVS[-1]).min(-1) > 0)


def test_merge_jpegs_with_exif_times(bracket, tmp_path):
    hdr, jpegs, _ = bracket
    assert read_ldr(jpegs[0]).exposure_time == pytest.approx(2 / 15)
    out = tmp_path / "merged.exr"
    assert main([str(p) for p in jpegs] + ["-o", str(out)]) == 0
    radiance = read_hdr(out).permute(1, 2, 0).numpy()
    assert radiance.shape == hdr.shape
    err = median_rel_error(radiance, hdr, recoverable(hdr))  # no scale fit: white-normalised response
    print(f"merge CLI (JPEG q97, EXIF times): median rel error {err:.4f}")
    assert err < 0.03
    preview = read_ldr(tmp_path / "merged_preview.png")
    assert preview.image.shape == (3, 72, 96) and 0.05 < float(preview.image.mean()) < 0.95


def test_merge_pngs_with_ev_matches_times(bracket, tmp_path):
    hdr, _, pngs = bracket
    a, b = tmp_path / "ev.exr", tmp_path / "times.exr"
    assert main([str(p) for p in pngs] + ["--ev", *map(str, EVS), "-o", str(a)]) == 0
    assert main([str(p) for p in pngs] + ["--times", "0.25", "1", "4", "-o", str(b)]) == 0
    ra, rb = read_hdr(a).permute(1, 2, 0).numpy(), read_hdr(b).permute(1, 2, 0).numpy()
    assert np.allclose(ra, rb, rtol=1e-6)
    err = median_rel_error(ra, hdr, recoverable(hdr))
    print(f"merge CLI (PNG, --ev): median rel error {err:.4f}")
    assert err < 0.02


def test_merge_mertens_png_and_exr(bracket, tmp_path):
    _, _, pngs = bracket
    png = tmp_path / "fused.png"
    assert main([str(p) for p in pngs] + ["--ev", *map(str, EVS), "--method", "mertens", "-o", str(png)]) == 0
    fused = read_ldr(png).image
    assert fused.shape == (3, 72, 96) and 0.1 < float(fused.mean()) < 0.9
    exr = tmp_path / "fused.exr"
    assert main([str(p) for p in pngs] + ["--method", "mertens", "--ev", *map(str, EVS), "-o", str(exr)]) == 0
    assert np.abs(read_hdr(exr).numpy() - fused.numpy()).max() <= 0.5 / 255 + 1e-6
    assert (tmp_path / "fused_preview.png").exists()


def test_merge_errors_name_the_files(bracket, tmp_path):
    _, jpegs, pngs = bracket
    out = str(tmp_path / "x.exr")
    with pytest.raises(ConfigError, match=r"no EXIF ExposureTime in shot_ev-2.png.*--times"):
        main([str(p) for p in pngs] + ["-o", out])
    with pytest.raises(ConfigError, match=r"--ev has 2 values but 3 images"):
        main([str(p) for p in pngs] + ["--ev", "0", "2", "-o", out])
    with pytest.raises(ConfigError, match=r"at least 2 exposures.*shot_ev-2.png"):
        main([str(pngs[0]), "--ev", "0", "-o", out])
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(small)
    with pytest.raises(ConfigError, match=r"differ in size.*small.png 12x10"):
        main([str(pngs[0]), str(small), "--ev", "0", "1", "-o", out])
    with pytest.raises(ConfigError, match="use an .exr"):
        main([str(p) for p in jpegs] + ["-o", str(tmp_path / "x.png")])
    with pytest.raises(HDRLabError):
        main([str(tmp_path / "missing.jpg"), str(jpegs[0]), "-o", out])


def test_cli_dispatch_prints_user_errors(bracket, tmp_path, capsys):
    _, _, pngs = bracket
    assert cli.main(["merge", *map(str, pngs), "-o", str(tmp_path / "y.exr")]) == 2
    assert "--times" in capsys.readouterr().err
