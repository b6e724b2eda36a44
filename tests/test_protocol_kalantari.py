"""The ``kalantari2017`` protocol (PSNR-L, PSNR-mu, SSIM-L, SSIM-mu) against an independent numpy
statement of its equations, and its plumbing through ``hdrlab eval``, ``hdrlab test`` and ``hdrlab compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hdrlab import io
from hdrlab.errors import ConfigError
from hdrlab.metrics import PROTOCOLS, build_metric, build_metrics, darkest_relative_scale

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "overrides" / "tiny.yaml")
MU = 5000.0
NAMES = ("k17_psnr_l", "k17_psnr_mu", "k17_ssim_l", "k17_ssim_mu")


# ---------------------------------------------------------------- independent reference (numpy)
def _t(x: np.ndarray) -> np.ndarray:
    return np.log(1.0 + MU * x) / np.log(1.0 + MU)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10.0 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 on one ``[H, W]`` channel: 11x11 Gaussian (sigma 1.5), valid windows, L = 1."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()

    def filt(x):
        win = np.lib.stride_tricks.sliding_window_view(x, (11, 11))
        return np.einsum("ijkl,kl->ij", win, w)

    ma, mb = filt(a), filt(b)
    va, vb, cab = filt(a * a) - ma**2, filt(b * b) - mb**2, filt(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    return float(np.mean(((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the per-channel SSIMs of ``[3, H, W]`` images."""
    return float(np.mean([_ssim_channel(a[c], b[c]) for c in range(3)]))


