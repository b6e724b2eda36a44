"""Kim et al. (AAAI 2021): losses (:mod:`hdrlab.losses.kim2021`) and the method (:mod:`hdrlab.methods.kim2021`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hdrlab.errors import ConfigError
from hdrlab.losses.kim2021 import (
    ContextualBilateralLoss,
    contextual_bilateral,
    exposure_loss,
    hdr_loss,
    histogram_l1,
    intermediate_loss,
    mu_law,
    soft_histogram,
)
from hdrlab.methods.kim2021 import Kim2021Method, adam_gc, kim_bracket
from hdrlab.weights import load_vgg_features
from support.overfit import fixed_batch

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
BRACKET = [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]


def tiny_method(**kwargs) -> Kim2021Method:
    options = dict(width=1 / 16, pretrained_trunks=False, refine_step=0, cobi=False, metrics=("psnr_mu",))
    options.update(kwargs)
    return Kim2021Method(**options)


# ---------------------------------------------------------------------------------------- losses
def test_mu_law_closed_form():
    x = torch.tensor([0.0, 1.0, 0.5])
    assert torch.allclose(mu_law(x), torch.tensor([0.0, 1.0, math.log(51.0) / math.log(101.0)]))
    assert torch.allclose(hdr_loss(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)), torch.tensor(1.0))


def test_soft_histogram_closed_form():
    """Values v = 255 (x+1)/2 add v to bin floor(v); bin k is divided by max(k, 1) and 255."""
    x = torch.tensor([-1.0, 1.0, 2 * 10.5 / 255 - 1, 2 * 10.25 / 255 - 1]).view(1, 1, 2, 2).requires_grad_()
    h = soft_histogram(x)
    assert h.shape == (1, 1, 256)
    expected = torch.zeros(256)
    expected[0] = 0.0
    expected[255] = 255.0 / 255 / 255
    expected[10] = (10.5 + 10.25) / 10 / 255
    assert torch.allclose(h[0, 0], expected, atol=1e-6)
    h[0, 0, 10].backward()
    assert torch.allclose(x.grad.flatten()[2:], torch.full((2,), 255 / 2 / 10 / 255))
    # a stack [B, N, 3, H, W] is flattened into the batch; mean over [B*N, C, 256]
    a, b = torch.rand(2, 7, 3, 4, 4) * 2 - 1, torch.rand(2, 7, 3, 4, 4) * 2 - 1
    assert torch.allclose(histogram_l1(a, b), (soft_histogram(a) - soft_histogram(b)).abs().mean())


def test_intermediate_and_exposure_losses():
    a, b = torch.rand(1, 3, 8, 8) * 2 - 1, torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.allclose(intermediate_loss(a, b), F.l1_loss(a, b) + 0.01 * histogram_l1(a, b))
    assert torch.allclose(exposure_loss(a, b, None), F.l1_loss(a, b))


def test_cobi_of_identical_features_is_its_floor_and_larger_otherwise():
    """Identical inputs: CX_feat peaks at the same position, so max_j CX = 0.5 max CX_feat + 0.5 max CX_sp."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 4, 4, generator=g)
    same = contextual_bilateral(x, x)
    other = contextual_bilateral(torch.randn(1, 8, 4, 4, generator=g), x)
    assert float(same) < float(other)
    loss = ContextualBilateralLoss(load_vgg_features("vgg19", pretrained=False))
    img = torch.rand(1, 3, 32, 32, generator=g)
    assert torch.isfinite(loss(img, img)) and float(loss(img, img)) < float(loss(torch.rand(1, 3, 32, 32), img))


# ---------------------------------------------------------------------------------------- optimiser
def test_adam_gc_centralises_conv_gradients():
    """First Adam step = -lr * sign(centralised grad) (bias-corrected m / sqrt(v))."""
    w = torch.nn.Parameter(torch.zeros(2, 3, 1, 1))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = adam_gc([{"params": [w, b]}], lr=0.1, betas=(0.5, 0.999), weight_decay=0.0)
    w.grad = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]).view(2, 3, 1, 1)
    b.grad = torch.tensor([1.0, -1.0])
    opt.step()
    centred = torch.tensor([-2.0, -1.0, 3.0, -1.0, -1.0, 2.0]).view(2, 3, 1, 1)
    assert torch.allclose(w.detach(), -0.1 * centred.sign(), atol=1e-6)
    assert torch.allclose(b.detach(), torch.tensor([-0.1, 0.1]), atol=1e-6)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 0.0


def test_optimizer_has_the_official_groups_and_rates():
    method = tiny_method()
    opt = method.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert type(opt) is torch.optim.Adam
    assert sorted(g["lr"] for g in opt.param_groups) == [1e-5, 1e-4, 1e-4]
    assert all(g["betas"] == (0.5, 0.999) and g["l2_decay"] == 5e-5 and g["weight_decay"] == 0.0
               for g in opt.param_groups)


