"""Tiled inference for any image size under a memory budget.

An image ``[B, C, H, W]`` is cut into overlapping tiles (sides and starts multiples of the network
stride, so pooling grids line up with the full image), each tile goes through the model, and the
outputs are blended with per-tile weights that are normalised to sum to one:

* along each axis a tile's weight depends on the distance ``d`` (pixels, from pixel centres) to its
  nearest *inner* edge (edges on the image border do not count):
  ``w = 0`` for ``d <= margin``, a raised-cosine ramp ``0.5 - 0.5 cos(pi t)``, ``t = (d - margin) / ramp``,
  over the next ``ramp`` pixels, then 1; the 2-D weight is the product of the two axes';
* ``margin = (overlap - ramp) // 2``: a tile contributes only where it has at least ``margin`` pixels
  of context inside itself, so for a fully convolutional model whose receptive radius ``r`` is
  ``<= margin`` (i.e. ``overlap >= 2 r + ramp``; ``ramp = 0`` needs only ``overlap >= 2 r``, the
  receptive-field width) tiled output equals untiled output up to float rounding.

Global branches (e.g. SingleHDR's inverse-CRF estimate) see the whole picture: ``global_fn`` runs
once on an antialiased downsample of the full image and its result is passed to every tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kornia
import torch

from hdrlab.budget.plan import CUDA_OVERHEAD, BudgetError, CudaOverhead
from hdrlab.budget.units import format_size
from hdrlab.errors import ConfigError

__all__ = [
    "MergeCost",
    "TilePlan",
    "axis_blend_weights",
    "global_thumbnail",
    "measure_receptive_radius",
    "plan_tiles",
    "tile_spans",
    "tiled_forward",
    "tight_tile",
]


def tile_spans(length: int, tile: int, overlap: int, *, stride: int = 1) -> list[tuple[int, int]]:
    """Cut ``[0, length)`` into tiles of side ``tile`` overlapping by at least ``overlap``.

    Tiles are spread evenly; starts are multiples of ``stride``; the first starts at 0 and the last
    ends at ``length``. If ``tile >= length`` there is one span ``(0, length)``.

    Args:
        length: image side (a multiple of ``stride``).
        tile: tile side (a multiple of ``stride``).
        overlap: minimum overlap of neighbours, ``0 <= overlap < tile``.
        stride: network stride.

    Returns:
        ``[(start, end), ...]`` sorted by start.

    Raises:
        ConfigError: for sizes that are not stride multiples or an overlap >= tile.
    """
    if length % stride or tile % stride or tile <= 0:
        raise ConfigError(
            f"image side {length} and tile {tile} must be positive multiples of the network stride {stride}; "
            f"pad the image to a multiple of {stride} first"
        )
    if tile >= length:
        return [(0, length)]
    if not 0 <= overlap < tile:
        raise ConfigError(f"tile overlap {overlap} must be >= 0 and smaller than the tile {tile}")
    count = max(2, math.ceil((length - overlap) / (tile - overlap)))
    while True:
        starts = [round(i * (length - tile) / (count - 1) / stride) * stride for i in range(count)]
        if all(a + tile - b >= overlap for a, b in zip(starts, starts[1:])):
            return [(s, s + tile) for s in starts]
        count += 1


def axis_blend_weights(spans: list[tuple[int, int]], length: int, *, margin: int, ramp: int) -> list[torch.Tensor]:
    """1-D blending weights of each span (see the module docstring).

    Args:
        spans: from :func:`tile_spans`.
        length: image side.
        margin: pixels at each inner edge with weight 0.
        ramp: width of the raised-cosine ramp after the margin (0 = hard step).

    Returns:
        One float32 tensor ``[end - start]`` per span, values in ``[0, 1]``.
    """
    weights = []
    for start, end in spans:
        x = torch.arange(start, end, dtype=torch.float64) + 0.5
        inf = torch.full_like(x, math.inf)
        d_left = x - start if start > 0 else inf
        d_right = end - x if end < length else inf
        d = torch.minimum(d_left, d_right)
        if ramp > 0:
            t = ((d - margin) / ramp).clamp(0.0, 1.0)
            w = 0.5 - 0.5 * torch.cos(math.pi * t)
        else:
            w = (d > margin).to(torch.float64)
        weights.append(w.to(torch.float32))
    return weights


def global_thumbnail(image: torch.Tensor, *, max_side: int, stride: int = 1) -> torch.Tensor:
    """Antialiased bilinear downsample so the longer side is ``<= max_side`` (sides multiples of ``stride``).

    Args:
        image: ``[B, C, H, W]``.
        max_side: longest side of the result.
        stride: sides are rounded down to multiples of it (at least ``stride``).

    Returns:
        ``[B, C, h, w]``; the input itself when it is already small enough.
    """
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(stride, int(h * scale) // stride * stride), max(stride, int(w * scale) // stride * stride))
    return kornia.geometry.transform.resize(image, size, interpolation="bilinear", antialias=True)


def tiled_forward(
    fn: Callable[..., torch.Tensor],
    image: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    stride: int = 1,
    ramp: int | None = None,
    global_fn: Callable[[torch.Tensor], Any] | None = None,
    global_size: int = 512,
) -> torch.Tensor:
    """Run ``fn`` tile by tile and blend the outputs seamlessly.

    Call it under ``torch.no_grad()`` for inference (it does not disable gradients itself).

    Args:
        fn: ``tile [B, C, t_h, t_w] -> [B, C_out, s t_h, s t_w]`` (an integer scale ``s``, 1 for
            same-size outputs); with ``global_fn`` it is called as ``fn(tile, global_out)``.
        image: ``[B, C, H, W]``, H and W multiples of ``stride`` (any value domain).
        tile: tile side, rounded down to a multiple of ``stride``.
        overlap: minimum overlap of neighbouring tiles, rounded up to a multiple of ``stride``.
        stride: the network's total downsampling factor.
        ramp: blending-ramp width (default ``overlap // 2``); see the module docstring for the
            exactness condition ``(overlap - ramp) // 2 >= receptive radius``.
        global_fn: optional global branch, run once on :func:`global_thumbnail` of the image.
        global_size: longest side of that thumbnail.

    Returns:
        ``[B, C_out, s H, s W]`` float32, the normalised weighted average of the tile outputs.

    Raises:
        ConfigError: for inconsistent sizes or output scales.
    """
    if image.dim() != 4:
        raise ConfigError(f"tiled_forward needs a [B, C, H, W] image, got shape {tuple(image.shape)}")
    tile = tile // stride * stride
    overlap = math.ceil(overlap / stride) * stride
    if tile < stride:
        raise ConfigError(f"tile must be at least the network stride {stride}")
    ramp = overlap // 2 if ramp is None else int(ramp)
    if not 0 <= ramp <= overlap:
        raise ConfigError(f"blend ramp {ramp} must be between 0 and the overlap {overlap}")
    margin = (overlap - ramp) // 2
    height, width = image.shape[-2:]
    rows = tile_spans(height, tile, overlap, stride=stride)
    cols = tile_spans(width, tile, overlap, stride=stride)
    extra = ()
    if global_fn is not None:
        extra = (global_fn(global_thumbnail(image, max_side=global_size, stride=stride)),)
    out = norm = None
    scale = 0
    wy = wx = None
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            pred = fn(image[..., r0:r1, c0:c1], *extra)
            if pred.dim() != 4 or pred.shape[0] != image.shape[0]:
                raise ConfigError(f"tiled_forward: fn must return [B, C, h, w], got {tuple(pred.shape)}")
            s_h, s_w = pred.shape[-2] / (r1 - r0), pred.shape[-1] / (c1 - c0)
            if out is None:
                if s_h != s_w or s_h != int(s_h) or s_h < 1:
                    raise ConfigError(f"tiled_forward: output/tile size ratio {s_h} x {s_w} is not one integer scale")
                scale = int(s_h)
                big = [(a * scale, b * scale) for a, b in rows], [(a * scale, b * scale) for a, b in cols]
                wy = axis_blend_weights(big[0], height * scale, margin=margin * scale, ramp=ramp * scale)
                wx = axis_blend_weights(big[1], width * scale, margin=margin * scale, ramp=ramp * scale)
                out = pred.new_zeros((pred.shape[0], pred.shape[1], height * scale, width * scale), dtype=torch.float32)
                norm = out.new_zeros((1, 1, height * scale, width * scale))
            elif s_h != scale or s_w != scale:
                raise ConfigError("tiled_forward: fn changed its output scale between tiles")
            w = (wy[i].to(out.device)[:, None] * wx[j].to(out.device)[None, :])[None, None]
            ys, xs = slice(r0 * scale, r1 * scale), slice(c0 * scale, c1 * scale)
            out[..., ys, xs] += pred.float() * w
            norm[..., ys, xs] += w
    return out / norm


def measure_receptive_radius(
    fn: Callable[[torch.Tensor], torch.Tensor], *, in_channels: int = 3, size: int = 128
) -> int:
    """Receptive radius of a translation-equivariant model, from the gradient of the centre output pixel.

    Args:
        fn: ``[1, C, size, size] -> [1, C_out, size, size]``.
        in_channels: input channels.
        size: probe side (a multiple of the model's stride, larger than the receptive field).

    Returns:
        The largest Chebyshev distance from the centre of an input pixel with a nonzero gradient
        (``size // 2`` means the field reaches the probe's border: use a larger probe).
    """
    x = torch.rand(1, in_channels, size, size, requires_grad=True)
    y = fn(x)
    c = size // 2
    y[..., c, c].sum().backward()
    hit = x.grad.abs().sum(dim=(0, 1)) > 0
    ys, xs = torch.nonzero(hit, as_tuple=True)
    return int(torch.maximum((ys - c).abs(), (xs - c).abs()).max())


@dataclass(frozen=True)
class MergeCost:
    """Memory model of a merge that runs after the tiled network pass, on its full-image output.

    ``peak = fixed_bytes + per_pixel_bytes * h w`` for merging an ``h x w`` stack, counting the stack
    itself (the merge's input), the merge's temporaries and its output (e.g. fitted by
    :func:`hdrlab.budget.estimate.inference_memory_model` on the merge at two small sizes).

    Attributes:
        per_pixel_bytes: peak bytes per pixel of one merge call.
        fixed_bytes: size-independent bytes of one merge call.
        pixelwise: the merger declares its output at a pixel depends only on the stack at that pixel
            (given image-wide state computed once): it may run on row strips of the stack.
        in_channels: channels of the stack (resident while strips are merged).
        out_channels: channels of the merged output (preallocated for the strips).
    """

    per_pixel_bytes: float
    fixed_bytes: int = 0
    pixelwise: bool = False
    in_channels: int = 3
    out_channels: int = 3


@dataclass(frozen=True)
class TilePlan:
    """Tile size chosen for an image under a budget.

    Attributes:
        tile: tile side (None: the whole image fits untiled).
        overlap: overlap passed to :func:`tiled_forward`.
        tiles: number of tiles.
        estimated_bytes: modelled tensor peak (the larger of the network pass and the merge).
        budget_bytes: device budget.
        largest_tile: the largest tile side that fits (``tile`` is the smallest with the same tile
            count per axis; None when untiled).
        merge_rows: rows per strip of a pixel-wise merge (None: the merge, if any, runs on the whole
            image in one call).
        merge_bytes: modelled tensor peak of the merge phase (0: no merge planned).
    """

    tile: int | None
    overlap: int
    tiles: int
    estimated_bytes: int
    budget_bytes: int
    largest_tile: int | None = None
    merge_rows: int | None = None
    merge_bytes: int = 0


def _axis_count(length: int, tile: int, overlap: int, stride: int) -> int:
    return len(tile_spans(length, min(tile, length), overlap, stride=stride))


def tight_tile(image_hw: tuple[int, int], tile: int, overlap: int, *, stride: int, min_tile: int = 0) -> int:
    """Smallest tile (a ``stride`` multiple, ``>= min_tile``, ``<= tile``) that cuts each side into
    no more spans than ``tile`` does.

    With ``n`` spans on a side of length ``L`` the start is ``ceil((L + (n - 1) overlap) / n)``
    rounded up to ``stride`` (the largest per axis), then grown by ``stride`` until the span counts of
    :func:`tile_spans` (whose starts are rounded to ``stride``) are not above ``tile``'s.

    Args:
        image_hw: ``(H, W)``, multiples of ``stride``.
        tile: a tile side that covers the image (a ``stride`` multiple).
        overlap: minimum overlap (a ``stride`` multiple).
        stride: network stride.
        min_tile: smallest tile the tiler accepts.

    Returns:
        The tight tile side (``tile`` itself when nothing smaller keeps the counts).
    """
    counts = [_axis_count(length, tile, overlap, stride) for length in image_hw]
    t = max(math.ceil((length + (n - 1) * overlap) / n / stride) * stride for length, n in zip(image_hw, counts))
    t = min(tile, max(t, math.ceil(min_tile / stride) * stride, stride))
    while t < tile and any(_axis_count(length, t, overlap, stride) > n for length, n in zip(image_hw, counts)):
        t += stride
    return t


def _merge_phase(
    height: int, width: int, tensor_budget: int, merge: MergeCost, resident: int
) -> tuple[int | None, int, int]:
    """``(rows, peak, least)`` of the merge phase: strip rows (None: whole image), its modelled peak,
    and the least tensor peak any merge configuration needs."""
    whole = math.ceil(resident + merge.fixed_bytes + merge.per_pixel_bytes * height * width)
    if whole <= tensor_budget or not merge.pixelwise:
        return None, whole, whole
    # strips: the full stack and the full output stay resident, one strip's merge on top
    base = resident + merge.fixed_bytes + 4 * height * width * (merge.in_channels + merge.out_channels)
    per_row = merge.per_pixel_bytes * width
    least = math.ceil(base + per_row)
    rows = min(height, int((tensor_budget - base) // per_row)) if tensor_budget > base else 0
    if rows < 1:
        return 1, least, least
    return rows, math.ceil(base + per_row * rows), least


def plan_tiles(
    image_hw: tuple[int, int],
    budget_bytes: int,
    per_pixel_bytes: float,
    *,
    fixed_bytes: int = 0,
    overlap: int = 64,
    stride: int = 16,
    in_channels: int = 3,
    out_channels: int = 3,
    out_scale: int = 1,
    min_tile: int | None = None,
    merge: MergeCost | None = None,
    cuda_overhead: CudaOverhead = CUDA_OVERHEAD,
) -> TilePlan:
    """Fewest tiles whose modelled peak fits a budget, each as small as that count allows.

    Model (affine in the tile's pixels, fitted e.g. by
    :func:`hdrlab.budget.estimate.inference_memory_model`):
    ``fixed + per_pixel * tile^2 + buffers``, with the full-image float32 buffers of
    :func:`tiled_forward`: input ``in_channels``, output accumulator and result ``2 out_channels``,
    weight sum 1, at ``out_scale^2`` for the output ones.

    The largest square tile that fits fixes the number of tiles per axis; the tile is then shrunk
    to the smallest stride multiple that still covers each side with that count
    (:func:`tight_tile`): the same passes, less recomputed overlap, a lower peak.

    ``merge``: a merge of the network's full-image output that runs after the tiled pass (the
    network buffers are freed by then; the input image stays resident). Its peak is part of the
    plan: a merge that does not fit runs in row strips sized by the budget when
    :attr:`MergeCost.pixelwise`, otherwise the plan is refused (tiles cannot shrink it).

    Args:
        image_hw: ``(H, W)``, multiples of ``stride``.
        budget_bytes: device budget.
        per_pixel_bytes: peak bytes per input pixel of a forward pass.
        fixed_bytes: size-independent bytes (parameters).
        overlap: tile overlap (rounded up to a stride multiple).
        stride: network stride.
        in_channels, out_channels, out_scale: image channels and output scale.
        min_tile: smallest acceptable tile (default ``2 * overlap + stride``).
        merge: memory model of the merge after the network pass (None: no merge).
        cuda_overhead: the device allowance.

    Returns:
        :class:`TilePlan`.

    Raises:
        BudgetError: if not even ``min_tile`` (and the smallest merge strip) fits; the message gives
            the budget needed.
    """
    height, width = image_hw
    overlap = math.ceil(overlap / stride) * stride
    min_tile = 2 * overlap + stride if min_tile is None else math.ceil(min_tile / stride) * stride
    buffers = 4 * height * width * (in_channels + (2 * out_channels + 1) * out_scale**2)
    tensor_budget = cuda_overhead.tensor_budget(budget_bytes)

    def peak(t_h: int, t_w: int) -> int:
        return math.ceil(fixed_bytes + per_pixel_bytes * t_h * t_w + buffers)

    merge_rows, merge_peak, merge_least = None, 0, 0
    if merge is not None:
        merge_rows, merge_peak, merge_least = _merge_phase(
            height, width, tensor_budget, merge, resident=4 * height * width * in_channels)
    whole = fixed_bytes + per_pixel_bytes * height * width + 4 * height * width * (in_channels + out_channels * out_scale**2)
    room = tensor_budget - fixed_bytes - buffers
    side = int(math.sqrt(room / per_pixel_bytes)) // stride * stride if room > 0 else 0
    side = min(side, max(height, width))
    network_fits = whole <= tensor_budget or side >= min_tile
    if not network_fits or merge_least > tensor_budget:
        net_least = min(math.ceil(whole), peak(min(min_tile, height), min(min_tile, width)))
        need = cuda_overhead.device_bytes(max(net_least, merge_least))
        parts = [] if network_fits else [f"{min_tile}-pixel tiles"]
        if merge_least > tensor_budget:
            parts.append("a 1-row strip of its merge" if merge.pixelwise else "its full-image merge")
        what = ("even with " if parts[0] != "its full-image merge" else "with ") + " and ".join(parts)
        raise BudgetError(
            f"a {height}x{width} image does not fit {format_size(budget_bytes)} {what}: "
            f"needs {format_size(need)} with the CUDA allowance; raise the budget to {math.ceil(need / 2**20)}MiB",
            required_bytes=need,
        )
    if whole <= tensor_budget:
        return TilePlan(None, overlap, 1, max(math.ceil(whole), merge_peak), budget_bytes,
                        merge_rows=merge_rows, merge_bytes=merge_peak)
    tile = tight_tile(image_hw, side, overlap, stride=stride, min_tile=min_tile)
    count = _axis_count(height, tile, overlap, stride) * _axis_count(width, tile, overlap, stride)
    return TilePlan(tile, overlap, count, max(peak(min(tile, height), min(tile, width)), merge_peak), budget_bytes,
                    largest_tile=side, merge_rows=merge_rows, merge_bytes=merge_peak)
