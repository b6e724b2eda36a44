"""DuHDR (She et al., dual learning of the camera imaging process): networks, duals, losses per stage,
the unpaired (LDR-only) fine-tuning of Algorithm 2 and its data module.

Reference parameter counts: the official TF code (DoomsdayLeaf/DualHDR, commit d651c4a), counted
layer by layer (OOnet 2,553,479 / 773,767 / 3,046,659; chain 30,323,347;
Dnet 1,999,779 and INnet 1,200,971 checkpoint-verified; Nnet's official fc11 [346112, 11] + dense
[11, 11] from the released ``ckpt_inet`` index).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.data.unpaired import UnpairedLDRDataModule
from hdrlab.methods.duhdr import STAGE_TRAINABLE, SUBNETWORKS, DuHDRMethod
from hdrlab.models.direct.duhdr import (
    CRFNet,
    DifferentialNet,
    DuHDRNet,
    OONet,
    QuantizationDual,
    depth_to_space_tf,
    soft_clip,
)
from hdrlab.models.direct.singlehdr import HallucinationNet
from support.overfit import assert_gradients_reach_every_parameter, fixed_batch, highlight_stats, overfit

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"width": 0.125, "pretrained_trunks": False}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _bright_ldr(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """LDR photos with saturated regions (so ITnet's mask is non-empty): smooth ramps + a clipped disc."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.2 + 0.6 * (0.5 * xx + 0.5 * yy)[None, None] * torch.rand(batch, 3, 1, 1, generator=g)
    disc = (((xx - 0.6) ** 2 + (yy - 0.4) ** 2) < 0.05).float()[None, None]
    noise = 0.02 * torch.rand(batch, 3, size, size, generator=g)
    return torch.round(((base + noise) * (1 - disc) + disc).clamp(0, 1) * 255) / 255


def test_parameter_counts_are_official():
    with FakeTensorMode():
        oonet = {(rfb, diff): _count(OONet(rfb=rfb, diff=diff)) for rfb in (True, False) for diff in (True, False)}
        net = DuHDRNet()
        parts = {name: _count(getattr(net, name)) for name in SUBNETWORKS}
        crf_official = _count(CRFNet(input_size=256))
        crf_official_fc = CRFNet(input_size=256).fc.weight.shape
    assert oonet == {(True, True): 2_553_479, (True, False): 773_767, (False, True): 3_046_659, (False, False): 1_266_947}
    assert parts == {
        "dequantization": 1_999_779,  # Dnet (ckpt_dnet: 38 tensors)
        "linearization": 1_200_971,  # INnet (ckpt_inet)
        "hallucination": 24_569_118,  # ITnet
        "refinement": 2_553_479,  # OOnet RFB + diff
        "crf": 1_201_103,  # Nnet, global pooling: INnet trunk + fc 512->11 + dense 11->11 (132)
        "quantization": 1_999_779,  # learnable Q = Dnet's U-Net
    }
    assert sum(parts[k] for k in ("dequantization", "linearization", "hallucination", "refinement")) == 30_323_347
    # official resolution-bound Nnet head at 256^2: trunk 1,195,328 + fc11 346,112*11+11 + dense 132
    assert crf_official == 5_002_703 and tuple(crf_official_fc) == (11, 346_112)


def test_shapes_stride_and_config_errors():
    torch.manual_seed(0)
    net = DuHDRNet(width=0.125, iterations=1).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "dequantized": (2, 3, 64, 96), "inverse_crf": (2, 1, 1024), "linearized": (2, 3, 64, 96),
        "mask": (2, 1, 64, 96), "residual": (2, 3, 64, 96), "hallucinated": (2, 3, 64, 96), "hdr": (2, 3, 64, 96),
    }  # fmt: skip
    assert bool((out["hdr"] >= 0).all()) and DuHDRNet.stride == 32 and OONet(width=0.125).stride == 32
    assert OONet(width=0.125, diff=False).stride == 16
    with pytest.raises(ConfigError, match="multiples of 32"):
        net(torch.rand(1, 3, 48, 64))
    with pytest.raises(ConfigError, match="iterations"):
        DuHDRNet(width=0.125, iterations=0)
    with pytest.raises(ConfigError, match="even"):
        DifferentialNet(15)
    with pytest.raises(ConfigError, match="input_size"):
        CRFNet(width=0.125, input_size=100)
    with pytest.raises(ConfigError, match="64x64"):
        CRFNet(width=0.125, input_size=64)(torch.rand(1, 3, 96, 96))
    with pytest.raises(ConfigError, match="stage"):
        DuHDRMethod(stage="bogus", **TINY)


