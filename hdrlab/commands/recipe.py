"""``hdrlab recipe FILE``: run a multi-stage training recipe as chained ``hdrlab fit`` runs.

Usage::

    hdrlab recipe experiments/recipes/singlehdr_stagewise.yaml [--runs_root runs]
                  [--run_id ID | --run_dir DIR] [--seed N] [--dry_run] [-- FIT_ARG ...]
    hdrlab recipe --recipe=FILE --seed=N [FIT_ARG ...] --run_dir DIR      (as a sweep trial runs it)

* Each stage of the recipe is one ``hdrlab fit`` (a ``run: test`` stage: one ``hdrlab test``) into ``<run_dir>/<stage name>/`` (default
  ``run_dir``: ``<runs_root>/<recipe name>/<run_id>``, ``run_id`` time-based unless given), in
  order; ``${stage:NAME.last}`` / ``${stage:NAME.best}`` in a stage's ``args`` become the absolute
  path of an earlier stage's ``checkpoints/last.ckpt`` / ``best.ckpt`` when the stage starts.
* ``--seed N``: the run's seed, ``--seed_everything N --data.init_args.seed N`` for every stage
  (weights and training data), before the other arguments.
* ``--recipe FILE``: the recipe, instead of the first argument (the form a sweep's ``${args}`` gives).
* ``-- FIT_ARG ...``: appended to every stage's fit after the stage's own options (they win), e.g.
  ``-- --config experiments/overrides/tiny.yaml --wandb disabled``. A ``--max_samples N`` there
  is the budget of the whole recipe: split over the fit stages by their ``share`` (equal parts
  when no stage has one), rounded to whole samples by largest remainder so the parts add up to
  ``N``. Options ``hdrlab recipe`` does not know are taken as such arguments too, so a sweep trial
  (``hdrlab recipe ${args}`` plus the sweep's overrides and ``--run_dir``) needs no ``--``.
* Resume: re-run the same command with the same ``--run_id`` / ``--run_dir``. A stage whose
  ``summary.json`` says ``finished`` is skipped, one with ``checkpoints/last.ckpt`` continues with
  ``--ckpt_path last``, the others start. A started stage whose recorded settings
  (``recipe_stage.json``) differ from this command's is refused: use a new ``--run_id``.
* The whole recipe is validated before the first stage runs (unknown keys, duplicate stage
  names, references to later or unknown stages, missing config files, reserved overrides): one
  error line, exit 2, nothing written. ``--dry_run`` validates and prints each stage's action and
  fit command without running anything.

Format, budget and resume rules in full: :mod:`hdrlab.recipe`. Shipped recipes:
``experiments/recipes/`` (``singlehdr_stagewise.yaml``: SingleHDR's official stage-wise training).

Exit status: 0 when every stage finished, 2 on user errors (one line), a traceback on bugs.
"""

from __future__ import annotations

import argparse
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hdrlab.errors import ConfigError
from hdrlab.recipe import (
    Recipe,
    fit_argv,
    load_recipe,
    parse_overrides,
    plan_run,
    run_recipe,
)

EPILOG = """fit arguments after --:
  appended to every stage's hdrlab fit after the stage's own options, e.g.
  -- --config experiments/overrides/tiny.yaml --max_samples 32 --wandb disabled
  --max_samples N there is the total of the recipe, split over the stages by their share (equal
  parts when no stage has one), rounded by largest remainder so the parts add up to N.
  --run_dir/--run_id/--runs_root/--experiment/--ckpt_path/--keep_best_by/--keep_best_mode are refused.
resume:
  re-run the same command with the same --run_id/--run_dir: finished stages are skipped, an
  interrupted one continues from its checkpoints/last.ckpt; a started stage whose settings
  (recipe_stage.json) differ from this command's is refused (use a new --run_id).
format, placeholders and rules in full: the hdrlab.recipe module docstring."""


def build_parser() -> argparse.ArgumentParser:
    """The ``hdrlab recipe`` argument parser (the recipe file, the first argument, is taken before it)."""
    p = argparse.ArgumentParser(
        prog="hdrlab recipe",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s FILE [--runs_root DIR] [--run_id ID | --run_dir DIR] [--seed N] [--dry_run] [-- FIT_ARG ...]",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--recipe", type=Path, default=None,
                   help="recipe YAML, instead of the first argument (e.g. experiments/recipes/singlehdr_stagewise.yaml)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of every stage: --seed_everything N --data.init_args.seed N (weights and training data)")
    p.add_argument("--runs_root", type=Path, default=Path("runs"), help="parent of recipe folders (default runs)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run_id", default=None, help="run folder name (default: time-based); the same id resumes")
    where.add_argument("--run_dir", type=Path, default=None,
                       help="explicit run folder (overrides runs_root/<recipe name>/run_id)")
    p.add_argument("--dry_run", action="store_true", help="validate and print the stages' fit commands; run nothing")
    return p


@dataclass
class Invocation:
    """A parsed ``hdrlab recipe`` command line: the recipe, its run folder, the normalised fit
    arguments appended to every stage (seed first) and the total budget."""

    recipe: Recipe
    run_dir: Path
    fit_args: list[str]
    total: int | None
    dry_run: bool


def parse_invocation(argv: list[str]) -> Invocation:
    """Parse and validate an ``hdrlab recipe`` command line (module docstring); writes nothing.

    Raises:
        ConfigError: one line (recipe file, overrides, budget).
    """
    from hdrlab.sweep.overrides import checkout_root, split_overrides

    own, overrides = split_overrides(argv)
    file = Path(own.pop(0)) if own and not own[0].startswith("-") else None
    args, unknown = build_parser().parse_known_args(own)
    if (file is None) == (args.recipe is None):
        raise ConfigError("hdrlab recipe: give the recipe file once, as the first argument or as --recipe FILE "
                          "(e.g. hdrlab recipe experiments/recipes/singlehdr_stagewise.yaml)")
    file = file if file is not None else args.recipe
    root = checkout_root()
    if not file.is_absolute() and not file.exists() and root is not None and (root / file).is_file():
        file = root / file  # a repository-relative recipe, from any directory
    recipe = load_recipe(file)
    roots = [recipe.root] + [r for r in [root] if r is not None and r != recipe.root]
    seed = [] if args.seed is None else ["--seed_everything", str(args.seed), "--data.init_args.seed", str(args.seed)]
    fit_args, total = parse_overrides([*seed, *unknown, *(overrides or [])], roots)
    if args.run_dir is not None:
        run_dir = args.run_dir
    else:
        run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        run_dir = args.runs_root / recipe.name / run_id
    return Invocation(recipe, run_dir.resolve(), fit_args, total, args.dry_run)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv[: argv.index("--") if "--" in argv else len(argv)]):
        build_parser().print_help()
        return 0
    run = parse_invocation(argv)
    recipe, run_dir, fit_args, total = run.recipe, run.run_dir, run.fit_args, run.total
    if run.dry_run:
        for number, plan in enumerate(plan_run(recipe, run_dir, fit_args, total), 1):
            command = fit_argv(plan.stage, plan.folder, overrides=fit_args, max_samples=plan.max_samples,
                               resume=plan.action == "resume")
            print(f"stage {number}/{len(recipe.stages)} {plan.stage.name}: {plan.action}")
            print(f"  hdrlab {shlex.join(command)}")
        return 0
    print(f"[recipe] {recipe.name}: {len(recipe.stages)} stages into {run_dir} "
          f"(re-run with --run_dir {shlex.quote(str(run_dir))} to resume)", flush=True)
    run_recipe(recipe, run_dir, fit_args, total)
    return 0
