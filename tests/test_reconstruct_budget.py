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


# --------------------------------------------------------------------------- the merge is in the plan
def _random_stack(height: int = 70, width: int = 52, evs=(-2.0, -1.0, 0.0, 1.0, 2.0)):
    from hdrlab.camera import CRF
    from hdrlab.stack import ExposureStack

    g = torch.Generator().manual_seed(0)
    radiance = torch.rand(1, 3, height, width, generator=g) ** 3 * 8
    crf = CRF.gamma(2.2)
    images = torch.stack([crf(radiance * 2.0**e).clamp(0, 1) for e in evs], dim=1)
    images = (images * 255).round() / 255  # 8-bit codes: some clipped, some black
    return ExposureStack(images=images, ev=torch.tensor([list(evs)]), reference=len(evs) // 2, crf=crf)


@pytest.mark.parametrize("crf", ["known", "recover"])
@pytest.mark.parametrize("rows", [1, 7, 69])
def test_pixelwise_strip_merge_equals_the_whole_merge(crf: str, rows: int) -> None:
    from hdrlab.methods.two_stage import rescale_to_input
    from hdrlab.models.mergers import DebevecMerger

    stack = _random_stack()
    merger = DebevecMerger(crf=crf, saturation_bound=True)
    assert merger.pixelwise
    post = lambda out, s: rescale_to_input(out, s).clamp_min(0.0)  # noqa: E731
    with torch.no_grad():
        whole = post(merger(stack), stack)
        strips = merger.merge_in_strips(stack, rows, post=post)
    assert strips.shape == whole.shape == (1, 3, 70, 52)
    torch.testing.assert_close(strips, whole, rtol=1e-6, atol=1e-7)


def test_mergers_that_are_not_pixelwise_refuse_strips() -> None:
    from hdrlab.models.mergers import MertensMerger
    from hdrlab.models.mergers.cfnet import CFNetMerger

    for merger in (MertensMerger(), CFNetMerger(width=0.125)):
        assert merger.pixelwise is False
        with pytest.raises(HDRLabError, match="not pixel-wise"):
            merger.merge_in_strips(_random_stack(), 8)


@pytest.fixture(scope="module")
def toy_two_stage() -> torch.nn.Module:
    from hdrlab.methods import TwoStage
    from hdrlab.models.mergers import DebevecMerger
    from tests.support.toy_stages import ToyGenerator

    torch.manual_seed(0)
    gen = ToyGenerator(ev=(-2.0, -1.0, 1.0, 2.0))
    torch.nn.init.normal_(gen.up.weight, std=0.05)
    return TwoStage(generator=gen, merger=DebevecMerger(crf="known"), mode="freeze_merger").eval()


def test_budget_between_tiles_and_whole_merge_strips_or_refuses(toy_two_stage) -> None:
    """Generator method, 256 x 384 photo: a budget the network's tiles fit but the whole-image merge
    does not. Known-CRF Debevec (pixel-wise) merges strips: same output, modelled strip peak within
    the budget and above a fake-tensor trace of the strip merge. Mertens (not pixel-wise) is refused
    with the smallest budget that works, which then plans."""
    from hdrlab.budget.estimate import estimate_inference_memory
    from hdrlab.budget.plan import CUDA_OVERHEAD as ALLOWANCE
    from hdrlab.camera import CRF

    method, hw, multiple = toy_two_stage, (256, 384), 8
    pixels = hw[0] * hw[1]
    no_merge = reconstruct.budget_tile_plan(
        method.generator, lambda g, t: g(t, ev=g.ev).images.flatten(1, 2), hw, 2**40, overlap=16, multiple=multiple,
        out_channels=15)
    cost = reconstruct.merge_memory_cost(method, multiple=multiple)
    assert cost.pixelwise and cost.in_channels == 15
    whole_merge = 4 * 3 * pixels + cost.fixed_bytes + cost.per_pixel_bytes * pixels
    tiles_fit = no_merge.estimated_bytes  # whole-image network pass (generous budget)
    assert whole_merge > tiles_fit
    budget = ALLOWANCE.device_bytes(tiles_fit + (whole_merge - tiles_fit) // 3)
    assert tiles_fit <= ALLOWANCE.tensor_budget(budget) < whole_merge
    plan = reconstruct.method_tile_plan(method, hw, budget, overlap=16, multiple=multiple)
    assert plan.merge_rows is not None and plan.merge_rows < hw[0]
    assert plan.estimated_bytes <= ALLOWANCE.tensor_budget(budget)
    # the strip merge as reconstruct runs it, traced on fake tensors: within the modelled merge peak
    module, prepare, post = reconstruct.stack_merge(method)
    evs = [-2.0, -1.0, 0.0, 1.0, 2.0]
    traced = estimate_inference_memory(
        reconstruct._fake_copy_builder(module),
        lambda m, t: m.merge_in_strips(prepare(t.unflatten(1, (5, 3)), evs, CRF.gamma(2.2)), plan.merge_rows,
                                       post=post),
        image_hw=hw, in_channels=15)
    print(f"merge: whole {whole_merge / 2**20:.1f} MiB, strips of {plan.merge_rows} rows modelled "
          f"{plan.merge_bytes / 2**20:.1f} MiB, traced {traced.peak_bytes / 2**20:.1f} MiB (+ photo)")
    assert traced.peak_bytes + 4 * 3 * pixels <= plan.merge_bytes
    g = torch.Generator().manual_seed(1)
    photo = torch.rand(3, *hw, generator=g)
    whole = reconstruct.reconstruct_image(method, photo, tile=plan.tile or max(hw), overlap=16, multiple=multiple)
    strips = reconstruct.reconstruct_image(method, photo, tile=plan.tile or max(hw), overlap=16, multiple=multiple,
                                           merge_rows=plan.merge_rows)
    torch.testing.assert_close(strips, whole, rtol=1e-6, atol=1e-7)
    # not pixel-wise: the whole merge must fit, so this budget is refused with the one that works
    with pytest.raises(BudgetError, match="full-image merge.*raise the budget to") as err:
        reconstruct.method_tile_plan(method, hw, budget, merger="mertens", overlap=16, multiple=multiple)
    assert len(str(err.value).splitlines()) == 1 and err.value.required_bytes > budget
    fits = reconstruct.method_tile_plan(method, hw, err.value.required_bytes, merger="mertens", overlap=16,
                                        multiple=multiple)
    assert fits.merge_rows is None and fits.estimated_bytes <= ALLOWANCE.tensor_budget(err.value.required_bytes)
    with pytest.raises(HDRLabError, match="pixel-wise"):
        reconstruct.reconstruct_image(method, photo, merger="mertens", multiple=multiple, merge_rows=16)
