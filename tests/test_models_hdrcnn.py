"""HDRCNN (Eilertsen et al., SIGGRAPH Asia 2017): network size and initialisation, the official
blend, both losses, the method (overfit, gradients, optimizer) and the official weights format.

References: the parameter count of the official ``network.py`` (29,443,358 trainable, 3,974 BN
running values), the official loss (``training_code/hdrcnn_train.py``) re-computed here with
NumPy/SciPy, and TensorLayer's ``save_npz`` layout (one pickled list ``params`` of the 80
parameters in layer-creation order, TF tensor layouts), built here from a full-size hdrlab network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.stats
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError, WeightsMissingError
from hdrlab.losses.hdrcnn import hdrcnn_direct_loss, hdrcnn_gaussian_kernel, hdrcnn_ir_loss, highlight_mask
from hdrlab.methods.hdrcnn import HDRCNNMethod
from hdrlab.models.direct.hdrcnn import HDRCNN, hdrcnn_blend, skip_to_log_hdr
from hdrlab.weights_import import HDRCNN as HDRCNN_FORMAT
from hdrlab.weights_import import HDRCNN_LAYOUT, check_against
from support.overfit import assert_gradients_reach_every_parameter, fixed_batch, overfit

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]


def _write_tensorlayer_npz(path: Path, arrays: list[np.ndarray]) -> Path:
    """What ``tl.files.save_npz(net.all_params)`` writes: ``np.savez(path, params=<list>)``, the
    list stored as one pickled object array."""
    params = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        params[i] = array
    np.savez(path, params=params)
    return path


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A full-size hdrlab HDRCNN written in the official layout: (file, official tensors, hdrlab state)."""
    torch.manual_seed(0)
    net = HDRCNN()
    with torch.no_grad():  # non-trivial BN statistics, so a swapped tensor would show
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    (official,) = HDRCNN_FORMAT.inverse(state)
    path = tmp_path_factory.mktemp("hdrcnn") / "hdrcnn_params.npz"
    _write_tensorlayer_npz(path, [official[name].numpy() for name, _ in HDRCNN_LAYOUT])
    return path, official, state


def test_parameter_count_is_official():
    with FakeTensorMode():
        net = HDRCNN()
        total = sum(p.numel() for p in net.parameters())
        encoder = sum(p.numel() for p in net.encoder.parameters())
        running = sum(b.numel() for k, b in net.state_dict().items() if k.endswith(("running_mean", "running_var")))
        state_keys = len(net.state_dict())
    assert total == 29_443_358
    assert (encoder, total - encoder) == (14_714_688, 14_728_670)
    assert running == 3_974
    assert state_keys == len(HDRCNN_LAYOUT) == 80  # exactly the official tensors


def test_initialisation_bilinear_deconv_and_additive_fuse():
    torch.manual_seed(0)
    net = HDRCNN(width=0.125)
    k1 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    for up in net.ups:
        weight = up.deconv.weight  # [in, out, 4, 4]
        diagonal = torch.arange(min(weight.shape[:2]))
        assert torch.equal(weight[diagonal, diagonal], torch.outer(k1, k1).expand(len(diagonal), 4, 4))
        off_diagonal = weight.clone()
        off_diagonal[diagonal, diagonal] = 0
        assert not off_diagonal.any() and not up.deconv.bias.any()
    # the bilinear kernel makes the transposed conv a x2 bilinear upsampling (away from the border)
    x = torch.rand(1, 1, 8, 8)
    up = F.conv_transpose2d(x, torch.outer(k1, k1)[None, None], stride=2, padding=1)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])
    # every fuse starts as decoder + transformed skip
    for fuse in [*net.fuses, net.input_fuse]:
        c = fuse.out_channels
        decoder, skip = torch.randn(2, c, 4, 4), 255 * torch.rand(2, c, 4, 4)
        torch.testing.assert_close(fuse(decoder, skip), decoder + torch.log((skip / 255) ** 2 + 1 / 255))
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(skip_to_log_hdr(255 * x), torch.log(x**2 + 1 / 255))


def test_shapes_stride_and_errors():
    net = HDRCNN(width=0.125)
    y = net(torch.rand(2, 3, 64, 96))
    assert y.shape == (2, 3, 64, 96) and bool(torch.isfinite(y).all())
    assert HDRCNN.stride == 32 and HDRCNNMethod(width=0.125).stride == 32
    with pytest.raises(ConfigError, match=r"HDRCNN expects .* multiples of 32, got \(1, 3, 48, 64\)"):
        net(torch.rand(1, 3, 48, 64))
    with pytest.raises(ConfigError, match="width"):
        HDRCNN(width=0)
    with pytest.raises(ConfigError, match="pretrained_encoder=True needs width=1"):
        HDRCNN(width=0.5, pretrained_encoder=True)
    with pytest.raises(ConfigError, match="loss"):
        HDRCNNMethod(width=0.125, loss="l1")


