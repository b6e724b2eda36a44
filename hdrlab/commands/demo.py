"""``hdrlab demo``: the end-to-end job on the embedded procedural data.

For each scene: render a procedural HDR scene (plus one real HDR image from
``$HDRLAB_DATA/real_hdr`` when that folder exists), photograph it with a random camera
response from the *test* CRF stream as a 5-exposure bracket (ev -4, -2, 0, +2, +4; the ev 0
image is the single-LDR input), then reconstruct with

* ``debevec``: Debevec & Malik, CRF recovered from the bracket itself (no knowledge of the camera),
* ``debevec_known_crf``: Debevec merge linearised with the true CRF,
* ``inverse_crf``: the no-hallucination baseline (the single input through its true inverse CRF),
* ``linear_itmo``: a single-image baseline, the inverse CRF with a linear highlight boost
  (:class:`hdrlab.methods.LinearITMOBaseline`),
* ``le2023_debevec_demo``: a learned single-image method trained by the demo itself: the Le2023
  generator through a known-CRF Debevec merge (``experiments/le2023_debevec.yaml`` with the tiny
  override, 4 U-Net levels, ev -2 / +2, a few hundred samples; a demo-scale model, not the paper's),
  its run folder in ``<out>/learned`` (``hdrlab reconstruct`` takes its checkpoint),
* ``expandnet_official``: ExpandNet (Marnerides et al. 2018) with its official pretrained weights, when
  ``$HDRLAB_DATA/weights/expandnet/weights.pth`` exists: imported with ``hdrlab import-weights
  expandnet`` into ``<out>/expandnet/expandnet_official.ckpt`` and run with its official inference;
  its output (arbitrary scale) is multiplied by one factor per image, the median ratio of the
  input's true inverse CRF to it over the unclipped pixels, so the written radiance and the previews
  are at the input's exposure like the other outputs (the metrics median-align every output anyway),
* ``mertens``: Mertens exposure fusion (a display image: scored in the display table only).

The bracket mergers (``debevec*``, ``mertens``) see five exposures; the single-image methods see
only the ev 0 input. Writes ``.exr`` radiance maps, PNG previews and a labelled contact panel per
scene, a comparison figure (:func:`hdrlab.report.scene_figure.scene_figure`:
``previews/<scene>_comparison.png``) for the procedural scene with the largest clipped fraction and
for the real scene, then scores the radiance outputs against the ground truth with ``hdrlab eval`` (median
scale alignment; the clipped region is the input LDR's clip mask) and every output in the display
domain (``hdrlab.tonemap.display`` of the median-aligned radiance, or the fusion itself, against
``display(gt)``), and writes both tables with captions to ``results.md``.

Then (unless ``--no_sweep``) the learned part: ``sweeps/smoke.yaml`` (Le2023 generator at width
1/8 through a Debevec and a Mertens merger, procedural data, CPU) run by the offline sweep agent
(:class:`hdrlab.sweep.agent.OfflineSweepAgent`, through ``hdrlab sweep --offline``) into
``<out>/sweep``, then ``hdrlab compare`` into ``<out>/report`` (``index.html``: one results table
per output domain, the main metric per merger, training curves against samples seen, config
differences, labelled previews; the tables as ``.md`` / ``.csv``, the figures as PNG / PDF). The sweep file and the experiments it names are found next to the
``hdrlab`` package (a source checkout); the trials run with that checkout as working directory.
An installed package without the checkout skips this part with a message. Re-running the demo
into the same ``--out`` continues the sweep instead of repeating finished trials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import threading
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
RADIANCE_METHODS = ("debevec", "debevec_known_crf", "inverse_crf", "linear_itmo", "le2023_debevec_demo",
                    "expandnet_official")
#: what each output is, for the tables and panels
LABELS = {
    "debevec": "Debevec (bracket, CRF recovered)",
    "debevec_known_crf": "Debevec (bracket, known CRF)",
    "inverse_crf": "no hallucination (single image)",
    "linear_itmo": "linear iTMO (single image)",
    "le2023_debevec_demo": "Le2023 + Debevec, demo-scale (single image)",
    "expandnet_official": "ExpandNet, official weights (single image)",
    "mertens": "Mertens fusion (bracket, display)",
}
#: columns of the comparison figures: output -> column title
COMPARISON_COLUMNS = {
    "inverse_crf": "no hallucination (inverse CRF)",
    "linear_itmo": "linear iTMO",
    "le2023_debevec_demo": "Le2023 + Debevec (demo-scale)",
    "expandnet_official": "ExpandNet (official weights)",
    "debevec": "Debevec (bracket, CRF recovered)",
}
COMPARISON_CAPTION = (
    "Rows: (1) hdrlab.tonemap.display of each radiance output after median scale alignment to the ground "
    "truth (fitted on the pixels not clipped in the input; the input as it is), the red box marking the zoom; "
    "(2) the zoom on the largest clipped region of the input; (3) log10 luminance, one colour scale for all "
    "columns; (4) per-pixel error |log2(Y_output / Y_truth)| of the luminance in stops, one colour scale, with its "
    "mean over all and over the clipped pixels. Single-image methods see only the ev 0 input, Debevec the "
    "whole bracket.")
#: samples seen by the demo's learned single-image model (2 per step at the tiny override)
LEARNED_SAMPLES = 2000
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


def find_sweep_file(name: str = "smoke.yaml") -> Path | None:
    """The sweep file ``sweeps/<name>`` of the source checkout holding the ``hdrlab`` package.

    Args:
        name: File name inside ``sweeps/``.

    Returns:
        The absolute path, or ``None`` when the package is not inside a checkout that ships
        ``sweeps/<name>`` and ``experiments/`` (e.g. installed into site-packages).
    """
    from hdrlab.sweep.overrides import checkout_root

    root = checkout_root()
    path = None if root is None else root / "sweeps" / name
    return path if path is not None and path.is_file() and (root / "experiments").is_dir() else None


def _sweep_heartbeat(state_path: Path, stop: threading.Event, start: float, every: float = 30.0) -> None:
    """Print the sweep's elapsed time and trial states every ``every`` seconds until ``stop``."""
    while not stop.wait(every):
        try:
            trials = json.loads(state_path.read_text())["trials"]
        except (OSError, ValueError, KeyError):
            trials = []
        states = ", ".join(f"{t['id']} {t['state']}" for t in trials) or "starting"
        print(f"[demo] sweep running for {time.perf_counter() - start:.0f} s: {states}", flush=True)


