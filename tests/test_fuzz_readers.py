"""Fuzzing of :func:`hdrlab.io.read_hdr` and :func:`hdrlab.io.read_ldr` with mutated files.

Hypothesis mutates small valid seed files of every format the readers accept (OpenEXR scanline
zip / piz-half / uncompressed / tiled-luminance / with ``chromaticities``, Radiance RGBE run-length
and flat, PFM colour and grey, PNG 8-bit / 16-bit / palette, JPEG baseline / progressive with EXIF,
TIFF 8-bit / LZW / 16-bit) by bit flips, byte overwrites, truncation, insertions, deletions and
header-field changes (numbers of the text headers replaced by extreme values, binary header
bytes overwritten with boundary integers). Every mutant must either

* load as the documented form: ``read_hdr`` a float32 ``[3, H, W]`` tensor, finite and ``>= 0``;
  ``read_ldr`` an :class:`~hdrlab.io.LDRImage` whose ``image`` is float32 ``[3, H, W]`` in
  ``[0, 1]``, with ``bit_depth`` 8 or 16 and a positive finite or absent ``exposure_time``; or
* raise :class:`~hdrlab.errors.HDRIOError`,

within :data:`LIMIT_S` seconds (a Python-level hang is interrupted by ``SIGALRM``; any read that
returns later than the limit fails too). Any other exception type, a wrong result or a timeout
fails the test with the seed named.

Budget: ``HDRLAB_FUZZ_EXAMPLES`` examples per seed file (default :data:`DEFAULT_EXAMPLES`, the whole
file in well under 40 s). A longer run::

    HDRLAB_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz_readers.py

Hypothesis' example database is off and its home folder (constants cache) is a temporary folder,
so nothing is written to the repository and a failure is reproduced from the printed falsifying
example alone.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from hdrlab import io as hio
from hdrlab.errors import HDRIOError

#: examples per seed file (``HDRLAB_FUZZ_EXAMPLES`` overrides)
DEFAULT_EXAMPLES = 60
EXAMPLES = int(os.environ.get("HDRLAB_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
#: seconds one read may take
LIMIT_S = 2.0

#: numbers written into text headers (PFM size/scale, Radiance resolution line)
_TEXT_NUMBERS = ["0", "-1", "1", "2", "65535", "131073", "4294967297", "99999999999999999999", "-0", "1e38",
                 "3.4e39", "nan", "inf", "-inf", "0x10", " ", ""]
#: boundary integers written into binary headers
_BINARY_VALUES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x00\x00\x00\x00",
                  b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x01\x00",
                  b"\x01\x00\x00\x00", b"\x00\x80\x00\x00"]


def _seeds(folder: Path) -> dict[str, bytes]:
    """Small valid files of every accepted format, ``{file name: bytes}``."""
    rng = np.random.default_rng(0)
    hdr = (rng.random((6, 16, 3)) * 4).astype(np.float32)
    ldr = (rng.random((6, 16, 3)) * 255).astype(np.uint8)
    hio.write_exr(folder / "zip.exr", hdr)
    hio.write_exr(folder / "half_piz.exr", hdr, half=True, compression="piz")
    hio.write_exr(folder / "raw.exr", hdr, compression="none")
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize, tiles.mode = 4, 4, OpenEXR.ONE_LEVEL
    with OpenEXR.File({"type": OpenEXR.tiledimage, "compression": OpenEXR.ZIP_COMPRESSION, "tiles": tiles},
                      {"Y": np.ascontiguousarray(hdr[..., 1])}) as exr:
        exr.write(str(folder / "tiled_y.exr"))
    p3_d65 = (0.68, 0.32, 0.265, 0.69, 0.15, 0.06, 0.3127, 0.329)
    with OpenEXR.File({"type": OpenEXR.scanlineimage, "compression": OpenEXR.NO_COMPRESSION,
                       "chromaticities": p3_d65},
                      {c: np.ascontiguousarray(1.0 + 0.1 * hdr[..., i]) for i, c in enumerate("RGB")}) as exr:
        exr.write(str(folder / "chroma.exr"))
    hio.write_radiance_hdr(folder / "rle.hdr", hdr)
    hio.write_radiance_hdr(folder / "flat.hdr", hdr[:, :6])  # width < 8: stored without run-length coding
    hio.write_pfm(folder / "colour.pfm", hdr)
    cv2.imwrite(str(folder / "grey.pfm"), np.ascontiguousarray(hdr[..., 0]))
    hio.write_png(folder / "rgb8.png", ldr)
    hio.write_png(folder / "rgb16.png", ldr, bits=16)
    Image.fromarray(ldr).convert("P").save(folder / "palette.png")
    cv2.imwrite(str(folder / "baseline.jpg"), ldr)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x829A] = 0.25
    Image.fromarray(ldr).save(folder / "exif_progressive.jpg", exif=exif, progressive=True)
    cv2.imwrite(str(folder / "rgb8.tif"), ldr)
    Image.fromarray(ldr).save(folder / "lzw.tif", compression="tiff_lzw")
    cv2.imwrite(str(folder / "rgb16.tif"), ldr.astype(np.uint16) * 257)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_home(tmp_path_factory: pytest.TempPathFactory):
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis_home"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    seeds = _seeds(tmp_path_factory.mktemp("seeds"))
    assert sorted(seeds) == sorted(SEED_NAMES)
    return seeds


SEED_NAMES = ["zip.exr", "half_piz.exr", "raw.exr", "tiled_y.exr", "chroma.exr", "rle.hdr", "flat.hdr",
              "colour.pfm", "grey.pfm", "rgb8.png", "rgb16.png", "palette.png", "baseline.jpg",
              "exif_progressive.jpg", "rgb8.tif", "lzw.tif", "rgb16.tif"]

_position = st.integers(min_value=0, max_value=1 << 16)
_header_position = st.integers(min_value=0, max_value=127)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(0, 7)),
    st.tuples(st.just("set"), _position, st.integers(0, 255)),
    st.tuples(st.just("truncate"), _position, st.just(0)),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _position, st.integers(1, 16)),
    st.tuples(st.just("header_bytes"), _header_position, st.sampled_from(_BINARY_VALUES)),
    st.tuples(st.just("header_number"), st.integers(0, 7), st.sampled_from(_TEXT_NUMBERS)),
)


def _mutate(data: bytes, mutations: list[tuple]) -> bytes:
    """Applies the drawn mutations in order (positions are taken modulo the current length)."""
    out = bytearray(data)
    for op, where, what in mutations:
        if not out:
            break
        pos = where % len(out)
        if op == "flip":
            out[pos] ^= 1 << what
        elif op == "set":
            out[pos] = what
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = what
        elif op == "delete":
            del out[pos:pos + what]
        elif op == "header_bytes":
            out[pos:pos + len(what)] = what
        else:  # header_number: replace the n-th number of the first 128 bytes (text headers)
            numbers = list(re.finditer(rb"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?", bytes(out[:128])))
            if numbers:
                m = numbers[where % len(numbers)]
                out[m.start():m.end()] = what.encode()
    return bytes(out)


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout


def _read(path: Path):
    """Reads ``path`` with the reader of its extension; returns the result or the exception."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clamped-negative warnings, PIL's EXIF warnings
            if path.suffix in hio.HDR_EXTENSIONS:
                return hio.read_hdr(path), time.perf_counter() - start
            return hio.read_ldr(path), time.perf_counter() - start
    except _Timeout:
        return _Timeout(f"read took more than {LIMIT_S} s"), time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - the caller checks the type
        return err, time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check_loaded(result) -> None:
    """The documented form of a successful read."""
    if isinstance(result, hio.LDRImage):
        img = result.image
        assert result.bit_depth in (8, 16)
        t = result.exposure_time
        assert t is None or (isinstance(t, float) and math.isfinite(t) and t > 0), t
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    else:
        img = result
        assert bool((img >= 0).all())
    assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
    assert img.ndim == 3 and img.shape[0] == 3 and img.shape[1] > 0 and img.shape[2] > 0, tuple(img.shape)
    assert bool(torch.isfinite(img).all())


