"""On a CUDA GPU: every shipped experiment at full size, trained under its ``--memory_budget`` plan,
with the real allocator's peaks beside the planner's estimate.

For every trainable ``experiments/*.yaml`` (the parameter-free baselines are skipped) one
subprocess runs

    python -m hdrlab fit --config experiments/X.yaml --memory_budget 4GiB --pretrained_trunks false
        --trainer.max_steps S --trainer.limit_val_batches 0 --trainer.log_every_n_steps 1
        --trainer.enable_progress_bar false --wandb disabled --run_dir RUNS/X [--extra ...]

``--memory_budget`` makes ``hdrlab fit`` plan the run (batch x accumulation, patch, precision,
activation checkpointing; :mod:`hdrlab.budget.fit`), cap the process with
``torch.cuda.set_per_process_memory_fraction`` and log ``memory/max_allocated_bytes``,
``memory/max_reserved_bytes`` and ``memory/estimated_bytes``. Each run folder's ``metrics.csv``
then gives the row: the plan (``budget/*``), the measured peaks, the estimate, allocated / estimate
(goal: within 10 %), and samples/s (median of ``train/throughput`` after ``--warmup`` logged
steps). A run that fails (out of memory included) keeps its last error line in the row.
Pretrained perceptual trunks are off (random weights, same shapes): the GPU machine need not hold
the weight files.

Writes ``OUT/gpu_budget.json`` and ``OUT/table.md`` (default ``runs/gpu_budget``; ``--out
docs/results/gpu_budget_4gib`` puts them with the other results); the run folders go to ``--runs_dir``
(default ``runs/gpu_budget/runs``). ``--jobs N`` runs N fits at once (each capped at the budget, so the
peaks stay per process; samples/s is then measured while sharing the GPU). ``--dry_run`` prints
the commands. On a machine without CUDA the same script checks itself: ``--accelerator cpu
--extra --config experiments/overrides/tiny.yaml`` (the memory columns are then empty).

Usage: ``python benchmarks/gpu_budget_check.py [--memory_budget 4GiB] [--steps 20] [--jobs 1]
[--methods cfnet singlehdr] [--out DIR] [--timeout 600]``, or ``make gpu-check`` (writes
``docs/results/gpu_budget_4gib/``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: experiments without trainable parameters (evaluation-only baselines)
SKIPPED_PREFIX = "baseline_"
#: |max_allocated / estimate - 1| within this counts as a met estimate
TOLERANCE = 0.10


def fit_command(config: Path, run_dir: Path, *, budget: str, steps: int, accelerator: str | None,
                extra: list[str]) -> list[str]:
    """The ``hdrlab fit`` command of one experiment (module docstring)."""
    cmd = [sys.executable, "-m", "hdrlab", "fit", "--config", str(config), *extra,
           "--memory_budget", budget, "--pretrained_trunks", "false",
           "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
           "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
           "--wandb", "disabled", "--run_dir", str(run_dir)]
    if accelerator:
        cmd += ["--trainer.accelerator", accelerator]
    return cmd


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_run(run_dir: Path, *, warmup: int) -> dict[str, Any]:
    """The row of one run folder: plan, measured peaks, estimate, ratio, samples/s, status."""
    row: dict[str, Any] = {"status": "missing"}
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            row["status"] = str(json.loads(summary.read_text()).get("status", "unknown"))
        except ValueError:
            row["status"] = "unreadable summary.json"
    last: dict[str, float] = {}
    throughput: list[float] = []
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        with metrics.open(newline="") as f:
            for record in csv.DictReader(f):
                for key, text in record.items():
                    value = _finite(text)
                    if key is None or value is None:
                        continue
                    last[key] = value
                    if key == "train/throughput":
                        throughput.append(value)
    for key in ("batch", "accumulate", "patch", "precision_bits", "checkpointing", "budget_bytes"):
        if f"budget/{key}" in last:
            row[key] = last[f"budget/{key}"]
    estimated = last.get("memory/estimated_bytes", last.get("budget/estimated_bytes"))
    allocated, reserved = last.get("memory/max_allocated_bytes"), last.get("memory/max_reserved_bytes")
    row["estimated_bytes"] = estimated
    row["max_allocated_bytes"] = allocated
    row["max_reserved_bytes"] = reserved
    row["allocated_over_estimate"] = allocated / estimated if allocated is not None and estimated else None
    row["samples_per_s"] = median(throughput[warmup:]) if len(throughput) > warmup else None
    return row


def _met(row: dict[str, Any]) -> bool | None:
    ratio = row.get("allocated_over_estimate")
    if row.get("status") != "finished":
        return False
    if ratio is None:
        return None
    return abs(ratio - 1.0) <= TOLERANCE


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.0f}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render_table(rows: dict[str, dict[str, Any]], *, budget: str, device: str) -> str:
    """The Markdown table of the rows (one per experiment)."""
    lines = [f"Each experiment at full size trained under `--memory_budget {budget}` on {device}: the plan, the "
             f"caching allocator's peaks and the planner's estimate (goal: allocated within {TOLERANCE:.0%} of the "
             "estimate, no out-of-memory). Regenerate with `python benchmarks/gpu_budget_check.py --out DIR`.", "",
             "| experiment | status | batch x accum | patch | precision | ckpt | estimate MiB | max allocated MiB "
             "| max reserved MiB | allocated / estimate | samples/s | met |",
             "|---|---|--:|--:|--:|:-:|--:|--:|--:|--:|--:|:-:|"]
    for name, row in rows.items():
        ratio = row.get("allocated_over_estimate")
        plan = (f"{row['batch']:.0f} x {row['accumulate']:.0f}" if "batch" in row and "accumulate" in row else "–")
        met = {True: "yes", False: "**no**", None: ""}[_met(row)]
        status = row["status"] if row["status"] == "finished" else f"{row['status']}: {row.get('error', '')}".strip(": ")
        lines.append(
            f"| {name} | {status} | {plan} | {_rate(row.get('patch')).removesuffix('.0')} | "
            f"{'bf16/fp16' if row.get('precision_bits') == 16 else 'fp32' if row.get('precision_bits') == 32 else '–'} | "
            f"{'on' if row.get('checkpointing') else 'off'} | {_mib(row.get('estimated_bytes'))} | "
            f"{_mib(row.get('max_allocated_bytes'))} | {_mib(row.get('max_reserved_bytes'))} | "
            f"{'–' if ratio is None else f'{ratio:.2f}'} | {_rate(row.get('samples_per_s'))} | {met} |")
    return "\n".join(lines) + "\n"


def _run_one(config: Path, out: Path, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    run_dir = args.runs_dir.resolve() / config.stem
    cmd = fit_command(config, run_dir, budget=args.memory_budget, steps=args.steps, accelerator=args.accelerator,
                      extra=args.extra)
    start = time.perf_counter()
    error = ""
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout,
                              env={**os.environ, "WANDB_MODE": "disabled"})
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
            error = lines[-1][:300] if lines else f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {args.timeout} s"
    row = read_run(run_dir, warmup=args.warmup)
    row["seconds"] = time.perf_counter() - start
    if error:
        row["error"] = error
        if row["status"] == "finished":
            row["status"] = "failed after finishing"
        elif row["status"] == "missing":
            row["status"] = "failed"
    return config.stem, row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory_budget", default="4GiB")
    parser.add_argument("--steps", type=int, default=20, help="training steps per experiment (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="logged steps left out of samples/s (default 5)")
    parser.add_argument("--methods", nargs="*", default=None, help="experiment stems (default: every trainable one)")
    parser.add_argument("--jobs", type=int, default=1, help="fits at once (default 1)")
    parser.add_argument("--accelerator", default="gpu", help="trainer.accelerator (default gpu; cpu for a self-check)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="more hdrlab fit arguments for every run (last on the line)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per fit (default 600)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_budget", help="table and JSON folder")
    parser.add_argument("--runs_dir", type=Path, default=ROOT / "runs" / "gpu_budget" / "runs", help="run folders")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    configs = [c for c in sorted((ROOT / "experiments").glob("*.yaml")) if not c.stem.startswith(SKIPPED_PREFIX)]
    if args.methods:
        unknown = sorted(set(args.methods) - {c.stem for c in configs})
        if unknown:
            parser.error(f"unknown experiments {unknown}; choose from {[c.stem for c in configs]}")
        configs = [c for c in configs if c.stem in args.methods]
    out = args.out.resolve()
    if args.dry_run:
        for config in configs:
            print(" ".join(fit_command(config, args.runs_dir.resolve() / config.stem, budget=args.memory_budget,
                                       steps=args.steps, accelerator=args.accelerator, extra=args.extra)))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({machine()})"
    rows: dict[str, dict[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for name, row in pool.map(lambda c: _run_one(c, out, args), configs):
            rows[name] = row
            ratio = row.get("allocated_over_estimate")
            print(f"{name:22s} {row['status']:10s} allocated {_mib(row.get('max_allocated_bytes')):>7s} MiB  "
                  f"estimate {_mib(row.get('estimated_bytes')):>7s} MiB  "
                  f"ratio {'–' if ratio is None else f'{ratio:.2f}'}  {row.get('error', '')}", flush=True)
    result = {"benchmark": "gpu_budget", "device": device, "machine": machine(), "memory_budget": args.memory_budget,
              "steps": args.steps, "jobs": args.jobs, "tolerance": TOLERANCE, "experiments": rows}
    (out / "gpu_budget.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(render_table(rows, budget=args.memory_budget, device=device))
    print(f"wrote {out / 'gpu_budget.json'} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
