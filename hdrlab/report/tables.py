"""Results tables of ``hdrlab compare``: one per output domain, plus the config differences.

Metric keys follow :mod:`hdrlab.metrics.collection` (``val/<metric>`` for region ``all``,
``val/<metric>_<region>`` otherwise); display-output methods log ``val/display_<metric>``
(:mod:`hdrlab.metrics.display`). A key is split into its *base* metric and *region*
(:func:`split_metric`), its *domain* (``linear``: HDR metrics on radiance, ``display``: metrics
on display images, ``other``: losses and diagnostics such as ``val/loss``) and its direction
(:data:`METRIC_DIRECTIONS`).

A :class:`ResultsTable` holds the groups of a :class:`~hdrlab.sweep.compare.Comparison` that logged
a metric of its domain; its columns are metric x region, main metric first
(:data:`DOMAIN_MAIN_METRICS`), and only columns with at least one finite value. Cells are
``mean ± std`` over the group's seeds when more than one run has a finite value, else the value
(``n = 1`` is stated by the table's ``n`` column and note). The best cell of each column (by the
metric's direction) is marked.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrlab.sweep.compare import (
    DEFAULT_METRIC,
    DISPLAY_METRIC,
    IGNORED_KEYS,
    Comparison,
    RunRecord,
    _hashable,
    failure_reason,
    mean_std,
    short_name,
)

#: Regions in column order (:data:`hdrlab.metrics.base.REGIONS`).
REGIONS: tuple[str, ...] = ("all", "clipped", "unclipped")

#: Base metric -> ``"max"`` (higher is better), ``"min"`` (lower is better) or ``"zero"`` (0 is best:
#: signed biases). Metrics not listed are never marked best.
METRIC_DIRECTIONS: dict[str, str] = {
    "pu21_psnr": "max", "pu21_ssim": "max", "psnr_mu": "max", "psnr_l": "max", "ms_ssim": "max",
    "cvvdp": "max", "display_psnr": "max", "display_ssim": "max",
    "lpips": "min", "loss": "min", "crf_rmse": "min",
    "log2_ratio": "zero",
    "k17_psnr_mu": "max", "k17_psnr_l": "max", "k17_ssim_mu": "max", "k17_ssim_l": "max",
}

#: Human-readable names of the base metrics (tables and figure axes).
METRIC_LABELS: dict[str, str] = {
    "pu21_psnr": "PU21-PSNR", "pu21_ssim": "PU21-SSIM", "psnr_mu": "PSNR-μ", "psnr_l": "PSNR-L",
    "ms_ssim": "MS-SSIM", "cvvdp": "ColorVideoVDP", "lpips": "LPIPS", "log2_ratio": "log2 ratio",
    "display_psnr": "display PSNR", "display_ssim": "display SSIM", "loss": "loss", "crf_rmse": "CRF RMSE",
    "k17_psnr_mu": "PSNR-μ (K17)", "k17_psnr_l": "PSNR-L (K17)", "k17_ssim_mu": "SSIM-μ (K17)",
    "k17_ssim_l": "SSIM-L (K17)",
}

#: Units of the base metrics (axis labels).
METRIC_UNITS: dict[str, str] = {
    "pu21_psnr": "dB", "psnr_mu": "dB", "psnr_l": "dB", "display_psnr": "dB", "cvvdp": "JOD", "log2_ratio": "stops",
    "k17_psnr_mu": "dB", "k17_psnr_l": "dB",
}

#: Column order of the base metrics after the main metric; others follow alphabetically.
METRIC_ORDER: tuple[str, ...] = (
    "pu21_psnr", "pu21_ssim", "psnr_mu", "psnr_l", "ms_ssim", "cvvdp", "lpips", "log2_ratio",
    "display_psnr", "display_ssim", "loss", "crf_rmse",
    "k17_psnr_mu", "k17_psnr_l", "k17_ssim_mu", "k17_ssim_l",
)

#: The metric a paper reports first, per output domain.
DOMAIN_MAIN_METRICS: dict[str, str] = {"linear": DEFAULT_METRIC, "display": DISPLAY_METRIC}

#: Table titles per domain.
DOMAIN_TITLES: dict[str, str] = {
    "linear": "Linear (HDR radiance) outputs: HDR metrics",
    "display": "Display outputs: display metrics",
    "other": "Other validation quantities (losses, diagnostics)",
}

#: Config keys (last dotted component) that identify a run: left out of the config differences
#: (seeds are kept there, they are what differs between repeats).
IDENTITY_KEYS: frozenset[str] = IGNORED_KEYS - {"seed_everything", "seed"}

_OTHER_BASES = frozenset({"loss", "crf_rmse"})


def split_metric(name: str) -> tuple[str, str]:
    """``val/pu21_psnr_clipped`` -> ``("pu21_psnr", "clipped")``; region ``"all"`` without a suffix."""
    base = name.split("/", 1)[1] if "/" in name else name
    for region in REGIONS[1:]:
        if base.endswith(f"_{region}"):
            return base[: -len(region) - 1], region
    return base, "all"


def metric_domain(name: str) -> str:
    """``"display"`` for ``val/display_*``, ``"other"`` for losses/diagnostics, else ``"linear"``."""
    base, _ = split_metric(name)
    if base.startswith("display_"):
        return "display"
    if base in _OTHER_BASES or base.startswith("loss"):
        return "other"
    return "linear"


def metric_direction(name: str) -> str | None:
    """``"max"``, ``"min"``, ``"zero"`` or ``None`` (unknown) for a metric key or base name."""
    return METRIC_DIRECTIONS.get(split_metric(name)[0])


def metric_label(name: str, *, region: bool = True, unit: bool = False) -> str:
    """Readable name of a metric key: ``val/pu21_psnr_clipped`` -> ``PU21-PSNR (clipped)``."""
    base, reg = split_metric(name)
    text = METRIC_LABELS.get(base, base)
    if unit and base in METRIC_UNITS:
        text += f" [{METRIC_UNITS[base]}]"
    if region and reg != "all":
        text += f" ({reg})"
    return text


def direction_arrow(name: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better), ``→0`` (0 is best) or ``""``."""
    return {"max": "↑", "min": "↓", "zero": "→0"}.get(metric_direction(name) or "", "")


