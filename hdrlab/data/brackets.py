"""Real exposure brackets as training / evaluation data: the Kalantari 2017 set and SICE.

Both DataModules hand out items with the SAME keys as a synthesised bracket sample
(:class:`hdrlab.data.synthesis.PairSynthesizer` with ``bracket_ev``; :class:`~hdrlab.data.batch.HDRBatch`),
so every bracket method trains and scores on them unchanged:

* ``stack [N, 3, H, W]`` float32 display code values in ``[0, 1]`` (code / (2^bits - 1)), ascending ev;
* ``ev [N]`` float32, ``log2(t / t_reference)`` (the reference exposure has ev 0);
* ``ldr = ldr_float [3, H, W]``: the reference exposure as stored (no re-quantisation);
* ``hdr [3, H, W]`` float32 linear, relative to the reference exposure (see each module for what
  it is on that data set), ``hdr_clipped = min(hdr, 1)``;
* ``crf_forward`` / ``crf_inverse [1, 1024]``: LUTs of ``CRF.gamma(2.2)`` (the camera model assumed);
* ``clip_mask [1, H, W]``: :func:`hdrlab.data.synthesis.clip_mask` of ``ldr`` with ``clip_bits``;
* ``exposure_ev []`` float32: the ev applied to the stored radiance to reach the reference exposure;
* ``name``: the scene / sequence name.

Reproducibility follows :mod:`hdrlab.data.datamodules`: a training item is keyed by
``(seed, epoch, index)`` (:class:`~hdrlab.data.datamodules.EpochSampler` keys; crop position,
flips and rotations all come from ``sample_generator(seed, epoch, index)``); validation and test
items have no randomness (full image or a centre crop). The held-out validation scenes are the
``num_val_scenes`` training scenes with the smallest hash of their name: identical for every seed.

Decoded scenes are cached per process (``cache=True``) in their stored integer codes (lossless):
about 45 MB per Kalantari scene (1500 x 1000: three uint16 TIFFs + float32 HDR), i.e. ~3.3 GB for the
74 training scenes, per DataLoader worker process; SICE sequences after ``max_side`` resizing are
about ``(k + 2) * 3 * H * W`` bytes (k frames, reference, label; uint8).
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hdrlab.data.datamodules import _SynthDataModule, collate_hdr_batch
from hdrlab.data.public import KalantariDataset, SICEDataset, read_list_file
from hdrlab.data.synthesis import clip_mask, sample_generator
from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.tonemap import display_inverse

__all__ = [
    "KALANTARI_TEST_SCENES",
    "BracketSceneDataset",
    "KalantariDataModule",
    "SICEDataModule",
    "heldout_names",
    "sice_frame_indices",
]

#: The 15 Kalantari test scenes of qingsenyangit/AHDRNet ``test.txt`` (scene folder names).
KALANTARI_TEST_SCENES: tuple[str, ...] = (
    "001", "002", "003", "004", "005", "006", "007", "008", "009", "010",
    "BarbequeDay", "LadySitting", "ManStanding", "PeopleStanding", "PeopleTalking",
)  # fmt: skip

#: Folder names (case-insensitive) accepted as the Kalantari splits.
KALANTARI_SPLIT_NAMES: dict[str, tuple[str, ...]] = {"train": ("training", "train"), "test": ("test", "testing")}

_VALIDATION = ("heldout", "test")


# ----------------------------------------------------------------------------- helpers


def heldout_names(names: list[str], count: int) -> set[str]:
    """The ``count`` names with the smallest BLAKE2b hash of ``"heldout:" + name`` (seed-independent,
    stable when other scenes are added or removed)."""

    def rank(name: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"heldout:{name}".encode(), digest_size=8).digest(), "little")

    return set(sorted(names, key=rank)[:count])


def sice_frame_indices(num_frames: int, count: int) -> list[int]:
    """Indices of the ``count`` frames taken from an ascending sequence of ``num_frames``.

    ``floor(i (N - 1) / (k - 1) + 1/2)`` for ``i = 0 .. k-1``: evenly spread from the darkest
    (``0``) to the brightest (``N - 1``); for odd ``k`` the centre one is exactly ``N // 2``, the
    sequence's reference (``k = 3``: darkest, middle, brightest; ``k = 2``: darkest, brightest).

    Raises:
        ConfigError: ``count < 2`` or ``count > num_frames``.
    """
    if count < 2:
        raise ConfigError(f"SICEDataModule.num_exposures must be >= 2, got {count}")
    if count > num_frames:
        raise ConfigError(f"a sequence of {num_frames} frames cannot give {count} exposures; lower num_exposures")
    return [int(math.floor(i * (num_frames - 1) / (count - 1) + 0.5)) for i in range(count)]


def _find_dirs(root: Path, accepted: tuple[str, ...], what: str) -> Path | None:
    """The one child folder of ``root`` whose lower-cased name is in ``accepted`` (None if there is none)."""
    found = [p for p in root.iterdir() if p.is_dir() and p.name.lower() in accepted]
    if len(found) > 1:
        raise HDRIOError(f"{what}: {root} has several folders for one split ({', '.join(sorted(p.name for p in found))}); keep one")
    return found[0] if found else None


def _codes(image: Tensor, bits: int) -> np.ndarray:
    """Float code values ``[0, 1]`` back to the stored integers (exact: they were ``code / (2^bits - 1)``)."""
    scale = float(2**bits - 1)
    dtype = np.uint16 if bits == 16 else np.uint8
    return np.rint(image.numpy() * scale).astype(dtype)


def _to_float(codes: np.ndarray) -> Tensor:
    scale = 65535.0 if codes.dtype == np.uint16 else 255.0
    return torch.from_numpy(np.ascontiguousarray(codes).astype(np.float32)) / scale


def _gamma_luts() -> tuple[Tensor, Tensor]:
    from hdrlab.camera import CRF

    crf = CRF.gamma(2.2)
    return crf.forward_lut.detach().float().clone(), crf.inverse_lut.detach().float().clone()


# ----------------------------------------------------------------------------- scene sources


class _KalantariScenes:
    """Scene folders of one Kalantari split (via :class:`KalantariDataset`), decoded into compact records."""

    def __init__(self, split_dir: Path, names: list[str] | None = None) -> None:
        reader = KalantariDataset(split_dir)
        self.reader = reader
        indices: dict[str, int] = {}
        for i, scene in enumerate(reader.scenes):
            if scene.name in indices:
                other = reader.scenes[indices[scene.name]]
                raise HDRIOError(f"Kalantari split {split_dir}: scenes {other} and {scene} share the name {scene.name!r}; rename one")
            indices[scene.name] = i
        self.names = list(indices) if names is None else list(names)
        self.indices = [indices[n] for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> dict[str, Any]:
        item = self.reader[self.indices[i]]
        evs = item["ev"].tolist()
        if evs != sorted(evs) or len(set(evs)) != len(evs):
            raise HDRIOError(f"Kalantari scene {self.names[i]}: exposure.txt EVs {evs} are not distinct; fix the file")
        # exposure_ev: HDRImg.hdr is relative to the darkest exposure (t = 1); reaching the reference
        # multiplied it by 2^(EV_ref - EV_min) = 2^(-ev[0]).
        return {
            "stack": _codes(item["stack"], 16),
            "reference": int(item["reference"]),
            "reference_image": None,
            "hdr": item["hdr"].float(),
            "label": None,
            "ev": evs,
            "exposure_ev": -float(evs[0]),
            "name": self.names[i],
        }


class _SICESequences:
    """Sequences of one SICE part (via :class:`SICEDataset`), ``num_exposures`` frames each, resized."""

    def __init__(self, part_dir: Path, *, num_exposures: int, ev_step: float, max_side: int | None,
                 names: list[str] | None = None) -> None:
        reader = SICEDataset(part_dir)
        by_name = {name: (frames, label) for name, frames, label in reader.items}
        self.names = [name for name, _, _ in reader.items] if names is None else list(names)
        self.items = [(n, *by_name[n]) for n in self.names]
        self.num_exposures = int(num_exposures)
        self.ev_step = float(ev_step)
        self.max_side = max_side
        for name, frames, _ in self.items:
            if len(frames) < self.num_exposures:
                raise HDRIOError(
                    f"SICE sequence {part_dir / name} has {len(frames)} frames, fewer than num_exposures="
                    f"{self.num_exposures}; lower num_exposures or remove the sequence"
                )

    def __len__(self) -> int:
        return len(self.names)

    def _resize(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        if self.max_side is None or max(height, width) <= self.max_side:
            return image
        scale = self.max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0.0, 1.0)

    def _ev(self, name: str, picked: list[int], reference: int, times: dict[int, float | None]) -> list[float]:
        known = [times[i] for i in picked + [reference]]
        if all(t is not None for t in known):
            ev = [math.log2(times[i] / times[reference]) for i in picked]  # type: ignore[operator]
            if all(a < b for a, b in zip(ev, ev[1:])):
                return ev
            reason = f"EXIF exposure times {[times[i] for i in picked]} are not ascending"
        else:
            reason = "some frames have no EXIF ExposureTime"
        warnings.warn(
            f"SICE sequence {name}: {reason}; using the nominal spacing ev = {self.ev_step:g} * (frame - {reference})",
            stacklevel=2,
        )
        return [self.ev_step * (i - reference) for i in picked]

    def load(self, i: int) -> dict[str, Any]:
        from hdrlab.io import read_ldr

        name, frames, label_path = self.items[i]
        picked = sice_frame_indices(len(frames), self.num_exposures)
        reference = len(frames) // 2
        needed = sorted(set(picked) | {reference})
        decoded = {k: read_ldr(frames[k]) for k in needed}
        label = read_ldr(label_path)
        shapes = {tuple(im.image.shape) for im in decoded.values()} | {tuple(label.image.shape)}
        if len(shapes) != 1:
            raise HDRIOError(
                f"SICE sequence {name}: frames and label differ in size {sorted(shapes)}; resize them to one size"
            )
        times = {k: im.exposure_time for k, im in decoded.items()}
        ev = self._ev(name, picked, reference, times)
        images = {k: _codes(self._resize(im.image), 8) for k, im in decoded.items()}
        in_stack = reference in picked
        return {
            "stack": np.stack([images[k] for k in picked]),
            "reference": picked.index(reference) if in_stack else None,
            "reference_image": None if in_stack else images[reference],
            "hdr": None,
            "label": _codes(self._resize(label.image), 8),
            "ev": ev,
            "exposure_ev": 0.0,
            "name": name,
        }


# ----------------------------------------------------------------------------- dataset


class BracketSceneDataset(Dataset):
    """Items (see the module docstring) cut from the decoded scenes of a scene source.

    Training (``train=True``): ``len = scenes * crops_per_scene``; item ``index`` is a
    ``patch_size`` crop of scene ``index // crops_per_scene`` at a uniform position, then (with
    ``flips``) independent left-right / up-down flips each with p = 0.5 (the four outcomes are
    AHDRNet's identity / flip / flip / 180-degree rotation, equally likely), then (with ``rotate90``)
    a transpose with p = 0.5 (together: the 8 rotations / flips of Kalantari's geometric
    augmentation, no channel permutations). Keys are ``(index, epoch)`` (an ``int`` uses epoch 0);
    all randomness from ``sample_generator(seed, epoch, index)``.

    Evaluation (``train=False``): one item per scene, the full image or its centre
    ``eval_crop x eval_crop`` window (top-left ``((H - c) // 2, (W - c) // 2)``); the epoch is ignored.

    Args:
        scenes: a scene source with ``__len__``, ``names`` and ``load(i)``.
        train: training crops or evaluation items.
        patch_size, crops_per_scene, flips, rotate90: training crops (above).
        eval_crop: ``None`` (full image) or the centre-crop side.
        clip_bits: bit depth of the :func:`~hdrlab.data.synthesis.clip_mask` rule.
        seed: experiment seed.
        cache: keep decoded scenes in memory (per process).
        hdr_from_label: ``hdr = hdrlab.tonemap.display_inverse(label)`` (SICE) instead of the stored radiance.
    """

    def __init__(self, scenes: Any, *, train: bool, patch_size: int = 256, crops_per_scene: int = 1, flips: bool = True,
                 rotate90: bool = False, eval_crop: int | None = None, clip_bits: int = 8, seed: int = 0,
                 cache: bool = True, hdr_from_label: bool = False) -> None:
        self.scenes = scenes
        self.train = bool(train)
        self.patch_size = int(patch_size)
        self.crops_per_scene = int(crops_per_scene)
        self.flips = bool(flips)
        self.rotate90 = bool(rotate90)
        self.eval_crop = None if eval_crop is None else int(eval_crop)
        self.clip_bits = int(clip_bits)
        self.seed = int(seed)
        self.cache = bool(cache)
        self.hdr_from_label = bool(hdr_from_label)
        self._cache: dict[int, dict[str, Any]] = {}
        self._luts: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.scenes) * (self.crops_per_scene if self.train else 1)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def record(self, scene: int) -> dict[str, Any]:
        """Decoded scene ``scene`` (cached when ``cache=True``)."""
        rec = self._cache.get(scene)
        if rec is None:
            rec = self.scenes.load(scene)
            if self.cache:
                self._cache[scene] = rec
        return rec

    def _window(self, rec: dict[str, Any], generator: torch.Generator | None) -> tuple[slice, slice]:
        height, width = rec["stack"].shape[-2:]
        size = self.patch_size if self.train else self.eval_crop
        if size is None:
            return slice(0, height), slice(0, width)
        if height < size or width < size:
            key = "patch_size" if self.train else "eval_crop"
            raise HDRIOError(f"scene {rec['name']} is {height}x{width}, smaller than {key}={size}; lower {key}")
        if generator is None:
            top, left = (height - size) // 2, (width - size) // 2
        else:
            top = int(torch.randint(0, height - size + 1, (), generator=generator))
            left = int(torch.randint(0, width - size + 1, (), generator=generator))
        return slice(top, top + size), slice(left, left + size)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        if not 0 <= index < len(self):
            raise IndexError(f"BracketSceneDataset index {index} out of range 0..{len(self) - 1}")
        scene = index // self.crops_per_scene if self.train else index
        rec = self.record(scene)
        generator = sample_generator(self.seed, epoch, index) if self.train else None
        rows, cols = self._window(rec, generator)
        stack = _to_float(rec["stack"][..., rows, cols])
        reference = rec["reference"]
        ref = stack[reference] if reference is not None else _to_float(rec["reference_image"][..., rows, cols])
        hdr = display_inverse(_to_float(rec["label"][..., rows, cols])) if self.hdr_from_label else rec["hdr"][..., rows, cols]
        parts = [stack, ref[None], hdr[None]]
        if generator is not None:
            horizontal, vertical = (torch.rand(2, generator=generator) < 0.5).tolist() if self.flips else (False, False)
            dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
            if dims:
                parts = [p.flip(dims) for p in parts]
            if self.rotate90 and bool(torch.rand((), generator=generator) < 0.5):
                parts = [p.transpose(-1, -2) for p in parts]
        stack, ref, hdr = (p.contiguous() for p in parts)
        ref, hdr = ref[0], hdr[0].float()
        if self._luts is None:
            self._luts = _gamma_luts()
        forward, inverse = self._luts
        return {
            "hdr": hdr,
            "hdr_clipped": hdr.clamp(max=1.0),
            "ldr_float": ref.clone(),
            "ldr": ref,
            "crf_forward": forward.clone(),
            "crf_inverse": inverse.clone(),
            "clip_mask": clip_mask(ref, bits=self.clip_bits),
            "exposure_ev": torch.tensor(rec["exposure_ev"], dtype=torch.float32),
            "name": rec["name"],
            "stack": stack,
            "ev": torch.tensor(rec["ev"], dtype=torch.float32),
        }


# ----------------------------------------------------------------------------- DataModules


class _BracketDataModule(_SynthDataModule):
    """Shared setup of the real-bracket DataModules (training crops, validation choice, eval loaders)."""

    #: items' ``hdr`` is the label mapped through ``tonemap.display_inverse`` (no radiance ground truth)
    hdr_from_label: ClassVar[bool] = False

    def __init__(self, *, patch_size: int, crops_per_scene: int, flips: bool, rotate90: bool, validation: str,
                 num_val_scenes: int, eval_crop: int | None, clip_bits: int, cache: bool, batch_size: int,
                 eval_batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, synth={})
        name = type(self).__name__
        if patch_size < 1:
            raise ConfigError(f"{name}.patch_size must be >= 1, got {patch_size}")
        if crops_per_scene < 1:
            raise ConfigError(f"{name}.crops_per_scene must be >= 1, got {crops_per_scene}")
        if validation not in _VALIDATION:
            raise ConfigError(f"{name}.validation must be 'heldout' or 'test', got {validation!r}")
        if validation == "heldout" and num_val_scenes < 1:
            raise ConfigError(f"{name}.num_val_scenes must be >= 1 with validation='heldout', got {num_val_scenes}")
        if eval_crop is not None and eval_crop < 1:
            raise ConfigError(f"{name}.eval_crop must be None or >= 1, got {eval_crop}")
        if eval_batch_size < 1:
            raise ConfigError(f"{name}.eval_batch_size must be >= 1, got {eval_batch_size}")
        if clip_bits not in (8, 16):
            raise ConfigError(f"{name}.clip_bits must be 8 or 16, got {clip_bits}")
        self.patch_size = int(patch_size)
        self.crops_per_scene = int(crops_per_scene)
        self.flips = bool(flips)
        self.rotate90 = bool(rotate90)
        self.validation = validation
        self.num_val_scenes = int(num_val_scenes)
        self.eval_crop = eval_crop
        self.clip_bits = int(clip_bits)
        self.cache = bool(cache)
        self.eval_batch_size = int(eval_batch_size)

    # subclasses: the scene source of a split ("train" / "test"), optionally restricted to names
    def _source(self, split: str, names: list[str] | None = None) -> Any:
        raise NotImplementedError

    def _dataset(self, source: Any, *, train: bool) -> BracketSceneDataset:
        return BracketSceneDataset(
            source, train=train, patch_size=self.patch_size, crops_per_scene=self.crops_per_scene, flips=self.flips,
            rotate90=self.rotate90, eval_crop=self.eval_crop, clip_bits=self.clip_bits,
            seed=self.seed, cache=self.cache, hdr_from_label=self.hdr_from_label,
        )  # fmt: skip

    def train_val_names(self) -> tuple[list[str], list[str] | None]:
        """Training scene names and held-out validation names (``None`` with ``validation='test'``)."""
        names = list(self._source("train").names)
        if self.validation == "test":
            return names, None
        if self.num_val_scenes >= len(names):
            raise ConfigError(
                f"{type(self).__name__}: num_val_scenes={self.num_val_scenes} leaves no training scene of {len(names)}; "
                "lower num_val_scenes"
            )
        held = heldout_names(names, self.num_val_scenes)
        return [n for n in names if n not in held], [n for n in names if n in held]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and (self.train_set is None or self.val_set is None):
            train, val = self.train_val_names()
            if stage in (None, "fit") and self.train_set is None:
                self.train_set = self._dataset(self._source("train", train), train=True)
            if self.val_set is None:
                source = self._source("train", val) if val is not None else self._source("test")
                self.val_set = self._dataset(source, train=False)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._dataset(self._source("test"), train=False)

    def _eval_loader(self, dataset: Dataset | None) -> DataLoader:
        if dataset is None:
            raise ConfigError(f"{type(self).__name__}: call setup() before asking for a DataLoader")
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_hdr_batch, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)


class KalantariDataModule(_BracketDataModule):
    """The Kalantari & Ramamoorthi (SIGGRAPH 2017) dynamic-scene set as real 3-exposure brackets.

    Layout of ``root`` (split folders matched case-insensitively)::

        <root>/Training/ or train/        the 74 training scenes (release: Training/001 .. 074)
        <root>/Test/ or testing/          the test scenes (release: Test/EXTRA/*, Test/PAPER/*;
                                          AHDRNet's preparation reads Test/<scene> directly: both work)

    A scene is any folder below a split folder (recursive) that holds ``exposure.txt``, read by
    :class:`~hdrlab.data.public.KalantariDataset` (3 16-bit gamma-2.2 TIFFs, one EV per TIFF with the
    lowest 0, ``HDRImg.hdr`` aligned to the middle exposure, radiance for t = 1 at the darkest). Its
    name is its folder name (e.g. ``001``, ``BarbequeDay``: the names of AHDRNet's ``.h5`` files),
    which must be unique within a split.

    Items (module docstring): ``stack [3, 3, H, W]`` ascending, ``ev`` relative to the middle
    (reference) exposure, e.g. ``[-2, 0, 2]``; ``hdr = HDRImg * 2^(EV_ref - EV_min)`` (radiance times
    the reference exposure: the reference clips where ``hdr >= 1``); ``exposure_ev = EV_ref - EV_min``;
    ``ldr = ldr_float = stack[1]``; CRF LUTs of ``CRF.gamma(2.2)`` (the set's inverse CRF is a pure
    2.2 gamma). The non-reference exposures are the released ones: NOT aligned to the reference
    (dynamic scenes; ``hdr`` is aligned to the reference only).

    Splits: training = the training scenes, minus ``num_val_scenes`` held out for validation by a
    seed-independent hash of their names (``validation="heldout"``, default: the model is never
    selected on the test scenes; a deviation from the official 74-scene training), or all 74 with
    the test scenes as validation (``validation="test"``); test = the test scenes, restricted to
    and ordered by ``test_list`` when given. Each line of ``test_list`` names a scene by its folder
    name, a path ending in it, or a file stem (AHDRNet's ``test.txt`` lines ``.../no-flow/test/001.h5`` work);
    see :data:`KALANTARI_TEST_SCENES` for the 15 it lists.

    Args:
        root: the data set folder holding the split folders.
        test_list: optional list file (above).
        patch_size: training crop side (default 256, AHDRNet's; Kalantari's own patches are 40).
        crops_per_scene: random training crops per scene and epoch.
        flips: random flips (AHDRNet's four-way geometric augmentation).
        rotate90: also random transposes (Kalantari's eight geometric augmentations; no channel swaps).
        validation: ``"heldout"`` or ``"test"`` (above).
        num_val_scenes: held-out training scenes with ``validation="heldout"``.
        eval_crop: ``None`` (full 1500 x 1000 images) or the side of a centre crop for val / test.
        clip_bits: bit depth of the clip-mask rule (default 8: max channel >= 254.5/255; the TIFFs
            were resized after the gamma, so saturated pixels need not sit at code 65535).
        cache: keep decoded scenes in memory (module docstring for the size).
        batch_size: training batch size; eval_batch_size: val / test batch size (full images).
        num_workers, seed: DataLoader workers; experiment seed keying the training crops.
    """

    def __init__(
        self,
        *,
        root: str = "data/kalantari",
        test_list: str | None = None,
        patch_size: int = 256,
        crops_per_scene: int = 1,
        flips: bool = True,
        rotate90: bool = False,
        validation: str = "heldout",
        num_val_scenes: int = 4,
        eval_crop: int | None = None,
        clip_bits: int = 8,
        cache: bool = True,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            patch_size=patch_size, crops_per_scene=crops_per_scene, flips=flips, rotate90=rotate90,
            validation=validation, num_val_scenes=num_val_scenes, eval_crop=eval_crop, clip_bits=clip_bits,
            cache=cache, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed,
        )  # fmt: skip
        self.root = root
        self.test_list = test_list

    def split_dir(self, split: str) -> Path:
        """The split folder (``"train"`` / ``"test"``) under ``root``."""
        root = Path(self.root)
        if not root.is_dir():
            raise HDRIOError(f"KalantariDataModule: root {root} does not exist; set data.init_args.root to the data set folder")
        folder = _find_dirs(root, KALANTARI_SPLIT_NAMES[split], "KalantariDataModule")
        if folder is None:
            want = "Training/" if split == "train" else "Test/"
            found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "no folders"
            raise HDRIOError(
                f"KalantariDataModule: {root} has no {want} folder (found: {found}); point root at the folder holding Training/ and Test/"
            )
        return folder

    def _source(self, split: str, names: list[str] | None = None) -> _KalantariScenes:
        folder = self.split_dir(split)
        if names is None and split == "test" and self.test_list is not None:
            names = self._listed(folder)
        return _KalantariScenes(folder, names)

    def _listed(self, folder: Path) -> list[str]:
        names = set(_KalantariScenes(folder).names)
        picked = []
        for entry in read_list_file(self.test_list):  # type: ignore[arg-type]
            path = Path(entry.replace("\\", "/"))
            key = path.name if path.name in names else path.stem
            if key not in names:
                raise HDRIOError(f"KalantariDataModule: {self.test_list} entry {entry!r} matches no scene under {folder}; fix the list")
            picked.append(key)
        if not picked:
            raise HDRIOError(f"KalantariDataModule: {self.test_list} lists no scene; fill it or set test_list to null")
        return picked


class SICEDataModule(_BracketDataModule):
    """SICE multi-exposure sequences (Cai, Gu, Zhang, TIP 2018) with their reference images.

    Layout of ``root``: the release's two parts as folders whose names end (case-insensitively,
    ignoring ``_``/``-``/spaces) in ``part1`` / ``part2``, e.g. ``Dataset_Part1``, ``Dataset_Part2``;
    each is read by :class:`~hdrlab.data.public.SICEDataset` (``<part>/<seq>/*.JPG`` darkest to
    brightest, ``<part>/Label/<seq>.JPG``; the release ships Part2's labels as a separate download,
    to be put in ``Dataset_Part2/Label``). The release (csjcai/SICE README) defines no train / test
    split: Part1 = 360 sequences, Part2 = 229. CF-Net's code (ytZhang99/CF-Net) reads prepared
    ``train_data`` / ``val_data`` / ``test_data`` folders and does not say which sequences went where.
    The default here, ``train_part="part1"``, ``test_part="part2"``, is a choice (unverified as CF-Net's).

    Frames: ``num_exposures`` frames of each sequence (:func:`sice_frame_indices`: darkest, middle,
    brightest for 3; the extreme pair for 2, CF-Net's input). The reference is the sequence's middle
    frame ``N // 2`` (as :class:`SICEDataset`): ``ldr = ldr_float`` is that frame, ``ev`` is relative
    to it. ``ev`` comes from EXIF ``ExposureTime`` when every frame used has it and it ascends; else a
    nominal ``ev_step * (frame - N // 2)`` with a warning (SICE's EV spacing per sequence is not
    documented by the release; ``ev_step = 1`` is an assumption).

    Resize: frames and label are downscaled together (bilinear, antialiased, then re-quantised to
    8 bits) so the longer side is at most ``max_side`` (SICE frames are several megapixels; sizes
    differ across sequences, frames of one sequence share one; ``None`` keeps the full size).

    Ground truth: SICE has no radiance. ``hdr = hdrlab.tonemap.display_inverse(label)`` (the exact inverse of
    :func:`hdrlab.tonemap.display`), so display-domain methods (e.g. CF-Net, scored against
    ``display(hdr)``) train and score against the label itself. ``hdr`` is NOT scene radiance
    relative to the reference exposure: linear-domain HDR metrics on SICE are not meaningful, and
    ``hdr_clipped`` / ``clip_mask`` (clip rule of ``ldr``, 8 bits) are only consistent in form.
    ``crf_*``: LUTs of ``CRF.gamma(2.2)``, an assumed response (the cameras' JPEG curves are unknown).
    ``exposure_ev`` is 0.

    Args:
        root: folder holding the two parts.
        train_part: part used for training (and held-out validation): ``"part1"`` or ``"part2"``.
        test_part: part used for testing, or ``None`` (no test split).
        num_exposures: frames per item (>= 2; every sequence must have at least this many).
        ev_step: nominal ev spacing of consecutive frames when EXIF cannot be used.
        max_side: longest side after resizing (``None``: no resize).
        patch_size, crops_per_scene, flips, rotate90, validation, num_val_scenes, eval_crop, cache,
        batch_size, eval_batch_size, num_workers, seed: as in :class:`KalantariDataModule`
            (``validation="test"`` validates on ``test_part``). Full-image val / test items of
            different sequences differ in size: keep ``eval_batch_size=1`` unless ``eval_crop`` is set.
    """

    hdr_from_label = True

    def __init__(
        self,
        *,
        root: str = "data/sice",
        train_part: str = "part1",
        test_part: str | None = "part2",
        num_exposures: int = 3,
        ev_step: float = 1.0,
        max_side: int | None = 1024,
        patch_size: int = 256,
        crops_per_scene: int = 1,
        flips: bool = True,
        rotate90: bool = False,
        validation: str = "heldout",
        num_val_scenes: int = 10,
        eval_crop: int | None = None,
        cache: bool = True,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            patch_size=patch_size, crops_per_scene=crops_per_scene, flips=flips, rotate90=rotate90,
            validation=validation, num_val_scenes=num_val_scenes, eval_crop=eval_crop, clip_bits=8,
            cache=cache, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed,
        )  # fmt: skip
        parts = ("part1", "part2")
        if train_part not in parts or (test_part is not None and test_part not in parts) or train_part == test_part:
            raise ConfigError(
                f"SICEDataModule.train_part / test_part must be two different values of 'part1', 'part2' "
                f"(test_part may be null), got {train_part!r} / {test_part!r}"
            )
        if validation == "test" and test_part is None:
            raise ConfigError("SICEDataModule.validation='test' needs a test_part; set test_part or validation='heldout'")
        if num_exposures < 2:
            raise ConfigError(f"SICEDataModule.num_exposures must be >= 2, got {num_exposures}")
        if not (ev_step > 0 and math.isfinite(ev_step)):
            raise ConfigError(f"SICEDataModule.ev_step must be > 0, got {ev_step}")
        if max_side is not None and max_side < 1:
            raise ConfigError(f"SICEDataModule.max_side must be None or >= 1, got {max_side}")
        self.root = root
        self.train_part = train_part
        self.test_part = test_part
        self.num_exposures = int(num_exposures)
        self.ev_step = float(ev_step)
        self.max_side = max_side

    def part_dir(self, part: str) -> Path:
        """The folder of ``part`` (``"part1"`` / ``"part2"``) under ``root``."""
        root = Path(self.root)
        if not root.is_dir():
            raise HDRIOError(f"SICEDataModule: root {root} does not exist; set data.init_args.root to the SICE folder")
        found = [p for p in root.iterdir() if p.is_dir() and re.sub(r"[\s_\-]", "", p.name.lower()).endswith(part)]
        if len(found) != 1:
            names = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "no folders"
            problem = "no" if not found else "more than one"
            raise HDRIOError(
                f"SICEDataModule: {root} has {problem} folder ending in {part!r} (found: {names}); "
                "point root at the folder holding Dataset_Part1/ and Dataset_Part2/"
            )
        return found[0]

    def _source(self, split: str, names: list[str] | None = None) -> _SICESequences:
        if split == "test" and self.test_part is None:
            raise ConfigError("SICEDataModule has no test split (test_part is null); set test_part")
        part = self.train_part if split == "train" else self.test_part
        return _SICESequences(self.part_dir(part), num_exposures=self.num_exposures, ev_step=self.ev_step,  # type: ignore[arg-type]
                              max_side=self.max_side, names=names)

