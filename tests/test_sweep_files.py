"""The shipped sweep files: each validates with the ``sweeps`` engine, and every grid point's
expanded ``command:`` parses through hdrlab's LightningCLI parser in-process (no model built).

The parser is LightningCLI's own (``hdrlab.cli.build_cli``, with hdrlab's extra arguments): it is
captured once by intercepting :meth:`LightningCLI.parse_arguments`, so nothing is instantiated;
jsonargparse then checks every key against the class signatures and every value against the
type hints (unknown keys and bad values exit with status 2).
"""

from __future__ import annotations

import argparse
import inspect
import contextlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from hdrlab.sweep.config import expand_command, grid_points, load_sweep

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
EXPECTED = {"losses", "mask_thresholds", "dataset_size", "stage_combinations", "smoke", "heldout", "seed_combinations"}
PREFIX = ["/usr/bin/env", "python", "-m", "hdrlab", "fit", "--config"]
#: sweeps whose trials run a recipe (``hdrlab recipe ${args}``) instead of one fit
RECIPE_COMMAND = ["${env}", "${interpreter}", "-m", "hdrlab", "recipe", "${args}"]


def _is_recipe_sweep(spec: Any) -> bool:
    return [str(c) for c in spec.command] == RECIPE_COMMAND


@pytest.fixture(scope="module")
def cli_parser() -> Any:
    """hdrlab's LightningCLI parser (all subcommands), built without parsing or instantiating."""
    from hdrlab.sweep.check import cli_parser as build_parser

    return build_parser()


def parse_fit(parser: Any, argv: list[str]) -> Any:
    """Parse ``hdrlab`` argv (``fit --config ...``) in the repository; fail with jsonargparse's message."""
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)  # sweep commands name experiments/... relative to the repository, like wandb agent
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except (SystemExit, argparse.ArgumentError) as exc:  # hdrlab's parser raises instead of exiting
        raise AssertionError(f"CLI rejected {argv}:\n{err.getvalue()[-1500:]}{exc}") from exc
    finally:
        os.chdir(cwd)


def test_all_sweep_files_shipped() -> None:
    assert {p.stem for p in SWEEP_FILES} >= EXPECTED


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_validates_and_uses_the_module_command(path: Path) -> None:
    spec = load_sweep(path)  # sweeps.SweepConfig + a dry-run next_run (raises ConfigError)
    assert spec.method == "grid"
    command = [str(c) for c in spec.command]
    if _is_recipe_sweep(spec):
        for recipe in spec.raw["parameters"]["recipe"]["values"]:
            assert recipe.startswith("experiments/recipes/") and (REPO / recipe).is_file()
        return
    if "config" in spec.raw["parameters"]:
        # the experiment is a sweep value (sweeps/losses.yaml, tests/test_losses_sweep.py); the fixed
        # --config holds shared settings only
        for variant in spec.raw["parameters"]["config"]["values"]:
            if "config" in variant:  # a variant naming its experiment (losses.yaml); else overrides of the fixed one
                assert variant["config"].startswith("experiments/") and (REPO / variant["config"]).is_file()
    assert command[:7] == ["${env}", "${interpreter}", "-m", "hdrlab", "fit", "--config", command[6]]
    assert command[6].startswith("experiments/") and (REPO / command[6]).is_file()
    assert command[-1] == "${args}"
    assert ("experiments/overrides/tiny.yaml" in command) == (path.stem == "smoke")


def _argv(spec: Any, point: dict[str, Any]) -> list[str]:
    argv = expand_command(spec.command, point, interpreter="python", environ={})
    assert argv[:6] == PREFIX
    return argv[4:]  # from "fit" on: what hdrlab.cli.main passes to LightningCLI


def _get(cfg: Any, key: str) -> Any:
    value = cfg.fit[key]
    return value.class_path if hasattr(value, "class_path") else value


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_grid_point_parses_through_the_cli(path: Path, cli_parser: Any, tmp_path: Path) -> None:
    spec = load_sweep(path)
    points = grid_points(spec)
    assert len(points) >= 2
    if _is_recipe_sweep(spec):
        _check_recipe_points(spec, points, cli_parser, tmp_path)
        return
    for point in points:
        cfg = parse_fit(cli_parser, _argv(spec, point))
        for key, value in point.items():
            if key == "config":  # a whole variant; compared key by key in tests/test_losses_sweep.py
                continue
            got = _get(cfg, key)
            assert got == value or (isinstance(value, list) and list(got) == value), (path.stem, key, got, value)


