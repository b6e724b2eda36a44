"""Tiled inference with seamless blending and tile planning (hdrlab.budget.tiling)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hdrlab.budget.estimate import estimate_inference_memory, inference_memory_model
from hdrlab.budget.plan import CUDA_OVERHEAD, BudgetError
from hdrlab.budget.tiling import (
    axis_blend_weights,
    global_thumbnail,
    measure_receptive_radius,
    MergeCost,
    plan_tiles,
    tight_tile,
    tile_spans,
    tiled_forward,
)
from hdrlab.budget.units import parse_size
from hdrlab.errors import ConfigError
from hdrlab.models.blocks.unet import AvgPoolBilinearUNet
from hdrlab.models.direct.singlehdr import SingleHDRNet


def _fcn() -> nn.Module:
    """Three 3x3 convs and one 5x5 conv: receptive radius 1 + 1 + 1 + 2 = 5."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1),
    ).eval()


def test_tile_spans_cover_with_overlap_and_stride():
    assert tile_spans(100, 200, 10) == [(0, 100)]
    assert tile_spans(96, 32, 8) == [(0, 32), (21, 53), (43, 75), (64, 96)]
    for length, tile, overlap, stride in [(256, 64, 16, 16), (2176, 1184, 64, 32), (3840, 512, 96, 32), (80, 48, 16, 16)]:
        spans = tile_spans(length, tile, overlap, stride=stride)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(b - a == tile and a % stride == 0 for a, b in spans)
        assert all(prev[1] - nxt[0] >= overlap for prev, nxt in zip(spans, spans[1:]))
    with pytest.raises(ConfigError, match="multiples of the network stride"):
        tile_spans(100, 32, 8, stride=16)
    with pytest.raises(ConfigError, match="overlap"):
        tile_spans(128, 32, 32)


def test_axis_blend_weights_closed_form():
    spans = [(0, 32), (16, 48)]
    w0, w1 = axis_blend_weights(spans, 48, margin=4, ramp=8)
    # tile 0: inner edge at 32; d = 32 - (x + 0.5); zero for d <= 4, one for d >= 12
    assert torch.all(w0[:20] == 1) and torch.all(w0[28:] == 0)
    x = 24  # d = 7.5 -> t = 3.5 / 8 -> raised cosine
    assert w0[x].item() == pytest.approx(0.5 - 0.5 * math.cos(math.pi * 3.5 / 8))
    # the two ramps are complementary in the overlap (sum to one)
    total = torch.zeros(48)
    total[0:32] += w0
    total[16:48] += w1
    torch.testing.assert_close(total, torch.ones(48))


def test_receptive_radius_closed_form():
    assert measure_receptive_radius(_fcn(), size=64) == 5


@pytest.mark.parametrize("ramp", [None, 0])
def test_tiled_equals_untiled_fully_convolutional(ramp):
    model = _fcn()
    image = torch.rand(2, 3, 96, 80)
    overlap = 4 * 5 if ramp is None else 2 * 5  # margin (overlap - ramp) // 2 = radius 5
    with torch.no_grad():
        full = model(image)
        tiled = tiled_forward(model, image, tile=32, overlap=overlap, ramp=ramp)
    n = len(tile_spans(96, 32, overlap)) * len(tile_spans(80, 32, overlap))
    err = (tiled - full).abs().max().item()
    print(f"FCN radius 5, {n} tiles, overlap {overlap}, ramp {ramp}: max |tiled - untiled| = {err:.2e}")
    assert n >= 4 and err <= 1e-4


def test_tiled_equals_untiled_strided_unet():
    """A 5-level average-pool U-Net (stride 16): tiles aligned to 16 reproduce the full image."""
    torch.manual_seed(0)
    model = AvgPoolBilinearUNet(width=0.125).eval()
    radius = measure_receptive_radius(model, size=256)
    overlap = 2 * radius
    with torch.no_grad():
        image = torch.rand(1, 3, 448, 464)
        full = model(image)
        tiled = tiled_forward(model, image, tile=352, overlap=overlap, stride=16, ramp=0)
    n = len(tile_spans(448, 352, overlap, stride=16)) * len(tile_spans(464, 352, overlap, stride=16))
    err = (tiled - full).abs().max().item()
    print(f"U-Net(1/8) radius {radius}, {n} tiles, overlap {overlap}: max |tiled - untiled| = {err:.2e}")
    assert n >= 4 and err <= 1e-4


