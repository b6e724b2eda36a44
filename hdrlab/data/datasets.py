"""Map-style datasets of linear HDR images turned into training pairs, and unpaired LDR photos.

* :class:`ProceduralHDRDataset` -- procedural scenes (:func:`hdrlab.data.procedural.render_scene`).
* :class:`HDRFolderDataset` -- any folder of ``.exr`` / ``.hdr`` / ``.pfm`` files, split by source
  file, with lat-long panoramas cropped to perspective views or central bands.
* :class:`UnpairedLDRFolder` -- a folder of LDR photographs (png / jpg / tif).

Randomness: an item key is either an ``int`` index (synthesised with the dataset's current
epoch, see ``set_epoch``) or an ``(index, epoch)`` tuple (as yielded by
:class:`hdrlab.data.datamodules.EpochSampler`, robust with persistent DataLoader workers).
Every random choice of item ``index`` at ``epoch`` comes from
``sample_generator(seed, epoch, index)``: identical for identical keys, different across epochs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from hdrlab.data.synthesis import PairSynthesizer, sample_generator
from hdrlab.errors import ConfigError, HDRIOError

__all__ = [
    "HDR_SUFFIXES",
    "LDR_SUFFIXES",
    "ProceduralHDRDataset",
    "HDRFolderDataset",
    "UnpairedLDRFolder",
    "list_images",
    "split_of",
    "subset_rank",
    "is_latlong",
    "perspective_grid",
    "latlong_to_perspective",
    "latlong_central_band",
    "SCENE_CACHE_LIMIT_BYTES",
    "scene_cache_bytes",
    "resolve_scene_cache",
]

HDR_SUFFIXES: tuple[str, ...] = (".exr", ".hdr", ".pfm")
LDR_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _item_key(key: Any, default_epoch: int) -> tuple[int, int]:
    """``int`` -> ``(index, default_epoch)``; ``(index, epoch)`` -> itself."""
    if isinstance(key, (tuple, list)):
        index, epoch = key
        return int(index), int(epoch)
    return int(key), int(default_epoch)


def _unit_hash(text: str) -> float:
    """Deterministic hash of ``text`` mapped to ``[0, 1)`` (BLAKE2b, 53 bits)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) / float(1 << 53)


def list_images(root: str | Path, suffixes: Sequence[str]) -> list[Path]:
    """All files under ``root`` (recursive) whose suffix (case-insensitive) is in ``suffixes``, sorted.

    Raises:
        HDRIOError: ``root`` does not exist, is not a folder or holds no such file.
    """
    root = Path(root)
    if not root.is_dir():
        raise HDRIOError(f"image folder {root} does not exist or is not a folder; pass an existing folder")
    wanted = {s.lower() for s in suffixes}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    if not files:
        raise HDRIOError(
            f"image folder {root} holds no files with suffix {'/'.join(sorted(wanted))}; "
            "put images there or point root at the right folder"
        )
    return files


def split_of(relative_path: str, split_fractions: Sequence[float]) -> str:
    """Split (``"train"``/``"val"``/``"test"``) of one source file, from a hash of its relative path.

    The hash only depends on the POSIX relative path, so the assignment is stable when files
    are added elsewhere, and every crop of one source image lands in the same split.

    Args:
        relative_path: path relative to the dataset root, POSIX separators.
        split_fractions: ``(train, val, test)`` fractions summing to 1.
    """
    u = _unit_hash("split:" + relative_path)
    train, val, _ = split_fractions
    if u < train:
        return "train"
    if u < train + val:
        return "val"
    return "test"


def subset_rank(relative_path: str, seed: int) -> float:
    """Rank key used to pick a deterministic ``num_scenes`` subset (smaller = picked first)."""
    return _unit_hash(f"subset:{seed}:{relative_path}")


def is_latlong(height: int, width: int, *, tolerance: float = 0.05) -> bool:
    """True for 2:1 lat-long panoramas: ``|W / H - 2| <= tolerance``."""
    return abs(width / height - 2.0) <= tolerance


