"""SingleHDR model layer: blocks, pure functions and the four sub-networks.

References: parameter counts from the official TF code (alex04072000/SingleHDR), OpenCV Sobel, numpy
interpolation, closed-form values, the real EMoR ``invemor.txt`` and real Radiance HDR files.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from hdrlab.camera import EMoRBasis, make_monotone
from hdrlab.errors import ConfigError, HDRLabError, WeightsMissingError
from hdrlab.models.blocks import (
    AvgPoolBilinearUNet,
    pad_same,
    same_padding_amounts,
    scale_channels,
    sobel_edges,
    soft_histogram_maps,
    upsample2x_bilinear_tf_legacy,
)
from hdrlab.models.direct import (
    DequantizationNet,
    HallucinationNet,
    LinearizationNet,
    RefinementNet,
    SingleHDRNet,
)
from hdrlab.models.direct.singlehdr import (
    fold_torchvision_vgg16_input,
    linearization_features,
    overexposure_mask,
)


pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _real_ldr(real_hdr_dir: Path, size: int = 64, batch: int = 1) -> torch.Tensor:
    """8-bit gamma-2.2 LDR crops of a real HDR scene, exposed so ~8% of pixels clip."""
    path = real_hdr_dir / "polyhaven_drei" / "venice_sunset_1k.hdr"
    hdr = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    assert hdr is not None and hdr.ndim == 3
    hdr = cv2.resize(hdr, (4 * size, 2 * size), interpolation=cv2.INTER_AREA)[..., ::-1]
    crops = [hdr[size // 2 : size // 2 + size, i * size : (i + 1) * size] for i in range(batch)]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).permute(0, 3, 1, 2).float()
    x = x / torch.quantile(x.amax(dim=1).flatten(), 0.92)
    return torch.round(x.clamp(0, 1) ** (1 / 2.2) * 255) / 255


# ---------------------------------------------------------------------------------------------
# generic blocks
# ---------------------------------------------------------------------------------------------


def test_scale_channels():
    assert scale_channels(64, 1.0) == 64
    assert scale_channels(64, 0.125) == 8
    assert scale_channels(3, 0.125) == 1
    assert scale_channels(100, 0.5) == 50


def test_same_padding_matches_tensorflow_rule():
    # TF 'SAME': out = ceil(n / s); 7x7/2 on even input pads (2, 3), 3x3/2 max-pool pads (0, 1)
    assert same_padding_amounts(256, 7, 2) == (2, 3)
    assert same_padding_amounts(255, 7, 2) == (3, 3)
    assert same_padding_amounts(128, 3, 2) == (0, 1)
    assert same_padding_amounts(64, 1, 2) == (0, 0)
    x = torch.rand(1, 2, 30, 31)
    y = F.conv2d(pad_same(x, 7, 2), torch.ones(2, 2, 7, 7), stride=2)
    assert y.shape[-2:] == (15, 16)
    # even H pads (2, 3): the top-left output sees rows -2..4; odd W pads (3, 3): cols -3..3
    ref = x[0, :, :5, :4].sum()
    assert torch.allclose(y[0, 0, 0, 0], ref, atol=1e-5)


def test_upsample2x_tf_legacy_closed_form():
    ramp = torch.arange(4, dtype=torch.float32).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    out = upsample2x_bilinear_tf_legacy(ramp)
    assert out.shape == (1, 1, 6, 8)
    # TF1 legacy maps output i to input i/2, clamping the last half step to the border
    expected = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0])
    assert torch.equal(out[0, 0, 0], expected)
    assert torch.equal(out[0, 0, :, 3], torch.full((6,), 1.5))
    col = torch.tensor([0.0, 2.0]).view(1, 1, 2, 1)
    assert torch.equal(upsample2x_bilinear_tf_legacy(col).flatten(), torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]))


def test_sobel_edges_match_opencv_reflect101():
    img = torch.rand(1, 3, 17, 23)
    out = sobel_edges(img)
    assert out.shape == (1, 6, 17, 23)
    for c in range(3):
        a = img[0, c].numpy()
        dy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
        dx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
        np.testing.assert_allclose(out[0, 2 * c].numpy(), dy, atol=1e-5)
        np.testing.assert_allclose(out[0, 2 * c + 1].numpy(), dx, atol=1e-5)


def test_soft_histogram_maps_closed_form():
    x = torch.tensor([0.0, 0.25, 0.375, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4).contiguous()
    h = soft_histogram_maps(x, 4)
    assert h.shape == (1, 15, 1, 4)
    per_bin = h.view(1, 5, 3, 1, 4)  # bin-major, colour-minor
    # x = 0.25 is bin 1 exactly; 0.375 is half-way between bins 1 and 2
    assert torch.equal(per_bin[0, :, 0, 0, 1], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(per_bin[0, :, 2, 0, 2], torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0]))
    # partition of unity for every N
    y = torch.rand(2, 3, 5, 5)
    multi = soft_histogram_maps(y, (4, 8, 16))
    assert multi.shape == (2, 93, 5, 5)
    for start, n in ((0, 4), (15, 8), (42, 16)):
        block = multi[:, start : start + 3 * (n + 1)].view(2, n + 1, 3, 5, 5)
        assert torch.allclose(block.sum(1), torch.ones(2, 3, 5, 5), atol=1e-5)


def test_unet_shapes_and_counts():
    net = AvgPoolBilinearUNet(in_channels=9, out_channels=3, down_channels=(32, 64, 128, 128), width=0.25)
    assert net(torch.rand(2, 9, 32, 48)).shape == (2, 3, 32, 48)
    with pytest.raises(ConfigError, match="down_channels"):
        AvgPoolBilinearUNet(down_channels=(32, 64))


# ---------------------------------------------------------------------------------------------
# SingleHDR pure functions
# ---------------------------------------------------------------------------------------------


def test_linearization_curve_is_monotone_emor_combination(crf_dir):
    emor = EMoRBasis.load(crf_dir, k=11)
    net = LinearizationNet(width=0.125, inv_mean=emor.inv_mean, inv_basis=emor.inv_basis)
    w = torch.randn(3, 11)
    curve = net.curve_from_weights(w)
    assert curve.shape == (3, 1, 1024)
    torch.testing.assert_close(curve[:, 0], make_monotone(emor.inverse_curve(w)))
    assert (curve.diff(dim=-1) >= 0).all()
    # zero weights give the (already monotone, 0..1) EMoR mean inverse curve
    torch.testing.assert_close(net.curve_from_weights(torch.zeros(1, 11))[0, 0], emor.inv_mean, atol=1e-5, rtol=0)
    # documented fallback: gamma-2.2 mean, zero basis
    fallback = LinearizationNet(width=0.125)
    g = fallback(torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(g[1, 0], torch.linspace(0, 1, 1024) ** 2.2, atol=1e-5, rtol=0)


def test_overexposure_mask_closed_form():
    lin = torch.tensor([0.5, 0.88, 0.94, 1.0]).view(1, 1, 1, 4).repeat(1, 3, 1, 1)
    lin[0, 1, 0, 0] = 0.97  # max over channels counts
    mask = overexposure_mask(lin, 0.88)
    assert mask.shape == (1, 1, 1, 4)
    assert torch.allclose(mask.flatten(), torch.tensor([0.75, 0.0, 0.5, 1.0]), atol=1e-6)


def test_linearization_features_layout():
    img = torch.rand(2, 3, 16, 16)
    feats = linearization_features(img)
    assert feats.shape == (2, 102, 16, 16)
    assert torch.equal(feats[:, :3], img)
    assert torch.equal(feats[:, 3:9], sobel_edges(img))
    assert torch.equal(feats[:, 9:24], soft_histogram_maps(img, 4))


def test_fold_torchvision_vgg16_input_is_exact_inside():
    w, b = torch.randn(64, 3, 3, 3), torch.randn(64)
    rgb = torch.rand(1, 3, 20, 20)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = F.conv2d((rgb - mean) / std, w, b, padding=1)
    caffe = 255 * rgb.flip(1) - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    w2, b2 = fold_torchvision_vgg16_input(w, b)
    out = F.conv2d(caffe, w2, b2, padding=1)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------


def _trainable(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_parameter_counts_match_official():
    with torch.device("meta"):
        counts = {
            "deq": _trainable(DequantizationNet()),
            "lin": LinearizationNet(),
            "hal": _trainable(HallucinationNet()),
            "ref": _trainable(RefinementNet()),
        }
    lin = counts.pop("lin")
    assert counts == {"deq": 1_999_779, "hal": 24_569_118, "ref": 1_266_947}
    assert _trainable(lin) == 1_200_971
    running = sum(b.numel() for n, b in lin.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert running == 7_040


def test_full_width_fake_tensor_forward_and_flops():
    with FakeTensorMode():
        model = SingleHDRNet().eval()
        x = torch.rand(1, 3, 512, 512)
        macs = []

        def hook(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs.append(out.numel() * k)
            else:
                macs.append(out.numel() * mod.in_features)

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        with FlopCounterMode(display=False) as counter:
            out = model(x)
        for h in handles:
            h.remove()
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "dequantized": (1, 3, 512, 512),
        "inverse_crf": (1, 1, 1024),
        "linearized": (1, 3, 512, 512),
        "mask": (1, 1, 512, 512),
        "residual": (1, 3, 512, 512),
        "hallucinated": (1, 3, 512, 512),
        "hdr": (1, 3, 512, 512),
    }
    flops = counter.get_total_flops()
    # independent count: 2 x (conv + dense MACs from layer shapes + the two 3x3 Sobel kernels on
    # 3 channels at full resolution + the 11x1024 PCA matmul)
    assert flops == 2 * (sum(macs) + 2 * 3 * 9 * 512 * 512 + 11 * 1024)
    assert flops == 450_069_824_512
    assert abs(flops / 450e9 - 1) < 0.03
    per_net = counter.get_flop_counts()
    assert per_net["SingleHDRNet.hallucination"] and sum(per_net["SingleHDRNet.hallucination"].values()) / flops > 0.7


@pytest.fixture(scope="module")
def small_model(crf_dir) -> SingleHDRNet:
    torch.manual_seed(0)
    emor = EMoRBasis.load(crf_dir, k=11)
    return SingleHDRNet(width=0.125, inv_mean=emor.inv_mean, inv_basis=emor.inv_basis)


def test_forward_small_width_on_real_ldr(small_model, real_hdr_dir):
    ldr = _real_ldr(real_hdr_dir)
    clipped = ldr.amax(1) >= 254.5 / 255
    assert 0.02 < clipped.float().mean() < 0.3
    small_model.eval()
    with torch.no_grad():
        out = small_model(ldr)
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
        if key != "inverse_crf":
            assert value.shape[0] == 1 and value.shape[-2:] == (64, 64), key
    assert out["inverse_crf"].shape == (1, 1, 1024)
    assert ((out["dequantized"] >= 0) & (out["dequantized"] <= 1)).all()
    assert ((out["linearized"] >= 0) & (out["linearized"] <= 1)).all()
    assert (out["hdr"] >= 0).all()
    residual, mask = out["residual"], out["mask"]
    assert (residual >= 0).all()
    outside = (mask == 0).expand_as(residual)
    assert outside.any() and (residual[outside] == 0).all()
    torch.testing.assert_close(out["hallucinated"], out["linearized"] + residual)
    torch.testing.assert_close(mask, overexposure_mask(out["linearized"], 0.88))
    # the predicted inverse CRF is non-decreasing from 0 to 1 (real EMoR basis)
    g = out["inverse_crf"]
    assert (g.diff(dim=-1) >= 0).all()
    assert g[..., 0].item() == 0.0 and abs(g[..., -1].item() - 1.0) < 1e-5
    # B = g(C): linear interpolation at C * 1023, checked against numpy
    ref = np.interp(out["dequantized"].numpy().ravel(), np.linspace(0, 1, 1024), g[0, 0].numpy())
    np.testing.assert_allclose(out["linearized"].numpy().ravel(), ref, atol=2e-6)


def test_gradients_finite_and_nonzero(small_model, real_hdr_dir):
    ldr = _real_ldr(real_hdr_dir, batch=2)
    assert (ldr.amax(1) >= 254.5 / 255).any()
    small_model.train()
    small_model.zero_grad()
    out = small_model(ldr)
    loss = out["hdr"].mean() + out["linearized"].mean() + out["residual"].mean()
    loss.backward()
    for name, p in small_model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    small_model.eval()


def test_width_and_basis_errors():
    with pytest.raises(ConfigError, match="multiples of 32"):
        SingleHDRNet(width=0.125)(torch.rand(1, 3, 48, 64))
    with pytest.raises(ConfigError, match="HallucinationNet.*multiples of 32"):
        HallucinationNet(width=0.125)(torch.rand(1, 3, 48, 48))
    with pytest.raises(ConfigError, match="multiples of 16"):
        DequantizationNet(width=0.125)(torch.rand(1, 3, 40, 48))
    with pytest.raises(ConfigError, match="inv_basis"):
        LinearizationNet(inv_basis=torch.zeros(10, 1024))
    with pytest.raises(ConfigError, match="width=1"):
        HallucinationNet(width=0.5).load_torchvision_vgg16({})
    assert issubclass(ConfigError, HDRLabError)


def test_pretrained_encoder_missing_file_and_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsMissingError, match="vgg16-397923af.pth"):
        with torch.device("meta"):
            HallucinationNet(pretrained_encoder=True)
    # a torchvision-layout state dict loads into the encoder (first conv folded)
    with torch.device("meta"):
        tv_shapes = HallucinationNet().encoder.state_dict()
    state = {f"features.{k}": torch.randn(v.shape) * 0.01 for k, v in tv_shapes.items()}
    state["classifier.0.weight"] = torch.zeros(1)
    net = HallucinationNet()
    net.load_torchvision_vgg16(state)
    assert torch.equal(net.encoder[2].weight, state["features.2.weight"])
    w0, _ = fold_torchvision_vgg16_input(state["features.0.weight"], state["features.0.bias"])
    assert torch.equal(net.encoder[0].weight, w0)
