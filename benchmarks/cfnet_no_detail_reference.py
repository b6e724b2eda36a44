"""What does the same-resolution CF-Net path cost before CF-Net learns anything? (procedural scenes)

The composite uses CF-Net (an x2 / x4 super-resolution fusion network) at the input's resolution by
downsampling the exposure pair by ``scale`` and super-resolving back (``CFNetMerger``,
``same_resolution``). CF-Net's output is its learned residual added to the bilinear ``x scale``
upsampling of each low-resolution input. This script scores the **perfect fusion passed through
that path with no learned detail**: the display target ``hdrlab.tonemap.display(hdr)`` itself,
downsampled exactly as the composite downsamples the pair (:func:`downsample_pair_image`,
antialiased bicubic) and upsampled bilinearly (CF-Net's residual base). Whatever it loses against
the truth, CF-Net must win back by super-resolution before it can beat a method that works at full
resolution. It is a reference, not a bound: a trained CF-Net can exceed it by learning detail.

Scenes: the held-out protocol's 20 pinned test scenes (``ProceduralDataModule``,
``benchmarks/heldout_procedural.py``), by default at the earlier protocol's 64 px (the tiny
patch); the protocol now renders them at 128 px (``--patch 128``). Scores: ``display_psnr`` and
``display_psnr_clipped`` (:class:`~hdrlab.metrics.display.DisplayPSNR`, the protocol's display
columns), next to the no-hallucination baseline's clipped score; with ``--per_scene
OUT/per_scene_le2023_cfnet.csv`` (written by the protocol) also next to the trained CF-Net of each
seed. ``--split val`` scores the validation scenes instead (never used to choose anything here).

Usage::

    python benchmarks/cfnet_no_detail_reference.py [--scale 2] [--patch 64] [--split test|val] [--scenes 20]
        [--per_scene OUT/per_scene_le2023_cfnet.csv]
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
from hdrlab.methods.baselines import InverseCRFBaseline
from hdrlab.metrics.display import build_display_metrics
from hdrlab.models.mergers.cfnet import downsample_pair_image
from hdrlab.tonemap import display

#: the earlier held-out protocol's test split (64 px scenes: the tiny patch; the protocol now: 128)
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


def reference_rows(*, scale: int = 2, patch: int = PATCH, scenes: int = SCENES,
                   split: str = "test") -> dict[str, dict[str, float]]:
    """Per scene: :func:`no_detail_fusion`'s ``display_psnr`` and ``display_psnr_clipped``, and the
    no-hallucination baseline's clipped score (``baseline_clipped``: ``display`` of the input through
    its true inverse CRF, the protocol's ``baseline_inverse_crf``).

    Args:
        scale: CF-Net's SR factor.
        patch: render size of the scenes (the earlier protocol's 64; the protocol now renders 128).
        scenes: number of scenes of the split.
        split: ``"test"`` (the pinned held-out scenes) or ``"val"`` (the validation scenes).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    data = ProceduralDataModule(patch_size=patch, batch_size=1, num_test_scenes=scenes, num_val_scenes=scenes)
    data.setup("test" if split == "test" else "validate")
    loader = data.test_dataloader() if split == "test" else data.val_dataloader()
    metrics = build_display_metrics(prefix="")
    no_hallucination = InverseCRFBaseline()  # the protocol's baseline_inverse_crf
    rows = {}
    for batch in loader:
        target, mask = display(batch["hdr"]), batch["clip_mask"]
        values = per_sample_values(metrics, no_detail_fusion(batch["hdr"], scale=scale), target, mask)[0]
        baseline = display(no_hallucination.predict_image(batch))
        rows[batch["name"][0]] = {
            "display_psnr": values["display_psnr"],
            "display_psnr_clipped": values["display_psnr_clipped"],
            "baseline_clipped": per_sample_values(metrics, baseline, target, mask)[0]["display_psnr_clipped"],
        }
    return rows


def _cfnet_scores(path: Path) -> dict[str, dict[str, float]]:
    """Clipped display PSNR per scene of the trained CF-Net of each seed, from a protocol per-scene CSV."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    with open(path) as handle:
        for row in csv.DictReader(handle):
            if row["method"] == "le2023_cfnet" and row["state"] == "trained":
                scores[row["scene"]][f"cfnet_s{row['seed']}"] = float(row["display_psnr_clipped"])
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--patch", type=int, default=PATCH, help="render size of the scenes (earlier protocol: 64; the protocol now: 128)")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--scenes", type=int, default=SCENES)
    parser.add_argument("--per_scene", type=Path, default=None,
                        help="the protocol's per_scene_le2023_cfnet.csv (test split): adds the trained CF-Net")
    args = parser.parse_args(argv)
    rows = reference_rows(scale=args.scale, patch=args.patch, scenes=args.scenes, split=args.split)
    others = _cfnet_scores(args.per_scene) if args.per_scene else {}
    columns = sorted({k for v in others.values() for k in v})
    print("| scene | no-detail fusion, all | no-detail fusion, clipped | baseline, clipped | "
          + "".join(f"{c}, clipped | " for c in columns))
    print("|---" * (4 + len(columns)) + "|")
    for name, row in rows.items():
        extra = "".join(f"{others.get(name, {}).get(c, float('nan')):.2f} | " for c in columns)
        print(f"| {name} | {row['display_psnr']:.2f} | {row['display_psnr_clipped']:.2f} | "
              f"{row['baseline_clipped']:.2f} | {extra}")
    print(f"mean: all {statistics.fmean(r['display_psnr'] for r in rows.values()):.2f} dB, "
          f"clipped {statistics.fmean(r['display_psnr_clipped'] for r in rows.values()):.2f} dB")
    below = [n for n, r in rows.items() if r["display_psnr_clipped"] < r["baseline_clipped"]]
    near = [n for n, r in rows.items() if 0.0 <= r["display_psnr_clipped"] - r["baseline_clipped"] < 1.5]
    print(f"clipped region, of {len(rows)} scenes: the no-detail fusion scores below the no-hallucination "
          f"baseline on {len(below)} ({', '.join(below)}), less than 1.5 dB above it on {len(near)} ({', '.join(near)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
