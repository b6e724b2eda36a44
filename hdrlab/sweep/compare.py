"""Comparison of finished runs: one table grouped by the sweep's varying parameters, plots, a report.

A *run folder* is any folder holding ``metrics.csv`` (Lightning CSV logger) or ``summary.json``
(:class:`hdrlab.callbacks.run_artifacts.RunSummary`); a *sweep folder* holds run folders under
``trials/*`` (:mod:`hdrlab.sweep.agent`). Each run contributes

* its configuration: ``config.yaml`` (LightningCLI's saved config, read with OmegaConf), flattened
  to dotted keys (``model.init_args.merger.class_path``);
* its final metrics: the last finite value of every ``val/*`` column of ``metrics.csv``, replaced
  by the finite ``val/*`` values of ``summary.json``'s ``metrics`` when present;
* its status: ``summary.json``'s ``status`` (``"finished"`` for a completed fit).

Runs are grouped by the *varying parameters*: the config keys whose values differ across runs,
ignoring run identity and seeds (:data:`IGNORED_KEYS`). Each group reports ``n`` (runs in the
group that finished with a finite value of the main metric) and, for every ``val/*`` metric,
the mean and the sample standard deviation (``ddof = 1``; NaN below two values) over the finite
values of the finished runs. Runs that did not finish or lack the main metric are listed as
failures. :func:`write_table_csv` / :func:`format_table` give that grouped table (``table.csv`` is
the contract the notebooks reproduce).

:func:`write_report` writes the report (:mod:`hdrlab.report`, ``docs/compare.md``): ``index.html``
with an embedded stylesheet, one results table per output domain (linear: HDR metrics, display:
display metrics; metric x region columns, ``mean ± std`` only where n > 1, best per column in
bold), the main metric per group (a generator x merger heatmap only for grids of more than one
generator and more than one merger, else bars), training/validation curves against samples
seen, the config keys that differ between runs, the preview grid; the same tables as Markdown
and CSV, the figures as PNG and PDF. A run's output domain is read from its logged metrics, so
no method class (torch) is imported.
"""

from __future__ import annotations

import csv
import html
import importlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrlab.errors import HDRIOError

#: Config keys (last dotted component) that identify a run rather than configure it.
IGNORED_KEYS: frozenset[str] = frozenset(
    {"run_dir", "run_id", "seed_everything", "seed", "config", "runs_root", "experiment", "ckpt_path",
     "default_root_dir", "wandb", "save_test_outputs"}
)
#: The default metric of ``hdrlab compare``.
DEFAULT_METRIC = "val/pu21_psnr"
#: The metric of display-output methods (CF-Net, Mertens fusion).
DISPLAY_METRIC = "val/display_psnr"
_PREVIEW = re.compile(r"^step(\d+)_(.+)\.png$")


@dataclass
class RunRecord:
    """One run folder's configuration, final metrics and status.

    Attributes:
        path: The run folder.
        config: Flattened config, dotted key -> plain value (lists kept as lists).
        metrics: ``val/*`` name -> last finite value.
        status: ``summary.json`` status, ``"unknown"`` without a summary.
        seed: ``seed_everything`` (or the summary's seed), ``None`` when unknown.
        previews: Scene name -> latest validation preview PNG.
        scenes: Metric -> scene -> value, for metrics that are means over test scenes
            (:mod:`hdrlab.report.testruns`); empty for validation metrics.
        name: Column name in the config differences (default: the run folder's name); runs of one
            name that differ only in their seeds share a column there.
        described: What the config differences show of the run, when it is not ``config`` (test runs:
            their recipe, checkpoint and stage arguments; ``config`` is what groups them).
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, float]
    status: str
    seed: Any = None
    previews: dict[str, Path] = field(default_factory=dict)
    scenes: dict[str, dict[str, float]] = field(default_factory=dict)
    name: str = ""
    described: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the run completed (``status == "finished"``)."""
        return self.status == "finished"