def test_tiled_forward_with_output_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).eval()  # radius 1, x2 output
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        err = (tiled_forward(model, image, tile=32, overlap=8) - model(image)).abs().max().item()
    assert err <= 1e-5


class _GlobalColourNet(nn.Module):
    """Local convs modulated by a global statistic (the image's mean colour), like a global branch."""

    def __init__(self) -> None:
        super().__init__()
        self.local = _fcn()

    def stats(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=(2, 3), keepdim=True)

    def forward(self, tile: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        return self.local(tile) * (1 + stats)


def test_global_branch_is_computed_once_on_a_thumbnail():
    model = _GlobalColourNet()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 320), indexing="ij")
    image = torch.stack([xx, yy, xx * yy])[None]  # smooth ramps: thumbnail mean ~ full mean
    calls = []

    def global_fn(thumb):
        calls.append(tuple(thumb.shape))
        return model.stats(thumb)

    with torch.no_grad():
        full = model(image, model.stats(image))
        tiled = tiled_forward(model, image, tile=96, overlap=20, global_fn=global_fn, global_size=64)
        exact = tiled_forward(model, image, tile=96, overlap=20, global_fn=model.stats, global_size=512)
    diff = (tiled - full).abs().max().item()
    print(f"global branch on a 64-px thumbnail: max |tiled - untiled| = {diff:.2e} (relative "
          f"{diff / full.abs().max().item():.2e})")
    assert calls == [(1, 3, 51, 64)]
    assert 0 < diff < 1e-2
    assert (exact - full).abs().max().item() <= 1e-4  # thumbnail = the image itself -> exact
    assert global_thumbnail(image, max_side=64, stride=16).shape[-2:] == (48, 64)


def test_plan_tiles_closed_form_and_refusal():
    budget = parse_size("1GiB")
    plan = plan_tiles((2048, 2048), budget, 4000.0, fixed_bytes=10 * 2**20, overlap=32, stride=16)
    buffers = 4 * 2048 * 2048 * (3 + 7)
    room = CUDA_OVERHEAD.tensor_budget(budget)
    big = plan.largest_tile  # the largest tile that fits fixes the count; the tile is the tightest with it
    assert plan.tile % 16 == 0 and plan.tiles >= 4 and plan.tile <= big
    assert 10 * 2**20 + 4000 * big**2 + buffers <= room < 10 * 2**20 + 4000 * (big + 16) ** 2 + buffers
    assert plan.estimated_bytes == 10 * 2**20 + 4000 * plan.tile**2 + buffers <= room
    assert plan.tiles == len(tile_spans(2048, big, 32, stride=16)) ** 2 == len(tile_spans(2048, plan.tile, 32, stride=16)) ** 2
    small = plan_tiles((256, 256), budget, 4000.0, overlap=32, stride=16)
    assert small.tile is None and small.tiles == 1
    with pytest.raises(BudgetError, match="raise the budget"):
        plan_tiles((4096, 4096), parse_size("600MiB"), 4000.0, overlap=32, stride=16)


def _work_ratio(hw: tuple[int, int], tile: int, overlap: int, stride: int) -> float:
    rows, cols = (tile_spans(n, min(tile, n), overlap, stride=stride) for n in hw)
    return sum(b - a for a, b in rows) * sum(b - a for a, b in cols) / (hw[0] * hw[1])


