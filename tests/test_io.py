"""Tests for hdrlab.io against real files, OpenCV / OpenEXR / PIL decodes and closed-form values."""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
import torch
from PIL import Image, ImageOps

from hdrlab import io as hio
from hdrlab.errors import HDRIOError

REC709_Y = np.array([0.2126, 0.7152, 0.0722])


# --------------------------------------------------------------------------- helpers


def _real_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".exr", ".hdr"))


def _exr_shape_from_header(path: Path) -> tuple[int, int]:
    with OpenEXR.File(str(path), header_only=True) as f:
        (x0, y0), (x1, y1) = dict(f.header())["dataWindow"]
    return int(y1 - y0 + 1), int(x1 - x0 + 1)


def _hdr_shape_from_header(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:4096]
    m = re.search(rb"\n\n-Y (\d+) \+X (\d+)\n", head)
    assert m is not None, path
    return int(m.group(1)), int(m.group(2))


def _exr_planes(path: Path) -> dict[str, np.ndarray]:
    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {k: np.asarray(v.pixels, dtype=np.float32) for k, v in dict(f.channels()).items()}


def _write_raw_exr(path: Path, channels: dict[str, np.ndarray], **header) -> Path:
    head = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, **header}
    with OpenEXR.File(head, channels) as f:
        f.write(str(path))
    return path


def _log_uniform(h: int = 48, w: int = 64, lo: float = 1e-3, hi: float = 1e4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.exp(torch.empty(3, h, w).uniform_(np.log(lo), np.log(hi), generator=g)).float()


def _no_leftovers(folder: Path, target: Path) -> None:
    assert not target.exists()
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name] == []


# --------------------------------------------------------------------------- real files


def test_all_real_files_load_with_header_shape(real_hdr_dir: Path):
    files = _real_files(real_hdr_dir)
    assert len(files) == 31
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clamping notes on files with tiny negatives
            img = hio.read_hdr(path)
        expected = _exr_shape_from_header(path) if path.suffix == ".exr" else _hdr_shape_from_header(path)
        assert img.dtype == torch.float32 and img.shape == (3, *expected), path
        assert torch.isfinite(img).all() and (img >= 0).all(), path
        assert img.max() > 0, path


def test_radiance_files_equal_opencv_decode(real_hdr_dir: Path):
    files = [p for p in _real_files(real_hdr_dir) if p.suffix == ".hdr"]
    assert len(files) == 13
    for path in files:
        ref = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1].transpose(2, 0, 1)
        assert torch.equal(hio.read_hdr(path), torch.from_numpy(ref.copy())), path
        assert hio.radiance_header_size(path) == _hdr_shape_from_header(path)


@pytest.mark.parametrize("name", ["CrissyField", "Flowers", "MtTamNorth", "Garden"])
def test_luminance_chroma_matches_file_luminance(real_hdr_dir: Path, name: str):
    """Rec.709 luminance of the RGB vs the file's Y over pixels with Y > 1e-4 (relative units)."""
    path = real_hdr_dir / "openexr-images" / "LuminanceChroma" / f"{name}.exr"
    y_file = _exr_planes(path)["Y"].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb = hio.read_hdr(path).double().numpy()
    lum = np.tensordot(REC709_Y, rgb, axes=1)
    mask = y_file > 1e-4
    assert mask.mean() > 0.99
    rel = np.abs(lum[mask] - y_file[mask]) / y_file[mask]
    assert np.median(rel) < 0.01 and np.percentile(rel, 99) < 0.05  # observed: <= 1.9e-5 / 5.9e-5
    if name == "Garden":  # Y only: grey in all three channels
        assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[1], rgb[2])


def test_luminance_chroma_has_colour_and_warns_on_clamp(real_hdr_dir: Path):
    path = real_hdr_dir / "openexr-images" / "LuminanceChroma" / "Flowers.exr"
    with pytest.warns(UserWarning, match=r"clamped \d+ small negative"):
        rgb = hio.read_hdr(path)
    chroma = (rgb.max(0).values - rgb.min(0).values) / rgb.max(0).values.clamp_min(1e-6)
    assert chroma.median() > 0.05  # a colour photograph, not grey
    with pytest.raises(HDRIOError, match="Flowers.exr"):
        hio.read_hdr(path, strict=True)