@pytest.mark.parametrize("name", SEED_NAMES)
def test_mutated_file_loads_or_raises_hdrioerror(name: str, seeds: dict[str, bytes], tmp_path_factory) -> None:
    target = tmp_path_factory.mktemp("mutant") / f"mutant{Path(name).suffix}"
    _check_loaded(_read_seed(target, seeds[name]))

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= DEFAULT_EXAMPLES,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(_mutation, min_size=1, max_size=4))
    def mutant(mutations: list[tuple]) -> None:
        target.write_bytes(_mutate(seeds[name], mutations))
        result, seconds = _read(target)
        assert seconds <= LIMIT_S, f"{name}: read took {seconds:.2f} s (limit {LIMIT_S} s)"
        if isinstance(result, BaseException):
            assert isinstance(result, HDRIOError), f"{name}: {type(result).__name__}: {result}"
            assert str(target) in str(result), f"{name}: the message does not name the file: {result}"
        else:
            _check_loaded(result)

    mutant()


def _read_seed(target: Path, data: bytes):
    target.write_bytes(data)
    result, _ = _read(target)
    assert not isinstance(result, BaseException), f"the unmutated seed does not load: {result!r}"
    return result


#: mutants the fuzzing found that once ended in another exception type
FOUND = [
    ("chroma.exr", [("flip", 98, 0)], "malformed chromaticities attribute"),  # was TypeError (opaque attribute)
    ("colour.pfm", [("truncate", 104, 0), ("set", 108, 10), ("insert", 123, b"N\xd1\xca'\xec\xdb'\xf6\xd1M\x1a5")],
     "OpenCV could not decode the pixels"),  # was cv2.error (OpenCV reads the size lines differently)
]


@pytest.mark.parametrize(("name", "mutations", "message"), FOUND, ids=[f[0] for f in FOUND])
def test_found_mutants_raise_hdrioerror(name: str, mutations: list[tuple], message: str, seeds: dict[str, bytes],
                                        tmp_path: Path) -> None:
    target = tmp_path / f"mutant{Path(name).suffix}"
    target.write_bytes(_mutate(seeds[name], mutations))
    result, _ = _read(target)
    assert isinstance(result, HDRIOError) and message in str(result), repr(result)


def test_truncated_jpeg_is_an_error_but_trailing_data_is_not(tmp_path: Path) -> None:
    """A JPEG cut anywhere before its end-of-image marker raises (libjpeg would fill grey rows);
    bytes after the marker (padding, an appended preview) are accepted."""
    ldr = (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), ldr)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 40, len(data) - 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(HDRIOError, match=r"truncated or corrupt JPEG .*re-export or re-copy it"):
            hio.read_ldr(path)
    path.write_bytes(data + b"\x00" * 64 + data)
    assert tuple(hio.read_ldr(path).image.shape) == (3, 40, 56)
