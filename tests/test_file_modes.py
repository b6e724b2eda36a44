"""Atomic writers (temporary file + ``os.replace``) give their output the umask's mode, as ``open``
would, not the ``0o600`` that :func:`tempfile.mkstemp` creates files with."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from hdrlab import io as hio
from hdrlab.callbacks.run_artifacts import AtomicCheckpointIO, atomic_write_text


@pytest.fixture
def set_umask():
    """Sets the process umask for one test and restores it afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writers_honour_umask(tmp_path: Path, set_umask, umask: int, expected: int) -> None:
    set_umask(umask)
    assert hio.default_file_mode() == expected
    assert os.umask(umask) == umask  # reading the umask left it as it was

    img = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    written = [
        hio.write_exr(tmp_path / "a.exr", img),
        hio.write_png(tmp_path / "a.png", img),
        hio.write_png(tmp_path / "a16.png", img, bits=16),
        hio.write_radiance_hdr(tmp_path / "a.hdr", img),
        hio.write_pfm(tmp_path / "a.pfm", img),
    ]
    summary = tmp_path / "run" / "summary.json"
    atomic_write_text(summary, json.dumps({"ok": True}) + "\n")
    written.append(summary)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, ckpt)
    written.append(ckpt)

    for path in written:
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))} != {oct(expected)}"
    assert json.loads(summary.read_text()) == {"ok": True}
    assert torch.equal(AtomicCheckpointIO().load_checkpoint(ckpt)["state_dict"]["w"], torch.ones(2))
    # no temporary file is left behind
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_overwrite_takes_current_umask_not_old_mode(tmp_path: Path, set_umask) -> None:
    """Replacing a 0600 file (as written before this fix) gives the new file the umask's mode."""
    set_umask(0o022)
    img = np.ones((2, 2, 3), dtype=np.float32)
    targets = [tmp_path / "x.exr", tmp_path / "summary.json", tmp_path / "last.ckpt"]
    for path in targets:
        path.write_bytes(b"old")
        path.chmod(0o600)
    hio.write_exr(targets[0], img)
    atomic_write_text(targets[1], "{}\n")
    AtomicCheckpointIO().save_checkpoint({"epoch": 0}, targets[2])
    for path in targets:
        assert _mode(path) == 0o644, path.name
