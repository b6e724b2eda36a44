"""The training entry point end to end with a plumbing-only method (``tests/support/plumbing.py``):
run folders, summary, exact resume (mid-epoch and after an interrupt), DDP on 2 CPU processes,
config errors. Paper methods have their own tests; this file checks the machinery they share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from hdrlab.cli import build_cli

REPO = Path(__file__).resolve().parents[1]
PLUMBING = str(REPO / "tests" / "support" / "plumbing.yaml")
TINY = str(REPO / "experiments" / "overrides" / "tiny.yaml")
BASE = ["--config", PLUMBING, "--config", TINY, "--wandb", "disabled", "--trainer.deterministic", "true",
        "--trainer.log_every_n_steps", "1",
        "--trainer.check_val_every_n_epoch", "100", "--trainer.val_check_interval", "null"]


def _fit(run_dir: Path, *extra: str) -> None:
    build_cli(["fit", *BASE, "--run_dir", str(run_dir), *extra])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_run_folder_layout_and_summary(tmp_path):
    run = tmp_path / "run"
    build_cli(["fit", "--config", PLUMBING, "--config", TINY, "--wandb", "offline", "--run_dir", str(run),
               "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1", "--checkpoint_every_n_steps", "2"])
    for item in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "wandb", "previews", "summary.json"):
        assert (run / item).exists(), item
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 4 and summary["samples_seen"] == 8
    assert summary["seed"] == 0 and torch.__version__.startswith(summary["versions"]["torch"])
    assert summary["deterministic"]["torch_deterministic_algorithms"] is False
    assert summary["trainable_parameters"] == (3 * 9 * 2 + 2) + (2 * 9 * 3 + 3)  # two 3x3 convs at width 1/8
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/loss/log_l1", "train/samples_seen", "val/psnr_mu", "val/psnr_mu_clipped"} <= set(header)
    assert list((run / "previews").glob("*.png"))


def test_resume_mid_epoch_is_exact(tmp_path):
    """Train 10 steps vs 6 + resume to 10 (the epoch has 4 batches, so step 6 is mid-epoch)."""
    _fit(tmp_path / "a", "--trainer.max_steps", "10", "--checkpoint_every_n_steps", "1")
    _fit(tmp_path / "b", "--trainer.max_steps", "6", "--checkpoint_every_n_steps", "1")
    first = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    _fit(tmp_path / "b", "--trainer.max_steps", "10", "--checkpoint_every_n_steps", "1", "--ckpt_path", "last")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["samples_seen"] == 20 and summary["global_step"] == 10
    # wall time counts both processes: this one plus the first one's, stored in its step-6 checkpoint
    (stored,) = [v["wall_time_s"] for k, v in first["callbacks"].items() if k.startswith("RunSummary")]
    assert stored > 0
    assert summary["wall_time_s"] == pytest.approx(stored + summary["wall_time_process_s"], abs=2e-3)
    # the resumed run appended to its metrics.csv: rows of both processes, steps increasing
    import csv

    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps and steps == sorted(steps) and min(steps) < 5 < max(steps)


def test_resume_in_a_moved_run_folder_overwrites_last_ckpt(tmp_path):
    """A run folder copied elsewhere and resumed there keeps ``checkpoints/last.ckpt`` current.

    Lightning restores ``ModelCheckpoint``'s ``last_model_path`` only when the checkpoint's dirpath
    equals the new one; otherwise its version counter used to write ``last-v1.ckpt`` and leave a
    stale ``last.ckpt`` behind for every later reader (``--ckpt_path last``, ``reconstruct``)."""
    _fit(tmp_path / "a", "--trainer.max_steps", "10", "--checkpoint_every_n_steps", "1")
    _fit(tmp_path / "b", "--trainer.max_steps", "6", "--checkpoint_every_n_steps", "1")
    shutil.copytree(tmp_path / "b", tmp_path / "moved")
    _fit(tmp_path / "moved", "--trainer.max_steps", "10", "--checkpoint_every_n_steps", "1", "--ckpt_path", "last")
    names = sorted(f.name for f in (tmp_path / "moved" / "checkpoints").glob("last*.ckpt"))
    assert names == ["last.ckpt"]
    assert torch.load(tmp_path / "moved" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    a, moved = _weights(tmp_path / "a"), _weights(tmp_path / "moved")
    assert all(torch.equal(a[k], moved[k]) for k in a)


@pytest.mark.parametrize("keep_best", [False, True])
def test_last_ckpt_holds_the_final_weights_when_the_budget_ends_between_checkpoints(tmp_path, keep_best):
    """A run stopped by ``--max_samples`` mid-epoch (7 steps, 4 batches an epoch) between step
    checkpoints (every 4) writes ``last.ckpt`` at step 7, with the weights of a run checkpointed
    every step - also with ``--keep_best_by`` validating every 2 steps. Without --keep_best_by it
    used to stay at step 4."""
    _fit(tmp_path / "a", "--trainer.max_steps", "7", "--checkpoint_every_n_steps", "1")
    extra = (["--trainer.check_val_every_n_epoch", "1", "--trainer.val_check_interval", "2",
              "--keep_best_by", "val/psnr_mu"] if keep_best else [])
    _fit(tmp_path / "b", "--max_samples", "14", "--trainer.max_steps", "100", "--checkpoint_every_n_steps", "4", *extra)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["samples_seen"] == 14
    assert summary["metrics"]["train/samples_seen"] == 14.0  # the budget's batch logs its final values
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming a run that met its budget trains no further batch
    _fit(tmp_path / "b", "--max_samples", "14", "--trainer.max_steps", "100", "--checkpoint_every_n_steps", "4",
         *extra, "--ckpt_path", "last")
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7
    assert all(torch.equal(a[k], v) for k, v in _weights(tmp_path / "b").items())


def test_last_ckpt_holds_the_final_weights_when_max_epochs_ends_between_checkpoints(tmp_path):
    """A run stopped by ``max_epochs`` (2 epochs of 4 batches) between step checkpoints (every 3)
    writes ``last.ckpt`` at the epoch end it stops on (step 8), with the weights of a run stopped by
    ``max_steps`` 8 and checkpointed every step."""
    _fit(tmp_path / "a", "--trainer.max_steps", "8", "--checkpoint_every_n_steps", "1")
    _fit(tmp_path / "b", "--trainer.max_epochs", "2", "--trainer.max_steps", "-1", "--checkpoint_every_n_steps", "3")
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Interrupt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupt_writes_checkpoint_and_resumes_exactly(tmp_path):
    """A Ctrl-C at step 5 (no periodic checkpoint since step 4) still resumes to the same weights."""
    _fit(tmp_path / "a", "--trainer.max_steps", "9", "--checkpoint_every_n_steps", "4")
    cli = build_cli([*BASE, "--run_dir", str(tmp_path / "b"), "--trainer.max_steps", "9",
                     "--checkpoint_every_n_steps", "4"], run=False)
    cli.trainer.callbacks.append(_Interrupt(5))
    with pytest.raises(SystemExit):  # Lightning shuts down gracefully on Ctrl-C, then exits 1
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    _fit(tmp_path / "b", "--trainer.max_steps", "9", "--checkpoint_every_n_steps", "4", "--ckpt_path", "last")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _run(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "hdrlab", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=timeout)


def test_ddp_two_cpu_processes_one_step(tmp_path):
    proc = _run(["fit", "--config", PLUMBING, "--config", TINY, "--wandb", "disabled", "--run_dir", str(tmp_path / "r"),
                 "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
                 "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "null"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr + proc.stdout
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["samples_seen"] == 4  # batch 2 on each of 2 processes


def test_unknown_config_key_is_a_clear_error(tmp_path):
    proc = _run(["fit", "--config", PLUMBING, "--model.init_args.widht", "0.5", "--run_dir", str(tmp_path / "r")], tmp_path)
    assert proc.returncode != 0
    assert "widht" in proc.stderr


@pytest.mark.parametrize("bad", ["--max_samples=-1x", "--trainer.max_steps=abc"])
def test_bad_values_are_clear_errors(tmp_path, bad):
    proc = _run(["fit", "--config", PLUMBING, bad, "--run_dir", str(tmp_path / "r")], tmp_path)
    assert proc.returncode != 0 and bad.split("=")[0].lstrip("-") in proc.stderr


def test_out_of_memory_steps_the_plan_down_once_and_resumes(tmp_path, capsys):
    """An injected CUDA OOM at step 3 under --memory_budget: the plan steps down once (here: a
    fp32 -> bf16 autocast, the first rung), training continues from the checkpoint written at the
    failure, and the run finishes its budget. The CUDA cap itself is untested here (no GPU)."""
    from hdrlab.cli import main

    run = tmp_path / "r"
    code = main(["fit", *BASE, "--run_dir", str(run), "--trainer.max_steps", "5", "--memory_budget", "1GiB",
                 "--model.init_args.oom_once_at_step", "3", "--model.init_args.oom_marker", str(tmp_path / "fired")])
    assert code == 0 and (tmp_path / "fired").exists()
    err = capsys.readouterr().err
    assert "stepping the plan down once" in err
    first, second = [line for line in err.splitlines() if line.startswith("memory budget:")]
    assert "precision 32" in first and "precision bf16-mixed" in second and "oom-step-down" in second
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["global_step"] == 5


def test_experiment_name_comes_from_the_config_file_not_inline_text(tmp_path):
    cli = build_cli(["--config", str(REPO / "experiments" / "baseline_inverse_crf.yaml"),
                     "--config", "{trainer: {max_steps: 3}}", "--wandb", "disabled",
                     "--runs_root", str(tmp_path / "runs"), "--run_id", "r"], run=False)
    assert (tmp_path / "runs" / "baseline_inverse_crf" / "r").is_dir()
    assert cli.trainer.max_steps == 3


def test_keep_best_by_keeps_the_best_validation_checkpoint_across_a_resume(tmp_path):
    """``--keep_best_by``: ``checkpoints/best.ckpt`` is the step with the best validation value, also
    when the run stopped right after its best validation and was resumed (a worse later step must
    not replace it); ``--ckpt_path last`` still resumes from last.ckpt."""
    run = tmp_path / "run"
    scores = [0.0, 0.0, 1.0, 0.0, 3.0, 0.0, 2.0, 0.0, 0.0]  # by global step: validations at 2, 4, 6, 8
    # validate every 2 steps (BASE switches validation off; later flags win)
    keep = [*BASE, "--trainer.check_val_every_n_epoch", "1", "--trainer.val_check_interval", "2",
            "--keep_best_by", "val/scripted", "--checkpoint_every_n_steps", "2",
            "--model.init_args.scripted_val_scores", json.dumps(scores)]
    build_cli(["fit", *keep, "--run_dir", str(run), "--trainer.max_steps", "4"])
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 4
    build_cli(["fit", *keep, "--run_dir", str(run), "--trainer.max_steps", "8", "--ckpt_path", "last"])
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 4
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    # min mode picks the lowest
    low = tmp_path / "low"
    build_cli(["fit", *keep, "--run_dir", str(low), "--trainer.max_steps", "8", "--keep_best_mode", "min"])
    assert torch.load(low / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 8


def test_optimizer_is_configuration_method_default_or_lightningcli_section(tmp_path):
    """The method's declared optimizer is the default; LightningCLI's top-level ``optimizer:`` /
    ``lr_scheduler:`` sections replace it, and the memory estimator counts the one that runs."""
    import torch

    from hdrlab.budget.methods import estimator_from_config, load_experiment_config

    cli = build_cli(["fit", *BASE, "--run_dir", str(tmp_path / "a"), "--trainer.max_steps", "1",
                     "--model.init_args.optimizer", "adamw", "--model.init_args.weight_decay", "0.01"])
    (opt,) = cli.trainer.optimizers
    assert type(opt) is torch.optim.AdamW and opt.defaults["weight_decay"] == 0.01
    cli = build_cli(["fit", *BASE, "--run_dir", str(tmp_path / "b"), "--trainer.max_steps", "1",
                     "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.05",
                     "--lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--lr_scheduler.step_size", "3"])
    (opt,) = cli.trainer.optimizers
    assert type(opt) is torch.optim.SGD and opt.defaults["lr"] == 0.05
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler) is torch.optim.lr_scheduler.StepLR
    config = load_experiment_config([PLUMBING])
    assert estimator_from_config(config).optimizer == "adam"
    config["optimizer"] = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}}
    assert estimator_from_config(config).optimizer == "sgd"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", PLUMBING, "--model.init_args.widht", "0.5"], "Option 'widht' is not accepted"),
        (["--config", str(REPO / "experiments" / "missing.yaml")], "File does not exist"),
        (["--config", str(REPO / "experiments" / "le2023_cfnet.yaml"), "--config", TINY,
          "--model.init_args.merger_loss", "hdr"], "merger_loss='hdr' compares radiance"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(tmp_path, capsys, args, expected):
    """Bad keys, missing files and errors raised while building the model end in one line (exit 2)."""
    from hdrlab.cli import main

    code = main(["fit", *args, "--wandb", "disabled", "--run_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len([ln for ln in err if ln.startswith("hdrlab fit: error:")]) == 1, err
    assert expected in err[-1] and "Traceback" not in "\n".join(err)


def test_missing_pretrained_trunk_names_the_file_and_the_switch(tmp_path, capsys, monkeypatch):
    from hdrlab.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    code = main(["fit", "--config", str(REPO / "experiments" / "singlehdr.yaml"), "--config", TINY,
                 "--pretrained_trunks", "true", "--wandb", "disabled", "--run_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "vgg16-397923af.pth" in err and "--pretrained_trunks false" in err
    assert "Traceback" not in err and "Namespace(" not in err


def test_fractional_lr_milestones_scale_with_the_sample_budget(tmp_path):
    """``lr_milestones`` in (0, 1) are fractions of the planned steps: with ``--max_samples`` the
    budget over the batch size (here 24 samples / batch 2 = 12 steps: 0.25 -> step 3, 0.5 -> 6)."""
    cli = build_cli(["fit", *BASE, "--run_dir", str(tmp_path / "a"), "--max_samples", "24", "--trainer.max_steps", "100",
                     "--model.init_args.lr_milestones", "[0.25, 0.5]", "--model.init_args.lr_gamma", "0.5"])
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert sorted(scheduler.milestones) == [3, 6] and cli.trainer.global_step == 12
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(cli.model.lr * 0.25)
    with pytest.raises(Exception, match="neither a step"):
        build_cli(["fit", *BASE, "--run_dir", str(tmp_path / "b"), "--trainer.max_steps", "1",
                   "--model.init_args.lr_milestones", "[1.5]"])


# ---------------------------------------------------------------- per-step cost of the default callbacks
def test_extra_train_values_are_logged_on_logging_steps_and_at_the_end(tmp_path):
    """The loss terms, ``train/samples_seen`` and ``train/throughput`` / ``train/peak_memory_mb`` are
    logged on Lightning's logging steps (every 2nd here) and on the batch that ends the fit (step 5 of
    4-batch epochs, not a logging step), so metrics.csv has them at every logged step and summary.json
    ends with their final values; the loss itself is logged at every step (progress bar)."""
    import csv

    run = tmp_path / "run"
    _fit(run, "--trainer.max_steps", "5", "--trainer.log_every_n_steps", "2", "--checkpoint_every_n_steps", "100")
    with (run / "metrics.csv").open(newline="") as f:
        every = list(csv.DictReader(f))
    rows = [r for r in every if r.get("train/loss")]
    assert len(rows) == 2  # steps 2 and 4
    for key in ("train/loss/log_l1", "train/samples_seen", "train/throughput", "train/peak_memory_mb"):
        assert all(r.get(key) for r in rows), key
    assert len([r for r in every if r.get("lr-Adam")]) == 2  # the learning-rate monitor's rows
    assert [float(r["train/samples_seen"]) for r in rows] == [4.0, 8.0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["train/samples_seen"] == 10.0 and summary["samples_seen"] == 10
    assert summary["metrics"]["train/throughput"] > 0 and "train/loss/log_l1" in summary["metrics"]


def test_logging_batch_follows_lightnings_logging_steps():
    from types import SimpleNamespace

    from hdrlab.callbacks.steps import logging_batch

    def trainer(should_update_logs=False, is_last_batch=False, max_steps=-1, global_step=3, max_samples=None, seen=0):
        loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(is_last_batch=is_last_batch)))
        return SimpleNamespace(_logger_connector=SimpleNamespace(should_update_logs=should_update_logs),
                               fit_loop=loop, max_steps=max_steps, global_step=global_step,
                               callbacks=[SimpleNamespace(max_samples=max_samples)],
                               lightning_module=SimpleNamespace(samples_seen=seen))

    assert not logging_batch(trainer(), stepped=True)
    assert logging_batch(trainer(should_update_logs=True), stepped=True)
    assert logging_batch(trainer(is_last_batch=True), stepped=False)
    # the batch reaching max_steps: before its optimizer step (training_step) and after it (batch end)
    assert logging_batch(trainer(max_steps=4, global_step=3), stepped=False)
    assert not logging_batch(trainer(max_steps=4, global_step=3), stepped=True)
    assert logging_batch(trainer(max_steps=4, global_step=4), stepped=True)
    # the batch that meets --max_samples (the module has counted it already)
    assert not logging_batch(trainer(max_samples=14, seen=12), stepped=False)
    assert logging_batch(trainer(max_samples=14, seen=14), stepped=False)
    assert logging_batch(None, stepped=True)  # no trainer attached: log


class _GuardedModule(torch.nn.Module):
    """What :class:`NonFiniteGuard` uses of a LightningModule: parameters, ``last_train_terms``, ``log``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 2)
        self.extra = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # another dtype: a second group
        self.last_train_terms = None
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kwargs) -> None:
        self.logged[name] = value