def test_multiview_reads_default_view(real_hdr_dir: Path):
    adjuster = real_hdr_dir / "openexr-images" / "MultiView" / "Adjuster.exr"  # multiView = [center, left, right]
    planes = _exr_planes(adjuster)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = hio.read_hdr(adjuster).numpy()
    for i, c in enumerate("RGB"):
        assert np.array_equal(img[i], np.maximum(planes[c], 0))
    assert not np.array_equal(img[0], np.maximum(planes["left.R"], 0))
    fog = real_hdr_dir / "openexr-images" / "MultiView" / "Fog.exr"  # Y only, views [left, right]
    planes = _exr_planes(fog)
    img = hio.read_hdr(fog).numpy()
    assert all(np.array_equal(img[i], planes["Y"]) for i in range(3))
    assert not np.array_equal(planes["Y"], planes["right.Y"])


def test_alpha_dropped_premultiplied_kept(real_hdr_dir: Path):
    path = real_hdr_dir / "openexr-images" / "ScanLines" / "CandleGlass.exr"
    planes = _exr_planes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = hio.read_hdr(path).numpy()
    assert (planes["A"] == 0).any() and (planes["R"][planes["A"] == 0] > 0).any()
    for i, c in enumerate("RGB"):
        assert np.array_equal(img[i], np.maximum(planes[c], 0))


def test_tiled_and_mipmapped_level0(real_hdr_dir: Path):
    for rel in ("Tiles/GoldenGate.exr", "MultiResolution/KernerEnvLatLong.exr"):
        path = real_hdr_dir / "openexr-images" / rel
        planes = _exr_planes(path)
        img = hio.read_hdr(path).numpy()
        assert img.shape[1:] == planes["R"].shape == _exr_shape_from_header(path)
        assert np.array_equal(img[1], planes["G"])


