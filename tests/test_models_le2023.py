"""Le et al. WACV 2023 generator: architecture facts, stack contract, losses on closed-form cases."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from hdrlab.errors import ConfigError
from hdrlab.losses.le2023 import (
    LE2023_LOSS_WEIGHTS,
    Le2023Loss,
    MaskedPerceptualLoss,
    le2023_tv_weight_for_patch,
    log_hdr_representation_loss,
    masked_reconstruction_loss,
    total_variation_loss,
)
from hdrlab.losses.perceptual import PoolFeatures
from hdrlab.models.generators import (
    LE2023_DEFAULT_EV,
    Le2023Generator,
    Le2023MultiExposureNet,
    StackGenerator,
    normalize_ev_set,
    well_exposedness_mask,
)
from hdrlab.models.generators.le2023_multiexposure import Le2023SubPixelUpsampler, icnr_
from hdrlab.stack import ExposureStack


pytestmark = pytest.mark.usefixtures("single_thread")


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _real_ldr_pair(real_hdr_dir: Path, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 crops of a real HDR panorama rendered at t and 2t with a 1/2.2 gamma: ``[2, 3, s, s]`` each."""
    hdr = cv2.imread(str(real_hdr_dir / "polyhaven_drei" / "venice_sunset_1k.hdr"), cv2.IMREAD_UNCHANGED)
    assert hdr is not None and hdr.dtype == np.float32
    rgb = cv2.cvtColor(hdr, cv2.COLOR_BGR2RGB)
    top = rgb.shape[0] // 2 - size
    crops = np.stack([rgb[top : top + size, x : x + size] for x in (100, rgb.shape[1] // 2)])
    radiance = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    radiance = radiance / torch.quantile(radiance, 0.9)
    x = radiance.clamp(0, 1) ** (1 / 2.2)
    y = (2 * radiance).clamp(0, 1) ** (1 / 2.2)
    return x, y


# ---------------------------------------------------------------- architecture


def test_parameter_counts_width1_official() -> None:
    with torch.device("meta"):
        net = Le2023MultiExposureNet()
    assert _trainable(net.hdr_encoder) == 6_916_131
    assert _trainable(net.up_exposure) == 27_639_372
    assert _trainable(net.down_exposure) == 27_639_372
    assert _trainable(net) == 62_194_875


def _stack_flops(width: float) -> int:
    with torch.device("meta"):
        gen = Le2023Generator(width=width).eval()
    with FakeTensorMode(allow_non_fake_inputs=True):
        ldr = torch.rand(1, 3, 512, 512, device="meta")
        with FlopCounterMode(display=False) as counter:
            stack = gen(ldr)
        assert tuple(stack.images.shape) == (1, 9, 3, 512, 512)
    return counter.get_total_flops()


def test_flops_whole_stack_512_scale_with_width_squared() -> None:
    full, half = _stack_flops(1.0), _stack_flops(0.5)
    print(f"Le2023 9-image stack at 512x512: {full / 1e9:.1f} GFLOP (width 1), {half / 1e9:.1f} GFLOP (width 0.5)")
    assert full > 0 and half > 0
    assert 3.5 < full / half < 4.2  # ~w^2; the RGB input/head convs are linear in w


def test_icnr_makes_subpixel_blocks_identical() -> None:
    up = Le2023SubPixelUpsampler(channels=4)
    w = up[0].weight
    assert torch.equal(w[0::4], w[1::4]) and torch.equal(w[0::4], w[3::4])
    conv_out = nn.functional.pixel_shuffle(up[0](torch.randn(1, 4, 5, 5)), 2)
    # Every 2x2 output block starts constant: no checkerboard at initialisation.
    assert torch.equal(conv_out[..., 0::2, 0::2], conv_out[..., 1::2, 1::2])
    fresh = icnr_(torch.empty(8, 3, 1, 1), upscale=2)
    bound = 1 / math.sqrt(3)  # kaiming-uniform(a=sqrt 5) bound = 1/sqrt(fan_in)
    assert fresh.abs().max() <= bound


# ---------------------------------------------------------------- generator contract


def test_generator_stack_on_real_crops(real_hdr_dir: Path) -> None:
    ldr, _ = _real_ldr_pair(real_hdr_dir)
    gen = Le2023Generator(width=1 / 8).eval()
    assert isinstance(gen, StackGenerator)
    with torch.no_grad():
        stack = gen(ldr)
    assert isinstance(stack, ExposureStack)
    assert tuple(stack.images.shape) == (2, 9, 3, 64, 64)
    expected_ev = torch.tensor(sorted((*LE2023_DEFAULT_EV, 0.0)))
    assert torch.equal(stack.ev, expected_ev.expand(2, 9))
    assert torch.all(stack.ev[:, 1:] > stack.ev[:, :-1])
    assert stack.reference == 4 and torch.equal(stack.images[:, 4], ldr)
    assert torch.isfinite(stack.images).all()
    assert stack.images.min() >= 0.0 and stack.images.max() <= 1.0


def test_generator_custom_ev_set_and_errors(real_hdr_dir: Path) -> None:
    ldr, _ = _real_ldr_pair(real_hdr_dir)
    gen = Le2023Generator(width=1 / 8, ev=(2.0, -1.0)).eval()
    with torch.no_grad():
        stack = gen(ldr)
        override = gen(ldr, ev=(-3.0, 1.0, 3.0))
    assert stack.ev[0].tolist() == [-1.0, 0.0, 2.0] and stack.reference == 1
    assert override.ev[0].tolist() == [-3.0, 0.0, 1.0, 3.0] and override.reference == 1
    with pytest.raises(ConfigError, match="duplicates"):
        normalize_ev_set((1.0, 1.0))
    with pytest.raises(ConfigError, match="non-finite"):
        normalize_ev_set((math.inf,))
    assert gen.stride == 64  # 2 ** (levels - 1): other sizes are padded to it and cropped back
    odd = torch.rand(1, 3, 48, 70)
    with torch.no_grad():
        padded = torch.nn.functional.pad(odd, (0, 58, 0, 16), mode="replicate")
        assert torch.allclose(gen(odd).images, gen(padded).images[..., :48, :70], atol=1e-6)
    with pytest.raises(ConfigError, match=r"\[B, 3, H, W\]"):
        gen(torch.rand(3, 64, 64))


def test_training_pair_gradients_finite_and_nonzero(real_hdr_dir: Path) -> None:
    x, y = _real_ldr_pair(real_hdr_dir)
    net = Le2023MultiExposureNet(width=1 / 8).train()
    ratio = torch.full((2,), 2.0)
    y_hat, hdr_x = net(x, ratio, up=True)
    x_hat, hdr_y = net(y, 1 / ratio, up=False)
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.MaxPool2d(2), nn.MaxPool2d(2))
    loss_fn = Le2023Loss(perceptual=MaskedPerceptualLoss(feature_extractor=PoolFeatures(trunk=trunk)))
    terms = loss_fn(
        x=x, y=y, x_hat=x_hat, y_hat=y_hat, hdr_x=hdr_x, hdr_y=hdr_y,
        mask_x=well_exposedness_mask(x), mask_y=well_exposedness_mask(y), ratio_y_over_x=ratio,
    )
    terms["total"].backward()
    assert torch.isfinite(terms["total"])
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- soft mask


def test_mask_thresholds_closed_form() -> None:
    grey = torch.tensor([0.0, 0.025, 0.05, 0.5, 0.95, 0.975, 1.0])
    img = grey.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    mask = well_exposedness_mask(img)
    assert mask.shape == (1, 1, 1, 7)
    torch.testing.assert_close(mask.flatten(), torch.tensor([0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]), atol=1e-5, rtol=0)


def test_mask_matches_opencv_luma() -> None:
    img = torch.rand(1, 3, 16, 16)
    luma = cv2.cvtColor(img[0].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY)  # BT.601 weights
    ref = 1 - np.maximum(np.maximum(0.05 - luma, 0) / 0.05, np.maximum(luma - 0.95, 0) / 0.05)
    torch.testing.assert_close(well_exposedness_mask(img)[0, 0], torch.from_numpy(ref), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- losses


def test_reconstruction_loss_means_over_all_rgb_elements() -> None:
    target = torch.zeros(2, 3, 4, 4)
    pred = target + 0.2
    mask = torch.zeros(2, 1, 4, 4)
    mask[..., :2, :] = 1.0  # half the pixels
    torch.testing.assert_close(masked_reconstruction_loss(pred, target, mask), torch.tensor(0.1))


def test_log_hdr_loss_closed_form() -> None:
    a = torch.ones(1, 3, 2, 2)
    eps = 1 / 255
    expected = math.log(2 + eps) - math.log(1 + eps)
    torch.testing.assert_close(log_hdr_representation_loss(2 * a, a), torch.tensor(expected))
    assert log_hdr_representation_loss(a, a) == 0


def test_tv_loss_sums_chw_and_means_batch() -> None:
    img = torch.zeros(2, 3, 4, 5)
    img[0, :, :, 3:] = 1.0  # one vertical edge, 4 rows, 3 channels -> 12
    img[1, 0, 2:, :] = 0.5  # one horizontal edge, 5 columns, 1 channel -> 2.5
    torch.testing.assert_close(total_variation_loss(img), torch.tensor((12.0 + 2.5) / 2))


def test_tv_weight_depends_on_patch_area() -> None:
    assert le2023_tv_weight_for_patch(256) == 1e-5
    assert le2023_tv_weight_for_patch(512) == pytest.approx(2.5e-6)
    assert le2023_tv_weight_for_patch(128) == pytest.approx(4e-5)


class _TwoScales(nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, 2 * x]


def test_perceptual_loss_sums_channels_and_layers() -> None:
    target = torch.rand(2, 3, 8, 8)
    loss = MaskedPerceptualLoss(feature_extractor=_TwoScales(), layer_weights=(1.0, 1.0), imagenet_normalize=False)
    # |d| = 0.1 on layer 1 and 0.2 on layer 2, 3 channels each: 3 * 0.1 + 3 * 0.2 = 0.9
    torch.testing.assert_close(loss(target + 0.1, target), torch.tensor(0.9))
    weighted = MaskedPerceptualLoss(feature_extractor=_TwoScales(), layer_weights=(1.0, 0.5), imagenet_normalize=False)
    torch.testing.assert_close(weighted(target + 0.1, target), torch.tensor(0.6))
    zero_mask = torch.zeros(2, 1, 8, 8)
    assert loss(target + 0.1, target, zero_mask) == 0


def test_pool_features_taps_vgg19_pool1_to_pool3() -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        trunk = torchvision.models.vgg19(weights=None).features
    feats = PoolFeatures(trunk=trunk)
    assert sorted(feats.taps) == [4, 9, 18] and len(feats.trunk) == 19
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = feats(torch.rand(1, 3, 64, 64, device="meta"))
        assert [tuple(o.shape[1:]) for o in out] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]


def test_total_loss_uses_official_weights() -> None:
    assert LE2023_LOSS_WEIGHTS == {"recon": 100.0, "hdr": 1.0, "tv": 1e-5, "perceptual": 0.1}
    x = torch.full((1, 3, 4, 4), 0.25)
    y = torch.full((1, 3, 4, 4), 0.5)
    ones = torch.ones(1, 1, 4, 4)
    terms = Le2023Loss()(
        x=x, y=y, x_hat=x + 0.1, y_hat=y - 0.2, hdr_x=x, hdr_y=y,
        mask_x=ones, mask_y=ones, ratio_y_over_x=torch.tensor([2.0]),
    )
    # recon 0.2 + 0.1; hdr 0 (0.25 * 2 == 0.5); tv 0 (flat images)
    torch.testing.assert_close(terms["total"], torch.tensor(100 * 0.3))
    assert terms["up_hdr"] == 0 and terms["down_hdr"] == 0
    with pytest.raises(ConfigError, match="unknown keys"):
        Le2023Loss(weights={"content": 1.0})
