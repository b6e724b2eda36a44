"""The one contract between stack generators and stack mergers.

An :class:`ExposureStack` holds ``N`` low-dynamic-range exposures of the same scene.

Conventions (fixed for the whole project):

* ``images``: ``[B, N, 3, H, W]`` float, display-referred values in ``[0, 1]``
  (the camera response has been applied, values are what a camera would store).
* ``ev``: ``[B, N]`` float, ``ev = log2(t / t_input)``: the input exposure has ev 0,
  positive is brighter; exposure time relative to the input is ``t = 2 ** ev``.
  Stacks are sorted by ascending ev.
* ``reference``: index (into ``N``) of the reference exposure (ev 0 when present).
* ``crf``: optional camera response used to render the stack (``hdrlab.camera.CRF``),
  recorded by synthesis so known-CRF mergers can linearise exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from hdrlab.errors import ConfigError


@dataclass
class ExposureStack:
    """``images[B, N, 3, H, W]`` in [0, 1], ``ev[B, N]`` (log2 exposure relative to the input)."""

    images: torch.Tensor
    ev: torch.Tensor
    reference: int = 0
    crf: Any = None

    def __post_init__(self) -> None:
        if self.images.dim() != 5 or self.images.shape[2] != 3:
            raise ConfigError(
                f"ExposureStack.images must be [B, N, 3, H, W], got shape {tuple(self.images.shape)}"
            )
        if self.ev.shape != self.images.shape[:2]:
            raise ConfigError(
                f"ExposureStack.ev must be [B, N] = {tuple(self.images.shape[:2])}, got {tuple(self.ev.shape)}"
            )
        if not 0 <= self.reference < self.images.shape[1]:
            raise ConfigError(
                f"ExposureStack.reference={self.reference} is outside 0..{self.images.shape[1] - 1}"
            )

    @property
    def num_exposures(self) -> int:
        return self.images.shape[1]

    @property
    def times(self) -> torch.Tensor:
        """Exposure times relative to the input, ``t = 2 ** ev``, shape ``[B, N]``."""
        return torch.exp2(self.ev)

    def select(self, index: list[int] | torch.Tensor, reference: int | None = None) -> "ExposureStack":
        """Sub-stack with the exposures at ``index`` (kept in ascending-ev order)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.images.device)
        if reference is None:
            matches = (idx == self.reference).nonzero()
            reference = int(matches[0, 0]) if len(matches) else 0
        return replace(self, images=self.images[:, idx], ev=self.ev[:, idx], reference=reference)

    def to(self, *args: Any, **kwargs: Any) -> "ExposureStack":
        return replace(self, images=self.images.to(*args, **kwargs), ev=self.ev.to(*args, **kwargs))