def _check_recipe_points(spec: Any, points: list[dict[str, Any]], cli_parser: Any, tmp_path: Path) -> None:
    """Each grid point as ``hdrlab recipe`` reads it (plus the agent's ``--run_dir``): every stage's
    fit / test command parses through the CLI with the point's seed and the stage's budget part
    (``${stage:...}`` placeholders resolved to empty stand-in checkpoint files)."""
    from hdrlab.commands.recipe import parse_invocation
    from hdrlab.recipe import fit_argv, plan_run

    for point in points:
        argv = expand_command(spec.command, point, interpreter="python", environ={})
        assert argv[:5] == ["/usr/bin/env", "python", "-m", "hdrlab", "recipe"]
        run = parse_invocation([*argv[5:], "--run_dir", str(tmp_path / f"{Path(point['recipe']).stem}_s{point['seed']}")])
        assert run.recipe.path is not None and str(run.recipe.path).endswith(point["recipe"])
        plans = plan_run(run.recipe, run.run_dir, run.fit_args, run.total)
        folders = {p.stage.name: p.folder for p in plans}
        for plan in plans:
            if plan.stage.trains:
                (plan.folder / "checkpoints").mkdir(parents=True, exist_ok=True)
                for name in ("last.ckpt", "best.ckpt"):
                    (plan.folder / "checkpoints" / name).touch()
        fits = [p for p in plans if p.stage.trains]
        assert sum(p.max_samples for p in fits) == (point["max_samples"] if fits else 0)
        for plan in plans:
            stage_argv = fit_argv(plan.stage, plan.folder, overrides=run.fit_args, max_samples=plan.max_samples,
                                  folders=folders)
            cfg = parse_fit(cli_parser, stage_argv)[stage_argv[0]]
            assert cfg.seed_everything == point["seed"] and cfg.data.init_args.seed == point["seed"]
            assert cfg.data.init_args.num_test_scenes == 20 and cfg.data.init_args.scene_size == 128


def test_grid_sizes_and_axes() -> None:
    sizes = {p.stem: len(grid_points(load_sweep(p))) for p in SWEEP_FILES}
    assert sizes["losses"] == 58 * 2  # variants x seeds (tests/test_losses_sweep.py)
    assert sizes["mask_thresholds"] == 15 * 2  # variants x seeds (test_mask_threshold_variants_set_their_threshold)
    assert sizes["dataset_size"] == 11 * 4 * 3  # experiments x scene counts x seeds
    assert sizes["smoke"] == 2
    assert sizes["heldout"] == 6 * 2  # recipes x seeds
    size_points = grid_points(load_sweep(REPO / "sweeps/dataset_size.yaml"))
    assert sorted({p["data.init_args.num_train_scenes"] for p in size_points}) == [15, 60, 240, 1000]
    assert {p["max_samples"] for p in size_points} == {320000}  # equal samples seen
    # no step or epoch cap ends a small training set before the sample budget
    assert {(p["trainer.max_steps"], p["trainer.max_epochs"]) for p in size_points} == {(-1, -1)}
    experiments = sorted({p["config"]["config"] for p in size_points})
    assert experiments == sorted(f"experiments/{e}.yaml" for e in ("singlehdr", "drtmo", "deep_recursive", "kim2021", "cevr",
                                                                     "kalantari2017", "wu2018", "ahdrnet",
                                                                     "expandnet", "hdrcnn", "duhdr"))
    # every (experiment, scene count, seed) once: the scene axis is crossed with every experiment
    assert len({(p["config"]["config"], p["data.init_args.num_train_scenes"], p["seed_everything"])
                for p in size_points}) == len(size_points)


