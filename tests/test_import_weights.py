"""``hdrlab import-weights``: official key maps (round trips, official names and shapes), errors, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.weights_import import CEVR, DEEP_RECURSIVE, DRTMO, KIM2021, LE2023, check_against, read_official_state

REPO = Path(__file__).resolve().parents[1]
TINY = 0.125

pytestmark = pytest.mark.usefixtures("single_thread")


def _randomised(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random values for every tensor (so a swapped key cannot go unnoticed)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            out[key] = torch.randn(value.shape, generator=gen)
        else:
            out[key] = torch.randint(0, 1000, value.shape, generator=gen, dtype=value.dtype)
    return out


# ----------------------------------------------------------------------------- CEVR
def _cevr_state(width: float, seed: int = 0, *, randomise: bool = True) -> dict[str, torch.Tensor]:
    """hdrlab ``generator.increase/decrease.*`` entries of CEVRMethod at ``width``: every tensor random
    (``randomise``), or a seeded fresh initialisation (a network that runs to sensible outputs)."""
    from hdrlab.models.generators.cevr import CEVRNet

    torch.manual_seed(seed)
    state = {}
    for index, prefix in enumerate(CEVR.prefixes):
        net_state = CEVRNet(width=width).state_dict()
        state.update({prefix + k: v for k, v in (_randomised(net_state, seed + index) if randomise else net_state).items()})
    return state


#: official names and full-size shapes, from skchen1993/2023_CEVR core/HDR_model.py
#: (CEVR_NormNoAffine_Maps: vgg16_bn features[0:6] / [6:13] / [13:23], Bottel_neck(256, 256), decoders
#: Upsample_MLP_multi_ResizeConvUp_Map(256, 256, 256), (256, 128, 128), (128, 64, 64), EV_info=1) and
#: core/decoder.py (MLP = Linear layers then the activation, in one Sequential ``layers``)
CEVR_OFFICIAL_SHAPES = {
    "encoder1.0.weight": (64, 3, 3, 3),
    "encoder1.4.running_var": (64,),
    "encoder2.7.weight": (128, 64, 3, 3),
    "encoder3.21.num_batches_tracked": (),
    "neck.mlp.layers.0.weight": (256, 257),
    "neck.mlp.layers.2.bias": (256,),
    "decoder3.conv_resize.weight": (256, 256, 3, 3),
    "decoder3.mlp1.layers.0.weight": (256, 513),
    "decoder3.conv_mul.weight": (1, 256, 3, 3),
    "decoder4.conv_resize.weight": (128, 256, 3, 3),
    "decoder4.mlp3.layers.0.weight": (64, 129),
    "decoder4.mlp4.layers.2.weight": (128, 64),
    "decoder5.mlp1.layers.0.weight": (64, 129),
    "conv_mul.weight": (1, 65, 1, 1),
    "conv_rgb.bias": (1,),
}


def test_cevr_inverse_gives_official_names_and_shapes_at_full_size():
    official = CEVR.inverse(_cevr_state(1.0))
    for state in official:
        for key, shape in CEVR_OFFICIAL_SHAPES.items():
            assert tuple(state[key].shape) == shape, key
        assert not any(k.startswith(("encoder.", "decoders.")) for k in state)
        assert len(state) == 115  # encoder 7 x (conv 2 + BN 5), neck 6, decoders 20 + 20 + 16, head 4
    assert sum(v.numel() for k, v in official[0].items() if "running" not in k and "num_batches" not in k) == 3_291_592


def test_cevr_round_trip_and_strict_load():
    from hdrlab.methods.cevr import CEVRMethod

    hdrlab_state = _cevr_state(TINY)
    official = CEVR.inverse(hdrlab_state)
    converted = CEVR.convert(official)
    assert converted.keys() == hdrlab_state.keys()
    assert all(torch.equal(converted[k], hdrlab_state[k]) for k in converted)
    back = CEVR.inverse(converted)
    assert [s.keys() for s in back] == [s.keys() for s in official]
    assert all(torch.equal(b[k], o[k]) for b, o in zip(back, official) for k in o)

    method = CEVRMethod(width=TINY, pretrained_encoder=False)
    check_against(CEVR, converted, method.state_dict())
    method.generator.increase.load_state_dict(
        {k[len("generator.increase."):]: v for k, v in converted.items() if k.startswith("generator.increase.")},
        strict=True)
    method.generator.decrease.load_state_dict(
        {k[len("generator.decrease."):]: v for k, v in converted.items() if k.startswith("generator.decrease.")},
        strict=True)
    assert torch.equal(method.generator.increase.encoder[14].weight, official[0]["encoder3.14.weight"])
    assert torch.equal(method.generator.decrease.decoders[2].mlp4.layers[1].bias,
                       official[1]["decoder5.mlp4.layers.1.bias"])


def test_cevr_errors_name_the_official_key():
    from hdrlab.methods.cevr import CEVRMethod

    target = CEVRMethod(width=TINY, pretrained_encoder=False).state_dict()
    official = CEVR.inverse(_cevr_state(TINY))
    with pytest.raises(ConfigError, match=r"'bogus\.weight'"):
        CEVR.convert([{**official[0], "bogus.weight": torch.zeros(1)}, official[1]])
    with pytest.raises(ConfigError, match=r"'encoder1\.9\.weight'"):  # features[9] belongs to encoder2
        CEVR.convert([{**official[0], "encoder1.9.weight": torch.zeros(1)}, official[1]])
    missing = dict(official[1])
    del missing["decoder4.conv_rgb.weight"]
    with pytest.raises(ConfigError, match=r"'decoder4\.conv_rgb\.weight' is missing \(expected shape \(1, 16, 3, 3\)\)"):
        check_against(CEVR, CEVR.convert([official[0], missing]), target)
    full = CEVR.inverse(_cevr_state(1.0))
    with pytest.raises(ConfigError, match=r"'conv_mul\.weight' has shape \(1, 65, 1, 1\) but the hdrlab network "
                                          r"expects \(1, 9, 1, 1\)"):
        check_against(CEVR, CEVR.convert(full), target)
    with pytest.raises(ConfigError, match="needs 2 official file"):
        CEVR.convert(official[:1])


def test_read_official_state_unwraps_and_refuses(tmp_path):
    state = {"a.weight": torch.ones(2)}
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, tmp_path / "w.pth")
    assert read_official_state(tmp_path / "w.pth").keys() == {"a.weight"}
    with pytest.raises(HDRIOError, match="does not exist"):
        read_official_state(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(HDRIOError, match="junk.pth"):
        read_official_state(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(HDRIOError, match="no state dict"):
        read_official_state(tmp_path / "nostate.pth")


def test_cevr_cli_import_then_test_and_two_stage(tmp_path, capsys):
    """Import tiny official-format files through ``hdrlab import-weights``, then ``hdrlab test`` with the
    checkpoint (strict load) and ``generator_ckpt`` of a composite; bad input exits 2 with one line."""
    from hdrlab.cli import build_cli, main
    from hdrlab.methods.build import load_submodule_state
    from hdrlab.models.generators.cevr import CEVRGenerator

    official = CEVR.inverse(_cevr_state(TINY, seed=5, randomise=False))
    files = [tmp_path / "inc.pth", tmp_path / "dec.pth"]
    for state, path in zip(official, files):
        torch.save(state, path)
    configs = ["--config", str(REPO / "experiments/cevr.yaml"), "--config", str(REPO / "experiments/overrides/tiny.yaml")]
    out = tmp_path / "cevr_official.ckpt"
    assert main(["import-weights", "cevr", *map(str, files), "-o", str(out), *configs]) == 0
    assert (tmp_path / "cevr_official.config.yaml").is_file()
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert checkpoint["hdrlab_import"]["format"] == "cevr" and len(checkpoint["hdrlab_import"]["files"]) == 2
    assert torch.equal(checkpoint["state_dict"]["generator.decrease.encoder.0.weight"], official[1]["encoder1.0.weight"])

    cli = build_cli(["test", *configs, "--wandb", "disabled", "--run_dir", str(tmp_path / "run"),
                     "--trainer.limit_test_batches", "1", "--ckpt_path", str(out)])
    assert torch.equal(cli.model.generator.increase.decoders[0].conv_resize.weight,
                       official[0]["decoder3.conv_resize.weight"])
    assert (tmp_path / "run" / "test_per_sample.csv").is_file()

    generator = CEVRGenerator(width=TINY)
    load_submodule_state(generator, out, name="generator_ckpt")
    assert torch.equal(generator.increase.neck.mlp.layers[0].weight, official[0]["neck.mlp.layers.0.weight"])

    capsys.readouterr()
    assert main(["import-weights", "cevr", str(files[0]), str(files[1]), "-o", str(tmp_path / "full.ckpt"),
                 "--config", str(REPO / "experiments/cevr.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has shape" in err and "expects" in err and "--width" in err
    assert main(["import-weights", "cevr", str(files[0]), "-o", str(tmp_path / "x.ckpt"), *configs]) == 2
    assert "takes 2 official file(s)" in capsys.readouterr().err
    assert main(["import-weights", "cevr", *map(str, files), "-o", str(tmp_path / "no" / "x.ckpt"), *configs]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "full.ckpt").exists() and not (tmp_path / "x.ckpt").exists()


# ----------------------------------------------------------------------------- Deep Recursive HDRI
def _deep_recursive_state(width: float, *, batch_statistics: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    from hdrlab.models.generators.deep_recursive import DeepRecursiveUNet

    state = {}
    for index, (prefix, direction) in enumerate(zip(DEEP_RECURSIVE.prefixes, ("up", "down"))):
        net = DeepRecursiveUNet(direction=direction, width=width, batch_statistics=batch_statistics)
        state.update({prefix + k: v for k, v in _randomised(net.state_dict(), seed + index).items()})
    return state


#: official names and full-size shapes, from Siyeong-Lee/Deep_Recursive_HDRI model.py (Generator,
#: base_filter 64: ConvBlock conv/bn/act, Upsample2xBlock.upsample = [Upsample, ConvBlock], output
#: ConvBlock(6, 3, 3, 1, 1, tanh, no norm, no bias)) and block.py (PReLU / MPReLU one slope)
DEEP_RECURSIVE_OFFICIAL_SHAPES = {
    "input_conv.conv.weight": (64, 3, 4, 4),
    "input_conv.conv.bias": (64,),
    "input_conv.act.weight": (1,),
    "conv1.conv.weight": (128, 64, 4, 4),
    "conv1.bn.weight": (128,),
    "conv4.conv.weight": (512, 512, 4, 4),
    "conv4.act.weight": (1,),
    "deconv4.upsample.1.conv.weight": (512, 512, 3, 3),
    "deconv5.upsample.1.conv.weight": (256, 1024, 3, 3),
    "deconv7.upsample.1.bn.bias": (64,),
    "output_deconv.upsample.1.conv.weight": (3, 128, 3, 3),
    "output_deconv.upsample.1.act.weight": (1,),
    "output.conv.weight": (3, 6, 3, 3),
}
#: BatchNorm layers of the official generator (conv1-4, deconv4-7, output_deconv)
_DR_BN = ("conv1.bn", "conv2.bn", "conv3.bn", "conv4.bn", *(f"{b}.upsample.1.bn" for b in
                                                          ("deconv4", "deconv5", "deconv6", "deconv7", "output_deconv")))


def _with_running_stats(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official generator state: BatchNorm running statistics added (the official files hold them)."""
    out = dict(official)
    for bn in _DR_BN:
        channels = official[f"{bn}.weight"].shape[0]
        out |= {f"{bn}.running_mean": torch.randn(channels), f"{bn}.running_var": torch.rand(channels) + 0.5,
                f"{bn}.num_batches_tracked": torch.tensor(7)}
    return out


