"""``hdrlab compare --test`` on made-up recipe run folders (no training): row labels from the recipe
stages, mean ± std over seeds with 95 % scene intervals, per-scene wins against ``@STAGE`` (the same
recipe run's untrained self) and against a run label matched by seed, one-line errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from hdrlab.cli import main
from hdrlab.report.scenes import mean_ci

SCENES = [f"procedural_{20_000_000 + i}" for i in range(5)]
COLUMNS = ("pu21_psnr", "pu21_psnr_clipped", "display_psnr", "display_psnr_clipped")


def _stage(trial: Path, recipe: str, stage: str, seed: int, value) -> Path:
    """A test stage folder as a recipe writes it: recipe_stage.json, config.yaml, test_per_sample.csv."""
    folder = trial / stage
    folder.mkdir(parents=True)
    ckpt = "${stage:fit.best}" if stage == "trained" else None
    record = {"recipe": recipe, "stage": stage, "run": "test", "ckpt": ckpt, "config": [f"experiments/{recipe}.yaml"],
              "args": {"model.init_args.prediction": "refined"} if stage == "trained" else {}}
    (folder / "recipe_stage.json").write_text(json.dumps(record))
    (trial / "recipe.json").write_text(json.dumps({"recipe": recipe, "max_samples": 600, "overrides": []}))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed_everything": seed, "model": {"class_path": "x"}}))
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "stage": "test"}))
    with (folder / "test_per_sample.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "clipped_fraction", *COLUMNS])
        for i, scene in enumerate(SCENES):
            w.writerow([scene, 0.1, *(value(i, seed, c) for c in COLUMNS)])
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two seeds of a trained method (with its untrained self) and of a baseline, as sweep trials."""
    root = tmp_path / "runs" / "sweeps" / "heldout" / "trials"
    for seed in (0, 1):
        trial = root / f"m{seed}"
        # trained: beats its untrained self on scenes 0..2, loses scene 3, ties scene 4; beats the baseline on 0..2
        _stage(trial, "method", "trained", seed, lambda i, s, c: 10.0 + s - (7.0 if i > 2 else 0.0) + 0.1 * i)
        _stage(trial, "method", "untrained", seed, lambda i, s, c: 5.0 + 0.1 * i if i < 4 else 10.0 + s - 7.0 + 0.4)
        _stage(root / f"b{seed}", "baseline_x", "baseline", seed, lambda i, s, c: 8.0)
    return tmp_path / "runs" / "sweeps" / "heldout"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_rows_are_recipe_stages_with_seed_std_and_scene_intervals(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["compare", str(sweep), "--test", "-o", str(out), "--no_pdf",
                 "--reference", "untrained_self=@untrained", "--reference", "no_hallucination=baseline_x"]) == 0
    rows = {r["method"]: r for r in _read(out / "table_linear.csv")}
    assert set(rows) == {"method/trained", "method/untrained", "baseline_x/baseline"}
    trained = rows["method/trained"]
    per_seed = [sum(10.0 + s - (7.0 if i > 2 else 0.0) + 0.1 * i for i in range(5)) / 5 for s in (0, 1)]
    assert trained["n"] == "2"
    assert float(trained["test/pu21_psnr_mean"]) == pytest.approx(sum(per_seed) / 2)
    assert float(trained["test/pu21_psnr_std"]) == pytest.approx(math.sqrt(0.5))  # seeds differ by 1.0
    # 95 % interval over the scenes of the per-scene values averaged over the two seeds
    scene_means = [10.5 - (7.0 if i > 2 else 0.0) + 0.1 * i for i in range(5)]
    _, low, high = mean_ci(scene_means)
    assert float(trained["test/pu21_psnr_ci_low"]) == pytest.approx(low)
    assert float(trained["test/pu21_psnr_ci_high"]) == pytest.approx(high)
    text = (out / "table.md").read_text()
    assert "±" in text and "[" in text

    per_scene = (out / "per_scene.md").read_text()
    # the untrained self is resolved per trial (same seed): 3 wins, 1 tie of 5 for both seeds
    assert "| method/trained (seed 0) | 3 / 5 (1) |" in per_scene
    assert "| method/trained (seed 1) | 3 / 5 (1) |" in per_scene
    # the baseline by label, matched by seed: scenes 0..2 won (10.x > 8), 3 and 4 lost
    line = next(ln for ln in per_scene.splitlines() if ln.startswith("| method/trained (seed 0) |"))
    assert line.split("|")[4].strip() == "3 / 5 (0)"
    # a run is never compared with itself, and the baseline has no untrained self: no row for it
    assert not any(ln.startswith("| baseline_x/baseline (seed 0) | ") and "/ 5" in ln
                   for ln in per_scene.split("## Per-scene values")[0].splitlines())
    html = (out / "index.html").read_text()
    assert "resolved per run" in html and "method/trained" in html
    assert "test runs" in capsys.readouterr().out


def test_config_differences_describe_the_test_stages_one_column_per_label(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["compare", str(sweep), "--test", "-o", str(out), "--no_pdf"]) == 0
    rows = _read(out / "config_diff.csv")
    header = list(rows[0])
    # six test runs, two seeds each: one column per row label, its seeds listed in one cell
    assert header[0] == "key" and sorted(header[1:]) == ["baseline_x/baseline", "method/trained", "method/untrained"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["seed_everything"]["method/trained"] == "0, 1"
    assert by_key["stage.checkpoint"]["method/trained"] == "${stage:fit.best}"
    assert by_key["stage.checkpoint"]["method/untrained"] == "initial weights"
    assert by_key["stage.args.model.init_args.prediction"]["method/untrained"] == "(absent)"
    assert by_key["recipe"]["baseline_x/baseline"] == "baseline_x"
    assert "recipe.max_samples" not in by_key  # the same in every run
    html = (out / "index.html").read_text()
    assert "initial weights" in html and "model.prediction" in html


def test_reference_errors_are_one_line(sweep: Path, tmp_path: Path, capsys) -> None:
    assert main(["compare", str(sweep), "--test", "-o", str(tmp_path / "r"), "--reference", "x=nothing_like_this"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no compared test run is labelled 'nothing_like_this'" in err[0]
    assert main(["compare", str(sweep), "--test", "-o", str(tmp_path / "r"), "--reference", "x=@nope"]) == 2
    assert "no recipe run has a test stage 'nope'" in capsys.readouterr().err
    assert main(["compare", str(sweep), "--test", "--metric", "val/pu21_psnr", "-o", str(tmp_path / "r")]) == 2
    assert "use a test/* name" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), "--test"]) == 2
    assert "holds no test_per_sample.csv" in capsys.readouterr().err


def test_validation_compare_leaves_test_runs_out(sweep: Path, tmp_path: Path, capsys) -> None:
    """Without --test, test runs are not failed fits: a folder of test runs only is one error line."""
    assert main(["compare", str(sweep), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds only test runs (6); compare them with --test" in err[0]