def reference(est: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    e = np.clip(est, 0.0, 1.0)
    return {
        "k17_psnr_l": _psnr(e, gt),
        "k17_psnr_mu": _psnr(_t(e), _t(gt)),
        "k17_ssim_l": _ssim(e, np.clip(gt, 0.0, 1.0)),
        "k17_ssim_mu": _ssim(_t(e), np.clip(_t(gt), 0.0, 1.0)),
    }


def synthetic_pair(seed: int = 0, h: int = 37, w: int = 53) -> tuple[np.ndarray, np.ndarray]:
    """A smooth HDR ground truth in [0, 1] and a perturbed estimate (partly outside [0, 1])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    gt = np.stack([0.5 + 0.5 * np.sin(6 * xx * (c + 1) + 3 * yy + c) for c in range(3)])
    gt = np.clip(gt**3 * np.array([1.0, 0.7, 0.4]).reshape(3, 1, 1), 0.0, 1.0)
    est = gt * (1.0 + 0.1 * rng.standard_normal(gt.shape)) + 0.02 * rng.standard_normal(gt.shape)
    return est, gt


def _scores(est: np.ndarray, gt: np.ndarray, **update) -> dict[str, float]:
    out = {}
    for name in NAMES:
        metric = build_metric(name, align="none")
        metric.update(torch.from_numpy(est)[None], torch.from_numpy(gt)[None], **update)
        out[name] = float(metric.compute())
    return out


# ---------------------------------------------------------------- equations
def test_metrics_equal_the_independent_numpy_statement():
    est, gt = synthetic_pair()
    assert est.min() < 0 and est.max() > 1  # the clamp is exercised
    ours, ref = _scores(est, gt), reference(est, gt)
    for name in NAMES:
        assert ours[name] == pytest.approx(ref[name], abs=1e-5, rel=1e-5), name


def test_ssim_matches_the_opencv_filter2d_formulation():
    cv2 = pytest.importorskip("cv2")
    est, gt = synthetic_pair(seed=3)
    e, g = np.clip(est, 0, 1).transpose(1, 2, 0) * 255.0, np.clip(gt, 0, 1).transpose(1, 2, 0) * 255.0
    k = cv2.getGaussianKernel(11, 1.5)
    win = k @ k.T

    def f(x):
        return cv2.filter2D(x, -1, win)[5:-5, 5:-5]

    m1, m2 = f(e), f(g)
    v1, v2, c12 = f(e * e) - m1**2, f(g * g) - m2**2, f(e * g) - m1 * m2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = np.mean(((2 * m1 * m2 + c1) * (2 * c12 + c2)) / ((m1**2 + m2**2 + c1) * (v1 + v2 + c2)))
    assert _scores(est, gt)["k17_ssim_l"] == pytest.approx(float(expected), abs=1e-5)


def test_set_value_is_the_mean_of_per_image_values_and_scale_and_border_apply():
    (e1, g1), (e2, g2) = synthetic_pair(1), synthetic_pair(2)
    metric = build_metric("k17_psnr_mu", align="none")
    metric.update(torch.from_numpy(np.stack([e1, e2])), torch.from_numpy(np.stack([g1, g2])))
    per_image = [reference(e1, g1)["k17_psnr_mu"], reference(e2, g2)["k17_psnr_mu"]]
    assert float(metric.compute()) == pytest.approx(sum(per_image) / 2, abs=1e-5)

    # scale multiplies both images first; border crops both
    s = 0.25
    ours = _scores(e1 / s, g1 / s, scale=torch.tensor([s]))
    for name, value in reference(e1, g1).items():
        assert ours[name] == pytest.approx(value, abs=1e-5)
    cropped = build_metric("k17_ssim_mu", align="none")
    cropped.border = 3
    cropped.update(torch.from_numpy(e1)[None], torch.from_numpy(g1)[None])
    assert float(cropped.compute()) == pytest.approx(reference(e1[:, 3:-3, 3:-3], g1[:, 3:-3, 3:-3])["k17_ssim_mu"],
                                                     abs=1e-5)


def test_darkest_relative_scale_uses_the_bracket_else_the_ground_truth_peak():
    hdr = torch.rand(2, 3, 4, 4) * 8
    ev = torch.tensor([[-3.0, 0.0, 3.0], [-2.0, 0.0, 2.0]])
    assert torch.allclose(darkest_relative_scale({"hdr": hdr, "ev": ev}), torch.tensor([0.125, 0.25]))
    assert torch.allclose(darkest_relative_scale({"hdr": hdr}), 1.0 / hdr.flatten(1).amax(1))


def test_protocol_registry_and_user_errors():
    assert PROTOCOLS["kalantari2017"].metrics == ("k17_psnr_mu", "k17_psnr_l", "k17_ssim_mu", "k17_ssim_l")
    assert PROTOCOLS["hdrlab"].align == "median"
    keys = set(build_metrics(PROTOCOLS["kalantari2017"].metrics, align="none", prefix="test/").keys())
    assert keys == {f"test/{n}" for n in NAMES}  # whole images only: no _clipped columns
    with pytest.raises(ConfigError, match="align"):
        build_metric("k17_psnr_mu", align="median")
    with pytest.raises(ConfigError, match="region"):
        build_metric("k17_psnr_mu", region="clipped", align="none")


# ---------------------------------------------------------------- commands
def test_eval_protocol_json_gives_the_same_numbers(tmp_path, capsys):
    from hdrlab.commands.evaluate import main

    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir(), gt_dir.mkdir()
    pairs = {"a": synthetic_pair(4), "b": synthetic_pair(5, h=31, w=41)}
    for stem, (est, gt) in pairs.items():
        io.write_pfm(pred_dir / f"{stem}.pfm", torch.from_numpy(est).float().clamp_min(0))  # files hold no negatives
        io.write_pfm(gt_dir / f"{stem}.pfm", torch.from_numpy(gt).float())
    assert main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--protocol", "kalantari2017", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for stem, (est, gt) in pairs.items():
        ref = reference(io.read_hdr(pred_dir / f"{stem}.pfm").double().numpy(),
                        io.read_hdr(gt_dir / f"{stem}.pfm").double().numpy())
        assert set(out["per_image"][stem]) == set(NAMES)
        for name in NAMES:
            assert out["per_image"][stem][name] == pytest.approx(ref[name], abs=1e-5)


def test_test_protocol_logs_its_keys_on_the_darkest_relative_scale_and_compare_shows_them(tmp_path, capsys):
    from hdrlab.cli import build_cli
    from hdrlab.commands.compare import main as compare_main
    from hdrlab.data import ProceduralDataModule
    from hdrlab.methods.baselines import inverse_crf

    run = tmp_path / "k17"
    cli = build_cli(["test", "--config", str(REPO / "experiments" / "baseline_inverse_crf.yaml"), "--config", TINY,
                     "--data.init_args.num_test_scenes", "2", "--data.init_args.bracket_ev", "[-3, 0, 3]",
                     "--wandb", "disabled", "--run_dir", str(run), "--protocol", "kalantari2017"])
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    assert set(logged) == {f"test/{n}" for n in NAMES}

    dm = ProceduralDataModule(num_test_scenes=2, patch_size=64, batch_size=2, bracket_ev=[-3, 0, 3])
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    s = 2.0 ** batch["ev"][:, 0].double().numpy()
    pred = inverse_crf(batch["ldr"], batch["crf_inverse"]).double().numpy()
    hdr = batch["hdr"].double().numpy()
    refs = [reference(pred[i] * s[i], hdr[i] * s[i]) for i in range(2)]
    for name in NAMES:
        assert logged[f"test/{name}"] == pytest.approx((refs[0][name] + refs[1][name]) / 2, abs=1e-4), name
    # the per-image rows (what compare --test reads) are on the same darkest-relative scale
    import csv

    rows = list(csv.DictReader((run / "test_per_sample.csv").open()))
    for name in NAMES:
        assert [float(r[name]) for r in rows] == pytest.approx([refs[0][name], refs[1][name]], abs=1e-4), name

    capsys.readouterr()
    assert compare_main([str(run), "--test", "--protocol", "kalantari2017", "--no_pdf",
                         "-o", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "Evaluation protocol: kalantari2017" in out
    for label in ("PSNR-μ (K17)", "PSNR-L (K17)", "SSIM-μ (K17)", "SSIM-L (K17)"):
        assert label in out
    assert "PU21" not in out
    assert "Evaluation protocol: kalantari2017" in (tmp_path / "report" / "index.html").read_text()


def test_test_protocol_refuses_other_subcommands(tmp_path):
    from hdrlab.cli import build_cli

    with pytest.raises(ConfigError, match="--protocol applies to hdrlab test only"):
        build_cli(["validate", "--config", str(REPO / "experiments" / "baseline_inverse_crf.yaml"), "--config", TINY,
                   "--wandb", "disabled", "--run_dir", str(tmp_path / "v"), "--protocol", "kalantari2017"])
