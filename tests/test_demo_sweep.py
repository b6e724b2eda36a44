"""The demo's sweep part through the real entry point: one trial of ``sweeps/smoke.yaml``.

``hdrlab demo ... --sweep_trials 1`` runs the offline agent on the shipped smoke sweep (a real
``hdrlab fit`` subprocess: Le2023 generator at width 1/8 + Debevec merger, 40 steps on procedural
data) and ``hdrlab compare``; the test reads the agent's ``state.json`` and the report's
``table.csv`` back with :mod:`json` / :mod:`csv`, so a broken demo fails CI.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hdrlab.cli import main
from hdrlab.commands import demo


def test_smoke_sweep_file_is_found_from_the_package_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = demo.find_sweep_file("smoke.yaml")
    assert path is not None and path.is_absolute() and path.parent.name == "sweeps"
    assert (path.parents[1] / "experiments" / "le2023_debevec.yaml").is_file()  # what its command names
    assert demo.find_sweep_file("no_such_sweep.yaml") is None


def test_missing_sweep_file_skips_the_part_with_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo, "find_sweep_file", lambda name="smoke.yaml": None)
    assert demo.run_sweep_part(tmp_path / "out", trials=1) == 0
    assert "sweep part skipped" in capsys.readouterr().out
    assert not (tmp_path / "out" / "sweep").exists()


def test_bad_sweep_trials_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--sweep_trials", "0"]) == 2
    assert "--sweep_trials must be >= 1" in capsys.readouterr().err


def test_demo_with_one_sweep_trial_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # the trials must not depend on the caller's working directory
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", "1", "--size", "64", "--no_real", "--no_learned",
                 "--sweep_trials", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| Debevec (bracket, known CRF) |" in printed  # the classical part still ran
    assert (out / "results.json").is_file()
    state = json.loads((out / "sweep" / "state.json").read_text())
    assert [t["state"] for t in state["trials"]] == ["finished"]
    assert state["trials"][0]["launches"] == 1
    report = out / "report"
    assert (report / "index.html").is_file() and (report / "table.md").is_file()
    page = (report / "index.html").read_text()
    assert "Part 1: single image vs bracket" in page and "no hallucination (single image)" in page
    assert all((report / src).is_file() for src in __import__("re").findall(r"src='(part1/[^']+)'", page))
    assert (out / "previews" / "scene_0000_comparison.png").is_file()
    assert "src='part1/scene_0000_comparison.png'" in page and "|log2(Y_output / Y_truth)|" in page
    with (report / "table.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["n"] == "1"
    value = float(rows[0]["val/pu21_psnr_mean"])  # the first grid point uses the linear Debevec merger
    assert math.isfinite(value) and 0.0 < value < 100.0
    summary = json.loads((out / "sweep" / "trials" / state["trials"][0]["id"] / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert "sweep report:" in printed and str(report / "index.html") in printed
    assert "1 runs, 1 groups, 0 failed" in printed
