"""``hdrlab demo``: the end-to-end job on the embedded procedural data.

For each scene: render a procedural HDR scene (plus one real HDR image from
``$HDRLAB_DATA/real_hdr`` when that folder exists), photograph it with a random camera
response from the *test* CRF stream as a 5-exposure bracket (ev -4, -2, 0, +2, +4; the ev 0
image is the single-LDR input), then reconstruct with

* ``debevec``: Debevec & Malik, CRF recovered from the bracket itself (no knowledge of the camera),
* ``debevec_known_crf``: Debevec merge linearised with the true CRF,
* ``inverse_crf``: the no-hallucination baseline (the single input through its true inverse CRF),
* ``mertens``: Mertens exposure fusion (display image, preview only: it is not radiance).

Writes ``.exr`` radiance maps, PNG previews and a contact panel per scene, then scores the
radiance outputs against the ground truth with ``hdrlab eval`` (median scale alignment; the
clipped region is the input LDR's clip mask) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hdrlab import io, tonemap
from hdrlab.camera import CRFSampler, synthesize_stack
from hdrlab.data.procedural import default_exposure_ev, render_scene
from hdrlab.errors import ConfigError
from hdrlab.models.mergers import DebevecMerger, MertensMerger

BRACKET_EV = (-4.0, -2.0, 0.0, 2.0, 4.0)
RADIANCE_METHODS = ("debevec", "debevec_known_crf", "inverse_crf")
EVAL_METRICS = ("psnr_mu", "pu21_psnr", "pu21_ssim")
#: a real scene with a sun and deep shadows; any file of the folder works
REAL_CANDIDATES = ("polyhaven_drei/venice_sunset_1k.hdr", "polyhaven_threejs/spruit_sunrise_1k.hdr")


def _real_scene(size: int) -> tuple[str, torch.Tensor] | None:
    root = os.environ.get("HDRLAB_DATA")
    if not root:
        return None
    folder = Path(root) / "real_hdr"
    for rel in REAL_CANDIDATES:
        path = folder / rel
        if path.exists():
            pano = io.read_hdr(path)
            _, h, w = pano.shape
            band = pano[:, h // 4 : h // 4 + h // 2, w // 2 - h // 4 : w // 2 + h // 4]  # central band, square
            img = F.interpolate(band[None], size=(size, size), mode="area")[0]
            img = img * torch.exp2(default_exposure_ev(img))
            return f"real_{path.stem}", img.clamp_min(0)
    return None


def _panel(images: list[np.ndarray]) -> np.ndarray:
    gap = np.full((images[0].shape[0], 4, 3), 255, np.uint8)
    row = []
    for img in images:
        row += [img, gap]
    return np.concatenate(row[:-1], axis=1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hdrlab demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (created)")
    parser.add_argument("--scenes", type=int, default=6, help="number of procedural scenes")
    parser.add_argument("--size", type=int, default=256, help="scene size in pixels (square)")
    parser.add_argument("--seed", type=int, default=0, help="first procedural scene seed")
    parser.add_argument("--no_real", action="store_true", help="skip the real image from $HDRLAB_DATA")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.size < 32:
        raise ConfigError("hdrlab demo needs --scenes >= 1 and --size >= 32")

    start = time.perf_counter()
    out = Path(args.out)
    folders = {k: out / k for k in ("gt", "input", *RADIANCE_METHODS, "mertens", "previews")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    scenes: list[tuple[str, torch.Tensor]] = [
        (f"scene_{s:04d}", render_scene(s, height=args.size, width=args.size))
        for s in range(args.seed, args.seed + args.scenes)
    ]
    real = None if args.no_real else _real_scene(args.size)
    if real is not None:
        scenes.append(real)
    print(f"[demo] {len(scenes)} scenes ({'incl. ' + real[0] if real else 'procedural only'}), "
          f"{args.size}x{args.size}, bracket ev {list(BRACKET_EV)}", flush=True)

    sampler = CRFSampler(family="mixed", split="test")
    debevec, debevec_known, mertens = DebevecMerger(crf="recover"), DebevecMerger(crf="known"), MertensMerger()
    for i, (name, hdr) in enumerate(scenes):
        crf = sampler.sample(torch.Generator().manual_seed(args.seed * 1000 + i))
        stack = synthesize_stack(hdr[None], list(BRACKET_EV), crf)
        ldr = stack.images[:, stack.reference]
        with torch.no_grad():
            outputs = {
                "debevec": debevec(stack)[0],
                "debevec_known_crf": debevec_known(stack)[0],
                "inverse_crf": crf.inverse(ldr)[0],
            }
            fused = mertens(stack)[0]
        io.write_exr(folders["gt"] / f"{name}.exr", hdr)
        io.write_png(folders["input"] / f"{name}.png", ldr[0])
        for method, image in outputs.items():
            io.write_exr(folders[method] / f"{name}.exr", image.clamp_min(0))
        io.write_png(folders["mertens"] / f"{name}.png", fused)
        previews = [tonemap.to_uint8(ldr[0])] + [
            tonemap.to_uint8(tonemap.reinhard(x[None])[0]) for x in (hdr, outputs["debevec"], outputs["inverse_crf"])
        ] + [tonemap.to_uint8(fused), tonemap.to_uint8(tonemap.false_color_log_luminance(hdr[None])[0])]
        io.write_png(folders["previews"] / f"{name}_panel.png", _panel(previews))
        clipped = float((ldr.amax(dim=1) >= 254.5 / 255).float().mean())
        print(f"[demo] {i + 1}/{len(scenes)} {name}: {100 * clipped:.1f}% of the input clipped", flush=True)

    from hdrlab.commands.evaluate import evaluate_pairs, pair_files

    table: dict[str, dict[str, float]] = {}
    for method in RADIANCE_METHODS:
        pairs = pair_files(folders[method], folders["gt"])
        row: dict[str, float] = {}
        for region in ("all", "clipped"):
            result = evaluate_pairs(pairs, list(EVAL_METRICS), align="median", region=region,
                                    clip_mask_from=folders["input"])
            row.update({k.removeprefix("val/"): v for k, v in result["mean"].items()})
        table[method] = row
    (out / "results.json").write_text(json.dumps(table, indent=2))
    columns = list(next(iter(table.values())).keys())
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{v[c]:.2f}" for c in columns) + " |" for m, v in table.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n[demo] mean over scenes, median-aligned; *_clipped = pixels clipped in the single input")
    print("\n".join(lines))
    print(f"\n[demo] done in {time.perf_counter() - start:.1f} s. Outputs in {out}/: gt/, input/, "
          f"{', '.join(RADIANCE_METHODS)}/ (.exr), mertens/ (display .png), previews/ (panels: input | "
          f"GT | Debevec | inverse CRF | Mertens | false-colour GT), results.md")
    return 0
