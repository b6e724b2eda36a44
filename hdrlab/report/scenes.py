"""Per-scene comparison of test runs against named reference runs (``hdrlab compare --reference``).

``hdrlab test`` writes ``<run_dir>/test_per_sample.csv`` (:mod:`hdrlab.callbacks.per_sample_metrics`):
one row per held-out test scene (``name``) with the method's metric columns. The test scenes are
pinned, so two runs can be compared scene by scene. For every compared run with that file and
every reference (``NAME=RUN_DIR``), per metric column present in both files:

* the per-scene values (scene x run/reference: ``per_scene.csv``, ``per_scene.md``);
* **win counts**: scenes where the run is better than the reference, by the metric's direction
  (:data:`hdrlab.report.tables.METRIC_DIRECTIONS`: higher is better for PSNR/SSIM, lower for
  errors, closer to 0 for ``log2_ratio``), ties (equal values) counted separately;
* the **mean paired difference** ``run - reference`` over the scenes with a 95 % Student-t
  interval (``mean ± t(0.975, n-1) · sd / sqrt(n)``, sample sd, ``ddof = 1``; NaN below two
  scenes).

Scenes are matched by ``name``; the run and the reference must hold the same scene set
(:class:`~hdrlab.errors.ConfigError` naming the missing scenes otherwise). A scene whose value is
empty in either file (no pixel in the region) is left out of that metric's pairing; ``n`` counts
the scenes paired. Metrics without a known direction get no win counts (``—``), only differences.
``clipped_fraction`` is a property of the input, not a metric, and is left out.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrlab.errors import ConfigError

#: The per-image test table of a run folder.
PER_SAMPLE = "test_per_sample.csv"
#: Columns of ``test_per_sample.csv`` that are not metrics.
NON_METRIC_COLUMNS: frozenset[str] = frozenset({"name", "clipped_fraction"})
#: Base metrics that get a paired-difference figure (every region present); when none of them is
#: common to a run and a reference, every compared metric gets one.
FIGURE_BASES: tuple[str, ...] = ("pu21_psnr", "display_psnr")
#: File names :func:`write_scene_outputs` writes (removed by ``write_report`` before a new report).
OUTPUT_PATTERNS: tuple[str, ...] = ("per_scene.csv", "per_scene.md", "scene_diff_*.png", "scene_diff_*.pdf")
_MAX_LISTED = 8


# --------------------------------------------------------------------------- statistics


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``mean ± t((1+level)/2, n-1) · sd / sqrt(n)``.

    Returns:
        ``(mean, low, high)``; all NaN without values, ``low``/``high`` NaN below two values.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t as student_t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(student_t.ppf(0.5 + level / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------- reading


def parse_reference(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> ``(NAME, Path(PATH))``.

    Raises:
        ConfigError: Not of that form.
    """
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ConfigError(f"--reference {text!r}: expected NAME=RUN_DIR, e.g. no_hallucination=runs/baseline/r1")
    return name.strip(), Path(path.strip())


