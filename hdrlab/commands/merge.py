"""``hdrlab merge``: merge a real exposure bracket (8-bit JPEG/PNG/TIFF) into one image.

``hdrlab merge IMG... [--times T... | --ev E...] -o OUT [--method debevec|robertson|mertens]
[--align none|mtb] [--save_crf crf.csv|crf.npy] [--plot_crf crf.png] [--force]``

Reference exposure and radiance scale. The bracket is sorted by exposure time and its middle
exposure (index ``N // 2`` of the sorted bracket: the longer of the two middle ones for an even
``N``) is the *reference*; every exposure's ``ev = log2(t / t_ref)`` and the output are relative to
it. The command prints the reference file, each input's ev and the output's scale.

* ``debevec`` (default): recovers the camera response from the bracket (Debevec & Malik 1997,
  OpenCV-compatible solve, ``--samples``, ``--smoothness``) and writes linear radiance as EXR
  relative to the reference exposure: the response is scaled so code 255 maps to 1 per channel,
  so **1.0 = where the reference exposure clips** (a pixel of radiance ``v`` reads code 255 in the
  reference when ``v >= 1``, and in an exposure ``ev`` stops longer when ``v >= 2**-ev``).
* ``robertson``: OpenCV's Robertson et al. (2003) calibration and merge
  (``cv2.createCalibrateRobertson`` with OpenCV's defaults, 30 iterations / threshold 0.01, then
  ``cv2.createMergeRobertson``) on the 8-bit codes, with exposure times relative to the reference
  (``t_ref = 1``), so OpenCV's output ``E`` is in reference-exposure units up to OpenCV's
  normalisation ``response[128] = 1``. That normalisation is replaced by the Debevec path's
  convention, 1.0 = where the reference clips: per channel, the radiance and the response are
  divided by the clip level read off the data, the value of ``t * E`` that best separates the
  observations an exposure clipped (code 255) from the ones it did not (fewest misclassified; codes
  >= 128 with a usable estimate). OpenCV's own ``response[255]`` cannot serve: it is the *mean*
  ``t * E`` of the clipped observations, above the clip. Without clipped observations in a channel
  the clip level is the response's log-linear extrapolation from its top 16 observed codes to 255.
  OpenCV gives codes 0 and 255 zero weight, so a pixel whose channel is 0 or 255 in every exposure
  would be 0; such pixels get the clip level of the shortest exposure (``1 / t_min``) when they are
  clipped there, else ``response[0] / t_max`` (the Debevec path's ``fallback: extreme``). Robertson
  has no smoothness prior: its curve is only as good as the bracket's overlap (see docs/methods.md).
* ``mertens``: exposure fusion (Mertens et al. 2009, paper weights 1/1/1), a display image in
  ``[0, 1]`` without a radiance scale; written as PNG when ``OUT`` ends in ``.png``, else as EXR.

``--align mtb`` registers every exposure on the reference with OpenCV's median threshold bitmap
alignment (Ward 2003; ``cv2.AlignMTB.calculateShift`` / ``shiftMat``: integer translations only,
no rotation) before merging, and crops the result to the region every shifted exposure covers, as
``AlignMTB(cut=True)`` does. The shifts (``dx`` right, ``dy`` down, applied to each exposure) and the
crop (in the reference's pixel coordinates) are printed. ``--mtb_max_bits`` sets the pyramid depth
(search range ``+-(2**bits - 1)`` px); the default is OpenCV's 6, lowered for small images so the
coarsest level keeps at least 8 px on the short side.

``--save_crf`` writes the camera response the merge used (debevec, robertson): ``.csv`` with a
header ``code,R,G,B`` and 256 rows, or ``.npy`` with a float64 ``[3, 256]`` array (rows R, G, B), the
linear exposure ``t * E`` of each code, relative to the reference's clip level (Debevec: code 255
= 1). Robertson values of codes that no pixel has are ``nan`` (OpenCV leaves them undefined); its
code 0 and 255 values are OpenCV's means over the black/clipped observations. ``--plot_crf`` draws
the same curves as a PNG (pixel value against log exposure in stops, one line per channel; the
Robertson plot leaves out codes 0 and 255).

Exposure times come from ``--times`` (seconds, or any consistent unit), ``--ev`` (stops; ``t = 2**ev``)
or, when neither is given, from each file's EXIF ``ExposureTime``. A preview PNG
(``<OUT stem>_preview.png``, project display mapping) is written next to EXR outputs.

Errors (a bad option combination, missing exposure times, unequal sizes, a missing output folder)
are one line (:class:`~hdrlab.errors.ConfigError` / :class:`~hdrlab.errors.HDRLabError`) and are
raised before any file is written; if a write fails, the files this run already wrote are removed.
Inputs that cannot be a bracket are errors too: the same file twice, two files with identical
pixels, ``--ev`` outside ``-1000..1000`` or a bracket spanning more than 64 stops, exposure times
whose order contradicts the images' brightness (a longer exposure with a mean code value lower by
more than 1/255; ``--force`` merges anyway), a Debevec ``--samples`` whose grid does not fit the
image (the message names the nearest value that fits), and ``--align mtb`` on images under 2x2 px.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.io import _atomic_write, read_ldr, write_exr, write_png
from hdrlab.models.mergers import DebevecMerger, MertensMerger, stack_from_times
from hdrlab.stack import ExposureStack
from hdrlab.tonemap import display, to_uint8

METHODS = ("debevec", "robertson", "mertens")
#: methods that recover a camera response (``--save_crf`` / ``--plot_crf``)
CRF_METHODS = ("debevec", "robertson")
CRF_SUFFIXES = (".csv", ".npy")
#: Debevec defaults (OpenCV's), applied when ``--samples`` / ``--smoothness`` are not given
DEBEVEC_SAMPLES = 70
DEBEVEC_SMOOTHNESS = 10.0
#: OpenCV's ``createCalibrateRobertson`` defaults
ROBERTSON_MAX_ITER = 30
ROBERTSON_THRESHOLD = 0.01
#: OpenCV's ``createAlignMTB`` default pyramid depth
MTB_MAX_BITS = 6
#: short side (px) the coarsest MTB pyramid level keeps at least (default depth for small images)
MTB_MIN_LEVEL_SIZE = 8
#: observations (codes >= 128) used at most per channel to locate the Robertson clip level
CLIP_SAMPLE_CAP = 2_000_000
#: observed codes fitted when a channel has no clipped observation (Robertson clip level)
CLIP_FIT_CODES = 16
#: largest |--ev| (``2**ev`` stays a finite, non-zero float64)
EV_LIMIT = 1000
#: widest bracket (stops between the longest and the shortest exposure); radiance relative to the
#: reference then stays below ``2**64``, well inside float32
MAX_SPAN_STOPS = 64
#: mean code value (0..1) by which a longer exposure may be darker than a shorter one (noise, motion)
BRIGHTNESS_TOLERANCE = 1.0 / 255.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdrlab merge",
        description=(
            "Merge a real exposure bracket: Debevec or Robertson radiance (EXR, 1.0 = where the middle "
            "exposure clips) or Mertens exposure fusion; optional MTB alignment, CRF export and plot."
        ),
        epilog=(
            "The reference is the middle exposure of the bracket sorted by time (index N // 2); the command "
            "prints it, each input's ev relative to it and the output's scale. --save_crf/--plot_crf hold t*E "
            "per code on the same scale (Debevec: code 255 = 1; Robertson: nan for codes no pixel has). "
            "Option combinations are checked before anything is written."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, help="the bracket's 8-bit JPEG/PNG/TIFF files (>= 2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--times", nargs="+", type=float, help="exposure time of each image, in file order")
    source.add_argument("--ev", nargs="+", type=float, help="exposure of each image in stops (t = 2**ev)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output file (.exr; .png or .exr for mertens)")
    parser.add_argument("--method", choices=METHODS, default="debevec",
                        help="debevec (default) / robertson: radiance relative to the reference (middle) "
                             "exposure, 1.0 = where it clips; mertens: display-referred fusion")
    parser.add_argument("--align", choices=("none", "mtb"), default="none",
                        help="mtb: register the exposures on the reference with OpenCV's median threshold "
                             "bitmaps (integer shifts, result cropped to the common region); default none")
    parser.add_argument("--mtb_max_bits", type=int, default=None,
                        help=f"--align mtb: pyramid depth, search range +-(2**bits - 1) px (default {MTB_MAX_BITS}, "
                             f"lower for small images)")
    parser.add_argument("--save_crf", type=Path, default=None,
                        help="debevec/robertson: write the recovered response, .csv (code,R,G,B) or .npy [3, 256]")
    parser.add_argument("--plot_crf", type=Path, default=None,
                        help="debevec/robertson: plot the recovered response (pixel value vs log exposure), .png")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"debevec: sample pixels of the response solve (default {DEBEVEC_SAMPLES})")
    parser.add_argument("--smoothness", type=float, default=None,
                        help=f"debevec: smoothness lambda (default {DEBEVEC_SMOOTHNESS:g})")
    parser.add_argument("--force", action="store_true",
                        help="merge even when the exposure times contradict the images' brightness order")
    return parser


def exposure_times(paths: list[Path], times: list[float] | None, ev: list[float] | None, exif: list[float | None]) -> list[float]:
    """One exposure time per file from ``--times``, ``--ev`` or EXIF (in this priority).

    ``--times`` must be positive and finite, ``--ev`` within ``+-EV_LIMIT`` (so ``2**ev`` is a finite,
    non-zero float), and the bracket may span at most ``MAX_SPAN_STOPS`` stops (longest over
    shortest time), so that radiance relative to the reference exposure fits float32.
    """
    result = _given_times(paths, times, ev, exif)
    span = math.log2(max(result) / min(result))
    if span > MAX_SPAN_STOPS:
        source = "--times" if times is not None else "--ev" if ev is not None else "EXIF ExposureTime"
        listing = ", ".join(f"{p.name} t={t:g}" for p, t in zip(paths, result))
        raise ConfigError(
            f"the exposure times ({source}: {listing}) span {span:.1f} stops; hdrlab merges brackets of at most "
            f"{MAX_SPAN_STOPS} stops (longest / shortest time <= 2**{MAX_SPAN_STOPS}); check the values"
        )
    return result


def _given_times(paths: list[Path], times: list[float] | None, ev: list[float] | None,
                 exif: list[float | None]) -> list[float]:
    given = times if times is not None else ev
    flag = "--times" if times is not None else "--ev"
    if given is not None:
        if len(given) != len(paths):
            raise ConfigError(
                f"{flag} has {len(given)} values but {len(paths)} images were given "
                f"({', '.join(p.name for p in paths)}); give one value per image"
            )
        if times is not None:
            if any(not (t > 0 and math.isfinite(t)) for t in times):
                raise ConfigError(f"--times must be positive, finite numbers, got {times}")
            return list(times)
        bad = [e for e in given if not -EV_LIMIT <= e <= EV_LIMIT]
        if bad:
            raise ConfigError(
                f"--ev {' '.join(f'{e:g}' for e in bad)}: exposure values must lie in -{EV_LIMIT}..{EV_LIMIT} stops "
                f"(t = 2**ev must be a finite, non-zero number), and the bracket may span at most {MAX_SPAN_STOPS} stops"
            )
        return [2.0**e for e in given]
    missing = [p.name for p, t in zip(paths, exif) if t is None]
    if missing:
        raise ConfigError(
            f"no EXIF ExposureTime in {', '.join(missing)}; pass the exposures with --times T1 T2 ... "
            "or --ev E1 E2 ..."
        )
    return [float(t) for t in exif]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- alignment


@dataclass
class Alignment:
    """Result of :func:`align_mtb`.

    Attributes:
        shifts: ``(dx, dy)`` applied to each exposure (input order of :func:`align_mtb`), ``(0, 0)``
            for the reference; positive moves the content right / down.
        crop: ``(x0, y0, x1, y1)`` of the kept region in the reference's pixel coordinates.
        max_bits: pyramid depth used.
    """

    shifts: list[tuple[int, int]]
    crop: tuple[int, int, int, int]
    max_bits: int

    @property
    def search_limit(self) -> int:
        """Largest shift (px, per axis) the pyramid can find: ``2**max_bits - 1``."""
        return 2**self.max_bits - 1


def mtb_max_bits(height: int, width: int) -> int:
    """Default MTB depth: OpenCV's 6, lowered so the coarsest level keeps >= 8 px on the short side.

    OpenCV halves the image ``max_bits - 1`` times; on a tiny image the top levels are a few pixels and
    the search walks to its limit. Measured on 72 x 96 brackets: 4 bits recover shifts up to 11 px
    exactly, 6 bits return nonsense.
    """
    short = min(height, width)
    return max(1, min(MTB_MAX_BITS, math.floor(math.log2(max(short, 1) / (MTB_MIN_LEVEL_SIZE / 2)))))


def align_mtb(images: list[np.ndarray], reference: int, max_bits: int | None = None) -> tuple[list[np.ndarray], Alignment]:
    """Register ``images`` on ``images[reference]`` by median threshold bitmaps (OpenCV ``AlignMTB``).

    Args:
        images: ``[H, W, 3]`` RGB arrays in ``[0, 1]`` (float32), all the same size.
        reference: index of the fixed image.
        max_bits: pyramid depth (default :func:`mtb_max_bits`).

    Returns:
        The shifted images cropped to the region all of them cover (``AlignMTB(cut=True)``), and the
        :class:`Alignment`.
    """
    height, width = images[0].shape[:2]
    if min(height, width) < 2:
        raise ConfigError(
            f"--align mtb needs images of at least 2x2 pixels (OpenCV's AlignMTB fails on {width}x{height}); "
            "use --align none"
        )
    bits = mtb_max_bits(height, width) if max_bits is None else max_bits
    mtb = cv2.createAlignMTB(bits)
    grey = [cv2.cvtColor(np.round(255.0 * np.clip(i, 0.0, 1.0)).astype(np.uint8), cv2.COLOR_RGB2GRAY) for i in images]
    shifts: list[tuple[int, int]] = []
    shifted = []
    for i, img in enumerate(images):
        if i == reference:
            shifts.append((0, 0))
            shifted.append(img)
            continue
        dx, dy = (int(v) for v in mtb.calculateShift(grey[reference], grey[i]))
        shifts.append((dx, dy))
        shifted.append(mtb.shiftMat(np.ascontiguousarray(img, dtype=np.float32), (dx, dy)))
    x0, y0 = max(0, *(s[0] for s in shifts)), max(0, *(s[1] for s in shifts))
    x1, y1 = width + min(0, *(s[0] for s in shifts)), height + min(0, *(s[1] for s in shifts))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ConfigError(
            f"MTB shifts {shifts} leave no common region of the {width}x{height} images; "
            "the exposures do not overlap (use --align none or a smaller --mtb_max_bits)"
        )
    return [s[y0:y1, x0:x1] for s in shifted], Alignment(shifts=shifts, crop=(x0, y0, x1, y1), max_bits=bits)


# --------------------------------------------------------------------------- Robertson


@dataclass
class RobertsonResult:
    """Result of :func:`merge_robertson` (RGB channel order).

    Attributes:
        radiance: ``[H, W, 3]`` float32, relative to the reference exposure, 1.0 = its clip level.
        response: ``[3, 256]`` float64 ``t * E`` per code on the same scale (``nan``: code not observed).
        clip_level: ``[3]`` the divisor applied to OpenCV's output per channel.
        clip_source: per channel, ``"data"`` (split of clipped / unclipped observations) or
            ``"extrapolated"`` (no clipped observation: response extrapolated to code 255).
    """

    radiance: np.ndarray
    response: np.ndarray
    clip_level: np.ndarray
    clip_source: list[str]


def _split_threshold(values: np.ndarray, clipped: np.ndarray) -> float:
    """The threshold on ``values`` with the fewest clipped observations below and unclipped above it."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], clipped[order]
    clipped_below = np.concatenate([[0], np.cumsum(c)])
    unclipped_above = np.concatenate([np.cumsum((~c)[::-1])[::-1], [0]])
    k = int(np.argmin(clipped_below + unclipped_above))
    lo, hi = v[max(k - 1, 0)], v[min(k, v.size - 1)]
    return float(math.sqrt(lo * hi))


