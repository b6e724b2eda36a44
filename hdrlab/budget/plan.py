"""The memory-budget planner and the knobs it turns (precision, activation checkpointing).

Planning order (fixed): keep the paper's patch; raise the micro-batch up to the configured
effective batch; then bf16/fp16 autocast; then activation checkpointing in the architecture's
blocks; then gradient accumulation (micro-batch x accumulate == effective batch); then shrink the
patch in multiples of the network stride. The knobs are switched on cumulatively, so the candidates
form one fixed ladder and the plan is the first rung that fits: a larger budget can only pick an
earlier rung (the planner is monotone in the budget). Within a rung the largest fitting micro-batch
divisor / patch is found by bisection, which assumes memory grows with batch and patch.

A candidate fits when ``CUDA_OVERHEAD.device_bytes(tensor_peak) <= budget``: tensor memory as
measured by :mod:`hdrlab.budget.estimate` (``MemTracker`` on fake tensors), plus an allowance for what
a CPU-only machine cannot measure (CUDA context, cuDNN workspace, allocator fragmentation). The
allowance is a documented constant and is **unverified on a real GPU**.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hdrlab.budget.units import format_size
from hdrlab.errors import ConfigError

__all__ = [
    "CUDA_OVERHEAD",
    "PRECISIONS",
    "BudgetError",
    "CudaOverhead",
    "InfeasibleCandidate",
    "Plan",
    "PlanCandidate",
    "autocast_context",
    "checkpointed_blocks",
    "default_checkpoint_blocks",
    "disable_activation_checkpointing",
    "divisors",
    "enable_activation_checkpointing",
    "normalize_precision",
    "patch_ladder",
    "plan_for_budget",
    "step_down",
]

#: Lightning precision names the planner knows -> autocast dtype (None = plain fp32).
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class BudgetError(ConfigError):
    """No configuration fits the memory budget; ``required_bytes`` is the smallest budget that would work."""

    def __init__(self, message: str, *, required_bytes: int | None = None) -> None:
        super().__init__(message)
        self.required_bytes = required_bytes


class InfeasibleCandidate(Exception):
    """The estimator cannot run a candidate at all, whatever the budget (e.g. a batch norm that
    would see one value per channel: batch 1 at a patch of one network stride). The planner treats
    such a candidate as not fitting and never proposes it; the message names the candidate and why."""


def normalize_precision(precision: str) -> str:
    """Map a Lightning precision string to ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.

    Raises:
        ConfigError: for any other precision.
    """
    name = str(precision)
    name = {"32-true": "32", "fp32": "32", "bf16": "bf16-mixed", "16": "16-mixed"}.get(name, name)
    if name not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported by the memory planner; use one of {list(PRECISIONS)}")
    return name


def autocast_context(precision: str, *, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """The autocast context of a precision (a no-op context for ``"32"``).

    On CPU, ``torch.autocast('cpu', bfloat16|float16)`` casts the same op classes (convolutions,
    matmuls) to 16 bit as CUDA autocast, so the tensor byte sizes stand in for CUDA's.
    """
    dtype = PRECISIONS[normalize_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Activation checkpointing
# --------------------------------------------------------------------------------------------

_ORIGINAL_FORWARD = "_hdrlab_original_forward"


class _KeepBatchNormStatistics:
    """Context that restores the running statistics of every training-mode batch norm on exit.

    Used as the *recompute* context of non-reentrant checkpointing: the forward pass of a
    checkpointed block is run a second time during backward; batch norm in training mode would
    update ``running_mean``/``running_var``/``num_batches_tracked`` a second time. Normalisation
    itself uses the batch statistics, which the recomputation reproduces exactly, so restoring the
    buffers after the recomputation gives the statistics of one update per step and identical
    gradients.
    """

    def __init__(self, module: nn.Module) -> None:
        self.norms = [
            m
            for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        ]
        self.saved: list[tuple[torch.Tensor, ...]] = []

    def __enter__(self) -> _KeepBatchNormStatistics:
        self.saved = [
            tuple(t.detach().clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked)) for m in self.norms
        ]
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for m, (mean, var, count) in zip(self.norms, self.saved, strict=True):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        self.saved = []


def _checkpointed_forward(module: nn.Module, forward: Callable, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)

    def contexts():
        return contextlib.nullcontext(), _KeepBatchNormStatistics(module)

    return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)


def _parametrised_leaves(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if next(m.children(), None) is None and any(True for _ in m.parameters(False)))


def default_checkpoint_blocks(model: nn.Module) -> list[str]:
    """Qualified names of the repeated blocks checkpointed by default.

    A block is a member of an ``nn.ModuleList`` or an ``nn.Sequential`` with at least two
    parameterised layers; the search does not descend into a block, and the root is never a block.

    Args:
        model: any module.

    Returns:
        Module names (``model.get_submodule`` paths), outermost blocks only.
    """
    names: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            path = f"{prefix}{name}"
            repeated = isinstance(parent, nn.ModuleList) or isinstance(child, nn.Sequential)
            if repeated and _parametrised_leaves(child) >= 2:
                names.append(path)
            else:
                visit(child, path + ".")

    visit(model, "")
    return names


def enable_activation_checkpointing(
    model: nn.Module, block_types: Iterable[type[nn.Module]] | None = None
) -> list[str]:
    """Checkpoint the model's repeated blocks: activations inside a block are recomputed in backward.

    Each block's ``forward`` is replaced (instance attribute, so parameter names and state dicts
    are unchanged) by ``torch.utils.checkpoint.checkpoint(forward, ..., use_reentrant=False)``:
    only the block's inputs are saved; RNG state is preserved (dropout recomputes identically) and
    autocast state is replayed. Batch norm: the recomputation runs inside
    :class:`_KeepBatchNormStatistics`, which restores running statistics afterwards, so they are
    updated once per step exactly as without checkpointing. With gradients disabled the block
    runs normally.

    Args:
        model: module to modify in place.
        block_types: module classes to checkpoint (outermost instances only); None uses
            :func:`default_checkpoint_blocks` (``ModuleList`` members, multi-layer ``Sequential``).

    Returns:
        Qualified names of the checkpointed blocks (empty if none found).
    """
    if block_types is None:
        names = default_checkpoint_blocks(model)
    else:
        types = tuple(block_types)
        names = []

        def visit(parent: nn.Module, prefix: str) -> None:
            for name, child in parent.named_children():
                if isinstance(child, types):
                    names.append(f"{prefix}{name}")
                else:
                    visit(child, f"{prefix}{name}.")

        visit(model, "")
    for name in names:
        block = model.get_submodule(name)
        if _ORIGINAL_FORWARD in block.__dict__:
            continue
        original = block.forward
        object.__setattr__(block, _ORIGINAL_FORWARD, original)
        object.__setattr__(block, "forward", functools.partial(_checkpointed_forward, block, original))
    return names


def checkpointed_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks currently checkpointed by :func:`enable_activation_checkpointing`."""
    return [name for name, m in model.named_modules() if _ORIGINAL_FORWARD in m.__dict__]