def test_imagenet_encoder_fold_and_missing_cache(tmp_path, monkeypatch):
    """torchvision's normalised-RGB conv1_1, folded for the Caffe-style input, gives the same
    output away from the 1-pixel border; a missing cache file is one ConfigError naming it."""
    from hdrlab.models.blocks.vgg import (
        TORCHVISION_RGB_MEAN, TORCHVISION_RGB_STD, TORCHVISION_VGG16_CONVS, VGG16Encoder, caffe_vgg_input,
    )

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(WeightsMissingError, match="vgg16-397923af.pth") as err:
        HDRCNN(pretrained_encoder=True)
    assert "\n" not in str(err.value)
    torch.manual_seed(0)
    torchvision_like = VGG16Encoder()  # random weights in torchvision's layout
    state = {f"features.{i}.{name}": getattr(conv, name).detach()
             for i, conv in zip(TORCHVISION_VGG16_CONVS, torchvision_like.convs()) for name in ("weight", "bias")}
    encoder = VGG16Encoder()
    encoder.load_torchvision_vgg16(state)
    x = torch.rand(1, 3, 16, 16)
    mean, std = torch.tensor(TORCHVISION_RGB_MEAN).view(1, 3, 1, 1), torch.tensor(TORCHVISION_RGB_STD).view(1, 3, 1, 1)
    expected = torchvision_like.stages[0][0]((x - mean) / std)
    got = encoder.stages[0][0](caffe_vgg_input(x))
    torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    for ours, theirs in zip(encoder.convs()[1:], torchvision_like.convs()[1:]):
        assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    with pytest.raises(ConfigError, match="width=1"):
        VGG16Encoder(width=0.5).load_torchvision_vgg16(state)


def _reference_ir_loss(log_pred: np.ndarray, hdr: np.ndarray, lam: float) -> float:
    """The official I/R loss in NumPy/SciPy ([B, 3, H, W], float64)."""
    eps = 1 / 255
    ll = np.linspace(-2 - 5 / 26, 2 + 5 / 26, 14)
    bins = np.diff(scipy.stats.norm.cdf(ll))
    kernel = np.sqrt(np.outer(bins, bins))
    kernel /= kernel.sum()
    weights = np.array([0.213, 0.715, 0.072]).reshape(1, 3, 1, 1)
    mask = np.clip((hdr.max(axis=1, keepdims=True) - 0.95) / 0.05, 0, 1)

    def blur(v: np.ndarray) -> np.ndarray:  # [B, 1, H, W], zero 'SAME' padding
        return np.stack([scipy.signal.convolve2d(b[0], kernel, mode="same")[None] for b in v])

    ill_gt = blur(np.log((hdr * weights).sum(1, keepdims=True) + eps))
    ill_pred = blur(np.log(((np.exp(log_pred) - eps) * weights).sum(1, keepdims=True) + eps))
    refl_gt = np.log(hdr + eps) - ill_gt
    refl_pred = log_pred - ill_pred
    per_element = lam * (ill_pred - ill_gt) ** 2 + (1 - lam) * (refl_pred - refl_gt) ** 2  # I term broadcast
    return float((per_element * mask).mean())


def test_losses_match_a_direct_computation():
    g = torch.Generator().manual_seed(3)
    hdr = torch.rand(2, 3, 20, 24, generator=g, dtype=torch.float64) * 3.0  # ~ half the pixels above 0.95
    log_pred = torch.randn(2, 3, 20, 24, generator=g, dtype=torch.float64)
    kernel = hdrcnn_gaussian_kernel()
    assert kernel.shape == (13, 13) and float(kernel.sum()) == pytest.approx(1.0, abs=1e-12)
    marginal = kernel.sum(0)
    std = float((marginal * (torch.arange(13) - 6.0) ** 2).sum().sqrt())
    assert std == pytest.approx(3.19, abs=0.01)
    for lam in (0.5, 0.2):
        terms = hdrcnn_ir_loss(log_pred, hdr, loss_lambda=lam)
        assert float(terms["total"]) == pytest.approx(_reference_ir_loss(log_pred.numpy(), hdr.numpy(), lam), rel=1e-10)
        torch.testing.assert_close(terms["illuminance"] + terms["reflectance"], terms["total"])
    mask = np.clip((hdr.numpy().max(1, keepdims=True) - 0.95) / 0.05, 0, 1)
    direct = float((((log_pred.numpy() - np.log(hdr.numpy() + 1 / 255)) * mask) ** 2).mean())
    assert float(hdrcnn_direct_loss(log_pred, hdr)["total"]) == pytest.approx(direct, rel=1e-12)


