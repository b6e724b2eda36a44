"""Render the README "Performance" table from the benchmark result JSONs in ``benchmarks/results/``.

Reads ``lightning_overhead.json`` (bench_lightning_overhead.py), ``flops.json`` (bench_flops.py),
``data.json`` (bench_data.py), ``mergers.json`` (bench_mergers.py), ``two_stage_merge.json``
(bench_two_stage_merge.py) and ``scaling.json`` (bench_scaling.py); a missing file drops its rows. Each row is one measured ratio with its goal; the table replaces everything between
the ``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers of README.md (a "## Performance"
section with the markers is inserted before "## Documentation" when the README has none).
Nothing is measured here.

Usage: ``python benchmarks/report.py [--results DIR] [--readme README.md] [--check]``
(``--check``: exit 1 when the README table is not the one the JSONs give, without writing).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One table row: ``measured`` compared with ``goal`` by ``better`` (``"<="`` or ``">="``)."""

    benchmark: str
    case: str
    measured: float
    goal: float | None
    better: str = "<="
    unit: str = "x"
    command: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None or math.isnan(self.measured):
            return None
        return self.measured <= self.goal if self.better == "<=" else self.measured >= self.goal


def fmt(value: float, unit: str) -> str:
    """``1.234x`` / ``56%`` / ``n/a`` for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "%":
        return f"{100 * value:.0f}%"
    if unit == "" and 0 < abs(value) < 1e-2:
        return f"{value:.1e}"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}{unit}"


def render_table(rows: list[Row], *, machine: str | None = None) -> str:
    """The Markdown table (plus a one-line header naming the machine) of ``rows``."""
    lines = []
    if machine:
        lines.append(f"Measured on {machine}, one torch thread per process. Regenerate with `make bench`.")
        lines.append("")
    lines += ["| Benchmark | Case | Measured | Goal | Met |", "|---|---|---:|---:|:---:|"]
    for row in rows:
        goal = "" if row.goal is None else f"{row.better} {fmt(row.goal, row.unit)}"
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(f"| {row.benchmark} | {row.case} | {fmt(row.measured, row.unit)} | {goal} | {met} |")
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with the part between :data:`START` and :data:`END` replaced by ``block``; without the
    markers a "## Performance" section holding them goes before "## Documentation" (or at the end)."""
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        return f"{head}{START}\n{block}{END}{tail}"
    section = ("## Performance\n\nRatios measured against a reference in the same run (benchmarks/*.py; "
               "each writes benchmarks/results/<name>.json, `benchmarks/report.py` renders this table).\n\n"
               f"{START}\n{block}{END}\n\n")
    marker = "## Documentation"
    if marker in text:
        return text.replace(marker, section + marker, 1)
    return text.rstrip("\n") + "\n\n" + section


# ---------------------------------------------------------------------- rows of each result file
def rows_lightning(data: dict[str, Any]) -> list[Row]:
    cmd = "python benchmarks/bench_lightning_overhead.py"
    rows = []
    for method, entry in data.get("methods", {}).items():
        rows.append(Row("Lightning overhead (fit step / plain loop)", method, entry["ratio_step"], 1.05, "<=",
                        command=cmd))
        rows.append(Row("Lightning overhead incl. in-loop data", method, entry["ratio_with_data"], None,
                        command=cmd))
    return rows


def rows_flops(data: dict[str, Any]) -> list[Row]:
    """One row per method: the default fp32 step against the goal; the opt-in variants
    (``channels_last``, bf16 autocast) named in the case column."""
    rows = []
    for method, entry in data.get("methods", {}).items():
        utilisation = dict(entry.get("utilisation", {}))
        if "fp32" not in utilisation:
            continue
        others = ", ".join(f"{k} {fmt(v, '%')}" for k, v in utilisation.items() if k != "fp32")
        goal = 0.5 if entry.get("conv_heavy") else None
        rows.append(Row("FLOP utilisation (step FLOP/s / fp32 GEMM rate)", f"{method}" + (f" (opt-in: {others})" if others else ""),
                        utilisation["fp32"], goal, ">=", unit="%", command="python benchmarks/bench_flops.py"))
        wide = entry.get("wide") or {}
        wide_utilisation = dict(wide.get("utilisation", {}))
        if "fp32" in wide_utilisation:
            others = ", ".join(f"{k} {fmt(v, '%')}" for k, v in wide_utilisation.items() if k != "fp32")
            case = f"{method} at width {wide['width']:g}" + (f" (opt-in: {others})" if others else "")
            rows.append(Row("FLOP utilisation, widest CPU-sized width", case, wide_utilisation["fp32"], goal, ">=",
                            unit="%", command="python benchmarks/bench_flops.py"))
    return rows


