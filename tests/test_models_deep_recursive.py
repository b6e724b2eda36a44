"""Deep Recursive HDRI networks: official parameter counts, activations, re-quantisation, the
recursive stack contract, the losses on closed-form cases, and the generator inside TwoStage."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hdrlab.data import ProceduralDataModule
from hdrlab.errors import ConfigError
from hdrlab.losses.deep_recursive import (
    DEEP_RECURSIVE_FAKE_LABEL,
    DEEP_RECURSIVE_GAN_WEIGHT,
    DEEP_RECURSIVE_REAL_LABEL,
    DeepRecursiveLoss,
    l1_content_loss,
    lsgan_loss,
)
from hdrlab.methods import TwoStage
from hdrlab.models.generators import StackGenerator
from hdrlab.models.generators.deep_recursive import (
    DEEP_RECURSIVE_DEFAULT_EV,
    DeepRecursiveGenerator,
    DeepRecursiveUNet,
    MirroredPReLU,
    PatchDiscriminator,
    box_resize,
    requantize,
)
from hdrlab.models.mergers import DebevecMerger
from hdrlab.stack import ExposureStack

TINY = 0.125

pytestmark = pytest.mark.usefixtures("single_thread")


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------- architecture


def test_parameter_counts_width1_official() -> None:
    with torch.device("meta"):
        up, down = DeepRecursiveUNet(direction="up"), DeepRecursiveUNet(direction="down")
        disc = PatchDiscriminator()
        gen = DeepRecursiveGenerator()
    assert _trainable(up) == 12_414_194 and _trainable(down) == 12_414_194
    assert _trainable(disc) == 6_965_441
    assert _trainable(gen) == 2 * 12_414_194


def test_layer_facts_of_the_official_code() -> None:
    net = DeepRecursiveUNet(direction="up", width=TINY)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # e1 has a bias, every other generator conv none; 4x4 stride 2 encoder, 3x3 stride 1 decoder + head
    assert [c.bias is not None for c in convs] == [True] + [False] * 10
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs[:5])
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs[5:])
    assert convs[-1].in_channels == 6 and convs[-1].out_channels == 3
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 10  # 5 encoder + 5 decoder blocks
    down = DeepRecursiveUNet(direction="down", width=TINY)
    assert sum(isinstance(m, MirroredPReLU) for m in down.modules()) == 10
    assert not any(isinstance(m, nn.PReLU) for m in down.modules())
    # batch statistics at inference (official: the test code runs the nets in train mode)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 9 and all(not bn.track_running_stats and bn.affine for bn in bns)
    disc = PatchDiscriminator(width=TINY)
    dconvs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None for c in dconvs) and [c.stride[0] for c in dconvs] == [2, 2, 2, 2, 1, 1]
    assert isinstance(disc.model[-1], nn.Sigmoid)
    with pytest.raises(ConfigError, match="direction"):
        DeepRecursiveUNet(direction="sideways")


def test_official_initialisation() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = DeepRecursiveUNet(width=0.5)
    conv = net.encoders[3][0].weight
    bn = net.encoders[3][1]
    conv = conv.detach()
    assert abs(float(conv.std()) - 0.02) < 0.002 and abs(float(conv.mean())) < 0.002
    assert abs(float(bn.weight.mean()) - 1.0) < 0.01 and float(bn.bias.abs().max()) == 0.0
    assert float(net.encoders[0][0].bias.abs().max()) == 0.0
    assert all(float(m.weight) == 0.25 for m in net.modules() if isinstance(m, nn.PReLU))


def test_mirrored_prelu_closed_form() -> None:
    act = MirroredPReLU(init=0.25)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert torch.equal(act(x), torch.tensor([-2.0, -0.5, 0.0, 0.125, 0.5]))
    assert torch.equal(nn.PReLU(init=0.25)(x), torch.tensor([-0.5, -0.125, 0.0, 0.5, 2.0]))


def test_unet_and_discriminator_shapes() -> None:
    net = DeepRecursiveUNet(width=TINY)
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    y = net(x)
    assert y.shape == x.shape and float(y.abs().max()) < 1.0
    disc = PatchDiscriminator(width=TINY)
    scores = disc(y, x)
    assert scores.shape == (2, 1, 64 // 16 - 2, 96 // 16 - 2)
    assert 0.0 < float(scores.min()) and float(scores.max()) < 1.0
    with pytest.raises(ConfigError, match="multiples of 32"):
        net(torch.rand(1, 3, 40, 64))


def test_dropout_is_on_at_inference_like_the_official_code() -> None:
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    official = DeepRecursiveUNet(width=TINY).eval()
    with torch.no_grad():
        assert not torch.equal(official(x), official(x))  # stochastic at test, as released
    quiet = DeepRecursiveUNet(width=TINY, dropout_at_inference=False).eval()
    with torch.no_grad():
        assert torch.equal(quiet(x), quiet(x))
    # standard BatchNorm on request: running statistics, used in eval mode
    running = DeepRecursiveUNet(width=TINY, batch_statistics=False)
    assert all(m.track_running_stats for m in running.modules() if isinstance(m, nn.BatchNorm2d))


# ---------------------------------------------------------------- between recursive steps


def test_requantize_truncates_like_to_pil_image_and_is_straight_through() -> None:
    x = torch.tensor([-0.2, 0.25, 0.5, 254.9 / 255, 1.3], requires_grad=True)
    q = requantize(x)
    assert torch.allclose(q * 255, torch.tensor([0.0, 63.0, 127.0, 254.0, 255.0]))  # floor(255 x)
    assert torch.allclose(requantize(x, mode="round") * 255, torch.tensor([0.0, 64.0, 128.0, 255.0, 255.0]))
    assert torch.equal(requantize(x, mode="none"), x.detach().clamp(0, 1))
    q.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))  # identity inside [0, 1]
    with pytest.raises(ConfigError, match="requantize"):
        requantize(x, mode="dither")


def test_box_resize_is_identity_at_size_and_averages_blocks() -> None:
    x = torch.rand(1, 3, 8, 8)
    assert box_resize(x, (8, 8)) is x
    assert torch.allclose(box_resize(x, (4, 4)), nn.functional.avg_pool2d(x, 2))


# ---------------------------------------------------------------- generator contract


def test_generator_stack_contract() -> None:
    gen = DeepRecursiveGenerator(width=TINY)
    assert isinstance(gen, StackGenerator) and gen.stride == 32
    assert gen.ev == (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0) == tuple(sorted((*DEEP_RECURSIVE_DEFAULT_EV, 0.0)))
    ldr = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        stack = gen.eval()(ldr)
    assert isinstance(stack, ExposureStack) and stack.images.shape == (2, 7, 3, 64, 64)
    assert torch.equal(stack.ev, torch.tensor([[-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]] * 2))
    assert stack.reference == 3 and torch.equal(stack.images[:, 3], ldr)
    generated = torch.cat([stack.images[:, :3], stack.images[:, 4:]], dim=1)
    assert 0.0 <= float(generated.min()) and float(generated.max()) <= 1.0
    codes = generated * 255
    assert torch.allclose(codes, codes.round(), atol=1e-3)  # 8-bit images, as the PNGs between steps


def test_recursion_reuses_the_previous_step() -> None:
    gen = DeepRecursiveGenerator(width=TINY, ev=[-2, 1, 3], dropout_at_inference=False).eval()
    ldr = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        stack = gen(ldr)
        up1 = gen.step(ldr, up=True)
        up3 = gen.step(gen.step(up1, up=True), up=True)
        down2 = gen.step(gen.step(ldr, up=False), up=False)
    assert stack.ev.tolist() == [[-2.0, 0.0, 1.0, 3.0]]
    assert torch.allclose(stack.images[:, 0], down2) and torch.allclose(stack.images[:, 2], up1)
    assert torch.allclose(stack.images[:, 3], up3)
    assert torch.allclose(gen.generate(ldr, (-2.0,)), down2[:, None])  # one direction only


def test_generator_sizes_ev_checks_and_working_size() -> None:
    gen = DeepRecursiveGenerator(width=TINY, ev=[-1, 1]).eval()
    with torch.no_grad():
        stack = gen(torch.rand(1, 3, 40, 72))
    assert stack.images.shape == (1, 3, 3, 40, 72)
    with pytest.raises(ConfigError, match="whole number"):
        DeepRecursiveGenerator(width=TINY, ev=[-1.5, 1])
    with pytest.raises(ConfigError, match="whole number"):
        gen(torch.rand(1, 3, 64, 64), ev=[0.5])
    half = DeepRecursiveGenerator(width=TINY, ev=[-1, 1, 2], step_ev=0.5)
    assert half.steps_for((-1.0, 1.0, 2.0)) == {-1.0: -2, 1.0: 2, 2.0: 4}
    with pytest.raises(ConfigError, match="working_size"):
        DeepRecursiveGenerator(width=TINY, working_size=100)
    resized = DeepRecursiveGenerator(width=TINY, ev=[1], working_size=64).eval()
    with torch.no_grad():
        stack = resized(torch.rand(1, 3, 128, 96))
    assert stack.images.shape == (1, 2, 3, 128, 96)
    assert 0.0 <= float(stack.images.min()) and float(stack.images.max()) <= 1.0


def test_gradients_reach_both_generators_through_the_recursion() -> None:
    gen = DeepRecursiveGenerator(width=TINY, ev=[-3, 3])
    ldr = torch.rand(2, 3, 64, 64)
    stack = gen(ldr)
    stack.images[:, 0].mean().backward(retain_graph=True)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in gen.up.parameters())
    first_down = gen.down.encoders[0][0].weight.grad.clone()
    assert torch.isfinite(first_down).all() and float(first_down.abs().sum()) > 0
    stack.images[:, -1].mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gen.up.parameters())


# ---------------------------------------------------------------- losses


def test_lsgan_and_l1_closed_form() -> None:
    scores = torch.full((2, 1, 3, 3), 0.5)
    assert math.isclose(float(lsgan_loss(scores, 0.9)), 0.16, rel_tol=1e-6)
    assert math.isclose(float(lsgan_loss(scores, 0.1)), 0.16, rel_tol=1e-6)
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), -0.5)
    assert math.isclose(float(l1_content_loss(a, b)), 0.5)


def test_official_loss_constants_and_terms() -> None:
    assert (DEEP_RECURSIVE_GAN_WEIGHT, DEEP_RECURSIVE_REAL_LABEL, DEEP_RECURSIVE_FAKE_LABEL) == (0.01, 0.9, 0.1)
    loss = DeepRecursiveLoss()
    real, fake = torch.full((1, 1, 2, 2), 0.9), torch.full((1, 1, 2, 2), 0.1)
    assert float(loss.discriminator(real, fake)) == 0.0  # perfect smoothed scores
    # D(real) = 0.5, D(fake) = 0.3: 0.5 * 0.16 + 0.5 * 0.04
    assert math.isclose(float(loss.discriminator(real - 0.4, fake + 0.2)), 0.1, rel_tol=1e-6)
    pred, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.2)
    pre = loss.generator(pred, target)
    assert set(pre) == {"total", "l1"} and math.isclose(float(pre["total"]), 0.2, rel_tol=1e-6)
    adv = loss.generator(pred, target, torch.full((1, 1, 2, 2), 0.4))
    assert math.isclose(float(adv["gan"]), 0.01 * 0.25, rel_tol=1e-5)
    assert math.isclose(float(adv["total"]), 0.2 + 0.0025, rel_tol=1e-5)
    with pytest.raises(ConfigError, match="real_label"):
        DeepRecursiveLoss(real_label=1.5)


# ---------------------------------------------------------------- composite


def test_generator_trains_inside_two_stage_with_debevec() -> None:
    dm = ProceduralDataModule(num_train_scenes=2, num_val_scenes=1, patch_size=64, batch_size=2, flips=False, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    method = TwoStage(generator=DeepRecursiveGenerator(width=TINY), merger=DebevecMerger(crf="known"),
                      mode="freeze_merger")
    assert method.stride == 32
    optimizer = method.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    before = [p.detach().clone() for p in method.generator.parameters()]
    loss, terms = method.compute_loss(batch)
    assert torch.isfinite(loss) and terms
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad for p in method.generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, method.generator.parameters()))
    method.eval()
    with torch.no_grad():
        pred = method.predict_image(batch)
    assert pred.shape == batch["hdr"].shape and torch.isfinite(pred).all() and float(pred.min()) >= 0.0
