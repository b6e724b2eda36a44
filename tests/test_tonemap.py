"""Tests of hdrlab.tonemap against closed-form values, OpenCV and matplotlib."""

from __future__ import annotations

import math

import cv2
import matplotlib
import numpy as np
import pytest
import torch

from hdrlab import tonemap as tm
from hdrlab.errors import ConfigError


def _srgb_oetf(v: float) -> float:
    return 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


def test_mu_law_closed_form_and_clamp():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    got = tm.mu_law(x, 5000.0)
    want = [0.0, 0.0, math.log(1 + 2500) / math.log(5001), 1.0, 1.0]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    assert tm.mu_law(torch.tensor([0.5]), 10.0).item() == pytest.approx(math.log(6) / math.log(11), abs=1e-7)


def test_inverse_mu_law_round_trip():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(tm.inverse_mu_law(tm.mu_law(x, 5000.0), 5000.0), x, atol=1e-12)


def test_mu_law_gradcheck_float64():
    x = (torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: tm.mu_law(t, 5000.0), (x,))


def test_reinhard_grey_image_closed_form():
    # grey image of luminance c: log-average = c (eps negligible), L_m = key, L_d = key / (1 + key)
    x = torch.full((1, 3, 4, 4), 3.0, dtype=torch.float64)
    got = tm.reinhard(x, key=0.18, eps=1e-12)
    assert torch.allclose(got, torch.full_like(x, 0.18 / 1.18), atol=1e-9)
    got_w = tm.reinhard(x, key=0.18, white=0.5, eps=1e-12)
    assert torch.allclose(got_w, torch.full_like(x, 0.18 * (1 + 0.18 / 0.25) / 1.18), atol=1e-9)


def test_reinhard_scale_invariant_per_image():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) + 0.01
    assert torch.allclose(tm.reinhard(x, eps=1e-12), tm.reinhard(x * 37.0, eps=1e-12), atol=1e-8)


def test_exposure_gamma_closed_form():
    x = torch.tensor([0.0, 0.125, 0.25, 1.0]).view(1, 4, 1).expand(3, 4, 1)
    got = tm.exposure_gamma(x, ev=1.0, gamma=2.2)[0, :, 0]
    assert got.tolist() == pytest.approx([0.0, 0.25 ** (1 / 2.2), 0.5 ** (1 / 2.2), 1.0], abs=1e-6)


def test_display_documented_values():
    v = torch.tensor([0.0, 0.18, 1.0, 16.0, 100.0]).view(1, 5, 1).expand(3, 5, 1)
    got = tm.display(v)[0, :, 0].tolist()
    lin = [0.0, 0.18 * (1 + 0.18 / 256) / 1.18, 0.5 * (1 + 1 / 256), 1.0, 1.0]
    assert got == pytest.approx([_srgb_oetf(a) for a in lin], abs=1e-5)
    assert got[2] == pytest.approx(0.7366, abs=1e-4)  # the clip level, as documented


def test_to_uint8_matches_opencv_png_round_trip(tmp_path):
    x = torch.rand(3, 5, 7)
    u8 = tm.to_uint8(x)
    assert u8.shape == (5, 7, 3) and u8.dtype == np.uint8
    assert np.array_equal(u8, np.round(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    path = str(tmp_path / "p.png")
    assert cv2.imwrite(path, cv2.cvtColor(u8, cv2.COLOR_RGB2BGR))
    assert np.array_equal(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), u8)
    assert tm.to_uint8(torch.rand(2, 3, 4, 4)).shape == (2, 4, 4, 3)
    with pytest.raises(ConfigError):
        tm.to_uint8(torch.rand(4, 4))


def test_false_color_matches_matplotlib():
    lum = torch.tensor([2.0**-20, 1.0, 2.0**8, 2.0**12])  # below range, stop 0, top, above
    x = lum.view(1, 4, 1).expand(3, 4, 1)
    got = tm.false_color_log_luminance(x, stops=(-8, 8), cmap="viridis")
    cmap = matplotlib.colormaps["viridis"]
    want = np.stack([cmap(0.0)[:3], cmap(128 / 255)[:3], cmap(1.0)[:3], cmap(1.0)[:3]])
    assert got.shape == (3, 4, 1)
    assert np.allclose(got[:, :, 0].T.numpy(), want, atol=1e-6)


def test_exposure_brackets_stack():
    x = torch.rand(2, 3, 4, 4) * 4
    b = tm.exposure_brackets(x, evs=(-2, 0, 2))
    assert b.shape == (2, 3, 3, 4, 4)
    assert torch.equal(b[:, 2], tm.exposure_gamma(x, ev=2.0))
