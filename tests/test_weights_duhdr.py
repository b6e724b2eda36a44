"""Official-weight formats of DuHDR's released TensorFlow 1 checkpoints (``duhdr`` = ``ckpt_inet``,
``duhdr_dnet`` = ``ckpt_dnet``): names and shapes against the real ``.index`` listings, a round trip
through a checkpoint written here, Nnet's ``fc11`` row order, errors, and ``import_weights``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from hdrlab.errors import ConfigError
from hdrlab.tf_checkpoint import write_tf_checkpoint
from hdrlab.weights_import import DUHDR, DUHDR_DNET, FORMATS, check_against

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "duhdr_official"
TINY = 0.125
OVERRIDE = REPO / "experiments" / "overrides" / "duhdr_official_crf.yaml"

pytestmark = pytest.mark.usefixtures("single_thread")


def _listing(name: str) -> dict[str, tuple[int, ...]]:
    """Non-optimizer names and shapes of an official checkpoint (README of the fixture folder)."""
    return {k: tuple(v) for k, v in json.loads((FIXTURES / f"{name}_index.json").read_text()).items()}


def _method(width: float = 1.0, seed: int = 0):
    from hdrlab.methods.duhdr import DuHDRMethod

    torch.manual_seed(seed)
    return DuHDRMethod(width=width, crf_input_size=256, pretrained_trunks=False).eval()


def _randomised(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Distinct random values for every float tensor (variances positive), integers kept."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = 0.05 * torch.randn(value.shape, generator=gen)
    return out


def _with_adam(official: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """What ``tf.train.Saver(tf.all_variables())`` adds: two Adam slots per variable and the beta powers."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(official)
    for key, value in official.items():
        for slot in ("Adam", "Adam_1"):
            out[f"{key}/{slot}"] = torch.randn(value.shape, generator=gen)
    out["beta1_power"], out["beta2_power"] = torch.tensor(0.5), torch.tensor(0.25)
    return out


@pytest.fixture(scope="module")
def full():
    """Full-size DuHDRMethod with the official Nnet head and random weights: (method, state)."""
    method = _method()
    state = _randomised(method.state_dict(), seed=1)
    method.load_state_dict(state)
    return method, state


def _shared(key: str) -> bool:
    return key.startswith(("net.crf.conv1.", "net.crf.bn1.", "net.crf.res2.", "net.crf.res3."))


def test_formats_are_registered():
    assert FORMATS["duhdr"] is DUHDR and FORMATS["duhdr_dnet"] is DUHDR_DNET


@pytest.mark.parametrize(("fmt", "name", "count", "filled"), [
    (DUHDR, "ckpt_inet", 135, 38 + 93 + 95),
    (DUHDR_DNET, "ckpt_dnet", 38, 38),
])
def test_official_names_and_shapes_equal_the_released_index(full, fmt, name, count, filled):
    _, state = full
    real = _listing(name)
    assert len(real) == count
    official = fmt.inverse(state)
    assert len(official) == 1
    assert {k: tuple(v.shape) for k, v in official[0].items()} == real
    # every released variable (plus the optimizer entries the real index also has) fills the method
    zeros = _with_adam({k: torch.zeros(shape) for k, shape in real.items()}, seed=0)
    converted = check_against(fmt, fmt.convert([zeros]), state)
    assert len(converted) == filled
    assert all(k.startswith(fmt.prefixes) for k in converted)


def test_tf_checkpoint_round_trip_drops_adam_and_shares_the_trunk(full, tmp_path):
    _, state = full
    official = DUHDR.inverse(state)[0]
    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", _with_adam(official, seed=2))
    read = DUHDR.reader(tmp_path / "model.ckpt.index")
    assert len(read) == 3 * 135 + 2
    target = _method(seed=7).state_dict()
    converted = check_against(DUHDR, DUHDR.convert([read]), target)
    assert len(converted) == 226
    for key, value in converted.items():
        # Nnet's trunk is INnet's (the official Nnet reuses crf_feature_net)
        want = state["net.linearization." + key[len("net.crf."):]] if _shared(key) else state[key]
        assert torch.equal(value, want), key
    assert not any(k.startswith(("net.hallucination.", "net.refinement.", "net.quantization.")) for k in converted)
    # TensorFlow layouts on disk: conv kernels HWIO, dense kernels [in, out]
    assert torch.equal(read["crf_feature_net/res2a_branch2b/weights"][2, 1, 5, 7],
                       state["net.linearization.res2.0.conv_b.weight"][7, 5, 2, 1])
    assert torch.equal(read["dense/kernel"][3, 8], state["net.crf.decode.weight"][8, 3])
    assert prefix == tmp_path / "model.ckpt"
    # going back once more gives the same official file
    again = DUHDR.inverse(converted)[0]
    assert set(again) == set(official)
    assert all(torch.equal(again[k], official[k]) for k in official)

    dnet = DUHDR_DNET.inverse(state)[0]
    write_tf_checkpoint(tmp_path / "dnet.ckpt", _with_adam(dnet, seed=3))
    converted = check_against(DUHDR_DNET, DUHDR_DNET.convert([DUHDR_DNET.reader(tmp_path / "dnet.ckpt")]), target)
    assert set(converted) == {k for k in state if k.startswith("net.dequantization.")}
    assert all(torch.equal(v, state[k]) for k, v in converted.items())


