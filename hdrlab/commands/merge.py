"""``hdrlab merge``: merge a real exposure bracket (8-bit JPEG/PNG/TIFF) into one image.

``hdrlab merge IMG... [--times T... | --ev E...] -o OUT [--method debevec|mertens] [--samples 70]
[--smoothness 10]``

* ``debevec`` (default): recovers the camera response from the bracket (Debevec & Malik 1997,
  OpenCV-compatible solve) and writes linear radiance as EXR, relative to the middle exposure
  (code 255 of the middle exposure maps to about 1.0).
* ``mertens``: exposure fusion (Mertens et al. 2009, paper weights 1/1/1), a display image; written
  as PNG when ``OUT`` ends in ``.png``, else as EXR.

Exposure times come from ``--times`` (seconds, or any consistent unit), ``--ev`` (stops; ``t = 2**ev``)
or, when neither is given, from each file's EXIF ``ExposureTime``. The bracket is sorted by exposure.
A preview PNG (``<OUT stem>_preview.png``, project display mapping) is written next to EXR outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hdrlab.errors import ConfigError
from hdrlab.io import read_ldr, write_exr, write_png
from hdrlab.models.mergers import DebevecMerger, MertensMerger, stack_from_times
from hdrlab.tonemap import display, to_uint8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdrlab merge",
        description="Merge a real exposure bracket: Debevec radiance (EXR) or Mertens exposure fusion.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="the bracket's 8-bit JPEG/PNG/TIFF files (>= 2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--times", nargs="+", type=float, help="exposure time of each image, in file order")
    source.add_argument("--ev", nargs="+", type=float, help="exposure of each image in stops (t = 2**ev)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output file (.exr; .png for mertens)")
    parser.add_argument("--method", choices=("debevec", "mertens"), default="debevec")
    parser.add_argument("--samples", type=int, default=70, help="Debevec: sample pixels of the response solve")
    parser.add_argument("--smoothness", type=float, default=10.0, help="Debevec: smoothness lambda")
    return parser


def exposure_times(paths: list[Path], times: list[float] | None, ev: list[float] | None, exif: list[float | None]) -> list[float]:
    """One exposure time per file from ``--times``, ``--ev`` or EXIF (in this priority)."""
    given = times if times is not None else ev
    flag = "--times" if times is not None else "--ev"
    if given is not None:
        if len(given) != len(paths):
            raise ConfigError(
                f"{flag} has {len(given)} values but {len(paths)} images were given "
                f"({', '.join(p.name for p in paths)}); give one value per image"
            )
        if times is not None:
            if any(not t > 0 for t in times):
                raise ConfigError(f"--times must be positive, got {times}")
            return list(times)
        return [2.0**e for e in given]
    missing = [p.name for p, t in zip(paths, exif) if t is None]
    if missing:
        raise ConfigError(
            f"no EXIF ExposureTime in {', '.join(missing)}; pass the exposures with --times T1 T2 ... "
            "or --ev E1 E2 ..."
        )
    return [float(t) for t in exif]  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    paths: list[Path] = args.images
    if len(paths) < 2:
        raise ConfigError(
            f"merging needs at least 2 exposures, got only {paths[0]}; pass the whole bracket"
        )
    ldrs = [read_ldr(p) for p in paths]
    sizes = {tuple(l.image.shape[1:]) for l in ldrs}
    if len(sizes) > 1:
        listing = ", ".join(f"{l.path.name} {l.image.shape[2]}x{l.image.shape[1]}" for l in ldrs)
        raise ConfigError(f"the bracket's images differ in size ({listing}); all exposures must be aligned and equal-sized")
    times = exposure_times(paths, args.times, args.ev, [l.exposure_time for l in ldrs])
    if len(set(times)) < len(times):
        raise ConfigError(f"exposure times {times} repeat; each image of a bracket needs its own exposure")
    stack = stack_from_times([l.image for l in ldrs], times)

    output: Path = args.output
    suffix = output.suffix.lower()
    if args.method == "debevec":
        if suffix != ".exr":
            raise ConfigError(f"-o {output}: Debevec writes linear radiance; use an .exr output")
        merger = DebevecMerger(crf="recover", samples=args.samples, smoothness=args.smoothness)
        with torch.no_grad():
            result = merger(stack)[0]
        write_exr(output, result)
        preview = display(result)
    else:
        if suffix not in (".exr", ".png"):
            raise ConfigError(f"-o {output}: Mertens writes a display image; use .png or .exr")
        with torch.no_grad():
            result = MertensMerger()(stack)[0]
        if suffix == ".png":
            write_png(output, result)
            preview = None
        else:
            write_exr(output, result)
            preview = result
    if preview is not None:
        preview_path = output.with_name(f"{output.stem}_preview.png")
        write_png(preview_path, to_uint8(preview))
        print(f"wrote {output} and {preview_path}")
    else:
        print(f"wrote {output}")
    order = ", ".join(f"{p.name} (t={t:g})" for p, t in sorted(zip(paths, times), key=lambda pt: pt[1]))
    print(f"{args.method}: {len(paths)} exposures, {order}")
    return 0


__all__ = ["build_parser", "exposure_times", "main"]
