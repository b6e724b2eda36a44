"""``hdrlab compare`` and :mod:`hdrlab.sweep.compare` on run folders written in the test.

The fake run folders are format-exact copies of what ``hdrlab fit`` writes (LightningCLI's
``config.yaml``, Lightning's CSV logger ``metrics.csv`` with empty cells for unlogged columns,
``RunSummary``'s ``summary.json``, ``previews/step<N>_<scene>.png``); one real run of the plumbing
experiment checks the format against the trainer itself. References: :mod:`statistics`
(mean, sample standard deviation), ``csv`` read-back, OpenCV for the PNGs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from hdrlab import cli
from hdrlab.cli import main as cli_main
from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.sweep.compare import (
    compare_runs,
    discover_runs,
    flatten_config,
    format_table,
    last_finite_metrics,
    mean_std,
    plot_stage_heatmap,
    read_run,
    score_metric,
    varying_parameters,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
HDR_COLS = ["val/psnr_mu", "val/pu21_psnr"]
DISPLAY_COLS = ["val/display_psnr", "val/display_ssim"]


def lightning_config(*, seed: int, run_dir: Path, merger: str = "hdrlab.models.mergers.DebevecMerger",
                     model_args: dict[str, Any] | None = None, scenes: int = 8,
                     model: str = "hdrlab.methods.TwoStage") -> dict[str, Any]:
    """A config.yaml as LightningCLI saves it (subset of keys, same layout)."""
    init_args: dict[str, Any] = {"mode": "freeze_merger", "loss_domain": "log", "lr": 1e-4}
    if model.endswith("TwoStage"):
        init_args["generator"] = {"class_path": "hdrlab.models.generators.Le2023Generator",
                                  "init_args": {"width": 0.125, "ev": [-2.0, 2.0]}}
        # each merger's own init args, as LightningCLI saves them after a class swap
        own = {"DebevecMerger": {"crf": "known", "samples": 70}, "MertensMerger": {"sigma": 0.2},
               "CFNetMerger": {"scale": 2, "width": 1.0}}
        init_args["merger"] = {"class_path": merger, "init_args": own[merger.rsplit(".", 1)[1]]}
    init_args.update(model_args or {})
    return {
        "seed_everything": seed,
        "trainer": {"accelerator": "cpu", "max_steps": 40, "val_check_interval": 20, "callbacks": None},
        "model": {"class_path": model, "init_args": init_args},
        "data": {"class_path": "hdrlab.data.ProceduralDataModule",
                 "init_args": {"num_train_scenes": scenes, "patch_size": 64, "batch_size": 2}},
        "width": 0.125,
        "runs_root": "runs",
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "max_samples": 80,
        "ckpt_path": None,
    }


def write_run(run_dir: Path, *, config: dict[str, Any], final: dict[str, float], status: str | None = "finished",
              summary_metrics: dict[str, Any] | None = None, columns: list[str] = HDR_COLS,
              scenes: tuple[str, ...] = (), early: str = "1.5") -> Path:
    """A run folder: metrics.csv (two validations: early values, then ``final``), config, summary, previews."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    header = ["epoch", "lr-Adam", "step", "train/loss"] + columns
    rows = [
        ["", "0.0001", "9", ""] + [""] * len(columns),
        ["0", "", "9", "0.93"] + [""] * len(columns),
        ["0", "", "19", ""] + [early] * len(columns),  # first validation
        ["1", "", "29", "0.71"] + [""] * len(columns),
        ["1", "", "39", ""] + [("" if c not in final else repr(final[c])) for c in columns],
    ]
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    if status is not None:
        summary = {"status": status, "seed": config["seed_everything"], "samples_seen": 80, "global_step": 40,
                   "wall_time_s": 12.5, "metrics": summary_metrics if summary_metrics is not None else dict(final)}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for i, scene in enumerate(scenes):
        (run_dir / "previews").mkdir(exist_ok=True)
        for step in (19, 39):
            img = np.full((16, 48, 3), 40 * i + step, np.uint8)
            cv2.imwrite(str(run_dir / "previews" / f"step{step:07d}_{scene}.png"), img)
    return run_dir


