"""``hdrlab test`` writes one row of metrics per test image (``test_per_sample.csv``), and the
held-out splits are pinned: identical for every experiment seed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from hdrlab import io, tonemap
from hdrlab.callbacks.per_sample_metrics import output_stem
from hdrlab.cli import build_cli
from hdrlab.data import ProceduralDataModule
from hdrlab.methods.baselines import inverse_crf
from hdrlab.metrics.alignment import align_scale

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "experiments" / "overrides" / "tiny.yaml")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_test_writes_per_image_rows_matching_the_aggregate_and_an_independent_display_psnr(tmp_path):
    run = tmp_path / "baseline"
    cli = build_cli(["test", "--config", str(REPO / "experiments" / "baseline_inverse_crf.yaml"), "--config", TINY,
                     "--data.init_args.num_test_scenes", "3", "--wandb", "disabled", "--run_dir", str(run)])
    rows = _rows(run / "test_per_sample.csv")
    assert [r["name"] for r in rows] == [f"procedural_{20_000_000 + i:08d}" for i in range(3)]
    logged = cli.trainer.callback_metrics
    for column in ("psnr_mu", "psnr_mu_clipped", "pu21_psnr", "pu21_psnr_clipped", "pu21_ssim"):
        per_image = [float(r[column]) for r in rows]
        assert all(math.isfinite(v) for v in per_image)
        # the aggregated test/<metric> is the mean of the per-image values
        assert sum(per_image) / 3 == pytest.approx(float(logged[f"test/{column}"]), abs=1e-4)

    # display columns recomputed by hand: PSNR (peak 1) of display(median-aligned prediction)
    dm = ProceduralDataModule(num_test_scenes=3, patch_size=64, batch_size=3)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    pred = inverse_crf(batch["ldr"], batch["crf_inverse"])
    aligned = align_scale(pred, batch["hdr"], mode="median", mask=batch["clip_mask"] < 0.5)
    error = (tonemap.display(aligned) - tonemap.display(batch["hdr"])) ** 2
    clipped = batch["clip_mask"].expand_as(error) > 0.5
    for i, row in enumerate(rows):
        assert float(row["clipped_fraction"]) == pytest.approx(float(batch["clip_mask"][i].mean()))
        psnr_all = -10 * math.log10(float(error[i].mean()))
        psnr_clipped = -10 * math.log10(float(error[i][clipped[i]].mean()))
        assert float(row["display_psnr"]) == pytest.approx(psnr_all, abs=1e-3)
        assert float(row["display_psnr_clipped"]) == pytest.approx(psnr_clipped, abs=1e-3)
        # signed bias in the clipped region: the baseline leaves clipped pixels at the clipping
        # level, so it sits below the truth there (by hand: mean log2 of aligned / truth)
        ratio = torch.log2(aligned[i].clamp_min(1e-6)) - torch.log2(batch["hdr"][i].clamp_min(1e-6))
        assert float(row["log2_ratio_clipped"]) == pytest.approx(float(ratio[clipped[i]].mean()), abs=1e-4)
        assert float(row["log2_ratio_clipped"]) < 0


def test_held_out_splits_do_not_depend_on_the_experiment_seed():
    def first(seed: int, split: str) -> dict[str, torch.Tensor]:
        dm = ProceduralDataModule(num_train_scenes=2, num_val_scenes=2, num_test_scenes=2, patch_size=32,
                                  batch_size=2, seed=seed)
        dm.setup(None)
        loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
        return next(iter(loader))

    for split in ("val", "test"):
        a, b = first(0, split), first(7, split)
        assert a["name"] == b["name"]
        assert torch.equal(a["ldr"], b["ldr"]) and torch.equal(a["hdr"], b["hdr"])
    a, b = first(0, "train"), first(7, "train")
    assert not torch.equal(a["ldr"], b["ldr"])  # the seed still keys the training randomness


@pytest.mark.parametrize(("experiment", "domain"), [("baseline_inverse_crf", "linear"), ("le2023_mertens", "display")])
def test_save_test_outputs_writes_prediction_input_and_reference_per_image(tmp_path, experiment, domain):
    run = tmp_path / experiment
    build_cli(["test", "--config", str(REPO / "experiments" / f"{experiment}.yaml"), "--config", TINY,
               "--data.init_args.num_test_scenes", "2", "--wandb", "disabled", "--run_dir", str(run),
               "--save_test_outputs", "true"])
    folder = run / "test_outputs"
    names = [r["name"] for r in _rows(run / "test_per_sample.csv")]
    manifest = json.loads((folder / "outputs.json").read_text())
    assert manifest["domain"] == domain and manifest["align"] == "median"
    assert manifest["scenes"] == {name: name for name in names}  # procedural names are file-safe

    dm = ProceduralDataModule(num_test_scenes=2, patch_size=64, batch_size=2)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["name"] == names
    for i, name in enumerate(names):
        pred = io.read_hdr(folder / f"{name}.exr")
        ldr = io.read_ldr(folder / f"{name}_input.png").image
        reference = io.read_hdr(folder / f"{name}_reference.exr")
        assert pred.shape == ldr.shape == reference.shape == batch["hdr"][i].shape
        assert torch.equal(ldr, batch["ldr"][i])  # 8-bit codes round-trip exactly
        assert torch.allclose(reference, batch["hdr"][i])  # float32 EXR is lossless
        if domain == "linear":
            # the raw (unaligned) prediction: the no-hallucination baseline is the inverse CRF of the input
            assert torch.allclose(pred, inverse_crf(batch["ldr"][i:i + 1], batch["crf_inverse"][i:i + 1])[0], atol=1e-6)
        else:
            assert 0.0 <= float(pred.min()) and float(pred.max()) <= 1.0
    assert not list(folder.glob(".*"))  # no temporary file left behind


def test_test_outputs_are_off_by_default(tmp_path):
    run = tmp_path / "baseline"
    build_cli(["test", "--config", str(REPO / "experiments" / "baseline_inverse_crf.yaml"), "--config", TINY,
               "--data.init_args.num_test_scenes", "1", "--wandb", "disabled", "--run_dir", str(run)])
    assert (run / "test_per_sample.csv").is_file() and not (run / "test_outputs").exists()


def test_output_stem_makes_scene_names_file_safe():
    assert output_stem("procedural_00000001") == "procedural_00000001"
    assert output_stem("sub/dir/img 1.hdr") == "sub_dir_img_1.hdr"
    assert output_stem("x/a.png|y/b.png") == "x_a.png_y_b.png"