def test_depth_to_space_uses_tensorflow_channel_order():
    x = torch.arange(8.0).view(1, 8, 1, 1)  # TF: pixel (i, j) of channel c <- input channel (2 i + j) * 2 + c
    assert depth_to_space_tf(x).view(2, 2, 2).tolist() == [[[0, 2], [4, 6]], [[1, 3], [5, 7]]]
    y = torch.rand(2, 12, 3, 5)
    assert not torch.equal(depth_to_space_tf(y), torch.nn.functional.pixel_shuffle(y, 2))
    # the converter's permutation: PixelShuffle channel c * 4 + k == TF channel k * C' + c
    perm = [k * 3 + c for c in range(3) for k in range(4)]
    assert torch.equal(depth_to_space_tf(y), torch.nn.functional.pixel_shuffle(y[:, perm], 2))


def test_clipping_net_clips_the_base_and_keeps_the_detail():
    torch.manual_seed(0)
    hdr = torch.rand(2, 3, 32, 32) * 4.0
    parts = soft_clip(hdr)
    assert float(parts["base"].max()) <= 1.0 and float(parts["base"].min()) >= 0.0
    assert torch.allclose(parts["clipped"], parts["base"] * parts["detail"])
    assert float(parts["clipped"].mean()) < float(hdr.mean())
    # where the guided-filter base stays in [0, 1] the soft clip is the identity (detail passes)
    dim = 0.3 + 0.2 * torch.rand(1, 3, 32, 32)
    assert torch.allclose(soft_clip(dim)["clipped"], dim, atol=1e-6)


def test_quantisation_dual_rounds_spreads_jpeg_quality_and_passes_gradient():
    q = QuantizationDual(jpeg=False)
    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    y = q(x)
    assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-4)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through
    assert QuantizationDual().qualities(8) == [90, 91, 93, 94, 96, 97, 99, 100] and QuantizationDual().qualities(1) == [90]
    smooth = _bright_ldr(batch=3, size=32)
    z = QuantizationDual()(smooth)
    assert float((z - smooth).abs().mean()) < 0.02 and not torch.equal(z, smooth)  # JPEG round trip, lossy


def test_iteration_follows_the_official_recursion():
    torch.manual_seed(0)
    net = DuHDRNet(width=0.125).eval()
    lin = torch.rand(1, 3, 64, 64) ** 0.3
    with torch.no_grad():
        out = net.hallucinate(lin, iterations=2)
        mask = out["mask"]
        y1 = lin + mask * torch.relu(net.hallucination.raw(lin))
        y2 = lin + mask * torch.relu(net.hallucination.raw(net.clipping(y1)))
        single = net.hallucination(lin)
    assert torch.allclose(out["hallucinated"], y2) and float(mask.sum()) > 0
    assert torch.allclose(single["hallucinated"], y1)  # raw path == HallucinationNet.forward for pass 1
    zeros = HallucinationNet(width=0.125, upsample_pad="zeros")
    assert zeros.ups[0].conv.padding_mode == "zeros" and net.hallucination.ups[0].conv.padding_mode == "zeros"


def test_rfb_bn_always_inference_option_freezes_statistics():
    torch.manual_seed(0)
    frozen = OONet(width=0.125, rfb_bn_always_inference=True).train()
    normal = OONet(width=0.125).train()
    x = [torch.rand(2, 3, 64, 64) for _ in range(3)]
    before = {k: v.clone() for k, v in frozen.state_dict().items() if "running" in k}
    y_train = frozen(*x)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())
    assert torch.allclose(y_train, frozen.eval()(*x))
    normal(*x)
    assert any("running_mean" in k and float(v.abs().sum()) > 0 for k, v in normal.state_dict().items())