@dataclass
class Comparison:
    """Grouped results of several runs.

    Attributes:
        metric: The main metric (``failures`` are runs without a finite value of it).
        params: The varying parameters (dotted config keys), in sorted order.
        metric_names: Every ``val/*`` metric seen, sorted.
        rows: One dict per group: the ``params`` values, ``n``, ``<m>_mean``, ``<m>_std``.
        failures: ``(run folder, reason)`` per failed run.
        records: All runs read.
    """

    metric: str
    params: list[str]
    metric_names: list[str]
    rows: list[dict[str, Any]]
    failures: list[tuple[Path, str]]
    records: list[RunRecord]

    @property
    def columns(self) -> list[str]:
        """The CSV columns: params, ``n``, then ``<metric>_mean``, ``<metric>_std`` per metric."""
        cols = list(self.params) + ["n"]
        for name in self.metric_names:
            cols += [f"{name}_mean", f"{name}_std"]
        return cols


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (holds ``metrics.csv`` or ``summary.json``)."""
    path = Path(path)
    return (path / "metrics.csv").is_file() or (path / "summary.json").is_file()


def discover_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders under the given run or sweep folders.

    Args:
        paths: Run folders, sweep folders (``trials/*``) or any parent of run folders.

    Returns:
        Sorted, de-duplicated run folders.

    Raises:
        HDRIOError: A path does not exist or holds no run folder.
    """
    found: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise HDRIOError(f"{path} is not a folder; pass run folders or sweep folders (with trials/*)")
        if is_run_dir(path):
            found.add(path.resolve())
            continue
        runs = [p for p in sorted(path.glob("trials/*")) if is_run_dir(p)]
        if not runs:
            runs = sorted({m.parent for pattern in ("metrics.csv", "summary.json") for m in path.rglob(pattern)})
        if not runs:
            raise HDRIOError(f"{path} holds no run folder (metrics.csv or summary.json); "
                             "pass a run folder, a sweep folder or a runs root")
        found.update(p.resolve() for p in runs)
    return sorted(found)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (lists and scalars are leaves).

    Args:
        config: A nested mapping (a loaded ``config.yaml``).
        prefix: Prefix of the keys (for recursion).

    Returns:
        Dotted key -> leaf value.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.yaml``, flattened (empty without the file).

    Args:
        run_dir: The run folder.

    Returns:
        Dotted key -> value; interpolations are resolved when they can be.

    Raises:
        HDRIOError: ``config.yaml`` exists but is not a YAML mapping.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        conf = OmegaConf.load(path)
    except Exception as err:  # yaml errors, OmegaConf grammar errors
        raise HDRIOError(f"{path} is not a readable YAML config: {err}") from err
    try:
        data = OmegaConf.to_container(conf, resolve=True)
    except OmegaConfBaseException:
        data = OmegaConf.to_container(conf, resolve=False)
    if not isinstance(data, dict):
        raise HDRIOError(f"{path} must hold a mapping (a LightningCLI config)")
    return flatten_config(data)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def last_finite_metrics(metrics_csv: str | Path, *, prefix: str = "val/") -> dict[str, float]:
    """The last finite value of every ``prefix*`` column of a Lightning ``metrics.csv``.

    Args:
        metrics_csv: The CSV file (rows in logging order; empty cells where a column was not logged).
        prefix: Column prefix to keep.

    Returns:
        Column -> last finite value (columns without any finite value are left out).
    """
    out: dict[str, float] = {}
    path = Path(metrics_csv)
    if not path.is_file():
        return out
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith(prefix):
                    v = _finite(value)
                    if v is not None:
                        out[key] = v
    return out


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``summary.json`` (empty dict without it).

    Raises:
        HDRIOError: The file exists but is not JSON.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HDRIOError(f"{path} is not valid JSON ({err}); delete it or re-run the trial") from err
    return data if isinstance(data, dict) else {}


def latest_previews(run_dir: str | Path) -> dict[str, Path]:
    """Scene name -> the latest ``previews/step<N>_<scene>.png`` of a run."""
    best: dict[str, tuple[int, Path]] = {}
    for png in sorted((Path(run_dir) / "previews").glob("*.png")):
        m = _PREVIEW.match(png.name)
        if m:
            step, scene = int(m.group(1)), m.group(2)
            if scene not in best or step >= best[scene][0]:
                best[scene] = (step, png)
    return {scene: p for scene, (_, p) in best.items()}


