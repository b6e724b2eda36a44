"""Tests of hdrlab.metrics against closed forms, pycvvdp's PU21, torchmetrics and a real HDR file."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from hdrlab.camera import luminance
from hdrlab.errors import ConfigError, WeightsMissingError
from hdrlab.io import read_hdr
from hdrlab.metrics import (
    CVVDP,
    MSSSIM,
    PSNRL,
    PU21PSNR,
    PU21SSIM,
    LPIPSMetric,
    PSNRMu,
    align_scale,
    build_metrics,
    estimate_scale,
    pu21_decode,
    pu21_encode,
)


@pytest.fixture(scope="module")
def pu_ref():
    from pycvvdp.utils import PU

    return PU()


@pytest.fixture(scope="module")
def real_pair(real_hdr_dir):
    """A 128x128 crop of Desk.exr scaled so ~15 % of pixels clip, and a clipped, under-exposed 'prediction'."""
    with pytest.warns(UserWarning, match="negative"):
        img = read_hdr(real_hdr_dir / "openexr-images" / "ScanLines" / "Desk.exr")
    crop = img[:, 576:704, 416:544]
    gt = crop / torch.quantile(crop.amax(0).flatten(), 0.85)
    pred = gt.clamp(max=1.0) * 0.5  # an LDR-like reconstruction at an unknown exposure
    return pred[None], gt[None]


# ------------------------------------------------------------------ PU21


def test_pu21_anchor_values_float64():
    L = torch.tensor([0.005, 0.1, 1.0, 100.0, 1000.0, 10000.0], dtype=torch.float64)
    got = pu21_encode(L)
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx([0.0, 5.72, 36.54, 256.38, 420.1, 595.39], abs=0.01)


def test_pu21_matches_pycvvdp_and_decodes(pu_ref):
    L = 10 ** (torch.rand(1000, dtype=torch.float64) * 7 - 3)  # 1e-3 .. 1e4 cd/m^2
    assert torch.allclose(pu21_encode(L), pu_ref.encode(L), rtol=1e-12, atol=1e-12)
    inside = L.clamp(0.005, 10000)
    assert torch.allclose(pu21_decode(pu21_encode(L)), inside, rtol=1e-9)


def test_pu21_gradcheck_float64():
    L = (10 ** (torch.rand(6, dtype=torch.float64) * 4 - 1)).requires_grad_()
    assert torch.autograd.gradcheck(pu21_encode, (L,))


# ------------------------------------------------------------------ alignment


@pytest.mark.parametrize("mode", ["median", "lsq_log"])
def test_alignment_recovers_known_scale(mode):
    gt = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 + 0.01
    pred = gt / torch.tensor([3.7, 0.25], dtype=torch.float64).view(2, 1, 1, 1)
    clipped = gt.amax(1, keepdim=True) >= 1.0
    pred = torch.where(clipped, torch.full_like(pred, 7.0), pred)  # garbage where the input clipped
    s = estimate_scale(pred, gt, mode=mode, mask=~clipped)
    assert s.tolist() == pytest.approx([3.7, 0.25], rel=1e-12)
    aligned = align_scale(pred, gt, mode=mode, mask=~clipped)
    assert torch.allclose(aligned[~clipped.expand_as(gt)], gt[~clipped.expand_as(gt)], rtol=1e-12)
    assert estimate_scale(pred, gt, mode="none").tolist() == [1.0, 1.0]


# ------------------------------------------------------------------ PSNR-type


def _known_noise_pair(n_side=40, m_peak=40, c=0.3, delta=0.01):
    """gt = c except m pixels at 1 (so p99.9 = 1); pred = gt + delta on the c pixels only."""
    gt = torch.full((1, 3, n_side, n_side), c, dtype=torch.float64)
    gt[0, :, 0, :m_peak] = 1.0
    pred = gt.clone()
    pred[gt == c] += delta
    frac = 1.0 - m_peak / (n_side * n_side)
    return pred, gt, frac


def test_psnr_identical_is_capped_at_100_db():
    gt = torch.rand(1, 3, 16, 16) * 4
    for cls in (PSNRMu, PSNRL, PU21PSNR):
        assert cls()(gt, gt).item() == pytest.approx(100.0)


def test_psnr_l_and_mu_known_noise_closed_form():
    pred, gt, frac = _known_noise_pair()
    c, d, mu = 0.3, 0.01, 5000.0
    t = lambda v: math.log1p(mu * v) / math.log1p(mu)  # noqa: E731
    want_l = 10 * math.log10(1.0 / (frac * d * d))
    want_mu = 10 * math.log10(1.0 / (frac * (t(c + d) - t(c)) ** 2))
    zeros = torch.zeros(1, 1, 40, 40, dtype=torch.bool)
    assert PSNRL(align="none")(pred, gt, clip_mask=zeros).item() == pytest.approx(want_l, abs=1e-4)
    assert PSNRMu(align="none")(pred, gt, clip_mask=zeros).item() == pytest.approx(want_mu, abs=1e-4)
    ref = peak_signal_noise_ratio(pred.clamp(0, 1), gt, data_range=1.0)
    assert want_l == pytest.approx(ref.item(), abs=1e-5)


def test_pu21_psnr_matches_torchmetrics_on_pycvvdp_encoding(pu_ref):
    gt = torch.rand(2, 3, 24, 24, dtype=torch.float64) * 3
    pred = gt * (1 + 0.1 * torch.randn_like(gt)).clamp_min(0)
    got = PU21PSNR(align="none", white_nits=200.0)
    got.update(pred, gt)
    want = [
        peak_signal_noise_ratio(pu_ref.encode(pred[i] * 200), pu_ref.encode(gt[i] * 200), data_range=256.0)
        for i in range(2)
    ]
    assert got.compute().item() == pytest.approx(sum(want).item() / 2, abs=1e-4)


def test_pu21_ssim_matches_torchmetrics_on_encoded_luminance(pu_ref):
    gt = torch.rand(1, 3, 32, 32, dtype=torch.float64) * 3
    pred = gt * (1 + 0.2 * torch.randn_like(gt)).clamp_min(0)
    got = PU21SSIM(align="none")(pred, gt).item()
    want = structural_similarity_index_measure(
        pu_ref.encode(luminance(pred * 200)), pu_ref.encode(luminance(gt * 200)), data_range=256.0
    )
    assert got == pytest.approx(want.item(), abs=1e-5)


def test_regions_on_real_crop(real_pair):
    pred, gt = real_pair
    clipped = gt.amax(1, keepdim=True) >= 1
    assert 0.05 < clipped.float().mean() < 0.5
    for cls in (PSNRMu, PSNRL, PU21PSNR):
        unclipped = cls(region="unclipped")(pred, gt).item()
        on_clipped = cls(region="clipped")(pred, gt).item()
        everywhere = cls(region="all")(pred, gt).item()
        assert unclipped == pytest.approx(100.0, abs=1e-3)  # median alignment recovers the x2 exactly
        assert on_clipped < everywhere < unclipped
    ssim_clipped = PU21SSIM(region="clipped")(pred, gt).item()
    assert ssim_clipped < PU21SSIM(region="unclipped")(pred, gt).item() < 1.0


def test_region_with_no_pixels_is_skipped():
    gt = torch.rand(1, 3, 16, 16) * 0.5  # nothing >= 1: nothing clipped
    m = PSNRL(region="clipped")
    m.update(gt, gt)
    assert m.n_images.item() == 0 and math.isnan(m.compute().item())


def test_state_is_mean_of_per_image_values():
    a, b = torch.rand(2, 1, 3, 16, 16) * 2
    pa, pb = a * 1.1 + 0.01, b * 0.9
    m = PSNRMu()
    va, vb = m(pa, a).item(), m(pb, b).item()
    m.reset()
    m.update(pa, a)
    m.update(pb, b)
    assert m.compute().item() == pytest.approx((va + vb) / 2, abs=1e-5)
    assert m.n_images.item() == 2


def test_ms_ssim_small_image_falls_back_with_warning():
    gt = torch.rand(1, 3, 64, 64) * 3
    pred = gt * 0.8 + 0.05
    with pytest.warns(UserWarning, match="176"):
        got = MSSSIM(align="none")(pred, gt).item()
    assert got == pytest.approx(PU21SSIM(align="none")(pred, gt).item(), abs=1e-6)


def test_ms_ssim_matches_torchmetrics_at_176(pu_ref):
    gt = torch.rand(1, 3, 176, 176, dtype=torch.float64) * 3
    pred = gt * (1 + 0.2 * torch.randn_like(gt)).clamp_min(0)
    got = MSSSIM(align="none")(pred, gt).item()
    want = multiscale_structural_similarity_index_measure(
        pu_ref.encode(luminance(pred * 200)), pu_ref.encode(luminance(gt * 200)), data_range=256.0
    )
    assert got == pytest.approx(want.item(), abs=1e-5)


# ------------------------------------------------------------------ cvvdp / lpips


def test_cvvdp_identical_and_distorted(real_pair):
    pred, gt = real_pair
    assert CVVDP(align="none")(gt, gt).item() == pytest.approx(10.0, abs=1e-3)
    # the clipped highlights (200 -> up to 580 cd/m^2) are visible: measured 8.66 JOD
    assert CVVDP()(pred, gt).item() < 9.5
    # median alignment undoes the x0.5 exposure, so outside the clipped area nothing differs
    assert CVVDP(region="unclipped")(pred, gt).item() == pytest.approx(10.0, abs=1e-3)


def test_lpips_random_trunk_runs_and_says_invalid():
    gt = torch.rand(1, 3, 64, 64) * 2
    with pytest.warns(UserWarning, match="NOT a valid"):
        m = LPIPSMetric(pretrained=False)
    assert m(gt, gt).item() == pytest.approx(0.0, abs=1e-6)
    assert m(gt + 0.3 * torch.rand_like(gt), gt).item() > 0
    with pytest.warns(UserWarning, match="NOT a valid"):
        regional = LPIPSMetric(pretrained=False, region="clipped")
    assert math.isfinite(regional(gt + 0.3 * torch.rand_like(gt), gt).item())


def test_lpips_missing_weights_error_names_file_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError) as err:
        LPIPSMetric()
    assert "alexnet-owt-7be5be79.pth" in str(err.value) and str(tmp_path) in str(err.value)


# ------------------------------------------------------------------ collection


def test_build_metrics_keys_and_values():
    gt = torch.rand(2, 3, 32, 32) * 2
    pred = gt * (1 + 0.1 * torch.randn_like(gt)).clamp_min(0)
    coll = build_metrics(["psnr_mu", "pu21_ssim"], regions=("all", "clipped"))
    out = coll(pred, gt)
    assert set(out) == {"val/psnr_mu", "val/psnr_mu_clipped", "val/pu21_ssim", "val/pu21_ssim_clipped"}
    assert out["val/psnr_mu"].item() == pytest.approx(PSNRMu()(pred, gt).item(), abs=1e-6)
    assert out["val/pu21_ssim_clipped"].item() == pytest.approx(PU21SSIM(region="clipped")(pred, gt).item(), abs=1e-6)
    with pytest.raises(ConfigError, match="psnr_mu"):
        build_metrics(["hdr_vdp"])


def test_log2_ratio_is_the_signed_stop_bias_in_the_region():
    from hdrlab.metrics import Log2Ratio

    gt = torch.rand(2, 3, 16, 16) + 0.1
    clip = torch.zeros(2, 1, 16, 16)
    clip[..., :8, :] = 1
    pred = gt.clone()
    pred[..., :8, :] *= 4.0  # two stops over, inside the clipped half only
    m = Log2Ratio(region="clipped", align="none")
    assert torch.allclose(m.per_image(pred, gt, clip), torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert float(Log2Ratio(region="unclipped", align="none").per_image(pred, gt, clip).abs().max()) < 1e-12
    # median alignment on the unclipped pixels keeps the bias where the scale is right
    aligned = Log2Ratio(region="clipped")  # median alignment (default)
    aligned.update(pred * 3.0, gt, clip_mask=clip)  # a global scale is removed by the alignment
    aligned.update(pred / 8.0, gt, clip_mask=clip)
    assert float(aligned.compute()) == pytest.approx(2.0, abs=1e-5)
    m_over = Log2Ratio(region="clipped", align="none")
    m_over.update(gt / 2.0, gt, clip_mask=clip)
    assert float(m_over.compute()) == pytest.approx(-1.0, abs=1e-6)
