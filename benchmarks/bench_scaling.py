"""Time and peak memory of ``hdrlab reconstruct --memory_budget`` versus image side (512 -> 4096 px).

For each method (an experiment of ``experiments/`` with ``experiments/overrides/tiny.yaml``: width
1/8, untrained weights; cost, not quality, is measured) and each square side, one **fresh child
process** (one torch thread, ``OMP_NUM_THREADS=1``):

* builds the model the CLI way (``hdrlab.cli.build_cli([--config EXP --config tiny.yaml, ...],
  run=False)``) and warms it up with one untiled 256-px reconstruction;
* records its resident set (``VmRSS``) as the baseline and resets the kernel's peak-RSS mark
  (``echo 5 > /proc/self/clear_refs``, which also resets ``getrusage().ru_maxrss``);
* runs what ``hdrlab reconstruct --memory_budget B`` runs per photo: the tile plan
  (:func:`hdrlab.commands.reconstruct.method_tile_plan`, fake-tensor memory model, timed as
  ``plan_seconds``), then :func:`~hdrlab.commands.reconstruct.reconstruct_image` on a random
  ``side x side`` photo with the planned tile and merge strips (generator methods: the default
  ``debevec_known_crf`` merge, in the plan's ``merge_rows`` strips when the whole merge does not
  fit). Photo decoding and EXR / preview writing are not included (file I/O, not reconstruction);
* ``seconds``: median ``reconstruct_image`` wall time over up to ``--repeats`` runs (the repeats
  stop once ``--repeat_cap`` seconds are spent, so the large sides run once);
* ``peak_mb``: ``ru_maxrss`` after the runs minus the baseline (MiB): the process's real peak host
  memory increase for plan + photo + reconstruction, compared with the budget (on CPU there is no
  CUDA context, so this is the tensor memory plus allocator overhead; the budget also holds the
  planner's 512 MiB CUDA allowance). The planner's own modelled tensor peak is ``estimated_mb``.

A side whose plan raises ``BudgetError`` is recorded with ``error`` and ``required_mb`` and not run.

Per method: ``loglog_slope``, the least-squares slope of log(seconds) vs log(pixels) (goal ~1.0:
cost linear in pixels), and diagnostics that separate the network's cost from the tiling's:
``work_pixels`` (pixels the network actually processes: the sum of the tile areas, overlaps
counted again), ``work_ratio = work_pixels / pixels``, ``s_per_work_mpix``,
``loglog_slope_work`` (time vs work pixels) and ``tight_tile`` / ``tight_work_ratio`` (the
smallest tile of the same tile count; the planner now runs it, so ``tight_tile == tile``), plus
the plan's ``largest_tile`` (the largest tile that fits, which fixed the count), ``merge_rows``
(rows per merge strip, ``null``: one whole-image merge) and ``merge_estimated_mb``.

Budgets: one per method (the planner's full-image blending buffers grow with the stack's
channels: 3 for a direct method, 27 for Le2023's 9-image stack), chosen so that the large sides
must tile. Defaults: ``singlehdr=1536MiB`` (sides 512..4096), ``le2023_debevec=1792MiB``
(4096 needs 4.7 GiB: recorded as infeasible). About 4-5 minutes on 2 cores.

Usage: ``python benchmarks/bench_scaling.py [--methods singlehdr=1536MiB le2023_debevec=1792MiB]
[--sides 512 1024 2048 4096] [--repeats 3] [--repeat_cap 10] [--json PATH]``
Writes ``benchmarks/results/scaling.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, ratio, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = "experiments/overrides/tiny.yaml"
#: experiment stem -> memory budget (``--memory_budget`` syntax)
DEFAULT_METHODS: dict[str, str] = {"singlehdr": "1536MiB", "le2023_debevec": "1792MiB"}
DEFAULT_SIDES: tuple[int, ...] = (512, 1024, 2048, 4096)
OVERLAP = 64  # reconstruct's default --overlap
MIB = 2**20
RESULT_TAG = "SCALING_RESULT "


# --------------------------------------------------------------------------- pure helpers (tested)
def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log(y)`` against ``log(x)`` (1.0: ``y`` proportional to ``x``).

    Raises:
        ValueError: fewer than two points, unequal lengths, non-positive values or all ``x`` equal.
    """
    if len(xs) != len(ys):
        raise ValueError(f"loglog_slope: {len(xs)} x values but {len(ys)} y values")
    if len(xs) < 2:
        raise ValueError("loglog_slope needs at least two points")
    if any(not v > 0 for v in (*xs, *ys)):
        raise ValueError("loglog_slope needs positive values")
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise ValueError("loglog_slope needs at least two distinct x values")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def effective_overlap(tile: int, overlap: int, stride: int) -> int:
    """The overlap :func:`hdrlab.commands.reconstruct.run_tiled` hands :func:`tiled_forward`
    (``min(overlap, tile - stride)``, rounded up to a stride multiple there)."""
    return math.ceil(min(overlap, tile - stride) / stride) * stride


