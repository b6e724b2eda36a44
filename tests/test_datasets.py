"""Tests of hdrlab.data.datasets, hdrlab.data.public and hdrlab.data.datamodules.

Folder datasets are exercised on small EXR / Radiance files written here (plus the shared
real HDR set once); public readers on fake layouts built from the evidence cited per test.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hdrlab.data.datamodules import (
    VAL_SEED_OFFSET,
    EpochSampler,
    HDRFolderDataModule,
    ProceduralDataModule,
    collate_hdr_batch,
)
from hdrlab.data.datasets import (
    HDRFolderDataset,
    ProceduralHDRDataset,
    UnpairedLDRFolder,
    is_latlong,
    latlong_central_band,
    latlong_to_perspective,
    perspective_grid,
    split_of,
)
from hdrlab.data.public import (
    DrTMOBracketDataset,
    HDREyeDataset,
    HDRSynthRealDataset,
    KalantariDataset,
    SICEDataset,
)
from hdrlab.data.synthesis import PairSynthesizer
from hdrlab.errors import ConfigError, HDRIOError
from hdrlab import io

PATCH = 24


def write_exr(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_exr(path, image)


def write_radiance_hdr(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_radiance_hdr(path, image)


def _rand_hdr(seed: int, height: int, width: int) -> torch.Tensor:
    """Log-normal radiance with a few bright pixels (linear, > 0)."""
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(3, height, width, generator=g) * 1.5)


@pytest.fixture(scope="module")
def hdr_folder(tmp_path_factory) -> Path:
    """14 small HDR files in nested folders (EXR + Radiance) and one 2:1 panorama."""
    root = tmp_path_factory.mktemp("hdr_folder")
    for i in range(12):
        sub = root / ("a" if i % 2 else "b")
        image = _rand_hdr(i, 32, 40)
        if i % 3:
            write_exr(sub / f"img{i:02d}.exr", image)
        else:
            write_radiance_hdr(sub / f"img{i:02d}.hdr", image)
    write_exr(root / "pano" / "sky.exr", _rand_hdr(99, 32, 64))
    write_exr(root / "pano" / "street.exr", _rand_hdr(98, 32, 64))
    (root / "notes.txt").write_text("not an image")
    return root


# ----------------------------------------------------------------------------- panoramas


def test_perspective_grid_matches_gnomonic_closed_form():
    fov, yaw, size = 90.0, 30.0, 9
    grid = perspective_grid(fov_deg=fov, yaw_deg=yaw, pitch_deg=0.0, height=size, width=size)
    assert grid.shape == (size, size, 2)
    centre = size // 2
    for col in range(size):
        u = (col + 0.5) / size * 2 - 1
        lon = math.degrees(math.atan(u * math.tan(math.radians(fov / 2)))) + yaw
        assert grid[centre, col, 0].item() == pytest.approx(lon / 180.0, abs=1e-6)
        assert grid[centre, col, 1].item() == pytest.approx(0.0, abs=1e-6)  # the horizon row
    # pitch moves the view centre to latitude = pitch
    tilted = perspective_grid(fov_deg=fov, yaw_deg=0.0, pitch_deg=20.0, height=size, width=size)
    assert tilted[centre, centre, 1].item() == pytest.approx(-20.0 / 90.0, abs=1e-6)
    # a pixel at the top of the view: lat = atan(v tan(f/2)) for the centre column
    v = (0 + 0.5) / size * 2 - 1
    lat = math.degrees(math.atan(-v * math.tan(math.radians(fov / 2))))
    assert grid[0, centre, 1].item() == pytest.approx(-lat / 90.0, abs=1e-6)


def test_latlong_view_samples_the_right_longitude():
    height, width = 64, 128
    lon_deg = (torch.arange(width) + 0.5) / width * 360.0 - 180.0
    pano = lon_deg.view(1, 1, width).expand(3, height, width).contiguous() + 200.0  # encodes longitude
    view = latlong_to_perspective(pano, fov_deg=60.0, yaw_deg=45.0, pitch_deg=0.0, size=33)
    assert view.shape == (3, 33, 33)
    assert view[0, 16, 16].item() - 200.0 == pytest.approx(45.0, abs=0.5)
    # across the seam (yaw 180) a continuous panorama stays continuous: 2 + cos(lon) at the horizon
    smooth = (2.0 + torch.cos(torch.deg2rad(lon_deg))).view(1, 1, width).expand(3, height, width).contiguous()
    seam = latlong_to_perspective(smooth, fov_deg=60.0, yaw_deg=180.0, pitch_deg=0.0, size=33)
    u = (torch.arange(33) + 0.5) / 33 * 2 - 1
    expected = 2.0 + torch.cos(torch.pi + torch.atan(u * math.tan(math.radians(30.0))))
    assert (seam[0, 16] - expected).abs().max() < 0.01
    band = latlong_central_band(pano, yaw_deg=90.0)
    assert band.shape == (3, 32, 128)
    assert band[0, 0, 0].item() - 200.0 == pytest.approx(-90.0, abs=2.0)
    assert is_latlong(512, 1024) and is_latlong(500, 1020) and not is_latlong(512, 900)


# ----------------------------------------------------------------------------- folder dataset


def test_folder_splits_by_source_are_disjoint_and_cover_everything(hdr_folder):
    synth = PairSynthesizer(patch_size=PATCH)
    fractions = (0.5, 0.25, 0.25)
    sets = {}
    for split in ("train", "val", "test"):
        ds = HDRFolderDataset(hdr_folder, split=split, split_fractions=fractions, synthesizer=synth, crops_per_image=3)
        assert len(ds) == 3 * len(ds.relative_paths)
        sets[split] = set(ds.relative_paths)
        assert all(split_of(rel, fractions) == split for rel in ds.relative_paths)
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert len(sets["train"] | sets["val"] | sets["test"]) == 14  # notes.txt ignored
    # the assignment of a file does not depend on the other files of the folder
    assert split_of("pano/sky.exr", fractions) == split_of("pano/sky.exr", fractions)


def test_folder_items_are_pairs_and_panoramas_become_views(hdr_folder):
    synth = PairSynthesizer(patch_size=PATCH)
    ds = HDRFolderDataset(hdr_folder, split_fractions=(1.0, 0.0, 0.0), synthesizer=synth, crops_per_image=2)
    assert len(ds) == 28
    index = 2 * ds.relative_paths.index("pano/sky.exr")
    a, b = ds[index], ds[index + 1]
    assert a["name"] == "pano/sky.exr#0" and b["name"] == "pano/sky.exr#1"
    assert a["hdr"].shape == (3, PATCH, PATCH) and not torch.equal(a["hdr"], b["hdr"])
    assert torch.equal(ds[(index, 3)]["ldr"], ds[(index, 3)]["ldr"])
    assert not torch.equal(ds[(index, 3)]["ldr"], ds[(index, 4)]["ldr"])
    ds.set_epoch(3)
    assert torch.equal(ds[index]["ldr"], ds[(index, 3)]["ldr"])
    view = ds.view(ds.load("pano/sky.exr"), generator=torch.Generator().manual_seed(0))
    assert view.shape[-2] == view.shape[-1] >= PATCH  # square perspective view
    band_ds = HDRFolderDataset(hdr_folder, split_fractions=(1.0, 0.0, 0.0), synthesizer=synth, panorama="band")
    assert band_ds.view(band_ds.load("pano/sky.exr"), generator=torch.Generator()).shape == (3, 16, 64)
    assert ds.view(ds.load("a/img01.exr"), generator=torch.Generator()).shape == (3, 32, 40)


def test_num_scenes_subset_is_deterministic_nested_and_bounded(hdr_folder):
    synth = PairSynthesizer(patch_size=PATCH)
    kw = dict(split_fractions=(1.0, 0.0, 0.0), synthesizer=synth)
    five = HDRFolderDataset(hdr_folder, num_scenes=5, **kw).relative_paths
    assert five == HDRFolderDataset(hdr_folder, num_scenes=5, **kw).relative_paths
    assert len(five) == 5 and set(HDRFolderDataset(hdr_folder, num_scenes=3, **kw).relative_paths) <= set(five)
    with pytest.raises(ConfigError, match=r"has 14 files in split 'train' but num_scenes=20.*at most 14") as err:
        HDRFolderDataset(hdr_folder, num_scenes=20, **kw)
    assert str(hdr_folder) in str(err.value)


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(HDRIOError, match="does not exist"):
        HDRFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HDRIOError, match=r"holds no files with suffix \.exr/\.hdr/\.pfm"):
        HDRFolderDataset(tmp_path / "empty")
    with pytest.raises(ConfigError, match="split must be one of"):
        HDRFolderDataset(tmp_path, split="training")
    with pytest.raises(ConfigError, match="summing to 1"):
        HDRFolderDataset(tmp_path, split_fractions=(0.5, 0.2, 0.2))


def test_real_hdr_folder_yields_finite_pairs(real_hdr_dir):
    synth = PairSynthesizer(patch_size=32)
    ds = HDRFolderDataset(real_hdr_dir, num_scenes=2, synthesizer=synth, seed=1)
    assert len(ds) == 2
    for index in range(2):
        sample = ds[index]
        assert sample["hdr"].shape == (3, 32, 32) and torch.isfinite(sample["hdr"]).all()
        assert 0.0 <= float(sample["clip_mask"].mean()) <= 0.21
        assert 0.0 <= float(sample["ldr"].min()) and float(sample["ldr"].max()) <= 1.0
    val = HDRFolderDataset(real_hdr_dir, split="val", synthesizer=synth)
    assert not set(val.relative_paths) & set(HDRFolderDataset(real_hdr_dir, synthesizer=synth).relative_paths)


def test_procedural_dataset_is_deterministic_and_epoch_keyed():
    ds = ProceduralHDRDataset(num_scenes=3, seed_offset=100, height=32, width=32, synthesizer=PairSynthesizer(patch_size=PATCH))
    a, b = ds[1], ds[(1, 0)]
    assert a["name"] == "procedural_00000101"
    assert torch.equal(a["ldr"], b["ldr"]) and torch.equal(a["hdr"], b["hdr"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["hdr"], a["hdr"])
    with pytest.raises(IndexError):
        ds[3]


def test_unpaired_ldr_folder_reads_8_and_16_bit(tmp_path):
    img8 = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    img16 = np.random.default_rng(1).integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), img8)
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "b.tif"), img16)
    ds = UnpairedLDRFolder(tmp_path)
    assert len(ds) == 2
    a, b = ds[0], ds[1]
    assert a["name"] == "a.png" and a["bit_depth"] == 8 and b["bit_depth"] == 16
    assert torch.equal(a["ldr"], torch.from_numpy(img8[..., ::-1].copy()).permute(2, 0, 1).float() / 255.0)
    assert torch.allclose(b["ldr"], torch.from_numpy(img16[..., ::-1].astype(np.float32)).permute(2, 0, 1) / 65535.0)
    assert math.isnan(a["exposure_time"])
    lin = UnpairedLDRFolder(tmp_path, srgb_decode=True)[0]["ldr"]
    assert lin.mean() < a["ldr"].mean()  # sRGB EOTF darkens mid-tones


# ----------------------------------------------------------------------------- public readers


def _write_ldr(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def test_hdr_synth_real_pairs_and_list_file(tmp_path):
    """Layout of the official SingleHDR data (HDR_gt/*.hdr + LDR_in/*.jpg pairs: alex04072000/SingleHDR
    ``training_code/convert_to_tf_record.py``; 503/60 lists: ``training_code/i_dataset_*.pkl``)."""
    ldr = np.full((8, 10, 3), 128, np.uint8)
    for split in ("train", "test"):
        for stem in ("s1", "s2"):
            write_radiance_hdr(tmp_path / split / "HDR_gt" / f"{stem}.hdr", torch.full((3, 8, 10), 0.5))
            _write_ldr(tmp_path / split / "LDR_in" / f"{stem}.png", ldr)
    ds = HDRSynthRealDataset(tmp_path, split="test")
    assert len(ds) == 2 and ds[0]["name"] == "s1"
    assert ds[0]["ldr"].shape == ds[0]["hdr"].shape == (3, 8, 10)
    assert torch.allclose(ds[0]["ldr"], torch.full((3, 8, 10), 128 / 255))
    assert torch.allclose(ds[0]["hdr"], torch.full((3, 8, 10), 0.5), rtol=0.01)
    listing = tmp_path / "test_list.txt"
    listing.write_text("# HDR-Synth test list\ns2.hdr\n")
    assert [ds_item["name"] for ds_item in HDRSynthRealDataset(tmp_path, split="test", list_file=listing)] == ["s2"]
    listing.write_text("s3.hdr\n")
    with pytest.raises(HDRIOError, match="lists 's3.hdr'"):
        HDRSynthRealDataset(tmp_path, split="test", list_file=listing)
    (tmp_path / "train" / "LDR_in" / "s2.png").unlink()
    with pytest.raises(HDRIOError, match="has no LDR input"):
        HDRSynthRealDataset(tmp_path, split="train")


def test_hdr_synth_without_ldr_is_hdr_only(tmp_path):
    """HDR-Synth training files are HDR only (pairs are synthesised: SingleHDR ``training_code/dataset.py``)."""
    write_exr(tmp_path / "train" / "HDR_gt" / "book" / "x.exr", torch.full((3, 4, 4), 2.0))
    item = HDRSynthRealDataset(tmp_path)[0]
    assert set(item) == {"hdr", "name"} and item["name"] == "book/x" and float(item["hdr"].mean()) == 2.0


def test_hdr_eye_both_layouts(tmp_path):
    """46 scenes 00000-00045 (the SingleHDR results package); file names inside are an assumption."""
    for scene in ("00000", "00001"):
        write_exr(tmp_path / "scenes" / scene / "gt.exr", torch.full((3, 6, 6), 3.0))
        _write_ldr(tmp_path / "scenes" / scene / "input.jpg", np.full((6, 6, 3), 200, np.uint8))
    ds = HDREyeDataset(tmp_path / "scenes")
    assert [item["name"] for item in ds] == ["00000", "00001"]
    assert float(ds[1]["hdr"].mean()) == 3.0 and abs(float(ds[1]["ldr"].mean()) - 200 / 255) < 2 / 255
    write_exr(tmp_path / "paired" / "HDR_gt" / "c01.exr", torch.ones(3, 6, 6))
    _write_ldr(tmp_path / "paired" / "LDR_in" / "c01.png", np.zeros((6, 6, 3), np.uint8))
    assert HDREyeDataset(tmp_path / "paired")[0]["name"] == "c01"
    _write_ldr(tmp_path / "scenes" / "00001" / "extra.png", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(HDRIOError, match="exactly one LDR and one HDR"):
        HDREyeDataset(tmp_path / "scenes")


def test_drtmo_csv_pairs(tmp_path):
    """CSV x,x_exp,y,y_exp with times 2^-10..2^-6 s (VinAIResearch/single_image_hdr ``data/*.csv``)."""
    _write_ldr(tmp_path / "imgs" / "s_80_10_0_gamma+1.4" / "e.png", np.full((4, 4, 3), 100, np.uint8))
    _write_ldr(tmp_path / "imgs" / "s_80_10_0_gamma+1.4" / "g.png", np.full((4, 4, 3), 180, np.uint8))
    csv_path = tmp_path / "val.csv"
    csv_path.write_text(
        "x,x_exp,y,y_exp\n"
        f"imgs/s_80_10_0_gamma+1.4/e.png,{2**-8},imgs/s_80_10_0_gamma+1.4/g.png,{2**-7}\n"
        f"imgs/s_80_10_0_gamma+1.4/g.png,{2**-7},imgs/s_80_10_0_gamma+1.4/e.png,{2**-8}\n"
    )
    ds = DrTMOBracketDataset(csv_path)
    assert len(ds) == 2
    assert ds[0]["ev"].item() == 1.0 and ds[1]["ev"].item() == -1.0
    assert ds[0]["x_exp"].item() == 2**-8
    assert torch.allclose(ds[0]["x"], torch.full((3, 4, 4), 100 / 255)) and torch.allclose(ds[0]["y"], torch.full((3, 4, 4), 180 / 255))
    csv_path.write_text("a.png,fast,b.png,0.1\n")
    with pytest.raises(HDRIOError, match="row 1"):
        DrTMOBracketDataset(csv_path)


def test_sice_sequences_with_labels(tmp_path):
    """Dataset_PartN/<seq>/<k>.JPG + Label/<seq>.JPG (SICE sequences with references, Cai, Gu, Zhang 2018)."""
    for seq in ("1", "2"):
        for k, value in enumerate((30, 90, 150, 210, 250), start=1):
            _write_ldr(tmp_path / seq / f"{k}.JPG", np.full((5, 7, 3), value, np.uint8))
        _write_ldr(tmp_path / "Label" / f"{seq}.JPG", np.full((5, 7, 3), 128, np.uint8))
    _write_ldr(tmp_path / "1" / "10.JPG", np.full((5, 7, 3), 255, np.uint8))  # natural order: after 5
    ds = SICEDataset(tmp_path)
    assert [item["name"] for item in ds] == ["1", "2"]
    item = ds[0]
    assert item["stack"].shape == (6, 3, 5, 7) and item["reference"] == 3
    means = item["stack"].mean(dim=(1, 2, 3)) * 255
    assert torch.all(means.diff() > 0)  # ascending exposure
    assert torch.isnan(item["ev"]).all()  # no EXIF ExposureTime in these files
    assert abs(float(item["label"].mean()) * 255 - 128) < 2


def test_kalantari_scene(tmp_path):
    """3 16-bit TIFFs, exposure.txt {0,2,4}, HDRImg.hdr = L^2.2 / 2^(EV-EVmin) (Kalantari & Ramamoorthi 2017)."""
    scene = tmp_path / "Test" / "PAPER" / "BarbequeDay"
    scene.mkdir(parents=True)
    codes = (1000, 20000, 65535)
    for name, code in zip(("262A2615.tif", "262A2616.tif", "262A2617.tif"), codes):
        cv2.imwrite(str(scene / name), np.full((6, 9, 3), code, np.uint16))
    (scene / "exposure.txt").write_text("0\n2\n4\n")
    mid = (codes[1] / 65535) ** 2.2 / 4.0  # H of the reference pixel in darkest-exposure units
    write_radiance_hdr(scene / "HDRImg.hdr", torch.full((3, 6, 9), mid))
    ds = KalantariDataset(tmp_path)
    assert len(ds) == 1
    item = ds[0]
    assert item["name"] == "Test/PAPER/BarbequeDay"
    assert item["ev"].tolist() == [-2.0, 0.0, 2.0] and item["reference"] == 1
    assert torch.equal(item["stack"][:, 0, 0, 0], torch.tensor(codes, dtype=torch.float32) / 65535)
    assert torch.equal(item["ldr"], item["stack"][1])
    # reference-exposure scale: hdr = ldr_ref ** 2.2 (gamma-2.2 camera), clips at 1
    assert float(item["hdr"].mean()) == pytest.approx((codes[1] / 65535) ** 2.2, rel=0.01)


# ----------------------------------------------------------------------------- DataModules


def test_collate_expands_shared_luts_and_keeps_names():
    def sample(c: int, name: str) -> dict:
        return {"ldr": torch.rand(3, 4, 4), "crf_forward": torch.rand(c, 1024), "crf_inverse": torch.rand(c, 1024), "name": name}

    batch = collate_hdr_batch([sample(1, "a"), sample(3, "b")])
    assert batch["crf_forward"].shape == (2, 3, 1024) and batch["ldr"].shape == (2, 3, 4, 4)
    assert batch["name"] == ["a", "b"]
    assert collate_hdr_batch([sample(1, "a"), sample(1, "b")])["crf_inverse"].shape == (2, 1, 1024)


def test_epoch_sampler_yields_epoch_keyed_permutations():
    sampler = EpochSampler(6, seed=0)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(6)) and {e for _, e in first} == {0}
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert {e for _, e in second} == {1} and [i for i, _ in second] != [i for i, _ in first]


def test_procedural_datamodule_train_and_pinned_val():
    dm = ProceduralDataModule(num_train_scenes=4, num_val_scenes=2, num_test_scenes=2, patch_size=PATCH, batch_size=2)
    dm.setup("fit")
    train = dm.train_dataloader()
    batch = next(iter(train))
    assert batch["hdr"].shape == (2, 3, PATCH, PATCH) and batch["clip_mask"].shape == (2, 1, PATCH, PATCH)
    assert batch["crf_forward"].shape[0] == 2 and batch["crf_forward"].shape[-1] == 1024
    assert len(batch["name"]) == 2
    val_names = {n for b in dm.val_dataloader() for n in b["name"]}
    assert val_names == {f"procedural_{VAL_SEED_OFFSET:08d}", f"procedural_{VAL_SEED_OFFSET + 1:08d}"}
    first_val = next(iter(dm.val_dataloader()))
    train.sampler.set_epoch(5)  # what Lightning does each epoch; val must not move
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(first_val["ldr"], again["ldr"]) and torch.equal(first_val["hdr"], again["hdr"])
    epoch5 = next(iter(train))
    assert not torch.equal(epoch5["hdr"], batch["hdr"])
    dm.setup("test")
    assert len(dm.test_set) == 2 and next(iter(dm.test_dataloader()))["ldr"].shape == (2, 3, PATCH, PATCH)


def test_folder_datamodule_batches(hdr_folder):
    dm = HDRFolderDataModule(root=str(hdr_folder), split_fractions=(0.6, 0.2, 0.2), patch_size=PATCH, crops_per_image=2, batch_size=3, bracket_ev=[-2.0, 0.0, 2.0])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["stack"].shape == (3, 3, 3, PATCH, PATCH) and batch["ev"].shape == (3, 3)
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(val["ldr"], next(iter(dm.val_dataloader()))["ldr"])
    train_sources = {n.split("#")[0] for n in dm.train_set.relative_paths}
    assert not train_sources & set(dm.val_set.dataset.relative_paths)


def test_lightning_keys_train_by_epoch_and_pins_val():
    """Lightning calls EpochSampler.set_epoch each epoch: train pairs change, validation pairs do not."""
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.train_seen: list[tuple[int, float]] = []
            self.val_seen: list[tuple[int, float]] = []

        def training_step(self, batch, batch_idx):
            self.train_seen.append((self.current_epoch, float(batch["hdr"].sum())))
            return (self.weight * batch["ldr"].mean()) ** 2

        def validation_step(self, batch, batch_idx):
            self.val_seen.append((self.current_epoch, float(batch["ldr"].sum())))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ProceduralDataModule(num_train_scenes=2, num_val_scenes=2, num_test_scenes=1, patch_size=16, scene_size=16, batch_size=2, cache_scenes=True)
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    (e0, t0), (e1, t1) = module.train_seen
    (v0e, v0), (v1e, v1) = module.val_seen
    assert (e0, e1, v0e, v1e) == (0, 1, 0, 1)
    assert t0 != t1 and v0 == v1


def test_scene_cache_auto_policy_is_capped_lazy_and_exact():
    from hdrlab.data.datasets import SCENE_CACHE_LIMIT_BYTES, resolve_scene_cache, scene_cache_bytes
    from hdrlab.errors import ConfigError

    assert scene_cache_bytes(1000, 256, 256) == 1000 * 12 * 256 * 256  # float32 [3, H, W] per scene
    assert SCENE_CACHE_LIMIT_BYTES == 1 << 30
    assert resolve_scene_cache("auto", num_scenes=1000, height=256, width=256, limit_bytes=SCENE_CACHE_LIMIT_BYTES)
    assert not resolve_scene_cache("auto", num_scenes=2000, height=256, width=256, limit_bytes=SCENE_CACHE_LIMIT_BYTES)
    assert resolve_scene_cache(True, num_scenes=10**6, height=256, width=256, limit_bytes=0)
    with pytest.raises(ConfigError, match="auto"):
        ProceduralHDRDataset(num_scenes=2, height=32, width=32, cache="yes")
    synth = PairSynthesizer(patch_size=PATCH)
    cached = ProceduralHDRDataset(num_scenes=3, height=32, width=32, synthesizer=synth)  # default "auto"
    assert cached.cache and not cached._scenes  # lazy: nothing rendered before first use
    capped = ProceduralHDRDataset(num_scenes=3, height=32, width=32, synthesizer=synth, cache_limit_bytes=3 * 12 * 32 * 32 - 1)
    assert not capped.cache
    for key in (2, (2, 3), (0, 1)):
        a, b = cached[key], capped[key]
        assert torch.equal(a["hdr"], b["hdr"]) and torch.equal(a["ldr"], b["ldr"])
    assert sorted(cached._scenes) == [0, 2] and not capped._scenes
    assert cached.scene(2) is cached.scene(2)  # served from the cache


def test_procedural_datamodule_default_cache_policy():
    from hdrlab.errors import ConfigError

    dm = ProceduralDataModule(num_train_scenes=4, num_val_scenes=2, num_test_scenes=2, patch_size=PATCH, batch_size=2)
    assert dm.cache_scenes == "auto"
    dm.setup("fit")
    assert dm.train_set.cache and dm.val_set.dataset.cache
    off = ProceduralDataModule(num_train_scenes=4, patch_size=PATCH, cache_scenes=False)
    off.setup("fit")
    assert not off.train_set.cache
    with pytest.raises(ConfigError, match="cache_scenes"):
        ProceduralDataModule(cache_scenes="sometimes")
