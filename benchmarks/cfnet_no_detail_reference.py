"""What does the same-resolution CF-Net path cost before CF-Net learns anything? (held-out scenes)

The composite uses CF-Net (an x2 / x4 super-resolution fusion network) at the input's resolution by
downsampling the exposure pair by ``scale`` and super-resolving back (``CFNetMerger``,
``same_resolution``). CF-Net's output is its learned residual added to the bilinear ``x scale``
upsampling of each low-resolution input. This script scores the **perfect fusion passed through
that path with no learned detail**: the display target ``hdrlab.tonemap.display(hdr)`` itself,
downsampled exactly as the composite downsamples the pair (:func:`downsample_pair_image`,
antialiased bicubic) and upsampled bilinearly (CF-Net's residual base). Whatever it loses against
the truth, CF-Net must win back by super-resolution before it can beat a method that works at full
resolution. It is a reference, not a bound: a trained CF-Net can exceed it by learning detail.

Scenes: the held-out protocol's 20 pinned test scenes (``ProceduralDataModule`` at the tiny
override's 64 px, ``benchmarks/heldout_procedural.py``). Scores: ``display_psnr`` and
``display_psnr_clipped`` (:class:`~hdrlab.metrics.display.DisplayPSNR`, the protocol's display
columns). With ``--per_scene OUT/per_scene_le2023_cfnet.csv`` (written by the protocol) each scene
is printed next to the no-hallucination baseline and the trained CF-Net of each seed.

Usage::

    python benchmarks/cfnet_no_detail_reference.py [--scale 2] [--patch 64] [--per_scene OUT/per_scene_le2023_cfnet.csv]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from hdrlab.callbacks.per_sample_metrics import per_sample_values
from hdrlab.data import ProceduralDataModule
from hdrlab.metrics.display import build_display_metrics
from hdrlab.models.mergers.cfnet import downsample_pair_image
from hdrlab.tonemap import display

#: the held-out protocol's test split (tiny override: 64 px scenes)
PATCH = 64
SCENES = 20


def no_detail_fusion(hdr: torch.Tensor, *, scale: int = 2) -> torch.Tensor:
    """The perfect display fusion through the same-resolution CF-Net path without learned detail.

    Args:
        hdr: ``[B, 3, H, W]`` linear radiance (input clip = 1), ``H, W`` divisible by ``scale``.
        scale: CF-Net's SR factor (2 or 4).

    Returns:
        ``[B, 3, H, W]`` display image in ``[0, 1]``: ``display(hdr)`` downsampled by ``scale`` as
        the composite downsamples the pair, then bilinearly upsampled (CF-Net's residual base).
    """
    small = downsample_pair_image(display(hdr), scale=scale)
    return F.interpolate(small, scale_factor=scale, mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def reference_rows(*, scale: int = 2, patch: int = PATCH, scenes: int = SCENES) -> dict[str, dict[str, float]]:
    """``{scene name: {"display_psnr": .., "display_psnr_clipped": ..}}`` of :func:`no_detail_fusion`."""
    data = ProceduralDataModule(patch_size=patch, batch_size=1, num_test_scenes=scenes)
    data.setup("test")
    metrics = build_display_metrics(prefix="")
    rows = {}
    for batch in data.test_dataloader():
        target = display(batch["hdr"])
        values = per_sample_values(metrics, no_detail_fusion(batch["hdr"], scale=scale), target, batch["clip_mask"])[0]
        rows[batch["name"][0]] = {k: values[k] for k in ("display_psnr", "display_psnr_clipped")}
    return rows


def _protocol_scores(path: Path) -> dict[str, dict[str, float]]:
    """Clipped display PSNR per scene from a protocol per-scene CSV: baseline and trained CF-Net per seed."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if row["method"] == "baseline_inverse_crf" and row["seed"] == "0":
                scores[row["scene"]]["baseline"] = float(row["display_psnr_clipped"])
            elif row["method"] == "le2023_cfnet" and row["state"] == "trained":
                scores[row["scene"]][f"cfnet_s{row['seed']}"] = float(row["display_psnr_clipped"])
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--patch", type=int, default=PATCH,
                        help="render size of the test scenes (the protocol's: 64)")
    parser.add_argument("--per_scene", type=Path, default=None, help="the protocol's per_scene_le2023_cfnet.csv")
    args = parser.parse_args(argv)
    rows = reference_rows(scale=args.scale, patch=args.patch)
    others = _protocol_scores(args.per_scene) if args.per_scene else {}
    columns = sorted({k for v in others.values() for k in v})
    print("| scene | no-detail fusion, all | no-detail fusion, clipped | " + " | ".join(f"{c}, clipped" for c in columns) + " |")
    print("|---" * (3 + len(columns)) + "|")
    for name, row in rows.items():
        extra = " | ".join(f"{others.get(name, {}).get(c, float('nan')):.2f}" for c in columns)
        print(f"| {name} | {row['display_psnr']:.2f} | {row['display_psnr_clipped']:.2f} | {extra} |")
    print(f"mean: all {statistics.fmean(r['display_psnr'] for r in rows.values()):.2f} dB, "
          f"clipped {statistics.fmean(r['display_psnr_clipped'] for r in rows.values()):.2f} dB")
    if others:
        below = [n for n, r in rows.items() if r["display_psnr_clipped"] < others.get(n, {}).get("baseline", float("-inf"))]
        print(f"scenes where the no-detail fusion scores below the no-hallucination baseline (clipped): "
              f"{len(below)}: {', '.join(below)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
