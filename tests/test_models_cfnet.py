"""CF-Net (Deng et al. TIP 2021): architecture facts, merger contract, resampling and loss references."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_msssim import ssim
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from hdrlab.errors import ConfigError
from hdrlab.losses.cfnet import cfnet_loss, cfnet_ssim
from hdrlab.models.mergers.base import StackMerger
from hdrlab.models.mergers.cfnet import (
    CFNET_PROJECTION,
    CFNet,
    CFNetMerger,
    cfnet_projection_geometry,
    downsample_pair_image,
)
from hdrlab.stack import ExposureStack


pytestmark = pytest.mark.usefixtures("single_thread")


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _real_bracket(real_hdr_dir: Path, size: int = 64) -> torch.Tensor:
    """A real HDR crop rendered at ev -2, 0, +2 with a 1/2.2 gamma: ``[2, 3, 3, size, size]`` in [0, 1]."""
    hdr = cv2.imread(str(real_hdr_dir / "polyhaven_drei" / "venice_sunset_1k.hdr"), cv2.IMREAD_UNCHANGED)
    assert hdr is not None and hdr.dtype == np.float32
    rgb = cv2.cvtColor(hdr, cv2.COLOR_BGR2RGB)
    top = rgb.shape[0] // 2 - size
    crops = np.stack([rgb[top : top + size, x : x + size] for x in (100, rgb.shape[1] // 2)])
    radiance = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    radiance = radiance / torch.quantile(radiance, 0.9)
    return torch.stack([(radiance * 2.0**ev).clamp(0, 1) ** (1 / 2.2) for ev in (-2, 0, 2)], dim=1)


# ---------------------------------------------------------------- architecture


def test_projection_geometry_official() -> None:
    assert CFNET_PROJECTION == {2: (6, 2, 2), 4: (8, 4, 2)}
    for scale, (k, s, p) in CFNET_PROJECTION.items():
        # deconv output size (h - 1) * s - 2p + k == s * h for every h: the projection is exactly x s
        assert s == scale and k - 2 * p == s
    with pytest.raises(ConfigError, match="2 and 4"):
        cfnet_projection_geometry(3)
    with pytest.raises(ConfigError, match="2 and 4"):
        CFNet(scale=3)


@pytest.mark.parametrize(("scale", "count"), [(2, 17_048_297), (4, 28_975_849)])
def test_parameter_counts_width1_official(scale: int, count: int) -> None:
    with torch.device("meta"):
        net = CFNet(scale=scale)
    assert _trainable(net) == count
    assert len(net.cfbs_under) == len(net.cfbs_over) == 3
    assert len(net.rec_under) == len(net.rec_over) == 4


def _flops_512(scale: int, width: float) -> int:
    with torch.device("meta"):
        net = CFNet(scale=scale, width=width)
    with FakeTensorMode(allow_non_fake_inputs=True):
        lr = torch.rand(1, 3, 512 // scale, 512 // scale, device="meta")
        with FlopCounterMode(display=False) as counter:
            out = net(lr, lr)
        assert tuple(out.fused.shape) == (1, 3, 512, 512)
    return counter.get_total_flops()


def test_flops_512_output_scale_with_width_squared() -> None:
    x2_full, x2_half, x4_full = _flops_512(2, 1.0), _flops_512(2, 0.5), _flops_512(4, 1.0)
    print(
        f"CF-Net 512x512 output: x2 {x2_full / 1e9:.1f} GFLOP (width 1), {x2_half / 1e9:.1f} (width 0.5); "
        f"x4 {x4_full / 1e9:.1f} (width 1)"
    )
    assert min(x2_full, x2_half, x4_full) > 0
    assert 3.5 < x2_full / x2_half < 4.2


# ---------------------------------------------------------------- forward, gradients


def test_cfnet_forward_shapes_and_display_range(real_hdr_dir: Path) -> None:
    bracket = _real_bracket(real_hdr_dir)
    under = downsample_pair_image(bracket[:, 0], scale=2)
    over = downsample_pair_image(bracket[:, 2], scale=2)
    net = CFNet(scale=2, width=1 / 8).eval()
    with torch.no_grad():
        out = net(under, over)
    assert len(out.under) == len(out.over) == 4
    for img in (*out.under, *out.over, out.fused):
        assert tuple(img.shape) == (2, 3, 64, 64)
        assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    torch.testing.assert_close(out.fused, 0.5 * out.under[-1] + 0.5 * out.over[-1])


def test_gradients_finite_and_nonzero_for_every_parameter(real_hdr_dir: Path) -> None:
    bracket = _real_bracket(real_hdr_dir)
    hr_under, hr_over = bracket[:, 0], bracket[:, 2]
    net = CFNet(scale=2, width=1 / 8).train()
    out = net(downsample_pair_image(hr_under, scale=2), downsample_pair_image(hr_over, scale=2))
    loss = cfnet_loss(out.under, out.over, hr_under=hr_under, hr_over=hr_over, hr_fused=bracket[:, 1])
    loss.backward()
    assert torch.isfinite(loss) and 0 < loss < 8
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- merger contract


def test_merger_same_resolution_and_sr_output(real_hdr_dir: Path) -> None:
    bracket = _real_bracket(real_hdr_dir)
    stack = ExposureStack(images=bracket, ev=torch.tensor([[-2.0, 0.0, 2.0]] * 2), reference=1)
    merger = CFNetMerger(scale=2, width=1 / 8).eval()
    assert isinstance(merger, StackMerger)
    assert merger.output_domain == "display" and merger.differentiable
    with torch.no_grad():
        fused = merger(stack)
        sr = CFNetMerger(scale=2, width=1 / 8, same_resolution=False).eval()(stack)
        # the middle exposure is ignored: only the extreme pair enters CF-Net
        other_middle = merger(ExposureStack(images=bracket[:, [0, 0, 2]], ev=stack.ev, reference=1))
    assert tuple(fused.shape) == (2, 3, 64, 64) and fused.min() >= 0 and fused.max() <= 1
    assert tuple(sr.shape) == (2, 3, 128, 128) and sr.min() >= 0 and sr.max() <= 1
    torch.testing.assert_close(fused, other_middle)


def test_check_stack_rejects_single_exposure_and_bad_size() -> None:
    merger = CFNetMerger(scale=4, width=1 / 8)
    single = ExposureStack(images=torch.rand(1, 1, 3, 32, 32), ev=torch.zeros(1, 1))
    with pytest.raises(ConfigError, match="at least 2 exposures"):
        merger.check_stack(single)
    with pytest.raises(ConfigError, match="at least 2 exposures"):
        merger(single)
    odd = ExposureStack(images=torch.rand(1, 2, 3, 30, 32), ev=torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(ConfigError, match="divisible by 4"):
        merger.check_stack(odd)
    with pytest.raises(ConfigError, match="bicubic"):
        CFNetMerger(downsample="nearest")


# ---------------------------------------------------------------- resampling references


def test_downsample_area_matches_opencv_inter_area() -> None:
    img = torch.rand(1, 3, 32, 48)
    ref = cv2.resize(img[0].permute(1, 2, 0).numpy(), (12, 8), interpolation=cv2.INTER_AREA)
    ours = downsample_pair_image(img, scale=4, mode="area")[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-6


def test_downsample_bicubic_matches_pil_antialiased_bicubic() -> None:
    img = torch.rand(1, 1, 32, 48).expand(1, 3, 32, 48).contiguous()
    ref = np.asarray(Image.fromarray(img[0, 0].numpy(), mode="F").resize((24, 16), Image.BICUBIC))
    ours = downsample_pair_image(img, scale=2, mode="bicubic")[0, 0].numpy()
    # PIL's result is not clamped; compare where it stays in range
    inside = (ref >= 0) & (ref <= 1)
    assert inside.mean() > 0.5
    assert np.abs(ours - ref)[inside].max() < 1e-5


# ---------------------------------------------------------------- loss


def test_ssim_matches_official_255_convention() -> None:
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    official = ssim(255 * a, 255 * b, data_range=255, win_size=7, nonnegative_ssim=True)
    torch.testing.assert_close(cfnet_ssim(a, b), official, atol=1e-5, rtol=0)


def test_cfnet_loss_closed_form_on_constant_images() -> None:
    # Constant images m, n under a window of total mass s = (sum g)^2: mu = m s, sigma_m^2 = m^2 s (1 - s),
    # sigma_mn = m n s (1 - s); SSIM = (2 mu_m mu_n + C1)/(mu_m^2 + mu_n^2 + C1) * (2 sigma_mn + C2)/(...).
    # pytorch_msssim normalises its 1-D Gaussian in float32, so s differs from 1 by ~7e-8 (kept exact here).
    c1, c2 = 0.01**2, 0.03**2
    g = torch.exp(-((torch.arange(7, dtype=torch.float) - 3) ** 2) / (2 * 1.5**2))
    mass = float((g / g.sum()).double().sum()) ** 2

    def const(v: float) -> torch.Tensor:
        return torch.full((1, 3, 16, 16), v, dtype=torch.float64)

    def ssim_const(m: float, n: float) -> float:
        mu_m, mu_n = m * mass, n * mass
        var_m, var_n, cov = (m * m * mass - mu_m**2), (n * n * mass - mu_n**2), (m * n * mass - mu_m * mu_n)
        return (2 * mu_m * mu_n + c1) / (mu_m**2 + mu_n**2 + c1) * (2 * cov + c2) / (var_m + var_n + c2)

    under = [const(0.2), const(0.4), const(0.4), const(0.5)]
    over = [const(0.8), const(0.5), const(0.5), const(0.5)]
    loss = cfnet_loss(under, over, hr_under=const(0.2), hr_over=const(0.6), hr_fused=const(0.5))
    expected = (1 - ssim_const(0.2, 0.2)) + (1 - ssim_const(0.8, 0.6)) + 2 * (1 - ssim_const(0.4, 0.5))
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)
    # with an exactly normalised window this is (2 m n + C1) / (m^2 + n^2 + C1): 0.96000400 for (0.8, 0.6)
    assert abs(ssim_const(0.8, 0.6) - (2 * 0.48 + c1) / (1.0 + c1)) < 1e-5
    with pytest.raises(ConfigError, match="same number"):
        cfnet_loss(under, over[:2], hr_under=const(0.2), hr_over=const(0.6), hr_fused=const(0.5))