def test_losses_vanish_where_the_target_is_below_the_mask_threshold():
    g = torch.Generator().manual_seed(4)
    hdr = torch.rand(2, 3, 16, 16, generator=g) * 0.949
    log_pred = torch.randn(2, 3, 16, 16, generator=g, requires_grad=True)
    assert not highlight_mask(hdr).any()
    for terms in (hdrcnn_ir_loss(log_pred, hdr), hdrcnn_direct_loss(log_pred, hdr)):
        assert float(terms["total"].detach()) == 0.0
        (grad,) = torch.autograd.grad(terms["total"], log_pred)
        assert not grad.any()
    hdr[0, 1, 5, 7] = 2.0  # one saturated pixel: the loss sees it
    assert float(hdrcnn_ir_loss(log_pred.detach(), hdr)["total"]) > 0
    assert float(hdrcnn_direct_loss(log_pred.detach(), hdr)["total"]) > 0


def test_blend_is_the_squared_input_below_tau_and_the_prediction_at_saturation():
    g = torch.Generator().manual_seed(5)
    ldr = torch.rand(1, 3, 8, 8, generator=g) * 0.94
    ldr[..., :2, :] = 1.0  # two saturated rows
    log_pred = torch.randn(1, 3, 8, 8, generator=g)
    out = hdrcnn_blend(ldr, log_pred)
    torch.testing.assert_close(out[..., 2:, :], ldr[..., 2:, :] ** 2, rtol=0, atol=0)
    torch.testing.assert_close(out[..., :2, :], torch.exp(log_pred[..., :2, :]) - 1 / 255)
    ldr[0, 0, 4, 4] = 0.975  # halfway: alpha = 0.5
    mixed = hdrcnn_blend(ldr, log_pred)[0, :, 4, 4]
    torch.testing.assert_close(mixed, 0.5 * ldr[0, :, 4, 4] ** 2 + 0.5 * (torch.exp(log_pred[0, :, 4, 4]) - 1 / 255))


def test_method_optimizer_schedule_and_prediction():
    method = HDRCNNMethod(width=0.125)
    config = method.configure_optimizers()
    opt, scheduler = config["optimizer"], config["lr_scheduler"]
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["lr"] == 5e-5 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert scheduler["interval"] == "epoch" and scheduler["scheduler"].gamma == 0.99
    assert isinstance(HDRCNNMethod(width=0.125, lr_decay=1.0).configure_optimizers(), torch.optim.Adam)  # constant
    batch = fixed_batch(scene_seed=0, patch_size=64)  # >= 2x2 at the latent BN for a training step
    method.eval()
    with torch.no_grad():
        pred = method.predict_image(batch)
        log_pred = method(batch["ldr"])
    torch.testing.assert_close(pred, hdrcnn_blend(batch["ldr"], log_pred))
    assert pred.shape == (1, 3, 64, 64) and method.output_domain == "linear"
    loss, terms = method.compute_loss(batch)
    assert set(terms) == {"illuminance", "reflectance"} and torch.isfinite(loss)
    loss, terms = HDRCNNMethod(width=0.125, loss="direct").compute_loss(batch)
    assert set(terms) == {"log_l2"} and torch.isfinite(loss)


def test_overfits_one_scene():
    """Test-only settings: width 0.125, lr 2e-3 (official 5e-5), 64 px patch, the package's
    default emitters. Measured (1 thread): 21.28 -> 32.35 dB (+11.07) at step 50, ~3 s; at the
    official lr 5e-5 the score rises steadily (23.7 dB at step 25, 25.9 dB at step 200)."""
    torch.manual_seed(0)
    batch = fixed_batch(scene_seed=0, patch_size=64)
    method = HDRCNNMethod(width=0.125, lr=2e-3)
    result = overfit(method, batch, steps=300, stop_gain=10.0, eval_every=25)
    assert result.gain >= 10.0, str(result)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    method = HDRCNNMethod(width=0.125)
    batches = [fixed_batch(scene_seed=s, patch_size=64) for s in (0, 1)]
    assert_gradients_reach_every_parameter(method, batches)


