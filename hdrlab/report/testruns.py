"""Comparison of held-out test runs (``hdrlab compare --test``): scores from ``test_per_sample.csv``.

A *test run* is a folder holding ``test_per_sample.csv`` (``hdrlab test``, one row per pinned test
scene; :mod:`hdrlab.callbacks.per_sample_metrics`). Runs made by a recipe's test stage
(:mod:`hdrlab.recipe`, ``run: test``; the folder holds ``recipe_stage.json``) are labelled
``<recipe>/<stage>`` (``le2023_debevec/trained``, ``le2023_debevec/untrained``,
``baseline_inverse_crf/baseline``); other test runs by the shortest unique tail of their path.
Runs with the same label and different seeds (``seed_everything`` of their ``config.yaml``) are
repeats of one row.

Results (:func:`test_records` -> :func:`hdrlab.sweep.compare.compare_runs`): per run, each metric
column's mean over the scenes with a value (``test/<column>``); per row, ``mean ± sample std`` over
the seeds (only when n > 1) and the 95 % Student-t interval over the scenes of the per-scene values
averaged over the row's seeds.

References (``--reference NAME=TARGET``, :func:`resolve_reference`), compared scene by scene with
every run (:mod:`hdrlab.report.scenes`: wins, ties, mean paired difference with its 95 % interval):

* ``NAME=@STAGE``: for each run made by a recipe, the test stage ``STAGE`` of the *same* recipe run
  (``untrained_self=@untrained``: every trained run against its own untrained self, same seed);
* ``NAME=LABEL``: the compared test run labelled ``LABEL`` with the same seed, or ``LABEL/<stage>``
  when that recipe has one test stage (``no_hallucination=baseline_inverse_crf``);
* ``NAME=PATH``: one fixed run folder holding ``test_per_sample.csv`` (as without ``--test``).

A run is never compared with itself, and a run for which a relative reference does not resolve
(a baseline has no ``@untrained`` stage) is left out of that reference's counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.recipe import RUN_RECORD, STAGE_RECORD
from hdrlab.report.scenes import (
    PER_SAMPLE,
    SceneComparison,
    SceneTable,
    _run_labels,
    check_scenes,
    pair,
    read_per_sample,
)

__all__ = [
    "TEST_METRIC",
    "TestRun",
    "compare_test_scenes",
    "describe_test_run",
    "discover_test_runs",
    "read_test_runs",
    "resolve_reference",
    "test_records",
    "training_curves",
]

#: The main metric of ``hdrlab compare --test``.
TEST_METRIC = "test/pu21_psnr"


@dataclass
class TestRun:
    """One test run: its row label, seed and per-scene table.

    Attributes:
        path: The run folder.
        label: Row label (``<recipe>/<stage>`` for recipe stages).
        seed: ``seed_everything`` of its config (``None`` when unknown).
        recipe_run: The recipe run folder holding it (``None`` outside recipes).
        table: Its :class:`SceneTable`; ``table.label`` names label and seed.
        described: What the report's config differences show of it (:func:`describe_test_run`).
    """

    path: Path
    label: str
    seed: Any
    recipe_run: Path | None
    table: SceneTable
    described: dict[str, Any] = field(default_factory=dict)


def discover_test_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Folders holding ``test_per_sample.csv`` among / under ``paths`` (sorted, de-duplicated).

    Raises:
        HDRIOError: A path is not a folder, or holds no test run.
    """
    found: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise HDRIOError(f"{path} is not a folder; pass test run folders, recipe runs or sweep folders")
        runs = [path] if (path / PER_SAMPLE).is_file() else sorted(p.parent for p in path.rglob(PER_SAMPLE))
        if not runs:
            raise HDRIOError(f"{path} holds no {PER_SAMPLE}; score runs with `hdrlab test` (or a recipe's "
                             "test stage) first, or compare validation metrics without --test")
        found.update(p.resolve() for p in runs)
    return sorted(found)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_test_runs(folders: Sequence[Path]) -> list[TestRun]:
    """Read test runs (:func:`discover_test_runs`): label, seed, per-scene values."""
    from hdrlab.sweep.compare import read_run_config

    tails = dict(zip(folders, _run_labels(list(folders))))
    runs = []
    for folder in folders:
        record = _read_json(folder / STAGE_RECORD)
        recipe, stage = record.get("recipe"), record.get("stage")
        in_recipe = isinstance(recipe, str) and isinstance(stage, str)
        label = f"{recipe}/{stage}" if in_recipe else tails[folder]
        config = read_run_config(folder)
        seed = config.get("seed_everything")
        runs.append(TestRun(folder, label, seed, folder.parent if in_recipe else None,
                            SceneTable(label, folder, read_per_sample(folder / PER_SAMPLE)),
                            describe_test_run(label, config, record if in_recipe else None,
                                              _read_json(folder.parent / RUN_RECORD) if in_recipe else None)))
    several = len({r.seed for r in runs}) > 1
    keys: dict[str, int] = {}
    for r in runs:  # unique table labels: label (seed N); repeated label+seed pairs get a counter
        text = f"{r.label} (seed {r.seed})" if several or r.seed not in (None, 0) else r.label
        keys[text] = keys.get(text, 0) + 1
        r.table.label = text if keys[text] == 1 else f"{text} #{keys[text]}"
    return runs


