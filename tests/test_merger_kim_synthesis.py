"""Kim et al. (AAAI 2021) differentiable HDR synthesis layer (:mod:`hdrlab.models.mergers.kim_synthesis`).

Scenes: procedural radiance (``render_scene``, 64x64, median scaled to 0.2 of the clip level)
photographed as a 7-image bracket ev -3..3 with ``synthesize_stack`` (8-bit, gamma 2.2 / sRGB).
The official sampling and solve are re-implemented here in numpy loops (independent of the
module) as references.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdrlab.camera import CRF, synthesize_stack
from hdrlab.data.procedural import render_scene
from hdrlab.errors import ConfigError
from hdrlab.models.mergers.debevec import DebevecMerger
from hdrlab.models.mergers.kim_synthesis import (
    KimSynthesisMerger,
    grossberg_samples,
    kim_merge,
    kim_weight,
    lookup_response,
    solve_log_response,
    to_codes,
)
from hdrlab.stack import ExposureStack

pytestmark = pytest.mark.usefixtures("single_thread")

EV = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def bracket(seed: int, crf: CRF, *, size: int = 64, median: float = 0.2) -> tuple[torch.Tensor, ExposureStack]:
    hdr = render_scene(seed, height=size, width=size).unsqueeze(0)
    hdr = hdr / hdr.median() * median
    return hdr, synthesize_stack(hdr, list(EV), crf)


def recoverable(stack: ExposureStack) -> torch.Tensor:
    """Pixels neither clipped in the shortest nor black in the longest exposure, ``[B, 3, H, W]``."""
    imgs = stack.images
    ok = (imgs[:, 0] < 0.99).all(1, keepdim=True) & (imgs[:, -1] > 0.01).all(1, keepdim=True)
    return ok.expand(-1, 3, -1, -1)


def official_grossberg(codes: np.ndarray, samples: int) -> np.ndarray:
    """Loop version of the official ``ComputeLDRStackHistogram`` + ``GrossbergSampling`` ([P, C, H, W] codes)."""
    num, channels = codes.shape[:2]
    out = np.zeros((num, channels, samples), dtype=np.int64)
    u = np.linspace(0.0, 1.0, samples)
    for j in range(num):
        for c in range(channels):
            hist = np.histogram(codes[j, c].astype(np.float64), bins=256, range=(0.0, 255.0))[0]
            cdf = np.cumsum(hist) / np.cumsum(hist).max()
            for s in range(samples):
                out[j, c, s] = np.argmin(np.abs(cdf - u[s]))
    return out


def official_gsolve(z: np.ndarray, log_t: np.ndarray, lam: float) -> np.ndarray:
    """The official ``gsolve`` for one channel ([P, S] codes), off-by-one smoothness row included."""
    n = 256
    w = np.linspace(0, 1, 256)
    w = np.clip(np.where(w <= 0.5, w, 1 - w) / 0.5, 0, 1)
    num, count = z.shape
    a = np.zeros((num * count + n + 1, n + count))
    b = np.zeros(a.shape[0])
    row = 0
    for s in range(count):
        for j in range(num):
            a[row, z[j, s]] = w[z[j, s]]
            a[row, n + s] = -w[z[j, s]]
            b[row] = w[z[j, s]] * log_t[j]
            row += 1
    a[row, n // 2] = 1.0
    for p in range(n - 1):  # centres 1..255: the last touches column 256 (first ln E) with w(255) = 0
        a[row + 1 + p, p : p + 3] = lam * w[p + 1] * np.array([1.0, -2.0, 1.0])
    return np.linalg.lstsq(a, b, rcond=None)[0][:n]


def test_weight_is_the_deb97_hat():
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert torch.allclose(kim_weight(x), torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0]))


def test_grossberg_sampling_matches_the_official_loops():
    g = torch.Generator().manual_seed(0)
    # 143 pixels and levels s/63: no exact CDF ties, whose winner would depend on rounding
    codes = torch.randint(0, 256, (3, 3, 13, 11), generator=g)
    codes[1] = (codes[1] * 0.5).long()  # a darker exposure with empty top bins
    ours = grossberg_samples(codes, 64)
    ref = official_grossberg(codes.numpy(), 64)
    assert ours.shape == (3, 3, 64)
    assert np.array_equal(ours.numpy(), ref)


def test_solve_matches_the_official_gsolve_on_grossberg_samples():
    _, stack = bracket(0, CRF.gamma(2.2))
    codes = to_codes(stack.images)[0]
    z = grossberg_samples(codes, 256)
    log_t = torch.tensor(EV, dtype=torch.float64) * np.log(2.0)
    g = solve_log_response(z, log_t, smoothness=20.0)
    for c in range(3):
        ref = official_gsolve(z[:, c].numpy(), log_t.numpy(), 20.0)
        # the only difference: the 1e-6 weight floor at codes 0 / 255 (module docstring)
        assert np.abs(g[c].numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("crf", [CRF.gamma(2.2), CRF.srgb()], ids=["gamma", "srgb"])
def test_reproduces_the_radiance_of_a_true_stack(crf):
    """Median relative error after a global scale alignment: 0.3 % (seeds 0, 1, 3; gamma and sRGB).
    The official normalisation divides by the blue curve's maximum, which the clipped samples bend
    upwards near code 255: the absolute scale measured 0.67 .. 1.04 of the truth."""
    for seed in (0, 3):
        hdr, stack = bracket(seed, crf)
        out = KimSynthesisMerger()(stack)
        assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
        ok = recoverable(stack)
        scale = (out / hdr)[ok].median()
        rel = ((out / scale - hdr).abs() / hdr)[ok]
        print(f"seed {seed}: scale {float(scale):.3f}, median rel {float(rel.median()):.4f}")
        assert float(rel.median()) <= 0.02
        assert 0.5 < float(scale) < 1.5


def test_agrees_with_debevec_recover_on_the_same_stack():
    """Same solve family, per-channel weights; DebevecMerger samples a 256-point grid, this layer
    the 256 Grossberg levels. Median disagreement after scale alignment: 0.2 %."""
    _, stack = bracket(1, CRF.gamma(2.2))
    ours = KimSynthesisMerger()(stack)
    deb = DebevecMerger(crf="recover", channel_weights="per_channel", samples=256)(stack)
    ok = recoverable(stack)
    ours, deb = ours / (ours[ok]).median(), deb / (deb[ok]).median()
    rel = ((ours - deb).abs() / deb)[ok]
    assert float(rel.median()) <= 0.02


def test_nearest_and_linear_lookups_agree_on_8bit_stacks():
    _, stack = bracket(0, CRF.gamma(2.2), size=32)
    a = KimSynthesisMerger(lookup="nearest")(stack)
    b = KimSynthesisMerger(lookup="linear")(stack)
    assert torch.allclose(a, b, rtol=1e-5)


def test_nearest_lookup_backward_is_the_per_code_difference():
    table = torch.linspace(0.0, 1.0, 256).pow(2.2).clamp_min(1e-7).view(1, 1, 256).double()
    x = torch.tensor([0.0, 10 / 255, 200 / 255, 1.0], dtype=torch.float64).view(1, 1, 1, 4).requires_grad_()
    y = lookup_response(x, table, "nearest")
    assert torch.allclose(y, table[0, 0, [0, 10, 200, 255]].view(1, 1, 1, 4))
    y.sum().backward()
    t = table[0, 0]
    expected = torch.stack([t[1] - t[0], t[10] - t[9], t[200] - t[199], t[255] - t[254]])
    assert torch.allclose(x.grad.flatten(), expected)


def test_gradcheck_of_the_linear_path_float64():
    """The differentiable path (look-up of a constant table, fixed weights) in float64."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(20, 230, (1, 3, 3, 3, 3), generator=g).double()
    x = ((codes + 0.3) / 255.0).requires_grad_()  # mid-segment: no code boundary within eps
    table = torch.linspace(0.0, 1.0, 256, dtype=torch.float64).pow(2.2).clamp_min(1e-7).expand(1, 3, 256)
    log_t = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64) * np.log(2.0)
    weight = kim_weight(x.detach())
    assert torch.autograd.gradcheck(lambda v: kim_merge(v, log_t, table, lookup="linear", weight=weight), (x,))


