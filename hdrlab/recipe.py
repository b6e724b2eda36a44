"""Multi-stage training recipes: ordered ``hdrlab fit`` runs described as data (``hdrlab recipe``).

A recipe is a YAML file (``experiments/recipes/*.yaml``) naming stages that train one after the
other, each an ordinary ``hdrlab fit`` into ``<run_dir>/<stage name>/``, later stages starting
from earlier stages' checkpoints. SingleHDR's official stage-wise training
(``experiments/recipes/singlehdr_stagewise.yaml``) is the motivating case.

Format::

    name: singlehdr_stagewise        # optional; default: the file's stem (folder runs/<name>/<run_id>)
    description: ...                 # optional, free text
    stages:
      - name: dequantization         # folder name: letters, digits, _ and -; unique
        config: [experiments/singlehdr.yaml]   # one path or a list, relative to the repository root
        share: 5                     # relative share of a total --max_samples (see below)
        args: {model.init_args.stage: dequantization, trainer.max_steps: 500000}
        keep_best: null              # or {by: val/crf_rmse, mode: min}: also keep checkpoints/best.ckpt
      - name: joint
        config: experiments/singlehdr.yaml
        share: 1
        args:
          model.init_args.stage: joint
          model.init_args.stage_checkpoints: {dequantization: "${stage:dequantization.last}"}

* ``run``: ``fit`` (default: one ``hdrlab fit``) or ``test`` (one ``hdrlab test`` of the held-out
  test split into the stage folder: ``test_per_sample.csv``, scored by ``hdrlab compare --test``).
  A test stage scores ``ckpt`` (a path or ``${stage:NAME.last|best}`` of an earlier fit stage) or,
  without one, the model as its config builds it at the run's seed (a learned method's *untrained
  self*); it has no ``share`` and no ``keep_best``, and a total ``--max_samples`` is split over the
  fit stages only (a recipe of test stages alone ignores it). Held-out comparison recipes:
  ``experiments/recipes/heldout/`` (``sweeps/heldout.yaml``).
* ``args``: fit options as dotted keys without the leading ``--``; each becomes ``--key value``
  (strings as written, booleans ``true``/``false``, ``null``, numbers, mappings and lists as
  JSON). Options the recipe manages itself are refused there (:data:`MANAGED_OPTIONS`).
* ``keep_best``: ``--keep_best_by BY --keep_best_mode MODE`` (mode ``max`` unless given).
* Placeholders ``${stage:NAME.last}`` / ``${stage:NAME.best}``, anywhere inside an ``args`` value,
  name an *earlier* stage's ``checkpoints/last.ckpt`` / ``checkpoints/best.ckpt`` (``best`` only for
  a stage with ``keep_best``); they become absolute paths when the stage starts, and a missing
  file is a one-line :class:`~hdrlab.errors.ConfigError` then.
* ``config`` paths are relative to the repository root: the nearest folder above the recipe file
  that holds ``experiments/`` (else the checkout holding the ``hdrlab`` package), so a recipe runs
  from any directory. Absolute paths are used as they are.

Fit command of a stage, in this order (LightningCLI applies arguments in order, later ones win)::

    fit --config C ... <args> [--keep_best_by BY --keep_best_mode MODE] <overrides>
        [--max_samples PART] --run_dir <run_dir>/<stage> [--ckpt_path last]

Overrides (the arguments after ``--`` of ``hdrlab recipe``) are appended to every stage, after
its own ``args``, so they have the last word (``-- --config experiments/overrides/tiny.yaml``).
Their relative file paths are taken relative to the current directory, else the repository root.
``--run_dir``, ``--run_id``, ``--runs_root``, ``--experiment``, ``--ckpt_path``, ``--keep_best_by``
and ``--keep_best_mode`` are refused there (the recipe sets them per stage).

Test stage command: ``test --config C ... <args> <overrides> --run_dir <run_dir>/<stage>
[--ckpt_path CKPT]`` (no ``--max_samples``). A test stage whose ``summary.json`` says ``finished``
is skipped on a re-run like a fit stage; an unfinished one runs again from the start.

Budget rule (:func:`split_budget`). A ``--max_samples N`` among the overrides (the last one when
given several times) is the budget of the *whole* recipe, not passed through as-is: fit stage ``i``
gets ``N * share_i / sum(shares)`` samples,
rounded to whole samples by largest remainder (ties to the earlier stage) so the parts add up to
exactly ``N``. Either every fit stage has a ``share`` or none has; without shares the fit stages get equal
parts. Every part must be at least 1 sample. A stage stops at the first step that reaches its part
(``hdrlab fit --max_samples``), so it may overshoot by less than one batch. Without a total
``--max_samples`` every stage trains for what its own options say (``trainer.max_steps``).

Resume rule (:func:`plan_run`). Re-running the same command (same ``--run_id`` / ``--run_dir``)
continues the run: a stage whose ``summary.json`` has ``"status": "finished"`` is skipped; one
with ``checkpoints/last.ckpt`` (an interrupted or failed fit) is resumed with ``--ckpt_path
last``; any other (also one whose fit failed before its first checkpoint) is started. Each
stage folder records what it was started with (``recipe_stage.json``: configs, args, keep_best,
overrides and its budget part, placeholders unresolved); a finished or resumable stage whose
record differs from the current recipe and overrides, or that has no record, stops the recipe
before anything runs (use a new ``--run_id``). Stages without a checkpoint follow the current
recipe, so a stage that failed on a bad option runs again once the recipe is fixed.
``<run_dir>/recipe.json`` records the last invocation (recipe, overrides, budget parts).

The whole recipe (keys, names, references, config files, shares, overrides, budget, existing
stage folders) is validated before the first stage runs: errors are one-line
:class:`~hdrlab.errors.ConfigError` and nothing is written.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from hdrlab.errors import ConfigError, HDRLabError

__all__ = [
    "KeepBest",
    "Recipe",
    "RecipeStage",
    "RecipeStageError",
    "StagePlan",
    "default_fit",
    "fit_argv",
    "load_recipe",
    "parse_overrides",
    "parse_recipe",
    "plan_run",
    "recipe_root",
    "resolve_placeholders",
    "run_recipe",
    "split_budget",
    "stage_finished",
]

RECIPE_KEYS: tuple[str, ...] = ("name", "description", "stages")
STAGE_KEYS: tuple[str, ...] = ("name", "description", "run", "config", "share", "args", "keep_best", "ckpt")
#: what a stage runs: ``hdrlab fit`` (trains) or ``hdrlab test`` (scores the held-out test split)
STAGE_RUNS: tuple[str, ...] = ("fit", "test")
KEEP_BEST_KEYS: tuple[str, ...] = ("by", "mode")
#: fit options a recipe sets per stage: refused in a stage's ``args`` (with where to say it instead)
#: and, except ``max_samples`` and ``config``, among the overrides
MANAGED_OPTIONS: dict[str, str] = {
    "run_dir": "each stage runs in <run_dir>/<stage name> (hdrlab recipe --run_dir / --run_id)",
    "run_id": "use hdrlab recipe --run_id",
    "runs_root": "use hdrlab recipe --runs_root",
    "experiment": "the run folder is runs/<recipe name>/<run_id>",
    "ckpt_path": "stages resume from their own last checkpoint; start from an earlier stage with ${stage:NAME.last}",
    "keep_best_by": "use the stage's keep_best: {by: METRIC, mode: max|min}",
    "keep_best_mode": "use the stage's keep_best: {by: METRIC, mode: max|min}",
    "max_samples": "give the stage a share of a total --max_samples after --",
    "config": "use the stage's config list",
}
#: overrides refused after ``--`` (``--max_samples`` is split, ``--config`` appended)
RESERVED_OVERRIDES: tuple[str, ...] = tuple(k for k in MANAGED_OPTIONS if k not in ("max_samples", "config"))
#: placeholder kind -> file inside the referenced stage's folder
CHECKPOINT_FILES: dict[str, str] = {"last": "checkpoints/last.ckpt", "best": "checkpoints/best.ckpt"}
PLACEHOLDER = re.compile(r"\$\{stage:([^{}$]*)\}")
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
#: per-stage record of what the stage was started with
STAGE_RECORD = "recipe_stage.json"
#: per-run record of the last invocation
RUN_RECORD = "recipe.json"


@dataclass(frozen=True)
class KeepBest:
    """``keep_best`` of a stage: ``hdrlab fit --keep_best_by by --keep_best_mode mode``."""

    by: str
    mode: str = "max"


@dataclass(frozen=True)
class RecipeStage:
    """One validated stage: ``config`` holds absolute paths, ``config_as_written`` the recipe's."""

    name: str
    config: tuple[str, ...]
    config_as_written: tuple[str, ...]
    share: float | None
    args: dict[str, Any]
    keep_best: KeepBest | None
    references: tuple[tuple[str, str], ...] = ()
    run: str = "fit"
    ckpt: str | None = None

    @property
    def trains(self) -> bool:
        """Whether the stage is a fit (takes a part of the budget) rather than a test."""
        return self.run == "fit"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (:func:`parse_recipe`)."""

    name: str
    stages: tuple[RecipeStage, ...]
    root: Path
    path: Path | None = None
    description: str = ""

    @property
    def shares(self) -> list[float]:
        """Each fit stage's share (1 when the recipe gives none), in order; test stages have none."""
        return [1.0 if s.share is None else float(s.share) for s in self.stages if s.trains]

    def stage(self, name: str) -> RecipeStage:
        return next(s for s in self.stages if s.name == name)


