"""``hdrlab reconstruct --memory_budget``: the tile chosen from a fake-tensor memory model fits the budget."""

from __future__ import annotations

import pytest
import torch

from hdrlab.budget.estimate import estimate_inference_memory
from hdrlab.budget.plan import CUDA_OVERHEAD, BudgetError
from hdrlab.commands import reconstruct
from hdrlab.errors import HDRLabError
from hdrlab.models.direct.singlehdr import DequantizationNet

HW = (512, 768)
MULTIPLE = 32
OVERLAP = 32


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return DequantizationNet(width=0.125).eval()


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _tiled_device_bytes(net: torch.nn.Module, tile: int | None) -> int:
    est = estimate_inference_memory(
        reconstruct._fake_copy_builder(net), _forward, image_hw=HW, tile=tile,
        overlap=min(OVERLAP, (tile or MULTIPLE) - MULTIPLE) if tile else 0, stride=MULTIPLE,
    )
    return CUDA_OVERHEAD.device_bytes(est.peak_bytes)


@pytest.mark.parametrize("budget_mib", [535, 545])
def test_chosen_tile_fits_the_budget(net, budget_mib: int) -> None:
    budget = budget_mib * 2**20
    plan = reconstruct.budget_tile_plan(net, _forward, HW, budget, overlap=OVERLAP, multiple=MULTIPLE)
    assert plan.tile is not None and plan.tile % MULTIPLE == 0 and plan.tiles >= 2
    real_peak = _tiled_device_bytes(net, plan.tile)  # independent fake-tensor trace of the tiled pass
    print(f"{budget_mib} MiB: tile {plan.tile}, {plan.tiles} tiles, modelled {plan.estimated_bytes} B, "
          f"traced device {real_peak} B")
    assert real_peak <= budget
    # the next larger stride multiple would not fit the model
    bigger = reconstruct.budget_tile_plan(net, _forward, HW, budget + 2**20, overlap=OVERLAP, multiple=MULTIPLE)
    assert (bigger.tile or max(HW)) >= plan.tile  # monotone in the budget


def test_large_budget_runs_untiled_and_tiny_budget_names_the_minimum(net) -> None:
    whole = reconstruct.budget_tile_plan(net, _forward, HW, 2 * 2**30, overlap=OVERLAP, multiple=MULTIPLE)
    assert whole.tile is None and whole.tiles == 1
    with pytest.raises(BudgetError, match="raise the budget to") as err:
        reconstruct.budget_tile_plan(net, _forward, HW, 520 * 2**20, overlap=OVERLAP, multiple=MULTIPLE)
    assert isinstance(err.value, HDRLabError)
    need = err.value.required_bytes
    assert need is not None and need > 520 * 2**20
    smallest = reconstruct.budget_tile_plan(net, _forward, HW, need, overlap=OVERLAP, multiple=MULTIPLE)
    assert smallest.tile == 2 * OVERLAP + MULTIPLE


def test_method_tile_plan_direct_method_and_cli_flag() -> None:
    from hdrlab.methods.baselines import LinearITMOBaseline

    plan = reconstruct.method_tile_plan(LinearITMOBaseline(), HW, 540 * 2**20, overlap=OVERLAP, multiple=MULTIPLE)
    assert plan.tile is not None and plan.estimated_bytes <= CUDA_OVERHEAD.tensor_budget(540 * 2**20)
    args = reconstruct.build_parser().parse_args(["x.png", "-o", "out", "--ckpt", "c.ckpt", "--memory_budget", "4GiB"])
    assert args.memory_budget == "4GiB"