def disable_activation_checkpointing(model: nn.Module) -> None:
    """Undo :func:`enable_activation_checkpointing` in place."""
    for _, module in model.named_modules():
        if _ORIGINAL_FORWARD in module.__dict__:
            del module.__dict__["forward"]
            del module.__dict__[_ORIGINAL_FORWARD]


# --------------------------------------------------------------------------------------------
# Overhead model, candidates, plans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaOverhead:
    """What a CUDA device needs beyond the tensors ``MemTracker`` counts.

    ``device_bytes = context_bytes + tensor_bytes * (1 + margin)``.

    Args:
        context_bytes: CUDA context + kernels (visible in nvidia-smi, not in
            ``max_memory_allocated``); typically 0.3-0.6 GiB, 512 MiB assumed.
        margin: relative allowance for cuDNN workspaces (allocated through the caching allocator)
            and fragmentation (reserved - allocated, typically 5-20 %); 15 % assumed.
    """

    context_bytes: int = 512 * 2**20
    margin: float = 0.15

    def device_bytes(self, tensor_bytes: int) -> int:
        """Device memory needed for a tensor peak of ``tensor_bytes``."""
        return math.ceil(self.context_bytes + tensor_bytes * (1.0 + self.margin))

    def tensor_budget(self, budget_bytes: int) -> int:
        """Largest tensor peak that fits a device budget (may be <= 0)."""
        return math.floor((budget_bytes - self.context_bytes) / (1.0 + self.margin))


#: The documented allowance (512 MiB context, 15 % workspace/fragmentation); unverified on a GPU.
CUDA_OVERHEAD = CudaOverhead()


@dataclass(frozen=True)
class PlanCandidate:
    """One configuration the planner asks the estimator about.

    Args:
        batch: micro-batch (images per forward/backward).
        patch: square training patch side in pixels.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        checkpointing: activation checkpointing of the blocks.
    """

    batch: int
    patch: int
    precision: str = "32"
    checkpointing: bool = False