def tile_work(side: int, tile: int | None, overlap: int = OVERLAP, stride: int = 32) -> tuple[int, int]:
    """``(tiles, work_pixels)`` of a square ``side`` image run with ``tile`` (``None``: untiled):
    the number of network passes and the pixels they process (tile areas, overlaps counted again)."""
    from hdrlab.budget.tiling import tile_spans

    if tile is None or tile >= side:
        return 1, side * side
    spans = tile_spans(side, tile, effective_overlap(tile, overlap, stride), stride=stride)
    covered = sum(b - a for a, b in spans)
    return len(spans) ** 2, covered * covered


def tight_tile(side: int, tile: int | None, overlap: int = OVERLAP, stride: int = 32) -> int | None:
    """Smallest stride-multiple tile that cuts ``side`` into as many spans as ``tile`` does.

    With ``n`` spans per axis a tile of about ``(side + (n - 1) overlap) / n`` covers the image with
    the same number of passes and less recomputed overlap (the planner,
    :func:`hdrlab.budget.tiling.plan_tiles`, now shrinks its tile to it: then ``tight == tile``).
    ``None`` (untiled) stays ``None``.
    """
    from hdrlab.budget.tiling import tile_spans

    if tile is None or tile >= side:
        return tile
    n = len(tile_spans(side, tile, effective_overlap(tile, overlap, stride), stride=stride))
    t = max(stride, math.ceil((side + (n - 1) * overlap) / n / stride) * stride)
    while t < tile and len(tile_spans(side, t, effective_overlap(t, overlap, stride), stride=stride)) > n:
        t += stride
    return t


def side_entry(side: int, child: dict[str, Any], budget_bytes: int, *, overlap: int = OVERLAP) -> dict[str, Any]:
    """One ``sides[]`` row of the JSON from a child's raw measurement (see the module docstring)."""
    pixels = side * side
    entry: dict[str, Any] = {"side": side, "pixels": pixels, "budget_mb": budget_bytes / MIB}
    if "error" in child:
        entry.update(error=child["error"], required_mb=child.get("required_mb"),
                     plan_seconds=child.get("plan_seconds"))
        return entry
    stride, tile = child["multiple"], child["tile"]
    tiles, work = tile_work(side, tile, overlap, stride)
    tight = tight_tile(side, tile, overlap, stride)
    seconds = median(child["seconds"])
    peak_mb = child["peak_bytes"] / MIB
    entry.update(
        tiles=tiles, tile=tile, seconds=seconds, s_per_mpix=seconds / (pixels / 1e6), peak_mb=peak_mb,
        under_budget=peak_mb <= budget_bytes / MIB, peak_over_budget=ratio(peak_mb, budget_bytes / MIB),
        network_peak_mb=child.get("network_peak_bytes", child["peak_bytes"]) / MIB,
        estimated_mb=child["estimated_bytes"] / MIB, plan_seconds=child["plan_seconds"],
        cpu_seconds=median(child.get("cpu_seconds") or child["seconds"]),
        repeats=len(child["seconds"]), all_seconds=child["seconds"], multiple=stride,
        work_pixels=work, work_ratio=work / pixels, s_per_work_mpix=seconds / (work / 1e6),
        tight_tile=tight, tight_work_ratio=tile_work(side, tight, overlap, stride)[1] / pixels,
        largest_tile=child.get("largest_tile"), merge_rows=child.get("merge_rows"),
        merge_estimated_mb=child.get("merge_bytes", 0) / MIB,
    )
    if tiles != child["planned_tiles"]:  # the planner's count and the spans actually run disagree
        entry["planned_tiles"] = child["planned_tiles"]
    return entry


