"""ColorVideoVDP in the validation memory estimate: a measured affine model checked at a third size."""

from __future__ import annotations

import time

import pytest
import torch

from hdrlab.budget.estimate import (
    cvvdp_memory_model,
    estimate_validation_memory,
    measure_cvvdp_update_memory,
)
from hdrlab.errors import ConfigError
from hdrlab.models.direct import DequantizationNet


def _build() -> torch.nn.Module:
    return DequantizationNet(width=0.125)


def _forward(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    return model(image)


def test_cvvdp_model_predicts_a_third_size_within_10_percent() -> None:
    start = time.perf_counter()
    fixed, per_pixel = cvvdp_memory_model()  # real measurements at 128^2 and 256^2
    real = measure_cvvdp_update_memory(192)
    transient = real.peak_bytes - real.by_category["input"]
    predicted = fixed + per_pixel * 192 * 192
    print(f"cvvdp model: fixed {fixed} B, {per_pixel:.2f} B/px; 192^2 predicted {predicted:.0f} real {transient}")
    assert not real.fake
    assert real.by_category["input"] == 2 * 3 * 192 * 192 * 4  # the pair, float32
    assert abs(predicted - transient) / transient < 0.10
    # ColorVideoVDP keeps far more than the pair alive (pyramids, colour channels): > 50 B/px
    assert per_pixel > 50
    assert time.perf_counter() - start < 20


def test_validation_estimate_with_cvvdp_adds_the_measured_model() -> None:
    hw = (256, 384)
    base = estimate_validation_memory(_build, _forward, image_hw=hw, metric_networks=())
    with_cv = estimate_validation_memory(_build, _forward, image_hw=hw, metric_networks=("cvvdp",))
    fixed, per_pixel = cvvdp_memory_model()  # cached: no new measurement
    transient = fixed + per_pixel * hw[0] * hw[1]
    # resident while cvvdp runs: params + input + pred + target (3-channel float32 each)
    assert with_cv.extra["cvvdp_bytes"] >= transient + 3 * 3 * hw[0] * hw[1] * 4
    assert with_cv.peak_bytes == max(base.peak_bytes, with_cv.extra["cvvdp_bytes"])
    assert with_cv.peak_bytes > base.peak_bytes  # cvvdp dominates a width-1/8 network
    assert with_cv.extra["networks"] == ["cvvdp"]


def test_validation_estimate_rejects_unknown_metric() -> None:
    with pytest.raises(ConfigError, match="cvvdp"):
        estimate_validation_memory(_build, _forward, image_hw=(64, 64), metric_networks=("flip",))