def test_plan_tiles_shrinks_the_tile_to_the_tightest_of_the_count():
    """The count comes from the largest tile that fits; the tile is then the smallest stride multiple
    with that count, ``ceil((side + (n - 1) overlap) / n)``: same passes, less overlap work, lower peak
    (SingleHDR at 1024 px, 1536 MiB: 928 -> 544, work 3.29x -> 1.13x; 2048 px: 864 -> 736, 1.60x -> 1.16x)."""
    assert tight_tile((1024, 1024), 928, 64, stride=32, min_tile=160) == 544  # (1024 + 64) / 2
    assert tight_tile((2048, 2048), 864, 64, stride=32, min_tile=160) == 736  # (2048 + 2 * 64) / 3 -> 736
    assert _work_ratio((1024, 1024), 928, 64, 32) == pytest.approx(3.285, abs=1e-3)
    assert _work_ratio((1024, 1024), 544, 64, 32) == pytest.approx(1.129, abs=1e-3)
    assert _work_ratio((2048, 2048), 736, 64, 32) == pytest.approx(1.162, abs=1e-3)
    # the planner: a per-pixel cost whose largest fitting tile at 1024 px is 928
    budget, fixed, stride, overlap = parse_size("1536MiB"), 50 * 2**20, 32, 64
    buffers = 4 * 1024 * 1024 * (3 + 7)
    per_pixel = (CUDA_OVERHEAD.tensor_budget(budget) - fixed - buffers) / 940**2
    plan = plan_tiles((1024, 1024), budget, per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride)
    assert (plan.largest_tile, plan.tile, plan.tiles) == (928, 544, 4)
    assert _work_ratio((1024, 1024), plan.tile, overlap, stride) < 1.13
    assert plan.estimated_bytes == math.ceil(fixed + per_pixel * 544**2 + buffers)  # lower than with 928
    assert plan.estimated_bytes < fixed + per_pixel * 928**2 + buffers


@pytest.mark.parametrize("hw, overlap, stride", [((1024, 1024), 64, 32), ((2048, 2048), 64, 32), ((512, 768), 32, 32),
                                                 ((2176, 3840), 64, 32), ((448, 1600), 32, 16), ((4096, 4096), 64, 64)])
def test_tight_tile_is_minimal_and_never_adds_tiles(hw, overlap, stride):
    min_tile = 2 * overlap + stride
    for big in range(min_tile, max(hw) + 1, stride):
        counts = [len(tile_spans(n, min(big, n), overlap, stride=stride)) for n in hw]
        tight = tight_tile(hw, big, overlap, stride=stride, min_tile=min_tile)
        assert min_tile <= tight <= big and tight % stride == 0
        for n, count in zip(hw, counts):
            spans = tile_spans(n, min(tight, n), overlap, stride=stride)
            assert len(spans) <= count and spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] - b[0] >= overlap for a, b in zip(spans, spans[1:]))
        if tight - stride >= min_tile:  # one stride smaller needs more tiles on some axis
            smaller = [len(tile_spans(n, min(tight - stride, n), overlap, stride=stride)) for n in hw]
            assert any(s > c for s, c in zip(smaller, counts))
        assert _work_ratio(hw, tight, overlap, stride) <= _work_ratio(hw, big, overlap, stride)


def test_tight_tile_output_is_seamless():
    """The planner's tight tile (shrunk below the largest that fits) still blends to the untiled output."""
    model = _fcn()
    image = torch.rand(1, 3, 160, 144)
    overlap = 20  # margin 5 = receptive radius with the default ramp overlap // 2
    tight = tight_tile((160, 144), 96, overlap, stride=1, min_tile=2 * overlap + 1)
    assert tight < 96 and len(tile_spans(160, tight, overlap)) == len(tile_spans(160, 96, overlap)) == 2
    with torch.no_grad():
        err = (tiled_forward(model, image, tile=tight, overlap=overlap) - model(image)).abs().max().item()
    assert err <= 1e-4