def run_sweep_part(out: Path, *, trials: int | None = None, workers: int = 1) -> int:
    """Run ``sweeps/smoke.yaml`` offline into ``<out>/sweep`` and ``hdrlab compare`` it into ``<out>/report``.

    Args:
        out: The demo output folder.
        trials: Cap on the number of trials (``None``: the whole grid of ``smoke.yaml``).
        workers: Concurrent trials.

    Returns:
        0 when every trial finished, 1 when some failed (the report lists them), 0 with a
        message when the sweep file is not found (part skipped).
    """
    from hdrlab.commands import sweep as sweep_command
    from hdrlab.sweep.compare import DEFAULT_METRIC, compare_runs, discover_runs, format_domain_tables, read_run, write_report

    sweep_file = find_sweep_file("smoke.yaml")
    if sweep_file is None:
        print("[demo] sweep part skipped: sweeps/smoke.yaml was not found next to the hdrlab package "
              "(an installed package without the source checkout). Run it from a clone: "
              "`hdrlab sweep sweeps/smoke.yaml --offline` then `hdrlab compare runs/sweeps/smoke`.", flush=True)
        return 0
    out = out.resolve()
    sweep_dir, report_dir = out / "sweep", out / "report"
    shown = "all trials" if trials is None else f"at most {trials} trial(s)"
    print(f"\n[demo] sweep part: {sweep_file} ({shown}) with the offline agent into {sweep_dir}", flush=True)
    argv = [str(sweep_file), "--offline", "--sweep_dir", str(sweep_dir), "--workers", str(workers)]
    if trials is not None:
        argv += ["--count", str(trials)]
    start, cpu_before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    stop = threading.Event()
    beat = threading.Thread(target=_sweep_heartbeat, args=(sweep_dir / "state.json", stop, start), daemon=True)
    beat.start()
    try:
        with contextlib.chdir(sweep_file.parents[1]):  # the sweep's command names experiments/*.yaml
            status = sweep_command.main(argv)
    finally:
        stop.set()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(f"[demo] sweep done in {time.perf_counter() - start:.1f} s wall, {cpu:.1f} s CPU in the trials", flush=True)
    print(f"\n[demo] comparing the sweep's runs into {report_dir}", flush=True)
    records = [read_run(p) for p in discover_runs([sweep_dir])]
    comparison = compare_runs(records, metric=DEFAULT_METRIC)
    written = write_report(comparison, report_dir, lead_sections=part_one_sections(out, report_dir))
    print(format_domain_tables(comparison))
    print(f"\n{len(records)} runs, {len(comparison.rows)} groups, {len(comparison.failures)} failed; "
          f"report: {written['html']} (table: {written['csv']})")
    print(f"[demo] sweep report: {report_dir / 'index.html'}", flush=True)
    return 0 if status == 0 else 1