def direction_text(name: str) -> str:
    """``higher is better`` / ``lower is better`` / ``0 is best`` / ``""``."""
    return {"max": "higher is better", "min": "lower is better", "zero": "0 is best"}.get(
        metric_direction(name) or "", "")


def param_label(param: str) -> str:
    """Short header of a config key: ``model.init_args.merger.class_path`` -> ``model.merger``."""
    return param.replace("init_args.", "").removesuffix(".class_path")


def value_text(value: Any, *, limit: int = 60) -> str:
    """A config value as table text: class paths shortened, lists as JSON, long text cut."""
    if value is None:
        return "null"
    text = json.dumps(value) if isinstance(value, (list, dict)) else short_name(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def group_label(row: dict[str, Any], params: Sequence[str]) -> str:
    """A group's legend label: its parameter values (``DebevecMerger``, ``scenes=15, domain=log``)."""
    if not params:
        return "all runs"
    if len(params) == 1:
        return value_text(row.get(params[0]), limit=40)
    return ", ".join(f"{param_label(p).split('.')[-1]}={value_text(row.get(p), limit=30)}" for p in params)


def grouped_runs(comparison: Comparison) -> list[list[RunRecord]]:
    """The finished runs of each row of ``comparison.rows`` (same grouping as :func:`compare_runs`),
    sorted by seed, then folder."""
    key_of = {}
    for i, row in enumerate(comparison.rows):
        key_of[tuple(_hashable(row.get(p)) for p in comparison.params)] = i
    groups: list[list[RunRecord]] = [[] for _ in comparison.rows]
    for r in comparison.records:
        if failure_reason(r, comparison.metric) is not None:
            continue
        i = key_of.get(tuple(_hashable(r.config.get(p)) for p in comparison.params))
        if i is not None:
            groups[i].append(r)
    for runs in groups:
        runs.sort(key=lambda r: (str(r.seed), str(r.path)))
    return groups


def _order_key(name: str, main: str | None) -> tuple:
    base, region = split_metric(name)
    main_base = split_metric(main)[0] if main else None
    rank = METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER)
    reg = REGIONS.index(region) if region in REGIONS else len(REGIONS)
    return (base != main_base, rank, base, reg, region)