def method_summary(sides: list[dict[str, Any]]) -> dict[str, Any]:
    """``loglog_slope`` (time vs pixels) and ``loglog_slope_work`` (time vs work pixels) of the run sides."""
    ok = [s for s in sides if "seconds" in s]
    out: dict[str, Any] = {"loglog_slope": None, "loglog_slope_work": None, "loglog_slope_cpu": None}
    if len({s["pixels"] for s in ok}) >= 2:
        out["loglog_slope"] = loglog_slope([s["pixels"] for s in ok], [s["seconds"] for s in ok])
        out["loglog_slope_work"] = loglog_slope([s["work_pixels"] for s in ok], [s["seconds"] for s in ok])
        out["loglog_slope_cpu"] = loglog_slope([s["pixels"] for s in ok], [s["cpu_seconds"] for s in ok])
    tiled = [s for s in ok if s["tiles"] > 1]
    out["loglog_slope_tiled"] = (loglog_slope([s["pixels"] for s in tiled], [s["seconds"] for s in tiled])
                                 if len({s["pixels"] for s in tiled}) >= 2 else None)
    out["max_peak_over_budget"] = max((s["peak_over_budget"] for s in ok), default=None)
    out["all_under_budget"] = all(s["under_budget"] for s in ok) if ok else None
    return out


def parse_methods(items: Sequence[str] | None) -> dict[str, str]:
    """``["singlehdr=1536MiB", "le2023_debevec"]`` -> ``{stem: budget}`` (a bare stem takes its default
    budget, or 1536MiB)."""
    if not items:
        return dict(DEFAULT_METHODS)
    out = {}
    for item in items:
        stem, _, budget = item.partition("=")
        out[stem] = budget or DEFAULT_METHODS.get(stem, "1536MiB")
    return out