@dataclass
class StagePlan:
    """What :func:`run_recipe` does with one stage (:func:`plan_run`)."""

    stage: RecipeStage
    folder: Path
    action: str  # "skip" (finished), "resume" (checkpoints/last.ckpt) or "start"
    max_samples: int | None
    record: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------


def recipe_root(path: str | Path | None) -> Path:
    """The folder a recipe's ``config`` paths are relative to: the nearest folder above the recipe
    file holding ``experiments/``, else the checkout holding the ``hdrlab`` package, else the
    current directory."""
    if path is not None:
        for folder in Path(path).resolve().parents:
            if (folder / "experiments").is_dir():
                return folder
    from hdrlab.sweep.overrides import checkout_root

    root = checkout_root()
    return root if root is not None else Path.cwd()


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (:func:`parse_recipe`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe file {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"recipe file {path}: cannot read it ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe file {path}: not valid YAML ({' '.join(str(err).split())})") from None
    return parse_recipe(data, path=path)


def _unknown(keys: Any, allowed: Sequence[str], where: str) -> None:
    unknown = [str(k) for k in keys if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                          f"allowed: {', '.join(allowed)}")


def _placeholders(value: Any) -> list[str]:
    """The insides of every ``${stage:...}`` in ``value`` (strings, nested mappings and lists)."""
    return [inner for text in _strings(value) for inner in PLACEHOLDER.findall(text)]


def _strings(value: Any) -> list[str]:
    """Every string in ``value`` (mapping keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for k, v in value.items() for t in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _strings(v)]
    return []


def _check_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_value(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]")
        return
    raise ConfigError(f"{where}: a {type(value).__name__} value cannot be written as a fit option "
                      "(use strings, numbers, booleans, null, mappings or lists)")


def parse_recipe(data: Any, *, path: str | Path | None = None, root: str | Path | None = None) -> Recipe:
    """Validate a loaded recipe (module docstring) and return it.

    Args:
        data: the YAML document.
        path: the recipe file (for messages, the default name and :func:`recipe_root`).
        root: folder of relative ``config`` paths (default :func:`recipe_root` of ``path``).

    Raises:
        ConfigError: one line naming the recipe, the stage and the problem.
    """
    where = f"recipe {path}" if path is not None else "recipe"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'stages', got {type(data).__name__}")
    _unknown(data.keys(), RECIPE_KEYS, where)
    name = data.get("name", Path(path).stem if path is not None else None)
    if not isinstance(name, str) or not STAGE_NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} must be a folder name (letters, digits, _ and -)")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be text")
    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        raise ConfigError(f"{where}: 'stages' must be a non-empty list of stages")
    base = Path(root) if root is not None else recipe_root(path)

    stages: list[RecipeStage] = []
    seen: list[str] = []
    for index, entry in enumerate(stages_data):
        label = f"{where}: stage {index + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{label}: expected a mapping with name/config/args, got {type(entry).__name__}")
        sname = entry.get("name")
        if not isinstance(sname, str) or not STAGE_NAME.match(sname):
            raise ConfigError(f"{label}: name {sname!r} must be a folder name (letters, digits, _ and -)")
        label = f"{where}: stage '{sname}'"
        _unknown(entry.keys(), STAGE_KEYS, label)
        if sname in seen:
            raise ConfigError(f"{where}: duplicate stage name '{sname}' (stage names are folder names; make them unique)")
        if not isinstance(entry.get("description") or "", str):
            raise ConfigError(f"{label}: description must be text")

        run = entry.get("run", "fit")
        if run not in STAGE_RUNS:
            raise ConfigError(f"{label}: run {run!r} must be fit (train) or test (score the test split)")
        if run == "test":
            for key, why in (("share", "a test takes no part of the training budget"),
                             ("keep_best", "a test keeps no checkpoint")):
                if entry.get(key) is not None:
                    raise ConfigError(f"{label}: a test stage has no {key} ({why}); remove it")
        ckpt = entry.get("ckpt")
        if ckpt is not None and (run != "test" or not isinstance(ckpt, str) or not ckpt):
            raise ConfigError(f"{label}: ckpt is the checkpoint a test stage scores (a path or "
                              "${stage:NAME.last}); " + ("give it as text" if run == "test" else
                                                         "a fit stage starts from earlier stages through its args"))

        config = entry.get("config")
        config_list = [config] if isinstance(config, str) else config
        if not isinstance(config_list, list) or not config_list or not all(isinstance(c, str) and c for c in config_list):
            raise ConfigError(f"{label}: config must be a config file path or a non-empty list of them")
        absolute = []
        for c in config_list:
            file = Path(c) if Path(c).is_absolute() else base / c
            if not file.is_file():
                raise ConfigError(f"{label}: config file {c} not found (relative paths are taken from {base})")
            absolute.append(str(file.resolve()))

        share = entry.get("share")
        if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))
                                  or not math.isfinite(share) or share <= 0):
            raise ConfigError(f"{label}: share {share!r} must be a positive number")

        args = entry.get("args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{label}: args must be a mapping of fit options (dotted keys) to values")
        for key, value in args.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{label}: args key {key!r} must be a dotted option name")
            if key.startswith("-"):
                raise ConfigError(f"{label}: args key {key!r}: write it without the leading '--'")
            if key in MANAGED_OPTIONS:
                raise ConfigError(f"{label}: args may not set {key} ({MANAGED_OPTIONS[key]})")
            _check_value(value, f"{label}: args {key}")

        keep = entry.get("keep_best")
        keep_best = None
        if keep is not None:
            if not isinstance(keep, Mapping):
                raise ConfigError(f"{label}: keep_best must be null or {{by: METRIC, mode: max|min}}")
            _unknown(keep.keys(), KEEP_BEST_KEYS, f"{label}: keep_best")
            by, mode = keep.get("by"), keep.get("mode", "max")
            if not isinstance(by, str) or not by:
                raise ConfigError(f"{label}: keep_best needs 'by', a logged validation metric such as val/crf_rmse")
            if mode not in ("max", "min"):
                raise ConfigError(f"{label}: keep_best mode {mode!r} must be max or min")
            keep_best = KeepBest(by=by, mode=mode)

        references = []
        for inner in _placeholders([dict(args), ckpt]):
            ref, _, kind = inner.rpartition(".")
            text = "${stage:" + inner + "}"
            if not ref or kind not in CHECKPOINT_FILES:
                raise ConfigError(f"{label}: placeholder {text} must be ${{stage:NAME.last}} or ${{stage:NAME.best}}")
            if ref == sname:
                raise ConfigError(f"{label}: placeholder {text} refers to the stage itself; refer to an earlier stage")
            if ref not in seen:
                later = any(isinstance(s, Mapping) and s.get("name") == ref for s in stages_data[index + 1:])
                if later:
                    raise ConfigError(f"{label}: placeholder {text} refers to the later stage '{ref}'; "
                                      "stages run in order, so refer only to earlier stages")
                raise ConfigError(f"{label}: placeholder {text} refers to an unknown stage '{ref}' "
                                  f"(stages before it: {', '.join(seen) or 'none'})")
            if not stages[seen.index(ref)].trains:
                raise ConfigError(f"{label}: placeholder {text} refers to the test stage '{ref}', which writes no "
                                  "checkpoint; refer to a fit stage")
            if kind == "best" and stages[seen.index(ref)].keep_best is None:
                raise ConfigError(f"{label}: placeholder {text} needs stage '{ref}' to keep its best checkpoint "
                                  "(keep_best: {by: METRIC, mode: max|min}); or use .last")
            references.append((ref, kind))
        if sum(text.count("${stage:") for text in _strings([dict(args), ckpt])) != len(references):
            raise ConfigError(f"{label}: malformed ${{stage:...}} placeholder in args or ckpt (missing '}}'?)")

        stages.append(RecipeStage(
            name=sname, config=tuple(absolute), config_as_written=tuple(config_list),
            share=None if share is None else float(share), args=dict(args), keep_best=keep_best,
            references=tuple(references), run=run, ckpt=ckpt,
        ))
        seen.append(sname)

    fits = [s for s in stages if s.trains]
    with_share = [s.name for s in fits if s.share is not None]
    if with_share and len(with_share) != len(fits):
        missing = [s.name for s in fits if s.share is None]
        raise ConfigError(f"{where}: give every fit stage a share or none (stages without one: {', '.join(missing)})")
    return Recipe(name=name, stages=tuple(stages), root=base, path=None if path is None else Path(path),
                  description=description)


# --------------------------------------------------------------------------------------------
# budget, overrides, placeholders, command lines
# --------------------------------------------------------------------------------------------


def split_budget(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` samples over stages in proportion to ``shares`` (module docstring).

    Largest remainder: each stage gets ``floor(total * share / sum)``, then the samples left over
    go one each to the largest fractional parts (ties to the earlier stage), so the parts add up to
    ``total``. Exact arithmetic (fractions of the shares as written).

    Raises:
        ConfigError: ``total`` is not positive or some stage would get 0 samples.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        raise ConfigError(f"--max_samples {total!r} must be a positive number of samples")
    fractions = [Fraction(s).limit_denominator(10**6) for s in shares]
    whole = sum(fractions)
    exact = [total * f / whole for f in fractions]
    parts = [math.floor(e) for e in exact]
    left = total - sum(parts)
    order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    if min(parts) < 1:
        raise ConfigError(f"--max_samples {total} is too small to give every stage at least one sample "
                          f"(shares {[float(s) for s in shares]} give {parts})")
    return parts


def _flag(token: str) -> tuple[str, str | None] | None:
    """``--name`` / ``--name=value`` -> (name, value or None); anything else None."""
    if not token.startswith("--") or token == "--":
        return None
    name, eq, value = token[2:].partition("=")
    return name, (value if eq else None)


def parse_overrides(overrides: Sequence[str], roots: Sequence[Path] = ()) -> tuple[list[str], int | None]:
    """The overrides to append to every stage, and the recipe's total ``--max_samples`` (or None;
    the last one when given several times, as for ``hdrlab fit``).

    Relative file paths become absolute (relative to the current directory, else under ``roots``:
    :func:`hdrlab.sweep.overrides.normalize_overrides`).

    Raises:
        ConfigError: a reserved option (:data:`RESERVED_OVERRIDES`), a repeated or bad ``--max_samples``.
    """
    from hdrlab.sweep.overrides import normalize_overrides

    tokens = list(overrides)
    kept: list[str] = []
    total: int | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag = _flag(token)
        if flag is not None and flag[0] in RESERVED_OVERRIDES:
            raise ConfigError(f"override --{flag[0]} is not allowed after --: {MANAGED_OPTIONS[flag[0]]}")
        if flag is not None and flag[0] == "max_samples":
            value = flag[1]
            if value is None:
                if i + 1 >= len(tokens):
                    raise ConfigError("override --max_samples needs a value (the total samples of the recipe)")
                value, i = tokens[i + 1], i + 1
            try:
                total = int(value)
            except ValueError:
                raise ConfigError(f"override --max_samples {value!r} must be a whole number of samples") from None
            if total <= 0:
                raise ConfigError(f"override --max_samples {value!r} must be a positive number of samples")
        else:
            kept.append(token)
        i += 1
    return normalize_overrides(kept, list(roots)), total


def _option_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def resolve_placeholders(value: Any, folders: Mapping[str, Path], *, stage: str = "?") -> Any:
    """``value`` with every ``${stage:NAME.KIND}`` replaced by the absolute path of that file.

    Args:
        value: an ``args`` value (strings, nested mappings and lists).
        folders: stage name -> its run folder.
        stage: the stage being started (for the message).

    Raises:
        ConfigError: the referenced checkpoint does not exist (yet).
    """
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            ref, _, kind = match.group(1).rpartition(".")
            file = Path(folders[ref]) / CHECKPOINT_FILES[kind]
            if not file.is_file():
                hint = (" (did it run any validation? best.ckpt needs its keep_best metric logged)" if kind == "best"
                        else " (did it train at least one step?)")
                raise ConfigError(f"stage '{stage}': {match.group(0)} needs {file}, which does not exist{hint}")
            return str(file.resolve())

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, Mapping):
        return {resolve_placeholders(k, folders, stage=stage): resolve_placeholders(v, folders, stage=stage)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve_placeholders(v, folders, stage=stage) for v in value]
    return value


def fit_argv(stage: RecipeStage, folder: Path, *, overrides: Sequence[str] = (), max_samples: int | None = None,
             resume: bool = False, folders: Mapping[str, Path] | None = None) -> list[str]:
    """The ``hdrlab fit`` (``hdrlab test`` for a test stage) arguments of a stage (module docstring
    for the order).

    Args:
        folders: stage name -> run folder, to resolve placeholders (None: leave them as written).
    """
    if not stage.trains:
        return test_argv(stage, folder, overrides=overrides, folders=folders)
    argv = ["fit"]
    for config in stage.config:
        argv += ["--config", config]
    for key, value in stage.args.items():
        if folders is not None:
            value = resolve_placeholders(value, folders, stage=stage.name)
        argv += [f"--{key}", _option_value(value)]
    if stage.keep_best is not None:
        argv += ["--keep_best_by", stage.keep_best.by, "--keep_best_mode", stage.keep_best.mode]
    argv += list(overrides)
    if max_samples is not None:
        argv += ["--max_samples", str(max_samples)]
    argv += ["--run_dir", str(folder)]
    if resume:
        argv += ["--ckpt_path", "last"]
    return argv


def test_argv(stage: RecipeStage, folder: Path, *, overrides: Sequence[str] = (),
              folders: Mapping[str, Path] | None = None) -> list[str]:
    """The ``hdrlab test`` arguments of a test stage::

        test --config C ... <args> <overrides> --run_dir <run_dir>/<stage> [--ckpt_path CKPT]

    Without ``ckpt`` the test scores the model as the config builds it (its initial weights for
    the run's seed: a learned method's *untrained self*).
    """
    argv = ["test"]
    for config in stage.config:
        argv += ["--config", config]
    for key, value in stage.args.items():
        if folders is not None:
            value = resolve_placeholders(value, folders, stage=stage.name)
        argv += [f"--{key}", _option_value(value)]
    argv += list(overrides)
    argv += ["--run_dir", str(folder)]
    if stage.ckpt is not None:
        ckpt = stage.ckpt if folders is None else resolve_placeholders(stage.ckpt, folders, stage=stage.name)
        argv += ["--ckpt_path", ckpt]
    return argv


# --------------------------------------------------------------------------------------------
# planning and running
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stage_finished(folder: Path) -> bool:
    """Whether a stage's ``summary.json`` says its fit finished."""
    summary = _read_json(Path(folder) / "summary.json")
    return bool(summary) and summary.get("status") == "finished"


