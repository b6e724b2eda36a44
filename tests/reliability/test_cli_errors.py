"""Hostile command lines: every bad input ends in one ``error:`` line, the right exit status, no
traceback, the offending thing named, and nothing written (:mod:`tests.reliability.harness`).

Covers the single error path of ``hdrlab.cli.main`` (exit 2 for input errors, 1 for runtime
failures and bugs, ``--debug``), validation before work (checkpoints, output folders, devices,
memory budgets, photos of a folder, ``fit``'s run folder), and sweeps checked through the CLI
parser before their first trial (also from another working folder).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from .harness import REPO, assert_clean_failure, run_cli, snapshot

EXPANDNET = {"class_path": "hdrlab.methods.ExpandNetMethod", "init_args": {"width": 0.125}}
HDRCNN = {"class_path": "hdrlab.methods.HDRCNNMethod", "init_args": {"width": 0.125, "pretrained_encoder": False}}


class _Evil:
    """Unpickles into a shell command: what a weights-only load must refuse."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _lightning_checkpoint(model_cfg: dict, class_path: str | None = None) -> dict:
    from hdrlab.methods.build import build_method

    method = build_method(model_cfg, files=False)
    checkpoint = {"state_dict": method.state_dict(), "pytorch-lightning_version": "2.0.0", "epoch": 0,
                  "global_step": 0}
    if class_path:
        checkpoint["hyper_parameters"] = {"_class_path": class_path}
    return checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """An ExpandNet run folder (config.yaml, checkpoints/last.ckpt), bad checkpoints, photos."""
    import cv2

    root = tmp_path_factory.mktemp("inputs")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": EXPANDNET}))
    good = run / "checkpoints" / "last.ckpt"
    torch.save(_lightning_checkpoint(EXPANDNET, "hdrlab.methods.ExpandNetMethod"), good)
    rng = np.random.default_rng(0)
    (run / "checkpoints" / "random.ckpt").write_bytes(rng.bytes(4096))
    data = good.read_bytes()
    (run / "checkpoints" / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": {}, "payload": _Evil()}, run / "checkpoints" / "malicious.ckpt")
    torch.save(_lightning_checkpoint(HDRCNN, "hdrlab.methods.HDRCNNMethod"), run / "checkpoints" / "hdrcnn.ckpt")
    photos = root / "photos"
    photos.mkdir()
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(photos / name), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    (photos / "b.png").write_bytes(b"not a png at all" * 8)
    single = root / "photo.png"
    shutil.copy(photos / "a.png", single)
    return {"run": run, "good": good, "photos": photos, "photo": single, "root": root}


def _reconstruct(files: dict[str, Path], out: Path | str, *extra: str, ckpt: str = "last.ckpt",
                 photo: Path | None = None) -> list[str]:
    return ["reconstruct", str(photo or files["photo"]), "-o", str(out),
            "--ckpt", str(files["run"] / "checkpoints" / ckpt), *extra]


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(("ckpt", "names"), [
    ("random.ckpt", ("random.ckpt", "not a pytorch checkpoint")),
    ("truncated.ckpt", ("truncated.ckpt", "truncated")),
    ("malicious.ckpt", ("malicious.ckpt", "refuses")),
    ("hdrcnn.ckpt", ("hdrcnn.ckpt", "HDRCNNMethod", "ExpandNetMethod")),
])
def test_reconstruct_bad_checkpoint_is_one_line_and_writes_nothing(files, tmp_path, ckpt, names):
    before = snapshot(tmp_path)
    # the malicious pickle through the whole console entry, the others in this process
    result = run_cli(*_reconstruct(files, tmp_path / "out", ckpt=ckpt), cwd=tmp_path,
                     subprocess=ckpt == "malicious.ckpt")
    assert_clean_failure(result, code=2, names=names, before=before, watch=(tmp_path,))
    assert "weights_only=False" not in result.stderr and "net.local_net" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_test_ckpt_path_malicious_pickle_is_refused_in_one_line(files, tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("test", "--config", REPO / "experiments/expandnet.yaml", "--config",
                     REPO / "experiments/overrides/tiny.yaml", "--wandb", "disabled",
                     "--ckpt_path", files["run"] / "checkpoints" / "malicious.ckpt", cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("malicious.ckpt", "--ckpt_path"), before=before, watch=(tmp_path,))
    assert "weights_only" not in result.stderr


# --------------------------------------------------------------------------- outputs and devices
def test_reconstruct_output_is_an_existing_file(files, tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    before = snapshot(tmp_path)
    result = run_cli(*_reconstruct(files, target), cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("taken.txt", "-o", "not a folder"), before=before, watch=(tmp_path,))


def test_reconstruct_output_in_a_read_only_folder(files, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        result = run_cli(*_reconstruct(files, locked / "out"), cwd=tmp_path)
        assert_clean_failure(result, code=2, names=("locked", "not writable"), before=before, watch=(tmp_path,))
    finally:
        locked.chmod(0o755)


def test_synth_output_is_an_existing_file(tmp_path):
    target = tmp_path / "scenes"
    target.write_text("a file")
    before = snapshot(tmp_path)
    result = run_cli("synth", "--count", "1", "--size", "32x32", "-o", target, cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("scenes", "not a folder"), before=before, watch=(tmp_path,))


@pytest.mark.parametrize(("device", "names"), [("cuda:7", ("cuda:7", "cpu")), ("banana", ("banana", "cpu"))])
def test_reconstruct_device_that_does_not_exist(files, tmp_path, device, names):
    before = snapshot(tmp_path)
    result = run_cli(*_reconstruct(files, tmp_path / "out", "--device", device), cwd=tmp_path)
    assert_clean_failure(result, code=2, names=(*names, "--device"), before=before, watch=(tmp_path,))


def test_reconstruct_folder_with_one_bad_photo_writes_nothing(files, tmp_path):
    before = snapshot(tmp_path)
    result = run_cli(*_reconstruct(files, tmp_path / "out", photo=files["photos"]), cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("b.png",), before=before, watch=(tmp_path,))
    assert "a.png" not in result.stdout  # no photo processed before the bad one was found


def test_reconstruct_negative_memory_budget_is_a_value_not_an_option(files, tmp_path):
    before = snapshot(tmp_path)
    result = run_cli(*_reconstruct(files, tmp_path / "out", "--memory_budget", "-4GiB"), cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("--memory_budget", "-4GiB", "must be positive"), before=before,
                         watch=(tmp_path,))
    assert "expected one argument" not in result.stderr


def test_memory_budget_equals_form_in_process(files, tmp_path, capsys):
    from hdrlab.cli import main

    assert main(_reconstruct(files, tmp_path / "out", "--memory_budget=-4GiB")) == 2
    assert "must be positive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- fit, compare
def test_fit_with_a_model_that_cannot_be_built_leaves_no_run_folder(tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("fit", "--config", REPO / "experiments/expandnet.yaml", "--config",
                     REPO / "experiments/overrides/tiny.yaml", "--model.init_args.patch_size", "-5",
                     "--wandb", "disabled", cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("patch_size",), before=before, watch=(tmp_path,))
    assert not (tmp_path / "runs").exists()


def test_fit_binary_config_file(tmp_path):
    config = tmp_path / "weights.yaml"
    config.write_bytes(bytes(range(128, 256)) * 4)
    before = snapshot(tmp_path)
    result = run_cli("fit", "--config", config, cwd=tmp_path, subprocess=True)
    assert_clean_failure(result, code=2, names=("weights.yaml", "--config"), before=before, watch=(tmp_path,))


def test_compare_metric_no_run_logged(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,val/psnr_mu,val/pu21_psnr\n0,10,20.0,30.0\n")
    (run / "summary.json").write_text('{"status": "finished"}')
    before = snapshot(tmp_path)
    result = run_cli("compare", run, "--metric", "val/banana", "--no_pdf", cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("val/banana", "val/psnr_mu", "val/pu21_psnr"), before=before,
                         watch=(tmp_path,))


# --------------------------------------------------------------------------- sweeps
def test_sweep_parameter_typo_fails_before_the_first_trial(tmp_path):
    sweep = tmp_path / "sweeps" / "typo.yaml"
    sweep.parent.mkdir()
    text = (REPO / "sweeps" / "smoke.yaml").read_text()
    sweep.write_text(text.replace("model.init_args.merger_loss:", "model.init_args.merger_los:"))
    before = snapshot(tmp_path)
    result = run_cli("sweep", sweep, "--offline", cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("merger_los", "point 1", "typo.yaml"), before=before,
                         watch=(tmp_path,))
    assert "--retry_failed" not in result.stdout + result.stderr


def test_sweep_binary_file(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    before = snapshot(tmp_path)
    result = run_cli("sweep", sweep, "--offline", cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("sweep.yaml", "not a text"), before=before, watch=(tmp_path,))


def test_sweep_dir_is_an_existing_file(tmp_path):
    target = tmp_path / "state"
    target.write_text("a file")
    before = snapshot(tmp_path)
    result = run_cli("sweep", REPO / "sweeps" / "smoke.yaml", "--offline", "--sweep_dir", target, cwd=tmp_path)
    assert_clean_failure(result, code=2, names=("--sweep_dir", "state"), before=before, watch=(tmp_path,))


def test_sweep_launched_from_another_folder_parses_every_point(tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("sweep", REPO / "sweeps" / "smoke.yaml", "--offline", "--dry_run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 trainer command(s) parsed" in result.stdout
    assert str(REPO / "experiments" / "le2023_debevec.yaml") in result.stdout
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- the error path itself
def _failing_subcommand(monkeypatch, err: BaseException) -> None:
    import types

    from hdrlab import cli

    def main(argv):
        raise err

    module = types.ModuleType("hdrlab_failing_command")
    module.main = main
    monkeypatch.setitem(sys.modules, "hdrlab_failing_command", module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "failing", ("hdrlab_failing_command", "raises"))


@pytest.mark.parametrize(("err", "code", "text"), [
    (ZeroDivisionError("division by zero"), 1, "internal error: ZeroDivisionError: division by zero (run with --debug"),
    (OSError(errno.ENOSPC, "No space left on device", "out.exr"), 1, "no space left on the device writing out.exr"),
    (MemoryError(), 1, "out of memory"),
    (PermissionError(errno.EACCES, "Permission denied", "/x/y.png"), 2, "/x/y.png: Permission denied"),
    (OverflowError("int too large"), 2, "too large"),
])
def test_every_exception_is_one_line_with_its_exit_status(monkeypatch, capsys, err, code, text):
    from hdrlab.cli import main

    monkeypatch.delenv("HDRLAB_DEBUG", raising=False)
    _failing_subcommand(monkeypatch, err)
    assert main(["failing"]) == code
    captured = capsys.readouterr()
    assert captured.err.strip().startswith("hdrlab failing: ") and text in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_debug_reraises_bugs_with_their_traceback(monkeypatch, capsys):
    from hdrlab.cli import main

    monkeypatch.delenv("HDRLAB_DEBUG", raising=False)
    _failing_subcommand(monkeypatch, ZeroDivisionError("boom"))
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "failing"])
    monkeypatch.setenv("HDRLAB_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["failing"])
    _failing_subcommand(monkeypatch, PermissionError(errno.EACCES, "Permission denied", "f"))
    assert main(["--debug", "failing"]) == 2  # user errors stay one line under --debug
