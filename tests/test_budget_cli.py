"""Method adapters (hdrlab.budget.methods), the fit-config budget (hdrlab.budget.fit) and ``hdrlab budget``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn

from hdrlab.budget.estimate import measure_peak_memory
from hdrlab.budget.fit import CPU_OVERHEAD, MemoryBudgetCallback, apply_plan, plan_for_fit, plan_metrics
from hdrlab.budget.methods import (
    checkpoint_subnetworks,
    estimator_from_config,
    load_experiment_config,
    method_estimator,
)
from hdrlab.budget.plan import CUDA_OVERHEAD, BudgetError, Plan, checkpointed_blocks
from hdrlab.budget.units import parse_size
from hdrlab.commands import budget as budget_cmd
from hdrlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXP = REPO / "experiments"
PLUMBING = REPO / "tests" / "support" / "plumbing.yaml"
MiB = 2**20


def _plumbing(**data_args) -> dict:
    """The plumbing experiment (a 2-conv method) with data overrides, as a fit-config dict."""
    cfg = load_experiment_config([PLUMBING], width=1.0)
    cfg["data"]["init_args"].update(data_args)
    return cfg


# ------------------------------------------------------------------ adapters


def test_adapter_baseline_and_errors(tmp_path):
    est = method_estimator([EXP / "baseline_inverse_crf.yaml"])
    assert not est.trainable
    with pytest.raises(ConfigError, match="no trainable parameters"):
        est.estimate(batch=1, patch=64)
    with pytest.raises(ConfigError, match="does not exist"):
        method_estimator([tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="network stride 32"):
        method_estimator([EXP / "singlehdr.yaml"], width=0.125, patch=80)


def test_adapter_estimate_matches_real_memtracker():
    """Le2023 (N1 called twice per step, a branch on the bracket's ev values): the adapter's step on
    fake tensors equals the same step on real tensors under MemTracker (observed: identical bytes)."""
    est = method_estimator([EXP / "le2023.yaml"], width=0.125, patch=64)
    fake = est.estimate(batch=2, patch=64)  # batch 1 at 64 px: 1x1 batch-norm input
    real = measure_peak_memory(est.build_model, est.step, est.make_batch, batch=2, patch=64, optimizer=est.optimizer)
    assert abs(fake.peak_bytes - real.peak_bytes) <= 0.02 * real.peak_bytes
    assert fake.by_category["optimizer"] == real.by_category["optimizer"] > 0


def test_full_size_singlehdr_end_to_end(capsys):
    """SingleHDR at full width (paper batch 8) through ``hdrlab budget --config ... --json`` at patch 64."""
    code = budget_cmd.main(["--config", str(EXP / "singlehdr.yaml"), "--patch", "64", "--memory_budget", "24GiB",
                            "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["fits"] and report["method"] == "SingleHDRMethod"
    plan = report["plan"]
    assert (plan["batch"], plan["accumulate"], plan["patch"], plan["precision"], plan["checkpointing"]) == (
        8, 1, 64, "32", False)
    # re-estimated plan == the paper estimate (deterministic) and inside the budget with the allowance
    assert plan["estimated_bytes"] == report["estimate"]["peak_bytes"]
    assert plan["required_bytes"] == CUDA_OVERHEAD.device_bytes(plan["estimated_bytes"]) <= parse_size("24GiB")
    # closed-form parts: fp32 parameters of the whole method (incl. the frozen VGG loss) and Adam's m, v
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hdrlab.commands.info import load_experiment_model

    with FakeTensorMode():  # shapes only
        method = load_experiment_model([str(EXP / "singlehdr.yaml")])
    n_all = sum(p.numel() for p in method.parameters())
    n_trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    n_tensors = sum(1 for _ in method.parameters())
    cats = report["estimate"]["by_category"]
    assert 0 <= cats["param"] - 4 * n_all <= 512 * n_tensors
    assert 0 <= cats["optimizer"] - 8 * n_trainable <= 512 * 3 * n_tensors
    assert report["estimate"]["flops_per_step"] > 0


# ------------------------------------------------------------------ plan_for_fit / apply_plan


def test_plan_for_fit_binds_is_monotone_and_refuses_with_a_working_minimum():
    cfg = _plumbing(batch_size=4, patch_size=64)
    cfg["trainer"]["accelerator"] = "cpu"
    est = estimator_from_config(cfg)
    full = est.estimate(batch=4, patch=64).peak_bytes
    # CPU runs: no CUDA allowance, the budget bounds the tensor peak
    roomy = plan_for_fit(cfg, full)
    assert (roomy.batch, roomy.accumulate, roomy.patch, roomy.precision, roomy.stage) == (4, 1, 64, "32", "batch")
    assert roomy.required_bytes == roomy.estimated_bytes == full
    tight = plan_for_fit(cfg, int(full * 0.6))
    assert tight.required_bytes <= int(full * 0.6) and tight.effective_batch == 4
    assert tight.stage in ("precision", "checkpointing", "accumulation")
    assert tight.estimated_bytes < roomy.estimated_bytes
    with pytest.raises(BudgetError, match="too small") as info:
        plan_for_fit(cfg, "64KiB", cuda_overhead=CPU_OVERHEAD)
    needed = info.value.required_bytes
    assert 64 * 2**10 < needed < int(full * 0.6)
    smallest = plan_for_fit(cfg, needed)  # the budget the error names is enough
    assert smallest.required_bytes <= needed and (smallest.batch, smallest.accumulate) == (1, 4)
    with pytest.raises(ConfigError, match="no memory budget"):
        plan_for_fit(cfg)


def test_apply_plan_writes_the_config():
    cfg = _plumbing()
    plan = Plan(batch=2, accumulate=4, patch=96, precision="bf16-mixed", checkpointing=True, estimated_bytes=10,
                budget_bytes=parse_size("512MiB"), fits=True, required_bytes=10, stage="accumulation")
    out = apply_plan(cfg, plan)
    assert out["data"]["init_args"]["batch_size"] == 2 and out["data"]["init_args"]["patch_size"] == 96
    assert out["trainer"]["accumulate_grad_batches"] == 4 and out["trainer"]["precision"] == "bf16-mixed"
    assert out["activation_checkpointing"] is True and out["memory_budget"] == 512 * MiB
    assert cfg["data"]["init_args"]["batch_size"] == 2 and "activation_checkpointing" not in cfg  # input untouched
    m = plan_metrics(plan)
    assert m["budget/effective_batch"] == 8 and m["budget/precision_bits"] == 16 and m["budget/checkpointing"] == 1


# ------------------------------------------------------------------ callback (stubbed CUDA)


class _StubCuda:
    def __init__(self):
        self.fraction = None
        self.resets = 0

    def is_available(self):
        return True

    def get_device_properties(self, device):
        return type("Props", (), {"total_memory": 8 * 2**30})()

    def set_per_process_memory_fraction(self, fraction, device):
        self.fraction = (fraction, device)

    def reset_peak_memory_stats(self, device):
        self.resets += 1

    def max_memory_allocated(self, device):
        return 300 * MiB

    def max_memory_reserved(self, device):
        return 330 * MiB

    def empty_cache(self):
        pass


class _TwoBlockModule(L.LightningModule):
    """Two conv blocks (Sequential) in one sub-network; a frozen conv outside it."""

    def __init__(self):
        super().__init__()
        block = lambda c_in, c_out: nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),  # noqa: E731
                                                  nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.body = nn.ModuleDict({"net": nn.ModuleList([block(3, 8), block(8, 3)])})
        self.frozen = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)).requires_grad_(False)

    def subnetworks(self):
        return {"body": self.body}

    def training_step(self, batch, batch_idx):
        x = batch[0]
        for blk in self.body["net"]:
            x = blk(x)
        return self.frozen(x).square().mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.rand(4, 3, 16, 16))
        return torch.utils.data.DataLoader(data, batch_size=2)


def test_memory_budget_callback_with_stubbed_cuda(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    plan = Plan(batch=2, accumulate=1, patch=16, precision="32", checkpointing=True, estimated_bytes=200 * MiB,
                budget_bytes=4 * 2**30, fits=True, required_bytes=742 * MiB, stage="checkpointing")
    cuda = _StubCuda()
    callback = MemoryBudgetCallback(plan, enforce_cuda=True, cuda=cuda)
    model = _TwoBlockModule()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, max_epochs=1, logger=CSVLogger(str(tmp_path), name="", version=""),
                        callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(model)
    assert callback.checkpointed == ["body.net.0", "body.net.1"]
    assert checkpointed_blocks(model) == ["body.net.0", "body.net.1"]  # the frozen network is left alone
    assert cuda.fraction == (pytest.approx((4 * 2**30 - 512 * MiB) / (8 * 2**30)), 0) and cuda.resets == 1
    assert callback.last_metrics["memory/allocated_over_estimate"] == pytest.approx(1.5)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    logged = {k: v for row in rows for k, v in row.items() if v not in ("", None)}
    assert float(logged["budget/batch"]) == 2 and float(logged["memory/max_allocated_bytes"]) == 300 * MiB
    hparams = yaml.safe_load(open(tmp_path / "hparams.yaml"))
    assert hparams["budget/stage"] == "checkpointing" and hparams["budget/checkpointed_blocks"] == 2


def test_checkpoint_subnetworks_keeps_gradients():
    torch.manual_seed(0)
    plain = _TwoBlockModule()
    ckpt = _TwoBlockModule()
    ckpt.load_state_dict(plain.state_dict())
    checkpoint_subnetworks(ckpt)
    x = torch.rand(2, 3, 16, 16)
    grads = []
    for m in (plain, ckpt):
        m.training_step((x,), 0).backward()
        grads.append([p.grad.clone() for p in m.body.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(plain.body["net"][0][1].running_mean, ckpt.body["net"][0][1].running_mean)


# ------------------------------------------------------------------ hdrlab budget


def _experiments(tmp_path: Path) -> Path:
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "baseline_inverse_crf.yaml").write_text((EXP / "baseline_inverse_crf.yaml").read_text())
    (folder / "plumbing.yaml").write_text(PLUMBING.read_text())
    return folder


def test_budget_all_table_and_json(tmp_path, capsys):
    folder = _experiments(tmp_path)
    code = budget_cmd.main(["--all", "--experiments_dir", str(folder), "--memory_budget", "1GiB", "--json"])
    rows = {r["experiment"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 0 and set(rows) == {"baseline_inverse_crf", "plumbing"}
    assert not rows["baseline_inverse_crf"]["trainable"] and "skipped" in rows["baseline_inverse_crf"]["error"]
    fit = rows["plumbing"]
    assert fit["fits"] and (fit["plan"]["batch"], fit["plan"]["patch"], fit["plan"]["precision"]) == (2, 64, "32")
    # a budget below the CUDA context: impossible, the row names the smallest working budget, exit 0
    code = budget_cmd.main(["--all", "--experiments_dir", str(folder), "--memory_budget", "500MiB",
                            "--precisions", ""])
    out = capsys.readouterr().out
    assert code == 0 and "skipped" in out and "needs >=" in out and "NO" in out
    with pytest.raises(BudgetError, match=r"use --memory_budget \d+MiB"):
        budget_cmd.main(["--config", str(folder / "plumbing.yaml"), "--memory_budget", "500MiB", "--precisions", ""])
    with pytest.raises(ConfigError, match="either --config"):
        budget_cmd.main(["--memory_budget", "1GiB"])
