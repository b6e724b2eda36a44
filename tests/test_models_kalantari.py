"""Kalantari & Ramamoorthi 2017: the network and merger (:mod:`hdrlab.models.mergers.kalantari`), the
loss (:mod:`hdrlab.losses.kalantari`) and the flow alignment (:mod:`hdrlab.models.mergers.alignment`)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError
from hdrlab.losses.kalantari import kalantari_loss
from hdrlab.methods.two_stage import TwoStage
from hdrlab.models.generators import Le2023Generator
from hdrlab.models.mergers.alignment import align_to_reference, estimate_flow, reexpose, warp_with_flow
from hdrlab.models.mergers.kalantari import KalantariMerger, KalantariNet, kalantari_blend
from hdrlab.models.mergers.triplet import gamma_inputs
from hdrlab.stack import ExposureStack

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 0.1


def _stack(batch: int = 2, size: int = 40, ev=(-2.0, 0.0, 2.0), seed: int = 0) -> ExposureStack:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, len(ev), 3, size, size, generator=g)
    return ExposureStack(images=images, ev=torch.tensor([list(ev)] * batch), reference=len(ev) // 2)


def _texture(size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random RGB texture ``[1, 3, size, size]`` in about [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False).clamp(0.0, 1.0)


def _zero_last_conv(merger: KalantariMerger) -> None:
    """Every sigmoid output becomes 0.5."""
    with torch.no_grad():
        merger.net[6].weight.zero_()
        merger.net[6].bias.zero_()


# ---------------------------------------------------------------------------------------- network
@pytest.mark.parametrize(("variant", "count"), [("direct", 383_603), ("we", 383_909), ("wie", 384_368)])
def test_parameter_counts_width1_official(variant: str, count: int) -> None:
    with FakeTensorMode():
        merger = KalantariMerger(variant=variant)
    assert sum(p.numel() for p in merger.parameters()) == count
    assert [m.kernel_size for m in merger.net if isinstance(m, torch.nn.Conv2d)] == [(7, 7), (5, 5), (3, 3), (1, 1)]


def test_official_init_is_uniform_in_the_fan_in_bound_with_zero_biases():
    torch.manual_seed(0)
    net = KalantariNet(out_channels=9)
    for conv in (m for m in net if isinstance(m, torch.nn.Conv2d)):
        kh, kw = conv.kernel_size
        bound = math.sqrt(3.0 / (kh * kw * conv.in_channels))
        weight = conv.weight.detach()
        assert float(weight.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.95 * bound  # uniform, not a narrower law
        assert abs(float(weight.std()) - bound / math.sqrt(3.0)) < 0.1 * bound
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_valid_network_loses_6px_and_padding_keeps_the_interior_identical():
    torch.manual_seed(0)
    stack = _stack()
    valid = KalantariMerger(width=WIDTH, padding="none")
    padded = KalantariMerger(width=WIDTH, padding="replicate")
    padded.load_state_dict(valid.state_dict())
    with torch.no_grad():
        a, b = valid(stack), padded(stack)
    assert a.shape == (2, 3, 28, 28) and b.shape == (2, 3, 40, 40)
    assert torch.allclose(b[..., 6:-6, 6:-6], a, atol=1e-6)
    assert not valid.preserves_size and padded.preserves_size
    assert KalantariMerger(width=WIDTH, padding="reflect").preserves_size


def test_we_blend_closed_form_and_reference_scaling():
    """Constant weights 0.5: H_hat = 0.5 (H1 + H2 + H3) / (1.5 + 1e-6); merge() multiplies by 2^(ev_ref - ev_min) = 4."""
    stack = _stack()
    merger = KalantariMerger(width=WIDTH, padding="none")
    _zero_last_conv(merger)
    _, hdr = gamma_inputs(stack)
    expected = 0.5 * hdr.sum(1)[..., 6:-6, 6:-6] / (1.5 + 1e-6)
    with torch.no_grad():
        out = merger.forward_net(*gamma_inputs(stack))
        merged = merger(stack)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(merged, 4.0 * expected, atol=1e-5)
    w, x = torch.rand(1, 9, 2, 2), torch.rand(1, 9, 2, 2)
    manual = (w[:, 0:3] * x[:, 0:3] + w[:, 3:6] * x[:, 3:6] + w[:, 6:9] * x[:, 6:9]) / (w[:, 0:3] + w[:, 3:6] + w[:, 6:9] + 1e-6)
    assert torch.allclose(kalantari_blend(w, x), manual)


def test_direct_and_wie_outputs():
    stack = _stack()
    direct = KalantariMerger(variant="direct", width=WIDTH)
    wie = KalantariMerger(variant="wie", width=WIDTH)
    _zero_last_conv(direct)
    _zero_last_conv(wie)
    with torch.no_grad():
        d = direct.forward_net(*gamma_inputs(stack))
        w = wie.forward_net(*gamma_inputs(stack))
    assert torch.allclose(d, torch.full_like(d, 0.5))
    assert torch.allclose(w, torch.full_like(w, 0.75 / (1.5 + 1e-6)))  # refined images 0.5, weights 0.5
    assert wie.net[6].out_channels == 18 and direct.net[6].out_channels == 3


# ---------------------------------------------------------------------------------------- loss
def test_loss_closed_form_mean_and_sum():
    ones, zeros = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    assert torch.allclose(kalantari_loss(ones, zeros), torch.tensor(1.0))
    assert torch.allclose(kalantari_loss(ones, zeros, reduction="sum"), torch.tensor(96.0))
    x = torch.full((1, 3, 1, 1), 0.01)
    t = math.log1p(5000 * 0.01) / math.log1p(5000)
    assert math.isclose(float(kalantari_loss(x, zeros[:1, :, :1, :1])), t * t, rel_tol=1e-5)
    merger = KalantariMerger(width=WIDTH, padding="none", reduction="sum")
    value, terms = merger.loss(ones[..., :2, :2], zeros[..., :2, :2])
    assert float(value) == 24.0 and set(terms) == {"l2_mu"}


def test_objective_crops_and_maps_the_target():
    """The target is clip(hdr * 2^ev_min, 0, 1), centre-cropped to the valid output."""
    stack = _stack()
    merger = KalantariMerger(width=WIDTH, padding="none")
    hdr = torch.rand(2, 3, 40, 40) * 8
    loss, _ = merger.objective(stack, {"hdr": hdr})
    with torch.no_grad():
        pred = merger.forward_net(*gamma_inputs(stack))
    expected = kalantari_loss(pred, (hdr / 4).clamp(0, 1)[..., 6:-6, 6:-6])
    assert torch.allclose(loss, expected)


# ---------------------------------------------------------------------------------------- alignment
def _static_bracket(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Unclipped gamma-2.2 bracket of one static radiance (t = 1, 4, 16): exposure-normalised identical."""
    radiance = _texture(size).clamp(0.02, 1.0) / 16
    times = torch.tensor([[1.0, 4.0, 16.0]])
    images = torch.stack([(radiance * t) ** (1 / 2.2) for t in times[0]], dim=1)
    return images, times


