"""Memory budgets: estimate peak memory without a GPU, plan a run for a budget, tile inference.

- :mod:`hdrlab.budget.units` - ``"4GiB"`` / ``"4GB"`` parsing.
- :mod:`hdrlab.budget.estimate` - training / inference / validation peak memory and FLOPs on fake
  tensors (``FakeTensorMode`` + ``MemTracker``).
- :mod:`hdrlab.budget.plan` - the planner (fixed knob order), the CUDA allowance, activation
  checkpointing, precision contexts.
- :mod:`hdrlab.budget.tiling` - tiled inference with seamless blending and tile planning.
- :mod:`hdrlab.budget.cuda` - enforcement on CUDA (untested on real GPUs).
"""

from hdrlab.budget.estimate import (
    MemoryEstimate,
    estimate_inference_memory,
    estimate_peak_memory,
    estimate_validation_memory,
    inference_memory_model,
    measure_peak_memory,
    training_estimator,
)
from hdrlab.budget.plan import (
    CUDA_OVERHEAD,
    BudgetError,
    CudaOverhead,
    InfeasibleCandidate,
    Plan,
    PlanCandidate,
    enable_activation_checkpointing,
    plan_for_budget,
    step_down,
)
from hdrlab.budget.tiling import TilePlan, plan_tiles, tiled_forward
from hdrlab.budget.units import format_size, parse_size

__all__ = [
    "CUDA_OVERHEAD",
    "BudgetError",
    "CudaOverhead",
    "InfeasibleCandidate",
    "MemoryEstimate",
    "Plan",
    "PlanCandidate",
    "TilePlan",
    "enable_activation_checkpointing",
    "estimate_inference_memory",
    "estimate_peak_memory",
    "estimate_validation_memory",
    "format_size",
    "inference_memory_model",
    "measure_peak_memory",
    "parse_size",
    "plan_for_budget",
    "plan_tiles",
    "step_down",
    "tiled_forward",
    "training_estimator",
]
