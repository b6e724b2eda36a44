"""Training and validation curves of runs against samples seen, from their ``metrics.csv``.

Lightning's CSV logger writes one row per logging call with empty cells for the columns not
logged then. ``train/samples_seen`` (:class:`hdrlab.methods.base.HDRMethod`) is logged on the
training rows; a row without it (validation, learning-rate monitor) is placed at the samples seen
of the latest training row at or before its ``step``. Runs that never logged
``train/samples_seen`` are plotted against ``step`` instead (the axis label says which).
"""

from __future__ import annotations

import bisect
import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLES_KEY = "train/samples_seen"
THROUGHPUT_KEY = "train/throughput"
LOSS_KEY = "train/loss"


@dataclass
class History:
    """Every logged value of a run: column -> ``[(x, value), ...]`` in logging order.

    Attributes:
        series: Column -> points; ``x`` is samples seen (or the step, see ``x_is_samples``).
        x_is_samples: Whether ``x`` is samples seen (else the trainer step).
    """

    series: dict[str, list[tuple[float, float]]]
    x_is_samples: bool


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_history(metrics_csv: str | Path) -> History:
    """Every finite value of every column of a Lightning ``metrics.csv``, against samples seen.

    Args:
        metrics_csv: The file (missing: empty history).

    Returns:
        A :class:`History` (``epoch``, ``step`` and ``train/samples_seen`` are not series).
    """
    path = Path(metrics_csv)
    if not path.is_file():
        return History({}, False)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    seen: dict[int, float] = {}
    for row in rows:
        step, samples = _float(row.get("step")), _float(row.get(SAMPLES_KEY))
        if step is not None and samples is not None:
            seen[int(step)] = max(samples, seen.get(int(step), samples))
    steps = sorted(seen)
    use_samples = bool(steps)
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        step = _float(row.get("step"))
        x: float | None
        if use_samples:
            x = _float(row.get(SAMPLES_KEY))
            if x is None and step is not None:
                i = bisect.bisect_right(steps, int(step)) - 1
                x = seen[steps[i]] if i >= 0 else 0.0
        else:
            x = step
        if x is None:
            continue
        for key, raw in row.items():
            if not key or key in ("epoch", "step", SAMPLES_KEY):
                continue
            v = _float(raw)
            if v is not None:
                series.setdefault(key, []).append((x, v))
    return History(series, use_samples)


@dataclass
class Line:
    """One line of a curve figure."""

    label: str
    color_index: int
    points: list[tuple[float, float]]
    dashed: bool = False
    legend: bool = True


@dataclass
class CurveSpec:
    """One curve figure: which quantity, its title and axis labels, the lines."""

    slug: str
    title: str
    ylabel: str
    lines: list[Line]
    x_is_samples: bool
    log_y: bool = False


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def curve_specs(runs: Sequence[tuple[str, int, bool, History]], *, val_metrics: Sequence[tuple[str, str]]) -> list[CurveSpec]:
    """The curve figures of a set of runs.

    Args:
        runs: Per run: its label (runs of one group share it: one legend entry per label), its colour
            index (one per group), whether it failed, its :class:`History`.
        val_metrics: ``(metric key, title)`` per validation metric to plot.

    Returns:
        Figures with at least one line: training loss, each validation metric, learning rate
        (every ``lr-*`` column), throughput.
    """
    x_is_samples = all(h.x_is_samples for *_, h in runs if h.series) and any(h.series for *_, h in runs)
    specs: list[CurveSpec] = []

    def lines_for(select) -> list[Line]:
        out, shown = [], set()
        for label, color, failed, hist in runs:
            for key, suffix in select(hist):
                points = hist.series.get(key, [])
                if points:
                    text = label + suffix + (" (failed)" if failed else "")
                    out.append(Line(text, color, points, dashed=failed, legend=text not in shown))
                    shown.add(text)
        return out

    loss = lines_for(lambda h: [(LOSS_KEY, "")])
    values = [v for line in loss for _, v in line.points]
    # losses of different objectives (e.g. a stage-wise method's stages beside a merger's) can differ by
    # orders of magnitude: a log axis when all are positive and they span more than 20x
    spread = bool(values) and min(values) > 0 and max(values) / min(values) > 20
    specs.append(CurveSpec("train_loss", "Training loss (train/loss)", "training loss", loss, x_is_samples,
                           log_y=spread))
    for metric, title in val_metrics:
        from hdrlab.report.tables import metric_label

        specs.append(CurveSpec(_slug(metric.replace("/", "_")), title, f"{metric_label(metric, unit=True)}",
                               lines_for(lambda h, m=metric: [(m, "")]), x_is_samples))

    def lr_columns(h: History) -> list[tuple[str, str]]:
        cols = sorted(k for k in h.series if k.startswith("lr-"))
        return [(k, "" if len(cols) == 1 else f" [{k}]") for k in cols]

    lr = lines_for(lr_columns)
    ys = [v for line in lr for _, v in line.points if v > 0]
    names = sorted({k for *_, h in runs for k in h.series if k.startswith("lr-")})
    specs.append(CurveSpec("learning_rate", f"Learning rate ({', '.join(names) if len(names) <= 2 else 'lr-* columns'})",
                           "learning rate", lr, x_is_samples, log_y=bool(ys) and max(ys) / min(ys) > 20))
    specs.append(CurveSpec("throughput", "Training throughput (train/throughput)", "samples / s",
                           lines_for(lambda h: [(THROUGHPUT_KEY, "")]), x_is_samples))
    return [s for s in specs if s.lines]


def plot_curve(spec: CurveSpec, path: str | Path, *, pdf: bool = True) -> Path:
    """One curve figure as PNG (and PDF): one line per run, colour per group, legend outside right
    when long."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    legend_entries = sum(line.legend for line in spec.lines)
    fig, ax = plt.subplots(figsize=(6.4 if legend_entries <= 4 else 8.4, 3.6))
    markers = "osD^v<p"  # 7 markers x 10 colours: combinations repeat only after 70 groups
    for line in spec.lines:
        xs, ys = zip(*line.points)
        g = line.color_index
        # one colour and marker per group; widths decreasing with the group keep coinciding lines
        # (a shared constant learning rate) visible
        ax.plot(xs, ys, "--" if line.dashed else "-", marker=markers[g % len(markers)] if len(xs) <= 15 else None,
                markersize=max(3.0, 6.5 - 0.8 * g), markerfacecolor="none",
                color="0.55" if line.dashed else cmap(g % 10), lw=1.0 if line.dashed else max(1.0, 2.6 - 0.4 * g),
                label=line.label if line.legend else "_nolegend_")
    ax.set_xlabel("samples seen" if spec.x_is_samples else "step (train/samples_seen not logged)")
    ax.set_ylabel(spec.ylabel)
    ax.set_title(spec.title, fontsize=11)
    if spec.log_y:
        ax.set_yscale("log")
    elif spec.slug == "learning_rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
    ax.grid(alpha=0.3)
    if legend_entries <= 4:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  ncol=1 + (legend_entries - 1) // 16)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    if pdf:
        fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path
