"""Tests of hdrlab.losses against closed forms, pycvvdp's PU21, kornia SSIM and hand formulas."""

from __future__ import annotations

import math

import kornia
import pytest
import torch

from hdrlab.errors import ConfigError, WeightsMissingError
from hdrlab.losses import (
    HDRReconstructionLoss,
    MSSSIMLoss,
    SSIMLoss,
    TotalVariationLoss,
    VGGPerceptualLoss,
    masked_mean,
    mu_law_domain,
    pu21_domain,
    vgg_relu_names,
)


def _pu_ref(nits: float) -> float:
    from pycvvdp.utils import PU

    return float(PU().encode(torch.tensor(nits, dtype=torch.float64)))


A, B = 0.5, 2.0  # constant prediction and target


@pytest.mark.parametrize(
    ("domain", "kw", "fa", "fb"),
    [
        ("linear", {}, A, B),
        ("log", {"eps": 1 / 255}, math.log(A + 1 / 255), math.log(B + 1 / 255)),
        ("mu_law", {"mu": 5000.0}, math.log1p(5000 * A) / math.log1p(5000), math.log1p(5000 * B) / math.log1p(5000)),
        ("mu_law", {"mu": 10.0}, math.log(1 + 10 * A) / math.log(11), math.log(1 + 10 * B) / math.log(11)),
        ("mu_law", {"mu": 100.0}, math.log1p(100 * A) / math.log(101), math.log1p(100 * B) / math.log(101)),
        ("pu21", {"white_nits": 200.0}, _pu_ref(A * 200) / 256, _pu_ref(B * 200) / 256),
    ],
)
@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_reconstruction_loss_closed_form(domain, kw, fa, fb, kind):
    pred = torch.full((2, 3, 4, 4), A, dtype=torch.float64)
    target = torch.full((2, 3, 4, 4), B, dtype=torch.float64)
    got = HDRReconstructionLoss(kind=kind, domain=domain, **kw)(pred, target).item()
    want = abs(fa - fb) if kind == "l1" else (fa - fb) ** 2
    assert got == pytest.approx(want, rel=1e-9)


def test_masked_loss_restricts_to_region():
    target = torch.rand(1, 3, 8, 8)
    clip = torch.zeros(1, 1, 8, 8)
    clip[..., :4, :] = 1.0  # top half clipped
    pred = target.clone()
    pred[..., :4, :] += 0.25  # error only in the clipped half
    assert HDRReconstructionLoss(mask="unclipped")(pred, target, clip).item() == 0.0
    assert HDRReconstructionLoss(mask="clipped")(pred, target, clip).item() == pytest.approx(0.25, abs=1e-6)
    assert HDRReconstructionLoss()(pred, target, clip).item() == pytest.approx(0.125, abs=1e-6)
    with pytest.raises(ConfigError, match="clip_mask"):
        HDRReconstructionLoss(mask="clipped")(pred, target)


def test_masked_mean_empty_mask_is_zero_with_finite_grad():
    v = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = masked_mean(v, torch.zeros(2, 1, 4, 4))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(v.grad).all()


def test_domain_gradcheck_float64():
    x = (torch.rand(1, 3, 3, 3, dtype=torch.float64) * 3 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: mu_law_domain(t, mu=5000.0), (x,))
    assert torch.autograd.gradcheck(lambda t: pu21_domain(t, white_nits=200.0), (x,))


def test_unknown_names_raise():
    with pytest.raises(ConfigError, match="domain"):
        HDRReconstructionLoss(domain="srgb")
    with pytest.raises(ConfigError, match="kind"):
        HDRReconstructionLoss(kind="huber")


def test_total_variation_matches_hand_formula():
    img = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs()
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs()
    hand_mean = (dy.mean(dim=(-2, -1)) + dx.mean(dim=(-2, -1))).mean()
    hand_sum = (dy.sum(dim=(1, 2, 3)) + dx.sum(dim=(1, 2, 3))).mean()
    assert TotalVariationLoss()(img).item() == pytest.approx(hand_mean.item(), rel=1e-12)
    assert TotalVariationLoss(reduction="sum")(img).item() == pytest.approx(hand_sum.item(), rel=1e-12)
    # pixel_mean: the far row / column padded by symmetry (zero difference), every position averaged
    padded_y = torch.cat([img, img[..., -1:, :]], dim=-2)
    padded_x = torch.cat([img, img[..., :, -1:]], dim=-1)
    hand_pixel = ((padded_y[..., 1:, :] - padded_y[..., :-1, :]).abs().mean(dim=(1, 2, 3))
                  + (padded_x[..., :, 1:] - padded_x[..., :, :-1]).abs().mean(dim=(1, 2, 3))).mean()
    assert TotalVariationLoss(reduction="pixel_mean")(img).item() == pytest.approx(hand_pixel.item(), rel=1e-12)


def test_ssim_loss_matches_kornia_valid_ssim():
    target = torch.rand(2, 3, 32, 32) * 2
    pred = target * (1 + 0.2 * torch.randn_like(target)).clamp_min(0)
    got = SSIMLoss(domain="mu_law", mu=5000.0)(pred, target).item()
    from hdrlab.tonemap import mu_law

    ref = kornia.metrics.ssim(mu_law(pred), mu_law(target), window_size=11, max_val=1.0, padding="valid").mean()
    assert got == pytest.approx(1.0 - ref.item(), abs=1e-5)
    assert SSIMLoss()(target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_ms_ssim_loss_identical_and_size_check():
    x = torch.rand(1, 3, 40, 40)
    assert MSSSIMLoss(win_size=3)(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert MSSSIMLoss(win_size=3)(x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1)).item() > 0.1
    with pytest.raises(ConfigError, match="160"):
        MSSSIMLoss()(x, x)


def test_vgg_layer_names():
    from torchvision.models.vgg import cfgs, make_layers  # the features trunk only (cheap)

    names16 = vgg_relu_names(make_layers(cfgs["D"]))
    names19 = vgg_relu_names(make_layers(cfgs["E"]))
    assert (names19["relu3_4"], names19["relu4_4"], names19["relu5_4"]) == (17, 26, 35)
    assert (names16["relu1_2"], names16["relu2_2"], names16["relu3_3"], names16["relu4_3"], names16["relu5_3"]) == (
        3, 8, 15, 22, 29,
    )


def test_vgg_perceptual_random_trunk_finite_grads():
    loss = VGGPerceptualLoss(kind="vgg16", layers=("relu1_2", "relu2_2"), pretrained=False)
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.features.training
    target = torch.rand(1, 3, 32, 32) * 2
    pred = (target * 0.7).requires_grad_()
    value = loss(pred, target)
    value.backward()
    assert value.item() > 0 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert loss(target, target).item() == 0.0
    with pytest.raises(ConfigError, match="relu9_9"):
        VGGPerceptualLoss(layers=("relu9_9",), pretrained=False)


def test_vgg_perceptual_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsMissingError, match="vgg16-397923af.pth"):
        VGGPerceptualLoss(pretrained=True)
