"""Damaged and contradictory inputs to ``hdrlab merge`` and ``hdrlab eval``: each ends in one
``error:`` line with exit status 2, no traceback, the offending file or option named and nothing
written (:mod:`tests.reliability.harness`); ``merge --force`` is the one case that must succeed.

Each case is one bad input in its own working folder, run by
:func:`~tests.reliability.harness.run_cli` (in this process; the successful ``--force`` merge as
``python -m hdrlab`` in a subprocess). One module fixture runs every case, and each case's test
checks its own result. Inputs are small: a 3-exposure 32x48
bracket (PNG, 2 stops apart, written in time order ``-2, 0, +2`` EV) and 24x24 EXR pairs. Bracket
checks that need no subprocess (identical pixels in two files, a 1x1 bracket's sample count, the EV
span) are in ``tests/test_merge_cli.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch
from PIL import Image

from hdrlab.io import write_exr, write_pfm

from .harness import Result, assert_clean_failure, run_cli, snapshot

EVS = ("-2", "0", "2")


def _codes(ev: float, height: int = 32, width: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=np.float64)[:, None, None]
    radiance = np.exp(4.0 * xx + yy - 2.5)[..., None] * np.array([0.8, 1.0, 1.2])
    return np.round(255 * np.clip(radiance * 2.0**ev, 0, 1) ** (1 / 2.2)).astype(np.uint8)


def _bracket(folder: Path, suffix: str = ".png") -> list[Path]:
    paths = []
    for ev in EVS:
        path = folder / f"ev{ev}{suffix}"
        Image.fromarray(_codes(float(ev))).save(path, quality=95)
        paths.append(path)
    return paths


def _scene(size: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.1 + torch.rand(3, size, size, generator=g)


def _pair(folder: Path, gt: torch.Tensor, pred: torch.Tensor | None = None) -> tuple[Path, Path]:
    write_exr(folder / "gt.exr", gt)
    write_exr(folder / "pred.exr", gt * 0.8 if pred is None else pred)
    return folder / "pred.exr", folder / "gt.exr"


#: a case builds its inputs in a folder and returns (command line, names stderr must contain)
Case = Callable[[Path], tuple[tuple[str | Path, ...], tuple[str, ...]]]


# --------------------------------------------------------------------------- merge


def merge_truncated_jpeg(folder: Path):
    paths = _bracket(folder, ".jpg")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) * 2 // 3])
    return (("merge", *paths, "--ev", *EVS, "-o", "out.exr"),
            (str(paths[1]), "truncated or corrupt JPEG", "re-copy"))


def merge_times_contradict_brightness(folder: Path):
    """The brightest image given the shortest time."""
    paths = _bracket(folder)
    return (("merge", *paths, "--ev", "2", "0", "-2", "-o", "out.exr"),
            ("contradict", "ev-2.png (t=4) is darker than ev2.png (t=0.25)", "--force"))


def merge_same_file_twice(folder: Path):
    paths = _bracket(folder)
    return (("merge", paths[0], paths[0], paths[2], "--ev", *EVS, "-o", "out.exr"),
            ("ev-2.png is given twice", "once"))


def merge_ev_out_of_range(folder: Path):
    paths = _bracket(folder)
    return (("merge", *paths, "--ev", "0", "1", "2000", "-o", "out.exr"), ("--ev 2000", "-1000..1000"))


# --------------------------------------------------------------------------- eval


def eval_clip_mask_from_truncated_jpeg(folder: Path):
    pred, gt = _pair(folder, _scene(32) * 2)
    mask = folder / "gt.jpg"
    Image.fromarray(_codes(0.0)).save(mask)
    mask.write_bytes(mask.read_bytes()[:-300])
    return (("eval", "--pred", pred, "--gt", gt, "--clip_mask_from", mask, "--metrics", "psnr_l"),
            (str(mask), "truncated or corrupt JPEG"))


def eval_1x1(folder: Path):
    pred, gt = _pair(folder, torch.full((3, 1, 1), 0.5))
    return (("eval", "--pred", pred, "--gt", gt),
            (str(gt), "1x1", "pu21_ssim 6x6", "ms_ssim 6x6", "cvvdp 2x2", "--metrics psnr_mu,psnr_l,pu21_psnr"))


def eval_region_clipped_without_clipped_pixels(folder: Path):
    pred, gt = _pair(folder, _scene().clamp(max=0.9))
    return (("eval", "--pred", pred, "--gt", gt, "--region", "clipped", "--metrics", "psnr_l"),
            ("--region clipped", "no image has a clipped pixel", "--region all"))


def eval_exr_with_signed_values(folder: Path):
    """Negatives far beyond half-float noise: the message names the command-line option that clamps them."""
    gt = _scene()
    pred = gt.clone()
    pred[:, :4, :4] = -0.5
    path = folder / "pred.exr"
    channels = {c: np.ascontiguousarray(pred[i].numpy()) for i, c in enumerate("RGB")}
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, channels) as exr:  # write_exr refuses negatives
        exr.write(str(path))
    write_exr(folder / "gt.exr", gt)
    return (("eval", "--pred", path, "--gt", folder / "gt.exr", "--metrics", "psnr_l"),
            (str(path), "signed data", "hdrlab eval --negative_tolerance"))


def eval_pfm_with_wrong_header(folder: Path):
    write_pfm(folder / "gt.pfm", _scene())
    data = (folder / "gt.pfm").read_bytes()
    (folder / "pred.pfm").write_bytes(data.replace(b"24 24", b"24 48", 1))
    return (("eval", "--pred", folder / "pred.pfm", "--gt", folder / "gt.pfm", "--metrics", "psnr_l"),
            (str(folder / "pred.pfm"), "truncated PFM"))


def _not_an_exr(content: bytes, message: str) -> Case:
    def case(folder: Path):
        write_exr(folder / "gt.exr", _scene())
        (folder / "pred.exr").write_bytes(content)
        return (("eval", "--pred", folder / "pred.exr", "--gt", folder / "gt.exr", "--metrics", "psnr_l"),
                (str(folder / "pred.exr"), message))

    return case


def eval_folder_without_images(folder: Path):
    (folder / "pred").mkdir()
    (folder / "gt").mkdir()
    (folder / "pred" / "notes.txt").write_text("no images here")
    write_exr(folder / "gt" / "a.exr", _scene())
    return (("eval", "--pred", folder / "pred", "--gt", folder / "gt"), (str(folder / "pred"), "holds no HDR file"))


def eval_pair_sizes_differ(folder: Path):
    pred, gt = _pair(folder, _scene(24), _scene(16))
    return (("eval", "--pred", pred, "--gt", gt, "--metrics", "psnr_l"), (str(pred), str(gt), "sizes must match"))


CASES: dict[str, Case] = {
    "merge_truncated_jpeg": merge_truncated_jpeg,
    "merge_times_contradict_brightness": merge_times_contradict_brightness,
    "merge_same_file_twice": merge_same_file_twice,
    "merge_ev_out_of_range": merge_ev_out_of_range,
    "eval_clip_mask_from_truncated_jpeg": eval_clip_mask_from_truncated_jpeg,
    "eval_1x1": eval_1x1,
    "eval_region_clipped_without_clipped_pixels": eval_region_clipped_without_clipped_pixels,
    "eval_exr_with_signed_values": eval_exr_with_signed_values,
    "eval_pfm_with_wrong_header": eval_pfm_with_wrong_header,
    "eval_empty_exr": _not_an_exr(b"", "file is empty (0 bytes)"),
    "eval_text_file_named_exr": _not_an_exr(b"just some notes, not an image\n",
                                            "the extension says OpenEXR but the content is unknown"),
    "eval_folder_without_images": eval_folder_without_images,
    "eval_pair_sizes_differ": eval_pair_sizes_differ,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...], dict, Result]]:
    """Every case's folder, expected names, pre-run snapshot and result; plus ``merge_force``, the
    contradicting bracket merged with ``--force`` (folder, (), {}, result)."""
    prepared = {}
    for name, case in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        args, names = case(folder)
        prepared[name] = (folder, args, names, snapshot(folder))
    force = tmp_path_factory.mktemp("merge_force")
    force_args = ("merge", *_bracket(force), "--ev", "2", "0", "-2", "-o", "out.exr", "--force")
    out = {name: (folder, names, before, run_cli(*args, cwd=folder))
           for name, (folder, args, names, before) in prepared.items()}
    out["merge_force"] = (force, (), {}, run_cli(*force_args, cwd=force, subprocess=True))  # the whole entry point
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case: str, results) -> None:
    folder, names, before, result = results[case]
    assert_clean_failure(result, code=2, names=names, before=before, watch=(folder,))


def test_merge_force_merges_a_contradicting_bracket(results) -> None:
    folder, _, _, result = results["merge_force"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "out.exr").is_file() and (folder / "out_preview.png").is_file()
