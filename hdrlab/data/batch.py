"""The batch dictionary every hdrlab method consumes (see ``docs/architecture.md``).

A training/evaluation sample is a plain ``dict``; the collate function
(:func:`hdrlab.data.datamodules.collate_hdr_batch`) stacks samples into an :class:`HDRBatch`.
Single (unbatched) samples carry the same keys without the leading ``B`` dimension and with
``name`` a ``str``. Synthesised samples also carry ``exposure_ev`` (``[B]`` after collation:
the ev applied to the source radiance to reach the input exposure); consumers ignore keys they
do not use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
from torch import Tensor
from typing_extensions import NotRequired

from hdrlab.camera import CRF
from hdrlab.errors import ConfigError
from hdrlab.stack import ExposureStack

__all__ = ["HDRBatch", "REQUIRED_KEYS", "OPTIONAL_KEYS", "batch_crf", "bracket_stack", "example_bracket"]


class HDRBatch(TypedDict):
    """One batch of synthesised (or real) single-image HDR training pairs.

    Keys:
        hdr: ``[B, 3, H, W]`` float32, linear scene radiance times the input's exposure, so
            the input LDR clips where ``hdr >= 1``; finite, non-negative.
        hdr_clipped: ``[B, 3, H, W]`` float32, ``min(hdr, 1)`` (linear, in ``[0, 1]``).
        ldr_float: ``[B, 3, H, W]`` float32, ``CRF(hdr_clipped)`` before quantisation,
            display-referred, in ``[0, 1]``.
        ldr: ``[B, 3, H, W]`` float32, the network input: quantised to ``bits`` (plus optional
            noise / JPEG), display-referred, in ``[0, 1]``.
        crf_forward: ``[B, C, 1024]`` float32, LUT of the CRF used (irradiance ``i/1023`` ->
            display value), ``C = 1`` (shared by the channels) or ``3``.
        crf_inverse: ``[B, C, 1024]`` float32, LUT of the inverse CRF (display ``i/1023`` ->
            irradiance).
        clip_mask: ``[B, 1, H, W]`` float32, 1 where the input is clipped (max over channels of
            ``ldr`` ``>= 254.5/255`` for 8-bit data), else 0.
        stack: ``[B, N, 3, H, W]`` float32 display-referred bracket in ``[0, 1]`` sorted by
            ascending ev (only when bracketing is on).
        ev: ``[B, N]`` float32, ``log2(t / t_input)`` of the bracket members (only with ``stack``).
        name: ``list[str]`` of length ``B``, scene identifiers.
    """

    hdr: Tensor
    hdr_clipped: Tensor
    ldr_float: Tensor
    ldr: Tensor
    crf_forward: Tensor
    crf_inverse: Tensor
    clip_mask: Tensor
    stack: NotRequired[Tensor]
    ev: NotRequired[Tensor]
    name: list[str]


#: Keys every synthesised sample/batch carries.
REQUIRED_KEYS: tuple[str, ...] = (
    "hdr",
    "hdr_clipped",
    "ldr_float",
    "ldr",
    "crf_forward",
    "crf_inverse",
    "clip_mask",
    "name",
)
#: Keys present only when bracketing is on.
OPTIONAL_KEYS: tuple[str, ...] = ("stack", "ev")


def batch_crf(batch: Mapping[str, Any]) -> CRF:
    """The batch's known camera responses as one batched :class:`hdrlab.camera.CRF` (``[B, C, 1024]`` LUTs).

    Raises:
        ConfigError: the batch carries no ``crf_forward`` / ``crf_inverse``.
    """
    for key in ("crf_forward", "crf_inverse"):
        if key not in batch:
            raise ConfigError(
                f"the batch has no {key!r}; this method needs the input's CRF LUTs "
                "(hdrlab.data batches carry them; for real photos assume one, e.g. CRF.gamma(2.2))"
            )
    return CRF(forward_lut=batch["crf_forward"], inverse_lut=batch["crf_inverse"], name="batch")


def bracket_stack(batch: Mapping[str, Any], *, hint: str = "set data.init_args.bracket_ev, e.g. [-4, 4]") -> ExposureStack:
    """The batch's exposure bracket (``stack [B, N, 3, H, W]``, ``ev [B, N]``) as an :class:`ExposureStack`.

    The reference is the middle member ``N // 2`` (a static index: hdrlab brackets are symmetric
    around the input; no tensor value is read, so this runs under ``FakeTensorMode``). The batch's
    CRF is attached when present.

    Args:
        batch: a batch with ``stack`` and ``ev`` (data made with ``bracket_ev``).
        hint: how to get a bracket, appended to the error message.

    Raises:
        ConfigError: the batch has no bracket (or one of fewer than 2 exposures).
    """
    images = batch.get("stack") if isinstance(batch, Mapping) else None
    if images is None or "ev" not in batch:
        raise ConfigError(f"the batch has no exposure bracket ('stack'/'ev'); {hint}")
    if images.dim() != 5 or images.shape[1] < 2:
        raise ConfigError(f"the batch's bracket has shape {tuple(images.shape)}, fewer than 2 exposures; {hint}")
    crf = batch_crf(batch) if "crf_forward" in batch and "crf_inverse" in batch else None
    return ExposureStack(images=images, ev=batch["ev"].to(images.dtype), reference=images.shape[1] // 2, crf=crf)


def example_bracket(hdr: Tensor, ev: Sequence[float]) -> tuple[Tensor, Tensor]:
    """A synthetic 8-bit bracket of ``hdr`` through an sRGB-like gamma-2.2 CRF, branch-free (runs
    under ``FakeTensorMode``: used by example batches for FLOP counts and memory estimates).

    Args:
        hdr: ``[B, 3, H, W]`` linear radiance (input clip at 1).
        ev: exposure values of the bracket.

    Returns:
        ``(stack [B, N, 3, H, W] in [0, 1], ev [B, N])``, ascending ev.
    """
    values = sorted(float(v) for v in ev)
    gains = torch.tensor([2.0**v for v in values], dtype=hdr.dtype, device=hdr.device).view(1, -1, 1, 1, 1)
    exposed = (hdr.unsqueeze(1) * gains).clamp(0.0, 1.0)
    images = (exposed ** (1.0 / 2.2) * 255.0).round() / 255.0
    ev_tensor = torch.tensor(values, dtype=hdr.dtype, device=hdr.device).expand(hdr.shape[0], -1)
    return images, ev_tensor