def test_fc11_rows_follow_tensorflows_nhwc_flatten(full):
    """The converted Nnet equals the official computation: flatten the NHWC pool, matmul fc11, dense."""
    method, _ = full
    crf = copy.deepcopy(method.net.crf).eval()
    gen = torch.Generator().manual_seed(4)
    w_tf, b_tf = 0.01 * torch.randn(26 * 26 * 512, 11, generator=gen), torch.randn(11, generator=gen)
    converted = DUHDR.convert([{"fc11/weights": w_tf, "fc11/biases": b_tf}])
    crf.fc.weight.data.copy_(converted["net.crf.fc.weight"])
    crf.fc.bias.data.copy_(converted["net.crf.fc.bias"])
    pooled = []
    crf.fc.register_forward_hook(lambda _m, inputs, _out: pooled.append(inputs[0]))
    image = torch.rand(1, 3, 256, 256, generator=gen)
    with torch.no_grad():
        ours = crf.pca_weights(image)
        nchw = pooled[0].reshape(1, 512, 26, 26)
        official = crf.decode(nchw.permute(0, 2, 3, 1).reshape(1, -1) @ w_tf + b_tf)
        naive = crf.decode(nchw.reshape(1, -1) @ w_tf + b_tf)  # a plain transpose would do this
    torch.testing.assert_close(ours, official, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(ours, naive, atol=1e-3)


def test_missing_unexpected_and_misshaped_variables_fail(full):
    _, state = full
    official = DUHDR.inverse(state)[0]
    for gone, shape in (("crf_feature_net/res3b_branch2c/weights", r"\(512, 128, 1, 1\)"),
                        ("fc11/biases", r"\(11,\)"), ("Dequantization_Net/conv2d_7/kernel", r"\(128, 128, 3, 3\)")):
        missing = {k: v for k, v in official.items() if k != gone}
        with pytest.raises(ConfigError, match=rf"'{gone}' is missing \(expected shape {shape}\)"):
            check_against(DUHDR, DUHDR.convert([missing]), state)
    for extra in ("Hallucination_Net/encoder/h1/conv_1/W_conv2d", "crf_net/fc11/weights", "dense_1/kernel"):
        with pytest.raises(ConfigError, match=rf"holds '{extra}', which the DuHDR network has no tensor for"):
            DUHDR.convert([{**official, extra: torch.zeros(3)}])
    dnet = DUHDR_DNET.inverse(state)[0]
    with pytest.raises(ConfigError, match=r"holds 'fc11/weights', which the DuHDR Dnet network has no tensor for"):
        DUHDR_DNET.convert([{**dnet, "fc11/weights": official["fc11/weights"]}])
    with pytest.raises(ConfigError, match=r"fc11/weights has 1000 inputs, not 26x26xC .* crf_input_size: 256"):
        DUHDR.convert([{**official, "fc11/weights": torch.zeros(1000, 11)}])
    # Nnet built with global pooling (crf_input_size None) has no official fc11 counterpart
    with pytest.raises(ConfigError, match=r"crf.fc.weight has 512 inputs, .* crf_input_size: 256"):
        DUHDR.inverse({"net.crf.fc.weight": torch.zeros(11, 512)})


def test_import_weights_fills_the_released_networks(tmp_path):
    from hdrlab.commands.import_weights import import_weights

    source = _method(width=TINY, seed=3)
    state = _randomised(source.state_dict(), seed=5)
    official = DUHDR.inverse(state)[0]
    (tmp_path / "ckpt_inet").mkdir()
    write_tf_checkpoint(tmp_path / "ckpt_inet" / "model.ckpt", _with_adam(official, seed=6))
    configs = [REPO / "experiments/duhdr.yaml", REPO / "experiments/overrides/tiny.yaml", OVERRIDE]
    out = import_weights("duhdr", [tmp_path / "ckpt_inet" / "model.ckpt.index"], tmp_path / "duhdr.ckpt", configs=configs)
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert checkpoint["hdrlab_import"]["format"] == "duhdr" and checkpoint["hdrlab_import"]["width"] == TINY
    imported = checkpoint["state_dict"]
    built = _method(width=TINY, seed=0).state_dict()
    assert set(imported) == set(built)
    for key in imported:
        if key.startswith(DUHDR.prefixes) and not key.endswith(DUHDR.kept):
            want = state["net.linearization." + key[len("net.crf."):]] if _shared(key) else state[key]
            assert torch.equal(imported[key], want), key
    # networks the release lacks keep their freshly built values (not the source's)
    for key in ("net.refinement.head1.weight", "net.hallucination.latent_conv.weight", "net.quantization.unet.tail.bias"):
        assert imported[key].shape == built[key].shape and not torch.equal(imported[key], state[key]), key
    assert (tmp_path / "duhdr.config.yaml").is_file()

    # without the override Nnet pools globally: the message names fc11 and the override
    with pytest.raises(ConfigError, match=r"duhdr_official_crf\.yaml.*'fc11/weights' has shape \(11, 43264\) but the "
                                          r"hdrlab network expects \(11, 64\)"):
        import_weights("duhdr", [tmp_path / "ckpt_inet" / "model.ckpt.index"], tmp_path / "bad.ckpt",
                       configs=configs[:2])

    dnet = DUHDR_DNET.inverse(state)[0]
    write_tf_checkpoint(tmp_path / "dnet.ckpt", _with_adam(dnet, seed=8))
    out = import_weights("duhdr_dnet", [tmp_path / "dnet.ckpt.index"], tmp_path / "dnet_import.ckpt", configs=configs[:2])
    imported = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(imported[k], state[k]) for k in state if k.startswith("net.dequantization."))
