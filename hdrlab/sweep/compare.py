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
failures. :func:`write_report` writes ``table.csv`` (the contract the notebooks reproduce),
``table.md``, PNG plots and ``index.html``.
"""

from __future__ import annotations

import csv
import html
import importlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hdrlab.errors import HDRIOError

#: Config keys (last dotted component) that identify a run rather than configure it.
IGNORED_KEYS: frozenset[str] = frozenset(
    {"run_dir", "run_id", "seed_everything", "seed", "config", "runs_root", "experiment", "ckpt_path",
     "default_root_dir", "wandb"}
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
    """

    path: Path
    config: dict[str, Any]
    metrics: dict[str, float]
    status: str
    seed: Any = None
    previews: dict[str, Path] = field(default_factory=dict)

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
    if DISPLAY_METRIC in record.metrics and not any(
            k.startswith("val/") and not k.startswith("val/display") and k != "val/loss" for k in record.metrics):
        return DISPLAY_METRIC
    return None


def failure_reason(record: RunRecord, metric: str) -> str | None:
    """Why a run counts as failed (not finished, or no finite :func:`score_metric`), else ``None``."""
    if not record.finished:
        return f"status {record.status!r}"
    if score_metric(record, metric) is None:
        return f"no finite {metric}" + ("" if metric == DISPLAY_METRIC else f" (nor {DISPLAY_METRIC} of a display output)")
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


def _numeric_axis(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 1


def plot_metric_vs_axes(comparison: Comparison, folder: str | Path) -> list[Path]:
    """One PNG per numeric varying parameter: every finished run's score (:func:`score_metric`) and
    the per-value mean.

    Returns:
        The written ``metric_vs_<param>.png`` files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    good = [r for r in comparison.records if failure_reason(r, comparison.metric) is None]
    out = []
    for param in comparison.params:
        values = [r.config.get(param) for r in good]
        if not good or not _numeric_axis(values):
            continue
        xs = sorted(set(values))
        ys = [r.metrics[score_metric(r, comparison.metric)] for r in good]
        means = [mean_std([y for y, v in zip(ys, values) if v == x])[0] for x in xs]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter(values, ys, s=12, alpha=0.5, label="runs")
        ax.plot(xs, means, "o-", label="mean")
        if min(xs) > 0 and max(xs) / min(xs) >= 50:
            ax.set_xscale("log")
        ax.set_xlabel(param.replace("init_args.", ""))
        ax.set_ylabel(comparison.metric)
        ax.legend()
        fig.tight_layout()
        path = folder / f"metric_vs_{re.sub(r'[^A-Za-z0-9_.-]+', '_', param)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    return out


def merger_domain(class_path: str) -> str:
    """``output_domain`` (``linear``/``display``) of a merger class path, ``"unknown"`` if not importable."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return str(getattr(importlib.import_module(module), name).output_domain)
    except (ImportError, AttributeError, ValueError):
        return "unknown"


def plot_stage_heatmap(comparison: Comparison, path: str | Path) -> Path | None:
    """Generator x merger heatmap of TwoStage runs, linear and display mergers in separate panels.

    Linear mergers are scored with the main metric, display mergers with :data:`DISPLAY_METRIC`
    when the main metric is an HDR metric they do not log. Cells: mean over finished runs.

    Returns:
        The PNG, or ``None`` when no run is a TwoStage run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in comparison.records if str(r.config.get("model.class_path", "")).endswith("TwoStage")
            and r.finished]
    if not runs:
        return None
    gen_key, mer_key = "model.init_args.generator.class_path", "model.init_args.merger.class_path"
    panels = []
    for domain in ("linear", "display"):
        sel = [r for r in runs if merger_domain(str(r.config.get(mer_key))) == domain]
        if not sel:
            continue
        metric = (comparison.metric if domain == "linear" or any(comparison.metric in r.metrics for r in sel)
                  else DISPLAY_METRIC)
        gens = sorted({short_name(r.config.get(gen_key)) for r in sel})
        mers = sorted({short_name(r.config.get(mer_key)) for r in sel})
        grid = [[mean_std([r.metrics.get(metric) for r in sel if short_name(r.config.get(gen_key)) == g
                           and short_name(r.config.get(mer_key)) == m])[0] for m in mers] for g in gens]
        panels.append((domain, metric, gens, mers, grid))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (domain, metric, gens, mers, grid) in zip(axes[0], panels):
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(mers)), mers, rotation=20)
        ax.set_yticks(range(len(gens)), gens)
        ax.set_title(f"{domain} mergers: {metric}")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", color="w")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_preview_grid(comparison: Comparison, path: str | Path) -> Path | None:
    """The same validation scene's latest preview panel of every run, one row per run.

    The scene is the first (sorted) scene present in every run with previews; the panels are
    :class:`~hdrlab.callbacks.run_artifacts.ImagePanelLogger`'s (input, prediction, ground truth,
    error, exposure brackets).

    Returns:
        The PNG, or ``None`` without a scene shared by the runs' previews.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in comparison.records if r.previews]
    if not runs:
        return None
    common = sorted(set.intersection(*(set(r.previews) for r in runs)))
    if not common:
        return None
    scene = common[0]
    from hdrlab import io

    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.2 * len(runs)), squeeze=False)
    for ax, r in zip(axes[:, 0], runs):
        img = io.read_ldr(r.previews[scene]).image  # [3, H, W] in [0, 1], display-referred
        ax.imshow(img.permute(1, 2, 0).numpy())
        label = ", ".join(f"{p.removesuffix('.class_path').split('.')[-1]}={short_name(r.config.get(p))}"
                          for p in comparison.params)
        ax.set_title(f"{r.path.name}: {label}" if label else r.path.name, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"validation scene {scene}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(comparison: Comparison, folder: str | Path) -> dict[str, Any]:
    """Write ``table.csv``, ``table.md``, the PNG plots and ``index.html`` into ``folder``.

    Returns:
        ``{"csv", "md", "html": Path, "plots": list[Path]}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = write_table_csv(comparison, folder / "table.csv")
    table = format_table(comparison)
    md_path = folder / "table.md"
    md_path.write_text(f"# Comparison ({comparison.metric})\n\n{table}\n")
    plots = plot_metric_vs_axes(comparison, folder)
    for extra in (plot_stage_heatmap(comparison, folder / "stage_heatmap.png"),
                  plot_preview_grid(comparison, folder / "preview_grid.png")):
        if extra is not None:
            plots.append(extra)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line.strip("|").split("|")) + "</tr>\n"
        for line in table.split("\n\n")[0].splitlines() if not line.startswith("|---")
    )
    failures = "".join(f"<li>{html.escape(str(p))}: {html.escape(r)}</li>" for p, r in comparison.failures)
    images = "".join(f'<h3>{html.escape(p.stem)}</h3><img src="{html.escape(p.name)}">\n' for p in plots)
    html_path = folder / "index.html"
    html_path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>hdrlab compare</title></head><body>\n"
        f"<h1>hdrlab compare: {html.escape(comparison.metric)}</h1>\n"
        f"<p>{len(comparison.records)} runs, grouped by {html.escape(', '.join(comparison.params) or 'nothing')}; "
        "mean ± std over seeds. Data: <a href='table.csv'>table.csv</a>, <a href='table.md'>table.md</a>.</p>\n"
        f"<table border='1'>\n{rows}</table>\n"
        + (f"<h2>Failed runs</h2><ul>{failures}</ul>\n" if failures else "")
        + f"<h2>Plots</h2>\n{images}</body></html>\n"
    )
    return {"csv": csv_path, "md": md_path, "html": html_path, "plots": plots}
