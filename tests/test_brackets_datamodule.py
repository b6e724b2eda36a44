"""Tests of hdrlab.data.brackets: real-bracket DataModules on fake Kalantari / SICE layouts.

The fake Kalantari scenes are rendered from a known radiance ``R`` (relative to the middle
exposure) with the set's documented model: 16-bit TIFFs ``clip(R 2^ev)^(1/2.2)`` for ev -2, 0, 2,
``exposure.txt`` = 0 2 4 (lowest 0), ``HDRImg.hdr = R / 2^2`` (radiance for t = 1 at the darkest).
The fake SICE parts hold 8-bit JPEG sequences plus ``Label/<seq>.JPG``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hdrlab import io, tonemap
from hdrlab.data.brackets import (
    KalantariDataModule,
    SICEDataModule,
    heldout_names,
    sice_frame_indices,
)
from hdrlab.data.datamodules import ProceduralDataModule, collate_hdr_batch
from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.tonemap import display_inverse

H, W, P = 36, 44, 16
EVS = (0.0, 2.0, 4.0)


def _radiance(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(3, H, W, generator=g) * 1.2 - 0.8)  # relative to the reference exposure


def _write_tiff(path: Path, image: torch.Tensor) -> None:
    codes = np.rint(image.clamp(0, 1).permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    assert cv2.imwrite(str(path), np.ascontiguousarray(codes[..., ::-1]))


def _kalantari_scene(folder: Path, seed: int) -> torch.Tensor:
    folder.mkdir(parents=True)
    radiance = _radiance(seed)
    reference_ev = EVS[1] - EVS[0]
    for k, ev in enumerate(EVS):  # TIFF names sort like exposure.txt, as in the release
        exposed = (radiance * 2.0 ** (ev - EVS[1])).clamp(0, 1)
        _write_tiff(folder / f"262A{2600 + k}.tif", exposed ** (1 / 2.2))
    (folder / "exposure.txt").write_text("".join(f"{ev:g}\n" for ev in EVS))
    io.write_radiance_hdr(folder / "HDRImg.hdr", radiance / 2.0**reference_ev)
    return radiance


@pytest.fixture(scope="module")
def kalantari(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("kalantari")
    radiance = {}
    for i in range(1, 7):
        radiance[f"train/{i:03d}"] = _kalantari_scene(root / "training" / f"{i:03d}", i)  # lower-case split folder
    radiance["test/EXTRA/001"] = _kalantari_scene(root / "TEST" / "EXTRA" / "001", 100)
    radiance["test/PAPER/BarbequeDay"] = _kalantari_scene(root / "TEST" / "PAPER" / "BarbequeDay", 101)
    return root, radiance


def _rgbe_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal within Radiance RGBE precision (a shared exponent: ~1/256 of each pixel's max channel)."""
    return bool(torch.all((a - b).abs() <= 0.01 * b.amax(dim=0, keepdim=True) + 1e-4))


def _check_item_domains(batch: dict, n: int = 3) -> None:
    b = batch["hdr"].shape[0]
    size = batch["hdr"].shape[-2:]
    assert batch["stack"].shape == (b, n, 3, *size) and batch["ev"].shape == (b, n)
    assert batch["clip_mask"].shape == (b, 1, *size) and batch["crf_forward"].shape == (b, 1, 1024)
    for key in ("hdr", "hdr_clipped", "ldr", "ldr_float", "stack", "ev", "clip_mask", "crf_forward", "crf_inverse", "exposure_ev"):
        assert batch[key].dtype == torch.float32, key
    for key in ("ldr", "ldr_float", "stack", "hdr_clipped", "clip_mask"):
        assert 0.0 <= float(batch[key].min()) and float(batch[key].max()) <= 1.0, key
    assert torch.all(batch["ev"][:, 1:] > batch["ev"][:, :-1])
    assert torch.equal(batch["hdr_clipped"], batch["hdr"].clamp(max=1.0))
    assert isinstance(batch["name"], list) and len(batch["name"]) == b