def _grads(module, value=1.0):
    for p in module.parameters():
        p.grad = torch.full_like(p, value)


def test_nonfinite_guard_checks_terms_gradients_and_weights():
    from types import SimpleNamespace

    from hdrlab.callbacks.nonfinite import NonFiniteError, NonFiniteGuard

    module = _GuardedModule()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = SimpleNamespace(precision="32-true", global_step=7, callback_metrics={})
    guard = NonFiniteGuard("stop")
    guard.on_train_start(trainer, module)
    # a finite step passes; the method's record of its terms is consumed
    module.last_train_terms = {"train/loss": torch.tensor(1.0), "train/loss/a": torch.tensor(0.5)}
    guard.on_after_backward(trainer, module)
    assert module.last_train_terms is None
    _grads(module)
    guard.on_before_optimizer_step(trainer, module, optimizer)
    optimizer.step()
    guard.on_train_batch_end(trainer, module)
    # non-finite loss terms are named
    module.last_train_terms = {"train/loss": torch.tensor(float("nan")), "train/loss/a": torch.tensor(float("inf")),
                               "train/loss/b": torch.tensor(0.0)}
    guard.on_after_backward(trainer, module)
    with pytest.raises(NonFiniteError, match=r"global step 7: non-finite loss train/loss, train/loss/a;"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    # without the method's record: the terms of callback_metrics
    guard.on_train_start(trainer, module)
    trainer.callback_metrics = {"train/loss": torch.tensor(1.0), "train/loss/c": torch.tensor(float("nan")),
                                "train/other": torch.tensor(float("nan"))}
    guard.on_after_backward(trainer, module)
    with pytest.raises(NonFiniteError, match=r"non-finite loss train/loss/c;"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    trainer.callback_metrics = {}
    # a non-finite gradient is named (the float64 parameter)
    guard.on_train_start(trainer, module)
    _grads(module)
    module.extra.grad[1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"non-finite gradient of extra;"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    # weights that turn non-finite in the optimizer step are named at the batch end
    guard.on_train_start(trainer, module)
    _grads(module)
    guard.on_before_optimizer_step(trainer, module, optimizer)
    with torch.no_grad():
        module.net.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"weights net.weight became non-finite"):
        guard.on_train_batch_end(trainer, module)


def test_nonfinite_guard_skip_drops_the_gradients_and_counts():
    from types import SimpleNamespace

    from hdrlab.callbacks.nonfinite import NonFiniteGuard

    module = _GuardedModule()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    trainer = SimpleNamespace(precision="32-true", global_step=2, callback_metrics={})
    guard = NonFiniteGuard("skip")
    guard.on_train_start(trainer, module)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    _grads(module, float("inf"))
    with pytest.warns(UserWarning, match="skipped the optimizer step at global step 2"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    assert all(p.grad is None for p in module.parameters()) and guard.skipped == 1
    optimizer.step()
    guard.on_train_batch_end(trainer, module)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert module.logged == {"train/nonfinite_skips": 1.0}


def test_all_finite_fused_check_and_its_fallback_agree(monkeypatch):
    from hdrlab.callbacks import nonfinite

    nan, inf = float("nan"), float("inf")
    cases = [
        ([torch.ones(3), torch.zeros(2, 2, dtype=torch.float64)], True),
        ([torch.ones(3), torch.tensor([1.0, nan])], False),
        ([torch.ones(4, 4)[:, ::2], torch.tensor(-inf, dtype=torch.bfloat16)], False),
        ([torch.tensor(3), torch.tensor([True])], True),  # not floating point: nothing to check
        ([torch.tensor(3), torch.tensor(inf)], False),  # integers next to floats: grouped
        ([], True),
    ]
    for tensors, finite in cases:
        assert nonfinite._all_finite(tensors) is finite
    parameter = torch.nn.Parameter(torch.ones(3))
    assert nonfinite._all_finite([parameter]) and parameter._version == 0  # leaves a parameter as it is

    def refuse(*args, **kwargs):
        raise NotImplementedError("no fused check here")

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", refuse, raising=False)
    for tensors, finite in cases:
        assert nonfinite._all_finite(tensors) is finite
    monkeypatch.setattr(nonfinite, "_CHUNK", 2)  # several chunks per group
    for tensors, finite in cases:
        assert nonfinite._all_finite(tensors) is finite
