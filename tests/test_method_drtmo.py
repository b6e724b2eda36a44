"""DrTMO objective (masked L1 over 8 slots) and DrTMOMethod: rendered slot targets, official optimiser,
truncated merge, overfit gain and gradient reach.

The experiment file (``experiments/drtmo.yaml``) is checked end to end (``hdrlab info --json``, a
``fast_dev_run`` fit with the tiny override through ``hdrlab.cli.build_cli``, the memory estimator)
by ``tests/test_experiments.py -k drtmo``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hdrlab.camera import synthesize_stack
from hdrlab.data.batch import batch_crf
from hdrlab.errors import ConfigError
from hdrlab.losses.drtmo import DrTMOLoss, masked_slot_l1, slot_mask
from hdrlab.methods.drtmo import DOWN_SLOT_EV, UP_SLOT_EV, DrTMOMethod
from hdrlab.models.mergers import DebevecMerger
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.overfit import fixed_batch, overfit  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_method(**kwargs) -> DrTMOMethod:
    kwargs.setdefault("metrics", ("psnr_mu",))
    return DrTMOMethod(width=0.125, levels=6, **kwargs)


# --------------------------------------------------------------------------- loss
def _official_lossmask(dummy_len: int) -> torch.Tensor:
    """The official ``lossmask_list[dummy_len]`` (train_network.py) per slot: slot 0 always 1, then
    for j = 7 .. 1 a slot that is 1 when dummy_len < j."""
    return torch.tensor([1.0] + [1.0 if dummy_len < j else 0.0 for j in range(7, 0, -1)])


def test_slot_mask_matches_the_official_mask() -> None:
    for dummy_len in range(8):
        assert torch.equal(slot_mask(8 - dummy_len, batch=1)[0], _official_lossmask(dummy_len))
    assert slot_mask(torch.tensor([8, 3])).sum(1).tolist() == [8.0, 3.0]
    with pytest.raises(ConfigError, match="0..8"):
        slot_mask(torch.tensor([9]))


def test_masked_l1_closed_form_counts_masked_slots_in_the_denominator() -> None:
    """pred 0.5 everywhere, target 0.25 on 3 valid slots and 0 on 5 padded ones:
    L = (3 * |0.5 - 0.25| + 5 * |0 - 0|) / 8 = 0.09375."""
    pred = torch.full((1, 8, 3, 4, 4), 0.5)
    target = torch.zeros_like(pred)
    target[:, :3] = 0.25
    assert torch.isclose(masked_slot_l1(pred, target, slot_mask(3, batch=1)), torch.tensor(0.09375))
    assert torch.isclose(masked_slot_l1(pred, target), torch.tensor((3 * 0.25 + 5 * 0.5) / 8))  # unmasked
    terms = DrTMOLoss()(up_pred=pred, up_target=target, down_pred=pred, down_target=pred,
                        up_mask=slot_mask(3, batch=1))
    assert torch.isclose(terms["total"], terms["up_l1"]) and float(terms["down_l1"]) == 0.0
    with pytest.raises(ConfigError, match="one shape"):
        masked_slot_l1(pred, target[:, :4])


# --------------------------------------------------------------------------- method
@pytest.fixture(scope="module")
def batch() -> dict:
    return fixed_batch(scene_seed=0, patch_size=64)


def test_slot_targets_are_the_camera_pipelines_bracket(batch) -> None:
    method = tiny_method()
    up, down = method.slot_targets(batch)
    assert UP_SLOT_EV == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0) and DOWN_SLOT_EV == tuple(-v for v in UP_SLOT_EV)
    bracket = synthesize_stack(batch["hdr"], [*DOWN_SLOT_EV, *UP_SLOT_EV], batch_crf(batch), bits=8)
    assert torch.equal(up, bracket.images[:, 8:])  # increasing exposure
    assert torch.equal(down, bracket.images[:, :8].flip(1))  # decreasing exposure
    loss, terms = method.compute_loss(batch)
    assert torch.isfinite(loss) and set(terms) == {"up_l1", "down_l1"}
    assert torch.isclose(loss, terms["up_l1"] + terms["down_l1"])


def test_official_optimizer_and_subnetworks() -> None:
    method = tiny_method()
    optimizer = method.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)  # no schedule (official)
    group = optimizer.param_groups[0]
    assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999) and group["eps"] == 1e-8
    assert list(method.subnetworks()) == ["up", "down"] and method.output_domain == "linear"


def test_predict_merges_each_images_kept_run(batch) -> None:
    method = tiny_method().eval()
    with torch.no_grad():
        pred = method.predict_image(batch)
        stack = method.predict_stack(batch)
    assert pred.shape == (1, 3, 64, 64) and bool(torch.isfinite(pred).all()) and float(pred.min()) >= 0.0
    assert stack.images.shape[1] == 17 and stack.reference == 8
    assert torch.equal(stack.images * 255.0, torch.round(stack.images * 255.0))  # official 8-bit codes
    (first, last), = method.kept_runs(stack)
    if last > first:
        expected = method.merger(stack.select(list(range(first, last + 1)), reference=8 - first))
    else:  # an untrained model may invert right next to the input: the input alone is merged
        expected = method.merger(stack.select([8, 8], reference=0))
    assert torch.allclose(pred, expected)


def test_truncation_drops_inverted_members_before_merging() -> None:
    """A hand-made stack: up_3 darker than up_2 by 100 levels -> up_3.. are dropped."""
    method = tiny_method()
    ev = torch.arange(-8, 9, dtype=torch.float32).mul(0.5).unsqueeze(0)
    levels = torch.linspace(10, 250, 17).round() / 255.0
    images = levels.view(1, 17, 1, 1, 1).expand(2, 17, 3, 8, 8).clone()
    images[0, 11] = images[0, 10] - 100 / 255.0
    crf = batch_crf(tiny_method().example_batch(batch_size=2, height=8, width=8))
    stack = ExposureStack(images=images, ev=ev.expand(2, -1), reference=8, crf=crf)
    assert method.kept_runs(stack) == [(0, 10), (0, 16)]
    merged = method.merge(stack)
    row = ExposureStack(images=images[:1], ev=ev, reference=8, crf=crf)
    crf0 = type(crf)(forward_lut=crf.forward_lut[:1], inverse_lut=crf.inverse_lut[:1])
    row.crf = crf0
    assert torch.allclose(merged[:1], method.merger(row.select(list(range(0, 11)), reference=8)))
    # every neighbour inverted: the input alone is merged
    images[1, 7] = 1.0
    images[1, 9] = 0.0
    stack = ExposureStack(images=images, ev=ev.expand(2, -1), reference=8, crf=crf)
    assert method.kept_runs(stack)[1] == (8, 8)
    single = method.merge(stack)[1]
    assert bool(torch.isfinite(single).all())
    untruncated = tiny_method(truncate=False)
    assert untruncated.kept_runs(stack) == [(0, 16), (0, 16)]


def test_fixed_layout_merger_is_refused_with_truncation() -> None:
    class Triple(StackMerger):
        output_domain = "linear"
        accepts = StackArity(exactly=3, reference="middle")

        def merge(self, stack):  # pragma: no cover - never called
            return stack.images.mean(1)

    with pytest.raises(ConfigError, match="truncate: false"):
        tiny_method(merger=Triple())
    tiny_method(merger=Triple(), truncate=False, ev=(-1.0, 1.0))
    assert isinstance(tiny_method().merger, DebevecMerger)


# --------------------------------------------------------------------------- overfit and gradients
def _stack_psnr(method: DrTMOMethod, batch: dict) -> float:
    """Display PSNR (dB) of the 16 generated exposures against the true 8-bit bracket."""
    up_t, down_t = method.slot_targets(batch)
    up, down = method.generator.slots(batch["ldr"], up=True), method.generator.slots(batch["ldr"], up=False)
    mse = torch.cat([(up - up_t).square().flatten(), (down - down_t).square().flatten()]).mean()
    return float(10.0 * torch.log10(1.0 / mse))


def test_overfit_one_scene_gains_10db_stack_psnr(batch) -> None:
    """Measured (width 1/8, levels 6, 64 px scene seed 0, 12% clipped, eval mode = batch statistics as
    the official inference): official lr 2e-4 gives 8.48 -> 18.41 dB (+9.93) in 300 steps; the test
    uses lr 1e-3 (a test-only setting): 8.48 -> 17.60 dB at 50 steps, 19.62 dB (+11.1) at 100."""
    torch.manual_seed(0)
    method = tiny_method(lr=1e-3)
    result = overfit(method, batch, steps=300, score=_stack_psnr, eval_every=25, stop_gain=10.0)
    print(f"DrTMO stack PSNR overfit: {result}")
    assert result.gain >= 10.0, str(result)


def test_gradients_reach_every_parameter() -> None:
    """Finite gradients everywhere on K = 2 batches with clipped pixels, non-zero on every parameter except
    the biases of convolutions feeding a training-mode BatchNorm (the batch mean removes a per-channel
    shift, so their gradient is zero up to rounding; kept because the official layers have them)."""
    torch.manual_seed(0)
    method = tiny_method().train()
    batches = [fixed_batch(scene_seed=s, patch_size=64, batch_size=2) for s in (1, 3)]
    params = {n: p for n, p in method.named_parameters() if p.requires_grad}
    exempt = {f"generator.{net}.convs.{i}.bias" for net in ("up", "down") for i in range(1, 6)}
    exempt |= {f"generator.{net}.deconvs.{i}.bias" for net in ("up", "down") for i in range(5)}
    assert exempt <= set(params)
    nonzero = dict.fromkeys(params, False)
    for b in batches:
        assert float(b["clip_mask"].sum()) > 0
        method.zero_grad()
        loss, _ = method.compute_loss(b)
        loss.backward()
        for name, p in params.items():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            nonzero[name] |= bool(p.grad.abs().sum() > 0)
            if name in exempt:
                assert float(p.grad.abs().max()) < 1e-4, name
    assert all(nonzero[n] for n in params if n not in exempt), [n for n in params if n not in exempt and not nonzero[n]]
