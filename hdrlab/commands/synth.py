"""``hdrlab synth``: write procedural HDR scenes as OpenEXR files plus a contact sheet.

``hdrlab synth --count N --seed S -o DIR [--size HxW] [--columns C]`` renders
:func:`hdrlab.data.procedural.render_scene` for seeds ``S .. S+N-1`` into
``DIR/scene_<seed>.exr`` (float32, atomic writes via :func:`hdrlab.io.write_exr`) and
``DIR/contact_sheet.png``: a grid of thumbnails in the project's display mapping
(:func:`hdrlab.tonemap.display`, extended Reinhard + sRGB) with a 2 px gap.
It prints the count, the folder and the median dynamic range (stops, p99.9 / p0.1).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from hdrlab.errors import ConfigError

__all__ = ["main", "parse_size", "contact_sheet"]

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"256x256"``) into ``(height, width)``; both must be >= 16."""
    match = _SIZE.match(text)
    if match is None:
        raise ConfigError(f"--size {text!r} is not HEIGHTxWIDTH; use e.g. --size 256x256")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 16 or width < 16:
        raise ConfigError(f"--size {text!r} is too small; height and width must be >= 16")
    return height, width


def contact_sheet(images: list[torch.Tensor], *, columns: int = 8, thumb: int = 128, gap: int = 2) -> torch.Tensor:
    """Grid of display-mapped thumbnails.

    Args:
        images: linear radiance images ``[3, H, W]`` (already at their display exposure).
        columns: thumbnails per row.
        thumb: thumbnail height in pixels (width keeps the aspect ratio).
        gap: black gap between thumbnails in pixels.

    Returns:
        Display-referred sRGB ``[3, rows * (th + gap) - gap, cols * (tw + gap) - gap]`` in ``[0, 1]``.
    """
    from hdrlab.tonemap import display

    if not images:
        raise ConfigError("contact_sheet needs at least one image")
    h, w = images[0].shape[-2:]
    th = min(thumb, h)
    tw = max(1, round(w * th / h))
    cols = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / cols)
    sheet = torch.zeros(3, rows * (th + gap) - gap, cols * (tw + gap) - gap)
    for i, img in enumerate(images):
        small = F.interpolate(img[None].float(), size=(th, tw), mode="area")[0]
        r, c = divmod(i, cols)
        sheet[:, r * (th + gap) : r * (th + gap) + th, c * (tw + gap) : c * (tw + gap) + tw] = display(small)
    return sheet


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdrlab synth", description="Write procedural HDR scenes (.exr) and a contact sheet."
    )
    parser.add_argument("--count", type=int, default=16, help="number of scenes (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    parser.add_argument("-o", "--output", "--out_dir", dest="output", required=True, help="output folder")
    parser.add_argument("--size", default="256x256", help="HEIGHTxWIDTH of each scene (default 256x256)")
    parser.add_argument("--columns", type=int, default=8, help="thumbnails per contact-sheet row (default 8)")
    return parser


def main(argv: list[str]) -> int:
    """Run ``hdrlab synth``; returns the exit status (user errors raise :class:`ConfigError`)."""
    args = _build_parser().parse_args(argv)
    if args.count <= 0:
        raise ConfigError(f"--count must be a positive number of scenes, got {args.count}")
    if args.columns <= 0:
        raise ConfigError(f"--columns must be positive, got {args.columns}")
    height, width = parse_size(args.size)
    from hdrlab.budget.host import check_image_size, synth_memory

    # before anything is allocated or created: a size beyond the available memory is refused
    check_image_size(height, width, lambda h, w: synth_memory(h, w, args.count), option="--size",
                     what=f"{args.count} scene(s)", format_size_arg=lambda h, w: f"{h}x{w}")
    from hdrlab.checkpoints import check_output_dir

    out = check_output_dir(Path(args.output), option="-o")  # an existing file or a read-only folder: nothing written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {out}: {err.strerror}; choose a writable -o folder") from err
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise ConfigError(f"output folder {out} is not a writable directory; choose a writable -o folder")

    from hdrlab.data.procedural import render_scene
    from hdrlab.data.statistics import dynamic_range_stops
    from hdrlab.io import write_exr, write_png

    thumbs, stops = [], []
    for seed in range(args.seed, args.seed + args.count):
        scene = render_scene(seed, height=height, width=width)
        write_exr(out / f"scene_{seed}.exr", scene)
        stops.append(float(dynamic_range_stops(scene)))
        thumbs.append(scene)
    write_png(out / "contact_sheet.png", contact_sheet(thumbs, columns=args.columns))
    median_dr = float(torch.tensor(stops).median())
    print(
        f"hdrlab synth: wrote {args.count} scene(s) {height}x{width} (seeds {args.seed}..{args.seed + args.count - 1}) "
        f"and contact_sheet.png to {out}; median dynamic range {median_dr:.1f} stops"
    )
    return 0