def rows_data(data: dict[str, Any]) -> list[Row]:
    """One row per method: the first epoch (every item renders its scene) against the goal; later
    epochs (scenes cached), when measured, named in the case column."""
    rows = []
    for method, entry in data.get("methods", {}).items():
        cached = f" (scenes cached: {fmt(entry['ratio_cached'], 'x')})" if "ratio_cached" in entry else ""
        rows.append(Row("Synthesis / consumption (samples/s), first epoch", method + cached, entry["ratio"], 5.0, ">=",
                        command="python benchmarks/bench_data.py"))
    return rows


#: wall-time goals of the merges against OpenCV on the same stack and thread count
MERGER_GOALS = {"debevec": 1.0, "debevec_known_crf": 1.0, "mertens": 1.5}
#: case column of each merge
MERGER_CASES = {"debevec": "debevec (response recovered)", "debevec_known_crf": "debevec (known response)",
                "mertens": "mertens"}


def rows_mergers(data: dict[str, Any]) -> list[Row]:
    """bench_mergers.py's file: wall-time ratio per merge against its goal, the CPU-time ratio
    (OpenCV may use more threads than asked), and Mertens' largest difference from OpenCV."""
    cmd = "python benchmarks/bench_mergers.py --json benchmarks/results/mergers.json"
    rows = []
    for name, goal in MERGER_GOALS.items():
        entry = data.get(name)
        if not isinstance(entry, dict) or "ratio" not in entry:
            continue
        case = MERGER_CASES[name]
        rows.append(Row("Merge wall time (hdrlab / OpenCV)", case, entry["ratio"], goal, "<=", command=cmd))
        if entry.get("opencv_cpu_s"):
            rows.append(Row("Merge CPU time (hdrlab / OpenCV)", case, entry["hdrlab_cpu_s"] / entry["opencv_cpu_s"],
                            None, command=cmd))
    mertens = data.get("mertens", {})
    if "max_abs_diff_vs_opencv" in mertens:
        rows.append(Row("Mertens max abs difference from OpenCV (1024x768)", "every pixel",
                        mertens["max_abs_diff_vs_opencv"], 1e-4, "<=", unit="", command=cmd))
    known = data.get("debevec_known_crf", {})
    if "max_rel_diff_vs_opencv" in known:
        rows.append(Row("Debevec (known response) max relative difference from OpenCV", "every pixel",
                        known["max_rel_diff_vs_opencv"], 1e-5, "<=", unit="", command=cmd))
    return rows


def rows_two_stage_merge(data: dict[str, Any]) -> list[Row]:
    """bench_two_stage_merge.py's file: the share of a TwoStage training step spent in the merger
    (forward, plus backward when it is differentiable); no goal, it says where a step's time goes."""
    return [Row("Merger share of a TwoStage training step", case, entry["share"], None, unit="%",
                command="python benchmarks/bench_two_stage_merge.py")
            for case, entry in data.get("methods", {}).items()]


def rows_scaling(data: dict[str, Any]) -> list[Row]:
    """bench_scaling.py's file: per method, the log-log slope of reconstruct time against pixels
    (1 = linear) and the largest peak memory over the budget among the sides it ran."""
    cmd = "python benchmarks/bench_scaling.py"
    rows = []
    for method, entry in data.get("methods", {}).items():
        sides = [s["side"] for s in entry.get("sides", []) if "seconds" in s]
        span = f"{min(sides)}-{max(sides)} px, {entry.get('budget', '?')}" if sides else str(entry.get("budget", ""))
        if entry.get("loglog_slope") is not None:
            rows.append(Row("Reconstruct time vs pixels (log-log slope)", f"{method} ({span})", entry["loglog_slope"],
                            SCALING_SLOPE_GOAL, "<=", unit="", command=cmd))
        if entry.get("max_peak_over_budget") is not None:
            rows.append(Row("Reconstruct peak memory / budget (largest over sides)", method,
                            entry["max_peak_over_budget"], 1.0, "<=", unit="", command=cmd))
    return rows


#: largest log-log slope of time against pixels that counts as linear cost
SCALING_SLOPE_GOAL = 1.1


SOURCES: list[tuple[str, Callable[[dict[str, Any]], list[Row]]]] = [
    ("lightning_overhead", rows_lightning),
    ("flops", rows_flops),
    ("data", rows_data),
    ("mergers", rows_mergers),
    ("two_stage_merge", rows_two_stage_merge),
    ("scaling", rows_scaling),
]


def collect(results: Path) -> tuple[list[Row], str | None]:
    """Rows of every result file present in ``results`` and the machine the first one names."""
    rows: list[Row] = []
    machine = None
    for name, build in SOURCES:
        path = results / f"{name}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        rows += build(data)
        machine = machine or data.get("machine")
    return rows, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README table is stale; write nothing")
    args = parser.parse_args(argv)
    rows, machine = collect(args.results)
    table = render_table(rows, machine=machine)
    text = args.readme.read_text()
    updated = replace_between_markers(text, table)
    print(table, end="")
    if args.check:
        return 0 if updated == text else 1
    if updated != text:
        args.readme.write_text(updated)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