def merge_robertson(codes: np.ndarray, times: np.ndarray) -> RobertsonResult:
    """OpenCV Robertson calibration + merge of sorted 8-bit exposures, on the reference-clip scale.

    Args:
        codes: ``[N, H, W, 3]`` uint8 RGB, sorted by exposure.
        times: ``[N]`` exposure times relative to the reference (``t_ref = 1``).

    Returns:
        :class:`RobertsonResult` (see the module docstring for the scaling and the fallback).

    Raises:
        ConfigError: when OpenCV's calibration leaves an observed code undefined (no pixel has code
            128 in a channel, where OpenCV normalises the response).
    """
    bgr = [np.ascontiguousarray(c[..., ::-1]) for c in codes]
    t32 = np.asarray(times, dtype=np.float32)
    response_bgr = cv2.createCalibrateRobertson(ROBERTSON_MAX_ITER, ROBERTSON_THRESHOLD).process(bgr, t32)
    raw = cv2.createMergeRobertson().process(bgr, t32, response_bgr)[..., ::-1].astype(np.float64)
    response = response_bgr[:, 0, ::-1].T.astype(np.float64)  # [3, 256] RGB

    channels = codes.shape[-1]
    observed = np.stack([np.bincount(codes[..., c].ravel(), minlength=256) > 0 for c in range(channels)])
    if not np.isfinite(response[observed]).all():
        bad = [name for c, name in enumerate("RGB") if not np.isfinite(response[c][observed[c]]).all()]
        raise ConfigError(
            f"OpenCV's Robertson calibration returned nan for observed codes of channel {', '.join(bad)} "
            "(it normalises at code 128, which no pixel of the bracket has there); use --method debevec"
        )

    # pixels where OpenCV's weights are all zero: every exposure at code 0 or 255 in that channel
    usable = ((codes > 0) & (codes < 255)).any(axis=0)  # [H, W, 3]
    t = np.asarray(times, dtype=np.float64)
    clip_level = np.empty(channels)
    sources = []
    for c in range(channels):
        z = codes[..., c]  # [N, H, W]
        keep = (z >= 128) & usable[None, ..., c]
        values = (t[:, None, None] * raw[None, ..., c])[keep]
        clipped = z[keep] == 255
        if values.size > CLIP_SAMPLE_CAP:
            pick = np.linspace(0, values.size - 1, CLIP_SAMPLE_CAP).astype(np.int64)
            values, clipped = values[pick], clipped[pick]
        if clipped.any() and (~clipped).any():
            clip_level[c] = _split_threshold(values, clipped)
            sources.append("data")
        else:
            top = np.flatnonzero(observed[c, :255] & np.isfinite(response[c, :255]))[-CLIP_FIT_CODES:]
            if top.size >= 2:
                slope, icpt = np.polyfit(top.astype(np.float64), np.log(response[c, top]), 1)
                clip_level[c] = math.exp(slope * 255.0 + icpt)
            else:
                clip_level[c] = float(response[c, top[-1]]) if top.size else 1.0
            sources.append("extrapolated")

    radiance = raw / clip_level
    response = response / clip_level[:, None]
    if not usable.all():
        bright = codes[0] == 255  # clipped in the shortest exposure
        black = np.nan_to_num(response[:, 0], nan=0.0) / t[-1]
        fallback = np.where(bright, 1.0 / t[0], black[None, None, :])
        radiance = np.where(usable, radiance, fallback)
    return RobertsonResult(radiance=radiance.astype(np.float32), response=response,
                           clip_level=clip_level, clip_source=sources)