def test_last_finite_metrics_skips_empty_nan_and_inf(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/a,val/b,val/c\n"
                    "0,1,0.5,1.0,2.0,\n"
                    "0,2,0.4,,nan,\n"
                    "1,3,,3.5,inf,\n"
                    "1,4,0.3,,,nan\n")
    assert last_finite_metrics(path) == {"val/a": 3.5, "val/b": 2.0}
    assert last_finite_metrics(path, prefix="train/") == {"train/loss": 0.3}
    assert last_finite_metrics(tmp_path / "missing.csv") == {}


def test_flatten_config_and_mean_std_against_statistics() -> None:
    flat = flatten_config({"model": {"class_path": "X", "init_args": {"ev": [1, 2], "g": {}}}, "seed_everything": 3})
    assert flat == {"model.class_path": "X", "model.init_args.ev": [1, 2], "model.init_args.g": {}, "seed_everything": 3}
    values = [31.25, 30.5, 32.125]
    mean, std = mean_std(values + [math.nan, math.inf])
    assert mean == pytest.approx(statistics.mean(values), abs=1e-12)
    assert std == pytest.approx(statistics.stdev(values), abs=1e-12)
    m1, s1 = mean_std([7.0])
    assert m1 == 7.0 and math.isnan(s1)
    assert all(math.isnan(v) for v in mean_std([]))


