"""The memory budget of a training run: plan it from the fit config, write the plan into it, enforce it.

The budget lives in the fit config at one dotted path, **``memory_budget``** (top level, e.g.
``--memory_budget 4GiB``, ``"4GB"`` = 4e9 bytes; null = no budget), so sweeps vary it like any
other parameter. With a budget, ``hdrlab fit``:

1. :func:`plan_for_fit` - estimates the experiment's training step on fake tensors
   (:mod:`hdrlab.budget.methods`) and plans batch / accumulation / precision / checkpointing / patch
   (:func:`hdrlab.budget.plan.plan_for_budget`); nothing fits -> :class:`~hdrlab.budget.plan.BudgetError`
   before training, naming the smallest budget that would work;
2. :func:`apply_plan` - writes the plan into the config: ``data.init_args.batch_size`` (micro-batch),
   ``data.init_args.patch_size``, ``trainer.accumulate_grad_batches``, ``trainer.precision`` and the
   top-level flag ``activation_checkpointing``;
3. :class:`MemoryBudgetCallback` - turns activation checkpointing on in the method's sub-networks
   at ``setup``, logs the plan (``budget/*`` hyper-parameters and metrics) and, on CUDA, caps the
   process (``set_per_process_memory_fraction``) and records ``max_memory_allocated/reserved``
   beside the estimate. The CUDA paths are **untested on real GPUs** (tested with a stubbed
   ``torch.cuda`` API).

Allowance: CUDA runs add :data:`hdrlab.budget.plan.CUDA_OVERHEAD` (512 MiB context + 15 %); CPU runs
(``trainer.accelerator: cpu``, or ``auto`` without CUDA) add nothing (:data:`CPU_OVERHEAD`), so the
budget bounds the tensor peak, and bf16-mixed is the only autocast precision offered (Lightning's
CPU accelerator has no fp16 autocast).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L

from hdrlab.budget.cuda import cap_process_memory, memory_metrics, reset_peak_memory
from hdrlab.budget.methods import checkpoint_subnetworks, estimator_from_config
from hdrlab.budget.plan import CUDA_OVERHEAD, CudaOverhead, Plan
from hdrlab.budget.units import parse_size
from hdrlab.errors import ConfigError

__all__ = ["BUDGET_KEY", "CHECKPOINTING_KEY", "CPU_OVERHEAD", "MemoryBudgetCallback", "apply_plan", "plan_for_fit", "plan_metrics"]

#: the fit-config path of the budget (top level).
BUDGET_KEY = "memory_budget"
#: the fit-config flag :func:`apply_plan` sets (top level).
CHECKPOINTING_KEY = "activation_checkpointing"


#: The allowance of CPU runs: no CUDA context, no workspace; the budget bounds the tensor peak itself
#: (``MemTracker`` on real CPU tensors reproduces the fake estimate exactly: :func:`hdrlab.budget.estimate.measure_peak_memory`).
CPU_OVERHEAD = CudaOverhead(context_bytes=0, margin=0.0)


def _on_cpu(config: Mapping[str, Any]) -> bool:
    """True when the fit config trains on CPU (``trainer.accelerator: cpu``, or ``auto`` without CUDA)."""
    import torch

    accelerator = str(((config.get("trainer") or {}).get("accelerator")) or "auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _default_precisions(config: Mapping[str, Any]) -> tuple[str, ...]:
    # Lightning's CPU accelerator supports bf16-mixed only; GPUs take both (fp16 for pre-Ampere cards).
    return ("bf16-mixed",) if _on_cpu(config) else ("bf16-mixed", "16-mixed")


def plan_for_fit(
    config: Mapping[str, Any],
    budget_bytes: int | str | None = None,
    *,
    min_patch: int = 64,
    allow_precisions: Sequence[str] | None = None,
    cuda_overhead: CudaOverhead | None = None,
) -> Plan:
    """Plan a fit config for a memory budget.

    Args:
        config: the fit config as a dict (``model``, ``data``, ``trainer``, top-level ``width`` /
            ``memory_budget``; OmegaConf interpolations allowed).
        budget_bytes: budget in bytes or as text (``"4GiB"``); None reads ``config["memory_budget"]``.
        min_patch: smallest patch the planner may shrink to (rounded up to the network stride).
        allow_precisions: autocast precisions in order of preference; None: ``("bf16-mixed",)`` for
            ``trainer.accelerator: cpu``, else ``("bf16-mixed", "16-mixed")``.
        cuda_overhead: the device allowance; None: :data:`hdrlab.budget.plan.CUDA_OVERHEAD` (512 MiB
            context + 15 %) on CUDA, :data:`CPU_OVERHEAD` (none) on CPU runs.

    Returns:
        The fitting :class:`~hdrlab.budget.plan.Plan` (re-estimated).

    Raises:
        ConfigError: no budget given, or a config without model / patch / batch.
        BudgetError: nothing fits (message and ``required_bytes``: the smallest working budget).
    """
    budget = budget_bytes if budget_bytes is not None else config.get(BUDGET_KEY)
    if budget is None:
        raise ConfigError(f"no memory budget: set --{BUDGET_KEY} (e.g. 4GiB) or '{BUDGET_KEY}:' in the fit config")
    budget = parse_size(budget)
    estimator = estimator_from_config(config, name="fit config")
    if not estimator.trainable:
        raise ConfigError(f"{estimator.method} has no trainable parameters; --{BUDGET_KEY} applies to 'hdrlab fit' only")
    precisions = _default_precisions(config) if allow_precisions is None else tuple(allow_precisions)
    if cuda_overhead is None:
        cuda_overhead = CPU_OVERHEAD if _on_cpu(config) else CUDA_OVERHEAD
    return estimator.plan(budget, min_patch=min_patch, allow_precisions=precisions, cuda_overhead=cuda_overhead)


def apply_plan(config: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """A copy of the fit config with the plan written in.

    Sets ``data.init_args.batch_size = plan.batch`` (micro-batch), ``data.init_args.patch_size =
    plan.patch``, ``trainer.accumulate_grad_batches = plan.accumulate``, ``trainer.precision =
    plan.precision`` and ``activation_checkpointing = plan.checkpointing``; ``memory_budget`` is
    kept (bytes if it was unset). The effective batch ``batch_size x accumulate_grad_batches`` is the
    planned one.

    Args:
        config: fit config dict (not modified).
        plan: from :func:`plan_for_fit`.

    Returns:
        The new config dict.
    """
    out = copy.deepcopy(dict(config))
    data = out.setdefault("data", {}) or {}
    out["data"] = data
    init_args = data.setdefault("init_args", {}) or {}
    data["init_args"] = init_args
    init_args["batch_size"] = int(plan.batch)
    init_args["patch_size"] = int(plan.patch)
    trainer = out.setdefault("trainer", {}) or {}
    out["trainer"] = trainer
    trainer["accumulate_grad_batches"] = int(plan.accumulate)
    trainer["precision"] = plan.precision
    out[CHECKPOINTING_KEY] = bool(plan.checkpointing)
    if out.get(BUDGET_KEY) is None:
        out[BUDGET_KEY] = int(plan.budget_bytes)
    return out


def plan_metrics(plan: Plan) -> dict[str, float]:
    """The plan as numeric ``budget/*`` metrics (precision as its bit width: 32 or 16)."""
    return {
        "budget/budget_bytes": float(plan.budget_bytes),
        "budget/estimated_bytes": float(plan.estimated_bytes),
        "budget/required_bytes": float(plan.required_bytes),
        "budget/batch": float(plan.batch),
        "budget/accumulate": float(plan.accumulate),
        "budget/effective_batch": float(plan.effective_batch),
        "budget/patch": float(plan.patch),
        "budget/precision_bits": 32.0 if plan.precision == "32" else 16.0,
        "budget/checkpointing": float(plan.checkpointing),
    }


class MemoryBudgetCallback(L.Callback):
    """Apply and record a memory :class:`~hdrlab.budget.plan.Plan` in a Lightning run.

    * ``setup``: activation checkpointing in the method's sub-networks
      (:func:`hdrlab.budget.methods.checkpoint_subnetworks`) when ``plan.checkpointing``; on CUDA,
      caps the process at the budget (:func:`hdrlab.budget.cuda.cap_process_memory`) and resets the
      peak counters.
    * ``on_train_start``: logs ``budget/*`` hyper-parameters (the plan, stage, precision string)
      and metrics (:func:`plan_metrics`) to every logger.
    * ``on_train_epoch_end`` / ``on_train_end``: on CUDA, logs ``memory/max_allocated_bytes``,
      ``memory/max_reserved_bytes``, ``memory/estimated_bytes`` and their ratios
      (:func:`hdrlab.budget.cuda.memory_metrics`); untested on real GPUs.

    Args:
        plan: the plan (from :func:`plan_for_fit`).
        enforce_cuda: None = when the run's root device is CUDA; True / False force it (tests).
        cuda_overhead: allowance used by the cap.
        cuda: ``torch.cuda`` or a stub with its memory API.
    """

    def __init__(
        self, plan: Plan, *, enforce_cuda: bool | None = None, cuda_overhead: CudaOverhead = CUDA_OVERHEAD,
        cuda: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(plan, Plan):
            raise ConfigError(f"MemoryBudgetCallback needs a hdrlab.budget.Plan, got {type(plan).__name__}")
        self.plan = plan
        self.enforce_cuda = enforce_cuda
        self.cuda_overhead = cuda_overhead
        self.cuda = cuda
        self.checkpointed: list[str] = []
        self.fraction: float | None = None
        self.last_metrics: dict[str, float] = {}
        self._device = 0
        self._on_cuda = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.plan.checkpointing and not self.checkpointed:
            self.checkpointed = checkpoint_subnetworks(pl_module)
        root = trainer.strategy.root_device
        self._on_cuda = (root.type == "cuda") if self.enforce_cuda is None else bool(self.enforce_cuda)
        if self._on_cuda:
            self._device = (root.index or 0) if root.type == "cuda" else 0
            self.fraction = cap_process_memory(
                self.plan.budget_bytes, device=self._device, cuda_overhead=self.cuda_overhead, cuda=self.cuda
            )
            reset_peak_memory(device=self._device, cuda=self.cuda)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        hparams = {f"budget/{k}": v for k, v in self.plan.as_dict().items()}
        hparams["budget/checkpointed_blocks"] = len(self.checkpointed)
        if self.fraction is not None:
            hparams["budget/cuda_memory_fraction"] = self.fraction
        metrics = plan_metrics(self.plan)
        for logger in trainer.loggers:
            logger.log_hyperparams(hparams)
            logger.log_metrics(metrics, step=trainer.global_step)
        self.last_metrics = dict(metrics)

    def _record_cuda(self, trainer: L.Trainer) -> None:
        if not self._on_cuda:
            return
        measured = memory_metrics(self.plan.estimated_bytes, device=self._device, cuda=self.cuda)
        for logger in trainer.loggers:
            logger.log_metrics(measured, step=trainer.global_step)
        self.last_metrics.update(measured)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_cuda(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_cuda(trainer)
        for logger in trainer.loggers:
            logger.save()