def test_official_npz_round_trip(official_file):
    path, official, state = official_file
    order = [name for name, _ in HDRCNN_LAYOUT]
    assert len(official) == 80 and set(order) == set(official)
    # official names, TF layouts: conv HWIO, transposed conv [kh, kw, out, in], BN vectors
    assert official["encoder/h1/conv_1/W_conv2d"].shape == (3, 3, 3, 64)
    assert official["encoder/h6/batch_norm/moving_variance"].shape == (512,)
    assert official["decoder/h3/decon2d/W_deconv2d"].shape == (4, 4, 256, 512)
    assert official["decoder/h3/fuse_skip_connection/W_conv2d"].shape == (1, 1, 1024, 512)
    assert official["decoder/h7/conv2d/W_conv2d"].shape == (1, 1, 64, 3)
    assert official["decoder/h7/fuse_skip_connection/W_conv2d"].shape == (1, 1, 6, 3)
    read = HDRCNN_FORMAT.reader(path)
    assert list(read) == order  # positions named in the official layer order
    converted = check_against(HDRCNN_FORMAT, HDRCNN_FORMAT.convert([read]), state)
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], state[k]) for k in state)
    # an HWIO kernel applied as TensorFlow does equals the converted conv
    x = torch.rand(1, 64, 6, 6)
    w_tf = official["encoder/h1/conv_2/W_conv2d"]
    patches = F.unfold(x, 3, padding=1).view(1, 64, 3, 3, 36)  # [B, in, kh, kw, pixels]
    tf_out = torch.einsum("bihwp,hwio->bop", patches, w_tf).view(1, 64, 6, 6)
    ours = F.conv2d(x, converted["net.encoder.stages.0.2.weight"], padding=1)
    torch.testing.assert_close(ours, tf_out, rtol=1e-5, atol=1e-5)
    # named variables (TensorFlow names with the training scope and ':0') read the same
    named = path.with_name("named.npz")
    np.savez(named, **{f"siamese/{k}:0": v.numpy() for k, v in official.items()})
    converted = check_against(HDRCNN_FORMAT, HDRCNN_FORMAT.convert([HDRCNN_FORMAT.reader(named)]), state)
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_missing_or_extra_tensors_fail_with_one_line(official_file, tmp_path):
    path, official, state = official_file
    arrays = [official[name].numpy() for name, _ in HDRCNN_LAYOUT]

    def load(file: Path) -> None:
        check_against(HDRCNN_FORMAT, HDRCNN_FORMAT.convert([HDRCNN_FORMAT.reader(file)]), state)

    cases = {
        "extra.npz": (arrays + [np.zeros(3, np.float32)], r"'params\[80\]'"),
        "short.npz": (arrays[:-1], "'decoder/h7/fuse_skip_connection/b_conv2d' is missing"),
    }
    for name, (items, message) in cases.items():
        with pytest.raises(ConfigError, match=message) as err:
            load(_write_tensorlayer_npz(tmp_path / name, items))
        assert "\n" not in str(err.value)
    named = {k: v.numpy() for k, v in official.items()}
    np.savez(tmp_path / "named_extra.npz", **named, **{"decoder/h8/conv2d/W_conv2d": np.zeros(3, np.float32)})
    with pytest.raises(ConfigError, match="'decoder/h8/conv2d/W_conv2d'"):
        load(tmp_path / "named_extra.npz")
    del named["encoder/h6/batch_norm/gamma"]
    np.savez(tmp_path / "named_missing.npz", **named)
    with pytest.raises(ConfigError, match="'encoder/h6/batch_norm/gamma' is missing") as err:
        load(tmp_path / "named_missing.npz")
    assert "\n" not in str(err.value)


def test_import_weights_command(official_file, tmp_path, monkeypatch):
    """``import_weights("hdrcnn", ...)`` end to end; the format is registered here for the test
    (``FORMATS`` lists the shipped formats)."""
    from hdrlab.commands.import_weights import import_weights
    from hdrlab.weights_import import FORMATS

    monkeypatch.setitem(FORMATS, "hdrcnn", HDRCNN_FORMAT)
    path, official, state = official_file
    out = import_weights("hdrcnn", [path], tmp_path / "hdrcnn.ckpt", configs=[REPO / "experiments" / "hdrcnn.yaml"])
    saved = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in state.items())
    (back,) = HDRCNN_FORMAT.inverse(saved)
    assert back.keys() == official.keys() and all(torch.equal(back[k], official[k]) for k in official)
