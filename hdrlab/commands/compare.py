"""``hdrlab compare RUN_OR_SWEEP_DIR... [--test] [--protocol P] [--metric M] [-o report_dir] [--no_pdf] [--reference NAME=TARGET ...]``.

Reads every run folder (``metrics.csv`` / ``summary.json``) under the given run or sweep folders,
groups the runs by the parameters that vary between them, and writes a report (:mod:`hdrlab.sweep.compare`):
``index.html`` (one results table per output domain, main-metric chart or heatmap, training curves,
config differences, previews), ``table.md``, ``table.csv`` and per-domain CSVs, PNG and PDF figures.
Prints the per-domain tables. ``--reference NAME=RUN_DIR`` (repeatable) compares every run's
``test_per_sample.csv`` scene by scene with that reference run's (:mod:`hdrlab.report.scenes`).

``--test`` compares held-out test scores instead of validation metrics (:mod:`hdrlab.report.testruns`):
every folder holding ``test_per_sample.csv`` is a run, labelled ``<recipe>/<stage>`` when a recipe's
test stage made it; rows are labels, repeats over seeds give ``mean ± std``, every value carries its
95 % interval over the scenes; ``--reference`` then also takes ``@STAGE`` (the same recipe run's test
stage, e.g. ``untrained_self=@untrained``) and a run label (``no_hallucination=baseline_inverse_crf``,
matched by seed).

``--protocol hdrlab|kalantari2017`` (:data:`hdrlab.metrics.PROTOCOLS`) keeps only that protocol's
HDR-metric columns (e.g. ``k17_psnr_mu``, ``k17_psnr_l``, ``k17_ssim_mu``, ``k17_ssim_l``, from runs
tested with ``hdrlab test --protocol kalantari2017``; display and other columns are kept as they
are), makes the protocol's first metric the default main metric, and names the protocol at the head
of the report and of the printed tables. Without it every column is shown (hdrlab's defaults).

Exit status: 0 (also when some runs failed: they are listed), 2 on user errors (also a ``--metric``
that no run logged: the message lists the logged ones; an ``-o`` that is a file or read-only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dataclasses
from typing import TYPE_CHECKING

from hdrlab.errors import ConfigError

if TYPE_CHECKING:  # the metrics import torch; compare stays torch-free unless --protocol is given
    from hdrlab.metrics.collection import Protocol
from hdrlab.report.scenes import compare_scenes, load_references, parse_reference
from hdrlab.report.testruns import (
    TEST_METRIC,
    compare_test_scenes,
    discover_test_runs,
    read_test_runs,
    test_records,
    training_curves,
)
from hdrlab.sweep.compare import (
    DEFAULT_METRIC,
    RunRecord,
    compare_runs,
    discover_runs,
    format_domain_tables,
    read_run,
    read_summary,
    score_metric,
    write_report,
)
from hdrlab.checkpoints import check_output_dir


def build_parser() -> argparse.ArgumentParser:
    """The ``hdrlab compare`` argument parser."""
    p = argparse.ArgumentParser(prog="hdrlab compare", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders (trials/*) or runs roots")
    p.add_argument("--test", action="store_true",
                   help="compare held-out test scores (test_per_sample.csv of hdrlab test or a recipe's test stages) "
                        "instead of validation metrics")
    p.add_argument("--protocol", default=None,
                   help="hdrlab | kalantari2017: keep only this evaluation protocol's HDR-metric columns and name "
                        "it in the report (default: every column)")
    p.add_argument("--metric", default=None,
                   help=f"main metric: runs without a finite value count as failed (default {DEFAULT_METRIC}, with "
                        f"--test {TEST_METRIC}; display methods log val/display_psnr, test/display_psnr)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="report folder (default: <first path>/report)")
    p.add_argument("--no_pdf", action="store_true", help="write the figures as PNG only (no PDF copies)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME=TARGET",
                   help="a named reference, a run folder holding test_per_sample.csv (with --test also @STAGE or a "
                        "run label) (repeatable): per-scene wins, mean paired differences with 95%% t-intervals, "
                        "per_scene.csv")
    return p


def main(argv: list[str]) -> int:
    """Run ``hdrlab compare``; see the module docstring."""
    args = build_parser().parse_args(argv)
    prefix = "test/" if args.test else "val/"
    protocol = None
    if args.protocol is not None:
        from hdrlab.metrics.collection import get_protocol

        protocol = get_protocol(args.protocol)
    default_metric = (prefix + protocol.metrics[0] if protocol is not None
                      else TEST_METRIC if args.test else DEFAULT_METRIC)
    metric = args.metric or default_metric
    if not metric.startswith(prefix):
        raise ConfigError(f"--metric {metric!r}: compare{' --test' if args.test else ''} reads "
                          f"{'test' if args.test else 'validation'} metrics; use a {prefix}* name such as "
                          f"{prefix}pu21_psnr or {prefix}display_psnr")
    references: dict[str, Path] = {}
    for text in args.reference:
        name, path = parse_reference(text)
        if name in references:
            raise ConfigError(f"--reference {name} given twice; give each reference a distinct NAME")
        references[name] = path
    if args.test:
        return _main_test(args, metric, {name: text.partition("=")[2].strip() for name, text in
                                         zip(references, args.reference)}, protocol)
    ref_tables = load_references(references)  # before reading the runs: a missing CSV fails at once
    found = discover_runs(args.paths)
    tests = [p for p in found if read_summary(p).get("stage") == "test"]  # scored by --test, not failed fits
    records = [protocol_record(read_run(p), protocol) for p in found if p not in tests]
    if not records:
        raise ConfigError(f"{', '.join(str(p) for p in args.paths)} holds only test runs ({len(tests)}); "
                          "compare them with --test")
    if args.metric is not None:
        check_metric(records, metric)
    out = check_output_dir(args.output if args.output is not None else args.paths[0] / "report", option="-o")
    comparison = compare_runs(records, metric=metric)
    scenes = compare_scenes([r.path for r in records], ref_tables)  # mismatched scenes: ConfigError, nothing written
    written = write_report(comparison, out, pdf=not args.no_pdf, scenes=scenes,
                           lead_sections=protocol_sections(protocol))
    print(protocol_line(protocol) + format_domain_tables(comparison))
    skipped = f" ({len(tests)} test runs left out: compare them with --test)" if tests else ""
    print(f"\n{len(records)} runs{skipped}, {len(comparison.rows)} groups, {len(comparison.failures)} failed; "
          f"report: {written['html']} (table: {written['csv']})")
    return 0


def check_metric(records: list[RunRecord], metric: str) -> None:
    """Refuse a ``--metric`` that no run logged (it would count every run as failed).

    Raises:
        ConfigError: the message lists the metrics the runs logged.
    """
    if not records or any(score_metric(r, metric) is not None for r in records):
        return
    prefix = metric.split("/", 1)[0] + "/"
    logged = sorted({k for r in records for k in r.metrics if k.startswith(prefix)})
    shown = ", ".join(logged[:12]) + (f", ... ({len(logged)} in all)" if len(logged) > 12 else "")
    raise ConfigError(f"--metric {metric}: no run logged it; the runs logged {shown or 'no ' + prefix + '* metric'}; "
                      "give one of those with --metric")


def protocol_record(record: RunRecord, protocol: Protocol | None) -> RunRecord:
    """``record`` with only ``protocol``'s HDR-metric columns (display and other columns kept);
    unchanged when ``protocol`` is None."""
    if protocol is None:
        return record
    from hdrlab.report.tables import metric_domain, split_metric

    keep = {k: v for k, v in record.metrics.items()
            if metric_domain(k) != "linear" or split_metric(k)[0] in protocol.metrics}
    scenes = {k: v for k, v in record.scenes.items() if k in keep}
    return dataclasses.replace(record, metrics=keep, scenes=scenes)


def protocol_line(protocol: Protocol | None) -> str:
    """The protocol header of the printed tables ("" without a protocol)."""
    if protocol is None:
        return ""
    return f"# Evaluation protocol: {protocol.name}\n\n{protocol.description}.\n\n"


def protocol_sections(protocol: Protocol | None) -> list:
    """The report's lead section naming the protocol (none without a protocol)."""
    if protocol is None:
        return []
    import html

    from hdrlab.report import page as P

    body = (f"<p><b>{html.escape(protocol.name)}</b>: {html.escape(protocol.description)}. Metrics: "
            + ", ".join(f"<code>{html.escape(m)}</code>" for m in protocol.metrics)
            + f"; alignment <code>{html.escape(protocol.align)}</code>; regions "
            + ", ".join(html.escape(r) for r in protocol.regions) + ".</p>")
    return [P.Section("protocol", f"Evaluation protocol: {protocol.name}", body)]