def _stage_record(recipe: Recipe, stage: RecipeStage, overrides: Sequence[str], part: int | None) -> dict[str, Any]:
    record = {
        "recipe": recipe.name,
        "stage": stage.name,
        "run": stage.run,
        "ckpt": stage.ckpt,
        "config": list(stage.config_as_written),
        "args": stage.args,
        "keep_best": None if stage.keep_best is None else {"by": stage.keep_best.by, "mode": stage.keep_best.mode},
        "overrides": list(overrides),
        "max_samples": part,
    }
    return json.loads(json.dumps(record))  # as it reads back from the file


def plan_run(recipe: Recipe, run_dir: str | Path, overrides: Sequence[str] = (),
             total_samples: int | None = None) -> list[StagePlan]:
    """What each stage will do (module docstring, resume rule); reads only, writes nothing.

    Args:
        overrides: the normalised overrides without the total budget (:func:`parse_overrides`).
        total_samples: the recipe's total ``--max_samples`` (None: no budget).

    Raises:
        ConfigError: the budget cannot be split, or a stage folder was started with other settings
            or not by a recipe.
    """
    run_dir = Path(run_dir).resolve()
    fit_parts = iter(split_budget(total_samples, recipe.shares) if total_samples is not None and recipe.shares
                     else [None] * len(recipe.shares))  # a recipe of test stages only ignores a budget
    parts = [next(fit_parts) if stage.trains else None for stage in recipe.stages]
    plans = []
    for stage, part in zip(recipe.stages, parts):
        folder = run_dir / stage.name
        record = _stage_record(recipe, stage, overrides, part)
        if stage_finished(folder):
            action = "skip"
        elif stage.trains and (folder / CHECKPOINT_FILES["last"]).is_file():
            action = "resume"
        else:
            action = "start"  # also a folder whose fit failed before its first checkpoint: started afresh
        if action != "start":
            old = _read_json(folder / STAGE_RECORD)
            if old is None:
                raise ConfigError(f"stage folder {folder} holds a run not made by hdrlab recipe (no {STAGE_RECORD}); "
                                  "move it away or use a new --run_id")
            changed = [k for k in record if old.get(k) != record[k]]
            if changed:
                raise ConfigError(f"stage '{stage.name}' in {folder} was started with different {', '.join(changed)} "
                                  f"(recorded in {STAGE_RECORD}); re-run with the same recipe and overrides to "
                                  "continue it, or use a new --run_id")
        plans.append(StagePlan(stage=stage, folder=folder, action=action, max_samples=part, record=record))
    return plans


