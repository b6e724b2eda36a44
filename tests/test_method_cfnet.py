"""CFNetMethod: extreme pair, official defaults, loss values vs pytorch-msssim, overfit, gradients, YAML via CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from hdrlab import tonemap
from hdrlab.data import ProceduralDataModule
from hdrlab.data.batch import bracket_stack
from hdrlab.data.datamodules import collate_hdr_batch
from hdrlab.errors import ConfigError
from hdrlab.methods import CFNetMethod
from hdrlab.metrics.display import DisplayPSNR
from tests.support.overfit import assert_gradients_reach_every_parameter

REPO = Path(__file__).resolve().parents[1]
TINY = 0.125


pytestmark = pytest.mark.usefixtures("single_thread")


def _train_set(patch: int, bracket: list[float] | None = (-4.0, 4.0)):
    dm = ProceduralDataModule(num_train_scenes=4, num_val_scenes=1, patch_size=patch, batch_size=2,
                              bracket_ev=None if bracket is None else list(bracket), seed=0)
    dm.setup("fit")
    return dm.train_set


@pytest.fixture(scope="module")
def train_set_64():
    return _train_set(64)


def _batch(train_set, *indices: int) -> dict:
    return collate_hdr_batch([train_set[(i, 0)] for i in indices])


def test_the_pair_is_the_lowest_and_highest_ev_and_errors_name_the_fix():
    stack = torch.rand(2, 3, 3, 8, 8)
    method = CFNetMethod(width=TINY)
    pair = method.pair({"stack": stack, "ev": torch.tensor([[-4.0, 0.0, 4.0]] * 2)})
    out = method.merger.outputs(pair)
    direct = method.net(*(F.interpolate(stack[:, i], scale_factor=0.5, mode="bicubic", antialias=True).clamp(0, 1)
                          for i in (0, 2)))
    assert torch.allclose(out.fused, direct.fused)
    with pytest.raises(ConfigError, match=r"CF-Net needs an exposure pair: set data.init_args.bracket_ev, e.g. \[-4, 4\]"):
        method.pair({"ldr": torch.rand(2, 3, 8, 8)})
    with pytest.raises(ConfigError, match="fewer than 2 exposures"):
        bracket_stack({"stack": stack[:, :1], "ev": torch.zeros(2, 1)})


def test_official_defaults_and_full_size_parameter_count():
    method = CFNetMethod()
    assert method.scale == 2 and method.output_domain == "display" and method.downsample == "bicubic"
    assert sum(p.numel() for p in method.subnetworks()["cfnet"].parameters()) == 17_048_297
    config = method.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-6
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.step_size == 200 and sched.gamma == 0.5
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert CFNetMethod(scale=4, width=TINY).net.scale == 4
    with pytest.raises(ConfigError, match="scale=3"):
        CFNetMethod(scale=3, width=TINY)
    with pytest.raises(ConfigError, match="lr_step_epochs"):
        CFNetMethod(width=TINY, lr_milestones=[100])


def test_loss_terms_match_pytorch_msssim_at_the_official_data_range(train_set_64):
    """The ``sr`` term recomputed independently with pytorch-msssim on [0, 255] tensors (official
    data_range=255, win_size=7, nonnegative_ssim), and the loss total = sr + fusion."""
    method = CFNetMethod(width=TINY)
    batch = _batch(train_set_64, 0, 1)
    loss, terms = method.compute_loss(batch)
    under, over = batch["stack"][:, 0], batch["stack"][:, -1]
    with torch.no_grad():
        out = method.merger.outputs(method.pair(batch))
        fused = tonemap.display(batch["hdr"])

        def off(a, b):
            return 1.0 - ssim(a * 255.0, b * 255.0, data_range=255, win_size=7, nonnegative_ssim=True)

        sr = off(out.under[0], under) + off(out.over[0], over)
        fusion = sum(off(u, fused) + off(o, fused) for u, o in zip(out.under[1:], out.over[1:]))
    print(f"CF-Net untrained loss {loss.item():.4f} = sr {float(sr):.4f} + fusion {float(fusion):.4f}")
    assert torch.isclose(terms["sr"], sr, atol=1e-4) and torch.isclose(terms["fusion"], fusion, atol=1e-4)
    assert torch.isclose(loss, sr + fusion, atol=1e-4) and 0.0 < float(loss) < 8.0
    assert all(o.shape == (2, 3, 64, 64) for o in (*out.under, *out.over)) and len(out.under) == 4


@pytest.mark.parametrize("scale", [2, 4])
def test_prediction_is_full_resolution_display(train_set_64, scale):
    method = CFNetMethod(width=TINY, scale=scale).eval()
    batch = _batch(train_set_64, 0, 1)
    with torch.no_grad():
        pred = method.predict_image(batch)
        visuals = method.extra_visuals(batch)
    assert pred.shape == batch["hdr"].shape and 0.0 <= float(pred.min()) and float(pred.max()) <= 1.0
    assert visuals["stack"].shape == (2, 2, 3, 64, 64)
    assert torch.equal(method.target_for_metrics(batch), tonemap.display(batch["hdr"]))


def test_overfits_one_scene():
    """One procedural scene (32 px patch to keep CPU time small): >= 10 dB display PSNR gain
    against display(hdr) within 300 steps."""
    train_set = _train_set(32)
    batch = _batch(train_set, 0)
    # CPU-sized settings: lr 5e-3 (official 1e-6, a fine-tuning value), no StepLR.
    method = CFNetMethod(width=TINY, lr=5e-3, lr_step_epochs=None)
    optimizer = method.configure_optimizers()
    target = tonemap.display(batch["hdr"])

    def score() -> float:
        method.eval()
        with torch.no_grad():
            pred = method.predict_image(batch)
        method.train()
        metric = DisplayPSNR()
        metric.update(pred, target, clip_mask=batch["clip_mask"])
        return float(metric.compute())

    before = after = score()
    steps = 0
    while steps < 300 and after - before < 10.0:
        for _ in range(25):
            loss, _ = method.compute_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        steps += 25
        after = score()
    print(f"CF-Net overfit after {steps} steps: display PSNR {before:.2f} -> {after:.2f} dB (loss {float(loss):.3f})")
    assert after - before >= 10.0


def test_gradients_finite_and_nonzero(train_set_64):
    method = CFNetMethod(width=TINY)
    assert_gradients_reach_every_parameter(method, [_batch(train_set_64, *ix) for ix in ((0, 1), (2, 3))])


def _cli(tmp_path, *extra: str):
    from hdrlab.cli import build_cli

    return build_cli([
        "fit", "--config", str(REPO / "experiments" / "cfnet.yaml"),
        "--config", str(REPO / "experiments" / "overrides" / "tiny.yaml"),
        "--trainer.fast_dev_run", "true", "--wandb", "disabled", "--run_dir", str(tmp_path / "run"), *extra,
    ])


def test_yaml_fast_dev_run_through_the_cli(tmp_path):
    cli = _cli(tmp_path)
    assert isinstance(cli.model, CFNetMethod) and cli.model.scale == 2 and cli.trainer.state.finished
    metrics = cli.trainer.callback_metrics
    print({k: round(float(v), 3) for k, v in metrics.items()})
    assert math.isfinite(float(metrics["train/loss"])) and "val/display_psnr" in metrics


def test_cli_without_a_bracket_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match="CF-Net needs an exposure pair"):
        _cli(tmp_path, "--data.init_args.bracket_ev", "null")