@dataclass
class Cell:
    """One table cell: mean and sample std over the group's finite values, and their count; for
    metrics averaged over test scenes also the 95 % t-interval over the scenes (``low``, ``high``)."""

    mean: float
    std: float
    count: int
    low: float = math.nan
    high: float = math.nan

    @property
    def finite(self) -> bool:
        return math.isfinite(self.mean)

    def text(self, digits: int = 3) -> str:
        """``mean ± std`` when ``count > 1``, the value when ``count == 1``, ``—`` without a value;
        followed by ``[low, high]`` when the cell has a scene interval."""
        if not self.finite:
            return "—"
        text = f"{self.mean:.{digits}f}"
        if self.count > 1 and math.isfinite(self.std):
            text += f" ± {self.std:.{digits}f}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            text += f" [{self.low:.{max(digits - 1, 1)}f}, {self.high:.{max(digits - 1, 1)}f}]"
        return text


def scene_interval(runs: Sequence[RunRecord], metric: str) -> tuple[float, float]:
    """95 % t-interval over the scenes of the per-scene values averaged over ``runs`` (seeds), from
    :attr:`RunRecord.scenes`; NaN unless every run has per-scene values and two scenes have one."""
    from hdrlab.report.scenes import mean_ci

    if not runs or not all(metric in r.scenes for r in runs):
        return math.nan, math.nan
    common = set.intersection(*(set(r.scenes[metric]) for r in runs))
    values = [sum(r.scenes[metric][s] for r in runs) / len(runs) for s in sorted(common)]
    _, low, high = mean_ci(values)
    return low, high


@dataclass
class ResultsTable:
    """One output domain's results: rows = groups (methods or grid cells), columns = metric x region.

    Attributes:
        domain: ``"linear"``, ``"display"`` or ``"other"``.
        title: Section title.
        main_metric: The column reported first (``None`` without one of the domain's main metrics).
        params: Row-label config keys (the comparison's varying parameters).
        columns: Metric keys, main metric first.
        labels: Per row, the parameter values as text (``[group_label]`` without parameters).
        n: Per row, the number of finished runs in the group.
        seeds: Per row, the seeds of the group's runs.
        cells: Per row, metric -> :class:`Cell`.
        best: Metric -> indices of the best rows (ties included; only with two finite values or more).
    """

    domain: str
    title: str
    main_metric: str | None
    params: list[str]
    columns: list[str]
    labels: list[list[str]]
    n: list[int]
    seeds: list[list[Any]]
    cells: list[dict[str, Cell]]
    best: dict[str, set[int]] = field(default_factory=dict)

    @property
    def label_headers(self) -> list[str]:
        """Headers of the row-label columns."""
        return [param_label(p) for p in self.params] if self.params else ["runs"]

    @property
    def regions(self) -> dict[str, list[str]]:
        """Base metric -> its columns (in order), for a two-level header."""
        out: dict[str, list[str]] = {}
        for c in self.columns:
            out.setdefault(split_metric(c)[0], []).append(c)
        return out

    @property
    def max_n(self) -> int:
        return max(self.n, default=0)

    def note(self) -> str:
        """What a cell is (n > 1: mean ± sample std over seeds; n = 1: single runs) and the marks."""
        if self.max_n > 1:
            what = ("cells are mean ± sample std (ddof = 1) over the group's seeds (n per row); "
                    "a cell with a single finite value shows that value")
        else:
            what = "n = 1 for every row: each cell is a single run's value (no std)"
        if any(math.isfinite(c.low) for row in self.cells for c in row.values()):
            what += ("; each value is a mean over the test scenes, [a, b] its 95% Student-t interval over the "
                     "scenes (per-scene values averaged over the seeds)")
        return f"{what}; ↑ higher is better, ↓ lower is better, →0 zero is best; bold: best in column."


