"""``UnpairedLDRDataModule``: LDR-only batches from a folder of photographs, for unpaired fine-tuning
(e.g. DuHDR's Algorithm 2, ``DuHDRMethod(stage="unpaired")``).

Batches are ``{"ldr": [B, 3, P, P] float in [0, 1] (display-referred), "name": list[str]}`` - no
``hdr`` and no synthesis keys. Training items are random ``patch_size`` crops with random horizontal
and vertical flips; images whose short side is below ``patch_size`` are first resized up (bilinear,
antialiased) so it equals ``patch_size``.

Validation (kept simple): the last ``val_images`` files of the sorted folder listing are held out
and served as one deterministic centre crop each (no flips); with ``val_images=0`` (default) there
is no validation set and ``val_dataloader`` returns an empty list (Lightning then skips validation).
``test_dataloader`` serves the same held-out crops.

Without ``root`` (``root=None``) the module falls back to procedural scenes (demo / CI, no files):
the LDR renderings of :class:`hdrlab.data.ProceduralDataModule` with every other key (``hdr``, CRFs,
...) dropped, ``num_train_scenes`` / ``num_val_scenes`` / ``num_test_scenes`` scenes per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from hdrlab.data.datamodules import ProceduralDataModule, collate_hdr_batch
from hdrlab.data.datasets import UnpairedLDRFolder
from hdrlab.errors import ConfigError

__all__ = ["LDRCrops", "LDROnly", "UnpairedLDRDataModule"]


class LDROnly(Dataset):
    """View of a paired dataset keeping only ``ldr`` and ``name`` (indices pass through unchanged)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> dict[str, Any]:
        item = self.dataset[index]
        return {"ldr": item["ldr"], "name": item["name"]}


class LDRCrops(Dataset):
    """Square crops of an LDR dataset's ``ldr`` images: random + flips (``train``) or centred.

    Args:
        dataset: items with ``"ldr"`` ``[3, H, W]`` and ``"name"`` (e.g. :class:`UnpairedLDRFolder`).
        patch_size: crop side in pixels.
        train: random crops and flips; else the centre crop.
        flips: random horizontal and vertical flips (training only).
    """

    def __init__(self, dataset: Dataset, *, patch_size: int, train: bool, flips: bool = True) -> None:
        self.dataset = dataset
        self.patch_size = int(patch_size)
        self.train = bool(train)
        self.flips = bool(flips)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        image = item["ldr"]
        p = self.patch_size
        h, w = image.shape[-2:]
        if min(h, w) < p:
            scale = p / min(h, w)
            size = (max(p, round(h * scale)), max(p, round(w * scale)))
            image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
            h, w = image.shape[-2:]
        if self.train:
            top = int(torch.randint(0, h - p + 1, ()).item())
            left = int(torch.randint(0, w - p + 1, ()).item())
        else:
            top, left = (h - p) // 2, (w - p) // 2
        crop = image[:, top : top + p, left : left + p]
        if self.train and self.flips:
            if bool(torch.rand(()) < 0.5):
                crop = crop.flip(-1)
            if bool(torch.rand(()) < 0.5):
                crop = crop.flip(-2)
        return {"ldr": crop.clamp(0.0, 1.0).contiguous(), "name": item["name"]}


class UnpairedLDRDataModule(L.LightningDataModule):
    """LDR-only batches from a folder of photos (module docstring).

    Args:
        root: folder of ``.png/.jpg/.jpeg/.tif/.tiff`` LDR images (recursive); None: the procedural
            fallback (module docstring).
        patch_size: crop side (a multiple of the method's stride, e.g. 32 for DuHDR).
        batch_size: images per batch.
        num_workers: DataLoader workers.
        val_images: files (the last ones of the sorted listing) held out for validation / test.
        flips: random flips of the training crops.
        srgb_decode: linearise the photos with the sRGB EOTF (False: display-referred, as DuHDR needs).
        seed: seed of the training shuffle.
        num_train_scenes, num_val_scenes, num_test_scenes: split sizes of the procedural fallback
            (ignored with ``root``).
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        patch_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        val_images: int = 0,
        flips: bool = True,
        srgb_decode: bool = False,
        seed: int = 0,
        num_train_scenes: int = 1000,
        num_val_scenes: int = 20,
        num_test_scenes: int = 20,
    ) -> None:
        super().__init__()
        if patch_size < 1:
            raise ConfigError(f"UnpairedLDRDataModule patch_size must be >= 1, got {patch_size}")
        if batch_size < 1:
            raise ConfigError(f"UnpairedLDRDataModule batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"UnpairedLDRDataModule num_workers must be >= 0, got {num_workers}")
        if val_images < 0:
            raise ConfigError(f"UnpairedLDRDataModule val_images must be >= 0, got {val_images}")
        self.root = None if root is None else str(root)
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_images = int(val_images)
        self.flips = bool(flips)
        self.srgb_decode = bool(srgb_decode)
        self.seed = int(seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.procedural = (
            ProceduralDataModule(
                num_train_scenes=num_train_scenes, num_val_scenes=num_val_scenes, num_test_scenes=num_test_scenes,
                patch_size=patch_size, batch_size=batch_size, num_workers=num_workers, seed=seed, flips=flips,
            )
            if root is None
            else None
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        """List the folder and split off the held-out files.

        Raises:
            HDRIOError: the folder is missing or holds no LDR image.
            ConfigError: ``val_images`` leaves no training image.
        """
        if self.procedural is not None:
            proc = self.procedural
            proc.setup(stage)
            for name in ("train_set", "val_set", "test_set"):
                split = getattr(proc, name)
                if split is not None and not isinstance(split, LDROnly):
                    setattr(proc, name, LDROnly(split))
            return
        folder = UnpairedLDRFolder(Path(self.root), srgb_decode=self.srgb_decode)
        n = len(folder)
        if self.val_images >= n:
            raise ConfigError(f"UnpairedLDRDataModule: val_images={self.val_images} leaves no training image of the "
                              f"{n} in {self.root}; lower val_images")
        train_idx = list(range(n - self.val_images))
        self.train_set = LDRCrops(Subset(folder, train_idx), patch_size=self.patch_size, train=True, flips=self.flips)
        self.val_set = (
            LDRCrops(Subset(folder, list(range(n - self.val_images, n))), patch_size=self.patch_size, train=False)
            if self.val_images
            else None
        )

    def _loader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(dataset) >= self.batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            collate_fn=collate_hdr_batch,
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        if self.procedural is not None:
            return self.procedural.train_dataloader()
        if self.train_set is None:
            raise ConfigError("UnpairedLDRDataModule: call setup() before asking for a DataLoader")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.procedural is not None:
            return self.procedural.val_dataloader()
        return [] if self.val_set is None else self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader | list:
        if self.procedural is not None:
            return self.procedural.test_dataloader()
        return self.val_dataloader()