def test_deep_recursive_inverse_gives_official_names_and_shapes_at_full_size():
    official = DEEP_RECURSIVE.inverse(_deep_recursive_state(1.0, batch_statistics=False))
    for state in official:
        for key, shape in DEEP_RECURSIVE_OFFICIAL_SHAPES.items():
            assert tuple(state[key].shape) == shape, key
        assert {f"{bn}.running_var" for bn in _DR_BN} <= state.keys()
        assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 12_414_194


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_deep_recursive_round_trip_and_strict_load(batch_statistics):
    from hdrlab.methods.deep_recursive import DeepRecursiveMethod

    method = DeepRecursiveMethod(width=TINY, batch_statistics=batch_statistics)
    target = method.state_dict()
    official = [_with_running_stats(s) if batch_statistics else s
                for s in DEEP_RECURSIVE.inverse(_deep_recursive_state(TINY, batch_statistics=batch_statistics))]
    converted = check_against(DEEP_RECURSIVE, DEEP_RECURSIVE.convert(official), target)
    for prefix, net in zip(DEEP_RECURSIVE.prefixes, (method.generator.up, method.generator.down)):
        net.load_state_dict({k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}, strict=True)
    assert torch.equal(method.generator.up.decoders[1][1].weight, official[0]["deconv5.upsample.1.conv.weight"])
    assert torch.equal(method.generator.down.encoders[0][1].weight, official[1]["input_conv.act.weight"])
    back = DEEP_RECURSIVE.inverse(converted)
    for b, o in zip(back, official):
        kept = {k for k in o if not (batch_statistics and ("running" in k or "num_batches" in k))}
        assert b.keys() == kept and all(torch.equal(b[k], o[k]) for k in kept)


