"""``hdrlab compare RUN_OR_SWEEP_DIR... [--metric val/pu21_psnr] [-o report_dir] [--no_pdf] [--reference NAME=RUN_DIR ...]``.

Reads every run folder (``metrics.csv`` / ``summary.json``) under the given run or sweep folders,
groups the runs by the parameters that vary between them, and writes a report (:mod:`hdrlab.sweep.compare`):
``index.html`` (one results table per output domain, main-metric chart or heatmap, training curves,
config differences, previews), ``table.md``, ``table.csv`` and per-domain CSVs, PNG and PDF figures.
Prints the per-domain tables. ``--reference NAME=RUN_DIR`` (repeatable) compares every run's
``test_per_sample.csv`` scene by scene with that reference run's (:mod:`hdrlab.report.scenes`).

Exit status: 0 (also when some runs failed: they are listed), 2 on user errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hdrlab.errors import ConfigError
from hdrlab.report.scenes import compare_scenes, load_references, parse_reference
from hdrlab.sweep.compare import (
    DEFAULT_METRIC,
    compare_runs,
    discover_runs,
    format_domain_tables,
    read_run,
    write_report,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``hdrlab compare`` argument parser."""
    p = argparse.ArgumentParser(prog="hdrlab compare", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders (trials/*) or runs roots")
    p.add_argument("--metric", default=DEFAULT_METRIC,
                   help=f"main metric: runs without a finite value count as failed (default {DEFAULT_METRIC}; "
                        "display methods log val/display_psnr)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="report folder (default: <first path>/report)")
    p.add_argument("--no_pdf", action="store_true", help="write the figures as PNG only (no PDF copies)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=RUN_DIR",
                   help="a named reference run folder holding test_per_sample.csv (repeatable): per-scene wins, "
                        "mean paired differences with 95%% t-intervals, per_scene.csv")
    return p


def main(argv: list[str]) -> int:
    """Run ``hdrlab compare``; see the module docstring."""
    args = build_parser().parse_args(argv)
    if not args.metric.startswith("val/"):
        raise ConfigError(f"--metric {args.metric!r}: compare reads validation metrics; use a val/* name "
                          f"such as {DEFAULT_METRIC} or val/display_psnr")
    references: dict[str, Path] = {}
    for text in args.reference:
        name, path = parse_reference(text)
        if name in references:
            raise ConfigError(f"--reference {name} given twice; give each reference a distinct NAME")
        references[name] = path
    ref_tables = load_references(references)  # before reading the runs: a missing CSV fails at once
    records = [read_run(p) for p in discover_runs(args.paths)]
    comparison = compare_runs(records, metric=args.metric)
    scenes = compare_scenes([r.path for r in records], ref_tables)  # mismatched scenes: ConfigError, nothing written
    out = args.output if args.output is not None else args.paths[0] / "report"
    written = write_report(comparison, out, pdf=not args.no_pdf, scenes=scenes)
    print(format_domain_tables(comparison))
    print(f"\n{len(records)} runs, {len(comparison.rows)} groups, {len(comparison.failures)} failed; "
          f"report: {written['html']} (table: {written['csv']})")
    return 0