def read_run(run_dir: str | Path) -> RunRecord:
    """Read one run folder (config, final metrics, status, previews).

    Args:
        run_dir: The run folder.

    Returns:
        Its :class:`RunRecord`; summary metrics take precedence over ``metrics.csv``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    metrics = last_finite_metrics(run_dir / "metrics.csv")
    summary = read_summary(run_dir)
    for key, value in (summary.get("metrics") or {}).items():
        v = _finite(value)
        if key.startswith("val/") and v is not None:
            metrics[key] = v
    status = str(summary.get("status", "unknown")) if summary else "unknown"
    seed = config.get("seed_everything", summary.get("seed"))
    return RunRecord(path=run_dir, config=config, metrics=metrics, status=status, seed=seed,
                     previews=latest_previews(run_dir))


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def varying_parameters(records: Sequence[RunRecord], *, ignore: Iterable[str] = IGNORED_KEYS) -> list[str]:
    """Config keys whose values differ across runs (a key missing in a run counts as ``None``).

    A class's init args that differ only because a ``class_path`` differs (a swapped merger's own
    defaults) are not parameters of their own: the ``class_path`` key stands for them.

    Args:
        records: The runs.
        ignore: Last dotted components to ignore (run identity, seeds).

    Returns:
        Sorted dotted keys.
    """
    ignore = set(ignore)
    keys = sorted({k for r in records for k in r.config})
    out = []
    for key in keys:
        if key.split(".")[-1] in ignore:
            continue
        if len({_hashable(r.config.get(key)) for r in records}) > 1:
            out.append(key)
    return [k for k in out if not _explained_by_class_swap(k, out, records)]


def _explained_by_class_swap(key: str, varying: Sequence[str], records: Sequence[RunRecord]) -> bool:
    """Whether ``key`` (``P.init_args.x``) varies only because ``P.class_path`` does: constant per class."""
    parts = key.split(".init_args.")
    for i in range(1, len(parts)):
        class_key = ".init_args.".join(parts[:i]) + ".class_path"
        if class_key in varying:
            per_class: dict[Any, set[Any]] = {}
            for r in records:
                per_class.setdefault(_hashable(r.config.get(class_key)), set()).add(_hashable(r.config.get(key)))
            if all(len(v) == 1 for v in per_class.values()):
                return True
    return False


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``) of the finite values.

    Returns:
        ``(mean, std)``; mean is NaN without finite values, std is NaN below two.
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def score_metric(record: RunRecord, metric: str) -> str | None:
    """The metric a run is scored on: ``metric`` when it logged it, else :data:`DISPLAY_METRIC` for
    a display-output run (CF-Net, Mertens fusion log no HDR metric), else ``None``.

    Args:
        record: The run.
        metric: The main metric.

    Returns:
        A key of ``record.metrics`` or ``None``.
    """
    if metric in record.metrics:
        return metric
    prefix = metric.split("/", 1)[0] + "/" if "/" in metric else "val/"
    display = prefix + DISPLAY_METRIC.split("/", 1)[1]
    if display in record.metrics and not any(
            k.startswith(prefix) and not k.startswith(prefix + "display") and k != prefix + "loss" for k in record.metrics):
        return display
    return None


def failure_reason(record: RunRecord, metric: str) -> str | None:
    """Why a run counts as failed (not finished, or no finite :func:`score_metric`), else ``None``."""
    if not record.finished:
        return f"status {record.status!r}"
    if score_metric(record, metric) is None:
        display = metric.split("/", 1)[0] + "/display_psnr" if "/" in metric else DISPLAY_METRIC
        return f"no finite {metric}" + ("" if metric == display else f" (nor {display} of a display output)")
    return None


def compare_runs(records: Sequence[RunRecord], *, metric: str = DEFAULT_METRIC,
                 ignore: Iterable[str] = IGNORED_KEYS) -> Comparison:
    """Group runs by their varying parameters; mean +- std of every ``val/*`` metric per group.

    Args:
        records: The runs (:func:`read_run`).
        metric: The main metric; runs without a finite value of it (display-output runs: of
            :data:`DISPLAY_METRIC`, see :func:`score_metric`) or not finished are failures and
            contribute to no group.
        ignore: Config key components that never make a parameter vary.

    Returns:
        A :class:`Comparison`; rows are sorted by the parameter values.
    """
    params = varying_parameters(records, ignore=ignore)
    failures = [(r.path, reason) for r in records if (reason := failure_reason(r, metric)) is not None]
    good = [r for r in records if failure_reason(r, metric) is None]
    names = sorted({k for r in good for k in r.metrics})
    groups: dict[tuple, list[RunRecord]] = {}
    for r in good:
        groups.setdefault(tuple(_hashable(r.config.get(p)) for p in params), []).append(r)
    rows = []
    for key in sorted(groups, key=lambda k: [(str(type(v)), v if isinstance(v, (int, float)) else str(v)) for v in k]):
        runs = groups[key]
        row: dict[str, Any] = {p: runs[0].config.get(p) for p in params}
        row["n"] = len(runs)
        for name in names:
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std([r.metrics.get(name) for r in runs])
        rows.append(row)
    return Comparison(metric=metric, params=params, metric_names=names, rows=rows, failures=failures,
                      records=list(records))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def write_table_csv(comparison: Comparison, path: str | Path) -> Path:
    """Write the grouped table as CSV (:attr:`Comparison.columns`; floats with full precision)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(comparison.columns)
        for row in comparison.rows:
            writer.writerow([repr(row[c]) if isinstance(row[c], float) else _cell(row[c]) for c in comparison.columns])
    return path


def short_name(value: Any) -> str:
    """The last dotted component of class paths (``hdrlab.models.mergers.MertensMerger`` -> ``MertensMerger``)."""
    text = _cell(value)
    return text.rsplit(".", 1)[-1] if re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Z]\w*", text) else text


def format_table(comparison: Comparison) -> str:
    """The grouped table as Markdown: params, ``n``, ``mean ± std`` per metric, then the failures."""
    header = [p.replace("init_args.", "") for p in comparison.params] + ["n"] + comparison.metric_names
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison.rows:
        cells = [short_name(row[p]) for p in comparison.params] + [str(row["n"])]
        for name in comparison.metric_names:
            mean, std = row[f"{name}_mean"], row[f"{name}_std"]
            cells.append("" if math.isnan(mean) else (f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    if comparison.failures:
        lines += ["", f"Failed runs ({len(comparison.failures)}):"]
        lines += [f"- {path}: {reason}" for path, reason in comparison.failures]
    return "\n".join(lines)


def plot_metric_vs_axes(comparison: Comparison, folder: str | Path, *, pdf: bool = True) -> list[Path]:
    """One PNG (and PDF) per numeric varying parameter: every finished run's main metric and the
    per-value mean ± std, linear-output runs (HDR metric) and display-output runs (display
    metric) in separate panels titled with the metric (:func:`hdrlab.report.figures.metric_vs_axes`).

    Returns:
        The written ``metric_vs_<param>.png`` files.
    """
    from hdrlab.report.figures import metric_vs_axes

    return [f.path for f in metric_vs_axes(comparison, folder, pdf=pdf)]


def merger_domain(class_path: str) -> str:
    """``output_domain`` (``linear``/``display``) of a merger class path, ``"unknown"`` if not importable."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return str(getattr(importlib.import_module(module), name).output_domain)
    except (ImportError, AttributeError, ValueError):
        return "unknown"


def plot_stage_heatmap(comparison: Comparison, path: str | Path, *, pdf: bool = True) -> Path | None:
    """Generator x merger figure of TwoStage runs, linear and display mergers in separate panels.

    Linear mergers are scored with the main metric (an HDR metric), display mergers with
    :data:`DISPLAY_METRIC`; a run's domain is read from the metrics it logged. A panel is a heatmap
    (colour bar naming the metric; cells mean, ± std when n > 1) when it has more than one
    generator and more than one merger, else a bar chart of its cells with error bars when n > 1
    (:func:`hdrlab.report.figures.stage_heatmap`).

    Returns:
        The PNG, or ``None`` when no run is a finished TwoStage run.
    """
    from hdrlab.report.figures import stage_heatmap

    fig = stage_heatmap(comparison, path, pdf=pdf)
    return None if fig is None else fig.path


def plot_main_metric_bars(comparison: Comparison, path: str | Path, *, pdf: bool = True) -> Path | None:
    """Bar chart of the main metric per group (method or grid cell), one panel per output domain
    (PU21-PSNR for linear outputs, display PSNR for display outputs unless ``comparison.metric``
    names another metric of that domain); error bars (sample std) where a group has n > 1.

    Returns:
        The PNG, or ``None`` without any group with a main metric.
    """
    from hdrlab.report.figures import main_metric_bars

    fig = main_metric_bars(comparison, path, pdf=pdf)
    return None if fig is None else fig.path


def plot_preview_grid(comparison: Comparison, path: str | Path) -> Path | None:
    """Validation previews: one row per scene, the input LDR and reference, then one titled column
    per group (its first run with previews); labelled tiles of equal size, cut from
    :class:`~hdrlab.callbacks.run_artifacts.ImagePanelLogger`'s latest panels
    (:func:`hdrlab.report.figures.preview_grid`).

    Returns:
        The PNG, or ``None`` when no finished run has previews.
    """
    from hdrlab.report.figures import preview_grid

    fig = preview_grid(comparison, path)
    return None if fig is None else fig.path


def plot_curves(comparison: Comparison, folder: str | Path, *, pdf: bool = True) -> list[Path]:
    """Training/validation curves against samples seen: ``curve_<quantity>.png`` per quantity
    (training loss, each domain's main validation metric, learning rate, throughput), one line
    per run, one colour per group (:mod:`hdrlab.report.curves`).

    Returns:
        The written PNGs.
    """
    return [f.path for f in _curve_figures(comparison, Path(folder), pdf=pdf)]


def _curve_figures(comparison: Comparison, folder: Path, *, pdf: bool) -> list[Any]:
    from hdrlab.report.curves import read_history
    from hdrlab.report.figures import domain_main_metric, run_domain
    from hdrlab.report.tables import group_label, grouped_runs

    runs = []
    for i, (row, group) in enumerate(zip(comparison.rows, grouped_runs(comparison))):
        label = group_label(row, comparison.params)
        seeds = f" ({len(group)} seeds)" if len(group) > 1 else ""
        for r in group:
            runs.append((label + seeds, i, False, read_history(r.path / "metrics.csv")))
    failed = {p for p, _ in comparison.failures}
    for r in comparison.records:
        if r.path in failed:
            runs.append((r.path.name, 0, True, read_history(r.path / "metrics.csv")))
    val_metrics: list[tuple[str, str]] = []
    for domain in ("linear", "display"):
        if any(run_domain(r, comparison.metric) == domain for r in comparison.records
               if failure_reason(r, comparison.metric) is None):
            metric = domain_main_metric(domain, comparison.metric)
            val_metrics.append((metric, f"Validation {metric} ({domain}-output runs)"))
    return curve_figures(runs, val_metrics, folder, pdf=pdf)


def curve_figures(runs: Sequence[tuple[str, int, bool, Any]], val_metrics: Sequence[tuple[str, str]],
                  folder: Path, *, pdf: bool) -> list[Any]:
    """Plot :func:`hdrlab.report.curves.curve_specs` of ``runs`` into ``folder/curve_<quantity>.png``."""
    from hdrlab.report.curves import curve_specs, plot_curve
    from hdrlab.report.figures import FigureInfo

    figures = []
    for spec in curve_specs(runs, val_metrics=val_metrics):
        path = plot_curve(spec, folder / f"curve_{spec.slug}.png", pdf=pdf)
        figures.append(FigureInfo(path, spec.title, path.with_suffix(".pdf") if pdf else None))
    return figures


def format_domain_tables(comparison: Comparison) -> str:
    """The results as Markdown: one table per output domain (linear: HDR metrics, display: display
    metrics; metric x region columns, ``mean ± std`` only where n > 1, best per column in bold),
    then the failed runs (:mod:`hdrlab.report.tables`)."""
    from hdrlab.report.tables import metric_label, results_tables, table_markdown

    parts = []
    for t in results_tables(comparison):
        main = f" Main metric: {metric_label(t.main_metric)} (`{t.main_metric}`)." if t.main_metric else ""
        parts.append(f"## {t.title}\n\n{table_markdown(t)}\n\n_{t.note()}{main}_")
    if not parts:
        parts.append("_No finished run with a finite validation metric._")
    if comparison.failures:
        parts.append(f"Failed runs ({len(comparison.failures)}):\n"
                     + "\n".join(f"- {path}: {reason}" for path, reason in comparison.failures))
    return "\n\n".join(parts)


def _common_folder(paths: Sequence[Path]) -> str:
    import os

    if not paths:
        return "."
    try:
        common = Path(os.path.commonpath([str(p) for p in paths]))
    except ValueError:
        return str(paths[0].parent)
    if common.name == "trials" or (common in paths and len(paths) > 1):
        common = common.parent
    return str(common)


#: File names :func:`write_report` writes besides ``index.html``, ``table.md`` and ``table.csv``
#: (removed first, so a re-used report folder holds no figure of an earlier report).
_REPORT_OUTPUTS: tuple[str, ...] = (
    "stage_heatmap.png", "stage_heatmap.pdf", "main_metric_bars.png", "main_metric_bars.pdf", "preview_grid.png",
    "curve_*.png", "curve_*.pdf", "metric_vs_*.png", "metric_vs_*.pdf", "table_linear.csv", "table_display.csv",
    "table_other.csv", "config_diff.csv", "per_scene.csv", "per_scene.md", "scene_diff_*.png", "scene_diff_*.pdf",
)


def write_report(comparison: Comparison, folder: str | Path, *, pdf: bool = True,
                 lead_sections: Sequence[Any] = (), scenes: Any = None,
                 curves: tuple[Sequence[Any], Sequence[tuple[str, str]]] | None = None,
                 extra_sections: Sequence[Any] = ()) -> dict[str, Any]:
    """Write the report into ``folder``: ``index.html`` (embedded stylesheet), ``table.md``,
    ``table.csv`` (the grouped table, :func:`write_table_csv`), ``table_<domain>.csv`` and
    ``config_diff.csv``, and the figures as PNG (and PDF when ``pdf``).

    The HTML holds one results table per output domain (main metric first, best per column in
    bold), the main metric per group (a generator x merger heatmap only when the TwoStage grid has
    more than one generator and more than one merger in a domain, else a bar chart), training and
    validation curves against samples seen, the config keys that differ between runs, the preview
    grid and the failed runs. ``scenes`` (a :class:`hdrlab.report.scenes.SceneComparison`, ``None``
    for none) adds the section "Per-scene wins against references" after the results tables, with
    ``per_scene.csv``, ``per_scene.md`` and ``scene_diff_<metric>.png``. ``lead_sections``
    (:class:`hdrlab.report.page.Section`) come first
    (e.g. the demo's single-image results), ``extra_sections`` after the per-scene wins; images
    they reference must lie in ``folder``. ``curves`` (``(runs, val_metrics)`` of
    :func:`curve_figures`) replaces the curves of the compared runs (test runs have none: the
    curves of the runs that trained them).

    Returns:
        ``{"csv", "md", "html": Path, "plots": list[Path] (PNGs), "pdfs": list[Path],
        "tables": {name: Path}, "figures": list[FigureInfo]}``.
    """
    import datetime
    import time

    from hdrlab.report import figures as F
    from hdrlab.report import page as P
    from hdrlab.report import tables as T

    start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in _REPORT_OUTPUTS:  # figures/tables of an earlier report in this folder: not stale next to the new
        for old in folder.glob(pattern):
            if old.is_file():
                old.unlink()
    csv_path = write_table_csv(comparison, folder / "table.csv")
    tables = T.results_tables(comparison)
    diff = T.config_differences(comparison.records)
    table_csvs = T.write_table_csvs(tables, diff, folder)

    main_figs: list[Any] = []
    panels = F.stage_panels(comparison)
    if any(p.is_grid for p in panels):
        main_figs.append(F.stage_heatmap(comparison, folder / "stage_heatmap.png", pdf=pdf))
    else:
        main_figs.append(F.main_metric_bars(comparison, folder / "main_metric_bars.png", tables=tables, pdf=pdf))
    main_figs += F.metric_vs_axes(comparison, folder, pdf=pdf)
    main_figs = [f for f in main_figs if f is not None]
    curve_figs = (_curve_figures(comparison, folder, pdf=pdf) if curves is None
                  else curve_figures(curves[0], curves[1], folder, pdf=pdf))
    preview = F.preview_grid(comparison, folder / "preview_grid.png")
    scene_section, scene_files, scene_figs = None, [], []
    if scenes is not None:
        from hdrlab.report.scenes import write_scene_outputs

        scene_section, scene_files, scene_figs = write_scene_outputs(scenes, folder, pdf=pdf)
    figures = main_figs + scene_figs + curve_figs + ([preview] if preview is not None else [])

    good = len(comparison.records) - len(comparison.failures)
    ns = [row["n"] for row in comparison.rows]
    n_text = "–" if not ns else (str(ns[0]) if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}")
    source = _common_folder([r.path for r in comparison.records])
    by = ", ".join(comparison.params) or "nothing (a single group)"

    # ---- table.md
    md = [f"# hdrlab compare: {source}", "",
          (f"{len(comparison.records)} runs ({good} finished, {len(comparison.failures)} failed), "
           f"{len(comparison.rows)} groups by {by}; runs per group (seeds): n = {n_text}."), "",
          format_domain_tables(comparison), "", "## Config differences", "", T.config_diff_markdown(diff), "",
          "## Figures", ""]
    for f in figures:
        md.append(f"- [{f.title}]({f.path.name})" + (f" ([PDF]({f.pdf.name}))" if f.pdf else ""))
    md_path = folder / "table.md"
    md_path.write_text("\n".join(md) + "\n")

    # ---- index.html
    sections = list(lead_sections)
    for t in tables:
        main = (f"<p>Main metric (reported first, highlighted): <b>{html.escape(T.metric_label(t.main_metric))}</b> "
                f"(<code>{html.escape(t.main_metric)}</code>, {html.escape(T.direction_text(t.main_metric))}). "
                f"Rows: groups of runs by <code>{html.escape(by)}</code>.</p>" if t.main_metric else "")
        sections.append(P.Section(f"results-{t.domain}", t.title,
                                  main + T.table_html(t) + f"<p class='note'>{html.escape(t.note())}</p>"))
    if not tables:
        sections.append(P.Section("results", "Results", "<p>No finished run with a finite validation metric.</p>"))
    if scene_section is not None:
        sections.append(scene_section)
    sections += list(extra_sections)
    if main_figs:
        sections.append(P.Section("main-metric", "Main metric per group",
                                  "\n".join(P.figure_html(f, folder) for f in main_figs)))
    if curve_figs:
        x = "samples seen (<code>train/samples_seen</code>)"
        sections.append(P.Section(
            "curves", "Training and validation curves",
            f"<p>Against {x}; one line per run, one colour per group; failed runs dashed grey.</p>"
            "<div class='figs'>" + "\n".join(P.figure_html(f, folder) for f in curve_figs) + "</div>"))
    sections.append(P.Section(
        "config", "Config differences",
        "<p>Keys of the runs' <code>config.yaml</code> (test stages of a recipe: their recipe, checkpoint and "
        "arguments) whose values differ (run folders and paths left out, seeds kept; runs of one label that differ "
        "only in their seeds share a column). Hover a cell for the full value.</p>" + T.config_diff_html(diff)))
    if preview is not None:
        sections.append(P.Section("previews", "Validation previews", P.figure_html(preview, folder)))
    if comparison.failures:
        items = "".join(f"<li><code>{html.escape(str(p))}</code>: {html.escape(r)}</li>" for p, r in comparison.failures)
        sections.append(P.Section("failures", f"Failed runs ({len(comparison.failures)})", f"<ul class='failures'>{items}</ul>"))
    files = [csv_path, md_path] + list(table_csvs.values())
    files += [p for p in scene_files if p.suffix in (".csv", ".md")]
    files += [p for f in figures for p in (f.path, f.pdf) if p]
    descr = {"table.csv": "grouped table, every val/* metric (mean, std per group)", "table.md": "tables as Markdown",
             "config_diff.csv": "config differences", "per_scene.csv": "per-scene test values, runs and references",
             "per_scene.md": "per-scene wins and values as Markdown"}
    items = "".join(f"<li><a href='{html.escape(p.name)}'>{html.escape(p.name)}</a>"
                    + (f" — {html.escape(descr[p.name])}" if p.name in descr else "") + "</li>" for p in files)
    sections.append(P.Section("files", "Files", f"<ul class='files'>{items}</ul>"))
    summary = [(str(len(comparison.records)), "runs"), (str(good), "finished"),
               (str(len(comparison.failures)), "failed"), (str(len(comparison.rows)), "groups"),
               (n_text, "runs per group (n)")]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    html_path = folder / "index.html"
    html_path.write_text(P.render_page(
        title="hdrlab compare", meta=f"{source} — grouped by {by} — written {stamp} in "
                                     f"{time.perf_counter() - start:.1f} s",
        summary=summary, sections=sections))
    return {"csv": csv_path, "md": md_path, "html": html_path, "plots": [f.path for f in figures],
            "pdfs": [f.pdf for f in figures if f.pdf is not None], "tables": table_csvs, "figures": figures}