def read_per_sample(path: str | Path) -> dict[str, dict[str, float]]:
    """A ``test_per_sample.csv``: scene name -> metric column -> value (NaN where empty).

    Raises:
        ConfigError: No ``name`` column, or a scene name appears twice.
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "name" not in reader.fieldnames:
            raise ConfigError(f"{path} has no 'name' column; it is not a test_per_sample.csv of hdrlab test")
        out: dict[str, dict[str, float]] = {}
        for row in reader:
            scene = row["name"]
            if scene in out:
                raise ConfigError(f"{path}: scene {scene!r} appears twice; scenes must be unique to be paired")
            values = {}
            for key, value in row.items():
                if key is None or key in NON_METRIC_COLUMNS:
                    continue
                try:
                    values[key] = float(value) if value not in ("", None) else math.nan
                except ValueError:
                    values[key] = math.nan
            out[scene] = values
    return out


@dataclass
class SceneTable:
    """The per-scene values of one run or reference."""

    label: str
    path: Path
    values: dict[str, dict[str, float]]

    @property
    def metrics(self) -> list[str]:
        return sorted({k for v in self.values.values() for k in v})


def load_references(references: Mapping[str, str | Path]) -> list[SceneTable]:
    """The references' per-scene tables.

    Raises:
        ConfigError: A reference folder has no ``test_per_sample.csv``.
    """
    out = []
    for name, folder in references.items():
        csv_path = Path(folder) / PER_SAMPLE
        if not csv_path.is_file():
            raise ConfigError(f"--reference {name}={folder}: {csv_path} does not exist; run "
                              f"`hdrlab test --config ... --ckpt_path ...` for that run first")
        out.append(SceneTable(name, Path(folder), read_per_sample(csv_path)))
    return out


def _run_labels(paths: Sequence[Path]) -> list[str]:
    """The shortest unique trailing path parts of each run folder."""
    parts = [p.resolve().parts for p in paths]
    labels = []
    for i, pp in enumerate(parts):
        for k in range(1, len(pp) + 1):
            tail = pp[-k:]
            if all(other[-k:] != tail for j, other in enumerate(parts) if j != i):
                break
        labels.append("/".join(tail))
    return labels


# --------------------------------------------------------------------------- pairing


@dataclass
class Paired:
    """One run against one reference on one metric.

    Attributes:
        diffs: ``(scene, run - reference)`` per paired scene, in scene order.
        wins, ties, losses: Scene counts by the metric's direction (``None`` without a direction).
        mean, low, high: Mean difference and its 95 % t-interval.
    """

    run: str
    reference: str
    metric: str
    diffs: list[tuple[str, float]]
    wins: int | None
    ties: int | None
    losses: int | None
    mean: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.diffs)

    def wins_text(self) -> str:
        """``wins / n (ties)``, ``—`` without a direction."""
        return "—" if self.wins is None else f"{self.wins} / {self.n} ({self.ties})"

    def diff_text(self, digits: int = 3) -> str:
        """``mean [low, high]``."""
        if not math.isfinite(self.mean):
            return "—"
        ci = f" [{self.low:+.{digits}f}, {self.high:+.{digits}f}]" if math.isfinite(self.low) else ""
        return f"{self.mean:+.{digits}f}{ci}"


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def pair(run: SceneTable, ref: SceneTable, metric: str) -> Paired:
    """Pair a run with a reference on ``metric`` (module docstring); scenes must already match."""
    from hdrlab.report.tables import metric_direction

    direction = metric_direction(metric)
    diffs, wins, ties = [], 0, 0
    for scene in sorted(run.values):
        a = run.values[scene].get(metric, math.nan)
        b = ref.values[scene].get(metric, math.nan)
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        diffs.append((scene, a - b))
        if direction == "zero":
            a, b = abs(a), abs(b)
        if _same(a, b):
            ties += 1
        elif (a > b) if direction == "max" else (a < b):
            wins += 1
    mean, low, high = mean_ci([d for _, d in diffs])
    if direction is None:
        return Paired(run.label, ref.label, metric, diffs, None, None, None, mean, low, high)
    return Paired(run.label, ref.label, metric, diffs, wins, ties, len(diffs) - wins - ties, mean, low, high)


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def check_scenes(run: SceneTable, ref: SceneTable) -> None:
    """Raise one :class:`ConfigError` line naming the scenes one side lacks."""
    missing_run = sorted(set(ref.values) - set(run.values))
    missing_ref = sorted(set(run.values) - set(ref.values))
    if missing_run or missing_ref:
        parts = []
        if missing_run:
            parts.append(f"missing in run {run.label} ({run.path / PER_SAMPLE}): {_names(missing_run)}")
        if missing_ref:
            parts.append(f"missing in reference {ref.label} ({ref.path / PER_SAMPLE}): {_names(missing_ref)}")
        raise ConfigError("test scenes differ, cannot pair them by name: " + "; ".join(parts)
                          + " (test every run on the same pinned held-out scenes)")


@dataclass
class SceneComparison:
    """Runs and references scene by scene (:func:`compare_scenes`).

    Attributes:
        runs: Compared runs with a ``test_per_sample.csv``.
        references: The references.
        metrics: Metric columns common to at least one run and one reference, table order.
        paired: ``(run label, reference, metric)`` -> :class:`Paired`.
    """

    runs: list[SceneTable]
    references: list[SceneTable]
    metrics: list[str]
    paired: dict[tuple[str, str, str], Paired] = field(default_factory=dict)

    @property
    def scenes(self) -> list[str]:
        return sorted({s for t in self.runs + self.references for s in t.values})

    def figure_metrics(self) -> list[str]:
        """Metrics with a figure: the :data:`FIGURE_BASES` ones, else all."""
        from hdrlab.report.tables import split_metric

        main = [m for m in self.metrics if split_metric(m)[0] in FIGURE_BASES]
        return main or list(self.metrics)


def compare_scenes(run_dirs: Sequence[str | Path], references: Sequence[SceneTable]) -> SceneComparison | None:
    """Pair every run folder holding ``test_per_sample.csv`` with every reference.

    Args:
        run_dirs: The compared run folders (those without the file are skipped).
        references: :func:`load_references`.

    Returns:
        ``None`` when there is no reference or no run with the file.

    Raises:
        ConfigError: A run and a reference hold different scene sets.
    """
    from hdrlab.report.tables import _order_key

    with_csv = [Path(p) for p in run_dirs if (Path(p) / PER_SAMPLE).is_file()]
    if not references or not with_csv:
        return None
    ref_dirs = {r.path.resolve() for r in references}
    with_csv = [p for p in with_csv if p.resolve() not in ref_dirs]  # a reference is not compared with itself
    if not with_csv:
        return None
    runs = [SceneTable(label, p, read_per_sample(p / PER_SAMPLE)) for label, p in zip(_run_labels(with_csv), with_csv)]
    paired: dict[tuple[str, str, str], Paired] = {}
    metrics: set[str] = set()
    for run in runs:
        for ref in references:
            check_scenes(run, ref)
            for metric in sorted(set(run.metrics) & set(ref.metrics)):
                paired[(run.label, ref.label, metric)] = pair(run, ref, metric)
                metrics.add(metric)
    main = "pu21_psnr" if any(m.startswith("pu21_psnr") for m in metrics) else "display_psnr"
    return SceneComparison(runs, list(references), sorted(metrics, key=lambda m: _order_key(m, main)), paired)


# --------------------------------------------------------------------------- outputs


def _fmt(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.4f}"


def per_scene_rows(comp: SceneComparison) -> tuple[list[str], list[list[str]]]:
    """The long per-scene table: ``scene, metric``, then one column per reference and per run."""
    fixed = [r for r in comp.references if r.values]  # references resolved per run are among the runs
    header = ["scene", "metric"] + [f"reference:{r.label}" for r in fixed] + [r.label for r in comp.runs]
    tables = fixed + comp.runs
    rows = []
    for metric in comp.metrics:
        for scene in comp.scenes:
            rows.append([scene, metric] + [_fmt(t.values.get(scene, {}).get(metric, math.nan)) for t in tables])
    return header, rows


def _axis_label(metric: str) -> str:
    from hdrlab.report.tables import direction_text, metric_label

    better = direction_text(metric)
    return f"Δ {metric_label(metric, unit=True)}\nrun − reference" + (f" ({better})" if better else "")


def paired_figure(comp: SceneComparison, metric: str, path: Path, *, pdf: bool) -> Any:
    """Per run, the sorted per-scene differences ``run - reference`` against each reference
    (one line and marker set per reference), with the zero line."""
    from hdrlab.report.figures import _plt, save_figure
    from hdrlab.report.tables import metric_label

    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in comp.runs if any((r.label, ref.label, metric) in comp.paired for ref in comp.references)]
    cols = min(len(runs), 3)
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax, run in zip(axes.flat, runs):
        for i, ref in enumerate(comp.references):
            p = comp.paired.get((run.label, ref.label, metric))
            if p is None or not p.diffs:
                continue
            ys = sorted(d for _, d in p.diffs)
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3.5, lw=1.2, color=f"C{i}",
                    label=f"vs {ref.label}: {p.wins_text()}")
        ax.axhline(0.0, color="k", lw=0.9, ls="--")
        ax.set_title(run.label, fontsize=10)
        ax.set_xlabel("scene rank (sorted by difference)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_axis_label(metric), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, title="reference: wins / n (ties)", title_fontsize=7.5)
    title = f"Per-scene paired difference: {metric_label(metric, unit=True)}"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, title, pdf=pdf)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _paired_runs(comp: SceneComparison, metric: str) -> list[SceneTable]:
    """The runs paired with at least one reference on ``metric`` (a reference run itself, or a run
    for which no reference resolves, has no row in the wins tables)."""
    return [r for r in comp.runs if any((r.label, ref.label, metric) in comp.paired for ref in comp.references)]


def wins_markdown(comp: SceneComparison, metric: str) -> str:
    """Run x reference table of ``wins / n (ties)`` and ``mean diff [95 % CI]`` for one metric."""
    header = ["run"] + [h for r in comp.references for h in (f"wins vs {r.label}", f"Δ vs {r.label} [95% CI]")]
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|---|" + "--:|" * (len(header) - 1)]
    for run in _paired_runs(comp, metric):
        cells = [_md(run.label)]
        for ref in comp.references:
            p = comp.paired.get((run.label, ref.label, metric))
            cells += [p.wins_text(), p.diff_text()] if p else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wins_html(comp: SceneComparison, metric: str) -> str:
    """:func:`wins_markdown` as an HTML table (two header rows: reference, then quantity)."""
    esc = html.escape
    head = "<th scope='col' rowspan='2'>run</th>" + "".join(
        f"<th scope='colgroup' colspan='2' class='num'>vs {esc(r.label)}</th>" for r in comp.references)
    sub = "".join("<th scope='col' class='num region'>wins / n (ties)</th>"
                  "<th scope='col' class='num region'>mean Δ [95% CI]</th>" for _ in comp.references)
    body = []
    for run in _paired_runs(comp, metric):
        tds = f"<th scope='row'>{esc(run.label)}</th>"
        for ref in comp.references:
            p = comp.paired.get((run.label, ref.label, metric))
            tds += (f"<td class='num'>{esc(p.wins_text())}</td><td class='num'>{esc(p.diff_text())}</td>" if p
                    else "<td class='num absent'>—</td><td class='num absent'>—</td>")
        body.append(f"<tr>{tds}</tr>")
    return (f"<div class='table-wrap'><table class='wins'><thead><tr>{head}</tr><tr>{sub}</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table></div>")


def per_scene_html(comp: SceneComparison, metric: str) -> str:
    """Scene x (references, runs) values of one metric, as HTML."""
    esc = html.escape
    fixed = [r for r in comp.references if r.values]  # references resolved per run are among the runs
    tables = fixed + comp.runs
    head = "<th scope='col'>scene</th>" + "".join(
        f"<th scope='col' class='num'>{esc(('ref: ' if i < len(fixed) else '') + t.label)}</th>"
        for i, t in enumerate(tables))
    body = "\n".join(
        f"<tr><th scope='row'>{esc(s)}</th>"
        + "".join(f"<td class='num'>{esc(_fmt(t.values.get(s, {}).get(metric, math.nan)) or '—')}</td>" for t in tables)
        + "</tr>" for s in comp.scenes)
    return (f"<div class='table-wrap'><table class='per-scene'><thead><tr>{head}</tr></thead><tbody>\n{body}\n"
            "</tbody></table></div>")


def write_scene_outputs(comp: SceneComparison, folder: str | Path, *, pdf: bool = True) -> tuple[Any, list[Path], list[Any]]:
    """Write ``per_scene.csv``, ``per_scene.md`` and ``scene_diff_<metric>.png`` (and PDF).

    Returns:
        ``(section, files, figures)``: the report's :class:`~hdrlab.report.page.Section`
        (id ``scene-wins``), the written files, the :class:`~hdrlab.report.figures.FigureInfo` list.
    """
    from hdrlab.report import page as P
    from hdrlab.report.tables import direction_text, metric_label

    esc = html.escape
    folder = Path(folder)
    header, rows = per_scene_rows(comp)
    csv_path = folder / "per_scene.csv"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    intro = ("Wins: scenes where the run is better than the reference (by the metric's direction), "
             "`wins / n (ties)`; Δ: mean paired difference run − reference over the scenes with its 95% t-interval.")
    md = ["# Per-scene wins against references", "", intro, ""]
    for metric in comp.metrics:
        md += [f"## {metric_label(metric, unit=True)} (`{metric}`, {direction_text(metric) or 'no direction'})", "",
               wins_markdown(comp, metric), ""]
    md += ["## Per-scene values", ""]
    md += ["| " + " | ".join(_md(h) for h in header) + " |", "|---|---|" + "--:|" * (len(header) - 2)]
    md += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    md_path = folder / "per_scene.md"
    md_path.write_text("\n".join(md) + "\n")

    figures = [paired_figure(comp, m, folder / f"scene_diff_{m}.png", pdf=pdf) for m in comp.figure_metrics()]
    refs = ", ".join(f"<code>{esc(r.label)}</code> ({esc(str(r.path))})" if r.values else
                     f"<code>{esc(r.label)}</code> (<code>{esc(str(r.path))}</code>, resolved per run)"
                     for r in comp.references)
    body = [(f"<p>Each run's <code>{PER_SAMPLE}</code> against the references {refs}, scene by scene "
            f"({len(comp.scenes)} test scenes, matched by name). <b>wins / n (ties)</b>: scenes where the run is "
            "better than the reference, by the metric's direction; ties (equal values) apart. <b>mean Δ</b>: mean "
            "paired difference run − reference with its 95% Student-t interval over the scenes. Scenes with an "
            "empty value (no pixel in the region) are left out of that metric.</p>")]
    for metric in comp.metrics:
        better = direction_text(metric)
        body.append(f"<h3>{esc(metric_label(metric, unit=True))} <code>{esc(metric)}</code>"
                    + (f" ({esc(better)})" if better else "") + "</h3>")
        body.append(wins_html(comp, metric))
    if figures:
        body.append("<div class='figs'>" + "\n".join(P.figure_html(f, folder) for f in figures) + "</div>")
    first = comp.figure_metrics()[0] if comp.metrics else None
    if first is not None:
        body.append(f"<details><summary>Per-scene values of <code>{esc(first)}</code> (all metrics: "
                    f"<a href='per_scene.csv'>per_scene.csv</a>, <a href='per_scene.md'>per_scene.md</a>)</summary>"
                    + per_scene_html(comp, first) + "</details>")
    section = P.Section("scene-wins", "Per-scene wins against references", "\n".join(body))
    files = [csv_path, md_path] + [p for f in figures for p in (f.path, f.pdf) if p]
    return section, files, figures
