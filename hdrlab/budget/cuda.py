"""Enforcing a memory budget on a CUDA device: cap, record, step down on out-of-memory.

**Untested on real GPUs**: this machine has none. The paths are tested with a stubbed
``torch.cuda`` memory API and an injected ``torch.OutOfMemoryError``; the allowance
(:data:`hdrlab.budget.plan.CUDA_OVERHEAD`) is unverified until a GPU run records
``max_memory_allocated``/``max_memory_reserved`` beside the estimate (:func:`memory_metrics`);
``benchmarks/gpu_budget_check.py`` (``make gpu-check``) is that run for every shipped experiment.

Every function takes ``cuda=`` (default ``torch.cuda``) so tests can pass a stub with
``is_available``, ``get_device_properties``, ``set_per_process_memory_fraction``,
``reset_peak_memory_stats``, ``max_memory_allocated``, ``max_memory_reserved`` and ``empty_cache``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from hdrlab.budget.plan import CUDA_OVERHEAD, BudgetError, CudaOverhead, Plan, PlanCandidate, step_down
from hdrlab.budget.units import format_size
from hdrlab.errors import ConfigError

__all__ = [
    "cap_process_memory",
    "is_out_of_memory",
    "memory_metrics",
    "read_peak_memory",
    "reset_peak_memory",
    "run_with_oom_step_down",
]

T = TypeVar("T")


def cap_process_memory(
    budget_bytes: int, *, device: int = 0, cuda_overhead: CudaOverhead = CUDA_OVERHEAD, cuda: Any = None
) -> float:
    """Limit the caching allocator so the process stays within ``budget_bytes`` of device memory.

    ``set_per_process_memory_fraction`` bounds what the allocator may reserve; the CUDA context
    lives outside it, so the allocator gets ``budget - context_bytes``:
    ``fraction = (budget - context) / total_memory``.

    Args:
        budget_bytes: device budget.
        device: CUDA device index.
        cuda_overhead: supplies ``context_bytes``.
        cuda: the ``torch.cuda`` module or a stub.

    Returns:
        The fraction set.

    Raises:
        ConfigError: no CUDA device, budget larger than the device, or not above the context size.
    """
    cuda = torch.cuda if cuda is None else cuda
    if not cuda.is_available():
        raise ConfigError("--memory_budget enforcement needs a CUDA device; on CPU the budget only plans the run")
    total = int(cuda.get_device_properties(device).total_memory)
    if budget_bytes > total:
        raise ConfigError(
            f"memory budget {format_size(budget_bytes)} exceeds device {device}'s {format_size(total)}; lower --memory_budget"
        )
    allocator = budget_bytes - cuda_overhead.context_bytes
    if allocator <= 0:
        raise ConfigError(
            f"memory budget {format_size(budget_bytes)} does not exceed the CUDA context allowance "
            f"{format_size(cuda_overhead.context_bytes)}; raise --memory_budget"
        )
    fraction = allocator / total
    cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def reset_peak_memory(*, device: int = 0, cuda: Any = None) -> None:
    """Reset the allocator's peak counters (call before the steps to be recorded)."""
    cuda = torch.cuda if cuda is None else cuda
    cuda.reset_peak_memory_stats(device)


def read_peak_memory(*, device: int = 0, cuda: Any = None) -> dict[str, int]:
    """``{"max_allocated_bytes", "max_reserved_bytes"}`` since the last reset."""
    cuda = torch.cuda if cuda is None else cuda
    return {
        "max_allocated_bytes": int(cuda.max_memory_allocated(device)),
        "max_reserved_bytes": int(cuda.max_memory_reserved(device)),
    }


def memory_metrics(estimated_bytes: int, *, device: int = 0, cuda: Any = None) -> dict[str, float]:
    """Measured peaks beside the estimate, for the run's metrics.

    Returns:
        ``memory/estimated_bytes``, ``memory/max_allocated_bytes``, ``memory/max_reserved_bytes``,
        ``memory/allocated_over_estimate`` and ``memory/reserved_over_allocated`` (fragmentation).
    """
    peaks = read_peak_memory(device=device, cuda=cuda)
    allocated, reserved = peaks["max_allocated_bytes"], peaks["max_reserved_bytes"]
    return {
        "memory/estimated_bytes": float(estimated_bytes),
        "memory/max_allocated_bytes": float(allocated),
        "memory/max_reserved_bytes": float(reserved),
        "memory/allocated_over_estimate": allocated / estimated_bytes if estimated_bytes else float("nan"),
        "memory/reserved_over_allocated": reserved / allocated if allocated else float("nan"),
    }


def is_out_of_memory(err: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` and allocator ``RuntimeError``s saying "out of memory"."""
    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


def run_with_oom_step_down(
    run: Callable[[Plan, bool], T],
    plan: Plan,
    *,
    stride: int = 1,
    min_patch: int = 64,
    allow_precisions: Sequence[str] = ("bf16-mixed", "16-mixed"),
    estimator: Callable[[PlanCandidate], int] | None = None,
    cuda: Any = None,
    log: Callable[[str], None] = print,
) -> tuple[T, Plan]:
    """Run training; on an out-of-memory error step the plan down once and resume.

    Args:
        run: ``(plan, resume) -> result``; called with ``resume=False`` first and, after an
            out-of-memory error, with the stepped-down plan and ``resume=True`` (continue from the
            last checkpoint).
        plan: the planner's plan.
        stride, min_patch, allow_precisions, estimator: passed to :func:`hdrlab.budget.plan.step_down`.
        cuda: ``torch.cuda`` or a stub (``empty_cache`` is called after the failure).
        log: where the step-down message goes (also returned plan records ``stage="oom-step-down"``).

    Returns:
        ``(result, plan_used)``.

    Raises:
        BudgetError: out of memory again after the step-down, or nothing left to step down to.
        Exception: any other error from ``run`` unchanged.
    """
    cuda = torch.cuda if cuda is None else cuda
    try:
        return run(plan, False), plan
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        first = err
    cuda.empty_cache()
    lower = step_down(plan, stride=stride, min_patch=min_patch, allow_precisions=allow_precisions, estimator=estimator)
    if lower is None:
        raise BudgetError(
            f"out of memory with the most frugal plan ({plan.describe()}); raise --memory_budget", required_bytes=None
        ) from first
    log(f"out of memory ({first}); stepping the plan down once and resuming from the last checkpoint: {lower.describe()}")
    try:
        return run(lower, True), lower
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        cuda.empty_cache()
        raise BudgetError(
            f"out of memory again after stepping down to {lower.describe()}; the CUDA allowance is too small for this "
            "device: raise --memory_budget or lower the budget's batch/patch",
            required_bytes=None,
        ) from err
