"""Tests of ``hdrlab eval`` on temporary EXR / PNG files."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from hdrlab.cli import main as cli_main
from hdrlab.commands.evaluate import main
from hdrlab.errors import ConfigError
from hdrlab.io import read_hdr, write_exr
from hdrlab.metrics import PSNRL, PU21PSNR, PU21SSIM, PSNRMu

FAST = "psnr_mu,psnr_l,pu21_psnr,pu21_ssim"


def _scene(seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.05 + 0.6 * x + 0.1 * torch.rand(3, size, size, generator=g)
    base[:, : size // 4, : size // 4] = 4.0 + seed  # a highlight the input clipped
    return base * (1.0 + 0.2 * y)


@pytest.fixture()
def folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for i, name in enumerate(["a", "b"]):
        gt = _scene(i)
        pred = gt.clamp(max=1.0) * (0.5 + i) + 0.01 * torch.rand(gt.shape, generator=torch.Generator().manual_seed(9))
        write_exr(gt_dir / f"{name}.exr", gt)
        write_exr(pred_dir / f"{name}.exr", pred)
    return pred_dir, gt_dir


def test_json_values_equal_metric_classes(folders, capsys):
    pred_dir, gt_dir = folders
    assert main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", FAST, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"per_image", "mean"} and set(out["per_image"]) == {"a", "b"}
    for name in ("a", "b"):
        pred, gt = read_hdr(pred_dir / f"{name}.exr")[None], read_hdr(gt_dir / f"{name}.exr")[None]
        for key, cls in (("psnr_mu", PSNRMu), ("psnr_l", PSNRL), ("pu21_psnr", PU21PSNR), ("pu21_ssim", PU21SSIM)):
            assert out["per_image"][name][key] == pytest.approx(cls()(pred, gt).item(), abs=1e-9)
    for key in FAST.split(","):
        assert out["mean"][key] == pytest.approx((out["per_image"]["a"][key] + out["per_image"]["b"][key]) / 2)


def test_clipped_region_with_ldr_masks(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    ldr_dir = tmp_path / "ldr"
    ldr_dir.mkdir()
    for name in ("a", "b"):
        gt = read_hdr(gt_dir / f"{name}.exr")
        ldr = (gt.clamp(0, 1) ** (1 / 2.2) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert cv2.imwrite(str(ldr_dir / f"{name}.png"), cv2.cvtColor(np.ascontiguousarray(ldr), cv2.COLOR_RGB2BGR))
    args = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr_l,pu21_ssim", "--region", "clipped"]
    assert main([*args, "--clip_mask_from", str(ldr_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    gt = read_hdr(gt_dir / "a.exr")[None]
    pred = read_hdr(pred_dir / "a.exr")[None]
    clip = torch.from_numpy(cv2.imread(str(ldr_dir / "a.png")).max(axis=2) == 255)[None, None]
    assert out["per_image"]["a"]["psnr_l_clipped"] == pytest.approx(
        PSNRL(region="clipped")(pred, gt, clip_mask=clip).item(), abs=1e-9
    )
    assert set(out["mean"]) == {"psnr_l_clipped", "pu21_ssim_clipped"}


def test_default_metrics_table_output(folders, capsys):
    pred_dir, gt_dir = folders
    with pytest.warns(UserWarning, match="176"):  # ms_ssim on 48 px images falls back to SSIM
        assert main(["--pred", str(pred_dir / "a.exr"), "--gt", str(gt_dir / "a.exr")]) == 0
    text = capsys.readouterr().out
    for word in ("psnr_mu", "pu21_psnr", "ms_ssim", "cvvdp", "mean"):
        assert word in text
    assert "lpips" not in text


def test_unmatched_names_are_listed(folders, capsys):
    pred_dir, gt_dir = folders
    write_exr(gt_dir / "only_gt.exr", _scene(5))
    assert cli_main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr_l"]) == 2
    err = capsys.readouterr().err
    assert "only_gt" in err and "unmatched" in err


def test_lpips_without_weights_is_a_clear_error(folders, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    pred_dir, gt_dir = folders
    assert cli_main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "lpips"]) == 2
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and "empty_torch_home" in err


def test_no_clipped_pixels_gives_null(tmp_path, capsys):
    """An image without clipped pixels scores null in ``--region clipped``; the mean is over the others.
    When no image has one, every value would be null, which is an error naming the region and the fix."""
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for stem, gt in (("a", _scene(0)), ("b", _scene(1).clamp(max=0.9))):
        write_exr(tmp_path / "gt" / f"{stem}.exr", gt)
        write_exr(tmp_path / "pred" / f"{stem}.exr", gt * 0.7)
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--metrics", "psnr_l"]
    assert main([*args, "--region", "clipped", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_image"]["b"]["psnr_l_clipped"] is None
    assert out["mean"]["psnr_l_clipped"] == out["per_image"]["a"]["psnr_l_clipped"] is not None

    single = ["--pred", str(tmp_path / "pred" / "b.exr"), "--gt", str(tmp_path / "gt" / "b.exr"), "--metrics", "psnr_l"]
    with pytest.raises(ConfigError, match=r"--region clipped: no image has a clipped pixel.*use --region all"):
        main([*single, "--region", "clipped", "--json"])
    assert main([*single, "--json"]) == 0
    assert math.isclose(json.loads(capsys.readouterr().out)["mean"]["psnr_l"], 100.0)


def test_tiny_images_name_the_metrics_that_fit(tmp_path):
    """A 1x1 image is too small for the SSIM metrics and cvvdp; the error lists the ones that score it."""
    write_exr(tmp_path / "g.exr", torch.full((3, 1, 1), 0.5))
    write_exr(tmp_path / "p.exr", torch.full((3, 1, 1), 0.4))
    with pytest.raises(ConfigError, match=r"1x1 pixels.*pu21_ssim 6x6.*use --metrics psnr_mu,psnr_l,pu21_psnr"):
        main(["--pred", str(tmp_path / "p.exr"), "--gt", str(tmp_path / "g.exr")])


def test_table_keeps_full_names_on_a_narrow_terminal(tmp_path, capsys, monkeypatch):
    """The table is printed at its natural width: no header, stem or value is cut or ellipsised
    when the terminal (``COLUMNS``) is narrower than the table."""
    monkeypatch.setenv("COLUMNS", "40")
    stem = "a_rather_long_image_name_[v2]"  # brackets: a stem is not rich markup
    gt = _scene(0)
    write_exr(tmp_path / "g.exr", gt)
    write_exr(tmp_path / "p.exr", gt.clamp(max=1.0) * 0.8)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "g.exr").rename(tmp_path / "gt" / f"{stem}.exr")
    (tmp_path / "p.exr").rename(tmp_path / "pred" / f"{stem}.exr")
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
            "--metrics", f"{FAST},log2_ratio", "--region", "unclipped"]
    assert main([*args, "--json"]) == 0
    mean = json.loads(capsys.readouterr().out)["mean"]
    assert main(args) == 0
    text = capsys.readouterr().out
    keys = [f"{name}_unclipped" for name in [*FAST.split(","), "log2_ratio"]]
    assert set(mean) == set(keys)
    for key in keys:
        assert key in text, key
    assert stem in text
    for value in mean.values():
        assert f"{value:.4f}" in text
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) > 40  # wider than the terminal, not squeezed


def test_negative_tolerance_option_clamps_signed_pixels(tmp_path, capsys):
    """Negatives beyond the default tolerance are an error that names the option and a value that
    works; with ``--negative_tolerance`` at that value they are clamped and the pair is scored."""
    import OpenEXR

    from hdrlab.errors import HDRIOError

    gt = _scene(0).clamp(max=1.0)
    pred = gt.clone()
    pred[:, :2, :2] = -0.3
    with OpenEXR.File({"type": OpenEXR.scanlineimage},
                      {c: np.ascontiguousarray(pred[i].numpy()) for i, c in enumerate("RGB")}) as exr:
        exr.write(str(tmp_path / "p.exr"))
    write_exr(tmp_path / "g.exr", gt)
    args = ["--pred", str(tmp_path / "p.exr"), "--gt", str(tmp_path / "g.exr"), "--metrics", "psnr_l", "--json"]
    with pytest.raises(HDRIOError, match=r"p.exr: negative values down to -0.3.*hdrlab eval --negative_tolerance 0.31\b"):
        main(args)
    with pytest.warns(UserWarning, match=r"p.exr: clamped 12 small negative values"):
        assert main([*args, "--negative_tolerance", "0.31"]) == 0  # -0.3 is -0.30000001 in float32
    assert json.loads(capsys.readouterr().out)["mean"]["psnr_l"] > 0
    with pytest.raises(ConfigError, match=r"--negative_tolerance -1.0 must be a finite number >= 0"):
        main([*args, "--negative_tolerance", "-1"])