@dataclass(frozen=True)
class Plan:
    """The planner's choice.

    Attributes:
        batch: micro-batch.
        accumulate: gradient-accumulation steps (``batch * accumulate`` = effective batch).
        patch: training patch side.
        precision: Lightning precision string.
        checkpointing: activation checkpointing on.
        estimated_bytes: tensor peak of the chosen configuration (re-estimated).
        budget_bytes: the device budget.
        fits: ``required_bytes <= budget_bytes``.
        required_bytes: ``CUDA_OVERHEAD.device_bytes(estimated_bytes)``.
        stage: which rung of the ladder chose it (``"batch"``, ``"precision"``,
            ``"checkpointing"``, ``"accumulation"``, ``"patch"``, ``"oom-step-down"``).
    """

    batch: int
    accumulate: int
    patch: int
    precision: str
    checkpointing: bool
    estimated_bytes: int
    budget_bytes: int
    fits: bool
    required_bytes: int = 0
    stage: str = "batch"

    @property
    def effective_batch(self) -> int:
        return self.batch * self.accumulate

    @property
    def candidate(self) -> PlanCandidate:
        return PlanCandidate(self.batch, self.patch, self.precision, self.checkpointing)

    def as_dict(self) -> dict:
        """Plain dict (JSON / logger hyper-parameters)."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for the console and the run log."""
        return (
            f"batch {self.batch} x accumulate {self.accumulate} (effective {self.effective_batch}), "
            f"patch {self.patch}, precision {self.precision}, checkpointing {'on' if self.checkpointing else 'off'}: "
            f"tensors {format_size(self.estimated_bytes)}, with CUDA allowance {format_size(self.required_bytes)} "
            f"of {format_size(self.budget_bytes)} ({'fits' if self.fits else 'does NOT fit'}; chosen at stage {self.stage})"
        )


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n`` in ascending order."""
    return [d for d in range(1, n + 1) if n % d == 0]


def patch_ladder(paper_patch: int, *, stride: int, min_patch: int) -> list[int]:
    """Patch sides tried, largest first: ``paper_patch`` then stride multiples down to ``min_patch``.

    Raises:
        ConfigError: if ``paper_patch`` is not a positive multiple of ``stride`` or below ``min_patch``.
    """
    if stride < 1 or paper_patch < stride or paper_patch % stride:
        raise ConfigError(f"paper patch {paper_patch} must be a positive multiple of the network stride {stride}")
    lowest = max(stride, math.ceil(min_patch / stride) * stride)
    if lowest > paper_patch:
        raise ConfigError(f"min_patch {min_patch} is larger than the paper patch {paper_patch}; lower min_patch")
    return list(range(paper_patch, lowest - 1, -stride))


def _last_true(items: Sequence, ok: Callable) -> int | None:
    """Index of the last item with ``ok(item)`` for a prefix-true sequence (bisection), or None."""
    lo, hi, best = 0, len(items) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(items[mid]):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def _first_true(items: Sequence, ok: Callable) -> int | None:
    """Index of the first item with ``ok(item)`` for a suffix-true sequence (bisection), or None."""
    lo, hi, best = 0, len(items) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(items[mid]):
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return best


def plan_for_budget(
    estimator: Callable[[PlanCandidate], int],
    *,
    budget_bytes: int,
    paper_patch: int,
    effective_batch: int,
    stride: int = 1,
    min_patch: int = 64,
    allow_precisions: Sequence[str] = ("bf16-mixed", "16-mixed"),
    cuda_overhead: CudaOverhead = CUDA_OVERHEAD,
) -> Plan:
    """Choose batch, accumulation, patch, precision and checkpointing for a memory budget.

    Ladder (first fit wins, knobs cumulative): (1) micro-batch = effective batch at the paper patch
    in fp32; (2) each allowed autocast precision in order; (3) + activation checkpointing (with the
    first allowed precision); (4) + gradient accumulation: the largest divisor of the effective
    batch that fits; (5) shrink the patch by ``stride`` steps down to ``min_patch`` (largest fitting
    patch, then the largest fitting micro-batch divisor at it). The chosen plan is re-estimated
    with a fresh estimator call and must fit.

    Candidates the estimator cannot run (it raises :class:`InfeasibleCandidate`, e.g. a batch norm
    over one value per channel at batch 1 and a patch of one stride) never fit: the micro-batches
    and patches searched start at the smallest that run, and the smallest configuration named
    when nothing fits is the smallest that runs.

    Args:
        estimator: candidate -> tensor peak bytes of one training step (e.g.
            :func:`hdrlab.budget.estimate.training_estimator`).
        budget_bytes: device memory budget.
        paper_patch: the paper's training patch side (a multiple of ``stride``).
        effective_batch: the configured batch (kept via accumulation).
        stride: network stride (patch sides stay multiples of it).
        min_patch: smallest acceptable patch.
        allow_precisions: autocast precisions the device supports, in order of preference
            (``("16-mixed",)`` for GPUs without bf16, ``()`` for fp32 only).
        cuda_overhead: the device allowance.

    Returns:
        A :class:`Plan` with ``fits=True``.

    Raises:
        BudgetError: nothing fits; the message and ``required_bytes`` give the smallest budget
            that would work (smallest configuration's estimate + allowance); ``required_bytes`` is
            None when no configuration runs at all.
        ConfigError: invalid arguments.
    """
    if effective_batch < 1:
        raise ConfigError(f"effective batch {effective_batch} must be >= 1")
    if budget_bytes <= 0:
        raise ConfigError(f"memory budget {budget_bytes} bytes must be positive")
    mixed = [normalize_precision(p) for p in allow_precisions if normalize_precision(p) != "32"]
    patches = patch_ladder(paper_patch, stride=stride, min_patch=min_patch)
    cache: dict[PlanCandidate, int | None] = {}
    reasons: dict[PlanCandidate, str] = {}

    def tensors(c: PlanCandidate) -> int | None:
        """Tensor peak of a candidate, None when it cannot run at all."""
        if c not in cache:
            try:
                cache[c] = int(estimator(c))
            except InfeasibleCandidate as err:
                cache[c], reasons[c] = None, str(err)
        return cache[c]

    def need(c: PlanCandidate) -> int | None:
        peak = tensors(c)
        return None if peak is None else cuda_overhead.device_bytes(peak)

    def fits(c: PlanCandidate) -> bool:
        required = need(c)
        return required is not None and required <= budget_bytes

    def runs(c: PlanCandidate) -> bool:
        return tensors(c) is not None

    lowest_precision = mixed[0] if mixed else "32"
    micro = divisors(effective_batch)

    def first_running_batch(patch: int) -> int | None:
        """Index into ``micro`` of the smallest micro-batch that runs at ``patch`` (frugal knobs on);
        a batch norm needs enough values per channel, so the batches that run are a suffix."""
        if runs(PlanCandidate(micro[0], patch, lowest_precision, True)):
            return 0
        if not runs(PlanCandidate(micro[-1], patch, lowest_precision, True)):
            return None
        lo, hi = 1, len(micro) - 1  # micro[lo - 1] fails, micro[hi] runs
        while lo < hi:
            mid = (lo + hi) // 2
            if runs(PlanCandidate(micro[mid], patch, lowest_precision, True)):
                hi = mid
            else:
                lo = mid + 1
        return hi

    levels = [("32", False, "batch")] + [(p, False, "precision") for p in mixed] + [(lowest_precision, True, "checkpointing")]
    ascending = patches[::-1]
    k: int | None = None  # index into ascending of the smallest patch that runs

    def smallest_running() -> PlanCandidate | None:
        """The most frugal candidate that runs: smallest running patch, its smallest running batch."""
        nonlocal k
        if k is None:
            k = 0 if first_running_batch(ascending[0]) is not None else _first_true(
                ascending, lambda p: first_running_batch(p) is not None)
        if k is None:
            return None
        return PlanCandidate(micro[first_running_batch(ascending[k])], ascending[k], lowest_precision, True)

    chosen: tuple[PlanCandidate, str] | None = None
    hopeless = False
    for index, (precision, ckpt, stage) in enumerate(levels):
        c = PlanCandidate(effective_batch, paper_patch, precision, ckpt)
        if fits(c):
            chosen = (c, stage)
            break
        if index == 0:
            # memory grows with every knob the ladder relaxes: when the most frugal candidate
            # does not fit, nothing does (saves estimating the rungs in between)
            frugal_end = smallest_running()
            if frugal_end is None or not fits(frugal_end):
                hopeless = True
                break
    if chosen is None and not hopeless and len(micro) > 1:
        first = first_running_batch(paper_patch)
        smaller = micro[first:-1] if first is not None else []
        i = _last_true(smaller, lambda b: fits(PlanCandidate(b, paper_patch, lowest_precision, True)))
        if i is not None:
            chosen = (PlanCandidate(smaller[i], paper_patch, lowest_precision, True), "accumulation")
    # the smallest patch that runs with some micro-batch bounds the patch search from below
    # (the patches that run are a suffix of the ascending ladder)
    smallest = smallest_running() if chosen is None else None
    if chosen is None and not hopeless and smallest is not None and len(patches) > 1:
        candidates = [p for p in ascending[k:] if p != paper_patch]

        def frugal(p: int) -> PlanCandidate:
            return PlanCandidate(micro[first_running_batch(p)], p, lowest_precision, True)

        j = _last_true(candidates, lambda p: fits(frugal(p)))
        if j is not None:
            patch = candidates[j]
            first = first_running_batch(patch)
            i = _last_true(micro[first:], lambda b: fits(PlanCandidate(b, patch, lowest_precision, True)))
            chosen = (PlanCandidate(micro[first + i], patch, lowest_precision, True), "patch")
    if chosen is None:
        if smallest is None:
            reason = next(iter(reasons.values()), "the estimator failed")
            raise BudgetError(
                f"no configuration down to batch 1, patch {patches[-1]} can run, whatever the budget: {reason}; "
                "check the experiment config", required_bytes=None)
        smallest_patch = smallest.patch
        required = need(smallest)
        if smallest_patch > patches[-1]:
            hint = (f"or a smaller width (patch {smallest_patch} is the smallest the network runs at with batch "
                    f"{smallest.batch}: {reasons.get(PlanCandidate(micro[-1], patches[-1], lowest_precision, True), 'smaller ones fail')})")
        elif smallest_patch > stride:
            hint = "or a smaller width / min_patch"
        else:
            hint = "or a smaller width"
        raise BudgetError(
            f"memory budget {format_size(budget_bytes)} is too small: the smallest configuration (batch "
            f"{smallest.batch}, patch {smallest.patch}, {smallest.precision}, activation checkpointing) needs "
            f"{format_size(cache[smallest])} of tensors, {format_size(required)} with the CUDA allowance "
            f"({format_size(cuda_overhead.context_bytes)} context + {cuda_overhead.margin:.0%}); use --memory_budget "
            f"{math.ceil(required / 2**20)}MiB or more, {hint}",
            required_bytes=required,
        )
    candidate, stage = chosen
    estimated = int(estimator(candidate))  # re-check with a fresh estimate
    required = cuda_overhead.device_bytes(estimated)
    if required > budget_bytes:
        raise BudgetError(
            f"the chosen plan {candidate} re-estimated at {format_size(required)} > budget {format_size(budget_bytes)}: "
            "the estimator is not deterministic; raise the budget",
            required_bytes=required,
        )
    return Plan(
        batch=candidate.batch,
        accumulate=effective_batch // candidate.batch,
        patch=candidate.patch,
        precision=candidate.precision,
        checkpointing=candidate.checkpointing,
        estimated_bytes=estimated,
        budget_bytes=budget_bytes,
        fits=True,
        required_bytes=required,
        stage=stage,
    )


def step_down(
    plan: Plan,
    *,
    stride: int = 1,
    min_patch: int = 64,
    allow_precisions: Sequence[str] = ("bf16-mixed", "16-mixed"),
    estimator: Callable[[PlanCandidate], int] | None = None,
    cuda_overhead: CudaOverhead = CUDA_OVERHEAD,
) -> Plan | None:
    """The next, more frugal rung after an out-of-memory error (one knob, in the planner's order).

    fp32 -> first allowed autocast precision; else checkpointing off -> on; else micro-batch ->
    next smaller divisor of the effective batch (accumulation grows); else patch - ``stride``
    (if >= ``min_patch``); else None. Each move never increases memory, so without an
    ``estimator`` the previous estimate is kept as an upper bound.

    Returns:
        The stepped-down :class:`Plan` (``stage="oom-step-down"``) or None when nothing is left
        (or the ``estimator`` cannot run the next rung: :class:`InfeasibleCandidate`).
    """
    mixed = [normalize_precision(p) for p in allow_precisions if normalize_precision(p) != "32"]
    effective = plan.effective_batch
    changes: dict = {}
    if plan.precision == "32" and mixed:
        changes["precision"] = mixed[0]
    elif not plan.checkpointing:
        changes["checkpointing"] = True
    elif plan.batch > 1:
        batch = max(d for d in divisors(effective) if d < plan.batch)
        changes.update(batch=batch, accumulate=effective // batch)
    elif plan.patch - stride >= max(min_patch, stride):
        changes["patch"] = plan.patch - stride
    else:
        return None
    lower = dataclasses.replace(plan, stage="oom-step-down", **changes)
    if estimator is not None:
        try:
            estimated = int(estimator(lower.candidate))
        except InfeasibleCandidate:
            return None  # the more frugal rung cannot run at all
        required = cuda_overhead.device_bytes(estimated)
        lower = dataclasses.replace(
            lower, estimated_bytes=estimated, required_bytes=required, fits=required <= plan.budget_bytes
        )
    return lower