def test_mask_threshold_variants_set_their_threshold(cli_parser: Any) -> None:
    """Every method with an exposure-mask threshold option joins sweeps/mask_thresholds.yaml with its
    official value among the grid's; each variant parses to its experiment with that value."""
    spec = load_sweep(REPO / "sweeps/mask_thresholds.yaml")
    axes: dict[tuple[str, str], list[float]] = {}
    for variant in spec.raw["parameters"]["config"]["values"]:
        (key, value), = [(k, v) for k, v in variant.items() if k != "config"]
        axes.setdefault((variant["config"], key), []).append(value)
        cfg = parse_fit(cli_parser, ["fit", "--config", "experiments/overrides/sweep_mask_thresholds.yaml",
                                     f"--config={variant}"])
        assert cfg.fit.experiment == "mask_thresholds" and cfg.fit.model.init_args[key.rsplit(".", 1)[1]] == value
    assert axes == {
        ("experiments/le2023.yaml", "model.init_args.clip_threshold"): [0.80, 0.85, 0.88, 0.90, 0.95, 0.98],
        ("experiments/singlehdr.yaml", "model.init_args.threshold"): [0.80, 0.88, 0.95],
        ("experiments/duhdr.yaml", "model.init_args.threshold"): [0.80, 0.88, 0.95],
        ("experiments/hdrcnn.yaml", "model.init_args.tau"): [0.85, 0.90, 0.95],
    }


def test_dataset_size_variants_parse_to_their_experiment(cli_parser: Any) -> None:
    """Each experiment of sweeps/dataset_size.yaml, as the agent renders it, parses to exactly
    ``fit --config experiments/X.yaml`` plus the sweep's parameters and the fixed config's
    step-based validation: no key of another experiment leaks in, and the sweep's step / epoch /
    sample limits override the experiment file's."""
    spec = load_sweep(REPO / "sweeps/dataset_size.yaml")
    for point in grid_points(spec):
        if (point["data.init_args.num_train_scenes"], point["seed_everything"]) != (15, 0):
            continue
        variant = point["config"]
        got = parse_fit(cli_parser, _argv(spec, point)).fit.as_dict()
        extra = [f"--{k}={v}" for k, v in variant.items() if k != "config"]
        extra += [f"--{k}={v}" for k, v in point.items() if k != "config"]
        want = parse_fit(cli_parser, ["fit", "--config", variant["config"], *extra]).fit.as_dict()
        assert got.pop("experiment") == "dataset_size"
        for cfg in (got, want):
            cfg.pop("config", None)
            cfg.pop("experiment", None)
        # the fixed config file's step-based validation (no experiment file sets it)
        assert got["trainer"]["check_val_every_n_epoch"] is None and got["trainer"]["val_check_interval"] == 2000
        for key in ("check_val_every_n_epoch", "val_check_interval"):
            got["trainer"].pop(key)
            want["trainer"].pop(key)
        assert got == want, variant
        assert got["trainer"]["max_epochs"] == -1 and got["trainer"]["max_steps"] == -1
        assert got["max_samples"] == 320000 and got["data"]["init_args"]["num_train_scenes"] == 15
        if variant["config"].endswith("deep_recursive.yaml"):  # epoch schedule: constant rate
            assert got["model"]["init_args"]["lr_decay_factor"] == 1.0


def test_stage_combinations_cover_every_shipped_generator_and_merger() -> None:
    import hdrlab.models.generators as generators
    import hdrlab.models.mergers as mergers

    shipped_gens = {f"hdrlab.models.generators.{n}" for n in generators.__all__
                    if isinstance(getattr(generators, n), type) and issubclass(getattr(generators, n), generators.StackGenerator)
                    and getattr(generators, n) is not generators.StackGenerator}
    shipped_mergers = {f"hdrlab.models.mergers.{n}" for n in mergers.__all__
                       if isinstance(getattr(mergers, n), type) and issubclass(getattr(mergers, n), mergers.StackMerger)
                       and not inspect.isabstract(getattr(mergers, n))}
    points = grid_points(load_sweep(REPO / "sweeps/stage_combinations.yaml"))
    combos = {(p["model.init_args.generator"], p["model.init_args.merger"]) for p in points}
    assert combos == {(g, m) for g in shipped_gens for m in shipped_mergers}
    # mode auto trains the generator through a classical merger (freeze_merger) and jointly with a
    # learned one: every merger must be differentiable
    assert {p["model.init_args.mode"] for p in points} == {"auto"}
    assert all(getattr(mergers, m.rsplit(".", 1)[1]).differentiable for m in shipped_mergers)


