"""DrTMO networks and generator (Endo et al. 2017): official parameter counts, layer table, residual
sigmoid, BatchNorm-at-inference behaviour, slot -> ev mapping, truncation, and a TwoStage step."""

from __future__ import annotations

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError
from hdrlab.models.generators.base import StackGenerator
from hdrlab.models.generators.drtmo import (
    DRTMO_DEFAULT_EV,
    DrTMOBatchNorm,
    DrTMOGenerator,
    DrTMONet,
    drtmo_exposure_times,
    generated_codes,
    monotonic_run,
    slot_of_ev,
)
from hdrlab.stack import ExposureStack

pytestmark = pytest.mark.usefixtures("single_thread")


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def tiny_net(**kwargs) -> DrTMONet:
    return DrTMONet(width=0.0625, levels=5, **kwargs)


def tiny_generator(**kwargs) -> DrTMOGenerator:
    return DrTMOGenerator(width=0.0625, levels=5, **kwargs)


# --------------------------------------------------------------------------- full size (meta / fake)
def test_parameter_counts_width1_official() -> None:
    """174,497,795 per model (encoder 23,737,536 + decoder 150,760,259), 348,995,590 for the pair."""
    with torch.device("meta"):
        gen = DrTMOGenerator()
    net = gen.up
    encoder = _trainable(net.convs) + _trainable(net.conv_norms)
    decoder = _trainable(net.deconvs) + _trainable(net.deconv_norms)
    assert (encoder, decoder) == (23_737_536, 150_760_259)
    assert _trainable(gen.up) == _trainable(gen.down) == 174_497_795
    assert _trainable(gen) == 348_995_590


