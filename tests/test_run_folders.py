"""Run folder naming: ``<runs_root>/<experiment>/<run_id>/`` with ``<experiment>`` the stem of the
first ``--config`` file that sets ``model`` (:func:`hdrlab.runs.experiment_name`), for every
trainer subcommand, also when a config holds ``${...}`` interpolations (``omegaconf+`` then drops
jsonargparse's record of the config files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hdrlab.runs import config_args, experiment_name

REPO = Path(__file__).resolve().parents[1]
DEBEVEC = str(REPO / "experiments" / "le2023_debevec.yaml")
TINY = str(REPO / "experiments" / "overrides" / "tiny.yaml")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path):
    model = "model:\n  class_path: hdrlab.methods.X\n"
    return {
        "exp": _write(tmp_path / "experiments" / "exp.yaml", model + "trainer: {max_steps: 1}\n"),
        "other": _write(tmp_path / "experiments" / "other.yaml", model),
        "shared": _write(tmp_path / "experiments" / "shared.yaml", "trainer: {max_steps: 2}\n"),
        "tiny": _write(tmp_path / "experiments" / "overrides" / "tiny.yaml", "width: 0.125\n"),
        "fast": _write(tmp_path / "experiments" / "overrides" / "fast.yaml", "trainer: {max_steps: 1}\n"),
        "override_model": _write(tmp_path / "experiments" / "overrides" / "swap.yaml", model),
    }


def test_model_in_the_first_file(files):
    assert experiment_name([files["exp"], files["tiny"]]) == "exp"
    assert experiment_name([str(files["exp"]), str(files["other"])]) == "exp"  # first one wins


def test_model_only_in_a_later_file(files):
    assert experiment_name([files["tiny"], files["exp"]]) == "exp"
    assert experiment_name([files["shared"], files["tiny"], files["other"]]) == "other"
    # an overrides/ file that sets model still names the experiment
    assert experiment_name([files["shared"], files["override_model"]]) == "swap"


def test_no_model_falls_back_to_the_first_non_override_file_then_default(files):
    assert experiment_name([files["tiny"], files["shared"]]) == "shared"
    assert experiment_name([files["tiny"], files["fast"]]) == "default"
    assert experiment_name([files["tiny"]], default="unnamed") == "unnamed"
    assert experiment_name([]) == "default"


def test_inline_text_entries_are_skipped(files):
    assert experiment_name([None, files["tiny"], None, files["exp"]]) == "exp"
    assert experiment_name([None, None]) == "default"


def test_config_args_reads_every_spelling_and_inline_text(files):
    exp, tiny = str(files["exp"]), str(files["tiny"])
    argv = ["fit", "--config", exp, f"--config={tiny}", "-c", "{trainer: {max_steps: 3}}",
            f"-c{tiny}", f"-c={exp}", "--run_id", "r", "--", "--config", "ignored.yaml"]
    assert config_args(argv) == [exp, tiny, None, tiny, exp]
    # a config: key inside inline text is applied first, as jsonargparse records it
    assert config_args(["--config", f"{{config: {exp}, trainer.max_steps: 3}}"]) == [exp, None]


def _cli(*args: str) -> None:
    from hdrlab.cli import main

    assert main(list(args)) == 0


def test_fit_then_test_write_the_folder_of_the_first_config_that_sets_model(tmp_path):
    # le2023_debevec.yaml holds ${...} interpolations: the case that used to land in default/
    common = ["--config", DEBEVEC, "--config", TINY, "--run_id", "r1", "--runs_root", str(tmp_path),
              "--wandb", "disabled"]
    _cli("fit", *common, "--trainer.fast_dev_run", "true")
    run = tmp_path / "le2023_debevec" / "r1"
    assert (run / "summary.json").is_file()
    # Lightning writes no config.yaml under fast_dev_run: test one batch instead
    _cli("test", *common, "--trainer.limit_test_batches", "1")
    assert (run / "config.yaml").is_file() and (run / "test_per_sample.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["le2023_debevec"]


def test_summary_git_sha_is_the_checkouts_whatever_the_working_directory(tmp_path, monkeypatch):
    import subprocess

    from hdrlab.callbacks.run_artifacts import git_sha

    repo = Path(__file__).resolve().parents[1]
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)  # not a git repository
    assert git_sha() == expected and len(expected) == 40