def describe_test_run(label: str, config: Mapping[str, Any], stage: Mapping[str, Any] | None,
                      recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings of a test run that the report's config differences compare.

    A recipe's test stage (``stage``: its ``recipe_stage.json``, ``recipe``: the recipe run's
    ``recipe.json``) is described by its recipe, the recipe's total budget and overrides, and the
    stage's checkpoint (``initial weights`` without one), config files and arguments
    (``stage.args.<key>``); a plain test run by its flattened config. Both add ``method`` (the row
    label) and ``seed_everything``.
    """
    out: dict[str, Any] = {"method": label, "seed_everything": config.get("seed_everything")}
    if stage is None:
        return {**config, **out}
    out["recipe"] = stage.get("recipe")
    if recipe:
        out["recipe.max_samples"] = recipe.get("max_samples")
        out["recipe.overrides"] = " ".join(recipe.get("overrides") or []) or None
    out["stage.checkpoint"] = stage.get("ckpt") or "initial weights"
    out["stage.configs"] = list(stage.get("config") or [])
    for key, value in sorted((stage.get("args") or {}).items()):
        out[f"stage.args.{key}"] = value
    return out


def test_records(runs: Sequence[TestRun]) -> list[Any]:
    """Run records for :func:`hdrlab.sweep.compare.compare_runs`: config ``{"method": label}``,
    metrics ``test/<column>`` = mean over the scenes with a finite value, status ``finished``;
    ``scenes`` holds the per-scene values for the intervals of :mod:`hdrlab.report.tables`."""
    from hdrlab.sweep.compare import RunRecord

    records = []
    for r in runs:
        metrics, scenes = {}, {}
        for column in r.table.metrics:
            values = {s: v[column] for s, v in r.table.values.items() if math.isfinite(v.get(column, math.nan))}
            if values:
                metrics[f"test/{column}"] = sum(values.values()) / len(values)
                scenes[f"test/{column}"] = values
        records.append(RunRecord(path=r.path, config={"method": r.label}, metrics=metrics, status="finished",
                                 seed=r.seed, scenes=scenes, name=r.label, described=r.described))
    return records


def resolve_reference(name: str, target: str, run: TestRun, runs: Sequence[TestRun]) -> TestRun | None:
    """The reference run of ``run`` for ``NAME=TARGET`` with a relative target (module docstring).

    Returns:
        The matching test run, or ``None`` when it does not resolve for this run.

    Raises:
        ConfigError: ``LABEL`` matches no run at all, or several runs of one seed.
    """
    if target.startswith("@"):
        if run.recipe_run is None:
            return None
        stage = run.recipe_run / target[1:]
        return next((r for r in runs if r.path == stage.resolve()), None)
    matches = [r for r in runs if r.label == target or r.label.startswith(f"{target}/")]
    if not matches:
        labels = sorted({r.label for r in runs})
        raise ConfigError(f"--reference {name}={target}: no compared test run is labelled {target!r} (labels: "
                          f"{', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}); pass a label, @STAGE "
                          "or a run folder")
    same_seed = [r for r in matches if r.seed == run.seed]
    if len({r.label for r in matches}) > 1:
        raise ConfigError(f"--reference {name}={target}: several test stages match "
                          f"({', '.join(sorted({r.label for r in matches}))}); name one as RECIPE/STAGE")
    if len(same_seed) > 1:
        raise ConfigError(f"--reference {name}={target}: {len(same_seed)} runs of seed {run.seed} are labelled "
                          f"{same_seed[0].label}; compare one sweep at a time")
    return same_seed[0] if same_seed else None


def compare_test_scenes(runs: Sequence[TestRun], references: Mapping[str, str]) -> SceneComparison | None:
    """Pair every test run with every reference, scene by scene.

    Args:
        runs: :func:`read_test_runs`.
        references: ``NAME -> TARGET`` (``@STAGE``, a run label, or a run folder path).

    Returns:
        ``None`` without references. References given by a relative target appear in the
        comparison with their ``NAME`` and no values of their own (their runs are compared runs).

    Raises:
        ConfigError: A target resolves nowhere, or a run and its reference hold different scenes.
    """
    from hdrlab.report.tables import _order_key

    if not references or not runs:
        return None
    tables: list[SceneTable] = []
    resolved: dict[tuple[str, str], SceneTable] = {}  # (run table label, reference name) -> reference table
    for name, target in references.items():
        folder = Path(target)
        if not target.startswith("@") and folder.is_dir():
            if not (folder / PER_SAMPLE).is_file():
                raise ConfigError(f"--reference {name}={target}: {folder / PER_SAMPLE} does not exist; run "
                                  "`hdrlab test` for that run first")
            fixed = SceneTable(name, folder, read_per_sample(folder / PER_SAMPLE))
            tables.append(fixed)
            for run in runs:
                if run.path != folder.resolve():
                    resolved[(run.table.label, name)] = fixed
            continue
        tables.append(SceneTable(name, Path(target), {}))
        found = False
        for run in runs:
            ref = resolve_reference(name, target, run, runs)
            if ref is not None and ref.path != run.path:
                resolved[(run.table.label, name)] = SceneTable(name, ref.path, ref.table.values)
                found = True
        if not found:
            raise ConfigError(f"--reference {name}={target}: resolves to no other test run of the same recipe run "
                              "or seed" + (f" (no recipe run has a test stage {target[1:]!r})" if target.startswith("@") else ""))
    paired = {}
    metrics: set[str] = set()
    for run in runs:
        for ref in tables:
            ref_table = resolved.get((run.table.label, ref.label))
            if ref_table is None:
                continue
            check_scenes(run.table, ref_table)
            for metric in sorted(set(run.table.metrics) & set(ref_table.metrics)):
                p = pair(run.table, ref_table, metric)
                paired[(run.table.label, ref.label, metric)] = p
                metrics.add(metric)
    main = "pu21_psnr" if any(m.startswith("pu21_psnr") for m in metrics) else "display_psnr"
    return SceneComparison([r.table for r in runs], tables, sorted(metrics, key=lambda m: _order_key(m, main)), paired)


def training_curves(paths: Sequence[str | Path]) -> tuple[list[Any], list[tuple[str, str]]]:
    """The training runs of the compared recipe runs, for the report's curves: every fit stage
    folder (``recipe_stage.json`` with ``run: fit`` and a ``metrics.csv``) under ``paths``, labelled
    ``<recipe>/<stage>`` (one colour per label, seeds as repeats), and the validation metrics they
    logged (``val/pu21_psnr``, ``val/display_psnr``).

    Returns:
        ``(runs, val_metrics)`` for :func:`hdrlab.sweep.compare.curve_figures`.
    """
    from hdrlab.report.curves import read_history

    folders: set[Path] = set()
    for given in paths:
        for record in Path(given).rglob(STAGE_RECORD):
            data = _read_json(record)
            if data.get("run", "fit") == "fit" and (record.parent / "metrics.csv").is_file():
                folders.add(record.parent.resolve())
    labelled = []
    for folder in sorted(folders):
        data = _read_json(folder / STAGE_RECORD)
        labelled.append((f"{data.get('recipe')}/{data.get('stage')}", read_history(folder / "metrics.csv")))
    order = sorted({label for label, _ in labelled})
    counts = {label: sum(1 for other, _ in labelled if other == label) for label in order}
    runs = [(label + (f" ({counts[label]} seeds)" if counts[label] > 1 else ""), order.index(label), False, history)
            for label, history in labelled]
    val_metrics = [(m, f"Validation {m} (training runs that logged it)") for m in ("val/pu21_psnr", "val/display_psnr")
                   if any(m in h.series for *_, h in runs)]
    return runs, val_metrics
