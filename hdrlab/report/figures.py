"""Figures of ``hdrlab compare``: main metric per group, generator x merger heatmap, metric against
numeric parameters, validation previews. Every figure's title names the metric it plots; linear
(HDR) and display metrics are never drawn on one axis.

A run's *output domain* is read from what it logged (:func:`run_domain`): a run scored on
:data:`~hdrlab.sweep.compare.DISPLAY_METRIC` (it logged no HDR metric) is a display-output run,
any other scored run a linear-output run. This needs no import of the method classes (no torch),
which keeps ``hdrlab compare`` at a second or two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdrlab.report.tables import (
    DOMAIN_MAIN_METRICS,
    ResultsTable,
    direction_text,
    group_label,
    grouped_runs,
    metric_domain,
    metric_label,
    results_tables,
    value_text,
)
from hdrlab.sweep.compare import (
    Comparison,
    RunRecord,
    failure_reason,
    mean_std,
    score_metric,
    short_name,
)

GEN_KEY = "model.init_args.generator.class_path"
MER_KEY = "model.init_args.merger.class_path"
#: Most scenes (rows) and groups (columns) in the preview grid.
MAX_PREVIEW_SCENES = 4
MAX_PREVIEW_GROUPS = 8


@dataclass
class FigureInfo:
    """A written figure: its PNG, the title shown above it, its PDF (``None`` when not written)."""

    path: Path
    title: str
    pdf: Path | None = None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, title: str, *, pdf: bool = True, dpi: int = 100) -> FigureInfo:
    """Save a matplotlib figure as PNG (and PDF next to it), close it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    pdf_path = None
    if pdf:
        pdf_path = path.with_suffix(".pdf")
        fig.savefig(pdf_path)
    _plt().close(fig)
    return FigureInfo(path, title, pdf_path)


def domain_main_metric(domain: str, metric: str) -> str:
    """The metric a ``domain`` panel shows: the user's ``metric`` when it is of that domain, else the
    domain's default (:data:`~hdrlab.report.tables.DOMAIN_MAIN_METRICS`)."""
    return metric if metric_domain(metric) == domain else DOMAIN_MAIN_METRICS.get(domain, metric)


def run_domain(record: RunRecord, metric: str) -> str | None:
    """``"linear"`` or ``"display"`` from the metric the run is scored on; ``None`` when unscored."""
    name = score_metric(record, metric)
    return None if name is None else ("display" if metric_domain(name) == "display" else "linear")


def _wrap(text: str, width: int = 22) -> str:
    """``text`` in lines of at most ``width`` characters, broken after spaces or ``/`` (run labels such
    as ``baseline_inverse_crf/baseline`` are not cut inside a name), a part still too long after ``_``
    or ``-``, and only then cut."""
    lines: list[str] = []
    for part in _wrap_parts(text, width, r"[^\s/]*(?:/+|\s+|$)"):
        for piece in [part] if len(part) <= width else _wrap_parts(part, width, r"[^\s/_-]*(?:[/_-]+|\s+|$)"):
            lines += [piece[i : i + width] for i in range(0, len(piece), width)]
    return "\n".join(lines) or text


