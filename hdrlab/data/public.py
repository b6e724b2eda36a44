"""Readers for the folder layouts of public HDR data sets (evaluation and fine-tuning).

Each reader is a map-style ``Dataset`` of dicts in the project conventions
(``docs/architecture.md``): LDR images ``[3, H, W]`` / stacks ``[N, 3, H, W]`` float in
``[0, 1]`` (display-referred code values), HDR images ``[3, H, W]`` linear, ``ev`` =
``log2(t / t_reference)`` (the input / reference exposure has ev 0; stacks ascending).
Nothing is resized or cropped here.

Layouts (sources: the official SingleHDR code, alex04072000/SingleHDR; the Kalantari &
Ramamoorthi 2017 data set and the test list of qingsenyangit/AHDRNet; the DrTMO pair CSVs of
VinAIResearch/single_image_hdr; the SICE release of Cai, Gu, Zhang 2018; details the sources leave
open are stated per class):

* :class:`HDRSynthRealDataset` -- SingleHDR HDR-Synth / HDR-Real: ``<root>/<split>/HDR_gt/*.hdr|exr``
  with optional ``<root>/<split>/LDR_in/*.jpg|png`` of the same stem.
* :class:`HDREyeDataset` -- ``<root>/LDR_in`` + ``<root>/HDR_gt`` (same stems), or one folder per
  scene (``00000`` ... ``00045``) holding one LDR and one HDR file.
* :class:`DrTMOBracketDataset` -- a CSV of pairs ``x,x_exp,y,y_exp``.
* :class:`SICEDataset` -- ``<root>/<seq>/*.jpg`` sequences plus ``<root>/Label/<seq>.jpg``.
* :class:`KalantariDataset` -- scene folders with 3 16-bit TIFFs, ``exposure.txt``, ``HDRImg.hdr``.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from hdrlab.data.datasets import HDR_SUFFIXES, LDR_SUFFIXES
from hdrlab.errors import ConfigError, HDRIOError

__all__ = [
    "HDRSynthRealDataset",
    "HDREyeDataset",
    "DrTMOBracketDataset",
    "SICEDataset",
    "KalantariDataset",
    "natural_key",
    "read_list_file",
]


def natural_key(name: str) -> list[Any]:
    """Sort key ordering digit runs numerically (``"2.jpg" < "10.jpg"``), case-insensitive."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _files(folder: Path, suffixes: tuple[str, ...], *, recursive: bool = False) -> list[Path]:
    """Files of ``folder`` with one of ``suffixes`` (case-insensitive), naturally sorted by relative path."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    found = [p for p in pattern if p.is_file() and p.suffix.lower() in suffixes]
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise HDRIOError(f"{what}: folder {path} does not exist; point root at the data set folder")
    return path


def _read_ldr_image(path: Path) -> Tensor:
    from hdrlab.io import read_ldr

    return read_ldr(path).image.float()


def _read_hdr_image(path: Path) -> Tensor:
    from hdrlab.io import read_hdr

    return read_hdr(path).float()


def read_list_file(path: str | Path) -> list[str]:
    """Entries of a file list (one per line; blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"list file {path} does not exist; pass an existing list_file or None")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def _pair_by_stem(ldr_dir: Path, hdr_dir: Path, what: str) -> list[tuple[str, Path, Path]]:
    """``(stem, ldr, hdr)`` for every HDR file of ``hdr_dir`` (recursive); each needs an LDR of the same stem."""
    hdr_files = _files(hdr_dir, HDR_SUFFIXES, recursive=True)
    ldr_files = {p.relative_to(ldr_dir).with_suffix("").as_posix(): p for p in _files(ldr_dir, LDR_SUFFIXES, recursive=True)}
    pairs = []
    for hdr in hdr_files:
        stem = hdr.relative_to(hdr_dir).with_suffix("").as_posix()
        if stem not in ldr_files:
            raise HDRIOError(f"{what}: {hdr} has no LDR input {ldr_dir / stem}.<jpg|png>; add it or remove the HDR file")
        pairs.append((stem, ldr_files[stem], hdr))
    if not pairs:
        raise HDRIOError(f"{what}: no HDR files in {hdr_dir}; point root at the data set folder")
    return pairs