def perspective_grid(*, fov_deg: float, yaw_deg: float, pitch_deg: float, height: int, width: int) -> Tensor:
    """Sampling grid of a pinhole (gnomonic) view into a lat-long panorama.

    Camera: looks along +z, x right, y up; horizontal field of view ``fov_deg``; the view
    direction is rotated by ``pitch`` (about x, positive up) then ``yaw`` (about y, positive
    towards +x = increasing longitude). For pixel centre ``(u, v)`` in ``[-1, 1]`` (u right,
    v down) the ray is ``d = (u tan(f/2), -v tan(f/2) H/W, 1)``; its longitude
    ``lon = atan2(d_x, d_z)`` in ``[-pi, pi]`` and latitude ``lat = asin(d_y / |d|)``
    (gnomonic projection) map to panorama coordinates ``x = lon / pi``, ``y = -lat / (pi/2)``
    (top row = +90 degrees), the ``grid_sample`` convention with ``align_corners=False``.

    Returns:
        ``[height, width, 2]`` float32 grid for :func:`torch.nn.functional.grid_sample`.
    """
    half = math.tan(math.radians(fov_deg) / 2.0)
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2.0 - 1.0
    v = (torch.arange(height, dtype=torch.float64) + 0.5) / height * 2.0 - 1.0
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    x = uu * half
    y = -vv * half * (height / width)
    z = torch.ones_like(x)
    pitch, yaw = math.radians(pitch_deg), math.radians(yaw_deg)
    # rotate about x (pitch up), then about y (yaw)
    y1 = y * math.cos(pitch) + z * math.sin(pitch)
    z1 = -y * math.sin(pitch) + z * math.cos(pitch)
    x2 = x * math.cos(yaw) + z1 * math.sin(yaw)
    z2 = -x * math.sin(yaw) + z1 * math.cos(yaw)
    lon = torch.atan2(x2, z2)
    lat = torch.asin((y1 / torch.sqrt(x2**2 + y1**2 + z2**2)).clamp(-1.0, 1.0))
    return torch.stack((lon / math.pi, -lat / (math.pi / 2.0)), dim=-1).float()