def _finish_wandb() -> None:
    """End a W&B run a stage left open in this process (the next stage's logger would reuse it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def default_fit(argv: list[str]) -> None:
    """Run one ``hdrlab fit`` (with the ``--memory_budget`` out-of-memory step-down) or, for
    ``argv[0] == "test"``, one ``hdrlab test`` in this process, exactly as ``hdrlab ARGV`` typed in a
    shell: ``sys.argv`` is the stage's command line while it runs (LightningCLI reads it;
    ``summary.json`` records it as the stage's ``argv``)."""
    from hdrlab.cli import build_cli, fit_with_oom_step_down

    saved = sys.argv
    sys.argv = [saved[0] if saved else "hdrlab", *argv]
    try:
        if argv[0] == "test":
            build_cli(None)
        else:
            fit_with_oom_step_down(None)
    finally:
        sys.argv = saved
        _finish_wandb()


class RecipeStageError(HDRLabError):
    """A stage's fit failed with a user error (bad option, missing file, ...)."""


def _log(message: str) -> None:
    print(f"[recipe] {message}", flush=True)


def run_recipe(recipe: Recipe, run_dir: str | Path, overrides: Sequence[str] = (), total_samples: int | None = None,
               *, fit: Callable[[list[str]], Any] | None = None,
               log: Callable[[str], Any] = _log) -> list[StagePlan]:
    """Run a recipe's stages in order into ``run_dir`` (module docstring).

    Args:
        recipe: :func:`load_recipe`.
        run_dir: the recipe's run folder (stage ``S`` runs in ``run_dir/S``).
        overrides: normalised overrides without the total budget (:func:`parse_overrides`).
        total_samples: the recipe's total ``--max_samples``.
        fit: runs one fit from its argument list (default :func:`default_fit`, in this process).
        log: progress lines.

    Returns:
        The plans, as they were at the start.

    Raises:
        ConfigError: validation (before anything is written) or a missing referenced checkpoint.
        RecipeStageError: a stage's fit failed with a user error (one line).
    """
    fit = default_fit if fit is None else fit
    run_dir = Path(run_dir).resolve()
    plans = plan_run(recipe, run_dir, overrides, total_samples)
    folders = {p.stage.name: p.folder for p in plans}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_RECORD).write_text(json.dumps({
        "recipe": recipe.name,
        "recipe_file": None if recipe.path is None else str(recipe.path.resolve()),
        "overrides": list(overrides),
        "max_samples": total_samples,
        "stages": [{"name": p.stage.name, "max_samples": p.max_samples} for p in plans],
    }, indent=2) + "\n")
    start = time.perf_counter()
    for number, plan in enumerate(plans, 1):
        head = f"stage {number}/{len(plans)} {plan.stage.name}"
        if plan.action == "skip":
            log(f"{head}: finished before, skipped ({plan.folder})")
            continue
        argv = fit_argv(plan.stage, plan.folder, overrides=overrides, max_samples=plan.max_samples,
                        resume=plan.action == "resume", folders=folders)  # ConfigError before writing
        plan.folder.mkdir(parents=True, exist_ok=True)
        (plan.folder / STAGE_RECORD).write_text(json.dumps(plan.record, indent=2) + "\n")
        budget = "" if plan.max_samples is None else f", {plan.max_samples} samples"
        log(f"{head}: {'resuming from checkpoints/last.ckpt' if plan.action == 'resume' else 'starting'}"
            f"{budget} -> {plan.folder}")
        log(f"  hdrlab {shlex.join(argv)}")
        began = time.perf_counter()
        try:
            fit(argv)
        except Exception as err:  # user errors become one line, bugs keep their traceback
            from hdrlab.cli import user_error_message

            message = user_error_message(err)
            if message is None:
                log(f"{head} failed; fix the cause and re-run the same command to continue from its last checkpoint")
                raise
            raise RecipeStageError(f"stage '{plan.stage.name}' failed: {message}") from err
        except BaseException:
            log(f"{head} interrupted; re-run the same command to continue from its last checkpoint")
            raise
        if not stage_finished(plan.folder):
            summary = _read_json(plan.folder / "summary.json") or {}
            raise RecipeStageError(f"stage '{plan.stage.name}' ended without finishing (summary.json status "
                                   f"{summary.get('status')!r}); re-run the same command to continue it")
        log(f"{head}: finished in {time.perf_counter() - began:.1f} s")
    log(f"all {len(plans)} stages finished in {time.perf_counter() - start:.1f} s: {run_dir}")
    return plans
