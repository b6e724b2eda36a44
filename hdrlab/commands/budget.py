"""``hdrlab budget``: peak training memory of an experiment and the plan for a memory budget.

* ``hdrlab budget --config experiments/X.yaml --memory_budget 4GiB [--json]``: the estimate of one
  training step at the paper's batch and patch (fp32; tensor peak by category, FLOPs per step) and
  the plan for the budget (:func:`hdrlab.budget.plan.plan_for_budget`); exit 2 with the smallest
  working budget if nothing fits.
* ``hdrlab budget --all --memory_budget 4GiB [--json]``: one row per ``experiments/*.yaml`` that
  trains (parameter-free baselines are listed as skipped): fits or not, the chosen micro-batch x
  accumulation, patch, precision, checkpointing, estimated peak, and for impossible budgets the
  smallest budget that would work. Exit 0.

Estimates run on fake tensors (no allocation, no GPU) at full size (``--width 1``) with pretrained
files off (same shapes). Device memory = tensor peak plus the documented CUDA allowance
(:data:`hdrlab.budget.plan.CUDA_OVERHEAD`: 512 MiB context + 15 %), unverified on a real GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from hdrlab.budget.methods import MethodEstimator, method_estimator
from hdrlab.budget.plan import CUDA_OVERHEAD, BudgetError, PlanCandidate, normalize_precision
from hdrlab.budget.units import format_size, parse_size
from hdrlab.errors import ConfigError, HDRLabError
from hdrlab.runs import experiment_name

__all__ = ["budget_report", "main"]


def _seeded_estimator(est: MethodEstimator, seed: dict[PlanCandidate, int]):
    """The planner's estimator, answering the first question about a seeded candidate from ``seed``."""
    fresh = est.candidate_estimator()

    def estimate(c: PlanCandidate) -> int:
        if c in seed:
            return seed.pop(c)
        return fresh(c)

    return estimate