def latlong_to_perspective(
    panorama: Tensor, *, fov_deg: float, yaw_deg: float, pitch_deg: float, size: int
) -> Tensor:
    """Render a square perspective view of a lat-long panorama (bilinear ``grid_sample``).

    Args:
        panorama: ``[C, H, 2H]`` linear radiance.
        fov_deg, yaw_deg, pitch_deg: view parameters (see :func:`perspective_grid`).
        size: output side in pixels.

    Returns:
        ``[C, size, size]`` view (same domain as the input).
    """
    grid = perspective_grid(fov_deg=fov_deg, yaw_deg=yaw_deg, pitch_deg=pitch_deg, height=size, width=size)
    # pad one column on each side with the opposite edge so longitude wraps around the seam
    wrapped = torch.cat((panorama[..., -1:], panorama, panorama[..., :1]), dim=-1)
    width = panorama.shape[-1]
    grid = grid.clone()
    grid[..., 0] = grid[..., 0] * width / (width + 2)
    return F.grid_sample(wrapped[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]


def latlong_central_band(panorama: Tensor, *, yaw_deg: float) -> Tensor:
    """Central band (latitudes -45..+45 degrees) of a lat-long panorama, rolled by ``yaw_deg``.

    Args:
        panorama: ``[C, H, W]`` lat-long image.
        yaw_deg: horizontal rotation (the band starts at this longitude offset).

    Returns:
        ``[C, H/2, W]`` band (rows ``H/4 .. 3H/4``).
    """
    height, width = panorama.shape[-2:]
    shift = int(round(yaw_deg / 360.0 * width)) % width
    band = panorama[..., height // 4 : height - height // 4, :]
    return torch.roll(band, shifts=-shift, dims=-1)


#: Memory cap of the ``cache="auto"`` scene cache of one dataset (per process): 1 GiB.
SCENE_CACHE_LIMIT_BYTES: int = 1 << 30


def scene_cache_bytes(num_scenes: int, height: int, width: int) -> int:
    """Bytes of ``num_scenes`` cached float32 scenes ``[3, height, width]`` (``12 H W`` each)."""
    return int(num_scenes) * 3 * int(height) * int(width) * 4


def resolve_scene_cache(cache: bool | str, *, num_scenes: int, height: int, width: int, limit_bytes: int) -> bool:
    """Scene-cache policy: ``True`` / ``False`` as given; ``"auto"`` = on when the cache fits ``limit_bytes``.

    Raises:
        ConfigError: ``cache`` is neither a bool nor ``"auto"``.
    """
    if isinstance(cache, bool):
        return cache
    if cache == "auto":
        return scene_cache_bytes(num_scenes, height, width) <= limit_bytes
    raise ConfigError(f"scene cache must be True, False or 'auto', got {cache!r}; use 'auto' to cache when it fits in memory")


class ProceduralHDRDataset(Dataset):
    """Procedural HDR scenes turned into training pairs.

    Scene ``i`` is ``render_scene(seed_offset + i, height=height, width=width)`` (linear
    radiance ``[3, H, W]``); item ``i`` at epoch ``e`` is ``synthesizer(scene,
    generator=sample_generator(seed, e, i))``. Deterministic for a given key.

    Scene cache. The dataset is a fixed set of ``num_scenes`` scenes re-used every epoch (only
    the synthesis is keyed by the epoch), so keeping rendered scenes in memory is exact: cached
    and uncached datasets return identical items. Scenes are rendered lazily, on first use, in
    the process that asks for them (each DataLoader worker has its own cache; with persistent
    workers it lives across epochs). Rendering costs several times the synthesis of a pair (see
    ``benchmarks/bench_synthesis.py``), so from the second epoch on the cache removes most of the
    data time. ``cache="auto"`` (default) turns it on when ``num_scenes * 12 * H * W`` bytes
    (:func:`scene_cache_bytes`) fit in ``cache_limit_bytes`` (default
    :data:`SCENE_CACHE_LIMIT_BYTES` = 1 GiB, e.g. 1000 scenes of 256x256 = 786 MB).

    Args:
        num_scenes: number of scenes (dataset length).
        seed_offset: seed of scene 0 (use disjoint ranges for train / val / test).
        height, width: render size of a scene in pixels.
        synthesizer: :class:`PairSynthesizer` applied to each scene.
        seed: experiment seed keying the synthesis randomness.
        cache: ``"auto"``, ``True`` (always keep rendered scenes) or ``False`` (render every item).
        cache_limit_bytes: memory cap of ``cache="auto"``.
    """

    def __init__(
        self,
        *,
        num_scenes: int = 100,
        seed_offset: int = 0,
        height: int = 256,
        width: int = 256,
        synthesizer: PairSynthesizer | None = None,
        seed: int = 0,
        cache: bool | str = "auto",
        cache_limit_bytes: int = SCENE_CACHE_LIMIT_BYTES,
    ) -> None:
        if num_scenes < 1:
            raise ConfigError(f"ProceduralHDRDataset.num_scenes must be >= 1, got {num_scenes}")
        self.num_scenes = int(num_scenes)
        self.seed_offset = int(seed_offset)
        self.height, self.width = int(height), int(width)
        self.synthesizer = synthesizer if synthesizer is not None else PairSynthesizer()
        self.seed = int(seed)
        self.cache = resolve_scene_cache(
            cache, num_scenes=self.num_scenes, height=self.height, width=self.width, limit_bytes=int(cache_limit_bytes)
        )
        self.epoch = 0
        self._scenes: dict[int, Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        """Key the synthesis of plain ``int`` items to ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_scenes

    def scene(self, index: int) -> Tensor:
        """Rendered scene ``[3, H, W]`` (linear radiance) of item ``index``."""
        from hdrlab.data.procedural import render_scene

        image = self._scenes.get(index)
        if image is None:
            image = render_scene(self.scene_seed(index), height=self.height, width=self.width)
            if self.cache:
                self._scenes[index] = image
        return image

    def scene_seed(self, index: int) -> int:
        """Seed of the procedural scene behind item ``index``."""
        return self.seed_offset + index

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = _item_key(key, self.epoch)
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"ProceduralHDRDataset index {index} out of range 0..{self.num_scenes - 1}")
        scene = self.scene(index)
        generator = sample_generator(self.seed, epoch, index)
        return self.synthesizer(scene, generator=generator, name=f"procedural_{self.scene_seed(index):08d}")


class HDRFolderDataset(Dataset):
    """A folder of HDR radiance maps (``.exr``/``.hdr``/``.pfm``, recursive) as training pairs.

    Splits are by SOURCE file: a hash of the file's path relative to ``root`` assigns it to
    train / val / test with probabilities ``split_fractions`` (:func:`split_of`), so all crops
    of one panorama stay in one split and the assignment never depends on the other files.
    ``num_scenes`` keeps a deterministic subset of the split (the ``num_scenes`` files with
    the smallest :func:`subset_rank`, so smaller subsets are nested in larger ones).

    Each source yields ``crops_per_image`` items. 2:1 lat-long panoramas (``|W/H - 2| <=
    0.05``) are first reduced to a photographic view: ``panorama="perspective"`` renders a
    gnomonic view (FOV ``~U(fov_deg)``, yaw ``~U(0, 360)``, pitch ``~U(-max_pitch, max_pitch)``)
    of ``max(patch, FOV * W / 360)`` pixels, i.e. at least the panorama's angular resolution;
    ``panorama="band"`` keeps the central latitude band (-45..45 degrees) rolled by a random
    yaw. Then the synthesizer crops, exposes and renders the pair.

    Args:
        root: folder of HDR files.
        split: ``"train"``, ``"val"`` or ``"test"``.
        split_fractions: ``(train, val, test)`` fractions summing to 1.
        num_scenes: ``None`` (all files of the split) or the number of source files to keep.
        synthesizer: :class:`PairSynthesizer` (default: ``PairSynthesizer()``).
        crops_per_image: items per source file.
        panorama: ``"perspective"`` or ``"band"``.
        fov_deg: ``(lo, hi)`` horizontal field of view of perspective views, degrees.
        max_pitch_deg: largest absolute pitch of perspective views, degrees.
        seed: experiment seed keying the synthesis randomness and the subset choice.
        cache: keep decoded source images in memory (per process).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        num_scenes: int | None = None,
        synthesizer: PairSynthesizer | None = None,
        crops_per_image: int = 1,
        panorama: str = "perspective",
        fov_deg: tuple[float, float] = (60.0, 90.0),
        max_pitch_deg: float = 10.0,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"HDRFolderDataset.split must be one of {SPLITS}, got {split!r}")
        fractions = tuple(float(f) for f in split_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"HDRFolderDataset.split_fractions must be three non-negative numbers summing to 1, got {split_fractions}"
            )
        if panorama not in ("perspective", "band"):
            raise ConfigError(f"HDRFolderDataset.panorama must be 'perspective' or 'band', got {panorama!r}")
        if crops_per_image < 1:
            raise ConfigError(f"HDRFolderDataset.crops_per_image must be >= 1, got {crops_per_image}")
        self.root = Path(root)
        self.split = split
        self.split_fractions = fractions
        self.synthesizer = synthesizer if synthesizer is not None else PairSynthesizer()
        self.crops_per_image = int(crops_per_image)
        self.panorama = panorama
        self.fov_deg = (float(fov_deg[0]), float(fov_deg[1]))
        self.max_pitch_deg = float(max_pitch_deg)
        self.seed = int(seed)
        self.cache = bool(cache)
        self.epoch = 0
        self._cache: dict[Path, Tensor] = {}

        files = list_images(self.root, HDR_SUFFIXES)
        relative = [p.relative_to(self.root).as_posix() for p in files]
        in_split = [rel for rel in relative if split_of(rel, fractions) == split]
        if not in_split:
            raise ConfigError(
                f"HDR folder {self.root} has {len(files)} HDR files but none falls in split {split!r} "
                f"with split_fractions={fractions}; add files or change split_fractions"
            )
        if num_scenes is not None:
            if num_scenes < 1 or num_scenes > len(in_split):
                raise ConfigError(
                    f"HDR folder {self.root} has {len(in_split)} files in split {split!r} but num_scenes={num_scenes} "
                    f"was asked; set num_scenes to at most {len(in_split)} (or None for all) or add HDR files"
                )
            in_split = sorted(sorted(in_split, key=lambda rel: subset_rank(rel, self.seed))[:num_scenes])
        self.relative_paths: list[str] = in_split

    def set_epoch(self, epoch: int) -> None:
        """Key the synthesis of plain ``int`` items to ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.relative_paths) * self.crops_per_image

    def load(self, relative_path: str) -> Tensor:
        """Decoded source image ``[3, H, W]`` linear (cached when ``cache=True``)."""
        from hdrlab.io import read_hdr

        path = self.root / relative_path
        image = self._cache.get(path)
        if image is None:
            image = read_hdr(path).float().clamp_min(0.0)
            image = torch.nan_to_num(image, nan=0.0, posinf=0.0)
            if self.cache:
                self._cache[path] = image
        return image

    def view(self, image: Tensor, *, generator: torch.Generator) -> Tensor:
        """Photographic view of a panorama (see class docstring); other images unchanged."""
        height, width = image.shape[-2:]
        if not is_latlong(height, width):
            return image
        yaw = 360.0 * float(torch.rand((), generator=generator))
        if self.panorama == "band":
            return latlong_central_band(image, yaw_deg=yaw)
        fov = self.fov_deg[0] + (self.fov_deg[1] - self.fov_deg[0]) * float(torch.rand((), generator=generator))
        pitch = self.max_pitch_deg * (2.0 * float(torch.rand((), generator=generator)) - 1.0)
        size = max(self.synthesizer.patch_size, int(round(fov / 360.0 * width)))
        return latlong_to_perspective(image, fov_deg=fov, yaw_deg=yaw, pitch_deg=pitch, size=size)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = _item_key(key, self.epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"HDRFolderDataset index {index} out of range 0..{len(self) - 1}")
        relative_path = self.relative_paths[index // self.crops_per_image]
        generator = sample_generator(self.seed, epoch, index)
        image = self.view(self.load(relative_path), generator=generator)
        name = f"{relative_path}#{index % self.crops_per_image}"
        return self.synthesizer(image, generator=generator, name=name)


class UnpairedLDRFolder(Dataset):
    """A folder of LDR photographs (``.png/.jpg/.jpeg/.tif/.tiff``, recursive, sorted).

    Items: ``{"ldr": [3, H, W] float in [0, 1] (display-referred; linearised with the sRGB
    EOTF when srgb_decode=True), "bit_depth": int, "exposure_time": float or nan,
    "name": relative path}``.
    """

    def __init__(self, root: str | Path, *, srgb_decode: bool = False) -> None:
        self.root = Path(root)
        self.srgb_decode = bool(srgb_decode)
        self.files = list_images(self.root, LDR_SUFFIXES)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from hdrlab.io import read_ldr

        path = self.files[index]
        image = read_ldr(path, srgb_decode=self.srgb_decode)
        exposure = image.exposure_time
        return {
            "ldr": image.image.float(),
            "bit_depth": int(image.bit_depth),
            "exposure_time": float("nan") if exposure is None else float(exposure),
            "name": path.relative_to(self.root).as_posix(),
        }
