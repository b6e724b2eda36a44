"""``benchmarks/linearization_curve.py``: the hand features and the ridge fit behind the documented
camera-curve reference (closed forms; no rendering)."""

from __future__ import annotations

import torch

from tests.support.benchmarks import benchmark_module


def test_curve_features_closed_form():
    lc = benchmark_module("linearization_curve")
    image = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    image[0, :, :, 2:] = 1.0  # right half clipped: one vertical edge of height 0.5
    f = lc.curve_features(image, bins=4)
    assert f.shape == (1, 6 * 4 + 9)
    for c in range(3):
        hist, grad = f[0, 8 * c: 8 * c + 4], f[0, 8 * c + 4: 8 * c + 8]
        assert torch.allclose(hist, torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64))
        # the edge's 4 forward differences (0.5 each) land on the brighter side: bin 3, 8 pixels
        assert torch.allclose(grad, torch.tensor([0.0, 0.0, 0.0, 4 * 0.5 / 9], dtype=torch.float64))
    # 8 luminances of 0.5 and 8 of 1.0, linear interpolation between order statistics
    assert torch.allclose(f[0, 24:31], torch.tensor([0.5, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(f[0, 31:], torch.tensor([0.5, 0.0], dtype=torch.float64))


def test_ridge_recovers_a_linear_map():
    lc = benchmark_module("linearization_curve")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = x @ w + 0.25
    model = lc.fit_ridge(x, y, 1e-9)
    assert lc.rmse(lc.predict_ridge(model, x), y) < 1e-6
    shrunk = lc.fit_ridge(x, y, 1e6)  # a huge penalty leaves the intercept: the target mean
    assert torch.allclose(lc.predict_ridge(shrunk, x), y.mean(0).expand_as(y), atol=1e-2)
