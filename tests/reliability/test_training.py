"""Reliability battery of training-side commands, run as a user would (``python -m hdrlab``):
sizes checked against memory before anything is allocated, the memory planner's refusals,
``fit --on_nonfinite`` and checkpoints that never hold NaN/inf."""

from __future__ import annotations

import re

import torch

from tests.reliability.harness import REPO, assert_clean_failure, run_cli, snapshot

TINY = REPO / "experiments" / "overrides" / "tiny.yaml"
NONFINITE = REPO / "tests" / "reliability" / "nonfinite.yaml"


def _fit_nonfinite(run_dir, *extra, subprocess=False):
    return run_cli("fit", "--config", NONFINITE, "--config", TINY, "--wandb", "disabled", "--run_dir", run_dir,
                   "--checkpoint_every_n_steps", "2", *extra, env={"PYTHONPATH": str(REPO)}, subprocess=subprocess)


def _finite(path) -> bool:
    ckpt = torch.load(path, weights_only=True)
    tensors = list(ckpt["state_dict"].values())
    for state in ckpt.get("optimizer_states", []):
        for entry in state["state"].values():
            tensors += [v for v in entry.values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def test_synth_huge_size_is_refused_before_anything_is_written(tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("synth", "--size", "20000x20000", "-o", tmp_path / "out")
    assert_clean_failure(result, code=2, names=("--size 20000x20000", "largest that fits"), before=before,
                         watch=(tmp_path,))
    assert not (tmp_path / "out").exists()


def test_synth_size_beyond_the_available_memory_names_the_largest_that_fits(tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("synth", "--size", "512x256", "--count", "2", "-o", tmp_path / "out",
                     env={"HDRLAB_AVAILABLE_MEMORY": "16MiB"})
    assert_clean_failure(result, code=2, names=("--size 512x256",), before=before, watch=(tmp_path,))
    h, w = map(int, re.search(r"largest that fits is --size (\d+)x(\d+)", result.stderr).groups())
    assert abs(h - 2 * w) <= 1 and 16 <= w < 256  # the same aspect ratio, smaller
    ok = run_cli("synth", "--size", f"{h}x{w}", "--count", "2", "-o", tmp_path / "out",
                 env={"HDRLAB_AVAILABLE_MEMORY": "16MiB"})
    assert ok.returncode == 0, ok.stderr[-1500:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["contact_sheet.png", "scene_0.exr", "scene_1.exr"]


def test_demo_huge_size_is_refused_before_anything_is_written(tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("demo", "--size", "100000", "--out", tmp_path / "demo")
    assert_clean_failure(result, code=2, names=("--size 100000", "largest that fits"), before=before,
                         watch=(tmp_path,))


def test_budget_too_small_for_le2023_names_the_smallest_working_budget():
    args = ("budget", "--config", "experiments/le2023.yaml", "--config", TINY, "--precisions", "")
    result = run_cli(*args, "--memory_budget", "560MiB")
    assert_clean_failure(result, code=2, names=("560.00 MiB is too small", "batch 2, patch 64"))
    needed = int(re.search(r"use --memory_budget (\d+)MiB", result.stderr).group(1))
    assert 560 < needed < 4096


def test_budget_zero_is_refused():
    result = run_cli("budget", "--config", "experiments/le2023.yaml", "--memory_budget", "0")
    assert_clean_failure(result, code=2, names=("--memory_budget '0'", "positive"))


def test_budget_garbage_is_refused():
    result = run_cli("budget", "--config", "experiments/le2023.yaml", "--memory_budget", "lots")
    assert_clean_failure(result, code=2, names=("--memory_budget 'lots'",))


def test_fit_on_nonfinite_banana_is_refused(tmp_path):
    before = snapshot(tmp_path)
    result = _fit_nonfinite(tmp_path / "run", "--on_nonfinite", "banana")
    assert_clean_failure(result, code=2, names=("on_nonfinite", "banana"), before=before, watch=(tmp_path,))


def test_fit_going_nonfinite_stops_naming_the_step_without_a_nonfinite_checkpoint(tmp_path):
    result = _fit_nonfinite(tmp_path / "run")
    assert_clean_failure(result, code=1, names=("global step 3", "train/loss/log_l1", "net.0.weight",
                                                "--on_nonfinite skip"))
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in ckpts] == ["last.ckpt", "step0000002.ckpt"]
    assert torch.load(ckpts[0], weights_only=True)["global_step"] == 3  # the weights before the NaN step
    assert all(_finite(p) for p in ckpts)


def test_fit_on_nonfinite_skip_skips_the_step_and_finishes(tmp_path):
    # a subprocess: the skip warnings go to its stderr (in this process pytest captures warnings)
    result = _fit_nonfinite(tmp_path / "run", "--on_nonfinite", "skip", "--model.init_args.nan_until_step", "5",
                            subprocess=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped the optimizer step at global step 3" in result.stderr
    assert "skipped the optimizer step at global step 4" in result.stderr and "2 step(s) skipped" in result.stderr
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 6 and _finite(last)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("NonFiniteGuard")]
    assert state == {"skipped": 2}