def test_flow_alignment_of_identical_content_is_the_identity():
    images, times = _static_bracket()
    aligned, invalid = align_to_reference(images, times)
    assert float((aligned - images).abs().max()) < 1e-5
    assert not bool(invalid.any())
    assert float(estimate_flow(images[:, 1], images[:, 1]).abs().max()) < 1e-3


def test_flow_recovers_an_integer_shift_and_fills_the_border_with_the_reexposed_reference():
    big = _texture(160, seed=1)
    ref = big[..., 40:104, 40:104]
    src = big[..., 43:107, 38:102]  # src(y, x) = ref(y + 3, x - 2): ref(x) = src(x + f) with f = (2, -3)
    flow = estimate_flow(ref, src)
    assert abs(float(flow[0, 0].median()) - 2.0) < 0.25 and abs(float(flow[0, 1].median()) + 3.0) < 0.25
    warped, invalid = warp_with_flow(src, flow)
    assert float((warped - ref)[..., 8:-8, 8:-8].abs().mean()) < 0.01
    assert bool(invalid[0, 0, 0, 20]) and bool(invalid[0, 0, 20, -1])  # y - 3 leaves the top, x + 2 the right
    assert not bool(invalid[0, 0, 20, 20])
    # a bracket whose low image is shifted: its invalid pixels hold the reference re-exposed to t_low
    times = torch.tensor([[1.0, 1.0, 1.0]])
    images = torch.stack([src, ref, ref], dim=1)
    aligned, bad = align_to_reference(images, times)
    assert bool(bad[:, 0].any()) and not bool(bad[:, 1].any())
    filled = reexpose(ref, torch.tensor(1.0), torch.tensor(1.0))
    mask = bad[:, 0].expand_as(ref)
    assert torch.allclose(aligned[:, 0][mask], filled[mask])


