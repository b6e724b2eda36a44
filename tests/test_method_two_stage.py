"""TwoStage(generator, merger) composite and the baselines: selection, domains, modes, checkpoints, YAMLs.

CPU-sized on purpose: Le2023 generators at width 1/8 with ``levels=4`` (inputs multiple of 8) on
32 px patches (the experiment YAMLs keep the official 7 levels; they are only run with
``fast_dev_run``), CF-Net at width 1/8.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from hdrlab.camera import CRF, lut_apply, synthesize_stack
from hdrlab.data import ProceduralDataModule
from hdrlab.errors import ConfigError
from hdrlab.methods import InverseCRFBaseline, LinearITMOBaseline, TwoStage
from hdrlab.methods.baselines import highlight_gain, linear_highlight_expansion
from hdrlab.data.batch import batch_crf
from hdrlab.methods.build import find_state_prefix
from hdrlab.methods.two_stage import (
    generation_ev,
    rescale_to_input,
    resolve_select_rule,
    select_exposures,
)
from hdrlab.models.generators import Le2023Generator
from hdrlab.models.mergers import CFNetMerger, DebevecMerger, MertensMerger, StackArity, StackMerger
from hdrlab.stack import ExposureStack
from tests.support.overfit import fixed_batch, highlight_stats, overfit, psnr_mu

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_generator(ev=(-2.0, 2.0)) -> Le2023Generator:
    return Le2023Generator(width=0.125, ev=ev, levels=4)


def procedural_batch(*, seed: int = 0, size: int = 32, batch_size: int = 2, bracket_ev=None, index: int = 0):
    dm = ProceduralDataModule(num_train_scenes=batch_size * (index + 1), num_val_scenes=1, patch_size=size,
                              batch_size=batch_size, flips=False, seed=seed, bracket_ev=bracket_ev)
    dm.setup("fit")
    for i, batch in enumerate(dm.train_dataloader()):
        if i == index:
            return batch
    raise AssertionError("not enough batches")


class TripleAverage(StackMerger):
    """A fixed-arity (exactly 3, middle reference) merger: the mean of the linearised members."""

    output_domain = "linear"
    accepts = StackArity(min_exposures=3, max_exposures=3, exactly=3, reference="middle")

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        rel = torch.exp2(stack.ev - stack.ev[:, stack.reference: stack.reference + 1])[:, :, None, None, None]
        lin = torch.stack([stack.crf.inverse(stack.images[:, n]) for n in range(stack.num_exposures)], 1)
        return (lin / rel).mean(1)


class FrozenFusion(MertensMerger):
    """Mertens declared non-differentiable (to test the mode check)."""

    differentiable = False


# --------------------------------------------------------------------------- selection (pure functions)
def test_select_rules_and_generation_ev():
    evs = (-2.0, -1.0, 0.0, 1.0, 2.0)
    assert resolve_select_rule("auto", DebevecMerger(crf="known")) == "all"
    assert resolve_select_rule("auto", MertensMerger()) == "all"
    assert resolve_select_rule("auto", CFNetMerger(width=0.125)) == "extremes"
    assert resolve_select_rule("auto", TripleAverage()) == "triplet"
    assert generation_ev(evs, "all") == evs
    assert generation_ev(evs, "extremes") == (-2.0, 2.0)
    assert generation_ev(evs, "triplet") == (-2.0, 0.0, 2.0)
    assert generation_ev(evs, "evs", [1.0, -1.0]) == (-1.0, 1.0)
    with pytest.raises(ConfigError, match="select_ev"):
        generation_ev(evs, "evs")
    with pytest.raises(ConfigError, match="below and above"):
        generation_ev((-2.0, -1.0, 0.0), "triplet")
    with pytest.raises(ConfigError, match="unknown"):
        resolve_select_rule("middle", MertensMerger())

    images = torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1, 1).expand(2, 5, 3, 4, 4) / 10
    stack = ExposureStack(images=images, ev=torch.tensor([evs, evs]), reference=2)
    pair = select_exposures(stack, (-2.0, 2.0))
    assert pair.ev[0].tolist() == [-2.0, 2.0] and pair.reference == 0  # closest to ev 0; a tie goes to the darker
    assert torch.equal(pair.images[:, 0], images[:, 0]) and torch.equal(pair.images[:, 1], images[:, 4])
    triple = select_exposures(stack, (-2.0, 0.0, 2.0))
    assert triple.reference == 1 and triple.ev[1].tolist() == [-2.0, 0.0, 2.0]
    assert select_exposures(stack, None) is stack
    with pytest.raises(ConfigError, match="not in the generated stack"):
        select_exposures(stack, (3.0,))


def test_rescale_to_input_recovers_radiance_from_the_extreme_pair():
    """Debevec on the pair (-2, +2) without the input, rescaled by 2**-ev_ref, equals the true radiance."""
    g = torch.Generator().manual_seed(0)
    hdr = torch.rand(1, 3, 16, 16, generator=g) * 3.0 + 0.05  # up to 3 (clips at ev 0, not at ev -2)
    crf = CRF.gamma(2.2)
    stack = synthesize_stack(hdr, torch.tensor([[-2.0, 0.0, 2.0]]), crf, bits=16)
    stack = ExposureStack(images=stack.images, ev=stack.ev, reference=1, crf=crf)
    pair = select_exposures(stack, (-2.0, 2.0))
    assert pair.reference == 0  # ties resolve to the first (darker) member
    merged = DebevecMerger(crf="known")(pair)
    rescaled = rescale_to_input(merged, pair)
    # the darkest member is unclipped everywhere (hdr / 4 < 1): relative error is quantisation-level
    rel = ((rescaled - hdr).abs() / hdr).median()
    assert rel < 2e-3, float(rel)
    assert not torch.allclose(merged, hdr, rtol=0.5)  # without rescaling it is 4x off


def test_batch_crf_matches_the_luts():
    batch = procedural_batch(batch_size=2)
    crf = batch_crf(batch)
    x = batch["ldr"]
    assert torch.allclose(crf.inverse(x), lut_apply(x, batch["crf_inverse"]))
    with pytest.raises(ConfigError, match="crf_forward"):
        batch_crf({"ldr": x})


# --------------------------------------------------------------------------- construction errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(merger=DebevecMerger(crf="known"), mode="freeze_generator"), "no trainable parameters"),
        (dict(merger=MertensMerger(), mode="joint"), "no trainable parameters"),
        (dict(merger=FrozenFusion(), mode="freeze_merger"), "not differentiable"),
        (dict(merger=DebevecMerger(crf="known"), mode="freeze_merger", inverse_display=True), "already outputs linear"),
        (dict(merger=CFNetMerger(width=0.125), select="evs", select_ev=[0.0]), "at least 2 exposures"),
        (dict(merger=CFNetMerger(width=0.125, same_resolution=False)), "output has the input's size"),
        (dict(merger=CFNetMerger(width=0.125), merger_loss="hdr"), "display image"),
        (dict(merger=MertensMerger(), mode="freeze_merger", merger_loss="cfnet"), "needs a merger with its own objective"),
        (dict(merger=MertensMerger(), mode="freeze_merger", merger_loss="own"), "MertensMerger has none"),
        (dict(merger=DebevecMerger(crf="known"), mode="freeze_merger", merger_loss="ssim"), "display loss"),
        (dict(merger=TripleAverage(), mode="freeze_merger", select="all"), "exactly 3"),
        (dict(merger=DebevecMerger(crf="known"), mode="train_both"), "mode="),
    ],
)
def test_impossible_combinations_are_config_errors(kwargs, match):
    generator = tiny_generator((-2.0, -1.0, 1.0, 2.0))
    with pytest.raises(ConfigError, match=match):
        TwoStage(generator=generator, **kwargs)


def test_auto_selection_feeds_a_fixed_arity_merger():
    method = TwoStage(generator=tiny_generator((-2.0, -1.0, 1.0, 2.0)), merger=TripleAverage(), mode="freeze_merger")
    assert method.select == "triplet" and method.generation_ev == (-2.0, 0.0, 2.0)
    batch = procedural_batch(batch_size=1)
    stack = method.generate_stack(batch)
    assert stack.num_exposures == 3 and stack.reference == 1
    assert torch.equal(stack.images[:, 1], batch["ldr"])  # the input is the middle member


# --------------------------------------------------------------------------- modes and gradients
def _grad_report(method: TwoStage, batches: list[dict]) -> tuple[set[str], set[str]]:
    """Names of trainable parameters with a finite non-zero gradient in at least one batch, and all trainable names."""
    seen: set[str] = set()
    names = {n for n, p in method.named_parameters() if p.requires_grad}
    method.train()
    for batch in batches:
        assert batch["clip_mask"].sum() > 0, "the gradient check needs clipped pixels"
        method.zero_grad(set_to_none=True)
        loss, terms = method.compute_loss(batch)
        assert torch.isfinite(loss) and loss > 0 and terms
        loss.backward()
        for n, p in method.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), n
                if p.grad.abs().sum() > 0:
                    seen.add(n)
    return seen, names


def test_freeze_merger_trains_every_generator_parameter_through_debevec():
    method = TwoStage(generator=tiny_generator(), merger=DebevecMerger(crf="known"), mode="freeze_merger")
    batches = [procedural_batch(seed=s, batch_size=2) for s in (0, 1)]
    seen, names = _grad_report(method, batches)
    assert names == {n for n, _ in method.generator.named_parameters(prefix="generator")}
    assert seen == names, sorted(names - seen)[:5]
    assert method.output_domain == "linear" and "generator" in method.subnetworks()


def test_freeze_generator_trains_only_cfnet_and_joint_trains_both():
    batches = [procedural_batch(seed=0, batch_size=2)]
    frozen = TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), mode="freeze_generator")
    assert frozen.merger_loss == "own" and frozen.select == "extremes"
    assert not any(p.requires_grad for p in frozen.generator.parameters())
    seen, names = _grad_report(frozen, batches)
    assert names == {n for n, _ in frozen.merger.named_parameters(prefix="merger")}
    assert seen == names, sorted(names - seen)[:5]
    assert not frozen.generator.training  # frozen stage stays in eval mode (BatchNorm statistics fixed)
    assert list(frozen.subnetworks()) == ["merger"]

    joint = TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), mode="joint")
    seen, names = _grad_report(joint, batches)
    assert any(n.startswith("generator.") for n in names) and any(n.startswith("merger.") for n in names)
    assert seen == names, sorted(names - seen)[:5]


def test_freeze_merger_through_mertens_gives_generator_gradients():
    method = TwoStage(generator=tiny_generator(), merger=MertensMerger(), mode="freeze_merger")
    assert method.merger_loss == "ssim" and method.output_domain == "display"
    batch = procedural_batch(seed=0, batch_size=1)
    seen, names = _grad_report(method, [batch])
    assert len(seen) > 0.9 * len(names)


# --------------------------------------------------------------------------- domains and metric columns
def test_display_vs_inverse_display_metric_columns():
    dm = ProceduralDataModule(num_train_scenes=1, num_val_scenes=2, patch_size=32, batch_size=2, seed=0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    torch.manual_seed(0)
    display = TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), mode="freeze_generator")
    torch.manual_seed(0)
    linear = TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), mode="freeze_generator",
                      inverse_display=True)
    linear.load_state_dict(display.state_dict())
    assert display.output_domain == "display" and linear.output_domain == "linear"
    disp = trainer.validate(display, datamodule=dm, verbose=False)[0]
    lin = trainer.validate(linear, datamodule=dm, verbose=False)[0]
    assert {"val/display_psnr", "val/display_ssim", "val/display_psnr_clipped"} <= set(disp)
    assert not any(k.startswith("val/psnr_mu") or k.startswith("val/pu21") for k in disp)
    assert {"val/psnr_mu", "val/psnr_mu_clipped", "val/pu21_psnr"} <= set(lin)
    assert not any("display" in k for k in lin)
    # inverse_display is exactly the inverse CRF of the display output, so it never exceeds the clip level
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    display.eval(), linear.eval()
    with torch.no_grad():
        y, x = display.predict_image(batch), linear.predict_image(batch)
    assert torch.allclose(x, lut_apply(y.clamp(0, 1), batch["crf_inverse"]), atol=1e-6)
    assert float(x.max()) <= 1.0 + 1e-6


def test_baselines_closed_form_and_no_fit():
    batch = procedural_batch(batch_size=2)
    inv = InverseCRFBaseline().predict_image(batch)
    assert torch.allclose(inv, lut_apply(batch["ldr"], batch["crf_inverse"]))
    itmo = LinearITMOBaseline(threshold=0.9, peak=4.0)
    pred = itmo.predict_image(batch)
    m = batch["ldr"].amax(1, keepdim=True)
    below = (m <= 0.9).expand_as(pred)
    assert torch.equal(pred[below], inv[below])  # unchanged below the threshold
    clipped = (m >= 1.0).expand_as(pred)
    assert torch.allclose(pred[clipped], 4.0 * inv[clipped])  # x4 at the clip level
    gain = highlight_gain(torch.tensor([0.0, 0.9, 0.95, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4))
    assert torch.allclose(gain.flatten(), torch.tensor([1.0, 1.0, 2.5, 4.0]))
    assert torch.equal(linear_highlight_expansion(batch["ldr"], batch["crf_inverse"]), pred)
    for baseline in (InverseCRFBaseline(), itmo):
        assert not list(baseline.parameters())
        with pytest.raises(ConfigError, match="hdrlab validate"):
            baseline.compute_loss(batch)
        with pytest.raises(ConfigError, match="nothing to fit"):
            baseline.configure_optimizers()
    with pytest.raises(ConfigError, match="threshold"):
        LinearITMOBaseline(threshold=1.0)


# --------------------------------------------------------------------------- checkpoints
def test_generator_and_merger_weights_load_from_method_checkpoints(tmp_path):
    from hdrlab.methods import Le2023Method

    batch = procedural_batch(batch_size=1)
    torch.manual_seed(1)
    le = Le2023Method(width=0.125, levels=4, ev=(-2.0, 2.0), pretrained_trunks=False)
    le_ckpt = tmp_path / "le2023.ckpt"
    torch.save({"state_dict": le.state_dict(), "epoch": 0}, le_ckpt)  # Lightning's checkpoint layout
    torch.manual_seed(2)
    donor = TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), mode="freeze_generator")
    donor_ckpt = tmp_path / "two_stage.ckpt"
    torch.save({"state_dict": donor.state_dict()}, donor_ckpt)

    torch.manual_seed(3)
    method = TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), mode="freeze_generator",
                      generator_ckpt=str(le_ckpt), merger_ckpt=str(donor_ckpt))
    for k, v in method.generator.state_dict().items():
        assert torch.equal(v, le.state_dict()[f"generator.{k}"]), k
    for k, v in method.merger.state_dict().items():
        assert torch.equal(v, donor.state_dict()[f"merger.{k}"]), k
    assert find_state_prefix(le.state_dict(), method.generator.state_dict()) == ("generator.", "")
    method.eval()
    with torch.no_grad():
        a = method.generate_stack(batch).images
        b = le.generator.eval()(batch["ldr"], ev=(-2.0, 2.0)).images
    assert torch.allclose(a, b[:, [0, 2]])  # CF-Net's extreme pair of the Le2023Method's stack

    with pytest.raises(ConfigError, match="shape"):  # another width
        TwoStage(generator=Le2023Generator(width=0.25, ev=(-2.0, 2.0), levels=4), merger=DebevecMerger(crf="known"),
                 mode="freeze_merger", generator_ckpt=str(le_ckpt))
    with pytest.raises(ConfigError, match="were found"):  # a checkpoint without this network
        TwoStage(generator=tiny_generator(), merger=CFNetMerger(width=0.125), merger_ckpt=str(le_ckpt))
    with pytest.raises(ConfigError, match="does not exist"):
        TwoStage(generator=tiny_generator(), merger=DebevecMerger(crf="known"), mode="freeze_merger",
                 generator_ckpt=str(tmp_path / "missing.ckpt"))


# --------------------------------------------------------------------------- overfit
OVERFIT_EV = (-4.0, -2.0)
OVERFIT_STEPS = 300


def test_overfit_one_scene_le2023_debevec_gains_10db_psnr_mu():
    """Le2023 + known-CRF Debevec (freeze_merger) memorises ONE fixed example (``tests/support/overfit.py``).

    Test-only settings (class defaults untouched): procedural scene 0 rendered at 32 px with
    ``emitter_range=(4, 16)`` (the default 1e3..1e5 puts PSNR-mu's p99.9 normalisation into the
    emitter peaks), synthesis seed 0 (12.1 % clipped pixels, ground-truth p99.9 = 13 x the clip
    level), generated ev ``(-4, -2)`` (plus the input), Le2023 width 1/8 with 4 levels, Adam lr 1e-2,
    log-domain L1; BatchNorm in eval mode for both measurements; the batch is synthesised once.
    Measured (1 thread): 16.82 dB untrained -> 29.06 dB after 75 steps (+12.2), 33.27 dB after 200;
    a Debevec merge of the *true* bracket at these ev scores 52.66 dB (printed as the ceiling).
    """
    batch = fixed_batch(scene_seed=0, emitter_range=(4.0, 16.0), patch_size=32, bracket_ev=[*OVERFIT_EV, 0.0])
    stats = highlight_stats(batch)
    assert stats["clip_fraction"] > 0.05 and stats["p999"] > 4.0  # highlights far above the clip level
    true_stack = ExposureStack(images=batch["stack"], ev=batch["ev"], reference=len(OVERFIT_EV), crf=batch_crf(batch))
    ceiling = psnr_mu(DebevecMerger(crf="known")(true_stack), batch)
    torch.manual_seed(0)
    method = TwoStage(generator=tiny_generator(OVERFIT_EV), merger=DebevecMerger(crf="known"), mode="freeze_merger",
                      loss_domain="log", lr=1e-2)
    result = overfit(method, batch, steps=OVERFIT_STEPS, eval_every=25, stop_gain=10.0)
    print(f"TwoStage Le2023+Debevec overfit: psnr_mu {result} (true-bracket merge {ceiling:.2f} dB; {stats})")
    assert result.gain >= 10.0 and result.steps <= OVERFIT_STEPS
    assert result.after < ceiling