def test_deep_recursive_errors_and_dataparallel_prefix(tmp_path):
    from hdrlab.methods.deep_recursive import DeepRecursiveMethod

    target = DeepRecursiveMethod(width=TINY).state_dict()
    official = DEEP_RECURSIVE.inverse(_deep_recursive_state(TINY))
    with pytest.raises(ConfigError, match=r"'input_conv\.bn\.weight'"):  # the first block has no BatchNorm
        DEEP_RECURSIVE.convert([{**official[0], "input_conv.bn.weight": torch.zeros(8)}, official[1]])
    missing = dict(official[0])
    del missing["output.conv.weight"]
    with pytest.raises(ConfigError, match=r"stop-up generator .*'output\.conv\.weight' is missing \(expected shape "
                                          r"\(3, 6, 3, 3\)\)"):
        check_against(DEEP_RECURSIVE, DEEP_RECURSIVE.convert([missing, official[1]]), target)
    torch.save({"module." + k: v for k, v in official[1].items()}, tmp_path / "down.pkl")
    assert read_official_state(tmp_path / "down.pkl").keys() == official[1].keys()


def test_deep_recursive_cli_import_loads_for_reconstruct(tmp_path):
    from hdrlab.cli import main
    from hdrlab.commands.reconstruct import load_method

    official = [_with_running_stats(s) for s in DEEP_RECURSIVE.inverse(_deep_recursive_state(TINY, seed=3))]
    files = [tmp_path / "x_stopup_G_param.pkl", tmp_path / "x_stopdown_G_param.pkl"]
    for state, path in zip(official, files):
        torch.save(state, path)
    out = tmp_path / "dr.ckpt"
    assert main(["import-weights", "deep_recursive", *map(str, files), "-o", str(out),
                 "--config", str(REPO / "experiments/deep_recursive.yaml"),
                 "--config", str(REPO / "experiments/overrides/tiny.yaml")]) == 0
    method = load_method(out, config=tmp_path / "dr.config.yaml")  # strict load_state_dict
    assert torch.equal(method.generator.down.head.weight, official[1]["output.conv.weight"])