def test_layer_table_width1() -> None:
    """Channels, kernels and strides of spec §1.3 (c0..c8, dc00..dc7)."""
    with torch.device("meta"):
        net = DrTMONet()
    assert [(c.in_channels, c.out_channels) for c in net.convs] == [
        (3, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in net.convs)
    assert isinstance(net.conv_norms[0], torch.nn.Identity) and all(isinstance(n, DrTMOBatchNorm) for n in net.conv_norms[1:])
    table = [(d.in_channels, d.out_channels, d.kernel_size, d.stride) for d in net.deconvs]
    assert table == [
        (512, 512, (4, 4, 4), (2, 2, 2)), (1024, 512, (4, 4, 4), (2, 2, 2)), (1024, 512, (4, 4, 4), (2, 2, 2)),
        (1024, 512, (3, 4, 4), (1, 2, 2)), (1024, 512, (3, 4, 4), (1, 2, 2)), (1024, 256, (3, 4, 4), (1, 2, 2)),
        (512, 128, (3, 4, 4), (1, 2, 2)), (256, 64, (3, 4, 4), (1, 2, 2)), (128, 3, (3, 4, 4), (1, 2, 2))]
    assert all(d.padding == (1, 1, 1) for d in net.deconvs)
    assert [n.num_features for n in net.deconv_norms] == [512, 512, 512, 512, 512, 256, 128, 64]
    assert all(n.eps == 2e-5 for n in net.deconv_norms) and net.dropout.p == 0.5 and net.stride == 512


def test_full_size_forward_shape_under_fake_tensors() -> None:
    with torch.device("meta"):
        gen = DrTMOGenerator().eval()
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = gen.up(torch.rand(1, 3, 512, 512, device="meta"))
        assert tuple(out.shape) == (1, 3, 8, 512, 512)
        stack = gen(torch.rand(1, 3, 512, 512, device="meta"))
        assert tuple(stack.images.shape) == (1, 17, 3, 512, 512)


# --------------------------------------------------------------------------- tiny networks
def test_net_shapes_range_and_size_check() -> None:
    net = tiny_net()
    y = net(torch.rand(2, 3, 32, 64))
    y = y.detach()
    assert y.shape == (2, 3, 8, 32, 64) and float(y.min()) > 0.0 and float(y.max()) < 1.0
    with pytest.raises(ConfigError, match="multiple of 32"):
        net(torch.rand(1, 3, 48, 32))
    with pytest.raises(ConfigError, match="levels"):
        DrTMONet(levels=3)


def test_residual_sigmoid_is_applied_to_the_raw_input() -> None:
    """With the last deconvolution zeroed, every slot is ``sigmoid(x)`` (no logit of x)."""
    net = tiny_net()
    torch.nn.init.zeros_(net.deconvs[-1].weight)
    torch.nn.init.zeros_(net.deconvs[-1].bias)
    x = torch.rand(1, 3, 32, 32)
    y = net(x)
    assert torch.allclose(y, torch.sigmoid(x).unsqueeze(2).expand_as(y), atol=1e-6)


def test_official_initialisation() -> None:
    net = DrTMONet(width=0.25, levels=6)
    weights = torch.cat([m.weight.detach().flatten() for m in [*net.convs, *net.deconvs]])
    assert abs(float(weights.std()) - 0.02) < 0.002 and abs(float(weights.mean())) < 0.001
    assert all(float(m.bias.abs().max()) == 0.0 for m in [*net.convs, *net.deconvs])
    norms = [n for n in net.modules() if isinstance(n, DrTMOBatchNorm)]
    assert all(bool((n.weight == 1).all()) and bool((n.bias == 0).all()) for n in norms)


def test_skips_are_broadcast_along_the_exposure_axis() -> None:
    """A feature constant along the exposure axis stays a valid skip at depth 8: the decoder input of
    the first depth-preserving layer holds the encoder feature repeated 8 times."""
    net = tiny_net().eval()
    seen = {}
    handle = net.deconvs[3].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    net(torch.rand(1, 3, 32, 32))
    handle.remove()
    skip = seen["x"][:, net.deconvs[2].out_channels:]  # the concatenated encoder half
    assert skip.shape[2] == 8 and torch.equal(skip, skip[:, :, :1].expand_as(skip))


# --------------------------------------------------------------------------- BatchNorm at inference
def test_batchnorm_uses_batch_statistics_at_inference_by_default() -> None:
    """Official: eval mode still normalises by the predicted batch; the flag switches to running stats."""
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    official = tiny_net().eval()
    alone = official(x[:1])
    together = official(x)[:1]
    assert not torch.allclose(alone, together, atol=1e-4)  # batch statistics: depends on the batch
    assert torch.equal(official(x[:1]), alone)  # dropout is off in eval mode: deterministic
    running = [n.running_mean.clone() for n in official.modules() if isinstance(n, DrTMOBatchNorm)]
    official(x)
    assert all(torch.equal(a, n.running_mean) for a, n in zip(running, (n for n in official.modules() if isinstance(n, DrTMOBatchNorm))))

    classic = tiny_net(batch_stats_at_inference=False)
    classic.load_state_dict(official.state_dict())
    classic.eval()
    assert torch.allclose(classic(x[:1]), classic(x)[:1], atol=1e-5)  # running statistics: per image


def test_batchnorm_one_value_per_channel_gives_beta() -> None:
    """A 1x1 map with batch 1 (the innermost encoder layer at 512 px): Chainer outputs beta; torch would raise."""
    bn = DrTMOBatchNorm(4)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    x = torch.randn(1, 4, 1, 1, requires_grad=True)
    y = bn(x)
    assert torch.allclose(y.flatten(), bn.bias, atol=1e-6)
    y.sum().backward()
    assert float(x.grad.abs().max()) == 0.0
    assert torch.allclose(bn.running_mean, 0.1 * x.detach().flatten())
    z = torch.randn(3, 4, 2, 5, 5)  # 5D (decoder) matches torch's BatchNorm3d in training mode
    ref = torch.nn.BatchNorm3d(4, eps=2e-5)
    assert torch.allclose(DrTMOBatchNorm(4)(z), ref(z), atol=1e-5)


# --------------------------------------------------------------------------- generator
def test_generator_stack_ev_order_range_and_padding() -> None:
    gen = tiny_generator()
    assert isinstance(gen, StackGenerator) and gen.stride == 1 and gen.net_stride == 32
    assert gen.ev == tuple(sorted((*DRTMO_DEFAULT_EV, 0.0))) and len(gen.ev) == 17
    assert gen.ev[0] == -4.0 and gen.ev[-1] == 4.0 and all(math.isclose(b - a, 0.5) for a, b in zip(gen.ev, gen.ev[1:]))
    gen.eval()
    ldr = torch.rand(1, 3, 40, 24)
    stack = gen(ldr)
    assert stack.images.shape == (1, 17, 3, 40, 24) and stack.reference == 8
    assert torch.equal(stack.images[:, 8], ldr)
    assert float(stack.images.min()) >= 0.0 and float(stack.images.max()) <= 1.0
    assert torch.equal(stack.ev[0], torch.tensor(gen.ev))
    # slot mapping: ev +0.5 (k + 1) is up slot k, ev -0.5 (k + 1) is down slot k
    up, down = gen.slots(ldr, up=True), gen.slots(ldr, up=False)
    assert torch.equal(stack.images[:, 9:], up) and torch.equal(stack.images[:, :8], down.flip(1))


def test_generator_subsets_run_one_model_and_bad_ev_is_refused() -> None:
    gen = tiny_generator(ev=(0.5, 4.0)).eval()
    calls = []
    gen.down.register_forward_hook(lambda *a: calls.append("down"))
    ldr = torch.rand(1, 3, 32, 32)
    stack = gen(ldr)
    assert stack.ev[0].tolist() == [0.0, 0.5, 4.0] and not calls
    up = gen.slots(ldr, up=True)
    assert torch.equal(stack.images[:, 1], up[:, 0]) and torch.equal(stack.images[:, 2], up[:, 7])
    assert gen.output_ev((-1.0, 2.5)) == (-1.0, 0.0, 2.5)
    assert slot_of_ev(-3.5) == (False, 6) and slot_of_ev(1.0) == (True, 1)
    for bad in ((0.75,), (4.5,), (-2.0, 1.3)):
        with pytest.raises(ConfigError, match="cannot generate ev"):
            tiny_generator(ev=bad)


# --------------------------------------------------------------------------- truncation and times
def _official_selection(codes: torch.Tensor, threshold: float = 64) -> tuple[int, int]:
    """Spec §1.7 step by step for one 17-image stack of codes [17, 3, H, W] (input at index 8)."""
    stid, prev = 0, codes[8]
    for img in codes[:8].flip(0):  # down_1, down_2, ...
        if bool((img > prev + threshold).any()):
            break
        prev, stid = img, stid + 1
    edid, prev = 0, codes[8]
    for img in codes[9:]:  # up_1, up_2, ...
        if bool((img < prev - threshold).any()):
            break
        prev, edid = img, edid + 1
    return 8 - stid, 8 + edid


def test_monotonic_run_matches_the_official_walk() -> None:
    g = torch.Generator().manual_seed(3)
    base = torch.linspace(0, 255, 17).view(17, 1, 1, 1).expand(17, 3, 4, 4).clone()
    cases = [base.clone() for _ in range(6)]
    cases[1][3, 0, 1, 1] = cases[1][4, 0, 1, 1] + 65  # darker member brighter than its neighbour: cut below 4
    cases[2][12, 2, 0, 0] = cases[2][11, 2, 0, 0] - 65  # brighter member darker: cut above 11
    cases[3][7, 0, 0, 0] = 255.0  # down_1 inverted: keep nothing below the input
    cases[3][9, 0, 0, 0] = 0.0  # up_1 inverted: keep nothing above
    cases[4][5, 0, 0, 0] = cases[4][6, 0, 0, 0] + 64  # exactly 64: allowed (strictly greater breaks)
    cases[5] = torch.randint(0, 256, (17, 3, 4, 4), generator=g).float()
    codes = torch.stack(cases)
    first, last = monotonic_run(codes, 8)
    assert list(zip(first.tolist(), last.tolist())) == [_official_selection(c) for c in codes]
    assert [(int(a), int(b)) for a, b in zip(first, last)][:5] == [(0, 16), (4, 16), (0, 11), (8, 8), (0, 16)]


def test_official_exposure_times_match_the_kept_ev() -> None:
    times = drtmo_exposure_times(17)
    assert float(times[0]) == 1 / 1024 and math.isclose(float(times[-1]), 1 / 4, rel_tol=1e-12)  # 16 steps of 0.5 EV
    ev = torch.tensor((*DRTMO_DEFAULT_EV[:8], 0.0, *DRTMO_DEFAULT_EV[8:]), dtype=torch.float64)
    first, last = 3, 12  # a kept run: times restart at 1/1024 for its darkest member
    kept = drtmo_exposure_times(last - first + 1)
    assert torch.allclose(torch.log2(kept / kept[8 - first]), ev[first:last + 1])


def test_generated_codes_truncate_generated_and_round_the_input() -> None:
    images = torch.full((1, 3, 3, 2, 2), 100.7 / 255.0)
    codes = generated_codes(ExposureStack(images=images, ev=torch.tensor([[-0.5, 0.0, 0.5]]), reference=1))
    assert codes[0, :, 0, 0, 0].tolist() == [100.0, 101.0, 100.0]


# --------------------------------------------------------------------------- in TwoStage
def test_trains_inside_two_stage_with_known_crf_debevec() -> None:
    from hdrlab.data import ProceduralDataModule
    from hdrlab.methods.two_stage import TwoStage
    from hdrlab.models.mergers import DebevecMerger

    dm = ProceduralDataModule(num_train_scenes=2, num_val_scenes=1, patch_size=32, batch_size=2, flips=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    method = TwoStage(generator=tiny_generator(ev=(-2.0, -1.0, 1.0, 2.0)), merger=DebevecMerger(crf="known"),
                      mode="freeze_merger")
    optimizer = method.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    before = [p.detach().clone() for p in method.generator.parameters()]
    method.train()
    loss, _ = method.compute_loss(batch)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, method.generator.parameters()))
    method.eval()
    with torch.no_grad():
        pred = method.predict_image(batch)
    assert pred.shape == (2, 3, 32, 32) and bool(torch.isfinite(pred).all()) and float(pred.min()) >= 0.0