def train_learned_model(out: Path, *, samples: int = LEARNED_SAMPLES) -> object | None:
    """Train the demo's single-image model (module docstring) into ``<out>/learned``; ``None`` when
    the experiment files are not next to the package (an installed package without the checkout)."""
    from hdrlab.cli import build_cli
    from hdrlab.commands.reconstruct import load_method

    from hdrlab.sweep.overrides import checkout_root

    root = checkout_root()
    if root is None or not (root / "experiments").is_dir():
        print("[demo] learned single-image model skipped: experiments/ not found next to the package", flush=True)
        return None
    run_dir = (out / "learned").resolve()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        start = time.perf_counter()
        print(f"[demo] training the demo-scale Le2023 + Debevec model ({samples} samples) into {run_dir}", flush=True)
        build_cli([
            "fit", "--config", str(root / "experiments/le2023_debevec.yaml"),
            "--config", str(root / "experiments/overrides/tiny.yaml"),
            "--model.init_args.generator.init_args.levels", "4", "--model.init_args.generator.init_args.ev", "[-2.0, 2.0]",
            "--model.init_args.lr", "3e-3", "--max_samples", str(samples), "--trainer.limit_val_batches", "0",
            "--trainer.enable_progress_bar", "false", "--wandb", "disabled", "--run_dir", str(run_dir),
        ])
        print(f"[demo] trained in {time.perf_counter() - start:.1f} s", flush=True)
    return load_method(ckpt)


def official_expandnet(out: Path) -> object | None:
    """ExpandNet with its official weights (module docstring), or ``None`` when
    ``$HDRLAB_DATA/weights/expandnet/weights.pth`` or the checkout's ``experiments/`` is missing."""
    from hdrlab.commands.import_weights import import_weights
    from hdrlab.commands.reconstruct import load_method
    from hdrlab.sweep.overrides import checkout_root

    root, data = checkout_root(), os.environ.get("HDRLAB_DATA")
    weights = Path(data) / "weights" / "expandnet" / "weights.pth" if data else None
    if weights is None or not weights.is_file() or root is None or not (root / "experiments").is_dir():
        print("[demo] ExpandNet (official weights) skipped: $HDRLAB_DATA/weights/expandnet/weights.pth or "
              "experiments/ not found", flush=True)
        return None
    ckpt = (out / "expandnet" / "expandnet_official.ckpt").resolve()
    if not ckpt.is_file():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        import_weights("expandnet", [weights], ckpt, configs=[root / "experiments" / "expandnet.yaml"])
    return load_method(ckpt)


