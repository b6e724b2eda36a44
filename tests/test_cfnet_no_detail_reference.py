"""``benchmarks/cfnet_no_detail_reference.py``: the no-learned-detail fusion quoted in docs/methods.md."""

from __future__ import annotations

import math

import torch

from hdrlab.tonemap import display
from tests.support.benchmarks import benchmark_module


def test_no_detail_fusion_is_exact_on_smooth_images_and_loses_fine_detail():
    rc = benchmark_module("cfnet_no_detail_reference")
    flat = torch.full((1, 3, 16, 16), 3.0)  # constant radiance above the clip level
    assert torch.allclose(rc.no_detail_fusion(flat, scale=2), display(flat), atol=1e-6)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 4.0  # one-pixel detail
    hdr = checker.expand(1, 3, 16, 16).float()
    out = rc.no_detail_fusion(hdr, scale=2)
    assert out.shape == hdr.shape and 0.0 <= out.min() and out.max() <= 1.0
    # the detail is gone: every pixel ends up near the mean of the two display levels
    assert (out - display(hdr)).abs().mean() > 0.3


def test_reference_rows_score_the_pinned_test_scenes():
    rc = benchmark_module("cfnet_no_detail_reference")
    rows = rc.reference_rows(scale=2, scenes=2)
    assert list(rows) == ["procedural_20000000", "procedural_20000001"]
    # measured on this split (the script's per-scene table): 22.87 / 21.34 dB and 23.66 / 23.11 dB
    assert math.isclose(rows["procedural_20000000"]["display_psnr"], 22.87, abs_tol=0.01)
    assert math.isclose(rows["procedural_20000001"]["display_psnr_clipped"], 23.11, abs_tol=0.01)
    # the baseline column is the protocol's baseline_inverse_crf (its per-scene CSV: 18.70 / 19.38 dB)
    assert math.isclose(rows["procedural_20000000"]["baseline_clipped"], 18.70, abs_tol=0.01)
    assert math.isclose(rows["procedural_20000001"]["baseline_clipped"], 19.38, abs_tol=0.01)
    val = rc.reference_rows(scale=2, scenes=1, split="val")
    assert list(val) == ["procedural_10000000"]
