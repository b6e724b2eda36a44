"""Memory estimation, the budget planner, activation checkpointing and CUDA enforcement (hdrlab.budget)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hdrlab.budget.cuda import (
    cap_process_memory,
    is_out_of_memory,
    memory_metrics,
    run_with_oom_step_down,
)
from hdrlab.budget.estimate import (
    estimate_inference_memory,
    estimate_peak_memory,
    estimate_validation_memory,
    measure_peak_memory,
    training_estimator,
)
from hdrlab.budget.plan import (
    CUDA_OVERHEAD,
    BudgetError,
    CudaOverhead,
    Plan,
    PlanCandidate,
    checkpointed_blocks,
    default_checkpoint_blocks,
    disable_activation_checkpointing,
    enable_activation_checkpointing,
    plan_for_budget,
    step_down,
)
from hdrlab.budget.units import format_size, parse_size
from hdrlab.errors import ConfigError
from hdrlab.models.blocks.unet import AvgPoolBilinearUNet
from hdrlab.models.direct.singlehdr import DequantizationNet
from hdrlab.models.mergers.cfnet import CFNet

MiB = 2**20


# ------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GiB", 4 * 2**30), ("512MiB", 512 * 2**20), ("4GB", 4 * 10**9), ("1.5 gib", 3 * 2**29),
     ("256mb", 256 * 10**6), ("1024", 1024), ("2KiB", 2048), ("3kB", 3000), (4096, 4096)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4GX", "lots", "-1GiB", "0MiB", "GiB", "4 Gibibytes", True])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match="memory size"):
        parse_size(text)


def test_format_size():
    assert format_size(3 * 2**29) == "1.50 GiB"
    assert format_size(512) == "512 B"
    assert format_size(parse_size("512MiB")) == "512.00 MiB"


# ------------------------------------------------------------------ estimator vs real tensors


def _image_batch(batch: int, patch: int) -> dict:
    return {"ldr": torch.rand(batch, 3, patch, patch), "hdr": torch.rand(batch, 3, patch, patch)}


def _image_step(model: nn.Module, data: dict) -> torch.Tensor:
    return F.l1_loss(model(data["ldr"]), data["hdr"])


def _pair_batch(batch: int, patch: int) -> dict:
    lr = patch // 2
    return {"u": torch.rand(batch, 3, lr, lr), "o": torch.rand(batch, 3, lr, lr), "y": torch.rand(batch, 3, patch, patch)}


def _pair_step(model: nn.Module, data: dict) -> torch.Tensor:
    return F.l1_loss(model(data["u"], data["o"]).fused, data["y"])


ARCHITECTURES = {
    "unet": (lambda: AvgPoolBilinearUNet(width=0.25), _image_step, _image_batch, 2, 64, "32"),
    "dequantization": (lambda: DequantizationNet(width=0.25), _image_step, _image_batch, 2, 64, "bf16-mixed"),
    "cfnet": (lambda: CFNet(width=0.125, num_groups=3, num_cfbs=1), _pair_step, _pair_batch, 1, 32, "32"),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_estimate_matches_real_tensor_memtracker(name):
    build, step, make_batch, batch, patch, precision = ARCHITECTURES[name]
    kwargs = dict(batch=batch, patch=patch, precision=precision)
    fake = estimate_peak_memory(build, step, make_batch, **kwargs)
    real = measure_peak_memory(build, step, make_batch, **kwargs)
    err = abs(fake.peak_bytes - real.peak_bytes) / real.peak_bytes
    print(f"{name}: estimate {fake.peak_mib:.3f} MiB ({fake.seconds:.2f}s) vs real {real.peak_mib:.3f} MiB "
          f"({real.seconds:.2f}s): error {err:.2%}; {fake.flops_per_step / 1e9:.3f} GFLOP/step")
    assert fake.fake and not real.fake
    assert err <= 0.02
    # closed-form category checks: fp32 parameters, Adam = 2 moments per parameter (+ 512 B rounding)
    params = [p for p in build().parameters()]
    param_bytes = sum(p.numel() * 4 for p in params)
    assert param_bytes <= fake.by_category["param"] <= param_bytes + 512 * len(params)
    assert fake.by_category["optimizer"] <= 2 * param_bytes + 3 * 512 * len(params)
    if name != "cfnet":  # CF-Net's intermediate reconstruction heads get no gradient from the fused loss
        assert fake.by_category["optimizer"] >= 2 * param_bytes
    assert fake.flops_per_step == real.flops_per_step > 0
    assert sum(fake.by_category.values()) == fake.peak_bytes


def test_bf16_and_checkpointing_lower_the_estimate():
    build, step, make_batch = ARCHITECTURES["dequantization"][:3]
    fp32 = estimate_peak_memory(build, step, make_batch, batch=2, patch=64)
    bf16 = estimate_peak_memory(build, step, make_batch, batch=2, patch=64, precision="bf16-mixed")
    ckpt = estimate_peak_memory(build, step, make_batch, batch=2, patch=64, checkpointing=True)
    print(f"DequantizationNet(1/4) B2 64^2: fp32 {fp32.peak_mib:.2f}, bf16 {bf16.peak_mib:.2f}, "
          f"fp32+checkpointing {ckpt.peak_mib:.2f} MiB")
    assert bf16.by_category["activation"] < 0.75 * fp32.by_category["activation"]
    assert ckpt.peak_bytes < 0.8 * fp32.peak_bytes
    assert ckpt.flops_per_step > fp32.flops_per_step  # recomputed forward


def test_rss_sanity_bound():
    """Process max-RSS growth of a plain real training step (own process) vs the estimate.

    glibc's *dynamic* mmap threshold keeps freed blocks of up to 32 MiB in the heap, so RSS would
    measure malloc's caching (like reserved vs allocated on CUDA) rather than live tensors; the
    subprocess fixes the threshold at 128 KiB. A warm-up step on a tiny input loads kernels,
    thread pools and optimizer code; then the peak-RSS mark is reset (``/proc/self/clear_refs``).
    """
    build, step, make_batch = (lambda: DequantizationNet(width=0.5)), _image_step, _image_batch
    est = estimate_peak_memory(build, step, make_batch, batch=4, patch=128)
    script = textwrap.dedent(
        """
        import json, torch, torch.nn.functional as F
        from hdrlab.models.direct.singlehdr import DequantizationNet
        torch.manual_seed(0)
        def status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
        def train(batch, patch):
            model = DequantizationNet(width=0.5)
            x, y = torch.rand(batch, 3, patch, patch), torch.rand(batch, 3, patch, patch)
            opt = torch.optim.Adam(model.parameters(), 1e-4, foreach=True)
            for _ in range(2):
                F.l1_loss(model(x), y).backward(); opt.step(); opt.zero_grad(set_to_none=True)
        train(1, 32)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS high-water mark (VmHWM) to the current RSS
        base = status("VmRSS:")
        train(4, 128)
        print(json.dumps({"delta": status("VmHWM:") - base}))
        """
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120, env=env)
    delta = json.loads(out.stdout.strip().splitlines()[-1])["delta"]
    ratio = delta / est.peak_bytes
    print(f"RSS delta {delta / MiB:.1f} MiB vs estimate {est.peak_mib:.1f} MiB: ratio {ratio:.3f}")
    assert abs(ratio - 1.0) <= 0.35


def test_inference_and_validation_estimates():
    build = lambda: DequantizationNet(width=0.25)  # noqa: E731
    fwd = lambda m, x: m(x)  # noqa: E731
    inf = estimate_inference_memory(build, fwd, image_hw=(128, 192))
    val = estimate_validation_memory(build, fwd, image_hw=(128, 192))
    import torchvision

    from hdrlab.weights import load_vgg_features

    alex = torchvision.models.alexnet(weights=None).features
    vgg = load_vgg_features("vgg16", pretrained=False)[:23]  # up to relu4_3
    trunk_bytes = 4 * sum(p.numel() for p in [*alex.parameters(), *vgg.parameters()])
    print(f"inference {inf.peak_mib:.2f} MiB, validation with LPIPS(alex)+VGG16 {val.peak_mib:.2f} MiB "
          f"(trunks {trunk_bytes / MiB:.2f} MiB)")
    assert inf.mode == "inference" and val.mode == "validation"
    assert val.by_category["param"] >= trunk_bytes
    assert val.peak_bytes > inf.peak_bytes + trunk_bytes
    # no grad: no gradients or optimizer state in inference
    assert inf.by_category["grad"] == 0 and inf.by_category["optimizer"] == 0


# ------------------------------------------------------------------ activation checkpointing


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                          nn.Conv2d(8, 8, 3, padding=1))
            for _ in range(2)
        )
        self.tail = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        x = self.head(x)
        for block in self.blocks:
            x = x + block(x)
        return self.tail(x)


def test_checkpointing_preserves_gradients_and_batchnorm_statistics():
    torch.manual_seed(1)
    plain = _BNNet()
    ckpt = _BNNet()
    ckpt.load_state_dict(plain.state_dict())
    names = enable_activation_checkpointing(ckpt)
    assert names == ["blocks.0", "blocks.1"] == checkpointed_blocks(ckpt)
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    x = torch.rand(2, 3, 16, 16)
    for model in (plain, ckpt):
        torch.manual_seed(7)
        model(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)  # statistics updated once, not twice
    assert int(ckpt.blocks[0][1].num_batches_tracked) == 1
    disable_activation_checkpointing(ckpt)
    assert checkpointed_blocks(ckpt) == []


def test_default_blocks_and_block_types():
    assert default_checkpoint_blocks(AvgPoolBilinearUNet(width=0.25)) == [f"down.{i}" for i in range(4)] + [
        f"up.{i}" for i in range(4)
    ]
    model = _BNNet()
    assert enable_activation_checkpointing(model, block_types=[nn.Conv2d]) == [
        "head", "blocks.0.0", "blocks.0.4", "blocks.1.0", "blocks.1.4", "tail"
    ]


# ------------------------------------------------------------------ planner


def _affine_estimator(calls: list | None = None):
    """Closed-form memory: 10 MiB + per-pixel bytes x batch x patch^2, halved by 16-bit, /3 by checkpointing."""

    def estimate(c: PlanCandidate) -> int:
        if calls is not None:
            calls.append(c)
        per_pixel = 2000.0 * (0.5 if c.precision != "32" else 1.0) * (1 / 3 if c.checkpointing else 1.0)
        return int(10 * MiB + per_pixel * c.batch * c.patch**2)

    return estimate


NO_OVERHEAD = CudaOverhead(context_bytes=0, margin=0.0)


def _rank(plan: Plan, paper: int) -> tuple:
    level = {("32", False): 0, ("bf16-mixed", False): 1, ("16-mixed", False): 2}.get((plan.precision, plan.checkpointing), 3)
    return (paper - plan.patch, level, plan.accumulate)


def test_planner_order_of_knobs():
    est = _affine_estimator()
    kw = dict(paper_patch=256, effective_batch=8, stride=16, min_patch=64, cuda_overhead=NO_OVERHEAD)
    need = lambda b, p, prec, ck: est(PlanCandidate(b, p, prec, ck))  # noqa: E731
    plan = plan_for_budget(est, budget_bytes=need(8, 256, "32", False), **kw)
    assert (plan.batch, plan.accumulate, plan.patch, plan.precision, plan.checkpointing, plan.stage) == (
        8, 1, 256, "32", False, "batch")
    plan = plan_for_budget(est, budget_bytes=need(8, 256, "32", False) - 1, **kw)
    assert (plan.batch, plan.precision, plan.checkpointing, plan.stage) == (8, "bf16-mixed", False, "precision")
    plan = plan_for_budget(est, budget_bytes=need(8, 256, "bf16-mixed", False) - 1, **kw)
    assert (plan.batch, plan.precision, plan.checkpointing, plan.stage) == (8, "bf16-mixed", True, "checkpointing")
    plan = plan_for_budget(est, budget_bytes=need(8, 256, "bf16-mixed", True) - 1, **kw)
    assert (plan.batch, plan.accumulate, plan.patch, plan.stage) == (4, 2, 256, "accumulation")
    plan = plan_for_budget(est, budget_bytes=need(1, 256, "bf16-mixed", True) - 1, **kw)
    assert (plan.batch, plan.accumulate, plan.patch, plan.stage) == (1, 8, 240, "patch")
    plan = plan_for_budget(est, budget_bytes=need(2, 128, "bf16-mixed", True), **kw)
    assert (plan.batch, plan.accumulate, plan.patch) == (1, 8, 176)  # largest patch first: 176^2 <= 2 x 128^2
    fp16 = plan_for_budget(est, budget_bytes=need(8, 256, "32", False) - 1, allow_precisions=("16-mixed",), **kw)
    assert fp16.precision == "16-mixed"
    fp32 = plan_for_budget(est, budget_bytes=need(8, 256, "32", True), allow_precisions=(), **kw)
    assert (fp32.precision, fp32.checkpointing) == ("32", True)


def test_planner_monotone_and_keeps_effective_batch():
    est = _affine_estimator()
    kw = dict(paper_patch=256, effective_batch=12, stride=16, min_patch=64)
    budgets = list(range(520 * MiB, 900 * MiB, 2 * MiB))
    budgets += [int(b) for b in torch.logspace(math.log10(900 * MiB), math.log10(8 * 2**30), 30).tolist()]
    plans = []
    for budget in budgets:
        try:
            plans.append(plan_for_budget(est, budget_bytes=budget, **kw))
        except BudgetError:
            assert not plans, "once a budget fits, every larger one must fit"
    assert len(plans) > 20
    ranks = [_rank(p, 256) for p in plans]
    assert ranks == sorted(ranks, reverse=True), "a larger budget never gives a more degraded plan"
    for plan in plans:
        assert plan.batch * plan.accumulate == 12 and plan.fits
        assert plan.patch % 16 == 0 and 64 <= plan.patch <= 256
        assert CUDA_OVERHEAD.device_bytes(est(plan.candidate)) == plan.required_bytes <= plan.budget_bytes
    assert {p.stage for p in plans} >= {"batch", "precision", "checkpointing", "accumulation", "patch"}


def test_planner_refuses_impossible_budget_with_smallest_working_budget():
    est = _affine_estimator()
    kw = dict(paper_patch=256, effective_batch=4, stride=16, min_patch=64)
    with pytest.raises(BudgetError) as info:
        plan_for_budget(est, budget_bytes=parse_size("256MiB"), **kw)
    required = CUDA_OVERHEAD.device_bytes(est(PlanCandidate(1, 64, "bf16-mixed", True)))
    assert info.value.required_bytes == required
    message = str(info.value)
    assert f"--memory_budget {math.ceil(required / MiB)}MiB" in message and "256.00 MiB is too small" in message
    assert plan_for_budget(est, budget_bytes=required, **kw).patch == 64  # that budget indeed works
    with pytest.raises(BudgetError):
        plan_for_budget(est, budget_bytes=required - 1, **kw)
    with pytest.raises(ConfigError, match="multiple of the network stride"):
        plan_for_budget(est, budget_bytes=2**30, paper_patch=250, effective_batch=4, stride=16)


def test_planner_with_fake_tensor_estimator_rechecks_the_plan():
    build, step, make_batch = ARCHITECTURES["dequantization"][:3]
    est = training_estimator(build, step, make_batch)
    overhead = CudaOverhead(context_bytes=0, margin=0.15)
    full = estimate_peak_memory(build, step, make_batch, batch=4, patch=64).peak_bytes
    budget = overhead.device_bytes(full) - 1  # fp32 at the full batch misses by one byte
    plan = plan_for_budget(est, budget_bytes=budget, paper_patch=64, effective_batch=4, stride=16, min_patch=32,
                           cuda_overhead=overhead)
    print(plan.describe())
    assert plan.stage == "precision" and (plan.batch, plan.accumulate) == (4, 1)
    again = estimate_peak_memory(build, step, make_batch, batch=plan.batch, patch=plan.patch,
                                 precision=plan.precision, checkpointing=plan.checkpointing)
    assert again.peak_bytes == plan.estimated_bytes and overhead.device_bytes(again.peak_bytes) <= budget


def test_step_down_ladder():
    plan = Plan(batch=4, accumulate=1, patch=64, precision="32", checkpointing=False, estimated_bytes=100,
                budget_bytes=200, fits=True)
    seen = []
    while plan is not None:
        seen.append((plan.batch, plan.accumulate, plan.patch, plan.precision, plan.checkpointing))
        plan = step_down(plan, stride=16, min_patch=32)
    assert seen == [(4, 1, 64, "32", False), (4, 1, 64, "bf16-mixed", False), (4, 1, 64, "bf16-mixed", True),
                    (2, 2, 64, "bf16-mixed", True), (1, 4, 64, "bf16-mixed", True), (1, 4, 48, "bf16-mixed", True),
                    (1, 4, 32, "bf16-mixed", True)]


# ------------------------------------------------------------------ CUDA enforcement (stubbed)


class _Props:
    total_memory = 8 * 2**30


class _StubCuda:
    """Stands in for ``torch.cuda``'s memory API."""

    def __init__(self, available: bool = True) -> None:
        self.available, self.fraction, self.empty_calls, self.resets = available, None, 0, 0

    def is_available(self):
        return self.available

    def get_device_properties(self, device):
        return _Props()

    def set_per_process_memory_fraction(self, fraction, device):
        self.fraction = (fraction, device)

    def reset_peak_memory_stats(self, device):
        self.resets += 1

    def max_memory_allocated(self, device):
        return 3 * 2**30

    def max_memory_reserved(self, device):
        return int(3.3 * 2**30)

    def empty_cache(self):
        self.empty_calls += 1


