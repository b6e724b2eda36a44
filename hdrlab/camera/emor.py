"""The EMoR model of camera responses (Grossberg & Nayar, "What is the space of camera response
functions?", CVPR 2003) read from the Columbia CAVE text files ``emor.txt`` / ``invemor.txt``.

File format: 27 sections, each a header line ``name =`` (``E``, ``f0``, ``h(1)`` .. ``h(25)``;
resp. ``B``, ``g0``, ``hinv(1)`` .. ``hinv(25)``) followed by 1024 whitespace-separated floats.
The forward model is ``f = f0 + sum_k w_k h_k`` (eq. 5 of the paper), the inverse model
``g = g0 + sum_k w_k hinv_k``; SingleHDR and DuHDR regress ``K = 11`` inverse weights.
The files are research-only data: hdrlab never ships them, the user passes their location.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from hdrlab.camera.lut import LUT_SIZE
from hdrlab.errors import ConfigError, HDRIOError

#: header line of one section, e.g. ``E =``, ``f0 =``, ``h(12)=``
_HEADER = re.compile(r"^\s*([A-Za-z]\w*(?:\(\d+\))?)\s*=\s*$")
_NUM_BASIS = 25


def read_emor_sections(path: str | Path) -> dict[str, torch.Tensor]:
    """Parse an EMoR text file into ``{section name: float64 tensor [1024]}`` (27 sections).

    Raises:
        HDRIOError: the file is missing, unreadable, or not in the EMoR format (the message names
            the file and what is wrong).
    """
    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"EMoR file {path} does not exist; pass the folder holding emor.txt and invemor.txt")
    sections: dict[str, list[float]] = {}
    current: str | None = None
    try:
        with path.open("r", encoding="ascii", errors="strict") as fh:
            for lineno, line in enumerate(fh, 1):
                match = _HEADER.match(line)
                if match:
                    current = match.group(1)
                    sections[current] = []
                    continue
                if not line.strip():
                    continue
                if current is None:
                    raise HDRIOError(f"EMoR file {path}: line {lineno} has values before any 'name =' header")
                try:
                    sections[current].extend(float(v) for v in line.split())
                except ValueError as err:
                    raise HDRIOError(f"EMoR file {path}: line {lineno} is not numeric ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise HDRIOError(f"EMoR file {path} could not be read as text: {err}") from None
    if len(sections) != _NUM_BASIS + 2:
        raise HDRIOError(
            f"EMoR file {path} has {len(sections)} sections, expected {_NUM_BASIS + 2} "
            "(grid, mean, 25 basis curves); is it the CAVE emor.txt/invemor.txt?"
        )
    bad = {name: len(vals) for name, vals in sections.items() if len(vals) != LUT_SIZE}
    if bad:
        raise HDRIOError(f"EMoR file {path}: sections {bad} do not hold {LUT_SIZE} samples")
    return {name: torch.tensor(vals, dtype=torch.float64) for name, vals in sections.items()}


def _pick(sections: dict[str, torch.Tensor], path: Path, grid: str, mean: str, basis: str, k: int):
    names = [grid, mean] + [f"{basis}({i})" for i in range(1, k + 1)]
    missing = [n for n in names if n not in sections]
    if missing:
        raise HDRIOError(f"EMoR file {path} lacks sections {missing}; found {list(sections)[:4]}...")
    return sections[grid], sections[mean], torch.stack([sections[f"{basis}({i})"] for i in range(1, k + 1)])


class EMoRBasis(nn.Module):
    """The first ``k`` EMoR principal components of the forward and inverse camera-response spaces.

    Buffers (float32):
        grid: ``[1024]`` sample positions ``E`` (= ``linspace(0, 1, 1024)``).
        mean: ``[1024]`` mean forward CRF ``f0`` (``f0(0) = 0``, ``f0(1) = 1``).
        basis: ``[k, 1024]`` forward basis ``h(1..k)`` (orthonormal, zero at both ends).
        inv_mean: ``[1024]`` mean inverse CRF ``g0``.
        inv_basis: ``[k, 1024]`` inverse basis ``hinv(1..k)``.
    """

    grid: torch.Tensor
    mean: torch.Tensor
    basis: torch.Tensor
    inv_mean: torch.Tensor
    inv_basis: torch.Tensor

    def __init__(
        self,
        *,
        grid: torch.Tensor,
        mean: torch.Tensor,
        basis: torch.Tensor,
        inv_mean: torch.Tensor,
        inv_basis: torch.Tensor,
    ) -> None:
        super().__init__()
        if basis.dim() != 2 or basis.shape != inv_basis.shape or basis.shape[-1] != mean.shape[-1]:
            raise ConfigError(
                f"EMoRBasis: basis {tuple(basis.shape)} / inv_basis {tuple(inv_basis.shape)} / "
                f"mean {tuple(mean.shape)} do not match"
            )
        self.register_buffer("grid", grid.float())
        self.register_buffer("mean", mean.float())
        self.register_buffer("basis", basis.float())
        self.register_buffer("inv_mean", inv_mean.float())
        self.register_buffer("inv_basis", inv_basis.float())

    @property
    def k(self) -> int:
        """Number of principal components held."""
        return int(self.basis.shape[0])

    @classmethod
    def load(cls, folder_or_file: str | Path, *, k: int = 11) -> "EMoRBasis":
        """Read ``emor.txt`` and ``invemor.txt`` from a folder (or from the folder of one of them).

        Args:
            folder_or_file: the folder holding both files, or the path of either file.
            k: number of components to keep, 1..25 (SingleHDR/DuHDR use 11).

        Raises:
            ConfigError: ``k`` outside 1..25.
            HDRIOError: a file is missing or malformed (the message names it).
        """
        if not 1 <= k <= _NUM_BASIS:
            raise ConfigError(f"EMoRBasis.load: k={k} must be in 1..{_NUM_BASIS}")
        path = Path(folder_or_file)
        folder = path if path.is_dir() else path.parent
        if not folder.is_dir():
            raise HDRIOError(
                f"EMoR folder {folder} does not exist; pass the folder holding emor.txt and invemor.txt"
            )
        fwd_path, inv_path = folder / "emor.txt", folder / "invemor.txt"
        fwd = read_emor_sections(fwd_path)
        inv = read_emor_sections(inv_path)
        grid, mean, basis = _pick(fwd, fwd_path, "E", "f0", "h", k)
        _, inv_mean, inv_basis = _pick(inv, inv_path, "B", "g0", "hinv", k)
        return cls(grid=grid, mean=mean, basis=basis, inv_mean=inv_mean, inv_basis=inv_basis)

    def _combine(self, weights: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        w = weights if isinstance(weights, torch.Tensor) else torch.as_tensor(weights, dtype=mean.dtype)
        n = w.shape[-1]
        if n > basis.shape[0]:
            raise ConfigError(f"EMoRBasis: {n} weights given but only k={basis.shape[0]} components loaded")
        return mean.to(w.dtype) + w @ basis[:n].to(w.dtype)

    def curve(self, weights: torch.Tensor) -> torch.Tensor:
        """Forward CRF ``f0 + weights @ h``: weights ``[..., n]`` (``n <= k``) -> ``[..., 1024]``.

        The raw PCA curve (not forced monotone; see :func:`hdrlab.camera.make_monotone`).
        """
        return self._combine(weights, self.mean, self.basis)

    def inverse_curve(self, weights: torch.Tensor) -> torch.Tensor:
        """Inverse CRF ``g0 + weights @ hinv``: weights ``[..., n]`` -> ``[..., 1024]`` (raw PCA curve)."""
        return self._combine(weights, self.inv_mean, self.inv_basis)

    def project(self, curve: torch.Tensor) -> torch.Tensor:
        """Least-squares forward weights of curves ``[..., 1024]`` (the basis is orthonormal): ``[..., k]``."""
        return (curve.to(self.mean.dtype) - self.mean) @ self.basis.T

    def project_inverse(self, curve: torch.Tensor) -> torch.Tensor:
        """Least-squares inverse weights of inverse curves ``[..., 1024]``: ``[..., k]``."""
        return (curve.to(self.inv_mean.dtype) - self.inv_mean) @ self.inv_basis.T