# ----------------------------------------------------------------------------- shared helpers
def _meta_state(net_factory, prefix: str) -> dict[str, torch.Tensor]:
    """``prefix``-ed state dict of a full-size network built on the meta device (no allocation)."""
    with torch.device("meta"):
        net = net_factory()
    return {prefix + k: v for k, v in net.state_dict().items()}


def _round_trip(fmt, hdrlab_state: dict[str, torch.Tensor], nets) -> list[dict[str, torch.Tensor]]:
    """official -> hdrlab -> official gives identical tensors; the converted tensors strict-load into
    ``nets`` (one per prefix of ``fmt``). Returns the official state dicts."""
    official = fmt.inverse(hdrlab_state)
    converted = check_against(fmt, fmt.convert(official), hdrlab_state)
    assert converted.keys() == hdrlab_state.keys()
    assert all(torch.equal(converted[k], hdrlab_state[k]) for k in converted)
    back = fmt.inverse(converted)
    assert [s.keys() for s in back] == [s.keys() for s in official]
    assert all(torch.equal(b[k], o[k]) for b, o in zip(back, official) for k in o)
    for prefix, net in zip(fmt.prefixes, nets):
        net.load_state_dict({k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}, strict=True)
    return official


# ----------------------------------------------------------------------------- Kim et al. 2021
#: official names and full-size shapes, from JungHeeKim29/DiffHDRsyn model/GRU_model.py
#: (Generator_up/down(3, 32, 5, 1, 6)), model/structure.py (Structure_up/down(2, 16, 4, 1, 6)),
#: model/combine.py (CombineNet_up/down(7, 16, 5, 1)) and utils/block.py (ConvBlock conv/norm,
#: batch_InstanceNorm2d.inns, Recurrent_unit gru_block/conv_block, DoubleBlock conv1/conv2)
KIM_GLOBAL_SHAPES = {
    "init_layers.0.conv.weight": (32, 3, 3, 3),
    "down_layers.0.conv1.conv.weight": (64, 32, 3, 3),
    "down_layers.8.conv2.conv.bias": (1024,),
    "inter_layers.gru_block.reset_gate.weight": (1024, 2048, 3, 3),
    "inter_layers.gru_block.out_gate.bias": (1024,),
    "inter_layers.conv_block.conv2.conv.weight": (1024, 1024, 3, 3),
    "up_layers.1.conv1.conv.weight": (512, 2048, 1, 1),
    "up_layers.1.conv2.norm.inns.5.weight": (512,),
    "up_layers.9.conv2.norm.inns.0.bias": (32,),
    "out_conv.conv.weight": (3, 64, 3, 3),
}
KIM_STRUCTURE_SHAPES = {
    "init_layers.0.conv.weight": (16, 2, 3, 3),
    "down_layers.6.conv2.norm.inns.3.weight": (256,),
    "inter_layers.gru_block.update_gate.weight": (256, 512, 3, 3),
    "up_layers.7.conv1.conv.weight": (16, 64, 1, 1),
    "out_conv.conv.weight": (2, 32, 3, 3),
    "out_conv.norm.inns.5.bias": (2,),
    "final_conv.conv.weight": (1, 4, 3, 3),
}
KIM_REFINE_SHAPES = {
    "init_layers.0.conv.weight": (16, 7, 3, 3),
    "down_layers.8.conv1.conv.weight": (512, 256, 3, 3),
    "inter_layers.0.conv.weight": (512, 512, 3, 3),
    "up_layers.1.conv1.conv.weight": (256, 1024, 3, 3),
    "up_layers.9.conv2.norm.weight": (16,),
    "out_conv.conv.bias": (3,),
}