def _main_test(args: argparse.Namespace, metric: str, references: dict[str, str],
               protocol: Protocol | None = None) -> int:
    """``hdrlab compare --test``: test runs, their per-scene wins, one report."""
    folders = discover_test_runs(args.paths)
    runs = read_test_runs(folders)
    scenes = compare_test_scenes(runs, references)  # unresolvable references / mismatched scenes: nothing written
    records = [protocol_record(r, protocol) for r in test_records(runs)]
    if args.metric is not None:
        check_metric(records, metric)
    out = check_output_dir(args.output if args.output is not None else args.paths[0] / "report", option="-o")
    comparison = compare_runs(records, metric=metric)
    figures = _scene_figure_section(runs, out, pdf=not args.no_pdf)
    written = write_report(comparison, out, pdf=not args.no_pdf, scenes=scenes, curves=training_curves(args.paths),
                           extra_sections=figures, lead_sections=protocol_sections(protocol))
    print(protocol_line(protocol) + format_domain_tables(comparison))
    print(f"\n{len(runs)} test runs, {len(comparison.rows)} rows, {len(comparison.failures)} failed; "
          f"report: {written['html']} (table: {written['csv']})")
    return 0


def _scene_figure_section(runs: list, out: Path, *, pdf: bool) -> list:
    """The report section of per-scene figures (:mod:`hdrlab.report.scene_figure`) from the test runs
    that saved their outputs (``hdrlab test --save_test_outputs true``): one column per row label
    (its first seed), the most clipped scenes; no section when no run saved outputs."""
    from hdrlab.report import page as P
    from hdrlab.report.scene_figure import scene_figures_from_runs
    from hdrlab.runs import TEST_OUTPUTS_FOLDER

    first: dict[str, Path] = {}
    for run in sorted(runs, key=lambda r: (str(r.seed), str(r.path))):
        if (run.path / TEST_OUTPUTS_FOLDER).is_dir():
            first.setdefault(run.label, run.path)
    if not first:
        return []
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("scene_*.png"), *out.glob("scene_*.pdf")]:
        if not old.name.startswith("scene_diff_"):
            old.unlink()
    figures = scene_figures_from_runs(sorted(first.items()), out, pdf=pdf)
    if not figures:
        return []
    text = ("<p>The most clipped test scenes, one titled column per method (its first seed; runs tested with "
            "<code>--save_test_outputs true</code>). Rows: the display rendering after median scale alignment with "
            "the zoom box, the zoomed crop of the largest clipped region, false-colour log10 luminance "
            "(one colour bar), and the error |log2(prediction / reference)| of the luminance in stops.</p>")
    body = text + "<div class='figs'>" + "\n".join(P.figure_html(f, out) for f in figures) + "</div>"
    return [P.Section("scene-figures", f"Per-scene figures ({len(figures)} scenes)", body)]