def test_stage_combinations_build_as_two_stage_models(cli_parser: Any) -> None:
    """The TwoStage constructor's cross-checks (mode vs merger, select rule vs arity, loss vs domain)
    pass for every combination (tiny width; built, not trained)."""
    from jsonargparse import ArgumentParser

    from hdrlab.methods import HDRMethod, TwoStage

    spec = load_sweep(REPO / "sweeps/stage_combinations.yaml")
    model_parser = ArgumentParser(exit_on_error=False)
    model_parser.add_subclass_arguments(HDRMethod, "model")
    for point in grid_points(spec):
        if point["seed_everything"] != 0:
            continue
        cfg = parse_fit(cli_parser, _argv(spec, point) + ["--width=0.125"])
        model_cfg = cfg.fit.model.as_dict()
        for part in ("generator", "merger"):
            if "width" in model_cfg["init_args"][part].get("init_args", {}):
                model_cfg["init_args"][part]["init_args"]["width"] = 0.125
        model = model_parser.instantiate_classes(model_parser.parse_object({"model": model_cfg})).model
        assert isinstance(model, TwoStage)
        assert type(model.merger).__name__ == point["model.init_args.merger"].rsplit(".", 1)[1]
        learned = any(p.requires_grad for p in model.merger.parameters())
        assert model.mode == ("joint" if learned else "freeze_merger")
        if type(model.merger).__name__ in ("KalantariMerger", "WuMerger", "AHDRNetMerger"):
            assert model.selected_ev == (-2.0, 0.0, 2.0)


def test_seed_combinations_build_the_seed_pairings(cli_parser: Any) -> None:
    """Each seed pairing of sweeps/seed_combinations.yaml builds the TwoStage of exactly that
    generator and merger (tiny width; built, not trained)."""
    from jsonargparse import ArgumentParser

    from hdrlab.methods import HDRMethod, TwoStage

    spec = load_sweep(REPO / "sweeps/seed_combinations.yaml")
    model_parser = ArgumentParser(exit_on_error=False)
    model_parser.add_subclass_arguments(HDRMethod, "model")
    pairs = set()
    for point in grid_points(spec):
        cfg = parse_fit(cli_parser, _argv(spec, point) + ["--width=0.125"])
        model_cfg = cfg.fit.model.as_dict()
        for part in ("generator", "merger"):
            if "width" in model_cfg["init_args"][part].get("init_args", {}):
                model_cfg["init_args"][part]["init_args"]["width"] = 0.125
        model = model_parser.instantiate_classes(model_parser.parse_object({"model": model_cfg})).model
        assert isinstance(model, TwoStage) and model.mode == "freeze_merger"
        variant = point["config"]
        assert type(model.generator).__name__ == variant["model.init_args.generator"].rsplit(".", 1)[1]
        assert type(model.merger).__name__ == variant["model.init_args.merger"].rsplit(".", 1)[1]
        pairs.add((type(model.generator).__name__, type(model.merger).__name__))
    assert pairs == {(g, m) for g in ("Le2023Generator", "Kim2021Generator")
                     for m in ("DebevecMerger", "KimSynthesisMerger")} | {
        ("DrTMOGenerator", "CFNetMerger"), ("DrTMOGenerator", "MertensMerger")}


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--model.init_args.perceptual_weigth=0.1"], "unknown key (typo)"),
        (["--model.init_args.tv_weight=heavy"], "bad value type"),
        (["--model.init_args.stage=everything"], "value outside a Literal"),
        (["--data.init_args.num_train_scenes=1.5"], "float for an int"),
    ],
)
def test_cli_parser_rejects_bad_sweep_arguments(cli_parser: Any, extra: list[str], why: str) -> None:
    argv = ["fit", "--config", "experiments/singlehdr.yaml", *extra]
    with pytest.raises(AssertionError, match="CLI rejected"):
        parse_fit(cli_parser, argv)


def test_documented_alternative_loss_and_threshold_axes_parse(cli_parser: Any) -> None:
    """The per-method axes sweeps/README.md lists for copies of losses.yaml / mask_thresholds.yaml."""
    cases = [
        ("experiments/le2023.yaml", ["--model.init_args.loss_weights={'recon': 100.0, 'hdr': 1.0, 'tv': 0.0, 'perceptual': 0.1}"]),
        ("experiments/le2023_debevec.yaml", ["--model.init_args.loss_domain=pu21"]),
        ("experiments/le2023_debevec.yaml", ["--model.init_args.loss_domain=mu_law"]),
        ("experiments/singlehdr.yaml", ["--model.init_args.threshold=0.95"]),
    ]
    for config, extra in cases:
        parse_fit(cli_parser, ["fit", "--config", config, *extra])