def _wrap_parts(text: str, width: int, pattern: str) -> list[str]:
    """Greedy lines of the ``pattern`` pieces of ``text`` (a piece longer than ``width`` stays whole)."""
    lines: list[str] = []
    line = ""
    for piece in re.findall(pattern, text):
        if not piece:
            continue
        if line and len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _bar_panel(ax: Any, labels: Sequence[str], means: Sequence[float], stds: Sequence[float],
               counts: Sequence[int], metric: str, title: str, ylabel: str = "group") -> None:
    """Horizontal bars (one per label) with error bars where ``count > 1``, values written at the bars;
    the x axis names the metric (unit, direction); ``ylabel`` (what a bar is) heads the tick labels."""
    import numpy as np

    y = np.arange(len(labels))
    vals = [m if math.isfinite(m) else 0.0 for m in means]
    err = [s if c > 1 and math.isfinite(s) else 0.0 for s, c in zip(stds, counts)]
    ax.barh(y, vals, color="#4c72b0", alpha=0.85)
    with_err = [i for i, e in enumerate(err) if e > 0]  # error bars only where n > 1
    if with_err:
        ax.errorbar([vals[i] for i in with_err], [y[i] for i in with_err], xerr=[err[i] for i in with_err],
                    fmt="none", ecolor="black", elinewidth=1.2, capsize=4)
    ax.set_yticks(y, [_wrap(str(label), 28) for label in labels], fontsize=8)
    ax.invert_yaxis()
    span = max((abs(v) + e for v, e in zip(vals, err)), default=1.0) or 1.0
    for yi, m, s, c in zip(y, means, err, counts):
        text = "no value" if not math.isfinite(m) else (f"{m:.2f} ± {s:.2f} (n={c})" if c > 1 and s else f"{m:.2f} (n={c})")
        ax.text((m if math.isfinite(m) else 0.0) + s + 0.02 * span, yi, text, va="center", fontsize=8)
    ax.set_xlim(min(0.0, min(vals, default=0.0) * 1.1), span * 1.45)
    direction = direction_text(metric)
    ax.set_xlabel(f"{metric_label(metric, unit=True)}" + (f" ({direction})" if direction else ""))
    # what a bar is: a header over the tick labels (a rotated y label would overlap long tick labels)
    ax.annotate(_wrap(ylabel, 40), xy=(0, 1), xycoords="axes fraction", xytext=(-6, 4), textcoords="offset points",
                ha="right", va="bottom", fontsize=8, fontweight="bold")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def main_metric_bars(comparison: Comparison, path: str | Path, *, tables: Sequence[ResultsTable] | None = None,
                     pdf: bool = True) -> FigureInfo | None:
    """The main metric per group (method or grid cell), one panel per output domain.

    Args:
        comparison: The comparison.
        path: The PNG.
        tables: Its :func:`~hdrlab.report.tables.results_tables` (computed when ``None``).
        pdf: Also write a PDF.

    Returns:
        The figure, ``None`` without any group with a main metric.
    """
    tables = [t for t in (tables if tables is not None else results_tables(comparison))
              if t.domain in ("linear", "display") and t.main_metric]
    if not tables:
        return None
    plt = _plt()
    heights = [max(1.6, 0.45 * len(t.labels) + 1.1) for t in tables]
    fig, axes = plt.subplots(len(tables), 1, figsize=(8.0, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    titles = []
    for ax, t in zip(axes[:, 0], tables):
        metric = t.main_metric
        cells = [c[metric] for c in t.cells]
        what = "mean ± std over seeds" if any(c.count > 1 for c in cells) else "single runs (n = 1, no error bars)"
        title = f"{t.domain} outputs: {metric} — {what}"
        titles.append(f"{t.domain}: {metric}")
        _bar_panel(ax, [", ".join(x) for x in t.labels], [c.mean for c in cells], [c.std for c in cells],
                   [c.count for c in cells], metric, title, ylabel=", ".join(t.label_headers))
    fig.tight_layout()
    return save_figure(fig, path, "Main metric per group — " + "; ".join(titles), pdf=pdf)


@dataclass
class StagePanel:
    """One output domain's generator x merger grid: mean, std and run count per cell."""

    domain: str
    metric: str
    generators: list[str]
    mergers: list[str]
    mean: list[list[float]]
    std: list[list[float]]
    count: list[list[int]]

    @property
    def is_grid(self) -> bool:
        """More than one generator and more than one merger (a heatmap says something)."""
        return len(self.generators) > 1 and len(self.mergers) > 1


def domain_groups(runs: Sequence[Any], metric: str) -> list[tuple[str, str, list[Any]]]:
    """``(domain, main metric, runs)`` per output domain present (linear first): each domain's main
    metric (:func:`domain_main_metric`), or the first run's score metric when no run logged it."""
    groups = []
    for domain in ("linear", "display"):
        sel = [r for r in runs if run_domain(r, metric) == domain]
        if not sel:
            continue
        main = domain_main_metric(domain, metric)
        if not any(main in r.metrics for r in sel):
            main = score_metric(sel[0], metric) or main
        groups.append((domain, main, sel))
    return groups


def stage_panels(comparison: Comparison) -> list[StagePanel]:
    """The generator x merger grids of the finished TwoStage runs, per output domain (linear first).

    Each domain panel is scored on its main metric (:func:`domain_main_metric`)."""
    runs = [r for r in comparison.records if str(r.config.get("model.class_path", "")).endswith("TwoStage")
            and failure_reason(r, comparison.metric) is None]
    panels = []
    for domain, metric, sel in domain_groups(runs, comparison.metric):
        gens = sorted({short_name(r.config.get(GEN_KEY)) for r in sel})
        mers = sorted({short_name(r.config.get(MER_KEY)) for r in sel})
        mean, std, count = [], [], []
        for g in gens:
            stats = []
            for m in mers:
                values = [r.metrics.get(metric) for r in sel
                          if short_name(r.config.get(GEN_KEY)) == g and short_name(r.config.get(MER_KEY)) == m]
                values = [v for v in values if v is not None and math.isfinite(v)]
                stats.append((*mean_std(values), len(values)))
            mean.append([s[0] for s in stats])
            std.append([s[1] for s in stats])
            count.append([s[2] for s in stats])
        panels.append(StagePanel(domain, metric, gens, mers, mean, std, count))
    return panels


def stage_heatmap(comparison: Comparison, path: str | Path, *, pdf: bool = True) -> FigureInfo | None:
    """Generator x merger figure of the TwoStage runs, one panel per output domain.

    A panel with more than one generator and more than one merger is a heatmap of its main metric
    (colour bar labelled with the metric, cells ``mean`` and ``± std`` when n > 1); a panel with a
    single generator or a single merger is a bar chart of its cells instead.

    Returns:
        The figure, ``None`` without finished TwoStage runs.
    """
    import numpy as np

    panels = stage_panels(comparison)
    if not panels:
        return None
    plt = _plt()
    widths = [max(3.8, 1.25 * len(p.mergers) + 2.8) if p.is_grid else 5.0 for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    titles = []
    for ax, p in zip(axes[0], panels):
        if p.is_grid:
            grid = np.array(p.mean, dtype=float)
            masked = np.ma.masked_invalid(grid)
            cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
            im = ax.imshow(masked, cmap=cmap, aspect="auto")
            ax.set_xticks(range(len(p.mergers)), p.mergers, rotation=20, ha="right", fontsize=8)
            ax.set_yticks(range(len(p.generators)), p.generators, fontsize=8)
            ax.set_xlabel("merger")
            ax.set_ylabel("generator")
            lo, hi = (float(np.nanmin(grid)), float(np.nanmax(grid))) if np.isfinite(grid).any() else (0.0, 1.0)
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    v, s, n = grid[i, j], p.std[i][j], p.count[i][j]
                    if not math.isfinite(v):
                        ax.text(j, i, "no run", ha="center", va="center", fontsize=8, color="0.3")
                        continue
                    text = f"{v:.2f}" + (f"\n± {s:.2f}" if n > 1 and math.isfinite(s) else "") + f"\nn={n}"
                    bright = hi > lo and (v - lo) / (hi - lo) > 0.6
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if bright else "white")
            bar = fig.colorbar(im, ax=ax)
            bar.set_label(metric_label(p.metric, unit=True) + f" ({p.metric})", fontsize=8)
            title = f"{p.domain} mergers: {p.metric} (heatmap)"
        else:
            labels = [f"{g} + {m}" for g in p.generators for m in p.mergers]
            flat = [(p.mean[i][j], p.std[i][j], p.count[i][j]) for i in range(len(p.generators))
                    for j in range(len(p.mergers))]
            title = f"{p.domain} mergers: {p.metric}"
            _bar_panel(ax, labels, [f[0] for f in flat], [f[1] for f in flat], [f[2] for f in flat], p.metric, title,
                       ylabel="generator + merger")
        ax.set_title(title, fontsize=10)
        titles.append(title)
    fig.tight_layout()
    return save_figure(fig, path, "Generator x merger — " + "; ".join(titles), pdf=pdf)


def _numeric_axis(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(set(values)) > 1


def metric_vs_axes(comparison: Comparison, folder: str | Path, *, pdf: bool = True) -> list[FigureInfo]:
    """One figure per numeric varying parameter: each finished run's main metric and the per-value
    mean ± std, one panel per output domain (linear runs on their HDR metric, display runs on
    their display metric).

    Returns:
        The written ``metric_vs_<param>.png`` figures.
    """
    folder = Path(folder)
    good = [r for r in comparison.records if failure_reason(r, comparison.metric) is None]
    out = []
    for param in comparison.params:
        values = [r.config.get(param) for r in good]
        if not good or not _numeric_axis(values):
            continue
        panels = []
        for domain, metric, sel in domain_groups(good, comparison.metric):
            sel = [r for r in sel if metric in r.metrics]
            if sel:
                panels.append((domain, metric, sel))
        if not panels:
            continue
        plt = _plt()
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
        titles = []
        for ax, (domain, metric, sel) in zip(axes[0], panels):
            xs_all = [r.config.get(param) for r in sel]
            ys_all = [r.metrics[metric] for r in sel]
            xs = sorted(set(xs_all))
            stats = [mean_std([y for y, v in zip(ys_all, xs_all) if v == x]) for x in xs]
            ax.scatter(xs_all, ys_all, s=14, alpha=0.5, label="runs")
            ax.errorbar(xs, [m for m, _ in stats], yerr=[s if math.isfinite(s) else 0.0 for _, s in stats],
                        fmt="o-", capsize=3, label="mean ± std")
            if min(xs) > 0 and max(xs) / min(xs) >= 50:
                ax.set_xscale("log")
            ax.set_xlabel(param.replace("init_args.", ""))
            ax.set_ylabel(metric_label(metric, unit=True))
            title = f"{domain} outputs: {metric} vs {param.replace('init_args.', '')}"
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            titles.append(title)
        fig.tight_layout()
        path = folder / f"metric_vs_{re.sub(r'[^A-Za-z0-9_.-]+', '_', param)}.png"
        out.append(save_figure(fig, path, "; ".join(titles), pdf=pdf))
    return out


def split_panel(image: Any) -> list[Any] | None:
    """The square tiles of an :func:`~hdrlab.callbacks.run_artifacts.build_panel` strip (tiles of
    the panel's height separated by 2-pixel gaps), ``None`` when the width does not fit that layout."""
    h, w = image.shape[:2]
    if h < 2 or (w + 2) % (h + 2) or (w + 2) // (h + 2) < 3:
        return None
    return [image[:, i * (h + 2): i * (h + 2) + h] for i in range((w + 2) // (h + 2))]


def _read_png(path: Path) -> Any:
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(str(path))
    if img.dtype != np.float32 and img.dtype != np.float64:
        img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def _square(img: Any) -> Any:
    """``img`` centred on a white square canvas (tiles of every column and row get one size)."""
    import numpy as np

    h, w = img.shape[:2]
    if h == w:
        return img
    side = max(h, w)
    canvas = np.ones((side, side, 3), dtype=img.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top: top + h, left: left + w] = img
    return canvas


def preview_grid(comparison: Comparison, path: str | Path, *, pdf: bool = False) -> FigureInfo | None:
    """Validation previews side by side: one row per scene, one titled column per group (method or
    grid cell, its first run with previews), after the input LDR and the reference.

    Tiles are cut from each run's latest ``previews/step<N>_<scene>.png`` (input | prediction |
    reference | ...); every tile carries a label and all tiles have one size. Runs whose panels do
    not have that layout show their whole panel.

    Returns:
        The figure, ``None`` when no finished run has previews.
    """
    import numpy as np

    groups = grouped_runs(comparison)
    columns: list[tuple[str, str, RunRecord, str]] = []  # title, subtitle, run, tile tag
    for row, runs in zip(comparison.rows, groups):
        run = next((r for r in runs if r.previews), None)
        if run is None:
            continue
        label = group_label(row, comparison.params)
        domain = run_domain(run, comparison.metric) or "linear"
        metric = domain_main_metric(domain, comparison.metric)
        values = [r.metrics[metric] for r in runs if metric in r.metrics and math.isfinite(r.metrics[metric])]
        mean, std = mean_std(values)
        score = ""
        if values:
            score = f"{metric_label(metric)}: {mean:.2f}" + (f" ± {std:.2f} (n={len(values)})" if len(values) > 1 else "")
        seed = f", seed {run.seed}" if run.seed is not None else ""
        tag = ", ".join(value_text(row.get(p), limit=24) for p in comparison.params) or run.path.name
        columns.append((label, f"{run.path.name}{seed}" + (f"\n{score}" if score else ""), run, tag))
    if not columns:
        return None
    truncated = len(columns) > MAX_PREVIEW_GROUPS
    columns = columns[:MAX_PREVIEW_GROUPS]
    # scenes shown by the most columns first (a scene every run previews), then by name
    counts: dict[str, int] = {}
    for _, _, r, _ in columns:
        for scene in r.previews:
            counts[scene] = counts.get(scene, 0) + 1
    scenes = sorted(counts, key=lambda sc: (-counts[sc], sc))
    truncated_scenes = len(scenes) > MAX_PREVIEW_SCENES
    scenes = scenes[:MAX_PREVIEW_SCENES]

    tiles: dict[tuple[int, str], Any] = {}
    whole: dict[tuple[int, str], Any] = {}
    refs: dict[str, tuple[Any, Any]] = {}
    for j, (_, _, run, _) in enumerate(columns):
        for scene in scenes:
            if scene not in run.previews:
                continue
            img = _read_png(run.previews[scene])
            parts = split_panel(img)
            if parts is None:
                whole[(j, scene)] = img
            else:
                tiles[(j, scene)] = parts[1]
                refs.setdefault(scene, (parts[0], parts[2]))
    with_refs = bool(refs)
    heads = ([("input LDR", "input"), ("reference", "reference (display)")] if with_refs else [])
    ncols = len(heads) + len(columns)
    plt = _plt()
    size = 1.9
    fig, axes = plt.subplots(len(scenes), ncols, figsize=(size * ncols + 0.6, size * len(scenes) + 0.9),
                             squeeze=False)
    blank = np.full((8, 8, 3), 0.85)  # a missing tile
    for i, scene in enumerate(scenes):
        for k in range(ncols):
            ax = axes[i, k]
            if k < len(heads):
                img = refs.get(scene, (blank, blank))[k]
                tag = heads[k][0]
            else:
                j = k - len(heads)
                img = tiles.get((j, scene), whole.get((j, scene)))
                tag = columns[j][3] if img is not None else "no preview"
                img = blank if img is None else img
            ax.imshow(_square(np.clip(img, 0, 1)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.text(0.03, 0.03, _wrap(tag, 18), transform=ax.transAxes, fontsize=6.5, color="white", va="bottom",
                    ha="left", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "edgecolor": "none"})
            if i == 0:
                head = heads[k][1] if k < len(heads) else f"{_wrap(columns[k - len(heads)][0], 24)}\n" \
                                                           f"{columns[k - len(heads)][1]}"
                ax.set_title(head, fontsize=7)
            if k == 0:
                ax.set_ylabel(_wrap(scene, 22), fontsize=7)
    note = " (first groups/scenes only)" if truncated or truncated_scenes else ""
    title = f"Validation previews: latest prediction per group, rows = scenes{note}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title, pdf=pdf)