@pytest.mark.parametrize("stage", ["dequantization", "linearization", "hallucination", "refinement", "joint"])
def test_paired_stages_train_only_their_networks(stage):
    torch.manual_seed(0)
    batch = fixed_batch(scene_seed=1, patch_size=64, emitter_range=(4.0, 16.0))
    method = DuHDRMethod(stage=stage, iterations=2, **TINY).train()
    loss, terms = method.compute_loss(batch)
    assert torch.isfinite(loss) and float(loss.detach()) > 0 and terms
    loss.backward()
    for name, sub in method.subnetworks_all().items():
        got_grad = any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in sub.parameters())
        assert got_grad == (name in STAGE_TRAINABLE[stage]), (stage, name)
        assert sub.training == (name in STAGE_TRAINABLE[stage])
    expected_terms = {"dequantization": {"l2", "dual"}, "linearization": {"inet", "nnet", "dual"},
                      "hallucination": {"l1", "perceptual", "tv", "dual"}, "refinement": {"l1"}, "joint": {"l1"}}[stage]
    assert set(terms) == expected_terms


def test_unpaired_step_on_ldr_only_batch_changes_exactly_the_algorithm2_networks():
    """One optimizer step on ``{"ldr"}`` alone: Dnet, INnet, Nnet, ITnet, OOnet change (every parameter
    tensor), the learnable Q U-Net is bit-identical; each term's gradient reaches only its own networks."""
    torch.manual_seed(0)
    method = DuHDRMethod(stage="unpaired", lr=1e-3, **TINY).train()
    batch = {"ldr": _bright_ldr()}
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    optimizer = method.configure_optimizers()
    loss, terms = method.compute_loss(batch)
    assert set(terms) == {"dnet", "dnm", "itn", "oo"} and torch.isfinite(loss)
    # gradient routing: each Algorithm-2 term reaches only the networks it updates
    routes = {"dnet": {"dequantization"}, "dnm": {"linearization", "crf"}, "itn": {"hallucination"}, "oo": {"refinement"}}
    for term, nets in routes.items():
        grads = torch.autograd.grad(terms[term], [p for _, p in method.named_parameters() if p.requires_grad],
                                    retain_graph=True, allow_unused=True)
        names = [n for n, p in method.named_parameters() if p.requires_grad]
        reached = {n.split(".")[1] for n, g in zip(names, grads) if g is not None and float(g.abs().sum()) > 0}
        assert reached == nets, (term, reached)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    trained = set(STAGE_TRAINABLE["unpaired"])
    for name, p in method.named_parameters():
        sub = name.split(".")[1]
        changed = not torch.equal(before[name], p.detach())
        assert changed == (sub in trained), name
    assert all(not p.requires_grad for p in method.net.quantization.parameters())


