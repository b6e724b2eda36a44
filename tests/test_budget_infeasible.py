"""The planner with candidates the network cannot run (batch norm over one value per channel):
they never fit, the search starts above them, and a refusal names a budget that works."""

from __future__ import annotations

import pytest

from hdrlab.budget.plan import BudgetError, CudaOverhead, InfeasibleCandidate, PlanCandidate, plan_for_budget

MiB = 2**20
NO_OVERHEAD = CudaOverhead(context_bytes=0, margin=0.0)


def _batch_norm_estimator(stride: int, calls: list[PlanCandidate]):
    def estimate(c: PlanCandidate) -> int:
        calls.append(c)
        if c.batch * (c.patch // stride) ** 2 < 2:
            raise InfeasibleCandidate(f"batch {c.batch}, patch {c.patch}: Expected more than 1 value per channel")
        per_pixel = 2000.0 * (0.5 if c.precision != "32" else 1.0) * (1 / 3 if c.checkpointing else 1.0)
        return int(10 * MiB + per_pixel * c.batch * c.patch**2)

    return estimate


@pytest.mark.parametrize("paper_patch,batch", [(64, 2), (256, 16), (128, 1), (64, 1)])
def test_every_budget_plans_a_running_candidate_or_names_a_working_budget(paper_patch, batch):
    calls: list[PlanCandidate] = []
    est = _batch_norm_estimator(64, calls)
    kw = dict(paper_patch=paper_patch, effective_batch=batch, stride=64, min_patch=64, cuda_overhead=NO_OVERHEAD)
    for budget in [1, 16 * MiB, 20 * MiB, 40 * MiB, 64 * MiB, 200 * MiB, 600 * MiB, 4096 * MiB]:
        try:
            plan = plan_for_budget(est, budget_bytes=budget, **kw)
        except BudgetError as err:
            if err.required_bytes is None:  # batch 1 at patch 64: nothing runs at all
                assert (paper_patch, batch) == (64, 1) and "can run" in str(err)
                continue
            assert err.required_bytes > budget and f"use --memory_budget {-(-err.required_bytes // MiB)}MiB" in str(err)
            works = plan_for_budget(est, budget_bytes=err.required_bytes, **kw)
            assert works.batch * (works.patch // 64) ** 2 >= 2
        else:
            assert plan.batch * (plan.patch // 64) ** 2 >= 2 and plan.required_bytes <= budget
            assert plan.batch * plan.accumulate == batch


def test_accumulation_stops_at_the_smallest_running_micro_batch():
    calls: list[PlanCandidate] = []
    est = _batch_norm_estimator(64, calls)
    budget = est(PlanCandidate(2, 64, "bf16-mixed", True))
    plan = plan_for_budget(est, budget_bytes=budget, paper_patch=64, effective_batch=8, stride=64, min_patch=64,
                           cuda_overhead=NO_OVERHEAD)
    assert (plan.batch, plan.accumulate, plan.stage) == (2, 4, "accumulation")
    with pytest.raises(BudgetError, match=r"batch 2, patch 64.*or a smaller width$") as info:
        plan_for_budget(est, budget_bytes=budget - 1, paper_patch=64, effective_batch=8, stride=64, min_patch=64,
                        cuda_overhead=NO_OVERHEAD)
    assert info.value.required_bytes == budget


def test_patch_search_starts_at_the_smallest_patch_that_runs():
    calls: list[PlanCandidate] = []
    est = _batch_norm_estimator(64, calls)
    with pytest.raises(BudgetError, match="batch 1, patch 128") as info:
        plan_for_budget(est, budget_bytes=1, paper_patch=256, effective_batch=1, stride=64, min_patch=64,
                        cuda_overhead=NO_OVERHEAD)
    assert "patch 128 is the smallest the network runs at" in str(info.value)
    plan = plan_for_budget(est, budget_bytes=info.value.required_bytes, paper_patch=256, effective_batch=1,
                           stride=64, min_patch=64, cuda_overhead=NO_OVERHEAD)
    assert (plan.batch, plan.patch, plan.stage) == (1, 128, "patch")