def test_merger_gradient_reaches_the_images():
    _, stack = bracket(0, CRF.gamma(2.2), size=32)
    images = stack.images.clone().requires_grad_()
    out = KimSynthesisMerger()(ExposureStack(images=images, ev=stack.ev, reference=stack.reference))
    out.mean().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_fallback_takes_the_shortest_or_longest_exposure():
    """All-white pixels: shortest exposure's f^-1(1) / t_min; all-black: longest's f^-1(0) / t_max."""
    table = torch.linspace(0.0, 1.0, 256).pow(2.2).clamp_min(1e-7).expand(1, 3, 256)
    images = torch.zeros(1, 3, 3, 1, 2)
    images[..., 0] = 1.0
    log_t = torch.tensor([[-2.0, 0.0, 2.0]]) * np.log(2.0)
    out = kim_merge(images, log_t, table)
    assert torch.allclose(out[..., 0], torch.full((1, 3, 1), 4.0))
    assert torch.allclose(out[..., 1], torch.full((1, 3, 1), 1e-7 / 4.0))


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="lookup"):
        KimSynthesisMerger(lookup="cubic")
    with pytest.raises(ConfigError, match="samples"):
        KimSynthesisMerger(samples=1)
    with pytest.raises(ConfigError, match="at least 2"):
        KimSynthesisMerger()(ExposureStack(images=torch.rand(1, 1, 3, 8, 8), ev=torch.zeros(1, 1)))


def test_working_table_keeps_a_degenerate_curve_positive_and_finite_in_float32():
    """A float64 curve spanning more than float32's range (seen on an untrained generator's nearly
    constant stack) must not become 0 (ln 0 = -inf: a NaN merge) or inf in the images' dtype."""
    from hdrlab.models.mergers.kim_synthesis import working_table

    table = torch.tensor([[[1e-60, 1e-20, 0.5, 1e60]]], dtype=torch.float64).expand(1, 3, 4)
    out = working_table(table, dtype=torch.float32, device="cpu")
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and (out > 0).all()
    assert out[0, 0].tolist() == pytest.approx([1e-7, 1e-20, 0.5, torch.finfo(torch.float32).max], rel=1e-6)
    curve = torch.logspace(-60, 19, 256, dtype=torch.float64).expand(1, 3, 256)  # as observed: 1.8e19 and below 1e-45
    table32 = working_table(curve, dtype=torch.float32, device="cpu")
    images = torch.linspace(0.0, 1.0, 12).view(1, 1, 1, 3, 4).expand(1, 3, 3, 3, 4).clone()
    merged = kim_merge(images, torch.log(torch.tensor([[0.25, 1.0, 4.0]])), table32)
    assert torch.isfinite(merged).all()