def test_kalantari_batch_matches_synthesised_keys(kalantari) -> None:
    root, _ = kalantari
    dm = KalantariDataModule(root=str(root), patch_size=P, batch_size=2, num_val_scenes=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    synth = ProceduralDataModule(num_train_scenes=2, patch_size=P, batch_size=2, bracket_ev=[-2.0, 0.0, 2.0])
    synth.setup("fit")
    reference = next(iter(synth.train_dataloader()))
    assert set(batch) == set(reference)
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert batch[key].dim() == value.dim() and batch[key].dtype == value.dtype, key
    _check_item_domains(batch)
    assert batch["stack"].shape[-2:] == (P, P)
    assert torch.equal(batch["ev"], torch.tensor([[-2.0, 0.0, 2.0]] * 2))
    assert torch.equal(batch["ldr"], batch["stack"][:, 1]) and torch.equal(batch["ldr_float"], batch["ldr"])
    assert torch.equal(batch["exposure_ev"], torch.tensor([2.0, 2.0]))
    from hdrlab.camera import CRF

    assert torch.equal(batch["crf_inverse"][0], CRF.gamma(2.2).inverse_lut)


def test_kalantari_splits_validation_and_radiance(kalantari) -> None:
    root, radiance = kalantari
    dm = KalantariDataModule(root=str(root), patch_size=P, num_val_scenes=2)
    dm.setup()
    train_names = dm.train_set.scenes.names
    val_names = dm.val_set.scenes.names
    assert len(train_names) == 4 and len(val_names) == 2 and not set(train_names) & set(val_names)
    assert set(val_names) == heldout_names([f"{i:03d}" for i in range(1, 7)], 2)
    assert dm.test_set.scenes.names == ["001", "BarbequeDay"]
    # evaluation items: full images; the reference's linearised pixels equal hdr where unclipped
    for item, name in ((dm.test_set[0], "test/EXTRA/001"), (dm.val_set[0], f"train/{val_names[0]}")):
        assert item["hdr"].shape == (3, H, W)
        assert _rgbe_close(item["hdr"], radiance[name])
        unclipped = item["ldr"] < 0.99
        linear = item["stack"][1] ** 2.2
        assert torch.allclose(linear[unclipped], radiance[name][unclipped], rtol=1e-3, atol=1e-4)
        assert _rgbe_close(torch.where(unclipped, linear, item["hdr"]), item["hdr"])
        mask = item["clip_mask"][0].bool()
        assert torch.all(item["hdr"].amax(0)[mask] >= 0.98)
    centre = KalantariDataModule(root=str(root), eval_crop=P, validation="test")
    centre.setup("validate")
    item = centre.val_set[1]
    top, left = (H - P) // 2, (W - P) // 2
    assert item["name"] == "BarbequeDay"
    assert _rgbe_close(item["hdr"], radiance["test/PAPER/BarbequeDay"][:, top : top + P, left : left + P])
    assert len(centre.val_set) == 2 and centre.val_set[(1, 5)]["name"] == item["name"]


def test_kalantari_test_list(kalantari, tmp_path: Path) -> None:
    root, _ = kalantari
    listing = tmp_path / "test.txt"
    listing.write_text("/your path/no-flow/test/BarbequeDay.h5\n# comment\nEXTRA/001\n")
    dm = KalantariDataModule(root=str(root), test_list=str(listing), patch_size=P)
    dm.setup("test")
    assert dm.test_set.scenes.names == ["BarbequeDay", "001"]
    batch = next(iter(dm.test_dataloader()))
    assert batch["name"] == ["BarbequeDay"] and batch["hdr"].shape == (1, 3, H, W)
    listing.write_text("LadySitting\n")
    with pytest.raises(HDRIOError, match="LadySitting.*matches no scene"):
        KalantariDataModule(root=str(root), test_list=str(listing)).setup("test")


def test_kalantari_crops_are_reproducible(kalantari) -> None:
    root, _ = kalantari

    def dataset(seed: int, cache: bool):
        dm = KalantariDataModule(root=str(root), patch_size=P, crops_per_scene=3, seed=seed, rotate90=True, cache=cache,
                                 num_val_scenes=2)
        dm.setup("fit")
        return dm.train_set

    a, b = dataset(0, True), dataset(0, False)
    assert len(a) == 4 * 3
    for key in ((0, 0), (7, 3)):
        x, y = a[key], b[key]
        assert all(torch.equal(x[k], y[k]) for k in ("stack", "hdr", "clip_mask")) and x["name"] == y["name"]
    assert a[(7, 3)]["name"] == a.scenes.names[7 // 3]
    assert not torch.equal(a[(7, 3)]["stack"], a[(7, 4)]["stack"])
    assert not torch.equal(a[(7, 3)]["stack"], dataset(1, True)[(7, 3)]["stack"])
    collated = collate_hdr_batch([a[(i, 0)] for i in range(3)])
    _check_item_domains(collated)


def test_kalantari_layout_errors(kalantari, tmp_path: Path) -> None:
    root, _ = kalantari
    with pytest.raises(HDRIOError, match="does not exist"):
        KalantariDataModule(root=str(tmp_path / "missing")).setup("fit")
    (tmp_path / "scenes" / "001").mkdir(parents=True)
    with pytest.raises(HDRIOError, match="no Training/ folder.*found: 001"):
        KalantariDataModule(root=str(tmp_path / "scenes")).setup("fit")
    only_train = tmp_path / "only_train"
    _kalantari_scene(only_train / "Training" / "001", 1)
    _kalantari_scene(only_train / "Training" / "002", 2)
    with pytest.raises(HDRIOError, match="no Test/ folder"):
        KalantariDataModule(root=str(only_train)).setup("test")
    with pytest.raises(ConfigError, match="num_val_scenes=2 leaves no training scene"):
        KalantariDataModule(root=str(only_train), num_val_scenes=2).setup("fit")
    _kalantari_scene(only_train / "Training" / "more" / "001", 3)
    with pytest.raises(HDRIOError, match="share the name '001'"):
        KalantariDataModule(root=str(only_train)).setup("fit")
    (only_train / "train").mkdir()
    with pytest.raises(HDRIOError, match="several folders"):
        KalantariDataModule(root=str(only_train)).setup("fit")
    big = KalantariDataModule(root=str(root), patch_size=H + 1, num_val_scenes=1)
    big.setup("fit")
    with pytest.raises(HDRIOError, match="smaller than patch_size"):
        big.train_set[0]
    with pytest.raises(ConfigError, match="validation"):
        KalantariDataModule(validation="val")


# ----------------------------------------------------------------------------- SICE


def _write_jpeg(path: Path, image: np.ndarray, exposure: float | None = None) -> None:
    from PIL import Image

    exif = Image.Exif()
    if exposure is not None:
        exif[0x829A] = exposure
    Image.fromarray(image).save(path, quality=95, exif=exif)


def _sice_part(folder: Path, sequences: dict[str, int], *, exif: bool, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(len(sequences) + size[0])
    (folder / "Label").mkdir(parents=True)
    for name, count in sequences.items():
        (folder / name).mkdir()
        base = rng.uniform(0.05, 0.6, size=(*size, 3))
        for k in range(count):
            frame = np.clip(base * 2.0 ** (k - count // 2), 0, 1) ** (1 / 2.2)
            _write_jpeg(folder / name / f"{k + 1}.JPG", np.rint(frame * 255).astype(np.uint8), 0.01 * 2.0**k if exif else None)
        _write_jpeg(folder / "Label" / f"{name}.JPG", np.rint(base ** (1 / 2.2) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def sice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sice")
    _sice_part(root / "Dataset_Part1", {str(i): 5 + i % 2 for i in range(1, 7)}, exif=True, size=(30, 40))
    _sice_part(root / "Dataset_Part2", {"1": 3, "2": 4}, exif=False, size=(26, 34))
    return root


def test_display_inverse_round_trips() -> None:
    y = torch.rand(2, 3, 17, 19, dtype=torch.float64)
    assert torch.allclose(tonemap.display(display_inverse(y)), y, atol=1e-6)
    x = torch.rand(3, 8, 8, dtype=torch.float64) * 15.0
    assert torch.allclose(display_inverse(tonemap.display(x)), x, rtol=1e-5, atol=1e-6)
    assert float(display_inverse(torch.ones(1, 3, 1, 1)).max()) == pytest.approx(16.0)


def test_sice_frame_selection() -> None:
    assert sice_frame_indices(5, 3) == [0, 2, 4]
    assert sice_frame_indices(6, 3) == [0, 3, 5]
    assert sice_frame_indices(7, 2) == [0, 6]
    assert sice_frame_indices(9, 5) == [0, 2, 4, 6, 8]
    with pytest.raises(ConfigError, match="lower num_exposures"):
        sice_frame_indices(2, 3)


def test_sice_items_and_splits(sice: Path) -> None:
    dm = SICEDataModule(root=str(sice), patch_size=P, batch_size=2, num_val_scenes=2, max_side=32)
    dm.setup()
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2 and dm.test_set.scenes.names == ["1", "2"]
    batch = next(iter(dm.train_dataloader()))
    synth = ProceduralDataModule(num_train_scenes=2, patch_size=P, batch_size=2, bracket_ev=[-2.0, 0.0, 2.0])
    synth.setup("fit")
    assert set(batch) == set(next(iter(synth.train_dataloader())))
    _check_item_domains(batch)
    item = dm.val_set[0]
    assert item["hdr"].shape == (3, 24, 32)  # 30 x 40 resized to a longest side of 32
    # EXIF times 0.01 * 2^k: ev relative to the middle frame N // 2
    frames = 5 + int(item["name"]) % 2
    picked = sice_frame_indices(frames, 3)
    assert torch.allclose(item["ev"], torch.tensor([float(k - frames // 2) for k in picked]))
    assert torch.equal(item["ldr"], item["stack"][1])
    # display-domain methods score against display(hdr) = the label
    label = dm.val_set.record(0)["label"]
    assert torch.allclose(tonemap.display(item["hdr"]), torch.from_numpy(label).float() / 255, atol=1e-5)
    with pytest.warns(UserWarning, match="no EXIF ExposureTime.*nominal"):
        pair = SICEDataModule(root=str(sice), ev_step=0.5, num_exposures=2, max_side=None)
        pair.setup("test")
        second = pair.test_set[1]  # 4 frames: pair [0, 3], reference frame 2 outside the stack
    assert torch.equal(second["ev"], torch.tensor([-1.0, 0.5]))
    assert second["stack"].shape == (2, 3, 26, 34) and not torch.equal(second["ldr"], second["stack"][1])


def test_sice_reproducible_and_errors(sice: Path, tmp_path: Path) -> None:
    def dataset():
        dm = SICEDataModule(root=str(sice), patch_size=P, crops_per_scene=2, num_val_scenes=1, cache=False)
        dm.setup("fit")
        return dm.train_set

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Part1 has EXIF: no nominal-ev warning
        a, b = dataset(), dataset()
        assert torch.equal(a[(3, 2)]["stack"], b[(3, 2)]["stack"]) and torch.equal(a[(3, 2)]["hdr"], b[(3, 2)]["hdr"])
    with pytest.raises(HDRIOError, match="no folder ending in 'part1'"):
        SICEDataModule(root=str(tmp_path)).setup("fit")
    with pytest.raises(HDRIOError, match="3 frames, fewer than num_exposures=4; lower num_exposures"):
        SICEDataModule(root=str(sice), num_exposures=4).setup("test")
    with pytest.raises(ConfigError, match="train_part"):
        SICEDataModule(train_part="part2", test_part="part2")
    no_label = tmp_path / "bad" / "Dataset_Part1"
    (no_label / "1").mkdir(parents=True)
    _write_jpeg(no_label / "1" / "1.JPG", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(HDRIOError, match="no Label/ folder"):
        SICEDataModule(root=str(tmp_path / "bad")).setup("fit")


# ----------------------------------------------------------------------------- experiment overrides

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = REPO / "experiments" / "overrides"


def test_real_hdr_brackets_override_parses(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from hdrlab.cli import build_cli

    args = ["fit", "--config", str(REPO / "experiments" / "ahdrnet.yaml"), "--config", str(OVERRIDES / "real_hdr_brackets.yaml"),
            "--data.init_args.root", "some/hdr_folder", "--print_config"]
    with pytest.raises(SystemExit) as done:
        build_cli(args)
    assert done.value.code == 0
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["class_path"] == "hdrlab.data.HDRFolderDataModule"
    assert data["init_args"]["bracket_ev"] == [-2.0, 0.0, 2.0] and data["init_args"]["root"] == "some/hdr_folder"


def test_kalantari_override_trains_a_bracket_merger(kalantari, tmp_path: Path) -> None:
    import yaml

    from hdrlab.cli import build_cli

    root, _ = kalantari
    init_args = yaml.safe_load((OVERRIDES / "kalantari_data.yaml").read_text())["data"]["init_args"]
    assert KalantariDataModule(**init_args).root == "data/kalantari"  # the placeholder the user overrides
    args = ["--config", str(REPO / "experiments" / "ahdrnet.yaml"), "--config", str(OVERRIDES / "kalantari_data.yaml"),
            "--data.init_args.root", str(root), "--data.init_args.patch_size", str(P), "--data.init_args.batch_size", "2",
            "--data.init_args.num_val_scenes", "2", "--width", "0.125", "--trainer.fast_dev_run", "1", "--wandb", "disabled"]
    cli = build_cli(["fit", *args, "--run_dir", str(tmp_path / "fit")])
    assert isinstance(cli.datamodule, KalantariDataModule)
    assert cli.datamodule.train_set is not None and cli.datamodule.val_set is not None  # one step + one full-image val batch


def test_real_hdr_brackets_train_each_learned_merger(real_hdr_dir: Path, tmp_path: Path) -> None:
    """Brackets synthesised from the real HDR folder train every learned three-exposure merger (one
    step each, tiny width) with a finite loss."""
    import math

    from hdrlab.cli import build_cli

    for experiment in ("kalantari2017", "wu2018", "ahdrnet"):
        cli = build_cli([
            "fit", "--config", str(REPO / "experiments" / f"{experiment}.yaml"),
            "--config", str(OVERRIDES / "real_hdr_brackets.yaml"),
            "--data.init_args.root", str(real_hdr_dir / "polyhaven_drei"), "--data.init_args.patch_size", "32",
            "--data.init_args.batch_size", "2", "--width", "0.125", "--trainer.fast_dev_run", "1",
            "--wandb", "disabled", "--run_dir", str(tmp_path / experiment),
        ])  # fmt: skip
        loss = float(cli.trainer.callback_metrics["train/loss"])
        assert math.isfinite(loss) and loss > 0, experiment
