"""Reader of the DoRF database of measured camera responses (Grossberg & Nayar 2003, ``dorfCurves.txt``).

Format: 6 lines per curve -- name, graph type, ``I =``, 1024 irradiance samples (one line),
``B =``, 1024 brightness samples (one line).

Deviation (named): DoRF itself is not available to this project (the public copies are over the
size limit), so SingleHDR's 191/10 train/test DoRF split (``RandomState(730)`` shuffle of the 201
curves) cannot be reproduced here; :class:`hdrlab.camera.CRFSampler` draws from EMoR and
parametric families instead. A user who has the file can load it with :func:`load_dorf` and
build CRFs with :meth:`DoRFCurve.to_crf`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hdrlab.camera.crf import CRF
from hdrlab.camera.lut import LUT_SIZE, curve_apply
from hdrlab.errors import HDRIOError


@dataclass
class DoRFCurve:
    """One measured response: ``brightness`` (display, [0, 1]) as a function of ``irradiance`` ([0, 1]).

    Attributes:
        name: curve name, e.g. ``"Agfachrome-rsx2-050CDRed"``.
        type: DoRF graph type line (e.g. ``"Graph Type: film"``), verbatim.
        irradiance: ``[1024]`` float32 sample positions (normally ``linspace(0, 1, 1024)``).
        brightness: ``[1024]`` float32 response values.
    """

    name: str
    type: str
    irradiance: torch.Tensor
    brightness: torch.Tensor

    def to_crf(self) -> CRF:
        """The curve as a :class:`CRF`: brightness resampled onto the uniform LUT grid, endpoints
        forced to 0 and 1 (as SingleHDR does for its ground-truth inverses), running maximum for
        monotonicity, numerical inverse."""
        grid = torch.linspace(0.0, 1.0, LUT_SIZE, dtype=torch.float64)
        irr = self.irradiance.double()
        # positions of the uniform grid inside the (possibly non-uniform) irradiance samples
        idx = torch.searchsorted(irr, grid).clamp(1, len(irr) - 1)
        x0, x1 = irr[idx - 1], irr[idx]
        t = ((grid - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        pos = (idx - 1 + t) / (len(irr) - 1)
        fwd = curve_apply(pos, self.brightness.double())
        fwd = torch.cummax(fwd, dim=-1).values
        fwd = (fwd - fwd[0]) / (fwd[-1] - fwd[0]).clamp_min(1e-12)
        return CRF.from_lut(fwd.float(), name=f"dorf:{self.name}")


def _floats(line: str, path: Path, where: str) -> torch.Tensor:
    try:
        values = [float(v) for v in line.split()]
    except ValueError as err:
        raise HDRIOError(f"DoRF file {path}: {where} is not a list of numbers ({err})") from None
    if len(values) != LUT_SIZE:
        raise HDRIOError(f"DoRF file {path}: {where} holds {len(values)} values, expected {LUT_SIZE}")
    return torch.tensor(values, dtype=torch.float32)


def load_dorf(path: str | Path) -> list[DoRFCurve]:
    """Read all curves of a ``dorfCurves.txt`` file.

    Raises:
        HDRIOError: missing file or a block that is not ``name / type / I = / values / B = / values``.
    """
    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"DoRF file {path} does not exist; pass the path of dorfCurves.txt")
    try:
        lines = [ln.rstrip("\r\n") for ln in path.read_text(encoding="ascii").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise HDRIOError(f"DoRF file {path} could not be read as text: {err}") from None
    lines = [ln for ln in lines if ln.strip()]
    if not lines or len(lines) % 6:
        raise HDRIOError(f"DoRF file {path} has {len(lines)} non-empty lines, expected a multiple of 6")
    curves = []
    for start in range(0, len(lines), 6):
        name, type_, i_hdr, i_vals, b_hdr, b_vals = lines[start : start + 6]
        if i_hdr.replace(" ", "") != "I=" or b_hdr.replace(" ", "") != "B=":
            raise HDRIOError(
                f"DoRF file {path}: curve {start // 6 + 1} ({name.strip()!r}) lacks the 'I =' / 'B =' headers"
            )
        curves.append(
            DoRFCurve(
                name=name.strip(),
                type=type_.strip(),
                irradiance=_floats(i_vals, path, f"curve {start // 6 + 1} irradiance"),
                brightness=_floats(b_vals, path, f"curve {start // 6 + 1} brightness"),
            )
        )
    return curves
