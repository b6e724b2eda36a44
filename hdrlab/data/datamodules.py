"""Lightning DataModules for synthetic single-image HDR training pairs.

The keyword-only ``__init__`` arguments (with their defaults) are the config schema.

Reproducibility. Training items are keyed by ``(seed, epoch, index)``: the training
DataLoader uses an :class:`EpochSampler` whose ``set_epoch`` Lightning calls at the start of
every epoch (also after resuming from a checkpoint); the sampler yields ``(index, epoch)``
keys, so the epoch reaches the dataset even inside persistent worker processes. Validation
and test items are pinned: they are keyed with the fixed epoch :data:`PINNED_EPOCH`, use the
held-out CRF stream of their split (``CRFSampler`` splits are disjoint) and no flips, so every validation pass sees exactly the same pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hdrlab.data.batch import HDRBatch
from hdrlab.data.datasets import HDRFolderDataset, ProceduralHDRDataset
from hdrlab.data.synthesis import PairSynthesizer, sample_seed
from hdrlab.errors import ConfigError

__all__ = [
    "PINNED_EPOCH",
    "VAL_SEED_OFFSET",
    "TEST_SEED_OFFSET",
    "EpochSampler",
    "PinnedEpochDataset",
    "collate_hdr_batch",
    "ProceduralDataModule",
    "HDRFolderDataModule",
]

#: Epoch key of the pinned validation / test synthesis.
PINNED_EPOCH = -1
#: Synthesis seed of the validation and test splits: held-out sets are pinned, identical for every
#: experiment seed (the experiment seed keys the training randomness only).
EVAL_SEED = 0

#: Scene-seed ranges: train ``[0, 10M)``, val ``[10M, 20M)``, test ``[20M, ...)``.
VAL_SEED_OFFSET = 10_000_000
TEST_SEED_OFFSET = 20_000_000

_LUT_KEYS = ("crf_forward", "crf_inverse")


class EpochSampler(Sampler):
    """Yields ``(index, epoch)`` keys, shuffled per epoch with a permutation keyed by ``(seed, epoch)``.

    Args:
        num_samples: dataset length.
        seed: experiment seed.
        shuffle: random order (train) or ``0..n-1`` (evaluation).
    """

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        #: ``(epoch, samples to skip)`` for the next iteration when resuming mid-epoch
        self.resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        epoch = self.epoch
        start = 0
        if self.resume_at is not None and self.resume_at[0] == epoch:
            start = self.resume_at[1]
        self.resume_at = None
        return iter([(index, epoch) for index in order[start:]])


class ResumableDataLoader(DataLoader):
    """Training DataLoader whose position inside the epoch is saved in checkpoints.

    Lightning stores ``state_dict()`` of stateful loaders in the checkpoint and calls
    ``load_state_dict`` on resume. The position is the number of batches whose optimizer step the
    checkpoint includes (``progress()``, read from the training loop, so prefetching cannot skew
    it); on resume the :class:`EpochSampler` skips exactly those samples, and the synthesis of each
    remaining sample is keyed by ``(seed, epoch, index)`` as before — a killed run resumes bit-exactly.
    """

    def __init__(self, *args: Any, progress: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        done = int(self.progress()) if self.progress is not None else 0
        return {"epoch": int(self.sampler.epoch), "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at = (int(state["epoch"]), int(state["batches_done"]) * int(self.batch_size))


class PinnedEpochDataset(Dataset):
    """Wrap a dataset so every item is synthesised with a fixed epoch key (validation / test)."""

    def __init__(self, dataset: Dataset, *, epoch: int = PINNED_EPOCH) -> None:
        self.dataset = dataset
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[(int(index), self.epoch)]


def _expand_luts(luts: list[Tensor]) -> Tensor:
    """Stack ``[C, K]`` LUTs to ``[B, C, K]``; mixed ``C`` in {1, 3} -> ``C = 1`` expanded to 3."""
    channels = {lut.shape[0] for lut in luts}
    if len(channels) > 1:
        if channels != {1, 3}:
            raise ConfigError(f"collate_hdr_batch: CRF LUTs with {sorted(channels)} channels cannot be batched (need 1 or 3)")
        luts = [lut.expand(3, -1) for lut in luts]
    return torch.stack(luts)


def collate_hdr_batch(samples: Sequence[dict[str, Any]]) -> HDRBatch:
    """Collate sample dicts into an :class:`~hdrlab.data.batch.HDRBatch`.

    Tensors are stacked along a new batch dimension (``crf_forward`` / ``crf_inverse`` become
    ``[B, C, 1024]``; when the CRFs of a batch differ in ``C``, ``C = 1`` LUTs are expanded to
    3), ``str`` values (``name``) become lists, numbers become tensors, other values lists.

    Raises:
        ConfigError: the samples do not share the same keys.
    """
    if not samples:
        raise ConfigError("collate_hdr_batch: got an empty list of samples")
    keys = list(samples[0])
    for sample in samples[1:]:
        if set(sample) != set(keys):
            raise ConfigError(f"collate_hdr_batch: samples have different keys {sorted(keys)} vs {sorted(sample)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        first = values[0]
        if key in _LUT_KEYS:
            batch[key] = _expand_luts(values)
        elif isinstance(first, Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool) or not isinstance(first, (int, float)):
            batch[key] = list(values)
        else:
            batch[key] = torch.tensor(values)
    return batch  # type: ignore[return-value]


def _synthesizer(options: dict[str, Any], *, patch_size: int, split: str) -> PairSynthesizer:
    """Synthesizer of one split: its own CRF stream; val/test pinned without flips."""
    opts = dict(options)
    if split != "train":
        opts["flips"] = False
    return PairSynthesizer(patch_size=patch_size, crf_split=split, **opts)


class _SynthDataModule(L.LightningDataModule):
    """Shared DataLoader plumbing (train: EpochSampler; val/test: pinned, in order)."""

    def __init__(self, *, batch_size: int, num_workers: int, seed: int, synth: dict[str, Any]) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.synth = synth
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise ConfigError(f"{type(self).__name__}: call setup() before asking for a DataLoader")
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "collate_fn": collate_hdr_batch,
            "persistent_workers": self.num_workers > 0,
        }
        if train:
            sampler = EpochSampler(len(dataset), seed=self.seed, shuffle=True)  # type: ignore[arg-type]
            return ResumableDataLoader(dataset, sampler=sampler, drop_last=len(dataset) >= self.batch_size,  # type: ignore[arg-type]
                                       progress=self._batches_done, **kwargs)
        return DataLoader(dataset, shuffle=False, **kwargs)

    def _batches_done(self) -> int:
        """Training batches of the current epoch whose optimizer step has run (0 outside ``fit``)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class ProceduralDataModule(_SynthDataModule):
    """Procedural scenes -> synthetic pairs (no files needed).

    Scene seeds: train ``0 .. num_train_scenes-1``, val ``10_000_000 + i``, test
    ``20_000_000 + i`` (disjoint). Scenes are rendered at ``scene_size`` (default
    ``patch_size``) and synthesised with :class:`PairSynthesizer`.

    Args:
        num_train_scenes, num_val_scenes, num_test_scenes: split sizes.
        patch_size: training / evaluation patch side.
        scene_size: render size of a scene (``None`` = ``patch_size``).
        cache_scenes: scene-cache policy of every split (see :class:`ProceduralHDRDataset`):
            ``"auto"`` (default) keeps rendered scenes in memory, rendered lazily on first use,
            when a split's ``num_scenes * 12 * scene_size**2`` bytes fit in 1 GiB
            (:data:`~hdrlab.data.datasets.SCENE_CACHE_LIMIT_BYTES`; per worker process);
            ``True`` always, ``False`` never. Exact either way: each split is a fixed set of
            scenes, only the synthesis changes with the epoch.
        batch_size, num_workers: DataLoader settings.
        seed: experiment seed keying the training synthesis randomness (val/test use
            :data:`EVAL_SEED`: pinned held-out sets, identical for every experiment seed).
        clipped_fraction, crf_family, bits, noise, jpeg_quality, flips, bracket_ev, emor_path:
            :class:`PairSynthesizer` options (each split has its own CRF stream; val/test no flips).
    """

    def __init__(
        self,
        *,
        num_train_scenes: int = 1000,
        num_val_scenes: int = 20,
        num_test_scenes: int = 20,
        patch_size: int = 256,
        scene_size: int | None = None,
        cache_scenes: bool | str = "auto",
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        clipped_fraction: tuple[float, float] = (0.02, 0.20),
        crf_family: str = "mixed",
        bits: int = 8,
        noise: dict[str, float] | None = None,
        jpeg_quality: tuple[int, int] | None = None,
        flips: bool = True,
        bracket_ev: list[float] | None = None,
        emor_path: str | None = None,
    ) -> None:
        synth = dict(
            clipped_fraction=clipped_fraction, crf_family=crf_family, bits=bits, noise=noise,
            jpeg_quality=jpeg_quality, flips=flips, bracket_ev=bracket_ev, emor_path=emor_path,
        )  # fmt: skip
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, synth=synth)
        for key, value in (("num_train_scenes", num_train_scenes), ("num_val_scenes", num_val_scenes), ("num_test_scenes", num_test_scenes)):
            if not 1 <= value <= VAL_SEED_OFFSET:
                raise ConfigError(f"ProceduralDataModule.{key} must be in 1..{VAL_SEED_OFFSET}, got {value}")
        self.num_train_scenes = int(num_train_scenes)
        self.num_val_scenes = int(num_val_scenes)
        self.num_test_scenes = int(num_test_scenes)
        self.patch_size = int(patch_size)
        self.scene_size = int(scene_size) if scene_size is not None else int(patch_size)
        if not (isinstance(cache_scenes, bool) or cache_scenes == "auto"):
            raise ConfigError(
                f"ProceduralDataModule.cache_scenes must be true, false or 'auto', got {cache_scenes!r}"
            )
        self.cache_scenes: bool | str = cache_scenes
        if self.scene_size < 1:
            raise ConfigError(f"ProceduralDataModule.scene_size must be >= 1, got {scene_size}")

    def _dataset(self, num: int, offset: int, *, split: str) -> ProceduralHDRDataset:
        return ProceduralHDRDataset(
            num_scenes=num,
            seed_offset=offset,
            height=self.scene_size,
            width=self.scene_size,
            synthesizer=_synthesizer(self.synth, patch_size=self.patch_size, split=split),
            seed=self.seed if split == "train" else EVAL_SEED,
            cache=self.cache_scenes,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset(self.num_train_scenes, 0, split="train")
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = PinnedEpochDataset(self._dataset(self.num_val_scenes, VAL_SEED_OFFSET, split="val"))
        if stage in (None, "test") and self.test_set is None:
            self.test_set = PinnedEpochDataset(self._dataset(self.num_test_scenes, TEST_SEED_OFFSET, split="test"))


class HDRFolderDataModule(_SynthDataModule):
    """A folder of HDR files -> synthetic pairs, split by source file (see :class:`HDRFolderDataset`).

    Args:
        root: folder of ``.exr`` / ``.hdr`` / ``.pfm`` files.
        split_fractions: ``(train, val, test)`` fractions of source files.
        num_train_scenes: ``None`` (all training files) or a deterministic subset size.
        patch_size: patch side.
        crops_per_image: training items per source file (val/test: ``eval_crops_per_image``).
        eval_crops_per_image: pinned crops per val/test source file.
        panorama: ``"perspective"`` or ``"band"`` handling of 2:1 lat-long panoramas.
        cache: keep decoded files in memory.
        batch_size, num_workers, seed: as in :class:`ProceduralDataModule`.
        clipped_fraction, crf_family, bits, noise, jpeg_quality, flips, bracket_ev, emor_path:
            :class:`PairSynthesizer` options (each split has its own CRF stream; val/test no flips).
    """

    def __init__(
        self,
        *,
        root: str = "data/hdr",
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        num_train_scenes: int | None = None,
        patch_size: int = 256,
        crops_per_image: int = 4,
        eval_crops_per_image: int = 1,
        panorama: str = "perspective",
        cache: bool = True,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        clipped_fraction: tuple[float, float] = (0.02, 0.20),
        crf_family: str = "mixed",
        bits: int = 8,
        noise: dict[str, float] | None = None,
        jpeg_quality: tuple[int, int] | None = None,
        flips: bool = True,
        bracket_ev: list[float] | None = None,
        emor_path: str | None = None,
    ) -> None:
        synth = dict(
            clipped_fraction=clipped_fraction, crf_family=crf_family, bits=bits, noise=noise,
            jpeg_quality=jpeg_quality, flips=flips, bracket_ev=bracket_ev, emor_path=emor_path,
        )  # fmt: skip
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, synth=synth)
        self.root = root
        self.split_fractions = tuple(split_fractions)
        self.num_train_scenes = num_train_scenes
        self.patch_size = int(patch_size)
        self.crops_per_image = int(crops_per_image)
        self.eval_crops_per_image = int(eval_crops_per_image)
        self.panorama = panorama
        self.cache = bool(cache)

    def _dataset(self, split: str, *, num_scenes: int | None, crops: int) -> HDRFolderDataset:
        return HDRFolderDataset(
            self.root,
            split=split,
            split_fractions=self.split_fractions,
            num_scenes=num_scenes,
            synthesizer=_synthesizer(self.synth, patch_size=self.patch_size, split=split),
            crops_per_image=crops,
            panorama=self.panorama,
            seed=self.seed if split == "train" else EVAL_SEED,
            cache=self.cache,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset(
                "train", num_scenes=self.num_train_scenes, crops=self.crops_per_image,
            )
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = PinnedEpochDataset(
                self._dataset("val", num_scenes=None, crops=self.eval_crops_per_image)
            )
        if stage in (None, "test") and self.test_set is None:
            self.test_set = PinnedEpochDataset(
                self._dataset("test", num_scenes=None, crops=self.eval_crops_per_image)
            )
