"""The batch dictionary every hdrlab method consumes (see ``docs/architecture.md``).

A training/evaluation sample is a plain ``dict``; the collate function
(:func:`hdrlab.data.datamodules.collate_hdr_batch`) stacks samples into an :class:`HDRBatch`.
Single (unbatched) samples carry the same keys without the leading ``B`` dimension and with
``name`` a ``str``. Synthesised samples also carry ``exposure_ev`` (``[B]`` after collation:
the ev applied to the source radiance to reach the input exposure); consumers ignore keys they
do not use.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

from typing_extensions import NotRequired

__all__ = ["HDRBatch", "REQUIRED_KEYS", "OPTIONAL_KEYS"]


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
