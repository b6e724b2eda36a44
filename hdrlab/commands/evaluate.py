"""``hdrlab eval``: score predicted HDR images against ground truth with hdrlab's metrics.

``hdrlab eval --pred P --gt G [--protocol hdrlab|kalantari2017] [--metrics psnr_mu,psnr_l,...]
[--align median] [--region all|clipped|unclipped] [--clip_mask_from LDR] [--json] [--white_nits 200]
[--negative_tolerance 0.05]``

- ``--protocol`` (:data:`hdrlab.metrics.PROTOCOLS`, default ``hdrlab``) gives the default metric list
  and alignment; ``--metrics`` / ``--align`` override them. ``kalantari2017`` scores
  ``k17_psnr_mu,k17_psnr_l,k17_ssim_mu,k17_ssim_l`` without alignment on whole images
  (:mod:`hdrlab.metrics.kalantari`), on the ground-truth file's stored scale as is (the benchmark's
  ``HDRImg.hdr`` is already relative to the darkest exposure; the prediction must be on that scale).

- ``P`` and ``G`` are both files, or both folders whose HDR files (``.exr``, ``.hdr``, ``.pfm``...)
  are paired by file stem; names present on one side only are listed in the error.
- Images are read with :func:`hdrlab.io.read_hdr` and scored one at a time with the metric classes
  of :mod:`hdrlab.metrics` (alignment, regions and normalisation documented there).
- Clip mask: from the LDR inputs given by ``--clip_mask_from`` (a file, or a folder paired by stem),
  clipped where the max channel is ``>= (max_code - 0.5) / max_code`` (code 255 on 8-bit data);
  without it, derived from the ground truth as ``max_c(gt) >= 1`` (the project's radiance
  convention: the input clips at 1). It is used for the alignment fit and for region selection.
- Output: a rich table (one row per image plus the mean), or with ``--json``
  ``{"per_image": {stem: {metric: value}}, "mean": {metric: value}}``. Metric keys are the metric
  names, suffixed ``_clipped`` / ``_unclipped`` for those regions. A value is ``null`` (JSON) or
  ``-`` (table) when the image has no pixel in the region; the mean is over the images that have.
- The default metric list leaves out ``lpips`` (it needs the AlexNet trunk file); asking for it
  without the file is an error that names the file and folder.
- Errors (one line, before anything is printed): an image smaller than a chosen metric needs
  (:data:`MIN_SIDE`: ``pu21_ssim`` / ``ms_ssim`` 6x6, ``cvvdp`` 2x2, ``k17_ssim_*`` 11x11, ``lpips``
  31x31; the PSNR metrics and ``log2_ratio`` score any size), and ``--region clipped`` /
  ``unclipped`` when no image has a pixel in the region (every value would be null).
- ``--negative_tolerance`` is :func:`hdrlab.io.read_hdr`'s: negatives down to ``-tol * max`` are
  clamped to 0, lower ones are an error (default 0.05).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.io import HDR_EXTENSIONS, LDR_EXTENSIONS, read_hdr, read_ldr
from hdrlab.metrics.alignment import ALIGN_MODES
from hdrlab.metrics.base import REGIONS
from hdrlab.metrics.collection import DEFAULT_METRICS, METRICS, PROTOCOLS, build_metric, get_protocol, metric_key

__all__ = ["MIN_SIDE", "build_parser", "clip_mask_from_ldr", "evaluate_pairs", "main", "pair_files"]

#: smallest image side (pixels) each metric scores; metrics not listed score any size. Measured:
#: the SSIM metrics reflect-pad by 5 px (11-tap window), cvvdp's pyramid needs 2 px, the
#: Kalantari SSIM check asks for its full 11x11 window, LPIPS-AlexNet's conv5 needs 31 px.
MIN_SIDE: dict[str, int] = {"pu21_ssim": 6, "ms_ssim": 6, "cvvdp": 2, "k17_ssim_mu": 11, "k17_ssim_l": 11, "lpips": 31}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hdrlab eval``."""
    parser = argparse.ArgumentParser(prog="hdrlab eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", required=True, type=Path, help="predicted HDR file or folder")
    parser.add_argument("--gt", required=True, type=Path, help="ground-truth HDR file or folder")
    parser.add_argument(
        "--protocol", default="hdrlab", choices=tuple(PROTOCOLS),
        help="evaluation protocol giving the default metrics and alignment (default hdrlab)",
    )
    parser.add_argument(
        "--metrics", default=None,
        help=f"comma-separated subset of {','.join(METRICS)} (default: the protocol's; hdrlab: "
             f"{','.join(DEFAULT_METRICS)})",
    )
    parser.add_argument("--align", default=None, choices=ALIGN_MODES,
                        help="scale alignment (default: the protocol's; hdrlab: median)")
    parser.add_argument("--region", default="all", choices=REGIONS, help="pixels scored (default all)")
    parser.add_argument(
        "--clip_mask_from", type=Path, default=None,
        help="LDR input file or folder (paired by stem) giving the clip mask; default: gt max channel >= 1",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--white_nits", type=float, default=200.0, help="cd/m^2 of radiance 1.0 (default 200)")
    parser.add_argument("--negative_tolerance", type=float, default=0.05,
                        help="clamp negatives down to -tol x image max to 0 when reading; lower ones are an "
                             "error (default 0.05)")
    return parser


def _list(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in extensions:
            if path.stem in files:
                raise HDRIOError(
                    f"{folder}: two files share the stem {path.stem!r} ({files[path.stem].name}, {path.name})"
                )
            files[path.stem] = path
    return files


def pair_files(pred: Path, gt: Path) -> list[tuple[str, Path, Path]]:
    """Pair prediction and ground-truth files.

    Args:
        pred: a file or a folder.
        gt: a file or a folder (the same kind as ``pred``).

    Returns:
        ``[(stem, pred_file, gt_file), ...]`` sorted by stem.

    Raises:
        HDRIOError: a path is missing, the kinds differ, a folder has no HDR file, or some stems are
            unmatched (listed).
    """
    for path, what in ((pred, "--pred"), (gt, "--gt")):
        if not path.exists():
            raise HDRIOError(f"{what} {path} does not exist")
    if pred.is_file() and gt.is_file():
        return [(pred.stem, pred, gt)]
    if not (pred.is_dir() and gt.is_dir()):
        raise HDRIOError(f"--pred {pred} and --gt {gt} must both be files or both be folders")
    p, g = _list(pred, HDR_EXTENSIONS), _list(gt, HDR_EXTENSIONS)
    if not p or not g:
        empty = pred if not p else gt
        raise HDRIOError(f"{empty} holds no HDR file ({', '.join(HDR_EXTENSIONS)})")
    only_p, only_g = sorted(set(p) - set(g)), sorted(set(g) - set(p))
    if only_p or only_g:
        raise HDRIOError(
            "unmatched file names (pairs are matched by stem): "
            f"only in --pred {pred}: {only_p or 'none'}; only in --gt {gt}: {only_g or 'none'}"
        )
    return [(stem, p[stem], g[stem]) for stem in sorted(p)]


def clip_mask_from_ldr(path: Path) -> torch.Tensor:
    """Clip mask ``[1, 1, H, W]`` (bool) of an LDR file: max channel ``>= (max_code - 0.5) / max_code``."""
    ldr = read_ldr(path)
    max_code = 2.0**ldr.bit_depth - 1.0
    return (ldr.image.amax(dim=0, keepdim=True) >= (max_code - 0.5) / max_code)[None]


def _mask_files(source: Path, stems: list[str]) -> dict[str, Path]:
    if not source.exists():
        raise HDRIOError(f"--clip_mask_from {source} does not exist")
    if source.is_file():
        if len(stems) != 1:
            raise HDRIOError(
                f"--clip_mask_from {source} is one file but {len(stems)} images are evaluated; pass a folder"
            )
        return {stems[0]: source}
    files = _list(source, LDR_EXTENSIONS)
    missing = [s for s in stems if s not in files]
    if missing:
        raise HDRIOError(f"--clip_mask_from {source}: no LDR file ({', '.join(LDR_EXTENSIONS)}) for {missing}")
    return {s: files[s] for s in stems}


def evaluate_pairs(
    pairs: list[tuple[str, Path, Path]],
    names: list[str],
    *,
    align: str = "median",
    region: str = "all",
    white_nits: float = 200.0,
    clip_mask_from: Path | None = None,
    negative_tolerance: float = 0.05,
) -> dict[str, dict[str, dict[str, float] | float]]:
    """Score every pair with every metric.

    Returns:
        ``{"per_image": {stem: {key: value}}, "mean": {key: value}}`` with NaN where an image has no
        pixel in the region (means skip those).

    Raises:
        ConfigError: an image is smaller than a metric needs (:data:`MIN_SIDE`), or ``region`` is not
            ``all`` and no image has a pixel in it.
        HDRIOError: unreadable files, size mismatches.
    """
    metrics = {metric_key(n, region): build_metric(n, region=region, align=align, white_nits=white_nits) for n in names}
    masks = _mask_files(clip_mask_from, [s for s, _, _ in pairs]) if clip_mask_from is not None else {}
    per_image: dict[str, dict[str, float]] = {}
    for stem, pred_path, gt_path in pairs:
        pred = read_hdr(pred_path, negative_tolerance=negative_tolerance)
        gt = read_hdr(gt_path, negative_tolerance=negative_tolerance)
        if pred.shape != gt.shape:
            raise HDRIOError(f"{pred_path} is {tuple(pred.shape)} but {gt_path} is {tuple(gt.shape)}; sizes must match")
        _check_min_size(gt_path, tuple(gt.shape[-2:]), names)
        clip = clip_mask_from_ldr(masks[stem]) if stem in masks else None
        if clip is not None and clip.shape[-2:] != gt.shape[-2:]:
            raise HDRIOError(f"{masks[stem]} is {tuple(clip.shape[-2:])} but {gt_path} is {tuple(gt.shape[-2:])}")
        row = {}
        for key, metric in metrics.items():
            metric.reset()
            metric.update(pred[None], gt[None], clip_mask=clip)
            row[key] = float(metric.compute())
        per_image[stem] = row
    if region != "all" and all(math.isnan(v) for row in per_image.values() for v in row.values()):
        source = f"--clip_mask_from {clip_mask_from}" if clip_mask_from is not None else "gt max channel >= 1"
        which = "has a clipped" if region == "clipped" else "has an unclipped"
        raise ConfigError(
            f"--region {region}: no image {which} pixel (clip mask from {source}), so every value is undefined; "
            "use --region all" + (", or --clip_mask_from with the LDR inputs" if clip_mask_from is None else "")
        )
    mean = {}
    for key in metrics:
        vals = [r[key] for r in per_image.values() if not math.isnan(r[key])]
        mean[key] = sum(vals) / len(vals) if vals else float("nan")
    return {"per_image": per_image, "mean": mean}


def _check_min_size(path: Path, size: tuple[int, int], names: list[str]) -> None:
    """Rejects an image smaller than one of the chosen metrics needs, naming the metrics that fit."""
    height, width = size
    small = [n for n in names if min(height, width) < MIN_SIDE.get(n, 1)]
    if small:
        need = ", ".join(f"{n} {MIN_SIDE[n]}x{MIN_SIDE[n]}" for n in small)
        fit = [n for n in names if n not in small] or [n for n in METRICS if min(height, width) >= MIN_SIDE.get(n, 1)]
        raise ConfigError(
            f"{path} is {width}x{height} pixels, smaller than the metrics need ({need}); "
            f"use --metrics {','.join(fit)} or larger images"
        )


def _json_value(v: float) -> float | None:
    return None if math.isnan(v) else v


def _print_table(result: dict, keys: list[str]) -> None:
    """Prints the rich table at its natural width: metric names and values are never cut, wrapped
    or ellipsised, whatever the terminal width (a narrow terminal wraps the lines itself)."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    table = Table(title="hdrlab eval")
    table.add_column("image", no_wrap=True)
    for key in keys:
        table.add_column(key, justify="right", no_wrap=True)

    def fmt(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.4f}"

    for stem, row in result["per_image"].items():
        table.add_row(Text(stem), *(fmt(row[k]) for k in keys))  # Text: a stem is not rich markup
    table.add_section()
    table.add_row("mean", *(fmt(result["mean"][k]) for k in keys), style="bold")
    console = Console()
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    console.width = max(natural, 20)
    console.print(table)


def main(argv: list[str]) -> int:
    """Run ``hdrlab eval``; returns the exit status."""
    args = build_parser().parse_args(argv)
    protocol = get_protocol(args.protocol)
    names = ([n.strip() for n in args.metrics.split(",") if n.strip()] if args.metrics is not None
             else list(protocol.metrics))
    align = args.align if args.align is not None else protocol.align
    if not (math.isfinite(args.negative_tolerance) and args.negative_tolerance >= 0):
        raise ConfigError(f"--negative_tolerance {args.negative_tolerance} must be a finite number >= 0 (default 0.05)")
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ConfigError(f"--metrics: unknown {unknown or 'empty list'}; choose from {','.join(METRICS)}")
    pairs = pair_files(args.pred, args.gt)
    result = evaluate_pairs(
        pairs, names, align=align, region=args.region, white_nits=args.white_nits,
        clip_mask_from=args.clip_mask_from, negative_tolerance=args.negative_tolerance,
    )
    keys = [metric_key(n, args.region) for n in names]
    if args.json:
        out = {
            "per_image": {s: {k: _json_value(v) for k, v in row.items()} for s, row in result["per_image"].items()},
            "mean": {k: _json_value(v) for k, v in result["mean"].items()},
        }
        print(json.dumps(out, indent=2))
    else:
        _print_table(result, keys)
    return 0
