"""AHDRNet (Yan et al. CVPR 2019) as a method (:mod:`hdrlab.methods.ahdrnet`) and as a TwoStage merger."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError
from hdrlab.methods.ahdrnet import AHDRNet
from hdrlab.methods.two_stage import TwoStage
from hdrlab.models.generators.le2023_multiexposure import Le2023Generator
from hdrlab.models.mergers.ahdrnet import AHDRNetMerger
from support.overfit import assert_gradients_reach_every_parameter, fixed_batch, highlight_stats, overfit, psnr_mu

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
BRACKET = [-2.0, 0.0, 2.0]
WIDTH = 1 / 8


def _adam(method) -> torch.optim.Adam:
    opt = method.configure_optimizers()
    return opt["optimizer"] if isinstance(opt, dict) else opt


def test_official_optimizer_and_parameter_count() -> None:
    with FakeTensorMode():
        method = AHDRNet(metrics=("psnr_mu",))
        assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 1_441_283
    assert set(method.subnetworks()) == {"AHDRNetMerger"}
    opt = _adam(method)
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-4, (0.9, 0.999), 1e-8, 0.0)
    assert method.scheduler_config(opt) is None  # the official lr is constant in practice


def test_overfit_one_scene_gains_10db_psnr_mu() -> None:
    """AHDRNet memorises ONE fixed example (``tests/support/overfit.py``) with its own objective.

    Test-only settings (class defaults untouched): procedural scene 0 at 32 px with
    ``emitter_range=(4, 16)`` (the default 1e3..1e5 puts PSNR-mu's p99.9 normalisation into emitter
    peaks far above what the network's range, 4 x the reference clip for a -2/0/+2 bracket, can
    express), true bracket -2, 0, +2, width 1/8, Adam lr 1e-3 (official 1e-4). Measured (CPU,
    1 thread): 15.30 dB untrained -> 26.06 dB after 175 steps (+10.8; 29.96 dB after 300); the
    official lr 1e-4 gains +5.0 in 300 steps at width 1/8 and +10.6 at width 1/4. The ceiling, the
    ground truth clipped to the network's range, scores 42.33 dB.
    """
    batch = fixed_batch(scene_seed=0, emitter_range=(4.0, 16.0), patch_size=32, bracket_ev=BRACKET)
    stats = highlight_stats(batch)
    assert stats["clip_fraction"] > 0.05 and stats["p999"] > 4.0
    ceiling = psnr_mu(batch["hdr"].clamp(0.0, 4.0), batch)
    torch.manual_seed(0)
    method = AHDRNet(width=WIDTH, lr=1e-3, metrics=("psnr_mu",))
    result = overfit(method, batch, steps=300, eval_every=25, stop_gain=10.0)
    print(f"AHDRNet overfit: psnr_mu {result} (ceiling {ceiling:.2f} dB; {stats})")
    assert result.gain >= 10.0 and result.steps <= 300
    assert result.after < ceiling


def test_gradients_finite_and_nonzero_for_every_parameter() -> None:
    torch.manual_seed(0)
    method = AHDRNet(width=WIDTH, metrics=("psnr_mu",))
    batches = [fixed_batch(scene_seed=s, patch_size=32, bracket_ev=BRACKET) for s in (0, 1)]
    assert_gradients_reach_every_parameter(method, batches)


def test_wider_bracket_selects_the_nearest_three() -> None:
    torch.manual_seed(0)
    method = AHDRNet(width=WIDTH, metrics=("psnr_mu",))
    batch = fixed_batch(scene_seed=0, patch_size=16, bracket_ev=[-3.0, -2.0, 0.0, 2.0, 3.0])
    stack = method.stack(batch)
    assert stack.ev[0].tolist() == BRACKET and stack.reference == 1
    loss, terms = method.compute_loss(batch)
    assert torch.isfinite(loss) and set(terms) == {"mu_l1"}
    with torch.no_grad():
        pred = method.predict_image(batch)
    # relative to the ev-0 exposure: the network's darkest-relative [0, 1] output x 4 / 1
    assert pred.shape == (1, 3, 16, 16) and float(pred.min()) >= 0 and float(pred.max()) <= 4.0


def test_batch_without_bracket_is_a_config_error() -> None:
    method = AHDRNet(width=WIDTH, metrics=("psnr_mu",))
    batch = fixed_batch(scene_seed=0, patch_size=16)
    with pytest.raises(ConfigError, match=r"bracket_ev, e.g. \[-2.0, 0.0, 2.0\]"):
        method.compute_loss(batch)


# ---------------------------------------------------------------- TwoStage


def _tiny_generator() -> Le2023Generator:
    return Le2023Generator(width=1 / 8, ev=[-2.0, 2.0], levels=3)


def test_two_stage_freeze_generator_loss_falls() -> None:
    torch.manual_seed(0)
    method = TwoStage(generator=_tiny_generator(), merger=AHDRNetMerger(width=WIDTH), mode="freeze_generator",
                      lr=1e-3, metrics=("psnr_mu",))
    assert method.merger_loss == "own" and method.selected_ev == (-2.0, 0.0, 2.0)
    batch = fixed_batch(scene_seed=0, emitter_range=(4.0, 16.0), patch_size=32)
    optimizer = _adam(method)
    generator_before = [p.detach().clone() for p in method.generator.parameters()]
    losses = []
    for _ in range(15):
        loss, terms = method.compute_loss(batch)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    print(f"TwoStage(Le2023 -> AHDRNet, freeze_generator) losses: {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(a, p) for a, p in zip(generator_before, method.generator.parameters()))
    with torch.no_grad():
        pred = method.predict_image(batch)
    assert pred.shape == (1, 3, 32, 32) and torch.isfinite(pred).all()


def test_two_stage_joint_builds_and_steps_both_stages() -> None:
    torch.manual_seed(0)
    method = TwoStage(generator=_tiny_generator(), merger=AHDRNetMerger(width=WIDTH), mode="joint",
                      metrics=("psnr_mu",))
    batch = fixed_batch(scene_seed=0, patch_size=32)
    optimizer = _adam(method)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    loss, _ = method.compute_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {n.split(".")[0] for n, p in method.named_parameters() if not torch.equal(before[n], p)}
    assert changed == {"generator", "merger"}


# ---------------------------------------------------------------- experiment


def test_experiment_yaml_fast_dev_run(tmp_path) -> None:
    from hdrlab.cli import build_cli

    build_cli([
        "fit", "--config", str(REPO / "experiments/ahdrnet.yaml"),
        "--config", str(REPO / "experiments/overrides/tiny.yaml"),
        "--data.init_args.patch_size", "32",
        "--trainer.fast_dev_run", "true", "--wandb", "disabled", "--run_dir", str(tmp_path / "run"),
    ])  # fmt: skip