def test_discover_runs_in_run_sweep_and_root_folders(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    runs = [write_run(sweep / "trials" / f"t{i:04d}", config=lightning_config(seed=i, run_dir=sweep / "trials" / f"t{i:04d}"),
                      final={"val/pu21_psnr": 30.0}) for i in range(2)]
    (sweep / "trials" / "t0002").mkdir()  # a trial that never wrote anything is not a run
    assert discover_runs([sweep]) == [r.resolve() for r in runs]
    assert discover_runs([runs[0], sweep]) == [r.resolve() for r in runs]  # de-duplicated
    assert discover_runs([tmp_path]) == [r.resolve() for r in runs]  # any parent (recursive)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HDRIOError, match="holds no run folder"):
        discover_runs([tmp_path / "empty"])
    with pytest.raises(HDRIOError, match="is not a folder"):
        discover_runs([tmp_path / "nope"])


def test_summary_metrics_take_precedence_and_seed_is_not_a_parameter(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", config=lightning_config(seed=0, run_dir=tmp_path / "a"),
                  final={"val/psnr_mu": 20.0, "val/pu21_psnr": 30.0},
                  summary_metrics={"val/pu21_psnr": 31.0, "val/psnr_mu": None, "train/loss": 0.1})
    rec = read_run(a)
    assert rec.metrics == {"val/psnr_mu": 20.0, "val/pu21_psnr": 31.0}  # None in the summary -> CSV value
    assert rec.status == "finished" and rec.seed == 0
    b = write_run(tmp_path / "b", config=lightning_config(seed=1, run_dir=tmp_path / "b"), final={"val/pu21_psnr": 29.0})
    assert varying_parameters([rec, read_run(b)]) == []  # seed, run_dir, run_id ignored


def _grid(tmp_path: Path) -> tuple[Path, dict[tuple[int, str], list[float]]]:
    """A 2 (num_train_scenes) x 2 (loss_domain) x 3 seeds sweep; one crashed and one NaN run."""
    sweep = tmp_path / "sweep"
    expected: dict[tuple[int, str], list[float]] = {}
    rng = np.random.default_rng(0)
    i = 0
    for scenes in (15, 60):
        for domain in ("log", "pu21"):
            for seed in range(3):
                run = sweep / "trials" / f"t{i:04d}"
                value = float(np.round(25 + scenes / 10 + (domain == "pu21") + rng.normal(0, 0.5), 4))
                cfg = lightning_config(seed=seed, run_dir=run, scenes=scenes, model_args={"loss_domain": domain})
                if i == 4:  # crashed trial: no finished summary
                    write_run(run, config=cfg, final={"val/pu21_psnr": value}, status="failed: RuntimeError: boom")
                elif i == 7:  # finished but diverged: metric NaN everywhere
                    write_run(run, config=cfg, final={"val/pu21_psnr": math.nan, "val/psnr_mu": math.nan},
                              summary_metrics={"val/pu21_psnr": None}, early="nan")
                else:
                    write_run(run, config=cfg, final={"val/pu21_psnr": value, "val/psnr_mu": value - 5},
                              scenes=("procedural_10000000", f"procedural_{i}"))
                    expected.setdefault((scenes, domain), []).append(value)
                i += 1
    return sweep, expected


def test_compare_groups_by_varying_parameters_with_mean_std(tmp_path: Path) -> None:
    sweep, expected = _grid(tmp_path)
    comp = compare_runs([read_run(p) for p in discover_runs([sweep])], metric="val/pu21_psnr")
    assert comp.params == ["data.init_args.num_train_scenes", "model.init_args.loss_domain"]
    assert comp.metric_names == ["val/psnr_mu", "val/pu21_psnr"]
    assert len(comp.rows) == 4
    assert sorted(p.name for p, _ in comp.failures) == ["t0004", "t0007"]
    assert "status 'failed: RuntimeError: boom'" in dict((p.name, r) for p, r in comp.failures)["t0004"]
    for row in comp.rows:
        values = expected[(row["data.init_args.num_train_scenes"], row["model.init_args.loss_domain"])]
        assert row["n"] == len(values)
        assert row["val/pu21_psnr_mean"] == pytest.approx(statistics.mean(values), abs=1e-9)
        assert row["val/pu21_psnr_std"] == pytest.approx(statistics.stdev(values), abs=1e-9)
        assert row["val/psnr_mu_mean"] == pytest.approx(statistics.mean(values) - 5, abs=1e-9)
    table = format_table(comp)
    assert table.splitlines()[0] == "| data.num_train_scenes | model.loss_domain | n | val/psnr_mu | val/pu21_psnr |"
    assert "Failed runs (2):" in table


COMPARE_ENTRY = ("hdrlab.commands.compare", "compare runs/sweeps: grouped table (md+csv), plots, index.html")


def test_compare_command_writes_report_and_csv_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # through the real `hdrlab` dispatch (registered here until cli.SUBCOMMANDS lists it)
    monkeypatch.setitem(cli.SUBCOMMANDS, "compare", cli.SUBCOMMANDS.get("compare", COMPARE_ENTRY))
    sweep, expected = _grid(tmp_path)
    out = tmp_path / "report"
    assert cli_main(["compare", str(sweep), "--metric", "val/pu21_psnr", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| data.num_train_scenes | model.loss_domain | n |" in printed and "12 runs, 4 groups, 2 failed" in printed
    for name in ("table.csv", "table.md", "index.html", "metric_vs_data.init_args.num_train_scenes.png",
                 "preview_grid.png", "main_metric_bars.png", "main_metric_bars.pdf", "table_linear.csv",
                 "config_diff.csv", "curve_train_loss.png", "curve_val_pu21_psnr.png"):
        assert (out / name).is_file(), name
    # one generator x one merger: a bar chart of the main metric, no 1x1 heatmap; no display runs
    assert not (out / "stage_heatmap.png").exists() and not (out / "table_display.csv").exists()
    with (out / "table.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["data.init_args.num_train_scenes", "model.init_args.loss_domain", "n",
                             "val/psnr_mu_mean", "val/psnr_mu_std", "val/pu21_psnr_mean", "val/pu21_psnr_std"]
    for row in rows:
        values = expected[(int(row["data.init_args.num_train_scenes"]), row["model.init_args.loss_domain"])]
        assert int(row["n"]) == len(values)
        assert float(row["val/pu21_psnr_mean"]) == statistics.mean(values) or \
            abs(float(row["val/pu21_psnr_mean"]) - statistics.mean(values)) < 1e-12
        assert abs(float(row["val/pu21_psnr_std"]) - statistics.stdev(values)) < 1e-12
    grid = cv2.imread(str(out / "preview_grid.png"))
    # rows = scenes (at most 4), one column per group (4 groups, whole panels: no input/reference columns)
    assert grid is not None and grid.shape[0] > 600 and grid.shape[1] > 600
    html = (out / "index.html").read_text()
    assert "table.csv" in html and "preview_grid.png" in html and "t0004" in html
    assert cli_main(["compare", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_bad_metric_is_a_config_error(tmp_path: Path) -> None:
    from hdrlab.commands.compare import main

    with pytest.raises(ConfigError, match="val/"):
        main([str(tmp_path), "--metric", "pu21_psnr"])


def test_two_stage_heatmap_scores_display_mergers_on_display_metric(tmp_path: Path) -> None:
    mergers = {"hdrlab.models.mergers.DebevecMerger": HDR_COLS, "hdrlab.models.mergers.MertensMerger": DISPLAY_COLS,
               "hdrlab.models.mergers.CFNetMerger": DISPLAY_COLS}
    for j, (merger, cols) in enumerate(mergers.items()):
        for seed in range(2):
            run = tmp_path / "sweep" / "trials" / f"t{2 * j + seed:04d}"
            final = {c: 20.0 + j + seed for c in cols}
            write_run(run, config=lightning_config(seed=seed, run_dir=run, merger=merger), final=final, columns=cols)
    records = [read_run(p) for p in discover_runs([tmp_path / "sweep"])]
    comp = compare_runs(records, metric="val/pu21_psnr")
    assert comp.failures == []
    assert [score_metric(r, "val/pu21_psnr") for r in records] == ["val/pu21_psnr"] * 2 + ["val/display_psnr"] * 4
    assert comp.params == ["model.init_args.merger.class_path"]  # not the swapped classes' own init args
    by_merger = {row["model.init_args.merger.class_path"].rsplit(".", 1)[1]: row for row in comp.rows}
    assert by_merger["DebevecMerger"]["val/pu21_psnr_mean"] == pytest.approx(20.5)
    assert math.isnan(by_merger["DebevecMerger"]["val/display_psnr_mean"])
    assert by_merger["CFNetMerger"]["val/display_psnr_mean"] == pytest.approx(22.5)
    assert by_merger["CFNetMerger"]["val/display_psnr_std"] == pytest.approx(statistics.stdev([22.0, 23.0]))
    written = write_report(comp, tmp_path / "report")
    # one generator: no generator x merger heatmap in the report, a bar chart per domain instead
    assert tmp_path / "report" / "main_metric_bars.png" in written["plots"]
    assert not (tmp_path / "report" / "stage_heatmap.png").exists()
    heatmap = plot_stage_heatmap(comp, tmp_path / "stage.png")  # the notebook's call: bar panels
    img = cv2.imread(str(heatmap))
    assert img.shape[1] > img.shape[0] * 1.5  # two panels side by side (linear | display)


def test_compare_reads_a_real_fit_run(tmp_path: Path) -> None:
    """One real (6-step) ``hdrlab fit`` of the plumbing experiment: compare reads its files as written."""
    run = tmp_path / "real_run"
    env = {**os.environ, "HDRLAB_TORCH_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "hdrlab", "fit", "--config", "tests/support/plumbing.yaml", "--width", "0.125",
         "--wandb", "disabled", "--run_dir", str(run), "--data.init_args.num_train_scenes=8",
         "--data.init_args.num_val_scenes=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = read_run(run)
    assert rec.status == "finished" and rec.seed == 0
    assert rec.config["model.class_path"] == "tests.support.plumbing.PlumbingMethod"
    assert {"val/psnr_mu", "val/pu21_psnr"} <= set(rec.metrics)
    assert all(math.isfinite(v) for v in rec.metrics.values())
    csv_values = last_finite_metrics(run / "metrics.csv")
    assert rec.metrics["val/pu21_psnr"] == pytest.approx(csv_values["val/pu21_psnr"], rel=1e-5)
    assert rec.previews  # ImagePanelLogger's previews/step<N>_<scene>.png
    comp = compare_runs([rec])
    assert comp.params == [] and comp.rows[0]["n"] == 1 and comp.failures == []