def test_cap_process_memory_with_stubbed_cuda():
    cuda = _StubCuda()
    fraction = cap_process_memory(parse_size("4GiB"), cuda=cuda)
    assert fraction == pytest.approx((4 * 2**30 - 512 * MiB) / (8 * 2**30))
    assert cuda.fraction == (fraction, 0)
    with pytest.raises(ConfigError, match="exceeds device"):
        cap_process_memory(parse_size("9GiB"), cuda=cuda)
    with pytest.raises(ConfigError, match="context allowance"):
        cap_process_memory(parse_size("256MiB"), cuda=cuda)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        cap_process_memory(parse_size("4GiB"), cuda=_StubCuda(available=False))


def test_memory_metrics_with_stubbed_cuda():
    metrics = memory_metrics(2 * 2**30, cuda=_StubCuda())
    assert metrics["memory/max_allocated_bytes"] == 3 * 2**30
    assert metrics["memory/allocated_over_estimate"] == pytest.approx(1.5)
    assert metrics["memory/reserved_over_allocated"] == pytest.approx(1.1)


def test_oom_steps_down_once_and_resumes():
    cuda = _StubCuda()
    plan = Plan(batch=4, accumulate=1, patch=64, precision="32", checkpointing=False, estimated_bytes=1,
                budget_bytes=2, fits=True)
    calls = []

    def run(p: Plan, resume: bool) -> str:
        calls.append((p.precision, resume))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "trained"

    result, used = run_with_oom_step_down(run, plan, cuda=cuda, log=lambda msg: None)
    assert result == "trained" and used.precision == "bf16-mixed" and used.stage == "oom-step-down"
    assert calls == [("32", False), ("bf16-mixed", True)] and cuda.empty_calls == 1

    def always_oom(p: Plan, resume: bool):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(BudgetError, match="out of memory again"):
        run_with_oom_step_down(always_oom, plan, cuda=cuda, log=lambda msg: None)

    def broken(p: Plan, resume: bool):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        run_with_oom_step_down(broken, plan, cuda=cuda)
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(ValueError("x"))