def part_one_sections(out: Path, report_dir: Path) -> list:
    """Part 1 (``results.json`` and the labelled panels) as report sections, panels copied next to
    the page; empty when part 1 has not run."""
    import html
    import shutil

    from hdrlab.report.page import Section

    results = out / "results.json"
    if not results.is_file():
        return []
    scores = json.loads(results.read_text())
    captions = {
        "radiance": "HDR metrics of the radiance outputs after median scale alignment, mean over the scenes; "
                    "*_clipped: pixels clipped in the single ev 0 input. Bracket mergers see 5 exposures, "
                    "single-image methods only the input.",
        "display": "Every output in the display domain: hdrlab.tonemap.display of the median-aligned radiance "
                   "(Mertens: its fused image) against display(ground truth). Mertens renders its own tones, "
                   "so its low score measures that difference as much as detail.",
    }
    body = []
    for domain in ("radiance", "display"):
        table = scores.get(domain) or {}
        if not table:
            continue
        columns = list(next(iter(table.values())))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        rows = "".join(f"<tr><td>{html.escape(LABELS.get(m, m))}</td>"
                       + "".join(f"<td>{v[c]:.2f}</td>" for c in columns) + "</tr>" for m, v in table.items())
        body.append(f"<p>{html.escape(captions[domain])}</p><div class='table-wrap'><table><thead><tr><th>method</th>"
                    f"{head}</tr></thead><tbody>{rows}</tbody></table></div>")
    panels = sorted((out / "previews").glob("*_panel.png"))
    target = report_dir / "part1"
    target.mkdir(parents=True, exist_ok=True)
    for panel in panels:
        shutil.copyfile(panel, target / panel.name)
        body.append(f"<figure><figcaption>{html.escape(panel.stem.removesuffix('_panel'))}: the input, the ground "
                    "truth and each method's output (Reinhard previews; tiles labelled), Mertens' fusion and the "
                    f"ground truth's false-colour log luminance</figcaption><img src='part1/{html.escape(panel.name)}' "
                    f"alt='{html.escape(panel.stem)}' loading='lazy'></figure>")
    for figure in sorted((out / "previews").glob("*_comparison.png")):
        shutil.copyfile(figure, target / figure.name)
        scene = figure.stem.removesuffix("_comparison")
        body.append(f"<figure><figcaption>{html.escape(scene)}, compared in detail. {html.escape(COMPARISON_CAPTION)}"
                    f"</figcaption><img src='part1/{html.escape(figure.name)}' alt='{html.escape(figure.stem)}' "
                    "loading='lazy'></figure>")
    return [Section("part1", "Part 1: single image vs bracket (demo scenes)", "\n".join(body))]


