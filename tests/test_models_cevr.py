"""CEVR (Chen et al., ICCV 2023) networks, stack generator and losses.

Reference parameter count, measured on the official code (github skchen1993/2023_CEVR at 582219d:
``core/HDR_model.py`` and ``core/decoder.py`` copied to /tmp/cevr_official/core/, ``timm`` stubbed
by an empty module -- it is imported but unused), with its released configuration::

    /work/main/.venv/bin/python /tmp/cevr_official/count.py
    # build_network(Namespace(model_name="CEVR_NormNoAffine_Maps", decode_name="mult_resizeUp_map",
    #     act="leaky_relu", mlp_num=3, pretrain="none", EV_info=1, init_weight=False,
    #     norm_type="GroupNorm", NormAffine=False))
    # -> 3,291,592 trainable parameters per network (B and D: 6,583,184);
    #    encoder1 38,976, encoder2 221,952, encoder3 1,476,864, neck 197,632,
    #    decoder3 891,394, decoder4 371,970, decoder5 92,672, conv_rgb 66, conv_mul 66

(``pretrain="none"`` only skips torchvision's download; the count is the same.) The same throw-away
script loaded the official random state dict into :class:`CEVRNet` (key renames only) and compared
outputs on a 2x3x64x48 batch with steps (1.5, -0.7) in eval mode: max |difference| 3.7e-8.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hdrlab.errors import ConfigError, WeightsMissingError
from hdrlab.losses.cevr import CEVR_LOSS_WEIGHTS, CEVRLoss, cevr_l1, cycle_prediction
from hdrlab.models.generators.base import StackGenerator
from hdrlab.models.generators.cevr import (
    CEVR_DEFAULT_EV,
    CEVR_VGG16_BN_FILE,
    CEVRGenerator,
    CEVRNet,
    cevr_channels,
)
from hdrlab.stack import ExposureStack

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = 0.125


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _ldr(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g)


# ---------------------------------------------------------------- architecture


def test_parameter_counts_width1_official() -> None:
    with torch.device("meta"):
        net = CEVRNet()
        gen = CEVRGenerator()
    assert _trainable(net.encoder[0:6]) == 38_976
    assert _trainable(net.encoder[6:13]) == 221_952
    assert _trainable(net.encoder[13:23]) == 1_476_864
    assert _trainable(net.neck) == 197_632
    assert [_trainable(d) for d in net.decoders] == [891_394, 371_970, 92_672]
    assert _trainable(net.conv_mul) == _trainable(net.conv_rgb) == 66
    assert _trainable(net) == 3_291_592
    assert _trainable(gen.increase) == _trainable(gen.decrease) == 3_291_592
    assert _trainable(gen) == 6_583_184


def test_width_scaling_keeps_groupnorm_channels_even() -> None:
    assert cevr_channels(64, 1.0) == 64 and cevr_channels(256, 1.0) == 256
    assert cevr_channels(64, TINY) == 8 and cevr_channels(64, 0.01) == 2 and cevr_channels(100, 0.03) == 4
    with pytest.raises(ConfigError, match="width"):
        cevr_channels(64, 0.0)
    with torch.device("meta"):
        small = CEVRNet(width=0.3)
    assert all(m.num_channels % 2 == 0 for m in small.modules() if isinstance(m, nn.GroupNorm))
    assert _trainable(small) < _trainable(CEVRNet(width=TINY)) * 10


def test_intensity_transform_identity_when_maps_are_one_and_zero() -> None:
    """``y = ((x a1 + b1) a2 + b2) a3 + b3``: with every alpha = 1 and beta = 0 the net is the identity."""
    net = CEVRNet(width=TINY).eval()
    convs = [(d.conv_mul, d.conv_rgb) for d in net.decoders[:2]] + [(net.conv_mul, net.conv_rgb)]
    with torch.no_grad():
        for mul, rgb in convs:
            for conv in (mul, rgb):
                conv.weight.zero_()
                conv.bias.zero_()
            mul.bias.fill_(1.0)
        x = _ldr()
        assert torch.allclose(net(x, torch.tensor([1.0, -2.0])), x, atol=1e-6)
        # alpha = 2 everywhere, beta = 0.1 at the last map only: y = 2 x + 0.1
        net.conv_mul.bias.fill_(2.0)
        net.conv_rgb.bias.fill_(0.1)
        assert torch.allclose(net(x, 0.5), 2 * x + 0.1, atol=1e-6)


def test_net_is_continuous_in_the_step_and_depends_on_it() -> None:
    net = CEVRNet(width=TINY).eval()
    x = _ldr(batch=1)
    with torch.no_grad():
        a, b, far = net(x, 0.7), net(x, 0.7 + 1e-4), net(x, 2.5)
        scalar, vector = net(x, 1.25), net(x, torch.tensor([1.25]))
    assert (a - b).abs().max() < 1e-3
    assert (a - far).abs().max() > 1e-4
    assert torch.equal(scalar, vector)
    with pytest.raises(ConfigError, match="divisible by 16"):
        net(torch.rand(1, 3, 24, 32), 1.0)


# ---------------------------------------------------------------- generator contract


def test_generator_default_and_continuous_ev_sets() -> None:
    gen = CEVRGenerator(width=TINY).eval()
    assert isinstance(gen, StackGenerator) and gen.stride == 16
    assert gen.file_options == ("pretrained_encoder",)
    x = _ldr()
    with torch.no_grad():
        stack = gen(x)
    assert isinstance(stack, ExposureStack)
    assert tuple(stack.images.shape) == (2, 13, 3, 32, 32)
    assert stack.ev[0].tolist() == sorted((*CEVR_DEFAULT_EV, 0.0)) and stack.reference == 6
    assert torch.equal(stack.images[:, 6], x)
    assert stack.images.min() >= 0.0 and stack.images.max() <= 1.0

    custom = CEVRGenerator(width=TINY, ev=[2, -1.5, 0.7, -3]).eval()
    with torch.no_grad():
        cs = custom(x)
        # each member is its network's clamped output at that continuous step
        direct_up = custom.increase(x, 0.7).clamp(0, 1)
        direct_down = custom.decrease(x, -1.5).clamp(0, 1)
        override = custom(x, ev=(0.25,))
    assert cs.ev[0].tolist() == pytest.approx([-3.0, -1.5, 0.0, 0.7, 2.0]) and cs.reference == 2
    assert torch.allclose(cs.images[:, 3], direct_up, atol=1e-6)
    assert torch.allclose(cs.images[:, 1], direct_down, atol=1e-6)
    assert override.ev[0].tolist() == pytest.approx([0.0, 0.25]) and override.reference == 0


def test_straight_through_clamp_keeps_values_and_passes_gradients() -> None:
    x = _ldr(batch=1)
    soft = CEVRGenerator(width=TINY, ev=(2.0,))
    hard = CEVRGenerator(width=TINY, ev=(2.0,), straight_through_clamp=False)
    hard.load_state_dict(soft.state_dict())
    raw = soft.expose(x, 2.0, up=True).detach()
    a, b = soft(x).images[:, 1], hard(x).images[:, 1]
    assert torch.equal(a, b) and torch.equal(a, raw.clamp(0, 1))
    a.sum().backward()
    b.sum().backward()
    grad_soft, grad_hard = soft.increase.conv_rgb.bias.grad, hard.increase.conv_rgb.bias.grad
    inside = float(((raw > 0) & (raw < 1)).sum())
    assert float(grad_soft) == pytest.approx(raw.numel(), rel=1e-5)  # d y / d beta_3 = 1 at every pixel
    assert float(grad_hard) == pytest.approx(inside, abs=1e-3)


def test_generator_pads_other_sizes_and_rejects_bad_input() -> None:
    gen = CEVRGenerator(width=TINY, ev=(-1.0, 1.0)).eval()
    odd = torch.rand(1, 3, 20, 37)
    with torch.no_grad():
        out = gen(odd)
        padded = gen(nn.functional.pad(odd, (0, 11, 0, 12), mode="replicate"))
    assert tuple(out.images.shape) == (1, 3, 3, 20, 37)
    assert torch.allclose(out.images, padded.images[..., :20, :37], atol=1e-6)
    with pytest.raises(ConfigError, match=r"\[B, 3, H, W\]"):
        gen(torch.rand(3, 32, 32))


def test_pretrained_encoder_is_a_local_checked_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsMissingError, match=CEVR_VGG16_BN_FILE):
        CEVRNet(width=TINY, pretrained_encoder=True)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / CEVR_VGG16_BN_FILE).write_bytes(b"not the official file")
    with pytest.raises(WeightsMissingError, match="sha256"):
        CEVRNet(width=TINY, pretrained_encoder=True)
    with pytest.raises(ConfigError, match="width=1"):
        CEVRNet(width=TINY).load_torchvision_vgg16_bn({})


def test_load_torchvision_vgg16_bn_features_into_the_encoder() -> None:
    from torchvision.models import vgg as tv_vgg

    features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=True)  # vgg16_bn().features layout
    state = {k: v for k, v in features.state_dict().items() if int(k.split(".")[0]) < 23}
    net = CEVRNet()
    net.load_torchvision_vgg16_bn(state)
    assert torch.equal(net.encoder[0].weight, features[0].weight)
    assert torch.equal(net.encoder[21].running_var, features[21].running_var)
    with pytest.raises(ConfigError, match="lacks"):
        net.load_torchvision_vgg16_bn({k: v for k, v in state.items() if not k.startswith("20.")})


# ---------------------------------------------------------------- losses


def test_l1_sum_and_mean_closed_form() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.full((2, 3, 4, 4), 0.25)
    assert float(cevr_l1(pred, target)) == pytest.approx(0.25 * 96)
    assert float(cevr_l1(pred, target, reduction="mean")) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="reduction"):
        cevr_l1(pred, target, reduction="none")


def test_cycle_prediction_is_two_half_steps() -> None:
    calls = []

    def exposure(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        calls.append(step.clone())
        return x * torch.exp2(step).view(-1, 1, 1, 1)

    x = torch.rand(2, 3, 4, 4)
    step = torch.tensor([2.0, -1.0])
    out = cycle_prediction(exposure, x, step)
    assert torch.allclose(out, exposure(x, step))  # exposure is a group: two halves = one step
    assert all(torch.equal(c, step / 2) for c in calls[:2])


def test_cevr_loss_weights_and_terms() -> None:
    assert CEVR_LOSS_WEIGHTS == {"l1": 1.0, "cycle": 0.1}
    target = torch.full((1, 3, 2, 2), 0.5)
    pred, cycle = torch.full_like(target, 0.25), torch.full_like(target, 1.0)
    loss = CEVRLoss()
    total, terms = loss(pred=pred, target=target, cycle=cycle)
    assert float(terms["l1"]) == pytest.approx(0.25 * 12) and float(terms["cycle"]) == pytest.approx(0.5 * 12)
    assert float(total) == pytest.approx(3.0 + 0.1 * 6.0)
    total_warm, terms_warm = loss(pred=pred, target=target)
    assert set(terms_warm) == {"l1"} and float(total_warm) == pytest.approx(3.0)
    mean_total, _ = CEVRLoss(reduction="mean", weights={"cycle": 1.0})(pred=pred, target=target, cycle=cycle)
    assert float(mean_total) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="unknown keys"):
        CEVRLoss(weights={"perceptual": 1.0})


def test_gradients_finite_through_both_networks() -> None:
    gen = CEVRGenerator(width=TINY).train()
    x = _ldr()
    loss = sum(cevr_l1(gen.expose(x, torch.tensor([s, s]), up=s > 0), x) for s in (1.5, -2.0))
    loss.backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum() > 0) for g in grads) == len(grads)
    assert math.isfinite(float(loss.detach()))


# ---------------------------------------------------------------- inside TwoStage


def test_trains_inside_two_stage_with_debevec() -> None:
    from hdrlab.data import ProceduralDataModule
    from hdrlab.methods import TwoStage
    from hdrlab.models.mergers import DebevecMerger

    dm = ProceduralDataModule(num_train_scenes=2, num_val_scenes=1, patch_size=32, batch_size=2, flips=False, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    method = TwoStage(generator=CEVRGenerator(width=TINY, ev=(-2.0, -0.5, 1.3)), merger=DebevecMerger(crf="known"),
                      mode="freeze_merger")
    assert method.stride == 16
    opt = method.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    loss, _ = method.compute_loss(batch)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad for n, p in method.generator.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # the D network's images are in range and every one of its parameters is reached through the
    # merge; at this seed the random B network's ev-1.3 image is all black, where Debevec's merge
    # has zero gradient (a property of the merger, not of the straight-through clamp)
    assert all(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("decrease."))
    before = [p.detach().clone() for p in method.generator.decrease.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, method.generator.decrease.parameters()))
    assert torch.isfinite(loss)
    with torch.no_grad():
        pred = method.eval().predict_image(batch)
    assert tuple(pred.shape) == (2, 3, 32, 32) and torch.isfinite(pred).all()
