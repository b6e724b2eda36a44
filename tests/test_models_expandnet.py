"""ExpandNet (Marnerides et al., Eurographics 2018): network, official weights, equivalence with the
official inference, loss, method (overfit, gradients) and the experiment file.

References: the parameter count of the official ``model.py`` (456,899), the official ``weights.pth``
and reference outputs of the official ``expand.py`` (``tests/fixtures/expandnet_official``, its
README gives the command).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError
from hdrlab.losses.expandnet import expandnet_loss
from hdrlab.methods.expandnet import ExpandNetMethod
from hdrlab.models.direct.expandnet import ExpandNet, expandnet_inference, map_range
from support.overfit import assert_gradients_reach_every_parameter, fixed_batch, overfit

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "expandnet_official"
#: (input PNG stem, official --patch_size, reference file)
OFFICIAL_CASES = [
    ("venice_sunset_1k", 256, "venice_sunset_1k_prediction.npy"),
    ("st_fagans_interior_1k", 256, "st_fagans_interior_1k_prediction.npy"),
    ("forest_slope_1k", 256, "forest_slope_1k_prediction.npy"),
    ("venice_sunset_1k", 64, "venice_sunset_1k_prediction_p64.npy"),  # exercises the tile stitching
]


@pytest.fixture(scope="module")
def official_net(expandnet_weights: Path) -> ExpandNet:
    net = ExpandNet()
    net.load_state_dict(torch.load(expandnet_weights, map_location="cpu", weights_only=True), strict=True)
    return net.eval()


def test_parameter_count_is_official():
    with FakeTensorMode():
        net = ExpandNet()
        count = sum(p.numel() for p in net.parameters())
        branches = {name: sum(p.numel() for p in getattr(net, name).parameters())
                    for name in ("local_net", "mid_net", "glob_net", "end_net")}
    assert count == 456_899
    assert branches == {"local_net": 75_648, "mid_net": 112_576, "glob_net": 252_032, "end_net": 16_643}


def test_width_shapes_and_errors():
    net = ExpandNet(width=0.125)
    y = net(torch.rand(2, 3, 40, 56))
    assert y.shape == (2, 3, 40, 56) and bool(((y > 0) & (y < 1)).all())
    with pytest.raises(ConfigError, match="width"):
        ExpandNet(width=0)
    with pytest.raises(ConfigError, match="overlap"):
        net.predict_patches(torch.rand(1, 3, 8, 8), patch_size=16, overlap=3)
    with pytest.raises(ConfigError, match="patch_size"):
        net.predict_patches(torch.rand(1, 3, 8, 8), patch_size=20, overlap=20)


def test_map_range_per_image():
    x = torch.stack([torch.linspace(2, 6, 48).view(3, 4, 4), torch.full((3, 4, 4), 7.0)])
    y = map_range(x)
    assert torch.allclose(y[0].flatten(), torch.linspace(0, 1, 48), atol=1e-6)
    assert torch.equal(y[1], torch.zeros(3, 4, 4))  # constant image -> low
    assert torch.allclose(map_range(x[:1], 1.0, 3.0).flatten(), torch.linspace(1, 3, 48), atol=1e-6)


def test_patchwise_equals_whole_image_on_padded_input():
    torch.manual_seed(1)
    net = ExpandNet(width=0.25).eval()
    x = torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        glob = net.global_features(x)
        tiled = net.predict_patches(x, patch_size=24, overlap=20)
        whole = net.fuse(F.pad(x, (10, 10, 10, 10)), glob)[..., 10:-10, 10:-10]
    # each output pixel sees a 5x5 (local) / 9x9 (dilated) window; the 10 px margin covers both
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_official_weights_load_strictly(official_net: ExpandNet):
    assert sum(p.numel() for p in official_net.parameters()) == 456_899


@pytest.mark.parametrize("stem,patch_size,reference", OFFICIAL_CASES)
def test_matches_official_inference(official_net: ExpandNet, stem: str, patch_size: int, reference: str):
    bgr = cv2.imread(str(FIXTURES / f"{stem}.png"), cv2.IMREAD_COLOR)
    assert bgr is not None and bgr.dtype == np.uint8
    ldr = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)[None].float()  # RGB 0..255
    pred = expandnet_inference(official_net, ldr, patch_size=patch_size)
    expected = np.load(FIXTURES / reference)[..., ::-1]  # official: BGR [H, W, 3]
    got = pred[0].permute(1, 2, 0).numpy()
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-4
    assert float(got.min()) == 0.0 and float(got.max()) == pytest.approx(1.0, abs=1e-6)


def test_loss_matches_official_definition():
    torch.manual_seed(2)
    pred, target = torch.rand(2, 3, 5, 6), torch.rand(2, 3, 5, 6)
    terms = expandnet_loss(pred, target)
    cos = (pred * target).sum(1) / (pred.norm(dim=1) * target.norm(dim=1))
    l1 = (pred - target).abs().mean()
    torch.testing.assert_close(terms["l1"], l1)
    torch.testing.assert_close(terms["cosine"], 5 * (1 - cos).mean())
    torch.testing.assert_close(terms["total"], l1 + 5 * (1 - cos).mean())
    assert float(expandnet_loss(target, target)["total"]) == pytest.approx(0.0, abs=1e-6)


def test_method_optimizer_and_prediction():
    method = ExpandNetMethod(width=0.125)
    opt = method.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["lr"] == 7e-5 and group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0.0
    batch = fixed_batch(scene_seed=0, patch_size=32)
    pred = method.predict_image(batch)
    assert pred.shape == (1, 3, 32, 32) and float(pred.min()) == 0.0
    with pytest.raises(ConfigError, match="overlap"):
        ExpandNetMethod(overlap=5)


def test_tiles_share_the_whole_image_context():
    torch.manual_seed(3)
    method = ExpandNetMethod(width=0.25).eval()
    ldr = torch.rand(1, 3, 48, 64) * 0.8 + 0.1
    context = method.global_branch(ldr)
    whole = method.predict_tile({"ldr": ldr}, context)
    left = method.predict_tile({"ldr": ldr[..., :32]}, context)
    # a tile's interior (>= 10 px from its cut) equals the whole-image result
    torch.testing.assert_close(left[..., :22], whole[..., :22], atol=1e-6, rtol=0)
    torch.testing.assert_close(map_range(whole), method.predict_image({"ldr": ldr}), atol=1e-6, rtol=0)


def test_overfits_one_scene():
    """Test-only settings: width 0.5, lr 2e-3 (official 7e-5), 32 px patch, emitter_range (2, 5).
    Measured (1 thread): 16.29 -> 26.65 dB (+10.36) at step 225. With the package's default emitters
    (1e3..1e5 x diffuse) the min-max target is ~0 outside the peaks and PSNR-mu stays at 23.1 dB
    (-0.05 dB after 300 steps, width 1, lr 1e-3); at the official lr 7e-5 the gain is -0.8 dB."""
    torch.manual_seed(0)
    batch = fixed_batch(scene_seed=0, patch_size=32, emitter_range=(2.0, 5.0))
    method = ExpandNetMethod(width=0.5, lr=2e-3)
    result = overfit(method, batch, steps=300, stop_gain=10.0, eval_every=25)
    assert result.gain >= 10.0, str(result)


def test_gradients_reach_every_parameter():
    method = ExpandNetMethod(width=0.25)
    batches = [fixed_batch(scene_seed=s, patch_size=32) for s in (0, 1)]
    assert_gradients_reach_every_parameter(method, batches)


def test_experiment_yaml_fast_dev_run(tmp_path):
    from hdrlab.cli import build_cli

    cli = build_cli([
        "fit", "--config", str(REPO / "experiments/expandnet.yaml"),
        "--config", str(REPO / "experiments/overrides/tiny.yaml"),
        "--trainer.fast_dev_run", "true", "--wandb", "disabled", "--run_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert isinstance(cli.model, ExpandNetMethod)
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_import_weights_cli_converts_the_official_file(expandnet_weights, tmp_path):
    """``hdrlab import-weights expandnet weights.pth`` maps every official tensor (strict load in
    ``hdrlab test``) and round-trips back to the official state dict."""
    from hdrlab.cli import build_cli, main
    from hdrlab.weights_import import EXPANDNET

    weights = expandnet_weights
    official = torch.load(weights, map_location="cpu", weights_only=True)
    out = tmp_path / "expandnet_official.ckpt"
    config = ["--config", str(REPO / "experiments" / "expandnet.yaml")]
    assert main(["import-weights", "expandnet", str(weights), "-o", str(out), *config]) == 0
    (back,) = EXPANDNET.inverse(torch.load(out, map_location="cpu", weights_only=True)["state_dict"])
    assert back.keys() == official.keys() and all(torch.equal(back[k], official[k]) for k in official)
    cli = build_cli(["test", *config, "--data.init_args.num_test_scenes", "1", "--data.init_args.patch_size", "64",
                     "--data.init_args.batch_size", "1", "--wandb", "disabled", "--run_dir", str(tmp_path / "run"),
                     "--ckpt_path", str(out)])
    state = cli.model.state_dict()
    assert all(torch.equal(state[f"net.{k}"], v) for k, v in official.items())
    # reconstruct with the imported checkpoint and no further flags: the official inference on the
    # whole photo (its .config.yaml found next to it), times one printed factor per image
    from hdrlab.commands.reconstruct import input_scale_factor
    from hdrlab.io import read_hdr, read_ldr

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "venice_sunset_1k.png").write_bytes((FIXTURES / "venice_sunset_1k.png").read_bytes())
    expected = torch.from_numpy(np.load(FIXTURES / "venice_sunset_1k_prediction.npy")[..., ::-1].copy()).permute(2, 0, 1)
    assert main(["reconstruct", str(photos), "-o", str(tmp_path / "kept"), "--ckpt", str(out), "--keep_scale"]) == 0
    kept = torch.as_tensor(read_hdr(tmp_path / "kept" / "venice_sunset_1k.exr"))
    assert float((kept - expected).abs().max()) <= 1e-4
    assert main(["reconstruct", str(photos), "-o", str(tmp_path / "scaled"), "--ckpt", str(out)]) == 0
    scaled = torch.as_tensor(read_hdr(tmp_path / "scaled" / "venice_sunset_1k.exr"))
    factor = input_scale_factor(kept, read_ldr(photos / "venice_sunset_1k.png").image)
    assert factor > 1.0 and torch.allclose(scaled, kept * factor, rtol=1e-6, atol=0)
