"""``hdrlab reconstruct``: a tiny Le2023 + known-CRF Debevec TwoStage trained here through ``hdrlab fit``
on procedural data, applied to an 8-bit LDR rendered (gamma 2.2, the command's assumed CRF) from a real
HDR file; plus the command's helpers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hdrlab.camera import CRF, auto_exposure_ev, luminance
from hdrlab.commands import reconstruct
from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.io import read_hdr, read_ldr, write_png

REPO = Path(__file__).resolve().parents[1]
REAL_HDR = "polyhaven_drei/empty_warehouse_01_1k.hdr"  # bright windows: clipped radiance up to ~250x
#: generator exposures of the tiny model: short steps are learnt quickly (recoverable up to 4x the clip level)
TINY_EV = "[-2.0, -1.0]"
#: 400, not 200: after 200 steps the outcome depended on the training trajectory (training seeds 0-3
#: here: unclipped median relative difference 0.46 / 0.24 / 0.13 / 0.16, seed 1 losing to the
#: baseline in the clipped region; 0.17 for seed 0 where the test was written); after 400 steps
#: seeds 0-3 give 0.15 / 0.12 / 0.08 / 0.10 and clipped |ln error| 1.48-1.72 vs the baseline's 1.87
TRAIN_STEPS = 400


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """``hdrlab fit`` of le2023_debevec.yaml at tiny size (width 1/8, 4 U-Net levels, 64 px, gamma CRFs)."""
    from hdrlab.cli import build_cli

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    build_cli([
        "fit", "--config", str(REPO / "experiments/le2023_debevec.yaml"),
        "--config", str(REPO / "experiments/overrides/tiny.yaml"),
        "--model.init_args.generator.init_args.levels", "4",
        "--model.init_args.generator.init_args.ev", TINY_EV,
        "--model.init_args.lr", "3e-3",
        "--data.init_args.patch_size", "64", "--data.init_args.num_train_scenes", "16",
        "--data.init_args.crf_family", "gamma",  # photos are assumed gamma-2.2-like: train on that family
        "--trainer.max_steps", str(TRAIN_STEPS), "--trainer.limit_val_batches", "0",
        "--checkpoint_every_n_steps", str(TRAIN_STEPS), "--wandb", "disabled", "--run_dir", str(run_dir),
    ])
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    return run_dir


def render_real_ldr(real_hdr_dir: Path, out: Path, *, height: int = 128, width: int = 192) -> torch.Tensor:
    """Crop around the brightest pixel of a real HDR, expose 5% of it to clipping, render 8-bit gamma 2.2.

    Returns:
        The exposed linear crop ``[3, h, w]`` (input clip level 1.0): the ground truth.
    """
    hdr = read_hdr(real_hdr_dir / REAL_HDR)
    lum = luminance(hdr)
    y, x = divmod(int(lum.flatten().argmax()), hdr.shape[-1])
    top = min(max(0, y - height // 2), hdr.shape[-2] - height)
    left = min(max(0, x - width // 2), hdr.shape[-1] - width)
    crop = hdr[:, top:top + height, left:left + width]
    exposed = crop * 2.0 ** float(auto_exposure_ev(crop, clipped_fraction=0.05))
    ldr = (CRF.gamma(2.2)(exposed.clamp(0, 1)) * 255).round().to(torch.uint8)
    write_png(out, ldr.permute(1, 2, 0).numpy())
    return exposed


def test_reconstruct_beats_no_hallucination_in_clipped_regions(tiny_run, real_hdr_dir, tmp_path):
    truth = render_real_ldr(real_hdr_dir, tmp_path / "photo.png")
    out = tmp_path / "out"
    code = reconstruct.main([str(tmp_path / "photo.png"), "-o", str(out),
                             "--ckpt", str(tiny_run / "checkpoints/last.ckpt"), "--tile", "128", "--overlap", "32"])
    assert code == 0
    pred = read_hdr(out / "photo.exr")
    preview = read_ldr(out / "photo_preview.png").image
    ldr = read_ldr(tmp_path / "photo.png").image
    assert pred.shape == truth.shape == preview.shape
    baseline = ldr ** 2.2  # the input's inverse CRF: no hallucination
    clipped = (ldr.amax(0) >= 254.5 / 255).expand_as(pred)
    well = (ldr.amax(0) < 0.9).expand_as(pred) & (ldr.amin(0) > 0.05).expand_as(pred)
    assert 0.03 < clipped.float().mean() < 0.2

    def log_err(x):
        return (x.clamp_min(1e-4).log() - truth.clamp_min(1e-4).log()).abs()[clipped].mean()

    err_pred, err_base = float(log_err(pred)), float(log_err(baseline))
    rel_unclipped = float(((pred - baseline).abs() / baseline.clamp_min(1e-3))[well].median())
    print(f"reconstruct on {REAL_HDR}: clipped-region mean |ln error| {err_pred:.3f} vs no-hallucination "
          f"{err_base:.3f}; unclipped median relative difference to the inverse CRF {rel_unclipped:.4f}; "
          f"max radiance {float(pred.max()):.2f}")
    assert err_pred < err_base
    # Generated members also vote in well-exposed pixels; after 400 steps their eval-mode BatchNorm
    # statistics (procedural 64 px patches) still bias them on a real photo: measured 0.08-0.15.
    assert rel_unclipped < 0.3


def test_reconstruct_merger_choices_and_folder_input(tiny_run, tmp_path):
    g = torch.Generator().manual_seed(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        write_png(photos / name, torch.rand(3, 40, 56, generator=g))
    (photos / "notes.txt").write_text("not a photo")
    ckpt = str(tiny_run / "checkpoints/last.ckpt")
    method = reconstruct.load_method(ckpt)
    ldr = read_ldr(photos / "a.png").image
    with torch.no_grad():
        known = reconstruct.reconstruct_image(method, ldr, merger="debevec_known_crf")
        own = reconstruct.reconstruct_image(method, ldr, merger="own")
        mertens = reconstruct.reconstruct_image(method, ldr, merger="mertens")
    assert known.shape == (3, 40, 56) and torch.allclose(known, own, rtol=1e-5, atol=1e-6)
    assert float(mertens.max()) <= 1.0 + 1e-6  # a display fusion linearised with the assumed CRF
    assert reconstruct.main([str(photos), "-o", str(tmp_path / "out"), "--ckpt", ckpt, "--merger", "debevec"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.exr", "a_preview.png", "b.exr", "b_preview.png"]


def test_helpers_and_errors(tmp_path):
    x = torch.rand(1, 3, 50, 70)
    padded, (h, w) = reconstruct.pad_to_multiple(x, 64)
    assert padded.shape[-2:] == (64, 128) and (h, w) == (50, 70)
    assert torch.equal(padded[..., :50, :70], x) and torch.equal(padded[..., 63, 127], x[..., 49, 69])
    # tiles blend back to the untiled result for a pointwise function
    y = reconstruct.run_tiled(lambda t: t.square(), padded, tile=64, overlap=32, multiple=32)
    assert torch.allclose(y, padded.square(), atol=1e-6)
    with pytest.raises(HDRIOError, match="no such file"):
        reconstruct.find_inputs(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HDRIOError, match="no photos"):
        reconstruct.find_inputs(tmp_path / "empty")
    (tmp_path / "x.exr").write_bytes(b"0")
    with pytest.raises(HDRIOError, match="reconstruct reads"):
        reconstruct.find_inputs(tmp_path / "x.exr")
    (tmp_path / "run/checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, tmp_path / "run/checkpoints/last.ckpt")
    with pytest.raises(ConfigError, match="no config.yaml"):
        reconstruct.load_method(tmp_path / "run/checkpoints/last.ckpt")
    assert math.isclose(reconstruct.CLIP_THRESHOLD * 255, 254.5)


def test_input_scale_factor_is_one_median_ratio_and_none_when_all_clipped():
    from hdrlab.commands.reconstruct import input_scale_factor

    ldr = torch.full((3, 4, 4), 0.5)
    ldr[:, 0, 0] = 1.0  # one clipped pixel is left out of the fit
    hdr = 0.25 * ldr ** 2.2
    hdr[:, 0, 0] = 100.0
    assert input_scale_factor(hdr, ldr) == pytest.approx(4.0, rel=1e-6)
    assert input_scale_factor(hdr, torch.ones(3, 4, 4)) is None