def test_kim2021_inverse_gives_official_names_and_shapes_at_full_size():
    from hdrlab.models.generators.kim2021 import Kim2021Net

    official = KIM2021.inverse(_meta_state(Kim2021Net, "generator.net."))
    for state, shapes, count in zip(official, [KIM_GLOBAL_SHAPES] * 2 + [KIM_STRUCTURE_SHAPES] * 2 + [KIM_REFINE_SHAPES] * 2,
                                    (98_918_403,) * 2 + (6_188_815,) * 2 + (11_007_971,) * 2):
        for key, shape in shapes.items():
            assert tuple(state[key].shape) == shape, key
        assert sum(v.numel() for v in state.values()) == count
        assert not any(k.startswith(("init.", "down.", "up.", "middle.", "head.")) for k in state)


def test_kim2021_round_trip_and_strict_load():
    from hdrlab.models.generators.kim2021 import Kim2021Net

    net = Kim2021Net(width=TINY)
    state = {"generator.net." + k: v for k, v in _randomised(net.state_dict()).items()}
    nets = [getattr(getattr(net, d), n) for n in ("global_net", "structure_net", "refine_net") for d in ("up", "down")]
    official = _round_trip(KIM2021, state, nets)
    assert torch.equal(net.down.structure_net.out_conv.norm.norms[4].weight, official[3]["out_conv.norm.inns.4.weight"])
    assert torch.equal(net.up.refine_net.middle.conv.weight, official[4]["inter_layers.0.conv.weight"])
    assert torch.equal(net.up.global_net.head.conv.weight, official[0]["out_conv.conv.weight"])
    with pytest.raises(ConfigError, match=r"structure up network .*'down_layers\.1\.conv1\.conv\.weight'"):
        KIM2021.convert([*official[:2], {**official[2], "down_layers.1.conv1.conv.weight": torch.zeros(1)},
                         *official[3:]])
    with pytest.raises(ConfigError, match=r"'final_conv\.conv\.weight'"):  # only the structure nets have one
        KIM2021.convert([{**official[0], "final_conv.conv.weight": torch.zeros(1)}, *official[1:]])


