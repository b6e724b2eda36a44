"""Official-weight formats of SingleHDR (TensorFlow 1 checkpoint) and CF-Net (``.pth``): official
names and shapes, round trips through files written here, colour folding, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdrlab.errors import ConfigError
from hdrlab.tf_checkpoint import list_tf_checkpoint, write_tf_checkpoint
from hdrlab.weights_import import CFNET, SINGLEHDR, check_against

pytestmark = pytest.mark.usefixtures("single_thread")


def _randomised(state: dict[str, torch.Tensor], *, seed: int, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Small distinct random values for every float tensor (variances positive), others kept."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point() or key.endswith(skip):
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = 0.05 * torch.randn(value.shape, generator=gen)
    return out


# ----------------------------------------------------------------------------- SingleHDR
def _singlehdr_method(seed: int = 0):
    from hdrlab.methods.singlehdr import SingleHDRMethod

    torch.manual_seed(seed)
    return SingleHDRMethod(pretrained_trunks=False).eval()


#: official names and full-size TensorFlow shapes; Dequantization_Net and crf_feature_net /
#: ae_invcrf_decode_net shapes as listed from a real TensorFlow 1 .index of the same networks
#: (DuHDR's ckpt_inet); the rest from hallucination_net.py / refinement_net.py
SINGLEHDR_OFFICIAL_SHAPES = {
    "Dequantization_Net/conv2d/kernel": (7, 7, 3, 16),
    "Dequantization_Net/conv2d_1/kernel": (7, 7, 16, 16),
    "Dequantization_Net/conv2d_10/kernel": (3, 3, 256, 128),
    "Dequantization_Net/conv2d_11/kernel": (3, 3, 256, 128),
    "Dequantization_Net/conv2d_18/kernel": (3, 3, 16, 3),
    "Dequantization_Net/conv2d_18/bias": (3,),
    "crf_feature_net/conv1/weights": (7, 7, 102, 64),
    "crf_feature_net/conv1/biases": (64,),
    "crf_feature_net/bn_conv1/BatchNorm/moving_variance": (64,),
    "crf_feature_net/res2a_branch1/weights": (1, 1, 64, 256),
    "crf_feature_net/res3a_branch1/weights": (1, 1, 256, 512),
    "crf_feature_net/res3b_branch2b/weights": (3, 3, 128, 128),
    "crf_feature_net/bn3b_branch2c/BatchNorm/gamma": (512,),
    "ae_invcrf_decode_net/dense/kernel": (512, 11),
    "ae_invcrf_decode_net/dense/bias": (11,),
    "Hallucination_Net/encoder/h1/conv_1/W_conv2d": (3, 3, 3, 64),
    "Hallucination_Net/encoder/h5/conv_3/b_conv2d": (512,),
    "Hallucination_Net/encoder/h6/conv/W_conv2d": (3, 3, 512, 512),
    "Hallucination_Net/encoder/h6/batch_norm/moving_mean": (512,),
    "Hallucination_Net/decoder/h1/decon2d/W_conv2d": (3, 3, 512, 512),
    "Hallucination_Net/decoder/h3/decon2d/W_conv2d": (3, 3, 512, 256),
    "Hallucination_Net/decoder/h5/decon2d/batch_norm_dc/beta": (64,),
    "Hallucination_Net/decoder/h2/fuse_skip_connection/W_conv2d": (1, 1, 1024, 512),
    "Hallucination_Net/decoder/h6/fuse_skip_connection/W_conv2d": (1, 1, 128, 64),
    "Hallucination_Net/decoder/h7/conv2d/W_conv2d": (1, 1, 64, 3),
    "Hallucination_Net/decoder/h7/batch_norm/gamma": (3,),
    "Hallucination_Net/decoder/h7/fuse_skip_connection/W_conv2d": (1, 1, 6, 3),
    "Refinement_Net/conv2d/kernel": (7, 7, 9, 16),
    "Refinement_Net/conv2d_8/kernel": (3, 3, 128, 128),
    "Refinement_Net/conv2d_18/kernel": (3, 3, 16, 3),
}


def test_singlehdr_inverse_gives_official_names_and_shapes():
    method = _singlehdr_method()
    official = SINGLEHDR.inverse(method.state_dict())
    assert len(official) == 1
    state = official[0]
    for key, shape in SINGLEHDR_OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    scopes = {}
    for key in state:
        scopes[key.split("/")[0]] = scopes.get(key.split("/")[0], 0) + 1
    # 19 convs per U-Net; slim trunk 18 convs + 1 bias + 17 BN x 4 + dense 2; TensorLayer 13 VGG +
    # latent + 5 up + 5 fuse + head + input fuse convs (x2) and 7 BNs (x4)
    assert scopes == {"Dequantization_Net": 38, "Refinement_Net": 38, "crf_feature_net": 91,
                      "ae_invcrf_decode_net": 2, "Hallucination_Net": 80}
    assert not any("num_batches_tracked" in k or "inv_" in k for k in state)


def test_singlehdr_tf_checkpoint_round_trip_and_forward(tmp_path):
    original = _singlehdr_method(seed=0)
    state = _randomised(original.state_dict(), seed=1, skip=("inv_mean", "inv_basis"))
    original.load_state_dict(state)
    official = SINGLEHDR.inverse(state)[0]
    # what tf.train.Saver(tf.all_variables()) adds after AdamOptimizer.minimize: slots and powers
    extras = {"beta1_power": torch.tensor(0.9), "beta2_power": torch.tensor(0.999),
              "global_step": torch.tensor(1000, dtype=torch.int64)}
    for key in ("Dequantization_Net/conv2d/kernel", "crf_feature_net/bn_conv1/BatchNorm/gamma",
                "Hallucination_Net/decoder/h7/conv2d/W_conv2d"):
        extras[f"{key}/Adam"] = torch.zeros_like(official[key])
        extras[f"{key}/Adam_1"] = torch.ones_like(official[key])
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", {**official, **extras})
    listing = list_tf_checkpoint(tmp_path / "model.ckpt.index")
    assert listing["Hallucination_Net/encoder/h1/conv_1/W_conv2d"] == ("float32", (3, 3, 3, 64))
    assert len(listing) == 249 + 9

    read = SINGLEHDR.reader(tmp_path / "model.ckpt.index")
    assert set(read) == set(official) | set(extras)
    converted = SINGLEHDR.convert([read])
    target_method = _singlehdr_method(seed=5)
    target = target_method.state_dict()
    converted = check_against(SINGLEHDR, converted, target)
    assert len(converted) == 249
    for key, value in converted.items():
        assert torch.equal(value, state[key]), key
    # TensorFlow layouts on disk: a conv kernel HWIO, the dense kernel [in, out]
    tf_kernel = read["Hallucination_Net/decoder/h3/decon2d/W_conv2d"]
    assert torch.equal(tf_kernel[1, 2, 5, 7], state["net.hallucination.ups.2.conv.weight"][7, 5, 1, 2])
    assert torch.equal(read["ae_invcrf_decode_net/dense/kernel"][100, 4], state["net.linearization.fc.weight"][4, 100])

    target_method.load_state_dict({k: converted.get(k, v) for k, v in target.items()})
    ldr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = original.net(ldr), target_method.net(ldr)
    for key in ("dequantized", "inverse_crf", "hallucinated", "hdr"):
        assert torch.equal(want[key], got[key]), key
    assert float(want["hdr"].abs().sum()) > 0
    assert prefix == tmp_path / "model.ckpt"


def _singlehdr_official_in_memory() -> dict[str, torch.Tensor]:
    return SINGLEHDR.inverse(_singlehdr_method().state_dict())[0]


def test_singlehdr_missing_and_unexpected_variables_fail():
    official = _singlehdr_official_in_memory()
    target = _singlehdr_method().state_dict()
    missing = {k: v for k, v in official.items() if k != "Hallucination_Net/decoder/h3/decon2d/W_conv2d"}
    with pytest.raises(ConfigError, match=r"'Hallucination_Net/decoder/h3/decon2d/W_conv2d' is missing "
                                          r"\(expected shape \(256, 512, 3, 3\)\)"):
        check_against(SINGLEHDR, SINGLEHDR.convert([missing]), target)
    with pytest.raises(ConfigError, match=r"'Refinement_Net/conv2d_19/kernel', which the SingleHDR network has no"):
        SINGLEHDR.convert([{**official, "Refinement_Net/conv2d_19/kernel": torch.zeros(3, 3, 3, 3)}])
    wrong = dict(official)
    wrong["crf_feature_net/conv1/weights"] = torch.zeros(7, 7, 3, 64)
    with pytest.raises(ConfigError, match=r"'crf_feature_net/conv1/weights' has shape \(64, 3, 7, 7\)"):
        check_against(SINGLEHDR, SINGLEHDR.convert([wrong]), target)


# ----------------------------------------------------------------------------- CF-Net
def _cfnet_method(scale: int, seed: int = 0):
    from hdrlab.methods.cfnet import CFNetMethod

    torch.manual_seed(seed)
    return CFNetMethod(scale=scale).eval()


def _cfnet_official_shapes(scale: int, f: int = 64, groups: int = 6, cfbs: int = 3) -> dict[str, tuple[int, ...]]:
    """Every key of the official ``CFNet().state_dict()`` (ytZhang99/CF-Net model.py) and its shape."""
    k = {2: 6, 4: 8}[scale]
    shapes: dict[str, tuple[int, ...]] = {}

    def block(name: str, cin: int, cout: int, size: int, *, act: bool = True, deconv: bool = False) -> None:
        shapes[f"{name}.0.weight"] = (cin, cout, size, size) if deconv else (cout, cin, size, size)
        shapes[f"{name}.0.bias"] = (cout,)
        if act:
            shapes[f"{name}.1.weight"] = (1,)

    for branch in ("over", "under"):
        block(f"conv_in_{branch}", 3, 4 * f, 3, act=branch == "over")
        block(f"feat_in_{branch}", 4 * f, f, 1)
        block(f"out_{branch}", f, f, k, deconv=True)
        block(f"conv_out_{branch}", f, 3, 3, act=False)
    for name in ["srb_1", "srb_2"] + [f"cfb_{b}{i}" for i in range(cfbs) for b in ("over", "under")]:
        cfb = name.startswith("cfb")
        block(f"{name}.compress_in", (3 if cfb else 1) * f, f, 1)
        if cfb:
            block(f"{name}.re_guide", 2 * f, f, 1)
        for g in range(groups):
            block(f"{name}.upBlocks.{g}", f, f, k, deconv=True)
            block(f"{name}.downBlocks.{g}", f, f, k)
            if g:
                block(f"{name}.uptranBlocks.{g - 1}", f * (g + 1), f, 1)
                block(f"{name}.downtranBlocks.{g - 1}", f * (g + 1), f, 1)
        block(f"{name}.compress_out", groups * f, f, 1)
    for j in range(cfbs):
        for n in ("1", "2"):
            block(f"out_{n}.{j}", f, f, k, deconv=True)
            block(f"conv_out_{n}.{j}", f, 3, 3, act=False)
    return shapes


@pytest.mark.parametrize("scale", [2, 4])
def test_cfnet_inverse_gives_exactly_the_official_keys_and_shapes(scale):
    official = CFNET.inverse(_cfnet_method(scale).state_dict())[0]
    expected = _cfnet_official_shapes(scale)
    assert len(expected) == 645
    assert set(official) == set(expected)
    for key, shape in expected.items():
        assert tuple(official[key].shape) == shape, key


@pytest.mark.parametrize("data_parallel", [False, True])
def test_cfnet_pth_round_trip_and_forward(tmp_path, data_parallel):
    original = _cfnet_method(2, seed=0)
    state = _randomised(original.state_dict(), seed=2)
    original.load_state_dict(state)
    official = CFNET.inverse(state)[0]
    path = tmp_path / "model_x2.pth"
    if data_parallel:
        torch.save({f"module.{k}": v for k, v in official.items()}, path)
    else:  # the official train.py: {"model": state_dict(), "loss": [np.mean(...) per epoch]}
        torch.save({"model": official, "loss": [np.float64(0.25), np.mean([0.5, 0.75])]}, path)
    read = CFNET.reader(path)
    assert set(read) == set(official)
    target_method = _cfnet_method(2, seed=9)
    target = target_method.state_dict()
    converted = check_against(CFNET, CFNET.convert([read]), target)
    assert len(converted) == len(target) == 645
    for key, value in converted.items():
        assert torch.equal(value, state[key]), key
    target_method.load_state_dict(converted)
    gen = torch.Generator().manual_seed(4)
    under, over = torch.rand(1, 3, 8, 8, generator=gen), torch.rand(1, 3, 8, 8, generator=gen)
    with torch.no_grad():
        want, got = original.merger.net(under, over), target_method.merger.net(under, over)
    assert got.fused.shape == (1, 3, 16, 16)
    assert torch.equal(want.fused, got.fused)


def test_cfnet_colour_axes_are_folded_from_bgr():
    """The official network (BGR in, BGR out) equals the converted one (RGB) up to channel order."""
    method = _cfnet_method(2, seed=0)
    state = _randomised(method.state_dict(), seed=3)
    official = CFNET.inverse(state)[0]
    # the official weights taken verbatim (renamed only): a network that works in BGR
    bgr_net = _cfnet_method(2, seed=1).merger.net
    bgr_net.load_state_dict({CFNET.key_to_hdrlab(k, 0): v for k, v in official.items()})
    rgb_net = _cfnet_method(2, seed=2).merger.net
    rgb_net.load_state_dict({k[len("merger.net."):]: v for k, v in CFNET.convert([official]).items()})
    assert torch.equal(official["conv_in_over.0.weight"].flip(1), rgb_net.feb_over[0][0].weight)
    assert torch.equal(official["conv_out_2.1.0.bias"].flip(0), rgb_net.rec_under[2][1][0].bias)
    gen = torch.Generator().manual_seed(5)
    under, over = torch.rand(1, 3, 8, 8, generator=gen), torch.rand(1, 3, 8, 8, generator=gen)
    with torch.no_grad():
        rgb = rgb_net(under, over).fused
        bgr = bgr_net(under.flip(1), over.flip(1)).fused
    torch.testing.assert_close(rgb, bgr.flip(1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(rgb, bgr, atol=1e-3)  # the fold matters


def test_cfnet_missing_and_unexpected_keys_fail():
    method = _cfnet_method(4)
    target = method.state_dict()
    official = CFNET.inverse(target)[0]
    missing = {k: v for k, v in official.items() if k != "cfb_under2.re_guide.0.weight"}
    with pytest.raises(ConfigError, match=r"'cfb_under2.re_guide.0.weight' is missing \(expected shape \(64, 128, 1, 1\)\)"):
        check_against(CFNET, CFNET.convert([missing]), target)
    for extra in ("conv_in_under.1.weight", "srb_1.re_guide.0.weight", "loss"):
        with pytest.raises(ConfigError, match=f"holds '{extra}', which the CF-Net network has no tensor for"):
            CFNET.convert([{**official, extra: torch.zeros(1)}])
    # a fourth CFB's reconstruction (num_cfbs=4) names a module the official-size network lacks
    with pytest.raises(ConfigError, match=r"'out_1.3.0.weight' has no counterpart in hdrlab.methods.cfnet.CFNetMethod"):
        check_against(CFNET, CFNET.convert([{**official, "out_1.3.0.weight": torch.zeros(64, 64, 8, 8)}]), target)
    x2 = CFNET.inverse(_cfnet_method(2).state_dict())[0]
    with pytest.raises(ConfigError, match=r"'cfb_over0.downBlocks.0.0.weight' has shape \(64, 64, 6, 6\) but the hdrlab "
                                          r"network expects \(64, 64, 8, 8\)"):
        check_against(CFNET, CFNET.convert([x2]), target)
