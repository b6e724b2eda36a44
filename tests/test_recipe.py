"""``hdrlab recipe``: multi-stage training recipes as data (:mod:`hdrlab.recipe`).

Validation (one error line, nothing written), placeholder resolution, the budget split, every
shipped recipe (``experiments/recipes/*.yaml``, found by discovery), SingleHDR's stage-wise recipe
end to end at tiny size with a re-run that skips every finished stage, and the resume of an
interrupted stage.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from hdrlab.cli import main
from hdrlab.errors import ConfigError
from hdrlab.recipe import (
    fit_argv,
    load_recipe,
    parse_overrides,
    parse_recipe,
    plan_run,
    resolve_placeholders,
    split_budget,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "experiments" / "recipes").rglob("*.yaml"))
SINGLEHDR_RECIPE = REPO / "experiments" / "recipes" / "singlehdr_stagewise.yaml"
#: CPU-sized overrides for every stage (config path relative to the repository: found from any directory)
TINY = ["--config", "experiments/overrides/tiny.yaml", "--trainer.limit_val_batches", "1", "--wandb", "disabled",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

pytestmark = pytest.mark.usefixtures("single_thread")

BASE = {
    "name": "toy",
    "stages": [
        {"name": "a", "config": ["experiments/singlehdr.yaml"], "share": 3,
         "args": {"model.init_args.stage": "dequantization"}, "keep_best": None},
        {"name": "b", "config": "experiments/singlehdr.yaml", "share": 1,
         "args": {"model.init_args.stage": "joint",
                  "model.init_args.stage_checkpoints": {"dequantization": "${stage:a.last}"}}},
    ],
}


def _write(tmp_path: Path, data: object, name: str = "toy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------ discovery


def test_the_recipe_folder_is_not_empty_and_not_seen_as_experiments():
    assert SINGLEHDR_RECIPE in RECIPES
    assert not any(p.parent.name == "recipes" for p in (REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_validates(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``experiments/recipes/*.yaml`` validates, and its dry run plans every stage to start
    (with and without a total budget) and writes nothing."""
    recipe = load_recipe(path)
    assert recipe.name == path.stem and recipe.root == REPO
    assert main(["recipe", str(path), "--runs_root", str(tmp_path / "runs"), "--run_id", "r", "--dry_run",
                 "--", *TINY, "--max_samples", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.count(": start\n") == len(recipe.stages)
    assert ("--max_samples" in out) == any(s.trains for s in recipe.stages)  # test stages take no budget
    assert not (tmp_path / "runs").exists()


def test_singlehdr_recipe_is_the_official_schedule():
    recipe = load_recipe(SINGLEHDR_RECIPE)
    assert [s.name for s in recipe.stages] == ["dequantization", "linearization", "hallucination", "joint"]
    steps = [s.args["trainer.max_steps"] for s in recipe.stages]
    lrs = [float(s.args["model.init_args.lr"]) for s in recipe.stages]
    assert steps == [500_000, 500_000, 500_000, 100_000] and lrs == [1e-4, 1e-4, 1e-4, 1e-5]
    assert recipe.shares == [5, 5, 5, 1] and all(s.keep_best is None for s in recipe.stages)
    assert [s.args["model.init_args.stage"] for s in recipe.stages] == [s.name for s in recipe.stages]
    joint = recipe.stages[-1].args["model.init_args.stage_checkpoints"]
    assert joint == {n: "${stage:" + n + ".last}" for n in ("dequantization", "linearization", "hallucination")}
    official = yaml.safe_load((REPO / "experiments" / "singlehdr.yaml").read_text())["data"]["init_args"]
    assert (official["batch_size"], official["patch_size"]) == (8, 256)
    assert all(s.config_as_written == ("experiments/singlehdr.yaml",) for s in recipe.stages)


# ------------------------------------------------------------------ validation


def _mutate(fn):
    data = copy.deepcopy(BASE)
    fn(data)
    return data


INVALID = {
    "unknown_key": (_mutate(lambda d: d.update(stagez=[])), "unknown key(s) 'stagez'"),
    "unknown_stage_key": (_mutate(lambda d: d["stages"][0].update(arg={})), "stage 'a': unknown key(s) 'arg'"),
    "duplicate_name": (_mutate(lambda d: d["stages"][1].update(name="a")), "duplicate stage name 'a'"),
    "later_stage": (_mutate(lambda d: d["stages"][0]["args"].update(x="${stage:b.last}")), "later stage 'b'"),
    "unknown_stage": (_mutate(lambda d: d["stages"][1]["args"].update(x="${stage:c.last}")), "unknown stage 'c'"),
    "itself": (_mutate(lambda d: d["stages"][1]["args"].update(x="${stage:b.last}")), "refers to the stage itself"),
    "best_without_keep_best": (_mutate(lambda d: d["stages"][1]["args"].update(x="${stage:a.best}")),
                               "needs stage 'a' to keep its best checkpoint"),
    "bad_kind": (_mutate(lambda d: d["stages"][1]["args"].update(x="${stage:a.first}")), "${stage:NAME.last}"),
    "malformed": (_mutate(lambda d: d["stages"][1]["args"].update(x="${stage:a.last")), "malformed"),
    "missing_config": (_mutate(lambda d: d["stages"][0].update(config=["experiments/nope.yaml"])),
                       "config file experiments/nope.yaml not found"),
    "managed_arg": (_mutate(lambda d: d["stages"][0]["args"].update(max_samples=10)), "args may not set max_samples"),
    "dashed_arg": (_mutate(lambda d: d["stages"][0]["args"].update({"--trainer.max_steps": 5})), "without the leading"),
    "mixed_shares": (_mutate(lambda d: d["stages"][1].pop("share")), "give every fit stage a share or none"),
    "bad_share": (_mutate(lambda d: d["stages"][1].update(share=-1)), "share -1 must be a positive number"),
    "bad_keep_best": (_mutate(lambda d: d["stages"][0].update(keep_best={"by": "val/x", "mode": "up"})),
                      "keep_best mode 'up'"),
    "no_stages": ({"name": "toy", "stages": []}, "'stages' must be a non-empty list"),
    "bad_name": (_mutate(lambda d: d["stages"][0].update(name="a/b")), "must be a folder name"),
    "not_yaml": ("stages: [\n", "not valid YAML"),
    "bad_run": (_mutate(lambda d: d["stages"][0].update(run="train")), "run 'train' must be fit"),
    "test_with_share": (_mutate(lambda d: d["stages"][1].update(run="test")), "a test stage has no share"),
    "ckpt_on_fit": (_mutate(lambda d: d["stages"][0].update(ckpt="x.ckpt")), "a fit stage starts from earlier"),
    "ckpt_later_stage": (_mutate(lambda d: d["stages"].insert(0, {"name": "t", "run": "test", "config": "experiments/singlehdr.yaml",
                                                                   "ckpt": "${stage:a.last}"})), "later stage 'a'"),
    "ref_to_test_stage": (_mutate(lambda d: (d["stages"].insert(1, {"name": "t", "run": "test", "config": "experiments/singlehdr.yaml"}),
                                             d["stages"][2]["args"].update(x="${stage:t.last}"))),
                          "refers to the test stage 't', which writes no checkpoint"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_recipe_is_one_error_line_and_writes_nothing(case, tmp_path, capsys):
    data, expected = INVALID[case]
    path = _write(tmp_path, data)
    runs = tmp_path / "runs"
    assert main(["recipe", str(path), "--runs_root", str(runs), "--run_id", "r", "--", *TINY]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hdrlab recipe: error:"), captured.err
    assert expected in lines[0], lines[0]
    assert not runs.exists() and captured.out == ""


@pytest.mark.parametrize(("overrides", "expected"), [
    (["--run_dir", "x"], "override --run_dir is not allowed"),
    (["--ckpt_path=last"], "override --ckpt_path is not allowed"),
    (["--keep_best_by", "val/x"], "use the stage's keep_best"),
    (["--max_samples", "lots"], "must be a whole number"),
    (["--max_samples", "3"], "too small to give every stage at least one sample"),
])
def test_invalid_overrides_are_one_error_line_and_write_nothing(overrides, expected, tmp_path, capsys):
    path = _write(tmp_path, {**BASE, "stages": [BASE["stages"][0], {**BASE["stages"][0], "name": "c", "share": 0.1}]})
    runs = tmp_path / "runs"
    assert main(["recipe", str(path), "--runs_root", str(runs), "--", *overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not runs.exists()


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["recipe", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file" in capsys.readouterr().err


# ------------------------------------------------------------------ placeholders, command lines


def test_placeholders_resolve_to_absolute_paths_when_the_files_exist(tmp_path):
    folders = {"a": tmp_path / "run" / "a", "b": tmp_path / "run" / "b"}
    (folders["a"] / "checkpoints").mkdir(parents=True)
    last = folders["a"] / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    value = {"dequantization": "${stage:a.last}", "deep": ["prefix:${stage:a.last}", 3, None]}
    assert resolve_placeholders(value, folders) == {"dequantization": str(last.resolve()),
                                                    "deep": [f"prefix:{last.resolve()}", 3, None]}
    with pytest.raises(ConfigError, match=r"stage 'c': \$\{stage:a.best\} needs .*best.ckpt, which does not exist"):
        resolve_placeholders("${stage:a.best}", folders, stage="c")
    with pytest.raises(ConfigError, match="b/checkpoints/last.ckpt, which does not exist"):
        resolve_placeholders("${stage:b.last}", folders)


def test_fit_argv_order_and_values(tmp_path):
    recipe = parse_recipe(_mutate(lambda d: (d["stages"][0].update(keep_best={"by": "val/psnr_mu"}),
                                            d["stages"][1]["args"].update({"trainer.fast_dev_run": True,
                                                                           "model.init_args.emor_path": None,
                                                                           "model.init_args.lr": 1e-5}))))
    a, b = recipe.stages
    assert a.keep_best is not None and a.keep_best.mode == "max"
    folders = {"a": tmp_path / "a", "b": tmp_path / "b"}
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "a" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    argv = fit_argv(b, folders["b"], overrides=["--config", "o.yaml"], max_samples=5, resume=True, folders=folders)
    ckpt = str((tmp_path / "a" / "checkpoints" / "last.ckpt").resolve())
    assert argv == ["fit", "--config", str(REPO / "experiments" / "singlehdr.yaml"),
                    "--model.init_args.stage", "joint",
                    "--model.init_args.stage_checkpoints", json.dumps({"dequantization": ckpt}),
                    "--trainer.fast_dev_run", "true", "--model.init_args.emor_path", "null", "--model.init_args.lr", "1e-05",
                    "--config", "o.yaml", "--max_samples", "5", "--run_dir", str(folders["b"]), "--ckpt_path", "last"]
    argv = fit_argv(a, folders["a"])
    assert argv[-6:] == ["--keep_best_by", "val/psnr_mu", "--keep_best_mode", "max", "--run_dir", str(folders["a"])]


# ------------------------------------------------------------------ budget


def test_budget_split_by_share_adds_up_exactly():
    assert split_budget(32, [5, 5, 5, 1]) == [10, 10, 10, 2]
    assert split_budget(10, [5, 5, 5, 1]) == [3, 3, 3, 1]  # 3.125 x 3 + 0.625: the leftover to the largest remainder
    assert split_budget(8000, [5, 5, 5, 1]) == [2500, 2500, 2500, 500]
    assert split_budget(7, [1, 1, 1]) == [3, 2, 2]  # equal parts, ties to the earlier stage
    assert split_budget(100, [0.5, 1.5]) == [25, 75]
    for total in range(16, 200):
        assert sum(split_budget(total, [5, 5, 5, 1])) == total
    with pytest.raises(ConfigError, match="too small"):
        split_budget(3, [5, 5, 5, 1])


def test_total_max_samples_is_split_not_passed_through(tmp_path):
    overrides, total = parse_overrides(["--config", "experiments/overrides/tiny.yaml", "--max_samples=20", "--x", "1"],
                                       [REPO])
    assert total == 20 and "--max_samples=20" not in overrides and overrides[-2:] == ["--x", "1"]
    assert overrides[1] == str(REPO / "experiments" / "overrides" / "tiny.yaml")  # relative to the repository
    shared = parse_recipe({"name": "eq", "stages": [{"name": n, "config": "experiments/singlehdr.yaml"} for n in "xyz"]})
    assert [p.max_samples for p in plan_run(shared, tmp_path / "r", overrides, total)] == [7, 7, 6]
    shares = parse_recipe(BASE)
    assert [p.max_samples for p in plan_run(shares, tmp_path / "r", overrides, total)] == [15, 5]
    assert [p.max_samples for p in plan_run(shares, tmp_path / "r", overrides, None)] == [None, None]


# ------------------------------------------------------------------ end to end


def _stage_summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_singlehdr_recipe_end_to_end_then_rerun_skips_finished_stages(tmp_path, monkeypatch, capsys):
    """The official recipe at tiny size from another directory: every stage trains its share of 32
    samples into its folder, later stages load the earlier stages' last checkpoints (recorded
    resolved in their config.yaml); the same command again skips every stage; other overrides are
    refused for the started run."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    command = ["recipe", str(SINGLEHDR_RECIPE), "--run_dir", str(run), "--", *TINY, "--max_samples", "32"]
    start = time.perf_counter()
    assert main(command) == 0
    first = time.perf_counter() - start
    names = ["dequantization", "linearization", "hallucination", "joint"]
    for name, part in zip(names, [10, 10, 10, 2]):
        folder = run / name
        assert (folder / "checkpoints" / "last.ckpt").is_file(), name
        summary = _stage_summary(folder)
        assert summary["status"] == "finished" and part <= summary["samples_seen"] < part + 2, (name, summary)
        assert summary["argv"][1] == "fit" and "--run_dir" in summary["argv"]  # the stage's own command line
        assert json.loads((folder / "recipe_stage.json").read_text())["max_samples"] == part
    last = {n: str(run / n / "checkpoints" / "last.ckpt") for n in names}
    joint = yaml.safe_load((run / "joint" / "config.yaml").read_text())["model"]["init_args"]
    assert joint["stage"] == "joint" and joint["stage_checkpoints"] == {n: last[n] for n in names[:3]}
    assert joint["lr"] == pytest.approx(1e-5)
    hallucination = yaml.safe_load((run / "hallucination" / "config.yaml").read_text())["model"]["init_args"]
    assert hallucination["stage_checkpoints"] == {n: last[n] for n in names[:2]}
    # the chained checkpoints were really loaded: the hallucination stage trains with a frozen
    # Dequantization-Net loaded from stage 1, so its checkpoint holds stage 1's weights exactly
    deq = torch.load(last["dequantization"], weights_only=True)["state_dict"]
    hal = torch.load(last["hallucination"], weights_only=True)["state_dict"]
    assert all(torch.equal(v, hal[k]) for k, v in deq.items() if k.startswith("net.dequantization.") and v.is_floating_point())
    record = json.loads((run / "recipe.json").read_text())
    assert record["max_samples"] == 32 and [s["max_samples"] for s in record["stages"]] == [10, 10, 10, 2]
    capsys.readouterr()

    mtimes = {n: (run / n / "checkpoints" / "last.ckpt").stat().st_mtime_ns for n in names}
    start = time.perf_counter()
    assert main(command) == 0
    rerun = time.perf_counter() - start
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == 4 and "hdrlab fit" not in out
    assert mtimes == {n: (run / n / "checkpoints" / "last.ckpt").stat().st_mtime_ns for n in names}
    assert rerun < 2.0, rerun
    print(f"tiny SingleHDR recipe: {first:.1f} s; re-run {rerun:.2f} s")

    assert main([*command[:-1], "64"]) == 2  # another budget for the started run: refused, nothing runs
    err = capsys.readouterr().err
    assert "stage 'dequantization'" in err and "different max_samples" in err and "new --run_id" in err
    assert mtimes == {n: (run / n / "checkpoints" / "last.ckpt").stat().st_mtime_ns for n in names}


def test_interrupted_stage_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, capsys):
    """Stage b (chained to stage a's *best* checkpoint) is interrupted (Ctrl-C) after step 2 of 4;
    the same command skips a and continues b with ``--ckpt_path last`` to its budget."""
    recipe = _write(tmp_path, {"name": "resume", "stages": [
        {"name": "a", "config": "experiments/singlehdr.yaml", "keep_best": {"by": "val/psnr_mu", "mode": "max"},
         "args": {"model.init_args.stage": "dequantization"}},
        {"name": "b", "config": "experiments/singlehdr.yaml",
         "args": {"model.init_args.stage": "linearization",
                  "model.init_args.stage_checkpoints": {"dequantization": "${stage:a.best}"}}},
    ]})
    run = tmp_path / "run"
    command = ["recipe", str(recipe), "--run_dir", str(run), "--", *TINY, "--max_samples", "16"]
    import hdrlab.recipe as recipe_module

    real_fit, calls = recipe_module.default_fit, []

    def interrupting_fit(argv):
        calls.append(argv)
        if argv[argv.index("--run_dir") + 1].endswith("/b") and "--ckpt_path" not in argv:
            argv = [*argv, "--trainer.callbacks",
                    json.dumps([{"class_path": "tests.support.interrupt.InterruptAtStep", "init_args": {"step": 2}}])]
        return real_fit(argv)

    monkeypatch.setattr(recipe_module, "default_fit", interrupting_fit)
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        main(command)
    assert "b interrupted; re-run the same command" in capsys.readouterr().out
    assert (run / "a" / "checkpoints" / "best.ckpt").is_file()
    assert _stage_summary(run / "b")["status"].startswith("failed")
    assert torch.load(run / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    calls.clear()
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "stage 1/2 a: finished before, skipped" in out and "stage 2/2 b: resuming" in out
    assert len(calls) == 1 and calls[0][-2:] == ["--ckpt_path", "last"]
    summary = _stage_summary(run / "b")
    assert summary["status"] == "finished" and summary["samples_seen"] == 8 and summary["global_step"] == 4
    config = yaml.safe_load((run / "b" / "config.yaml").read_text())["model"]["init_args"]
    assert config["stage_checkpoints"] == {"dequantization": str(run / "a" / "checkpoints" / "best.ckpt")}


def test_a_stage_failing_on_a_bad_option_is_one_line_and_runs_again_once_fixed(tmp_path, capsys):
    bad = _mutate(lambda d: d["stages"][0]["args"].update({"model.init_args.widht": 1}))
    path = _write(tmp_path, bad)
    run = tmp_path / "run"
    assert main(["recipe", str(path), "--run_dir", str(run), "--", *TINY]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hdrlab recipe: error: stage 'a' failed:") and "widht" in lines[0]
    _write(tmp_path, BASE)  # fixed: the stage has no checkpoint, so it starts again with the new settings
    assert main(["recipe", str(path), "--run_dir", str(run), "--dry_run", "--", *TINY]) == 0
    assert "stage 1/2 a: start" in capsys.readouterr().out


def test_a_trained_stage_folder_not_made_by_a_recipe_is_refused(tmp_path, capsys):
    path = _write(tmp_path, BASE)
    (tmp_path / "run" / "a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "a" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert main(["recipe", str(path), "--run_dir", str(tmp_path / "run"), "--", *TINY]) == 2
    assert "not made by hdrlab recipe" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["a"]


def test_test_stages_take_no_budget_and_run_hdrlab_test(tmp_path):
    """A ``run: test`` stage: no part of the budget, ``hdrlab test`` with the stage's checkpoint
    (none: the untrained model), the seed of ``--seed`` before the other overrides."""
    from hdrlab.commands.recipe import parse_invocation

    data = copy.deepcopy(BASE)
    data["stages"] += [{"name": "scored", "run": "test", "config": "experiments/singlehdr.yaml",
                        "args": {"model.init_args.stage": "joint"}, "ckpt": "${stage:b.last}"},
                       {"name": "untrained", "run": "test", "config": "experiments/singlehdr.yaml"}]
    path = _write(tmp_path, data)
    run = parse_invocation([str(path), "--seed", "3", "--run_dir", str(tmp_path / "r"), "--max_samples", "40"])
    assert run.fit_args[:4] == ["--seed_everything", "3", "--data.init_args.seed", "3"] and run.total == 40
    plans = plan_run(run.recipe, run.run_dir, run.fit_args, run.total)
    assert [p.max_samples for p in plans] == [30, 10, None, None]
    folders = {p.stage.name: p.folder for p in plans}
    (folders["b"] / "checkpoints").mkdir(parents=True)
    (folders["b"] / "checkpoints" / "last.ckpt").write_bytes(b"x")
    argv = fit_argv(plans[2].stage, plans[2].folder, overrides=run.fit_args, folders=folders)
    assert argv[0] == "test" and "--max_samples" not in argv
    assert argv[-4:] == ["--run_dir", str(folders["scored"]), "--ckpt_path", str(folders["b"] / "checkpoints" / "last.ckpt")]
    untrained = fit_argv(plans[3].stage, plans[3].folder, overrides=run.fit_args, folders=folders)
    assert "--ckpt_path" not in untrained and untrained[-2:] == ["--run_dir", str(folders["untrained"])]
    # the form a sweep trial runs: --recipe, unknown options as fit arguments, the last --max_samples wins
    trial = parse_invocation([f"--recipe={path}", "--seed=1", "--max_samples=8000", "--config",
                              "experiments/overrides/tiny.yaml", "--max_samples", "20", "--run_dir", str(tmp_path / "t")])
    assert trial.total == 20 and trial.run_dir == (tmp_path / "t").resolve()
    assert trial.fit_args[4] == "--config" and trial.fit_args[5].endswith("experiments/overrides/tiny.yaml")
    # a recipe of test stages only ignores a budget
    only = _write(tmp_path, {"name": "base", "stages": [data["stages"][3]]}, "base.yaml")
    run = parse_invocation([str(only), "--run_dir", str(tmp_path / "b"), "--max_samples", "40"])
    assert [p.max_samples for p in plan_run(run.recipe, run.run_dir, run.fit_args, run.total)] == [None]