def test_chromaticities_file_converted(real_hdr_dir: Path):
    path = real_hdr_dir / "openexr-images" / "ScanLines" / "Tree.exr"
    with OpenEXR.File(str(path), header_only=True) as f:
        chroma = dict(f.header())["chromaticities"]
    planes = _exr_planes(path)
    raw = np.stack([planes[c] for c in "RGB"], -1).astype(np.float64)
    matrix = hio.chromaticities_to_rec709_matrix(chroma)
    assert not np.allclose(matrix, np.eye(3), atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = hio.read_hdr(path).double().numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(img, np.maximum(raw @ matrix.T, 0), rtol=1e-6, atol=1e-6)


def test_dwab_files_read(real_hdr_dir: Path):
    path = real_hdr_dir / "polyhaven_blender" / "studio.exr"
    with OpenEXR.File(str(path), header_only=True) as f:
        assert dict(f.header())["compression"] == OpenEXR.DWAB_COMPRESSION
    planes = _exr_planes(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = hio.read_hdr(path).numpy()
    assert np.array_equal(img[2], np.maximum(planes["B"], 0))


def test_exr_header_size(real_hdr_dir: Path):
    path = real_hdr_dir / "openexr-images" / "LuminanceChroma" / "CrissyField.exr"
    assert hio.exr_header_size(path) == (810, 1218)


# --------------------------------------------------------------------------- colour maths (closed form)


def test_rec709_primary_matrix_matches_iec_61966_2_1():
    m = hio.rgb_to_xyz_matrix(hio.REC709_PRIMARIES, hio.D65_WHITE)
    ref = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    np.testing.assert_allclose(m, ref, atol=1e-4)
    np.testing.assert_allclose(hio.luminance_weights_from_chromaticities(None), REC709_Y, atol=1e-4)
    np.testing.assert_allclose(hio.chromaticities_to_rec709_matrix(None), np.eye(3))
    rec709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
    np.testing.assert_allclose(hio.chromaticities_to_rec709_matrix(rec709), np.eye(3), atol=1e-12)


def test_bradford_d50_to_d65_matches_lindbloom():
    m = hio.bradford_adaptation_matrix((0.3457, 0.3585), (0.3127, 0.3290))
    ref = np.array(
        [[0.9555766, -0.0230393, 0.0631636], [-0.0282895, 1.0099416, 0.0210077], [0.0122982, -0.0204830, 1.3299098]]
    )
    np.testing.assert_allclose(m, ref, atol=1e-3)


def test_chromaticity_conversion_keeps_file_white_neutral():
    p3_d50 = (0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3457, 0.3585)
    white = hio.chromaticities_to_rec709_matrix(p3_d50) @ np.ones(3)
    np.testing.assert_allclose(white, np.ones(3), atol=1e-9)
    tinted = hio.chromaticities_to_rec709_matrix(p3_d50, adaptation="none") @ np.ones(3)
    assert tinted[2] < 0.9 * tinted[0]  # D50 white is yellowish under D65 without adaptation


def test_yca_to_rgb_inverts_forward_definition():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.01, 5.0, size=(8, 9, 3))
    y = rgb @ REC709_Y
    out = hio.yca_to_rgb(y, rgb[..., 0] / y - 1, rgb[..., 2] / y - 1, REC709_Y)
    np.testing.assert_allclose(out, rgb, rtol=1e-5)
    grey = hio.yca_to_rgb(np.full((2, 2), 3.0), np.zeros((2, 2)), np.zeros((2, 2)), REC709_Y)
    np.testing.assert_allclose(grey, 3.0, rtol=1e-6)


def test_upsample_chroma_sample_positions():
    src = np.arange(12, dtype=np.float32).reshape(3, 4) * 10  # samples at even pixels
    out = hio.upsample_chroma(src, 6, 8, 2, 2)
    assert out.shape == (6, 8)
    np.testing.assert_allclose(out[::2, ::2], src, atol=1e-4)  # exact at sample positions
    np.testing.assert_allclose(out[0, 1], 5.0, atol=1e-4)  # midway between 0 and 10
    np.testing.assert_allclose(out[1, 0], 20.0, atol=1e-4)  # midway between rows 0 and 40
    np.testing.assert_allclose(out[:, -1], out[:, -2], atol=1e-4)  # border clamps


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", ["zip", "piz", "none"])
def test_exr_float32_round_trip_bit_exact(tmp_path: Path, compression: str):
    img = _log_uniform()
    path = hio.write_exr(tmp_path / "a.exr", img, compression=compression)
    assert torch.equal(hio.read_hdr(path), img)
    assert hio.exr_header_size(path) == (48, 64)


def test_exr_half_round_trip_within_half_precision(tmp_path: Path):
    img = _log_uniform()
    back = hio.read_hdr(hio.write_exr(tmp_path / "h.exr", img, half=True, compression="piz"))
    rel = ((back - img).abs() / img).max().item()
    assert rel <= 2.0**-11  # observed ~4.88e-4
    with pytest.raises(HDRIOError, match="h2.exr"):
        hio.write_exr(tmp_path / "h2.exr", img * 10, half=True)  # 1e5 overflows half


def test_radiance_round_trip_within_rgbe_precision(tmp_path: Path):
    img = _log_uniform()
    back = hio.read_hdr(hio.write_radiance_hdr(tmp_path / "a.hdr", img))
    rel_to_max = ((back - img).abs() / img.max(0, keepdim=True).values).max().item()
    assert rel_to_max <= 0.01  # observed ~7.8e-3 (8-bit mantissa, shared exponent)


def test_pfm_round_trip_bit_exact_and_big_endian(tmp_path: Path):
    img = _log_uniform()
    assert torch.equal(hio.read_hdr(hio.write_pfm(tmp_path / "a.pfm", img)), img)
    # hand-made big-endian file (positive scale), rows stored bottom-to-top
    arr = img.numpy().transpose(1, 2, 0)
    data = np.ascontiguousarray(arr[::-1]).astype(">f4").tobytes()
    (tmp_path / "be.pfm").write_bytes(b"PF\n64 48\n1.0\n" + data)
    assert torch.equal(hio.read_hdr(tmp_path / "be.pfm"), img)
    grey = np.ascontiguousarray(arr[::-1, :, 0]).astype("<f4").tobytes()
    (tmp_path / "g.pfm").write_bytes(b"Pf\n64 48\n-1.0\n" + grey)
    back = hio.read_hdr(tmp_path / "g.pfm")
    assert torch.equal(back[1], img[0]) and torch.equal(back[2], img[0])


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip_exact(tmp_path: Path, bits: int):
    top = (1 << bits) - 1
    codes = torch.randint(0, top + 1, (3, 20, 30))
    img = codes.float() / top
    ldr = hio.read_ldr(hio.write_png(tmp_path / "a.png", img, bits=bits))
    assert ldr.bit_depth == bits and ldr.exposure_time is None
    assert torch.equal(ldr.image, img)
    ref = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert np.array_equal(ref.transpose(2, 0, 1), codes.numpy())
    if bits == 8:  # uint8 HWC numpy input too
        hio.write_png(tmp_path / "b.png", codes.numpy().astype(np.uint8).transpose(1, 2, 0))
        assert torch.equal(hio.read_ldr(tmp_path / "b.png").image, img)


def test_read_ldr_srgb_decode_and_16bit_tiff(tmp_path: Path):
    codes = np.full((4, 5, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), codes)
    lin = hio.read_ldr(tmp_path / "g.png", srgb_decode=True).image
    np.testing.assert_allclose(lin.numpy(), ((128 / 255 + 0.055) / 1.055) ** 2.4, rtol=1e-5)  # 0.21586
    tif = np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000
    cv2.imwrite(str(tmp_path / "t.tif"), tif)
    ldr = hio.read_ldr(tmp_path / "t.tif")
    assert ldr.bit_depth == 16
    assert torch.equal(ldr.image, torch.from_numpy(tif[..., ::-1].transpose(2, 0, 1) / np.float32(65535)))


def test_write_hdr_image_dispatch(tmp_path: Path):
    img = _log_uniform(8, 8)
    assert torch.equal(hio.read_hdr(hio.write_hdr_image(tmp_path / "d.exr", img, compression="piz")), img)
    assert torch.equal(hio.read_hdr(hio.write_hdr_image(tmp_path / "d.pfm", img)), img)
    with pytest.raises(HDRIOError, match="d.bmp"):
        hio.write_hdr_image(tmp_path / "d.bmp", img)


# --------------------------------------------------------------------------- EXIF


def _marker_image() -> Image.Image:
    arr = np.zeros((6, 10, 3), np.uint8)
    arr[:2, :3] = (255, 0, 0)  # red block top-left
    arr[-1, :] = (0, 0, 255)  # blue bottom row
    arr[:, -1, 1] = 200  # green right column
    return Image.fromarray(arr)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_transpose(tmp_path: Path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    _marker_image().save(path, exif=exif)  # PNG eXIf chunk: lossless
    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32) / 255
    got = hio.read_ldr(path).image.numpy().transpose(1, 2, 0)
    assert np.array_equal(got, ref)


def test_jpeg_exif_exposure_time_and_orientation(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x829A] = 1 / 125
    path = tmp_path / "cam.jpg"
    _marker_image().save(path, exif=exif, quality=95)
    ldr = hio.read_ldr(path)
    assert ldr.exposure_time == pytest.approx(1 / 125)
    assert ldr.image.shape == (3, 10, 6)  # rotated 90 degrees
    with Image.open(path) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32) / 255
    assert np.abs(ldr.image.numpy().transpose(1, 2, 0) - ref).max() <= 3 / 255  # two JPEG decoders