def test_plan_tiles_accounts_for_the_merge():
    """A merge after the network pass is in the plan: between "tiles only" and "tiles + whole merge" a
    pixel-wise merge runs in row strips within the budget, any other merge is refused, one line naming
    the smallest budget that works."""
    hw, stride, overlap, per_pixel, fixed = (1024, 1536), 32, 64, 3000.0, 20 * 2**20
    merge_pp = 650.0  # ~ Debevec known-CRF on a 9-exposure stack (27 channels), stack and output included
    tiles_only = plan_tiles(hw, parse_size("1GiB"), per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride,
                            out_channels=27)
    whole_merge = 4 * hw[0] * hw[1] * 3 + merge_pp * hw[0] * hw[1]
    budget = CUDA_OVERHEAD.device_bytes(max(tiles_only.estimated_bytes, math.ceil(whole_merge))) - 2**20
    room = CUDA_OVERHEAD.tensor_budget(budget)
    assert tiles_only.estimated_bytes <= room < whole_merge  # the tiles fit, the whole merge does not
    pixelwise = MergeCost(merge_pp, 4096, pixelwise=True, in_channels=27)
    plan = plan_tiles(hw, budget, per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride, out_channels=27,
                      merge=pixelwise)
    assert plan.merge_rows is not None and 1 <= plan.merge_rows < hw[0]
    strip_peak = 4 * hw[0] * hw[1] * (3 + 27 + 3) + 4096 + merge_pp * hw[1] * plan.merge_rows
    assert plan.merge_bytes == math.ceil(strip_peak) <= room < strip_peak + merge_pp * hw[1]  # fills the budget
    assert plan.estimated_bytes == max(plan.merge_bytes, tiles_only.estimated_bytes) <= room
    roomy = plan_tiles(hw, 4 * budget, per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride, out_channels=27,
                       merge=pixelwise)
    assert roomy.merge_rows is None and roomy.merge_bytes == math.ceil(whole_merge + 4096)
    whole_only = MergeCost(merge_pp, 4096, pixelwise=False, in_channels=27)
    with pytest.raises(BudgetError, match="with its full-image merge: .*raise the budget to") as err:
        plan_tiles(hw, budget, per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride, out_channels=27,
                   merge=whole_only)
    assert len(str(err.value).splitlines()) == 1
    need = err.value.required_bytes
    assert need == CUDA_OVERHEAD.device_bytes(math.ceil(whole_merge + 4096))
    ok = plan_tiles(hw, need, per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride, out_channels=27,
                    merge=whole_only)
    assert ok.merge_rows is None and ok.estimated_bytes <= CUDA_OVERHEAD.tensor_budget(need)
    # a budget too small for even one strip names the strip's need
    tiny = 4 * hw[0] * hw[1] * (3 + 27 + 3)
    with pytest.raises(BudgetError, match="1-row strip") as err:
        plan_tiles(hw, CUDA_OVERHEAD.device_bytes(tiny), per_pixel, fixed_bytes=fixed, overlap=overlap, stride=stride,
                   out_channels=27, merge=pixelwise)
    assert err.value.required_bytes == CUDA_OVERHEAD.device_bytes(
        max(math.ceil(tiny + 4096 + merge_pp * hw[1]),
            math.ceil(fixed + per_pixel * (2 * overlap + stride) ** 2 + 4 * hw[0] * hw[1] * (3 + 55))))


def test_4k_photo_within_4gib():
    """SingleHDR (full width) on a 3840x2160 photo (padded to 2176 rows, a multiple of 32): untiled needs
    ~16 GB, the tile plan fits 4 GiB."""
    build = lambda: SingleHDRNet()  # noqa: E731
    forward = lambda m, x: m(x)["hdr"]  # noqa: E731
    fixed, per_pixel = inference_memory_model(build, forward, sizes=(128, 256))
    budget = parse_size("4GiB")
    plan = plan_tiles((2176, 3840), budget, per_pixel, fixed_bytes=fixed, overlap=64, stride=32)
    assert fixed + per_pixel * 2176 * 3840 > CUDA_OVERHEAD.tensor_budget(budget)  # untiled would not fit
    est = estimate_inference_memory(build, forward, image_hw=(2176, 3840), tile=plan.tile, overlap=64, stride=32)
    print(f"4K SingleHDR: {per_pixel:.0f} B/px, tile {plan.tile} x {plan.tiles}, modelled {plan.estimated_bytes / 2**20:.0f} "
          f"MiB, fake-tensor tiled run {est.peak_mib:.0f} MiB ({est.seconds:.1f}s); tensor budget "
          f"{CUDA_OVERHEAD.tensor_budget(budget) / 2**20:.0f} MiB")
    assert plan.tiles >= 2
    assert est.peak_bytes <= CUDA_OVERHEAD.tensor_budget(budget)
    assert abs(est.peak_bytes - plan.estimated_bytes) / est.peak_bytes < 0.1
