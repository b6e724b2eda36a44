"""Every experiment file, found by discovery (``experiments/*.yaml``), is verified end to end:

* it parses and names a method (``model.class_path``);
* ``hdrlab info --json`` succeeds at full size (FakeTensor: no parameter memory) and reports the
  trainable parameters and the declared stride;
* a ``fast_dev_run`` fit with the tiny override succeeds (a method without trainable parameters is
  validated instead, and ``fit`` refuses it with a clear error);
* the memory estimator runs at tiny size (width 1/8, batch 2, 64 px rounded up to the stride) and
  its stride equals the one the module declares.

A new experiment file is covered by adding it; nothing here names one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hdrlab.budget.methods import method_estimator
from hdrlab.cli import build_cli, main

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
TINY = REPO / "experiments" / "overrides" / "tiny.yaml"

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_experiment_folder_is_not_empty():
    assert len(EXPERIMENTS) >= 8, [p.name for p in EXPERIMENTS]


def test_no_experiment_pins_an_accelerator():
    """Experiments leave the device to Lightning's default (``auto``: a GPU when there is one);
    ``--trainer.accelerator`` chooses one for a run."""
    for path in [*EXPERIMENTS, *sorted((REPO / "experiments" / "overrides").glob("*.yaml"))]:
        trainer = yaml.safe_load(path.read_text()).get("trainer") or {}
        assert "accelerator" not in trainer, f"{path.name} pins trainer.accelerator: {trainer['accelerator']}"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_file(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config.get("model"), dict) and "." in config["model"]["class_path"], path.name

    assert main(["info", "--config", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == config["model"]["class_path"].rsplit(".", 1)[-1]
    assert info["output_domain"] in ("linear", "display") and info["flops"] >= 0
    declared_stride = info["stride"]
    assert declared_stride >= 1
    trainable = info["parameters"]["total"] > 0

    common = ["--config", str(path), "--config", str(TINY), "--trainer.fast_dev_run", "true", "--wandb", "disabled"]
    if trainable:
        assert info["parameters"]["subnetworks"] and sum(info["parameters"]["subnetworks"].values()) <= info["parameters"]["total"]
        cli = build_cli(["fit", *common, "--run_dir", str(tmp_path / "fit")])
        assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
        assert cli.model.stride == declared_stride
    else:
        cli = build_cli(["validate", *common, "--run_dir", str(tmp_path / "validate")])
        assert any(k.startswith("val/") for k in cli.trainer.callback_metrics)
        assert main(["fit", *common, "--run_dir", str(tmp_path / "fit")]) == 2
        assert "no trainable parameters" in capsys.readouterr().err

    data = config["data"]["init_args"]
    full = method_estimator([path], width=0.125)  # the paper's patch and effective batch
    accumulate = (config.get("trainer") or {}).get("accumulate_grad_batches", 1)
    assert (full.paper_patch, full.effective_batch) == (data["patch_size"], data["batch_size"] * accumulate)
    estimator = method_estimator([path, TINY], width=0.125)
    assert estimator.stride == declared_stride and estimator.trainable == trainable
    if trainable:
        patch = declared_stride * max(1, math.ceil(64 / declared_stride))  # the tiny override's patch
        estimate = estimator.estimate(batch=2, patch=patch)
        assert estimate.peak_bytes > 0