# ----------------------------------------------------------------------------- DrTMO
#: official names and full-size shapes, from DrTMO network.py (CNNAE3D512: Convolution2D W
#: (out, in, kh, kw), DeconvolutionND W (in, out, kd, kh, kw), BatchNormalization gamma / beta /
#: avg_mean / avg_var / N)
DRTMO_OFFICIAL_SHAPES = {
    "c0/W": (64, 3, 4, 4),
    "c0/b": (64,),
    "c8/W": (512, 512, 4, 4),
    "bnc1/gamma": (128,),
    "bnc8/avg_var": (512,),
    "bnc4/N": (),
    "dc00/W": (512, 512, 4, 4, 4),
    "dc0/W": (1024, 512, 4, 4, 4),
    "dc2/W": (1024, 512, 3, 4, 4),
    "dc4/W": (1024, 256, 3, 4, 4),
    "dc6/W": (256, 64, 3, 4, 4),
    "dc7/W": (128, 3, 3, 4, 4),
    "dc7/b": (3,),
    "bndc00/beta": (512,),
    "bndc6/avg_mean": (64,),
}


def test_drtmo_inverse_gives_official_names_and_shapes_at_full_size():
    from hdrlab.models.generators.drtmo import DrTMONet

    official = DRTMO.inverse({**_meta_state(DrTMONet, "generator.up."), **_meta_state(DrTMONet, "generator.down.")})
    for state in official:
        for key, shape in DRTMO_OFFICIAL_SHAPES.items():
            assert tuple(state[key].shape) == shape, key
        assert len(state) == 9 * 2 + 9 * 2 + 16 * 5  # 9 convs, 9 deconvs, 16 BatchNorms
        assert sum(v.numel() for k, v in state.items() if k.endswith(("/W", "/b", "/gamma", "/beta"))) == 174_497_795


def test_drtmo_round_trip_bgr_flip_and_npz(tmp_path):
    import numpy as np

    from hdrlab.models.generators.drtmo import DrTMONet

    nets = [DrTMONet(width=TINY), DrTMONet(width=TINY)]
    state = {p + k: v for p, net in zip(DRTMO.prefixes, nets) for k, v in _randomised(net.state_dict()).items()}
    official = _round_trip(DRTMO, state, nets)
    # BGR official colour order: first conv input channels and last deconv output channels reversed
    assert torch.equal(nets[0].convs[0].weight, official[0]["c0/W"].flip(1))
    assert torch.equal(nets[1].deconvs[8].weight, official[1]["dc7/W"].flip(1))
    assert torch.equal(nets[1].deconvs[8].bias, official[1]["dc7/b"].flip(0))
    assert torch.equal(nets[0].deconvs[0].weight, official[0]["dc00/W"])
    assert torch.equal(nets[0].deconv_norms[7].running_var, official[0]["bndc6/avg_var"])
    # Chainer serializers.save_npz files (``*.chainer``), N saved as a 0-d integer array
    path = tmp_path / "upexposure_model.chainer"
    np.savez(path.with_suffix(""), **{k: v.numpy().astype(np.int32) if k.endswith("/N") else v.numpy()
                                      for k, v in official[0].items()})
    path.with_suffix(".npz").rename(path)
    read = DRTMO.reader(path)
    assert read.keys() == official[0].keys() and torch.equal(read["dc3/W"], official[0]["dc3/W"])
    assert DRTMO.convert([read, official[1]])["generator.up.conv_norms.2.num_batches_tracked"].dtype == torch.long
    with pytest.raises(ConfigError, match=r"'bnc0/gamma'"):  # c0 has no BatchNorm
        DRTMO.convert([{**official[0], "bnc0/gamma": torch.zeros(1)}, official[1]])
    (tmp_path / "junk.chainer").write_bytes(b"not an archive")
    with pytest.raises(HDRIOError, match="junk.chainer"):
        DRTMO.reader(tmp_path / "junk.chainer")


# ----------------------------------------------------------------------------- Le 2023
#: official names and full-size shapes, from VinAIResearch/single_image_hdr src/models/ednet.py (EDNet:
#: HDREncNet nfeats 16 / max 256 / 7 layers / global_res add, Up/DownExposureNet 32 / 512 / 7 / concat)
#: and src/architectures/ (BaseUNet enc<i> / up<i> / dec<i> / dec1, UNetEncBlock.blk, SubPixelUpsampling
#: conv_shuffle + abn, BatchNorm: no conv biases)
LE2023_OFFICIAL_SHAPES = {
    "HDREncNet.enc1.blk.0.weight": (16, 3, 3, 3),
    "HDREncNet.enc7.blk.4.running_var": (256,),
    "HDREncNet.up7.conv_shuffle.weight": (1024, 256, 1, 1),
    "HDREncNet.dec7.blk.0.weight": (256, 512, 3, 3),
    "HDREncNet.dec2.blk.0.weight": (16, 32, 3, 3),
    "HDREncNet.dec1.0.weight": (3, 16, 1, 1),
    "UpExposureNet.enc5.blk.3.weight": (512, 512, 3, 3),
    "UpExposureNet.up2.abn.0.num_batches_tracked": (),
    "UpExposureNet.up2.conv_shuffle.weight": (128, 32, 1, 1),
    "UpExposureNet.dec2.blk.0.weight": (32, 64, 3, 3),
    "DownExposureNet.dec1.0.weight": (3, 35, 1, 1),
    "DownExposureNet.dec1.0.bias": (3,),
}


