"""Base class of single-image stack generators: one LDR image -> an :class:`ExposureStack`.

A stack generator takes the input LDR ``[B, 3, H, W]`` (display-referred, ``[0, 1]``) and predicts
the same scene at other exposures ``ev = log2(t / t_input)``. The input itself is the ev-0 member
of the stack, so a generator only predicts the non-zero ev values. The ev set is a Python tuple
fixed at construction (or passed per call): every index below is static, so ``forward`` has no
data-dependent branches and runs under ``FakeTensorMode`` and ``torch.compile``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.stack import ExposureStack


def normalize_ev_set(ev: Sequence[float], *, include_input: bool = True) -> tuple[float, ...]:
    """Sort an ev set ascending and add (or keep) the input's ev 0.

    Args:
        ev: exposure values ``log2(t / t_input)`` to produce; finite, no duplicates.
        include_input: when True the returned set contains 0.0 (the input image).

    Returns:
        The ascending tuple of floats.

    Raises:
        ConfigError: empty set, non-finite values or duplicates.
    """
    values = [float(v) for v in ev]
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"generator ev set {values} has non-finite values; use finite log2 exposure ratios")
    if len(set(values)) != len(values):
        raise ConfigError(f"generator ev set {values} has duplicates; list each exposure once")
    if include_input and 0.0 not in values:
        values.append(0.0)
    if not values:
        raise ConfigError("generator ev set is empty; give at least one exposure value, e.g. ev=(-2, 2)")
    return tuple(sorted(values))


def check_ldr_batch(ldr: torch.Tensor, *, name: str = "ldr") -> None:
    """Raise :class:`ConfigError` unless ``ldr`` is a ``[B, 3, H, W]`` floating tensor (shape-only check)."""
    if ldr.dim() != 4 or ldr.shape[1] != 3:
        raise ConfigError(f"{name} must be an LDR batch [B, 3, H, W], got shape {tuple(ldr.shape)}")
    if not ldr.is_floating_point():
        raise ConfigError(f"{name} must be a float tensor in [0, 1], got dtype {ldr.dtype}; divide uint8 by 255")


class StackGenerator(nn.Module, ABC):
    """LDR ``[B, 3, H, W]`` in ``[0, 1]`` (display) -> :class:`ExposureStack` sorted by ascending ev.

    Subclasses implement :meth:`generate` for the non-zero ev values; :meth:`forward` inserts the
    input at ev 0 (when ``include_input``), keeps the ascending-ev order, and sets ``reference``
    to the index of the input.

    Declarations read by consumers (composite, memory planner, ``hdrlab reconstruct`` / ``info``):
    :attr:`stride` (the multiple ``H`` and ``W`` must have; 1 = any size) and :attr:`file_options`
    (constructor options that name files to read).

    Args:
        ev: exposure values of the stack, ``ev = log2(t / t_input)``; sorted on construction.
        include_input: put the input image in the stack as its ev-0 member (the usual case).
    """

    #: constructor options that name files (cleared when only shapes matter, e.g. memory estimates)
    file_options: tuple[str, ...] = ()

    @property
    def stride(self) -> int:
        """Multiple ``H`` and ``W`` of the input must have (1: any size)."""
        return 1

    def output_ev(self, ev: Sequence[float] | None = None) -> tuple[float, ...]:
        """The ascending ev values of the stack :meth:`forward` returns for ``ev`` (static, no tensor reads)."""
        return self.ev if ev is None else normalize_ev_set(ev, include_input=self.include_input)

    def __init__(self, *, ev: Sequence[float] = (-2.0, 2.0), include_input: bool = True) -> None:
        super().__init__()
        self.include_input = include_input
        self.ev = normalize_ev_set(ev, include_input=include_input)

    @abstractmethod
    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        """Predict the exposures ``ev`` (all non-zero, ascending) of ``ldr``.

        Args:
            ldr: ``[B, 3, H, W]`` display-referred input in ``[0, 1]``.
            ev: ascending non-zero exposure values.

        Returns:
            ``[B, len(ev), 3, H, W]`` display-referred images in ``[0, 1]``, in the order of ``ev``.
        """

    def forward(self, ldr: torch.Tensor, *, ev: Sequence[float] | None = None) -> ExposureStack:
        """Build the stack.

        Args:
            ldr: ``[B, 3, H, W]`` display-referred input in ``[0, 1]``.
            ev: optional ev set overriding the one given at construction.

        Returns:
            ``ExposureStack(images[B, N, 3, H, W] in [0, 1], ev[B, N] ascending, reference)``.
        """
        check_ldr_batch(ldr)
        evs = self.output_ev(ev)
        predicted = tuple(v for v in evs if v != 0.0)
        images = self.generate(ldr, predicted) if predicted else ldr.new_zeros((ldr.shape[0], 0, *ldr.shape[1:]))
        if 0.0 in evs:
            reference = evs.index(0.0)
            images = torch.cat([images[:, :reference], ldr.unsqueeze(1), images[:, reference:]], dim=1)
        else:
            reference = min(range(len(evs)), key=lambda i: abs(evs[i]))
        ev_tensor = torch.tensor(evs, dtype=ldr.dtype, device=ldr.device).expand(ldr.shape[0], len(evs))
        return ExposureStack(images=images, ev=ev_tensor, reference=reference)