def results_tables(comparison: Comparison) -> list[ResultsTable]:
    """The comparison's groups split into one table per output domain (linear, display, other).

    Args:
        comparison: From :func:`hdrlab.sweep.compare.compare_runs`.

    Returns:
        Tables in the order linear, display, other; a domain without any finite value is left out.
    """
    groups = grouped_runs(comparison)
    tables = []
    for domain in ("linear", "display", "other"):
        names = [m for m in comparison.metric_names if metric_domain(m) == domain]
        rows = [i for i, runs in enumerate(groups)
                if runs and any(_finite(r.metrics.get(m)) for r in runs for m in names)]
        if not rows:
            continue
        cells: list[dict[str, Cell]] = []
        for i in rows:
            row_cells = {}
            for m in names:
                finite = [r for r in groups[i] if _finite(r.metrics.get(m))]
                mean, std = mean_std([r.metrics[m] for r in finite])
                row_cells[m] = Cell(mean, std, len(finite), *scene_interval(finite, m))
            cells.append(row_cells)
        columns = [m for m in names if any(c[m].finite for c in cells)]
        prefix = comparison.metric.split("/", 1)[0] + "/" if "/" in comparison.metric else "val/"
        default = DOMAIN_MAIN_METRICS.get(domain)
        main = comparison.metric if comparison.metric in columns else (
            prefix + default.split("/", 1)[1] if default else None)
        columns.sort(key=lambda m: _order_key(m, main))
        main = main if main in columns else None
        params = list(comparison.params)
        labels = [[value_text(comparison.rows[i].get(p)) for p in params] or [group_label(comparison.rows[i], params)]
                  for i in rows]
        table = ResultsTable(domain=domain, title=DOMAIN_TITLES[domain], main_metric=main, params=params,
                             columns=columns, labels=labels, n=[len(groups[i]) for i in rows],
                             seeds=[[r.seed for r in groups[i]] for i in rows], cells=cells)
        table.best = {m: best_rows([c[m].mean for c in cells], metric_direction(m)) for m in columns}
        tables.append(table)
    return tables


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_rows(values: Sequence[float], direction: str | None) -> set[int]:
    """Indices of the best finite values (ties included); empty below two finite values or
    without a direction."""
    finite = [(i, v) for i, v in enumerate(values) if _finite(v)]
    if direction is None or len(finite) < 2:
        return set()
    score = {"max": lambda v: -v, "min": lambda v: v, "zero": abs}[direction]
    best = min(score(v) for _, v in finite)
    return {i for i, v in finite if math.isclose(score(v), best, rel_tol=1e-12, abs_tol=1e-12)}


# --------------------------------------------------------------------------- config differences


@dataclass
class ConfigDiff:
    """Config keys whose values differ across runs.

    Attributes:
        runs: The run folder names (columns).
        status: Per run, its status.
        keys: Dotted config keys (rows), sorted.
        values: Per key, per run, the value (``None`` when absent or null).
        present: Per key, per run, whether the run's config has the key.
    """

    runs: list[str]
    status: list[str]
    keys: list[str]
    values: list[list[Any]]
    present: list[list[bool]]