# ---------------------------------------------------------------------------------------- routing
def test_routed_loss_gives_each_group_only_its_losses():
    method = tiny_method()
    groups = method.group_parameters()
    s = sum(p.sum() for p in groups["structure"])
    glob = sum(p.sum() for p in groups["global"])
    losses = {"structure": (s * glob) ** 2 * 0 + s * glob, "global": 3 * s + 2 * glob, "refine": s.new_zeros(())}
    value = torch.tensor(5.0)
    out = method.routed_loss(losses, value)
    assert float(out.detach()) == 5.0
    out.backward()
    # structure params: d(s * glob)/ds = glob; global params: d(3 s + 2 glob)/dglob = 2
    assert all(torch.allclose(p.grad, torch.full_like(p, float(glob))) for p in groups["structure"])
    assert all(torch.allclose(p.grad, torch.full_like(p, 2.0)) for p in groups["global"])
    assert all(p.grad is None for p in groups["refine"])


def test_bracket_is_checked():
    batch = fixed_batch(scene_seed=0, patch_size=32, bracket_ev=BRACKET)
    images, ev = kim_bracket(batch)
    assert images.shape[1] == 7 and ev[0].tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert torch.equal(images[:, 3], batch["ldr"])
    with pytest.raises(ConfigError, match="bracket_ev"):
        kim_bracket(fixed_batch(scene_seed=0, patch_size=32, bracket_ev=[-2.0, 2.0]))
    with pytest.raises(ConfigError, match="phases"):
        tiny_method(phases=["teacher"])


def test_training_step_gradients_reach_every_parameter():
    """compute_loss on K = 3 batches with clipped pixels (random start indices), plus routed single
    steps from the stack ends (start 0 and 6, the only ones that use the up CIN entry 0 and the down
    entry 5): every parameter gets a finite, non-zero gradient somewhere, except the up structure
    net's output-block CIN entries 1..5, which the official up net never selects (always entry 0)."""
    torch.manual_seed(0)
    method = tiny_method()
    params = {n: p for n, p in method.named_parameters() if p.requires_grad}
    unused = {f"generator.net.up.structure_net.out_conv.norm.norms.{i}.{k}" for i in range(1, 6) for k in ("weight", "bias")}
    hit = dict.fromkeys(params, False)

    def record():
        for name, p in params.items():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), name
                hit[name] |= bool(p.grad.abs().sum() > 0)

    for seed in range(3):
        batch = fixed_batch(scene_seed=seed, patch_size=32, bracket_ev=BRACKET)
        assert float(batch["clip_mask"].sum()) > 0
        method.zero_grad()
        loss, terms = method.compute_loss(batch)
        assert {"single_edge", "single_int", "single_exp", "stack_edge", "stack_int", "stack_exp", "stack_hdr"} <= set(terms)
        loss.backward()
        record()
    from hdrlab.models.generators.kim2021 import kim_edge_map

    images, _ = kim_bracket(batch)
    edges = torch.stack([kim_edge_map(images[:, i]) for i in range(7)], dim=1)
    for start in (0, 6):
        method.zero_grad()
        a = method.single_step_losses(images * 2 - 1, edges, start, True)
        value = a["edge"] + a["int"] + a["exp"]
        method.routed_loss({"structure": a["edge"], "global": a["int"], "refine": a["exp"]}, value).backward()
        record()
    missing = {n for n, ok in hit.items() if not ok}
    assert missing == unused


def test_before_refine_step_only_global_and_structure_train():
    method = tiny_method(refine_step=10)
    loss, terms = method.compute_loss(fixed_batch(scene_seed=0, patch_size=32, bracket_ev=BRACKET))
    assert "stack_hdr" not in terms and "single_exp" not in terms
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.group_parameters()["refine"])


def test_predict_image_is_linear_radiance():
    method = tiny_method().eval()
    batch = fixed_batch(scene_seed=0, patch_size=32, bracket_ev=BRACKET)
    with torch.no_grad():
        pred = method.predict_image(batch)
    assert pred.shape == (1, 3, 32, 32) and torch.isfinite(pred).all() and (pred > 0).all()


# ---------------------------------------------------------------------------------------- experiment
def test_experiment_yaml_fast_dev_run(tmp_path):
    from hdrlab.cli import build_cli

    build_cli([
        "fit", "--config", str(REPO / "experiments/kim2021.yaml"),
        "--config", str(REPO / "experiments/overrides/tiny.yaml"),
        "--model.init_args.cobi", "false", "--data.init_args.patch_size", "32",
        "--trainer.fast_dev_run", "true", "--wandb", "disabled", "--run_dir", str(tmp_path / "run"),
    ])  # fmt: skip