def test_le2023_inverse_gives_official_names_and_shapes_at_full_size():
    from hdrlab.models.generators.le2023_multiexposure import Le2023MultiExposureNet

    (official,) = LE2023.inverse(_meta_state(Le2023MultiExposureNet, "generator.net."))
    for key, shape in LE2023_OFFICIAL_SHAPES.items():
        assert tuple(official[key].shape) == shape, key
    trainable = {k: v for k, v in official.items() if "running" not in k and "num_batches" not in k}
    assert sum(v.numel() for v in trainable.values()) == 62_194_875
    assert sum(v.numel() for k, v in trainable.items() if k.startswith("HDREncNet.")) == 6_916_131


def test_le2023_round_trip_strict_load_and_lightning_checkpoint(tmp_path):
    from hdrlab.models.generators.le2023_multiexposure import Le2023MultiExposureNet

    net = Le2023MultiExposureNet(width=TINY)
    state = {"generator.net." + k: v for k, v in _randomised(net.state_dict()).items()}
    (official,) = _round_trip(LE2023, state, [net])
    assert torch.equal(net.up_exposure.decoders[0][3].weight, official["UpExposureNet.dec7.blk.3.weight"])
    assert torch.equal(net.hdr_encoder.upsamplers[5][1].running_mean, official["HDREncNet.up2.abn.0.running_mean"])
    # a Lightning checkpoint: the state dict under "state_dict", the content loss's VGG19 dropped
    torch.save({"state_dict": {**official, "loss_fn.content_loss.model.0.weight": torch.zeros(2)},
                "epoch": 3, "global_step": 10}, tmp_path / "pretrained.ckpt")
    converted = LE2023.convert([LE2023.reader(tmp_path / "pretrained.ckpt")])
    assert converted.keys() == state.keys()
    with pytest.raises(ConfigError, match=r"'UpExposureNet\.up1\.conv_shuffle\.weight'"):  # no up1 in BaseUNet
        LE2023.convert([{**official, "UpExposureNet.up1.conv_shuffle.weight": torch.zeros(1)}])


def test_ahdrnet_cli_import_drops_the_unused_convs_and_tests(tmp_path):
    """An official-format AHDR state dict (tiny width, plus the two convs ``forward`` never calls)
    imports through ``hdrlab import-weights ahdrnet`` and loads strictly into ``hdrlab test``."""
    from hdrlab.cli import build_cli, main
    from hdrlab.methods.ahdrnet import AHDRNet
    from hdrlab.weights_import import AHDRNET

    state = {"merger." + k: v for k, v in _randomised(AHDRNet(width=TINY).merger.state_dict()).items()}
    (official,) = AHDRNET.inverse(state)
    features = official["conv2.weight"].shape[0]
    unused = {f"attConv{i}.{p}": torch.zeros((features, features, 3, 3) if p == "weight" else (features,))
              for i in (1, 3) for p in ("weight", "bias")}
    torch.save({**official, **unused}, tmp_path / "ahdr_model.pt")
    configs = ["--config", str(REPO / "experiments/ahdrnet.yaml"), "--config", str(REPO / "experiments/overrides/tiny.yaml")]
    out = tmp_path / "ahdrnet_official.ckpt"
    assert main(["import-weights", "ahdrnet", str(tmp_path / "ahdr_model.pt"), "-o", str(out), *configs]) == 0
    cli = build_cli(["test", *configs, "--data.init_args.bracket_ev", "[-2, 0, 2]", "--wandb", "disabled",
                     "--run_dir", str(tmp_path / "run"), "--trainer.limit_test_batches", "1", "--ckpt_path", str(out)])
    assert torch.equal(cli.model.merger.drdbs[2].dense[5].weight, official["RDB3.dense_layers.5.conv.weight"])
    assert torch.equal(cli.model.merger.attend_high.conv_out.bias, official["att32.bias"])