def config_differences(records: Sequence[RunRecord], *, ignore: frozenset[str] = IDENTITY_KEYS) -> ConfigDiff:
    """The keys of the runs' ``config.yaml`` (or their ``described`` settings) whose values differ
    (seeds included, run identity such as ``run_dir`` left out; a key missing in a run counts as
    different).

    Columns are runs, named by ``RunRecord.name`` (default: the folder name). Runs of one name that
    differ in nothing but their seeds share a column, whose seed cells list the seeds (``"0, 1"``).

    Args:
        records: The runs (all of them, failed ones too).
        ignore: Last dotted components to leave out.

    Returns:
        A :class:`ConfigDiff` (no keys with fewer than two runs).
    """
    records = list(records)
    configs = [r.config if r.described is None else r.described for r in records]
    names = [r.name or r.path.name for r in records]
    keys = []
    if len(records) > 1:
        for key in sorted({k for c in configs for k in c}):
            if key.split(".")[-1] in ignore:
                continue
            seen = {(key in c, _hashable(c.get(key))) for c in configs}
            if len(seen) > 1:
                keys.append(key)
    seed_keys = [k for k in keys if k.split(".")[-1] in ("seed_everything", "seed")]
    columns: dict[tuple, list[int]] = {}
    for i, (name, c) in enumerate(zip(names, configs)):
        same = tuple((k in c, _hashable(c.get(k))) for k in keys if k not in seed_keys)
        columns.setdefault((name, same), []).append(i)
    values, present = [], []
    for k in keys:
        row_values, row_present = [], []
        for members in columns.values():
            found = [configs[i].get(k) for i in members if k in configs[i]]
            if k in seed_keys and len(members) > 1:
                row_values.append(", ".join(value_text(v) for v in found) if found else None)
            else:
                row_values.append(found[0] if found else None)
            row_present.append(bool(found))
        values.append(row_values)
        present.append(row_present)
    status = [", ".join(dict.fromkeys(records[i].status for i in members)) for members in columns.values()]
    return ConfigDiff(runs=[name for name, _ in columns], status=status, keys=keys, values=values, present=present)