# --------------------------------------------------------------------------- CRF export


class _CachedDebevec(DebevecMerger):
    """:class:`DebevecMerger` that keeps the response it recovered (solved once, exported as is)."""

    log_response: torch.Tensor | None = None

    def recover_log_response(self, stack: ExposureStack) -> torch.Tensor:
        if self.log_response is None:
            self.log_response = super().recover_log_response(stack)
        return self.log_response


def crf_bytes(response: np.ndarray, suffix: str) -> bytes:
    """The ``[3, 256]`` response as ``.csv`` (header ``code,R,G,B``, one row per code) or ``.npy``."""
    buf = io.BytesIO()
    if suffix == ".npy":
        np.save(buf, np.asarray(response, dtype=np.float64))
    else:
        table = np.column_stack([np.arange(response.shape[1]), response.T])
        np.savetxt(buf, table, fmt=["%d"] + ["%.9g"] * response.shape[0], delimiter=",",
                   header="code," + ",".join("RGB"[: response.shape[0]]), comments="")
    return buf.getvalue()


def crf_plot_bytes(response: np.ndarray, method: str, reference: str) -> bytes:
    """PNG of the response: pixel value (y) against log2 exposure ``t * E`` (x), one line per channel.

    Robertson's codes 0 and 255 (means over black / clipped observations, not response values) and
    undefined codes are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = np.arange(response.shape[1])
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for c, (name, colour) in enumerate(zip("RGB", ("tab:red", "tab:green", "tab:blue"))):
        ok = np.isfinite(response[c]) & (response[c] > 0)
        if method == "robertson":
            ok &= (codes > 0) & (codes < 255)
        ax.plot(np.log2(response[c, ok]), codes[ok], color=colour, label=name, linewidth=1.2)
    ax.axvline(0.0, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlabel(f"log exposure log2(t·E) [stops; 0 = where {reference} clips]")
    ax.set_ylabel("pixel value")
    ax.set_ylim(0, 255)
    ax.set_title(f"recovered camera response ({method})")
    ax.grid(alpha=0.3)
    ax.legend(title="channel")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- command


def _check_options(args: argparse.Namespace) -> list[Path]:
    """Option combinations and output paths, before anything is read or written; returns the outputs."""
    output: Path = args.output
    suffix = output.suffix.lower()
    if args.method in CRF_METHODS and suffix != ".exr":
        raise ConfigError(f"-o {output}: {args.method.capitalize()} writes linear radiance; use an .exr output")
    if args.method == "mertens" and suffix not in (".exr", ".png"):
        raise ConfigError(f"-o {output}: Mertens writes a display image; use .png or .exr")
    for flag, value in (("--save_crf", args.save_crf), ("--plot_crf", args.plot_crf)):
        if value is not None and args.method not in CRF_METHODS:
            raise ConfigError(
                f"{flag} needs a recovered camera response, which only --method debevec or robertson has "
                f"(--method {args.method} fuses display values without one)"
            )
    if args.save_crf is not None and args.save_crf.suffix.lower() not in CRF_SUFFIXES:
        raise ConfigError(f"--save_crf {args.save_crf}: use a .csv or .npy file")
    if args.plot_crf is not None and args.plot_crf.suffix.lower() != ".png":
        raise ConfigError(f"--plot_crf {args.plot_crf}: the plot is a PNG; use a .png file")
    for flag, value in (("--samples", args.samples), ("--smoothness", args.smoothness)):
        if value is not None and args.method != "debevec":
            raise ConfigError(f"{flag} is a Debevec option; --method {args.method} does not use it")
    if args.samples is not None and args.samples < 1:
        raise ConfigError(f"--samples {args.samples} must be >= 1 (default {DEBEVEC_SAMPLES})")
    if args.smoothness is not None and not (math.isfinite(args.smoothness) and args.smoothness >= 0):
        raise ConfigError(f"--smoothness {args.smoothness} must be a finite number >= 0 (default {DEBEVEC_SMOOTHNESS:g})")
    if args.mtb_max_bits is not None:
        if args.align != "mtb":
            raise ConfigError("--mtb_max_bits is an option of --align mtb; add --align mtb or drop it")
        if not 1 <= args.mtb_max_bits <= 15:
            raise ConfigError(f"--mtb_max_bits {args.mtb_max_bits} must be in 1..15 (OpenCV default 6)")

    outputs = [output]
    if not (args.method == "mertens" and suffix == ".png"):
        outputs.append(output.with_name(f"{output.stem}_preview.png"))
    outputs += [p for p in (args.save_crf, args.plot_crf) if p is not None]
    resolved = [os.path.abspath(p) for p in outputs]
    if len(set(resolved)) < len(resolved):
        raise ConfigError(
            f"output files collide ({', '.join(map(str, outputs))}); give -o, --save_crf and --plot_crf "
            "distinct names (the preview is <OUT stem>_preview.png)"
        )
    for p in outputs:
        if not p.parent.is_dir():
            raise HDRIOError(f"{p}: folder {p.parent} does not exist; create it first.")
    return outputs


def _check_distinct(paths: list[Path], images: list[torch.Tensor]) -> None:
    """Rejects a file given twice and two files with identical pixels (a copy is not another exposure)."""
    seen: dict[str, int] = {}
    for i, p in enumerate(paths):
        key = os.path.realpath(p)
        if key in seen:
            raise ConfigError(
                f"{p} is given twice (images {seen[key] + 1} and {i + 1}); pass each exposure of the bracket once"
            )
        seen[key] = i
    digests: dict[bytes, int] = {}
    for i, img in enumerate(images):
        key = hashlib.sha1(img.numpy().tobytes()).digest()
        if key in digests and torch.equal(images[digests[key]], img):
            raise ConfigError(
                f"{paths[digests[key]]} and {paths[i]} have identical pixels (the same photo twice?); "
                "a bracket needs a different exposure in every image"
            )
        digests[key] = i


def _check_brightness_order(names: list[str], t_sorted: list[float], means: list[float], source: str) -> None:
    """Rejects times whose order contradicts the images': a longer exposure cannot be darker.

    Args:
        names, t_sorted, means: file names, times and mean code values (0..1), sorted by time.
        source: where the times came from (for the message).
    """
    wrong = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))
             if means[j] < means[i] - BRIGHTNESS_TOLERANCE and t_sorted[j] > t_sorted[i]]
    if wrong:
        i, j = max(wrong, key=lambda ij: means[ij[0]] - means[ij[1]])
        listing = ", ".join(f"{n} t={t:g} mean {255 * m:.0f}" for n, t, m in zip(names, t_sorted, means))
        raise ConfigError(
            f"the exposure times contradict the images' brightness: {names[j]} (t={t_sorted[j]:g}) is darker than "
            f"{names[i]} (t={t_sorted[i]:g}), but a longer exposure cannot be darker (by time: {listing}; times from "
            f"{source}, in file order); fix the times or pass --force to merge anyway"
        )


def _grid_fits(height: int, width: int, samples: int) -> bool:
    """Whether OpenCV's Debevec sample grid of ``samples`` points fits a ``height x width`` image
    (the conditions of :func:`hdrlab.models.mergers.debevec.grid_sample_points`)."""
    x_points = int(math.sqrt(samples * width / height))
    return 1 <= x_points <= width and 1 <= samples // x_points <= height


def _check_samples(samples: int, given: bool, height: int, width: int) -> None:
    """Rejects a Debevec sample count whose grid does not fit the image, naming the values that fit."""
    if _grid_fits(height, width, samples):
        return
    bound = (height + 1) * (width + 1) + 1  # no grid of more points fits
    below = next((s for s in range(min(samples, bound), 0, -1) if _grid_fits(height, width, s)), None)
    fit = below if below is not None else next(s for s in range(samples, bound + 1) if _grid_fits(height, width, s))
    what = f"--samples {samples}" if given else f"the default --samples {samples}"
    raise ConfigError(
        f"{what} does not fit the {width}x{height} bracket (Debevec's sample grid, as OpenCV's, must fit "
        f"in the image); use --samples {fit} (the nearest value that fits) or --method mertens"
    )


def _write_all(writes: list[tuple[Path, Callable[[Path], object]]]) -> None:
    """Runs the writers in order; on a failure removes the files already written, then re-raises."""
    done: list[Path] = []
    try:
        for path, write in writes:
            write(path)
            done.append(path)
    except BaseException:
        for path in done:
            try:
                path.unlink()
            except OSError:
                pass
        raise


def _write_bytes(path: Path, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic_write(path, write)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    paths: list[Path] = args.images
    if len(paths) < 2:
        raise ConfigError(
            f"merging needs at least 2 exposures, got only {paths[0]}; pass the whole bracket"
        )
    outputs = _check_options(args)
    _check_distinct(paths, [])
    ldrs = [read_ldr(p) for p in paths]
    sizes = {tuple(l.image.shape[1:]) for l in ldrs}
    if len(sizes) > 1:
        listing = ", ".join(f"{l.path.name} {l.image.shape[2]}x{l.image.shape[1]}" for l in ldrs)
        raise ConfigError(f"the bracket's images differ in size ({listing}); all exposures must be aligned and equal-sized")
    _check_distinct(paths, [l.image for l in ldrs])
    times = exposure_times(paths, args.times, args.ev, [l.exposure_time for l in ldrs])
    if len(set(times)) < len(times):
        raise ConfigError(f"exposure times {times} repeat; each image of a bracket needs its own exposure")
    source = "--times" if args.times is not None else "--ev (t = 2**ev)" if args.ev is not None else "EXIF ExposureTime (s)"

    order = sorted(range(len(paths)), key=lambda i: times[i])
    names = [paths[i].name for i in order]
    t_sorted = [times[i] for i in order]
    if not args.force:
        _check_brightness_order(names, t_sorted, [float(ldrs[i].image.mean()) for i in order], source)
    ref = len(order) // 2
    rel_t = np.asarray(t_sorted, dtype=np.float64) / t_sorted[ref]
    images = [ldrs[i].image.permute(1, 2, 0).numpy() for i in order]  # [H, W, 3] float32, sorted

    lines = [(f"reference exposure: {names[ref]} (t={t_sorted[ref]:g}, exposure {ref + 1} of {len(names)} "
              f"sorted by time; times from {source}); ev relative to it:")]
    lines += [f"  ev {math.log2(r):+6.2f}  {n}  t={t:g}" + ("  <- reference" if i == ref else "")
              for i, (n, t, r) in enumerate(zip(names, t_sorted, rel_t))]

    if args.align == "mtb":
        images, alignment = align_mtb(images, ref, args.mtb_max_bits)
        x0, y0, x1, y1 = alignment.crop
        shifts = ", ".join(f"{n} ({dx:+d}, {dy:+d})" for i, (n, (dx, dy)) in enumerate(zip(names, alignment.shifts))
                           if i != ref)
        lines.append(f"align mtb (max_bits {alignment.max_bits}, search +-{alignment.search_limit} px): shift (dx, dy) "
                     f"applied to register on {names[ref]}: {shifts}; kept x {x0}..{x1 - 1}, y {y0}..{y1 - 1} "
                     f"of {names[ref]} ({x1 - x0}x{y1 - y0})")
        at_limit = [n for n, (dx, dy) in zip(names, alignment.shifts)
                    if max(abs(dx), abs(dy)) >= alignment.search_limit]
        if at_limit:
            lines.append(f"warning: MTB shift of {', '.join(at_limit)} is at the search limit; the alignment "
                         "probably failed (raise --mtb_max_bits or check the bracket)")

    output: Path = args.output
    suffix = output.suffix.lower()
    response: np.ndarray | None = None
    if args.method == "debevec":
        samples = DEBEVEC_SAMPLES if args.samples is None else args.samples
        _check_samples(samples, args.samples is not None, *images[0].shape[:2])
        stack = stack_from_times([torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1) for i in images],
                                 t_sorted, reference=ref)
        merger = _CachedDebevec(
            crf="recover",
            samples=samples,
            smoothness=DEBEVEC_SMOOTHNESS if args.smoothness is None else args.smoothness,
        )
        with torch.no_grad():
            result = merger(stack)[0]
        assert merger.log_response is not None
        response = torch.exp(merger.log_response[0]).double().cpu().numpy()  # [3, 256], code 255 = 1
        lines.append(f"radiance relative to the reference exposure: 1.0 = where {names[ref]} clips "
                     "(code 255; response scaled so code 255 = 1 per channel)")
    elif args.method == "robertson":
        codes = np.stack([np.round(255.0 * np.clip(i, 0.0, 1.0)).astype(np.uint8) for i in images])
        rob = merge_robertson(codes, rel_t)
        result = torch.from_numpy(np.ascontiguousarray(rob.radiance)).permute(2, 0, 1)
        response = rob.response
        how = ", ".join(f"{c} {s}" for c, s in zip("RGB", rob.clip_source))
        lines.append(f"radiance relative to the reference exposure: 1.0 = where {names[ref]} clips "
                     f"(clip level per channel read from the bracket: {how}; OpenCV scale had response[128] = 1, "
                     f"clip at {', '.join(f'{v:.4g}' for v in rob.clip_level)})")
    else:
        stack = stack_from_times([torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1) for i in images],
                                 t_sorted, reference=ref)
        with torch.no_grad():
            result = MertensMerger()(stack)[0]
        lines.append("mertens: display-referred fusion in [0, 1], no radiance scale")

    writes: list[tuple[Path, Callable[[Path], object]]] = []
    if args.method == "mertens" and suffix == ".png":
        writes.append((output, lambda p: write_png(p, result)))
    else:
        writes.append((output, lambda p: write_exr(p, result)))
        preview = result if args.method == "mertens" else display(result)
        preview_u8 = to_uint8(preview)
        writes.append((outputs[1], lambda p: write_png(p, preview_u8)))
    if args.save_crf is not None:
        assert response is not None
        data = crf_bytes(response, args.save_crf.suffix.lower())
        writes.append((args.save_crf, lambda p: _write_bytes(p, data)))
    if args.plot_crf is not None:
        assert response is not None
        png = crf_plot_bytes(response, args.method, names[ref])
        writes.append((args.plot_crf, lambda p: _write_bytes(p, png)))
    _write_all(writes)

    print(f"{args.method}: {len(names)} exposures -> {output.name} ({result.shape[2]}x{result.shape[1]})")
    print("\n".join(lines))
    print(f"wrote {', '.join(str(p) for p, _ in writes)}")
    return 0


__all__ = ["Alignment", "RobertsonResult", "align_mtb", "build_parser", "crf_bytes", "crf_plot_bytes",
           "exposure_times", "main", "merge_robertson", "mtb_max_bits"]