class HDRSynthRealDataset(Dataset):
    """SingleHDR's HDR-Synth / HDR-Real sets (Liu et al., CVPR 2020).

    Layout (official code alex04072000/SingleHDR: ``training_code/convert_to_tf_record.py`` reads
    HDR-Real pairs ``HDR_gt/*.hdr`` with ``LDR_in/*.jpg``; ``training_code/i_dataset_train.pkl`` /
    ``i_dataset_test.pkl`` list the 503/60 HDR-Synth files)::

        <root>/<split>/HDR_gt/**/<stem>.hdr|.exr     linear HDR ground truth
        <root>/<split>/LDR_in/**/<stem>.jpg|.png     camera JPEG (optional: HDR-Synth training
                                                      HDRs have none; pairs are synthesised)

    Items: ``{"hdr": [3,H,W] linear (radiance scale as stored, NOT normalised to the input
    exposure: the pair's exposure relation is unknown, compare with scale alignment),
    "ldr": [3,H,W] display [0,1] (only when LDR_in exists), "name": stem}``.

    Args:
        root: data set folder (holding ``train/`` and ``test/``).
        split: ``"train"`` or ``"test"``.
        list_file: optional text file (e.g. the 503/60 HDR-Synth lists); each line is a relative
            path (with ``/``), a file name or a stem under ``HDR_gt``; it restricts and orders the
            items. A listed entry that is not on disk raises :class:`HDRIOError`.
    """

    def __init__(self, root: str | Path, *, split: str = "train", list_file: str | Path | None = None) -> None:
        if split not in ("train", "test"):
            raise ConfigError(f"HDRSynthRealDataset.split must be 'train' or 'test', got {split!r}")
        self.root = Path(root)
        split_dir = _require_dir(self.root / split, "HDRSynthRealDataset")
        hdr_dir = _require_dir(split_dir / "HDR_gt", "HDRSynthRealDataset")
        ldr_dir = split_dir / "LDR_in"
        if ldr_dir.is_dir():
            items = _pair_by_stem(ldr_dir, hdr_dir, "HDRSynthRealDataset")
        else:
            items = [(p.relative_to(hdr_dir).with_suffix("").as_posix(), None, p) for p in _files(hdr_dir, HDR_SUFFIXES, recursive=True)]
            if not items:
                raise HDRIOError(f"HDRSynthRealDataset: no HDR files in {hdr_dir}; point root at the data set folder")
        if list_file is not None:
            items = self._select(items, read_list_file(list_file), hdr_dir, Path(list_file))
        self.items: list[tuple[str, Path | None, Path]] = items

    @staticmethod
    def _select(items: list, entries: list[str], hdr_dir: Path, list_file: Path) -> list:
        lookup: dict[str, Any] = {}
        for item in items:
            stem, _, hdr = item
            rel = hdr.relative_to(hdr_dir).as_posix()
            for key in (rel, stem, hdr.name, Path(stem).name):
                lookup.setdefault(key, item)
        selected = []
        for entry in entries:
            key = entry.replace("\\", "/")
            if key not in lookup:
                raise HDRIOError(
                    f"HDRSynthRealDataset: {list_file} lists {entry!r}, which is not under {hdr_dir}; "
                    "fix the list or add the file"
                )
            selected.append(lookup[key])
        return selected

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem, ldr, hdr = self.items[index]
        item: dict[str, Any] = {"hdr": _read_hdr_image(hdr), "name": stem}
        if ldr is not None:
            item["ldr"] = _read_ldr_image(ldr)
        return item