def test_unpaired_fit_and_validation_on_a_folder_of_pngs(tmp_path):
    """The data module yields LDR-only batches; a Lightning fit of stage ``unpaired`` trains and
    validates on them (``val/cycle_l2``, no HDR metric)."""
    import lightning as L

    rng = np.random.default_rng(0)
    for i in range(3):
        image = (rng.random((40 + 8 * i, 72, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / f"photo{i}.png")
    dm = UnpairedLDRDataModule(root=str(tmp_path), patch_size=32, batch_size=2, val_images=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"ldr", "name"} and tuple(batch["ldr"].shape) == (2, 3, 32, 32)
    assert 0.0 <= float(batch["ldr"].min()) and float(batch["ldr"].max()) <= 1.0
    val = next(iter(dm.val_dataloader()))
    assert val["name"] == ["photo2.png"] and tuple(val["ldr"].shape) == (1, 3, 32, 32)
    assert UnpairedLDRDataModule(root=str(tmp_path), val_images=0).val_dataloader() == []
    with pytest.raises(HDRIOError, match="does not exist"):
        UnpairedLDRDataModule(root=str(tmp_path / "missing")).setup()
    with pytest.raises(ConfigError, match="val_images"):
        UnpairedLDRDataModule(root=str(tmp_path), val_images=3).setup()

    torch.manual_seed(0)
    method = DuHDRMethod(stage="unpaired", iterations=1, **TINY)
    trainer = L.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(method, datamodule=dm)
    assert "val/cycle_l2" in trainer.callback_metrics and float(trainer.callback_metrics["val/cycle_l2"]) > 0
    assert not any(k.startswith("val/psnr") for k in trainer.callback_metrics)
    with pytest.raises(ConfigError, match="needs batch keys"):
        DuHDRMethod(stage="joint", **TINY).compute_loss({"ldr": batch["ldr"]})


def test_gradients_finite_and_nonzero_for_every_parameter_joint():
    torch.manual_seed(0)
    method = DuHDRMethod(stage="joint", iterations=2, **TINY).train()
    batches = [fixed_batch(scene_seed=s, patch_size=64, emitter_range=(4.0, 16.0)) for s in (0, 2)]
    assert_gradients_reach_every_parameter(method, batches)


def test_joint_fine_tuning_overfits_one_scene():
    """The whole primal chain (``predict_image``, OOnet output) memorises ONE fixed example.

    Test-only settings (class defaults untouched): stage ``joint`` (Algorithm 1 line 11, OOnet loss),
    width 1/8, ``iterations=1`` (one ITnet pass, for time; the recursion is tested above), Adam lr
    3e-4 (official 1e-5), procedural scene 0 at 64 px with ``emitter_range=(4, 16)``, synthesis seed 0;
    BatchNorm normalises by the batch itself in both measurements (``batch_statistics``).
    """
    batch = fixed_batch(scene_seed=0, emitter_range=(4.0, 16.0), patch_size=64)
    stats = highlight_stats(batch)
    assert stats["clip_fraction"] > 0.05 and stats["p999"] > 4.0
    torch.manual_seed(0)
    method = DuHDRMethod(stage="joint", iterations=1, lr=3e-4, **TINY)
    result = overfit(method, batch, steps=300, eval_every=25, stop_gain=10.0, batch_statistics=True)
    print(f"DuHDR joint overfit: psnr_mu {result} ({stats})")
    assert result.gain >= 10.0 and result.steps <= 300


def test_stagewise_default_runs_algorithm_1_in_order(tmp_path):
    """The default ``stagewise`` run: each stage trains only its networks, at its official rate."""
    import lightning as L

    from hdrlab.data import ProceduralDataModule

    assert DuHDRMethod.__init__.__kwdefaults__["stage"] == "stagewise"
    torch.manual_seed(0)
    shares = dict.fromkeys(("dequantization", "linearization", "hallucination", "refinement", "joint"), 1)
    method = DuHDRMethod(stage_shares=shares, iterations=1, **TINY)
    rows = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.before = {n: [p.detach().clone() for p in s.parameters()] for n, s in module.subnetworks_all().items()}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            changed = {n for n, s in module.subnetworks_all().items()
                       if any(not torch.equal(a, b) for a, b in zip(s.parameters(), self.before[n]))}
            rows.append((module.active_stage, trainer.optimizers[0].param_groups[0]["lr"], changed))

    data = ProceduralDataModule(num_train_scenes=6, num_val_scenes=1, patch_size=64, batch_size=2, seed=0,
                                jpeg_quality=(90, 100))
    L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0, default_root_dir=str(tmp_path), callbacks=[Record()]).fit(method, datamodule=data)
    assert [r[0] for r in rows] == list(shares)
    assert [r[1] for r in rows] == [1e-4, 1e-4, 1e-4, 1e-5, 1e-5]
    for stage, _, changed in rows:
        assert changed == set(STAGE_TRAINABLE[stage]), (stage, changed)
    with pytest.raises(ConfigError, match="unpaired"):
        DuHDRMethod(stage_shares={"unpaired": 1}, **TINY)