# --------------------------------------------------------------------------- child process (measures)
def _rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(stem: str, side: int, budget: str, repeats: int, repeat_cap: float) -> dict[str, Any]:
    import gc
    import logging
    import resource
    import tempfile
    import warnings

    import torch

    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from hdrlab.budget.plan import BudgetError
    from hdrlab.budget.units import parse_size
    from hdrlab.cli import build_cli
    from hdrlab.commands import reconstruct as rec

    budget_bytes = parse_size(budget)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = build_cli(["--config", f"experiments/{stem}.yaml", "--config", TINY, "--wandb", "disabled",
                         "--run_dir", str(Path(tmp) / "run")], run=False)
    method = cli.model.eval()
    del cli
    multiple = rec.network_multiple(method)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec.reconstruct_image(method, torch.rand(3, 256, 256, generator=gen), tile=256, overlap=OVERLAP,
                              multiple=multiple)  # warm-up (kernels, lazy imports)
    gc.collect()
    baseline = _rss_bytes()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (and ru_maxrss)
        peak_source = "ru_maxrss after clear_refs 5, minus VmRSS before"
    except OSError:
        peak_source = "ru_maxrss minus VmRSS before (peak mark not reset: includes model build)"
    result: dict[str, Any] = {"multiple": multiple, "baseline_bytes": baseline, "peak_source": peak_source,
                              "threads": torch.get_num_threads(), "method_class": type(method).__name__,
                              "kind": "generator" if rec.method_generator(method) is not None else "direct"}
    start = time.perf_counter()
    try:
        plan = rec.method_tile_plan(method, (side, side), budget_bytes, overlap=OVERLAP, multiple=multiple)
    except BudgetError as err:
        result.update(error=str(err).splitlines()[0][:300], plan_seconds=time.perf_counter() - start,
                      required_mb=None if err.required_bytes is None else err.required_bytes / MIB)
        return result
    result["plan_seconds"] = time.perf_counter() - start
    tile = side if plan.tile is None else plan.tile  # what main() passes
    seconds: list[float] = []
    cpu_seconds: list[float] = []
    network_peak = [0]
    run_tiled = rec.run_tiled

    def spy(*a: Any, **k: Any) -> Any:  # the peak mark right after the (tiled) network pass
        out = run_tiled(*a, **k)
        network_peak[0] = max(network_peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return out

    rec.run_tiled = spy  # reconstruct_image looks run_tiled up in its module
    for _ in range(max(1, repeats)):
        photo = torch.rand(3, side, side, generator=gen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start, cpu = time.perf_counter(), time.process_time()
            hdr = rec.reconstruct_image(method, photo, tile=tile, overlap=OVERLAP, multiple=multiple,
                                        merge_rows=getattr(plan, "merge_rows", None))
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu)
        assert hdr.shape == (3, side, side) and bool(torch.isfinite(hdr).all())
        del hdr, photo
        gc.collect()
        if sum(seconds) >= repeat_cap:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result.update(tile=plan.tile, planned_tiles=plan.tiles, estimated_bytes=plan.estimated_bytes,
                  largest_tile=getattr(plan, "largest_tile", None), merge_rows=getattr(plan, "merge_rows", None),
                  merge_bytes=getattr(plan, "merge_bytes", 0),
                  seconds=seconds, cpu_seconds=cpu_seconds, peak_bytes=peak - baseline,
                  network_peak_bytes=network_peak[0] - baseline)
    return result


def run_child(stem: str, side: int, budget: str, repeats: int, repeat_cap: float, timeout: float) -> dict[str, Any]:
    """One fresh ``python bench_scaling.py --child ...`` process; returns its measurement dict."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HDRLAB_TORCH_THREADS="1",
               WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stem, str(side), budget, str(repeats),
           str(repeat_cap)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"child exited {proc.returncode}: {tail[0][:300]}"}


def main(argv: list[str] | None = None) -> int:
    # set here, not at import: the tests import this module and must not inherit a disabled W&B
    os.environ.setdefault("HDRLAB_TORCH_THREADS", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        os.chdir(ROOT)
        stem, side, budget, repeats, cap = argv[1:6]
        print(RESULT_TAG + json.dumps(_child(stem, int(side), budget, int(repeats), float(cap))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=None,
                        help="experiment stems with budgets, e.g. singlehdr=1536MiB le2023_debevec=1792MiB")
    parser.add_argument("--sides", nargs="*", type=int, default=list(DEFAULT_SIDES), help="square image sides")
    parser.add_argument("--repeats", type=int, default=3, help="most timed runs per side (default 3)")
    parser.add_argument("--repeat_cap", type=float, default=10.0,
                        help="stop repeating a side once its runs took this many seconds (default 10)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    parser.add_argument("--json", type=Path, default=None, help="output JSON (default benchmarks/results/scaling.json)")
    args = parser.parse_args(argv)
    from hdrlab.budget.units import parse_size

    methods = parse_methods(args.methods)
    print(f"machine: {machine()}; torch threads: 1 (one child process per method and side)", flush=True)
    t_all = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "scaling", "machine": machine(), "threads": 1,
        "budget": {stem: budget for stem, budget in methods.items()},
        "overlap": OVERLAP, "repeats": args.repeats, "repeat_cap_s": args.repeat_cap,
        "measured": "method_tile_plan + reconstruct_image per photo (no file I/O); seconds excludes planning",
        "peak_memory": "child process ru_maxrss (peak mark reset by /proc/self/clear_refs) minus VmRSS "
                       "after model build and warm-up; covers plan + photo + reconstruction",
        "goal": {"loglog_slope": "~1.0", "peak_mb": "<= budget_mb"},
        "methods": {},
    }
    for stem, budget in methods.items():
        budget_bytes = parse_size(budget)
        sides, extra = [], {}
        for side in args.sides:
            child = run_child(stem, side, budget, args.repeats, args.repeat_cap, args.timeout)
            for key in ("method_class", "kind", "peak_source"):
                if key in child:
                    extra[key] = child[key]
            entry = side_entry(side, child, budget_bytes)
            sides.append(entry)
            if "error" in entry:
                print(f"{stem:15s} {side:5d}px  {entry['error']}", flush=True)
                continue
            print(f"{stem:15s} {side:5d}px  tile {str(entry['tile']):>5s} x{entry['tiles']:<3d} "
                  f"{entry['seconds']:7.2f}s ({entry['repeats']} run(s))  {entry['s_per_mpix']:6.2f} s/MPix  "
                  f"work x{entry['work_ratio']:.2f}  {entry['s_per_work_mpix']:5.2f} s/work-MPix  "
                  f"merge {'whole' if entry['merge_rows'] is None else str(entry['merge_rows']) + '-row strips'}  "
                  f"peak {entry['peak_mb']:7.0f} MiB / {entry['budget_mb']:.0f} MiB "
                  f"(model {entry['estimated_mb']:.0f})  plan {entry['plan_seconds']:.1f}s", flush=True)
        summary = method_summary(sides)
        results["methods"][stem] = {**extra, "budget": budget, "sides": sides, **summary}
        slope = summary["loglog_slope"]
        print(f"{stem:15s} log-log slope time vs pixels: {'n/a' if slope is None else f'{slope:.3f}'} (goal ~1.0); "
              f"vs work pixels: {summary['loglog_slope_work'] if slope is None else round(summary['loglog_slope_work'], 3)}; "
              f"max peak/budget {summary['max_peak_over_budget']}", flush=True)
    results["wall_seconds"] = time.perf_counter() - t_all
    path = write_result("scaling", results) if args.json is None else write_result(
        args.json.stem, results, directory=args.json.parent)
    print(f"wrote {path} ({results['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