# --------------------------------------------------------------------------- renderings


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: ResultsTable) -> str:
    """A results table as Markdown (best cells in bold, header ``metric ↑ (region)``)."""
    header = table.label_headers + ["n"] + [f"{metric_label(c)} {direction_arrow(c)}".strip() for c in table.columns]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(table.label_headers) + "--:|" * (1 + len(table.columns))]
    for i, (labels, n, cells) in enumerate(zip(table.labels, table.n, table.cells)):
        row = [_md(x) for x in labels] + [str(n)]
        for c in table.columns:
            text = cells[c].text()
            row.append(f"**{text}**" if i in table.best.get(c, ()) else text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def config_diff_markdown(diff: ConfigDiff) -> str:
    """The config differences as Markdown (rows = keys, columns = runs)."""
    if not diff.keys:
        return "_No config key differs between the runs._" if len(diff.runs) > 1 else "_A single run._"
    lines = ["| key | " + " | ".join(_md(r) for r in diff.runs) + " |", "|---|" + "---|" * len(diff.runs)]
    for key, values, present in zip(diff.keys, diff.values, diff.present):
        cells = [value_text(v) if p else "(absent)" for v, p in zip(values, present)]
        lines.append(f"| {_md(param_label(key))} | " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines)


def write_table_csvs(tables: Sequence[ResultsTable], diff: ConfigDiff, folder: str | Path) -> dict[str, Path]:
    """``table_<domain>.csv`` per results table (params, ``n``, then ``<metric>_mean``, ``_std``,
    ``_n`` per column; full precision) and ``config_diff.csv`` (key, then one column per run).

    Returns:
        Name (``linear``, ``display``, ``other``, ``config_diff``) -> written path.
    """
    folder = Path(folder)
    out = {}
    for t in tables:
        path = folder / f"table_{t.domain}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            header = (list(t.params) or ["runs"]) + ["n"]
            scene_ci = any(math.isfinite(c.low) for row in t.cells for c in row.values())
            for c in t.columns:
                header += [f"{c}_mean", f"{c}_std", f"{c}_n"] + ([f"{c}_ci_low", f"{c}_ci_high"] if scene_ci else [])
            w.writerow(header)
            for labels, n, cells in zip(t.labels, t.n, t.cells):
                row: list[Any] = list(labels) + [n]
                for c in t.columns:
                    row += [repr(cells[c].mean), repr(cells[c].std), cells[c].count]
                    if scene_ci:
                        row += [repr(cells[c].low), repr(cells[c].high)]
                w.writerow(row)
        out[t.domain] = path
    path = folder / "config_diff.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key"] + diff.runs)
        for key, values, present in zip(diff.keys, diff.values, diff.present):
            w.writerow([key] + [(json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
                                if p else "(absent)" for v, p in zip(values, present)])
    out["config_diff"] = path
    return out


def table_html(table: ResultsTable) -> str:
    """A results table as HTML: two header rows (metric, region) when any metric has several
    regions; the main metric's columns carry ``class="main"``, the best cells ``<strong>``."""
    esc = html.escape
    groups = table.regions
    two_level = any(len(cols) > 1 or split_metric(cols[0])[1] != "all" for cols in groups.values())
    main_base = split_metric(table.main_metric)[0] if table.main_metric else None
    rowspan = " rowspan='2'" if two_level else ""
    head = "".join(f"<th scope='col'{rowspan}>{esc(h)}</th>" for h in table.label_headers)
    head += f"<th scope='col' class='num'{rowspan} title='finished runs in the group'>n</th>"
    sub = ""
    for base, cols in groups.items():
        cls = " main" if base == main_base else ""
        arrow = direction_arrow(cols[0])
        title = direction_text(cols[0])
        name = f"{METRIC_LABELS.get(base, base)} {arrow}".strip()
        if two_level:
            head += (f"<th scope='colgroup' colspan='{len(cols)}' class='num metric{cls}' title='{esc(title)}'>"
                     f"{esc(name)}</th>")
            sub += "".join(f"<th scope='col' class='num region{cls}'>{esc(split_metric(c)[1])}</th>" for c in cols)
        else:
            head += f"<th scope='col' class='num metric{cls}' title='{esc(title)}'>{esc(name)}</th>"
    thead = f"<thead><tr>{head}</tr>" + (f"<tr>{sub}</tr>" if two_level else "") + "</thead>"
    body = []
    for i, (labels, n, seeds, cells) in enumerate(zip(table.labels, table.n, table.seeds, table.cells)):
        tds = "".join(f"<th scope='row'>{esc(x)}</th>" for x in labels)
        seed_text = ", ".join(str(s) for s in seeds)
        tds += f"<td class='num' title='seeds: {esc(seed_text)}'>{n}</td>"
        for c in table.columns:
            cls = "num" + (" main" if split_metric(c)[0] == main_base else "")
            text = esc(cells[c].text())
            if i in table.best.get(c, ()):
                cls += " best"
                text = f"<strong>{text}</strong>"
            tds += f"<td class='{cls}'>{text}</td>"
        body.append(f"<tr>{tds}</tr>")
    return (f"<div class='table-wrap'><table class='results'>{thead}<tbody>\n" + "\n".join(body)
            + "\n</tbody></table></div>")


def config_diff_html(diff: ConfigDiff) -> str:
    """The config differences as HTML (rows = keys, columns = runs, with each run's status)."""
    esc = html.escape
    if not diff.keys:
        text = "No config key differs between the runs." if len(diff.runs) > 1 else "A single run: nothing to compare."
        return f"<p class='note'>{esc(text)}</p>"
    head = "<th scope='col'>config key</th>" + "".join(
        f"<th scope='col' title='{esc(s)}'>{esc(r)}</th>" for r, s in zip(diff.runs, diff.status))
    body = []
    for key, values, present in zip(diff.keys, diff.values, diff.present):
        tds = f"<th scope='row' title='{esc(key)}'><code>{esc(param_label(key))}</code></th>"
        for v, p in zip(values, present):
            full = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            tds += (f"<td title='{esc(full)}'>{esc(value_text(v))}</td>" if p
                    else "<td class='absent'>(absent)</td>")
        body.append(f"<tr>{tds}</tr>")
    return (f"<div class='table-wrap'><table class='config'><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table></div>")