def _panel(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Tiles side by side with a label strip above each (OpenCV text)."""
    import cv2

    gap = np.full((images[0].shape[0] + 18, 4, 3), 255, np.uint8)
    row = []
    for img, label in zip(images, labels):
        strip = np.full((18, img.shape[1], 3), 255, np.uint8)
        cv2.putText(strip, label[: max(4, img.shape[1] // 7)], (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
        row += [np.concatenate([strip, img], axis=0), gap]
    return np.concatenate(row[:-1], axis=1)


def comparison_figures(candidates: list[dict], folder: Path, *, real: str | None) -> list[Path]:
    """Draw :func:`hdrlab.report.scene_figure.scene_figure` for at most two scenes: the procedural
    scene with the largest clipped fraction and the real scene ``real`` (when given).

    Args:
        candidates: one dict per scene with ``name``, ``clipped`` (fraction), ``ldr`` (``[3, H, W]``
            display values in ``[0, 1]``), ``hdr`` (``[3, H, W]`` linear ground truth) and ``outputs``
            (output name -> ``[3, H, W]`` linear radiance).
        folder: where ``<scene>_comparison.png`` goes.
        real: the real scene's name, or ``None``.

    Returns:
        The written PNGs.
    """
    from hdrlab.report.scene_figure import scene_figure

    procedural = [c for c in candidates if c["name"] != real]
    chosen = [max(procedural, key=lambda c: c["clipped"])] if procedural else []
    chosen += [c for c in candidates if c["name"] == real]
    written = []
    for scene in chosen:
        predictions = {title: scene["outputs"][key] for key, title in COMPARISON_COLUMNS.items()
                       if key in scene["outputs"]}
        info = scene_figure(scene["name"], input_ldr=scene["ldr"], reference=scene["hdr"], predictions=predictions,
                            path=folder / f"{scene['name']}_comparison.png", pdf=False)
        written.append(info.path)
    return written


def display_scores(folders: dict[str, Path], methods: list[str]) -> dict[str, dict[str, float]]:
    """Display PSNR / SSIM (all and clipped pixels) of each method's outputs against ``display(gt)``."""
    from hdrlab.metrics.alignment import align_scale
    from hdrlab.metrics.display import build_display_metrics

    scores: dict[str, dict[str, float]] = {}
    for method in methods:
        metrics = build_display_metrics(prefix="")
        for gt_path in sorted(folders["gt"].glob("*.exr")):
            gt = io.read_hdr(gt_path)[None]
            ldr = io.read_ldr(folders["input"] / f"{gt_path.stem}.png").image[None]
            clip = (ldr.amax(dim=1, keepdim=True) >= 254.5 / 255).float()
            if method == "mertens":
                pred = io.read_ldr(folders["mertens"] / f"{gt_path.stem}.png").image[None]
            else:
                radiance = io.read_hdr(folders[method] / f"{gt_path.stem}.exr")[None]
                pred = tonemap.display(align_scale(radiance, gt, mode="median", mask=1.0 - clip))
            metrics.update(pred.clamp(0, 1), tonemap.display(gt), clip_mask=clip)
        scores[method] = {k: float(v) for k, v in metrics.compute().items()}
    return scores


def _markdown(table: dict[str, dict[str, float]], caption: str) -> list[str]:
    columns = list(next(iter(table.values())).keys())
    lines = [f"**{caption}**", "", "| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {LABELS.get(m, m)} | " + " | ".join(f"{v[c]:.2f}" for c in columns) + " |" for m, v in table.items()]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hdrlab demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (created)")
    parser.add_argument("--scenes", type=int, default=6, help="number of procedural scenes")
    parser.add_argument("--size", type=int, default=256, help="scene size in pixels (square)")
    parser.add_argument("--seed", type=int, default=0, help="first procedural scene seed")
    parser.add_argument("--no_real", action="store_true", help="skip the real image from $HDRLAB_DATA")
    parser.add_argument("--no_sweep", action="store_true", help="skip the sweep part (sweeps/smoke.yaml + compare)")
    parser.add_argument("--no_learned", action="store_true",
                        help="skip training the demo-scale single-image model (part 1 then has baselines and mergers only)")
    parser.add_argument("--no_official", action="store_true",
                        help="skip the methods with official pretrained weights (ExpandNet)")
    parser.add_argument("--learned_samples", type=int, default=LEARNED_SAMPLES,
                        help="samples seen by the demo-scale single-image model")
    parser.add_argument("--sweep_trials", type=int, default=None,
                        help="run at most N trials of sweeps/smoke.yaml (default: all of its grid)")
    parser.add_argument("--sweep_workers", type=int, default=1, help="concurrent sweep trials")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.size < 32:
        raise ConfigError("hdrlab demo needs --scenes >= 1 and --size >= 32")
    from hdrlab.budget.host import check_image_size, demo_memory

    # before anything is allocated or created: a size beyond the available memory is refused
    check_image_size(args.size, args.size, lambda h, w: demo_memory(max(h, w), args.scenes), option="--size",
                     what=f"the demo on {args.scenes} scene(s)", format_size_arg=lambda h, w: str(max(h, w)),
                     minimum=32)
    if args.learned_samples < 2:
        raise ConfigError(f"hdrlab demo: --learned_samples must be >= 2, got {args.learned_samples} (or --no_learned)")
    if args.sweep_trials is not None and args.sweep_trials < 1:
        raise ConfigError(f"hdrlab demo: --sweep_trials must be >= 1, got {args.sweep_trials} (use --no_sweep to skip)")

    start = time.perf_counter()
    from hdrlab.checkpoints import check_output_dir

    out = check_output_dir(args.out, option="--out")
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

    from hdrlab.methods.baselines import linear_highlight_expansion
    from hdrlab.metrics.alignment import estimate_scale

    learned = None if args.no_learned else train_learned_model(out, samples=args.learned_samples)
    expandnet = None if args.no_official else official_expandnet(out)
    candidates: list[dict] = []  # per scene: what the comparison figures need
    sampler = CRFSampler(family="mixed", split="test")
    debevec, debevec_known, mertens = DebevecMerger(crf="recover"), DebevecMerger(crf="known"), MertensMerger()
    for i, (name, hdr) in enumerate(scenes):
        crf = sampler.sample(torch.Generator().manual_seed(args.seed * 1000 + i))
        stack = synthesize_stack(hdr[None], list(BRACKET_EV), crf)
        ldr = stack.images[:, stack.reference]
        luts = {"crf_forward": crf.forward_lut[None], "crf_inverse": crf.inverse_lut[None]}
        with torch.no_grad():
            outputs = {
                "debevec": debevec(stack)[0],
                "debevec_known_crf": debevec_known(stack)[0],
                "inverse_crf": crf.inverse(ldr)[0],
                "linear_itmo": linear_highlight_expansion(ldr, luts["crf_inverse"])[0],
            }
            if learned is not None:
                outputs["le2023_debevec_demo"] = learned.predict_image({"ldr": ldr, **luts})[0]
            if expandnet is not None:  # arbitrary output scale: one factor to the input's exposure
                pred = expandnet.predict_image({"ldr": ldr, **luts})
                unclipped = ldr.amax(dim=1, keepdim=True) < 254.5 / 255
                scale = estimate_scale(pred, outputs["inverse_crf"][None], mask=unclipped)
                outputs["expandnet_official"] = pred[0] * scale[0]
            fused = mertens(stack)[0]
        io.write_exr(folders["gt"] / f"{name}.exr", hdr)
        io.write_png(folders["input"] / f"{name}.png", ldr[0])
        for method, image in outputs.items():
            io.write_exr(folders[method] / f"{name}.exr", image.clamp_min(0))
        io.write_png(folders["mertens"] / f"{name}.png", fused)
        shown = {"input (ev 0)": ldr[0], "ground truth": hdr, "Debevec": outputs["debevec"],
                 "no halluc.": outputs["inverse_crf"], "lin. iTMO": outputs["linear_itmo"]}
        if "le2023_debevec_demo" in outputs:
            shown["Le2023 demo"] = outputs["le2023_debevec_demo"]
        if "expandnet_official" in outputs:
            shown["ExpandNet"] = outputs["expandnet_official"]
        previews = [tonemap.to_uint8(ldr[0])] + [tonemap.to_uint8(tonemap.reinhard(x[None])[0])
                                                 for x in list(shown.values())[1:]]
        previews += [tonemap.to_uint8(fused), tonemap.to_uint8(tonemap.false_color_log_luminance(hdr[None])[0])]
        io.write_png(folders["previews"] / f"{name}_panel.png",
                     _panel(previews, [*shown, "Mertens", "GT log lum."]))
        clipped = float((ldr.amax(dim=1) >= 254.5 / 255).float().mean())
        candidates.append({"name": name, "clipped": clipped, "ldr": ldr[0], "hdr": hdr,
                           "outputs": {k: outputs[k].clamp_min(0) for k in COMPARISON_COLUMNS if k in outputs}})
        print(f"[demo] {i + 1}/{len(scenes)} {name}: {100 * clipped:.1f}% of the input clipped", flush=True)
    figures_start = time.perf_counter()
    figures = comparison_figures(candidates, folders["previews"], real=None if real is None else real[0])
    print(f"[demo] comparison figures ({', '.join(p.name for p in figures)}) in "
          f"{time.perf_counter() - figures_start:.1f} s", flush=True)

    from hdrlab.commands.evaluate import evaluate_pairs, pair_files

    table: dict[str, dict[str, float]] = {}
    for method in [m for m in RADIANCE_METHODS if any(folders[m].glob("*.exr"))]:
        pairs = pair_files(folders[method], folders["gt"])
        row: dict[str, float] = {}
        for region in ("all", "clipped"):
            result = evaluate_pairs(pairs, list(EVAL_METRICS), align="median", region=region,
                                    clip_mask_from=folders["input"])
            row.update({k.removeprefix("val/"): v for k, v in result["mean"].items()})
        table[method] = row
    display_table = display_scores(folders, [*table, "mertens"])
    (out / "results.json").write_text(json.dumps({"radiance": table, "display": display_table}, indent=2))
    lines = _markdown(
        table, f"Radiance outputs, mean over {len(scenes)} scenes (HDR metrics after median scale alignment; "
        "*_clipped: pixels clipped in the single ev 0 input). Bracket mergers see 5 exposures; single-image "
        "methods only the input.")
    lines += [""] + _markdown(
        display_table, "Every output in the display domain: hdrlab.tonemap.display of the median-aligned "
        "radiance (or Mertens' fused image itself) against display(ground truth). Mertens renders its own "
        "tones, not hdrlab.tonemap.display, so its low score measures that difference as much as detail.")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print()
    print("\n".join(lines))
    print(f"\n[demo] done in {time.perf_counter() - start:.1f} s. Outputs in {out}/: gt/, input/, "
          f"{', '.join(table)}/ (.exr), mertens/ (display .png), previews/ (labelled panels and "
          "comparison figures), results.md")
    if args.no_sweep:
        return 0
    status = run_sweep_part(out, trials=args.sweep_trials, workers=args.sweep_workers)
    print(f"\n[demo] all done in {time.perf_counter() - start:.1f} s", flush=True)
    return status