class HDREyeDataset(Dataset):
    """HDR-Eye evaluation pairs (LDR input + HDR ground truth).

    Only the scene count is fixed by the sources (46, ``00000``-``00045`` in the SingleHDR results
    package linked from alex04072000/SingleHDR ``README.md``); two layouts are accepted:

    * ``<root>/LDR_in/<stem>.jpg|png`` + ``<root>/HDR_gt/<stem>.hdr|exr`` (SingleHDR layout), or
    * ``<root>/<scene>/`` folders each holding exactly one LDR and one HDR file.

    Items: ``{"ldr": [3,H,W] display [0,1], "hdr": [3,H,W] linear (scale as stored),
    "name": stem or scene folder}``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = _require_dir(Path(root), "HDREyeDataset")
        if (self.root / "LDR_in").is_dir() and (self.root / "HDR_gt").is_dir():
            self.items = _pair_by_stem(self.root / "LDR_in", self.root / "HDR_gt", "HDREyeDataset")
            return
        items = []
        scenes = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
        for scene in scenes:
            ldrs, hdrs = _files(scene, LDR_SUFFIXES), _files(scene, HDR_SUFFIXES)
            if len(ldrs) != 1 or len(hdrs) != 1:
                raise HDRIOError(
                    f"HDREyeDataset: scene folder {scene} must hold exactly one LDR and one HDR file, "
                    f"found {len(ldrs)} LDR and {len(hdrs)} HDR; fix the folder"
                )
            items.append((scene.name, ldrs[0], hdrs[0]))
        if not items:
            raise HDRIOError(
                f"HDREyeDataset: {self.root} has neither LDR_in/ + HDR_gt/ nor scene folders; point root at HDR-Eye"
            )
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, ldr, hdr = self.items[index]
        return {"ldr": _read_ldr_image(ldr), "hdr": _read_hdr_image(hdr), "name": name}


class DrTMOBracketDataset(Dataset):
    """Exposure pairs of the DrTMO data set as distributed with Le et al. (WACV 2023).

    CSV rows ``x,x_exp,y,y_exp`` (official code VinAIResearch/single_image_hdr: ``data/*.csv``,
    read by ``src/datamodules/dataset.py``): two LDR images of one 9-image stack
    and their exposure times in seconds (2^-10 ... 2^-6). A header row is optional. Image
    paths are relative to ``root`` (default: the CSV's folder).

    Items: ``{"x": [3,H,W] display [0,1] (the input), "y": [3,H,W] display [0,1],
    "x_exp": [] s, "y_exp": [] s, "ev": [] = log2(y_exp / x_exp) (ev of y relative to the input
    x), "name": "x-path|y-path"}``. Rows are kept as written (no swap to make x darker).
    """

    def __init__(self, csv_path: str | Path, *, root: str | Path | None = None) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise HDRIOError(f"DrTMOBracketDataset: CSV {self.csv_path} does not exist; pass the pair list (x,x_exp,y,y_exp)")
        self.root = Path(root) if root is not None else self.csv_path.parent
        rows: list[tuple[str, float, str, float]] = []
        with self.csv_path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                row = [cell.strip() for cell in row]
                if not row or not any(row):
                    continue
                if number == 1 and row[:4] == ["x", "x_exp", "y", "y_exp"]:
                    continue
                try:
                    x, x_exp, y, y_exp = row[:4]
                    times = float(x_exp), float(y_exp)
                except ValueError:
                    raise HDRIOError(
                        f"DrTMOBracketDataset: {self.csv_path} row {number} is {row!r}, expected x,x_exp,y,y_exp "
                        "with exposure times in seconds; fix the row"
                    ) from None
                if not (times[0] > 0 and times[1] > 0 and all(map(math.isfinite, times))):
                    raise HDRIOError(
                        f"DrTMOBracketDataset: {self.csv_path} row {number} has exposure times {times}; they must be > 0"
                    )
                rows.append((x, times[0], y, times[1]))
        if not rows:
            raise HDRIOError(f"DrTMOBracketDataset: {self.csv_path} holds no pair rows; fill it with x,x_exp,y,y_exp rows")
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        x, x_exp, y, y_exp = self.rows[index]
        return {
            "x": _read_ldr_image(self.root / x),
            "y": _read_ldr_image(self.root / y),
            "x_exp": torch.tensor(x_exp, dtype=torch.float32),
            "y_exp": torch.tensor(y_exp, dtype=torch.float32),
            "ev": torch.tensor(math.log2(y_exp / x_exp), dtype=torch.float32),
            "name": f"{x}|{y}",
        }


class SICEDataset(Dataset):
    """SICE multi-exposure sequences with reference labels (Cai, Gu, Zhang, TIP 2018).

    Layout (the public ``Dataset_Part1`` / ``Dataset_Part2`` folders of the SICE release, the data
    CF-Net trains on, ytZhang99/CF-Net)::

        <root>/<seq>/<k>.JPG    one sequence per folder, numbered from darkest to brightest
        <root>/Label/<seq>.JPG  the reference (label) image of the sequence

    Items: ``{"stack": [N,3,H,W] display [0,1] (natural file-name order = ascending exposure),
    "label": [3,H,W] display [0,1], "ev": [N] log2(t / t_reference) from EXIF ExposureTime (NaN
    when a file has none: SICE's EXIF is not guaranteed), "reference": N // 2 (middle image),
    "name": seq}``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = _require_dir(Path(root), "SICEDataset")
        label_dirs = [p for p in self.root.iterdir() if p.is_dir() and p.name.lower() == "label"]
        if not label_dirs:
            raise HDRIOError(f"SICEDataset: {self.root} has no Label/ folder; point root at Dataset_Part1 or Dataset_Part2")
        labels = {p.stem: p for p in _files(label_dirs[0], LDR_SUFFIXES)}
        items = []
        for seq in sorted(self.root.iterdir(), key=lambda p: natural_key(p.name)):
            if not seq.is_dir() or seq == label_dirs[0]:
                continue
            frames = _files(seq, LDR_SUFFIXES)
            if not frames:
                continue
            if seq.name not in labels:
                raise HDRIOError(f"SICEDataset: sequence {seq} has no label {label_dirs[0] / seq.name}.JPG; add it or remove the sequence")
            items.append((seq.name, frames, labels[seq.name]))
        if not items:
            raise HDRIOError(f"SICEDataset: {self.root} holds no sequence folders with images")
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from hdrlab.io import read_ldr

        name, frames, label = self.items[index]
        images = [read_ldr(p) for p in frames]
        shapes = {tuple(im.image.shape) for im in images}
        if len(shapes) != 1:
            raise HDRIOError(f"SICEDataset: the images of sequence {name} differ in size {sorted(shapes)}; resize them")
        reference = len(images) // 2
        times = [im.exposure_time for im in images]
        if all(t is not None for t in times):
            ev = torch.tensor([math.log2(t / times[reference]) for t in times], dtype=torch.float32)
        else:
            ev = torch.full((len(images),), float("nan"))
        return {
            "stack": torch.stack([im.image.float() for im in images]),
            "label": _read_ldr_image(label),
            "ev": ev,
            "reference": reference,
            "name": name,
        }


class KalantariDataset(Dataset):
    """Kalantari & Ramamoorthi (SIGGRAPH 2017) dynamic-scene HDR set ("SIG17").

    Layout (the data set as released; test scenes as listed by qingsenyangit/AHDRNet ``test.txt``):
    every folder under ``root`` (recursive, e.g.
    ``Training/001``, ``Test/PAPER/BarbequeDay``) that holds ``exposure.txt`` is a scene with
    3 LDR 16-bit TIFFs (gamma 2.2 code values), ``exposure.txt`` (one EV per TIFF, lowest 0,
    same order as the sorted TIFF names) and ``HDRImg.hdr`` (aligned to the middle exposure).

    The HDR file stores ``H = L^2.2 / t`` with ``t = 2^(EV - EV_min)`` (darkest image t = 1);
    in the project convention the target is radiance times the *reference* exposure, so
    ``hdr = H * 2^(EV_ref - EV_min)``: the reference clips where ``hdr >= 1``.

    Items: ``{"stack": [N,3,H,W] display [0,1] ascending ev, "ev": [N] relative to the reference
    (e.g. {-2, 0, 2}), "reference": N // 2, "ldr": stack[reference], "hdr": [3,H,W] linear
    (reference-exposure scale), "name": scene path relative to root}``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = _require_dir(Path(root), "KalantariDataset")
        scenes = sorted((p.parent for p in self.root.rglob("exposure.txt")), key=lambda p: natural_key(p.as_posix()))
        if not scenes:
            raise HDRIOError(f"KalantariDataset: no scene folder with exposure.txt under {self.root}; point root at the data set")
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scenes[index]
        name = scene.relative_to(self.root).as_posix()
        try:
            evs = [float(v) for v in (scene / "exposure.txt").read_text(encoding="utf-8").split()]
        except ValueError:
            raise HDRIOError(f"KalantariDataset: {scene / 'exposure.txt'} must hold one EV number per line") from None
        tiffs = _files(scene, (".tif", ".tiff"))
        if len(tiffs) != len(evs) or len(evs) < 2:
            raise HDRIOError(
                f"KalantariDataset: scene {scene} has {len(tiffs)} TIFFs and {len(evs)} EVs in exposure.txt; "
                "they must match (3 per scene)"
            )
        hdr_path = scene / "HDRImg.hdr"
        if not hdr_path.is_file():
            raise HDRIOError(f"KalantariDataset: scene {scene} has no HDRImg.hdr; add the ground truth")
        order = sorted(range(len(evs)), key=lambda i: evs[i])
        evs_sorted = [evs[i] for i in order]
        stack = torch.stack([_read_ldr_image(tiffs[i]) for i in order])
        reference = len(evs) // 2
        ev = torch.tensor([e - evs_sorted[reference] for e in evs_sorted], dtype=torch.float32)
        hdr = _read_hdr_image(hdr_path) * (2.0 ** (evs_sorted[reference] - evs_sorted[0]))
        return {"stack": stack, "ev": ev, "reference": reference, "ldr": stack[reference], "hdr": hdr, "name": name}
