"""The shared frame of the learned three-exposure mergers: input mapping, scale conventions, the
objective's target, the ``nearest`` exposure selection and the bracket-merger method (a toy merger)."""

from __future__ import annotations

import pytest
import torch

from hdrlab.data.batch import example_bracket
from hdrlab.errors import ConfigError
from hdrlab.methods.bracket_merger import BracketMergerMethod
from hdrlab.methods.two_stage import generation_ev, resolve_select_rule
from hdrlab.models.mergers.triplet import TripletMerger, center_crop, gamma_inputs, nearest_ev
from hdrlab.stack import ExposureStack


class WeightedAverage(TripletMerger):
    """Kalantari-WE-like toy: one 1x1 conv predicts 9 sigmoid weights over the three H_i."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conv = torch.nn.Conv2d(18, 9, 1)

    def forward_net(self, ldr, hdr):
        b, n, c, h, w = ldr.shape
        alpha = torch.sigmoid(self.conv(torch.cat([ldr, hdr], 1 + 0).reshape(b, 2 * n * c, h, w)))
        alpha = alpha.view(b, n, c, h, w)
        return (alpha * hdr).sum(1) / (alpha.sum(1) + 1e-6)

    def loss(self, pred, target):
        value = (self.mu_law(pred) - self.mu_law(target)).square().mean()
        return value, {"l2_mu": value}

    def mu_law(self, x):
        return torch.log1p(self.mu * x) / torch.log1p(torch.tensor(self.mu))


class ToyMethod(BracketMergerMethod):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.merger = WeightedAverage()


def _bracket(hdr: torch.Tensor, ev=(-2.0, 0.0, 2.0)) -> ExposureStack:
    images, evs = example_bracket(hdr, ev)
    return ExposureStack(images=images, ev=evs, reference=len(ev) // 2)


def test_gamma_inputs_follow_the_official_time_convention() -> None:
    stack = _bracket(torch.rand(1, 3, 8, 8) * 0.9)
    ldr, hdr = gamma_inputs(stack)
    assert torch.equal(ldr, stack.images)
    # t = 2 ** (ev - ev_min) = 1, 4, 16: the darkest image has t = 1
    for i, t in enumerate((1.0, 4.0, 16.0)):
        assert torch.allclose(hdr[:, i], stack.images[:, i] ** 2.2 / t)


def test_merge_is_relative_to_the_reference_and_objective_target_to_the_darkest() -> None:
    torch.manual_seed(0)
    radiance = torch.rand(2, 3, 16, 16) * 3.0  # relative to the ev-0 exposure
    stack = _bracket(radiance)
    merger = WeightedAverage()
    out = merger(stack)
    net = merger.forward_net(*gamma_inputs(stack))
    assert torch.allclose(out, net * 4.0)  # 2 ** (ev_ref - ev_min) = 2 ** 2
    target = merger.network_target(stack, radiance)
    assert torch.allclose(target, (radiance / 4.0).clamp(0, 1))
    # an exact average of the linearised exposures recovers unclipped radiance on the reference scale
    ldr, hdr = gamma_inputs(stack)
    mean = hdr[:, 0] * 4.0
    unclipped = radiance * 4.0 < 1.0
    assert torch.allclose(mean[unclipped], radiance[unclipped], rtol=0.05, atol=2e-3)


def test_objective_needs_ground_truth_and_crops_to_the_output() -> None:
    merger = WeightedAverage()
    stack = _bracket(torch.rand(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="ground truth"):
        merger.objective(stack, {})
    loss, terms = merger.objective(stack, {"hdr": torch.rand(1, 3, 8, 8)})
    assert torch.isfinite(loss) and set(terms) == {"l2_mu"}
    assert center_crop(torch.arange(36.0).view(1, 6, 6), (2, 2)).flatten().tolist() == [14.0, 15.0, 20.0, 21.0]


def test_arity_and_select_ev_are_checked() -> None:
    merger = WeightedAverage()
    with pytest.raises(ConfigError, match="exactly 3"):
        merger(_bracket(torch.rand(1, 3, 8, 8), ev=(-2.0, 2.0)))
    with pytest.raises(ConfigError, match="three distinct"):
        WeightedAverage(select_ev=(0.0, 0.0, 2.0))


def test_nearest_selection_for_generated_stacks() -> None:
    assert nearest_ev([-3, -2, -1, 0, 1, 2, 3], (-2, 0, 2)) == (-2.0, 0.0, 2.0)
    assert nearest_ev([-4, -1, 0, 1, 4], (-2, 0, 2)) == (-1.0, 0.0, 1.0)
    assert nearest_ev([-3.0, 0.0, 3.0], (-2, 0, 2)) == (-3.0, 0.0, 3.0)
    with pytest.raises(ConfigError, match="not distinct"):
        nearest_ev([0.0, 3.0], (-2, 0, 2))
    merger = WeightedAverage(select_ev=(-3.0, 0.0, 3.0))
    assert resolve_select_rule("auto", merger) == "nearest"
    assert generation_ev([-3, -2, -1, 1, 2, 3], "nearest", None, merger.preferred_ev) == (-3.0, 0.0, 3.0)
    assert generation_ev([-3, -2, -1, 1, 2, 3], "nearest", [-1, 0, 1]) == (-1.0, 0.0, 1.0)


def test_bracket_method_trains_on_the_batch_bracket_and_predicts_on_the_input_scale() -> None:
    torch.manual_seed(0)
    method = ToyMethod(metrics=("psnr_mu",))
    batch = method.example_batch(batch_size=2, height=16, width=16)
    loss, terms = method.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and method.merger.conv.weight.grad.abs().sum() > 0
    pred = method.predict_image(batch)
    # the reference is the ev-0 member: prediction = merge (reference-relative) on the hdr scale
    assert torch.allclose(pred, method.merger(method.stack(batch)))
    wide = dict(batch)
    wide["stack"], wide["ev"] = example_bracket(batch["hdr"], (-4.0, -2.0, 0.0, 2.0, 4.0))
    assert method.stack(wide).ev[0].tolist() == [-2.0, 0.0, 2.0]
    with pytest.raises(ConfigError, match="bracket_ev"):
        method.compute_loss({k: v for k, v in batch.items() if k not in ("stack", "ev")})


def test_two_stage_auto_mode_trains_what_can_be_trained() -> None:
    from hdrlab.methods.two_stage import TwoStage
    from hdrlab.models.generators import Le2023Generator
    from hdrlab.models.mergers import DebevecMerger

    generator = Le2023Generator(width=0.125, ev=[-2.0, 2.0], levels=3)
    learned = TwoStage(generator=generator, merger=WeightedAverage(), mode="auto", metrics=("psnr_mu",))
    assert learned.mode == "joint" and learned.generation_ev == (-2.0, 0.0, 2.0)
    classical = TwoStage(generator=generator, merger=DebevecMerger(crf="known"), mode="auto", metrics=("psnr_mu",))
    assert classical.mode == "freeze_merger"


def test_paper_losses_take_the_ablation_domain_in_place_of_the_mu_law() -> None:
    from hdrlab.losses.ahdrnet import ahdrnet_loss
    from hdrlab.losses.domains import log_domain, mu_law_domain
    from hdrlab.losses.kalantari import kalantari_loss
    from hdrlab.losses.wu import wu_loss

    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    mse = (pred - target).square().mean()
    assert torch.allclose(kalantari_loss(pred, target, domain="linear"), mse)
    assert torch.allclose(kalantari_loss(pred, target), (mu_law_domain(pred) - mu_law_domain(target)).square().mean())
    assert torch.allclose(wu_loss(pred, target, domain="linear"), 4.0 * mse)
    assert torch.allclose(wu_loss(pred, target), 4.0 * (mu_law_domain(pred) - mu_law_domain(target)).square().mean(), atol=1e-6)
    assert torch.allclose(ahdrnet_loss(pred, target, domain="log"), (log_domain(pred) - log_domain(target)).abs().mean())
    with pytest.raises(ConfigError, match="loss_domain"):
        WeightedAverage(loss_domain="gamma")
    merger = WeightedAverage(loss_domain="pu21")
    assert merger.term_domain == "pu21" and WeightedAverage().term_domain == "mu"