def test_flow_merger_is_differentiable_in_the_images():
    images, times = _static_bracket(40)
    stack = ExposureStack(images=images.clone().requires_grad_(), ev=torch.log2(times) - 2.0, reference=1)
    merger = KalantariMerger(width=WIDTH, alignment="flow")
    loss, _ = merger.objective(stack, {"hdr": torch.rand(1, 3, 40, 40)})
    loss.backward()
    assert torch.isfinite(stack.images.grad).all() and float(stack.images.grad[:, 0].abs().sum()) > 0
    assert merger(stack).shape == (1, 3, 40, 40)


def test_flow_objective_replaces_the_label_where_the_needed_image_is_invalid():
    """Bright reference (>= 0.5) and a shifted low image: where low is invalid the label becomes the
    reference in HDR (L_ref^2.2 / t_ref, darkest exposure t = 1); elsewhere clip(hdr * 2^ev_min, 0, 1)."""
    big = 0.55 + 0.4 * _texture(160, seed=2)
    ref = big[..., 40:104, 40:104]
    shifted = big[..., 43:107, 38:102]
    t_low, t_ref, t_high = torch.tensor(1.0), torch.tensor(4.0), torch.tensor(16.0)
    images = torch.stack([reexpose(shifted, t_ref, t_low), ref, reexpose(ref, t_ref, t_high)], dim=1)
    stack = ExposureStack(images=images, ev=torch.tensor([[-2.0, 0.0, 2.0]]), reference=1)
    merger = KalantariMerger(width=WIDTH, alignment="flow")
    seen = {}

    def capture(pred, target):
        seen["target"] = target
        return pred.sum(), {}

    merger.loss = capture
    hdr = torch.full((1, 3, 64, 64), 2.0)
    merger.objective(stack, {"hdr": hdr})
    _, invalid = merger.align(stack)
    bad = invalid[:, 0].expand(1, 3, 64, 64)
    assert 0 < int(bad.sum()) < bad.numel() // 4
    assert torch.allclose(seen["target"][bad], (ref**2.2 / 4.0)[bad])
    assert torch.allclose(seen["target"][~bad], torch.full_like(seen["target"][~bad], 0.5))


# ---------------------------------------------------------------------------------------- composite and errors
def test_two_stage_accepts_the_padded_merger_and_refuses_the_valid_one():
    generator = Le2023Generator(width=0.125, ev=[-2.0, 2.0], levels=3)
    method = TwoStage(generator=generator, merger=KalantariMerger(width=WIDTH), mode="freeze_generator")
    assert method.merger_loss == "own" and tuple(method.generation_ev) == (-2.0, 0.0, 2.0)
    with pytest.raises(ConfigError, match="input's size"):
        TwoStage(generator=generator, merger=KalantariMerger(width=WIDTH, padding="none"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "wei"}, "variant"),
        ({"padding": "zeros"}, "padding"),
        ({"alignment": "liu"}, "alignment"),
        ({"reduction": "max"}, "reduction"),
        ({"width": 0.0}, "width"),
        ({"select_ev": [-2.0, 2.0]}, "select_ev"),
    ],
)
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        KalantariMerger(**kwargs)


def test_bad_stacks_are_config_errors():
    merger = KalantariMerger(width=WIDTH, padding="none")
    with pytest.raises(ConfigError, match="exactly 3"):
        merger(_stack(ev=(-2.0, 2.0)))
    with pytest.raises(ConfigError, match=">= 13"):
        merger(_stack(size=12))
    with pytest.raises(ConfigError, match="batch\\['hdr'\\]"):
        merger.objective(_stack(), {})
    with pytest.raises(ConfigError, match="differ in shape"):
        kalantari_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 5, 5))
    with pytest.raises(ConfigError, match=r"\[B, 3, 3, H, W\]"):
        align_to_reference(torch.rand(1, 2, 3, 8, 8), torch.ones(1, 2))
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = _stack()
        with pytest.raises(ConfigError, match="alignment='none'"):
            KalantariMerger(width=WIDTH, alignment="flow")(fake)