# --------------------------------------------------------------------------- bad input


def _bad(fn, path: Path, **kw) -> str:
    with pytest.raises(HDRIOError) as err:
        fn(path, **kw)
    assert path.name in str(err.value), str(err.value)
    return str(err.value)


def test_bad_inputs_name_the_file(tmp_path: Path, real_hdr_dir: Path):
    exr_src = (real_hdr_dir / "openexr-images" / "ScanLines" / "Cannon.exr").read_bytes()
    hdr_src = (real_hdr_dir / "polyhaven_drei" / "lebombo_1k.hdr").read_bytes()
    assert "not found" in _bad(hio.read_hdr, tmp_path / "missing.exr")
    for name in ("empty.exr", "empty.hdr", "empty.pfm"):
        (tmp_path / name).write_bytes(b"")
        assert "empty" in _bad(hio.read_hdr, tmp_path / name)
    (tmp_path / "trunc.exr").write_bytes(exr_src[: len(exr_src) // 2])
    _bad(hio.read_hdr, tmp_path / "trunc.exr")
    (tmp_path / "head.exr").write_bytes(exr_src[:200])
    _bad(hio.read_hdr, tmp_path / "head.exr")
    (tmp_path / "garbage.exr").write_bytes(exr_src[:4] + bytes(range(256)) * 40)
    _bad(hio.read_hdr, tmp_path / "garbage.exr")
    (tmp_path / "trunc.hdr").write_bytes(hdr_src[: len(hdr_src) // 2])
    _bad(hio.read_hdr, tmp_path / "trunc.hdr")
    corrupt = bytearray(hdr_src)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 2000] = np.random.default_rng(0).bytes(2000)
    (tmp_path / "corrupt.hdr").write_bytes(bytes(corrupt))
    _bad(hio.read_hdr, tmp_path / "corrupt.hdr")
    hio.write_png(tmp_path / "real.png", torch.rand(3, 4, 4))
    (tmp_path / "png.exr").write_bytes((tmp_path / "real.png").read_bytes())
    assert "PNG" in _bad(hio.read_hdr, tmp_path / "png.exr")
    (tmp_path / "img.xyz").write_bytes(b"abc")
    assert "unknown" in _bad(hio.read_hdr, tmp_path / "img.xyz")
    assert "unknown" in _bad(hio.read_ldr, tmp_path / "img.xyz")
    (tmp_path / "exr.png").write_bytes(exr_src[:1000])
    assert "OpenEXR" in _bad(hio.read_ldr, tmp_path / "exr.png")
    (tmp_path / "huge.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1000000 +X 1000000\n" + b"\0" * 64)
    assert "absurd" in _bad(hio.read_hdr, tmp_path / "huge.hdr")
    (tmp_path / "huge.pfm").write_bytes(b"PF\n1000000 1000000\n-1.0\n" + b"\0" * 64)
    assert "absurd" in _bad(hio.read_hdr, tmp_path / "huge.pfm")
    (tmp_path / "zero.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 0 +X 4\n")
    assert "empty image" in _bad(hio.read_hdr, tmp_path / "zero.hdr")
    (tmp_path / "zero.pfm").write_bytes(b"PF\n0 0\n-1.0\n")
    assert "empty image" in _bad(hio.read_hdr, tmp_path / "zero.pfm")
    (tmp_path / "trunc.pfm").write_bytes(b"PF\n4 4\n-1.0\n" + b"\0" * 20)
    assert "truncated" in _bad(hio.read_hdr, tmp_path / "trunc.pfm")


def test_bad_exr_content(tmp_path: Path):
    ones = np.ones((4, 5), np.float32)
    blob = bytearray(hio.write_exr(tmp_path / "small.exr", np.ones((4, 5, 3), np.float32)).read_bytes())
    key = b"dataWindow\0box2i\0"
    at = blob.index(key) + len(key) + 4  # after the attribute size: xMin, yMin, xMax, yMax (int32 LE)
    assert struct.unpack("<4i", blob[at : at + 16]) == (0, 0, 4, 3)
    blob[at + 8 : at + 16] = struct.pack("<2i", 999_999, 999_999)
    (tmp_path / "huge.exr").write_bytes(bytes(blob))
    assert "absurd" in _bad(hio.read_hdr, tmp_path / "huge.exr")
    _write_raw_exr(tmp_path / "uv.exr", {"U": ones, "V": ones})
    assert "no colour channels" in _bad(hio.read_hdr, tmp_path / "uv.exr")
    _write_raw_exr(tmp_path / "rg.exr", {"R": ones, "G": ones})
    _bad(hio.read_hdr, tmp_path / "rg.exr")
    nan = ones.copy()
    nan[1, 2] = np.nan
    _write_raw_exr(tmp_path / "nan.exr", {"R": nan, "G": ones, "B": ones})
    assert "NaN/Inf" in _bad(hio.read_hdr, tmp_path / "nan.exr")
    inf = ones.copy()
    inf[0, 0] = np.inf
    cv2.imwrite(str(tmp_path / "inf.pfm"), np.stack([inf, ones, ones], -1))
    assert "NaN/Inf" in _bad(hio.read_hdr, tmp_path / "inf.pfm")
    signed = ones.copy()
    signed[0, :] = -0.5  # signed data: -0.5 x max, beyond the default tolerance 0.05
    _write_raw_exr(tmp_path / "signed.exr", {"R": signed, "G": ones, "B": ones})
    assert "tolerance" in _bad(hio.read_hdr, tmp_path / "signed.exr")
    noise = ones.copy()
    noise[0, :2] = -1e-3
    _write_raw_exr(tmp_path / "noise.exr", {"R": noise, "G": ones, "B": ones})
    with pytest.warns(UserWarning, match="clamped 2 small negative"):
        img = hio.read_hdr(tmp_path / "noise.exr")
    assert img.min() == 0.0 and img[0, 0, 2] == 1.0
    assert "strict" in _bad(hio.read_hdr, tmp_path / "noise.exr", strict=True)


def test_writers_reject_bad_values_atomically(tmp_path: Path):
    good = torch.rand(3, 4, 5)
    for bad_value in (float("nan"), float("inf"), -1.0):
        img = good.clone()
        img[1, 2, 3] = bad_value
        for name, writer in (("a.exr", hio.write_exr), ("a.hdr", hio.write_radiance_hdr), ("a.pfm", hio.write_pfm)):
            with pytest.raises(HDRIOError, match=name):
                writer(tmp_path / name, img)
            _no_leftovers(tmp_path, tmp_path / name)
    with pytest.raises(HDRIOError, match="two.exr"):
        hio.write_exr(tmp_path / "two.exr", torch.rand(2, 4, 5))
    with pytest.raises(HDRIOError, match="empty.exr"):
        hio.write_exr(tmp_path / "empty.exr", torch.rand(3, 0, 5))
    with pytest.raises(HDRIOError, match="hi.png"):
        hio.write_png(tmp_path / "hi.png", good * 2)
    with pytest.raises(HDRIOError, match="c.exr"):
        hio.write_exr(tmp_path / "c.exr", good, compression="dwab")
    _no_leftovers(tmp_path, tmp_path / "hi.png")


def test_atomic_write_failure_leaves_nothing_and_keeps_old_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "out.hdr"

    def half_then_crash(path: str, img: np.ndarray, params=None) -> bool:
        Path(path).write_bytes(b"#?RADIANCE\npartial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(hio.cv2, "imwrite", half_then_crash)
    with pytest.raises(HDRIOError, match="out.hdr"):
        hio.write_radiance_hdr(target, torch.rand(3, 4, 4))
    _no_leftovers(tmp_path, target)
    monkeypatch.undo()
    old = hio.write_pfm(tmp_path / "keep.pfm", torch.ones(3, 2, 2))
    monkeypatch.setattr(hio.cv2, "imwrite", half_then_crash)
    with pytest.raises(HDRIOError):
        hio.write_pfm(old, torch.zeros(3, 2, 2))
    monkeypatch.undo()
    assert torch.equal(hio.read_hdr(old), torch.ones(3, 2, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pfm"]
    with pytest.raises(HDRIOError, match="nowhere"):
        hio.write_exr(tmp_path / "nowhere" / "x.exr", torch.ones(3, 2, 2))
