"""The held-out protocol's report (``benchmarks/heldout_procedural.py``): per-scene win counts,
means over scenes and seeds, ablation labels and the per-scene CSV, on made-up per-scene tables
(no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tests.support.benchmarks import benchmark_module


def test_report_counts_wins_per_scene_and_labels_ablations(tmp_path, monkeypatch):
    hp = benchmark_module("heldout_procedural")
    scenes = [f"procedural_{20_000_000 + i:08d}" for i in range(20)]
    columns = (*hp.HDR_COLUMNS, *hp.DISPLAY_COLUMNS)

    def table(value_of_scene):
        return {s: {c: value_of_scene(i) for c in columns} for i, s in enumerate(scenes)}

    results = {}
    for seed in (0, 1):
        results[(hp.NO_HALLUCINATION, "baseline", seed)] = table(lambda i: 10.0)
        results[("baseline_linear_itmo", "baseline", seed)] = table(lambda i: 9.0)
        for name in (*hp.TRAINED, *hp.ABLATIONS):
            results[(name, "untrained", seed)] = table(lambda i: 5.0)
            # trained: above the baseline on the first 15 + seed scenes, below it on the rest
            results[(name, "trained", seed)] = table(lambda i, s=seed: 11.0 if i < 15 + s else 9.5)
    results[("singlehdr", "trained", 1)][scenes[0]]["log2_ratio_clipped"] = math.nan  # an empty region
    text = hp.report(tmp_path, results, [0, 1], 4000, {"singlehdr_s0": 12.0})

    wins = json.loads((tmp_path / "summary.json").read_text())["wins"]
    assert wins["singlehdr"]["pu21_psnr_clipped"] == [20, 15, 20, 16]  # [self, base] per seed
    assert wins["le2023_cfnet"] == {"display_psnr_clipped": [20, 15, 20, 16]}
    assert "| singlehdr | pu21_psnr_clipped | 1 | 20/20 | 16/20 |" in text
    assert "| singlehdr_known_crf (ablation, reported only) | pu21_psnr_clipped | 0 | 20/20 | 15/20 |" in text
    # mean over scenes per seed, then mean ± std over the seeds: (15*11 + 5*9.5)/20 and (16*11 + 4*9.5)/20
    assert "| singlehdr (trained) | 10.66 ± 0.05 |" in text  # 10.625 and 10.7
    rows = list(csv.DictReader(open(tmp_path / "per_scene.csv")))
    assert len(rows) == len(results) * 20 and {"method", "state", "seed", "scene"} <= set(rows[0])
    assert "Not requested" not in text
    full = (tmp_path / "report.md").read_text()
    # a partial run (--methods) reports what ran, names what did not, and leaves the full report alone
    partial = {k: v for k, v in results.items() if k[0] not in ("le2023_weak_debevec", "singlehdr_joint")}
    text = hp.report(tmp_path, partial, [0, 1], 4000, {})
    assert "Not requested in this invocation (not in this report): singlehdr_joint, le2023_weak_debevec." in text
    assert (tmp_path / "report.md").read_text() == full
    assert (tmp_path / "report_singlehdr+le2023_debevec+le2023_cfnet.md").read_text() == text
    assert "| singlehdr | pu21_psnr_clipped | 1 | 20/20 | 16/20 |" in text and "le2023_weak_debevec |" not in text
    # other render sizes report under their own names, never over the default's or each other's
    monkeypatch.setattr(hp, "SCENE_SIZE", [64])
    monkeypatch.setattr(hp, "TEST_SIZE", [64])
    monkeypatch.setattr(hp, "TRAIN_PATCH", [64])
    text = hp.report(tmp_path, results, [0, 1], 4000, {})
    assert text.startswith("# Held-out procedural evaluation (4000 samples seen, seeds [0, 1], 20 test scenes "
                           "rendered at 64 px; trained on whole 64 px scenes)")
    assert (tmp_path / "report_64px.md").read_text() == text and (tmp_path / "report.md").read_text() == full
    assert json.loads((tmp_path / "summary_64px.json").read_text())["test_size"] == 64
    monkeypatch.setattr(hp, "TEST_SIZE", [128])  # 64 px-trained runs scored on 128 px renders
    mixed = hp.report(tmp_path, results, [0, 1], 4000, {})
    assert (tmp_path / "report_64px_test128px.md").read_text() == mixed
    assert (tmp_path / "report.md").read_text() == full and (tmp_path / "report_64px.md").read_text() == text
    sizes = json.loads((tmp_path / "summary_64px_test128px.json").read_text())
    assert (sizes["scene_size"], sizes["test_size"]) == (64, 128)
    # training on 64 px crops of the 128 px scenes (--train_patch 64) reports under its own name too
    monkeypatch.setattr(hp, "SCENE_SIZE", [128])
    crops = hp.report(tmp_path, results, [0, 1], 4000, {})
    assert "rendered at 128 px; trained on 64 px crops of 128 px scenes)" in crops.splitlines()[0]
    assert (tmp_path / "report_train64px.md").read_text() == crops and (tmp_path / "report.md").read_text() == full
    assert json.loads((tmp_path / "summary_train64px.json").read_text())["train_patch"] == 64
    assert "trained on whole 128 px scenes)" in full.splitlines()[0]


def test_emor_path_gives_singlehdr_the_official_basis_and_leaves_the_data_alone(tmp_path, monkeypatch):
    hp = benchmark_module("heldout_procedural")
    commands = []
    monkeypatch.setattr(hp, "_run", lambda cmd, log: commands.append(cmd))
    monkeypatch.setattr(hp, "_read", lambda table: {})  # no real runs: nothing to score
    monkeypatch.setattr(hp, "report", lambda out, results, *args: "")
    crf = tmp_path / "crf"
    code = hp.main(["--out", str(tmp_path / "out"), "--samples", "40", "--seeds", "0", "--jobs", "1",
                    "--methods", "singlehdr", "le2023_debevec", "--emor_path", str(crf)])
    assert code == 0
    singlehdr = [c for c in commands if hp.TRAINED["singlehdr"] in c]
    others = [c for c in commands if hp.TRAINED["singlehdr"] not in c]
    # (the fake runs leave no checkpoints behind, so a test re-issues its fits: count kinds, not calls)
    stages = {c[c.index("--model.init_args.stage") + 1] for c in singlehdr if c[3] == "fit"}
    assert stages == set(hp.SINGLEHDR_STAGES)
    # official it_num: 500k for each of stages 1-3, so the samples budget is split equally
    budgets = {c[c.index("--model.init_args.stage") + 1]: int(c[c.index("--max_samples") + 1])
               for c in singlehdr if c[3] == "fit"}
    assert budgets == {"dequantization": 14, "linearization": 14, "hallucination": 12}
    lin = next(c for c in singlehdr if c[3] == "fit" and "linearization" in c)
    flags = hp.SINGLEHDR_STAGE_FLAGS["linearization"]
    for flag, value in zip(flags[::2], flags[1::2]):  # the last occurrence wins: the stage-2 value
        assert _last_value(lin, flag) == value
    assert not any("--model.init_args.linearization_bn_momentum" in c for c in singlehdr if "linearization" not in c)
    assert any(c[3] == "test" and "known" in c for c in singlehdr) and any(c[3] == "test" and "known" not in c for c in singlehdr)
    assert {c[3] for c in others} == {"fit", "test"}
    assert any(hp.BASELINES[hp.NO_HALLUCINATION] in c for c in others)  # baselines run with any --methods
    for cmd in singlehdr:
        i = cmd.index("--model.init_args.emor_path")
        assert cmd[i + 1] == str(crf.resolve())
        j = cmd.index("--data.init_args.emor_path")  # the held-out CRFs stay those of every other method
        assert cmd[j + 1] == "null"
    assert not any("--model.init_args.emor_path" in c or "--data.init_args.emor_path" in c for c in others)


def _last_value(cmd, flag):
    """The value of ``flag`` in a command line where it may repeat: the last occurrence wins."""
    return cmd[len(cmd) - cmd[::-1].index(flag)]


def _fake_runs(commands):
    """A stand-in for ``_run`` that leaves what a real fit / test leaves: checkpoint, summary, CSV."""

    def run(cmd, log):
        commands.append(cmd)
        run_dir = Path(cmd[cmd.index("--run_dir") + 1])
        if cmd[3] == "fit":
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "checkpoints" / "last.ckpt").write_text("weights")
            if "--keep_best_by" in cmd:
                (run_dir / "checkpoints" / "best.ckpt").write_text("best weights")
            seen = int(cmd[cmd.index("--max_samples") + 1])
            (run_dir / "summary.json").write_text(json.dumps({"samples_seen": seen, "wall_time_s": 7.0}))
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "test_per_sample.csv").write_text("name\n")

    return run


def _dry_protocol(monkeypatch):
    """The protocol script with :func:`_fake_runs` for its commands, no scoring and no report;
    returns the module and the list its commands are appended to."""
    hp = benchmark_module("heldout_procedural")
    commands = []
    monkeypatch.setattr(hp, "_run", _fake_runs(commands))
    monkeypatch.setattr(hp, "_read", lambda table: {})
    monkeypatch.setattr(hp, "report", lambda *args: "")
    return hp, commands


def test_reruns_reuse_matching_runs_and_stop_on_a_changed_recipe(tmp_path, monkeypatch):
    hp = benchmark_module("heldout_procedural")
    commands, walls = [], []
    monkeypatch.setattr(hp, "_run", _fake_runs(commands))
    monkeypatch.setattr(hp, "_read", lambda table: {})
    monkeypatch.setattr(hp, "report", lambda out, results, seeds, samples, wall: walls.append(wall) or "")
    out = tmp_path / "out"
    base = ["--out", str(out), "--seeds", "0", "--jobs", "1"]
    assert hp.main([*base, "--samples", "40", "--methods", "singlehdr", "le2023_cfnet"]) == 0
    fits = [c for c in commands if c[3] == "fit"]
    assert len(fits) == 5  # three SingleHDR stages, the generator, CF-Net: each once
    # CF-Net alone still reports the generator run it depends on
    assert {"le2023_debevec_s0", "le2023_cfnet_s0", "singlehdr_linearization_s0"} <= set(walls[-1])
    assert json.loads((out / "runs" / "le2023_cfnet_s0" / hp.RECIPE_FILE).read_text())["recipe"]["inputs"]

    commands.clear()  # same recipe and budget: nothing is trained or scored again
    assert hp.main([*base, "--samples", "40", "--methods", "singlehdr", "le2023_cfnet"]) == 0
    assert commands == []

    # a retrained checkpoint makes its old scores stale: the test runs again
    ckpt = out / "runs" / "singlehdr_s0" / "checkpoints" / "last.ckpt"
    ckpt.write_text("new weights")
    assert hp.main([*base, "--samples", "40", "--methods", "singlehdr"]) == 0
    assert [c[3] for c in commands] == ["test", "test"]  # singlehdr and its known-CRF ablation, trained

    # a changed stage recipe, a smaller budget, an unrecorded folder: stop, naming the folder
    monkeypatch.setitem(hp.SINGLEHDR_STAGE_FLAGS, "linearization", ["--model.init_args.lr", "1e-2"])
    with pytest.raises(RuntimeError, match="singlehdr_linearization_s0 was trained with a different recipe"):
        hp.main([*base, "--samples", "40", "--methods", "singlehdr"])
    with pytest.raises(RuntimeError, match="le2023_debevec_twostage_s0 was trained for 40 samples"):
        hp.main([*base, "--samples", "20", "--methods", "le2023_debevec"])
    (out / "runs" / "le2023_debevec_twostage_s0" / hp.RECIPE_FILE).unlink()
    with pytest.raises(RuntimeError, match="has no protocol.json"):
        hp.main([*base, "--samples", "40", "--methods", "le2023_debevec"])
    commands.clear()
    assert hp.main([*base, "--samples", "40", "--methods", "le2023_debevec", "--adopt_unrecorded_runs"]) == 0
    assert not [c for c in commands if c[3] == "fit"]
    assert (out / "runs" / "le2023_debevec_twostage_s0" / hp.RECIPE_FILE).exists()
    commands.clear()  # a larger budget continues the run
    assert hp.main([*base, "--samples", "80", "--methods", "le2023_debevec"]) == 0
    assert [c for c in commands if c[3] == "fit"][0][-2:] == ["--ckpt_path", "last"]


def test_method_flags_reach_their_method_and_only_it(tmp_path, monkeypatch):
    hp, commands = _dry_protocol(monkeypatch)
    monkeypatch.setattr(hp, "METHOD_FLAGS", {"le2023_debevec": ["--model.init_args.lr", "7e-4"],
                                             "le2023_cfnet": ["--model.init_args.lr", "5e-4"]})
    assert hp.main(["--out", str(tmp_path / "out"), "--seeds", "0", "--jobs", "1", "--samples", "40",
                    "--methods", "singlehdr", "le2023_cfnet"]) == 0
    fits = {Path(c[c.index("--run_dir") + 1]).name: c for c in commands if c[3] == "fit"}

    def lr(cmd):
        return _last_value(cmd, "--model.init_args.lr")

    assert lr(fits["le2023_debevec_twostage_s0"]) == "7e-4"  # the generator CF-Net is trained on
    assert lr(fits["le2023_cfnet_s0"]) == "5e-4" and "--model.init_args.generator_ckpt" in fits["le2023_cfnet_s0"]
    assert lr(fits["singlehdr_s0"]) == "1e-4" and lr(fits["singlehdr_dequantization_s0"]) == "1e-4"
    # CF-Net's official step schedule, scaled to the budget (20 steps at batch 2): halvings at 20/40/60/80 %
    cfnet = fits["le2023_cfnet_s0"]
    assert json.loads(cfnet[cfnet.index("--model.init_args.lr_milestones") + 1]) == [4, 8, 12, 16]
    assert cfnet[cfnet.index("--model.init_args.lr_gamma") + 1] == "0.5"
    assert not any("--model.init_args.lr_milestones" in c for name, c in fits.items() if name != "le2023_cfnet_s0")
    # CF-Net keeps its best validation checkpoint (official train.py) and is scored with it
    assert cfnet[cfnet.index("--keep_best_by") + 1] == "val/display_psnr"
    assert cfnet[cfnet.index("--data.init_args.num_val_scenes") + 1] == "20"
    assert not any("--keep_best_by" in c for name, c in fits.items() if name != "le2023_cfnet_s0")
    tests = {Path(c[c.index("--run_dir") + 1]).name: c for c in commands if c[3] == "test"}
    scored = tests["le2023_cfnet_trained_s0"]
    assert Path(scored[scored.index("--ckpt_path") + 1]).name == "best.ckpt"
    assert "--ckpt_path" not in tests["le2023_cfnet_untrained_s0"]
    # every scene is rendered at 128 px and used whole: for training and validation, and for the
    # scores of every method, untrained self and baseline on the held-out scenes, in a folder named
    # by that size
    for cmd in tests.values():
        assert _last_value(cmd, "--data.init_args.patch_size") == "128"
        assert _last_value(cmd, "--data.init_args.scene_size") == "128"
        assert Path(cmd[cmd.index("--run_dir") + 1]).parent.name == "tests_128px"
    for cmd in fits.values():
        assert _last_value(cmd, "--data.init_args.patch_size") == "128"
        assert _last_value(cmd, "--data.init_args.scene_size") == "128"
    # a finished run without its best checkpoint is not silently scored with another one
    (tmp_path / "out" / "runs" / "le2023_cfnet_s0" / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(RuntimeError, match="best.ckpt is missing although the run reached its budget"):
        hp.main(["--out", str(tmp_path / "out"), "--seeds", "0", "--jobs", "1", "--samples", "40",
                 "--methods", "le2023_cfnet"])
    # a scheduled run depends on its budget, so it cannot be continued to a larger one
    with pytest.raises(RuntimeError, match="le2023_cfnet_s0 was trained with a different recipe"):
        hp.main(["--out", str(tmp_path / "out"), "--seeds", "0", "--jobs", "1", "--samples", "80",
                 "--methods", "le2023_cfnet"])


def test_scene_sizes_must_suit_every_method(tmp_path, capsys):
    hp = benchmark_module("heldout_procedural")
    for flag in ("--scene_size", "--test_size", "--train_patch"):
        with pytest.raises(SystemExit):
            hp.main(["--out", str(tmp_path / "out"), flag, "100"])
        assert f"{flag} must be a multiple of 32 and at least 64, got 100" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a patch cannot be cropped from a smaller scene
        hp.main(["--out", str(tmp_path / "out"), "--scene_size", "128", "--train_patch", "256"])
    assert "--train_patch (256) must not exceed --scene_size (128)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_train_patch_64_trains_and_validates_on_crops(tmp_path, monkeypatch):
    """``--train_patch 64``: every fit (and so its validation, CF-Net's best-checkpoint choice
    included) on the tiny override's 64 px crops of the 128 px scenes, with no patch flag (so the
    run folders recorded by that protocol stay valid); a recipe of its own, so folders of the
    default (whole scenes) do not mix with it."""
    hp, commands = _dry_protocol(monkeypatch)
    out = tmp_path / "out"
    assert hp.main(["--out", str(out), "--seeds", "0", "--jobs", "1", "--samples", "40",
                    "--methods", "singlehdr", "le2023_cfnet", "--train_patch", "64"]) == 0
    fits = [c for c in commands if c[3] == "fit"]
    assert len(fits) == 5  # three SingleHDR stages, the generator, CF-Net
    for cmd in fits:
        assert "--data.init_args.patch_size" not in cmd  # the tiny override's 64 px
        assert _last_value(cmd, "--data.init_args.scene_size") == "128"
    tests = [c for c in commands if c[3] == "test"]
    assert tests and all(Path(c[c.index("--run_dir") + 1]).parent.name == "tests_128px" for c in tests)
    with pytest.raises(RuntimeError, match="le2023_debevec_twostage_s0 was trained with a different recipe"):
        hp.main(["--out", str(out), "--seeds", "0", "--jobs", "1", "--samples", "40", "--methods", "le2023_debevec"])


def test_scene_size_64_keeps_the_earlier_protocol_and_its_recorded_recipes(tmp_path, monkeypatch):
    """``--scene_size 64`` is the earlier protocol: no scene-size flag in the fits (so run folders
    recorded by it stay valid), held-out scenes scored at 64 px under ``tests_64px``."""
    hp, commands = _dry_protocol(monkeypatch)
    out = tmp_path / "out"
    assert hp.main(["--out", str(out), "--seeds", "0", "--jobs", "1", "--samples", "40",
                    "--methods", "le2023_debevec", "--scene_size", "64"]) == 0
    fit = next(c for c in commands if c[3] == "fit")
    assert "--data.init_args.scene_size" not in fit
    assert json.loads((out / "runs" / "le2023_debevec_twostage_s0" / hp.RECIPE_FILE).read_text())["recipe"]["args"] == [
        "--model.init_args.lr", "1e-3"]
    tests = [c for c in commands if c[3] == "test"]
    assert tests and all(Path(c[c.index("--run_dir") + 1]).parent.name == "tests_64px" for c in tests)
    assert all(_last_value(c, "--data.init_args.patch_size") == "64" for c in tests)
    # the same runs scored on 128 px renders (a pixel-scale change: reported, not the protocol)
    commands.clear()
    assert hp.main(["--out", str(out), "--seeds", "0", "--jobs", "1", "--samples", "40",
                    "--methods", "le2023_debevec", "--scene_size", "64", "--test_size", "128"]) == 0
    assert not [c for c in commands if c[3] == "fit"]
    assert {Path(c[c.index("--run_dir") + 1]).parent.name for c in commands} == {"tests_128px"}
    # the default protocol renders the scenes at 128 px: another recipe, so these folders do not mix
    with pytest.raises(RuntimeError, match="le2023_debevec_twostage_s0 was trained with a different recipe"):
        hp.main(["--out", str(out), "--seeds", "0", "--jobs", "1", "--samples", "40", "--methods", "le2023_debevec"])


def test_linearization_keep_best_scores_stage_2_by_its_curve_rmse(tmp_path, monkeypatch):
    """``--linearization_keep_best``: SingleHDR's stage 2 validates on 50 scenes every 25 steps,
    keeps its checkpoint of lowest ``val/crf_rmse``, and that checkpoint (not ``last.ckpt``) is
    what stage 3 and the scores load; no other run changes, and it is a recipe of its own."""
    hp, commands = _dry_protocol(monkeypatch)
    out = tmp_path / "out"
    base = ["--out", str(out), "--seeds", "0", "--jobs", "1", "--samples", "40"]
    assert hp.main([*base, "--methods", "singlehdr", "le2023_debevec", "--linearization_keep_best"]) == 0
    fits = {Path(c[c.index("--run_dir") + 1]).name: c for c in commands if c[3] == "fit"}
    lin = fits["singlehdr_linearization_s0"]
    assert _last_value(lin, "--keep_best_by") == "val/crf_rmse" and _last_value(lin, "--keep_best_mode") == "min"
    assert _last_value(lin, "--data.init_args.num_val_scenes") == "50"
    assert _last_value(lin, "--trainer.val_check_interval") == "25"
    assert not any("--keep_best_by" in c for name, c in fits.items() if name != "singlehdr_linearization_s0")
    stages = json.loads(_last_value(fits["singlehdr_s0"], "--model.init_args.stage_checkpoints"))
    assert Path(stages["linearization"]).name == "best.ckpt"
    assert Path(stages["dequantization"]).name == "last.ckpt"
    with pytest.raises(RuntimeError, match="singlehdr_linearization_s0 was trained with a different recipe"):
        hp.main([*base, "--methods", "singlehdr"])


def test_v13_flags_keep_stage_3_best_and_train_cfnet_on_the_weak_generator(tmp_path, monkeypatch):
    """Protocol v13: ``--hallucination_keep_best`` validates SingleHDR's stage 3 on 50 scenes every
    100 steps and scores its checkpoint of highest clipped PU21-PSNR; ``--cfnet_generator
    le2023_weak_debevec`` trains CF-Net on, and scores it with, the weakly supervised Le2023 run of
    the same seed (its ``last.ckpt``); the Debevec-trained generator is then not trained at all."""
    hp, commands = _dry_protocol(monkeypatch)
    out = tmp_path / "out"
    base = ["--out", str(out), "--seeds", "4", "--jobs", "1", "--samples", "40"]
    assert hp.main([*base, "--methods", "singlehdr", "le2023_cfnet", "--linearization_keep_best",
                    "--hallucination_keep_best", "--cfnet_generator", "le2023_weak_debevec"]) == 0
    fits = {Path(c[c.index("--run_dir") + 1]).name: c for c in commands if c[3] == "fit"}
    assert set(fits) == {"singlehdr_dequantization_s4", "singlehdr_linearization_s4", "singlehdr_s4",
                         "le2023_debevec_s4", "le2023_cfnet_s4"}  # le2023_debevec_s4: the weak run's folder
    hal = fits["singlehdr_s4"]
    assert _last_value(hal, "--keep_best_by") == "val/pu21_psnr_clipped" and _last_value(hal, "--keep_best_mode") == "max"
    assert _last_value(hal, "--data.init_args.num_val_scenes") == "50"
    assert _last_value(hal, "--trainer.val_check_interval") == "100"
    assert _last_value(fits["singlehdr_linearization_s4"], "--keep_best_by") == "val/crf_rmse"
    assert "experiments/le2023.yaml" in fits["le2023_debevec_s4"]
    weak = str(out / "runs" / "le2023_debevec_s4" / "checkpoints" / "last.ckpt")
    assert _last_value(fits["le2023_cfnet_s4"], "--model.init_args.generator_ckpt") == weak
    tests = [c for c in commands if c[3] == "test"]
    singlehdr = [c for c in tests if "singlehdr_trained" in c[c.index("--run_dir") + 1]]
    assert singlehdr and all(Path(_last_value(c, "--ckpt_path")).name == "best.ckpt" for c in singlehdr)
    cfnet = [c for c in tests if "le2023_cfnet" in c[c.index("--run_dir") + 1]]
    assert len(cfnet) == 2 and all(_last_value(c, "--model.init_args.generator_ckpt") == weak for c in cfnet)
    # the v12 recipe of the same folders is another recipe
    with pytest.raises(RuntimeError, match="singlehdr_s4 was trained with a different recipe"):
        hp.main([*base, "--methods", "singlehdr", "--linearization_keep_best"])