def budget_report(
    configs: list[str],
    *,
    budget_bytes: int,
    width: float = 1.0,
    patch: int | None = None,
    min_patch: int = 64,
    precisions: tuple[str, ...] = ("bf16-mixed", "16-mixed"),
) -> dict[str, Any]:
    """Estimate and plan one experiment (``configs``: YAMLs, later override earlier).

    Returns:
        A JSON-ready dict: ``experiment``, ``method``, ``trainable``, ``paper`` (batch, patch,
        stride, optimizer), ``estimate`` (paper config in fp32: ``peak_bytes``, ``by_category``,
        ``device_bytes``, ``flops_per_step``), ``fits``, ``plan`` (or None), ``required_bytes``
        (smallest working budget when nothing fits), ``error``, ``seconds``.
    """
    start = time.perf_counter()
    est = method_estimator(configs, width=width, patch=patch)
    report: dict[str, Any] = {
        "experiment": experiment_name(configs), "config": str(configs[-1]), "method": est.method,
        "trainable": est.trainable, "budget_bytes": budget_bytes,
        "paper": {"batch": est.effective_batch, "patch": est.paper_patch, "stride": est.stride,
                  "optimizer": est.optimizer},
        "estimate": None, "fits": False, "plan": None, "required_bytes": None, "error": None,
    }
    if not est.trainable:
        report["error"] = "no trainable parameters (evaluation only): skipped"
        report["seconds"] = time.perf_counter() - start
        return report
    seed: dict[PlanCandidate, int] = {}
    try:
        paper = est.estimate(batch=est.effective_batch, patch=est.paper_patch)
    except HDRLabError:
        raise
    except Exception:  # noqa: BLE001 - the paper configuration cannot run; the planner names what can
        paper = None
    if paper is not None:
        report["estimate"] = {
            "batch": paper.batch, "patch": paper.patch, "precision": paper.precision,
            "peak_bytes": paper.peak_bytes, "by_category": paper.by_category,
            "device_bytes": CUDA_OVERHEAD.device_bytes(paper.peak_bytes), "flops_per_step": paper.flops_per_step,
        }
        seed[PlanCandidate(est.effective_batch, est.paper_patch, "32", False)] = paper.peak_bytes
    lowest = min(est.paper_patch, max(est.stride, -(-min_patch // est.stride) * est.stride))
    from hdrlab.budget.plan import plan_for_budget

    try:
        plan = plan_for_budget(
            _seeded_estimator(est, seed), budget_bytes=budget_bytes, paper_patch=est.paper_patch,
            effective_batch=est.effective_batch, stride=est.stride, min_patch=lowest, allow_precisions=precisions,
        )
    except BudgetError as err:
        report["required_bytes"] = err.required_bytes
        report["error"] = str(err)
    else:
        report["fits"] = True
        report["plan"] = plan.as_dict()
        report["required_bytes"] = plan.required_bytes
        report["describe"] = plan.describe()
    report["estimates"] = len(est.seconds)
    report["seconds"] = time.perf_counter() - start
    return report


def _row(r: dict[str, Any]) -> list[str]:
    paper = r["paper"]
    head = [r["experiment"], r["method"], f"{paper['batch']} x {paper['patch']}"]
    if not r["trainable"]:
        return head + ["skipped", "-", "-", "-", "-", "-", "no trainable parameters (evaluation only)", f"{r['seconds']:.0f}"]
    p = r["plan"]
    if p is None:
        need = f"needs >= {format_size(r['required_bytes'])}" if r["required_bytes"] else f"error: {r['error']}"
        return head + ["NO", "-", "-", "-", "-", "-", need, f"{r['seconds']:.0f}"]
    return head + [
        "yes", f"{p['batch']} x {p['accumulate']}", str(p["patch"]), p["precision"],
        "on" if p["checkpointing"] else "off",
        f"{format_size(p['estimated_bytes'])} ({format_size(p['required_bytes'])})", p["stage"], f"{r['seconds']:.0f}",
    ]


_HEADER = ["experiment", "method", "paper batch x patch", "fits", "batch x accum", "patch", "precision",
           "ckpt", "peak tensors (device)", "stage / smallest budget", "s"]


def _print_table(reports: list[dict[str, Any]], budget_bytes: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training plans for --memory_budget {format_size(budget_bytes)} "
                        f"(device = tensors x {1 + CUDA_OVERHEAD.margin:.2f} + "
                        f"{format_size(CUDA_OVERHEAD.context_bytes)} CUDA context; unverified on a GPU)")
    for name in _HEADER:
        table.add_column(name, overflow="fold")
    for r in reports:
        table.add_row(*_row(r))
    Console(width=200).print(table)


def _print_single(r: dict[str, Any]) -> None:
    paper = r["paper"]
    print(f"{r['experiment']} ({r['method']}): paper batch {paper['batch']}, patch {paper['patch']}, "
          f"network stride {paper['stride']}, optimizer {paper['optimizer']}")
    e = r["estimate"]
    if e is None:
        print(f"  {r['error'] or 'the paper configuration cannot train (see the plan)'}")
        if r["plan"] is not None:
            print(f"  plan for {format_size(r['budget_bytes'])}: {r['describe']}")
        return
    cats = ", ".join(f"{k} {format_size(v)}" for k, v in e["by_category"].items() if v)
    print(f"  estimate (fp32, batch {e['batch']}, patch {e['patch']}): tensors {format_size(e['peak_bytes'])} "
          f"[{cats}], device {format_size(e['device_bytes'])}, {e['flops_per_step'] / 1e12:.3f} TFLOP per step")
    if r["plan"] is not None:
        print(f"  plan for {format_size(r['budget_bytes'])}: {r['describe']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hdrlab budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help="experiment YAML (repeatable: later override earlier)")
    parser.add_argument("--all", action="store_true", help="every experiment YAML in --experiments_dir")
    parser.add_argument("--experiments_dir", default="experiments", help="folder scanned by --all")
    parser.add_argument("--memory_budget", required=True, help="device budget, e.g. 4GiB, 512MiB, 8GB (=8e9 bytes)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1 = full size)")
    parser.add_argument("--patch", type=int, default=None, help="override the paper patch (quick checks)")
    parser.add_argument("--min_patch", type=int, default=64, help="smallest patch the planner may shrink to")
    parser.add_argument("--precisions", default="bf16-mixed,16-mixed",
                        help="autocast precisions the device supports, in order (empty: fp32 only)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        budget = parse_size(args.memory_budget)
    except ConfigError as err:
        raise ConfigError(f"--memory_budget {args.memory_budget!r}: {err}") from err
    precisions = tuple(normalize_precision(p) for p in args.precisions.split(",") if p.strip())
    if bool(args.all) == bool(args.config):
        raise ConfigError("give either --config experiments/X.yaml or --all")
    options = dict(budget_bytes=budget, width=args.width, patch=args.patch, min_patch=args.min_patch,
                   precisions=precisions)
    if args.config:
        report = budget_report(args.config, **options)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_single(report)
        if report["trainable"] and not report["fits"]:
            raise BudgetError(report["error"], required_bytes=report["required_bytes"])
        return 0
    folder = Path(args.experiments_dir)
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"no experiment YAMLs in {folder}; pass --experiments_dir")
    reports = []
    for path in paths:
        try:
            reports.append(budget_report([str(path)], **options))
        except ConfigError as err:  # a broken config is a row, not the end of the table
            reports.append({"experiment": path.stem, "config": str(path), "method": "?", "trainable": True,
                            "paper": {"batch": "?", "patch": "?"}, "plan": None, "fits": False,
                            "required_bytes": None, "error": str(err), "seconds": 0.0})
        if not args.json:
            r = reports[-1]
            status = r.get("describe") if r["fits"] else (r["error"] or "no plan").split(";")[0]
            print(f"[{len(reports)}/{len(paths)}] {r['experiment']}: {status} ({r['seconds']:.0f} s)", flush=True)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        _print_table(reports, budget)
    return 0
