"""Wu et al. (ECCV 2018): the network and merger (:mod:`hdrlab.models.mergers.wu`), the loss
(:mod:`hdrlab.losses.wu`) and the merger inside a ``TwoStage`` composite."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import mu_law_domain
from hdrlab.losses.wu import wu_loss, wu_tonemap
from hdrlab.methods.two_stage import TwoStage
from hdrlab.models.blocks.conv import init_tf_truncated_normal_, same_padding_amounts
from hdrlab.models.generators import Le2023Generator
from hdrlab.models.mergers.wu import (
    SameConvTranspose2d,
    WuMerger,
    WuNet,
    WuResidualBlock,
)
from hdrlab.stack import ExposureStack
from support.overfit import fixed_batch

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 0.125


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _stack(batch: int = 2, size: int = 32, ev=(-2.0, 0.0, 2.0), seed: int = 0) -> ExposureStack:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, len(ev), 3, size, size, generator=g)
    return ExposureStack(images=images, ev=torch.tensor([list(ev)] * batch), reference=len(ev) // 2)


# ---------------------------------------------------------------------------------------- architecture
def test_parameter_counts_width1_official_and_fake_forward():
    """16,606,339 = encoders 3 x 214,848 + merger 13,089,024 + decoder 2,872,771 (mergers.md section 6)."""
    with FakeTensorMode():
        merger = WuMerger()
        net = merger.net
        counts = (_trainable(merger), _trainable(net.encoders), _trainable(net.merger), _trainable(net.decoder))
        per_encoder = [_trainable(e) for e in net.encoders]
        out = merger(_stack(batch=1, size=256))
        assert tuple(out.shape) == (1, 3, 256, 256)
    assert counts == (16_606_339, 644_544, 13_089_024, 2_872_771)
    assert per_encoder == [214_848] * 3
    assert len(net.merger.res_blocks) == 9 and merger.stride == 8
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 + 1 + 18 + 3
    assert all(bn.momentum == 0.1 and bn.eps == 1e-5 and bn.affine for bn in bns)


def test_same_padding_is_the_official_rule():
    # 5x5 stride 2 on even sizes pads (1, 2); on odd sizes (2, 2); stride-1 convs pad symmetrically
    assert [same_padding_amounts(n, 5, 2) for n in (256, 32, 4)] == [(1, 2)] * 3
    assert same_padding_amounts(255, 5, 2) == (2, 2)
    assert same_padding_amounts(64, 5, 1) == (2, 2) and same_padding_amounts(64, 3, 1) == (1, 1)
    conv = WuNet(width=WIDTH).encoders[0].conv1
    x = torch.rand(1, 6, 16, 24)
    expected = F.conv2d(F.pad(x, (1, 2, 1, 2), mode="reflect"), conv.weight, conv.bias, stride=2)
    assert torch.equal(conv(x), expected) and expected.shape[-2:] == (8, 12)


def test_transposed_conv_is_the_adjoint_of_the_same_conv():
    """TF conv2d_transpose(SAME, output 2n) is the adjoint of a zero-padded (1, 2) stride-2 SAME conv on 2n."""
    torch.manual_seed(0)
    deconv = SameConvTranspose2d(4, 3)
    y, x = torch.randn(2, 4, 5, 6), torch.randn(2, 3, 10, 12)
    up = deconv(y) - deconv.bias.view(1, -1, 1, 1)
    assert up.shape == (2, 3, 10, 12)
    down = F.conv2d(F.pad(x, (1, 2, 1, 2)), deconv.weight, stride=2)  # weight [4, 3, 5, 5] as a conv 3 -> 4
    assert down.shape == y.shape
    torch.testing.assert_close((up * x).sum(), (down * y).sum(), rtol=1e-5, atol=1e-4)


def test_residual_block_rule():
    torch.manual_seed(0)
    block = WuResidualBlock(4).eval()
    r = torch.randn(1, 4, 6, 6)
    x = F.relu(r)
    y = block.bn1(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), block.conv1.weight, block.conv1.bias))
    y = block.bn2(F.conv2d(F.pad(F.relu(y), (1, 1, 1, 1), mode="reflect"), block.conv2.weight, block.conv2.bias))
    torch.testing.assert_close(block(r), y + x)


def test_initialisation_is_the_official_one():
    torch.manual_seed(0)
    w = init_tf_truncated_normal_(torch.empty(200_000), std=0.02)
    # N(0, 0.02) cut at 2 std: std 0.02 * 0.8796, nothing beyond 0.04
    assert float(w.abs().max()) <= 0.04 and abs(float(w.std()) - 0.02 * 0.8796) < 2e-4
    net = WuNet(width=0.5)
    res_w = net.merger.res_blocks[0].conv1.weight.detach()
    assert float(res_w.abs().max()) <= 0.04 and 0.016 < float(res_w.std()) < 0.019
    dec_w = net.decoder.deconv1.weight.detach()
    assert float(dec_w.abs().max()) > 0.05 and 0.019 < float(dec_w.std()) < 0.021  # plain normal
    biases = [m.bias for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(biases) == 6 + 1 + 18 + 4 and all(float(b.detach().abs().max()) == 0 for b in biases)


# ---------------------------------------------------------------------------------------- merger
def test_merger_inputs_are_the_official_encoding_and_output_is_rescaled():
    """Encoder i sees [LDR*2-1, LDR2HDR] with the official LDR2HDR(img, 2^(ev-ev_min)) in [-1, 1];
    merge = (tanh + 1)/2 * 2^(ev_ref - ev_min)."""
    torch.manual_seed(0)
    merger = WuMerger(width=WIDTH).eval()
    stack = _stack(ev=(-3.0, -1.0, 1.0))
    seen = []
    hooks = [enc.register_forward_hook(lambda mod, inp, out: seen.append(inp[0])) for enc in merger.net.encoders]
    with torch.no_grad():
        out = merger(stack)
        raw = merger.net(stack.images * 2 - 1, _official_hdr(stack.images * 2 - 1, stack.ev))
    for h in hooks:
        h.remove()
    assert len(seen) == 6  # the merger's call, then the direct call with the official encoding
    for i, x in enumerate(seen[:3]):
        torch.testing.assert_close(seen[3 + i], x)
        img = stack.images[:, i] * 2 - 1
        expected_hdr = (((img + 1) / 2) ** 2.2 / 2.0 ** (2 * i)) * 2 - 1
        torch.testing.assert_close(x, torch.cat([img, expected_hdr], dim=1))
    torch.testing.assert_close(out, (raw + 1) / 2 * 4.0)
    assert out.shape == (2, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 4


def _official_hdr(ldr_pm1: torch.Tensor, ev: torch.Tensor) -> torch.Tensor:
    expo = 2.0 ** (ev - ev[:, :1])
    return (((ldr_pm1 + 1) / 2) ** 2.2 / expo.view(*expo.shape, 1, 1, 1)) * 2 - 1


def test_objective_is_the_official_loss_on_the_network_domain():
    torch.manual_seed(0)
    merger = WuMerger(width=WIDTH)
    stack = _stack()
    hdr = torch.rand(2, 3, 32, 32) * 3
    loss, terms = merger.objective(stack, {"hdr": hdr})
    pred = merger.forward_net(stack.images, stack.images**2.2 / torch.tensor([1.0, 4.0, 16.0]).view(1, 3, 1, 1, 1))
    target = (hdr / 4).clamp(0, 1)  # relative to the darkest exposure (ev -2)
    torch.testing.assert_close(loss, wu_loss(pred, target))
    assert set(terms) == {"mu_mse"} and float(loss.detach()) > 0


# ---------------------------------------------------------------------------------------- loss
def test_loss_is_four_times_the_unit_domain_mu_law_mse():
    assert torch.allclose(wu_tonemap(torch.tensor([-1.0, 1.0])), torch.tensor([-1.0, 1.0]))
    x = torch.tensor([0.0])  # radiance 0.5
    assert math.isclose(float(wu_tonemap(x)), 2 * math.log1p(2500.0) / math.log1p(5000.0) - 1, rel_tol=1e-6)
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    unit = F.mse_loss(mu_law_domain(pred, mu=5000.0), mu_law_domain(target, mu=5000.0))
    torch.testing.assert_close(wu_loss(pred, target), 4 * unit)
    assert float(wu_loss(target, target)) == 0.0
    with pytest.raises(ConfigError, match="differ in shape"):
        wu_loss(pred, target[..., :4])


# ---------------------------------------------------------------------------------------- composite
@pytest.mark.parametrize("mode", ["freeze_generator", "joint"])
def test_two_stage_steps_on_a_generated_stack(mode):
    """The merger's own objective trains it on a Le2023 stack (-2, 0, +2): the loss falls over 5 steps
    (lr 1e-4); the generator moves only in joint mode."""
    torch.manual_seed(0)
    generator = Le2023Generator(width=0.125, ev=[-2.0, 2.0], levels=3)
    method = TwoStage(generator=generator, merger=WuMerger(width=WIDTH), mode=mode, metrics=("psnr_mu",))
    assert method.merger_loss == "own" and method.stride == 8
    batch = fixed_batch(scene_seed=0, patch_size=32)
    optimizer = method.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    gen_before = [p.detach().clone() for p in method.generator.parameters()]
    merger_before = [p.detach().clone() for p in method.merger.parameters()]
    losses = []
    for _ in range(5):
        loss, terms = method.compute_loss(batch)
        assert torch.isfinite(loss) and set(terms) == {"mu_mse"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert any(not torch.equal(a, p) for a, p in zip(merger_before, method.merger.parameters()))
    generator_moved = any(not torch.equal(a, p) for a, p in zip(gen_before, method.generator.parameters()))
    assert generator_moved == (mode == "joint")
    with torch.no_grad():
        pred = method.predict_image(batch)
    assert pred.shape == (1, 3, 32, 32) and torch.isfinite(pred).all()


# ---------------------------------------------------------------------------------------- errors
def test_bad_stacks_and_options_are_config_errors():
    merger = WuMerger(width=WIDTH)
    with pytest.raises(ConfigError, match="multiples of 8"):
        merger(_stack(size=36))
    with pytest.raises(ConfigError, match="at least 16"):
        merger(_stack(size=8))
    with pytest.raises(ConfigError, match="multiples of 8"):
        merger.objective(_stack(size=20), {"hdr": torch.rand(2, 3, 20, 20)})
    with pytest.raises(ConfigError, match="exactly 3"):
        merger(_stack(ev=(-2.0, 2.0)))
    with pytest.raises(ConfigError, match=r"batch\['hdr'\]"):
        merger.objective(_stack(), {})
    with pytest.raises(ConfigError, match=r"\[B, 3, 3, H, W\]"):
        merger.net(torch.rand(1, 2, 3, 16, 16), torch.rand(1, 2, 3, 16, 16))
    with pytest.raises(ConfigError, match="width"):
        WuMerger(width=0.0)
    with pytest.raises(ConfigError, match="num_res_blocks"):
        WuMerger(num_res_blocks=-1)
    with pytest.raises(ConfigError, match="select_ev"):
        WuMerger(select_ev=[-2.0, 2.0])
