"""One labelled comparison figure per test scene: the input, the reference and each method's output.

:func:`scene_figure` draws a grid with one titled column per image (the LDR input, the reference
HDR, then one per method, in the given order) and four labelled rows:

1. **tone-mapped**: :func:`hdrlab.tonemap.display` (the project's display mapping, the one the
   display metrics use) of each linear image after scale alignment to the reference
   (:func:`hdrlab.metrics.alignment.align_scale`, median by default, fitted on the pixels not
   clipped in the input, as the metrics fit it); the input is shown as it is, a display-domain
   output as it is. A rectangle marks the zoom box of row 2.
2. **zoom**: the same images cropped to the zoom box (:func:`zoom_box`): the bounding box of the
   largest connected clipped region of the input (max channel ``>= 254.5 / 255``, 8-connected),
   padded to a square of at least 16 px and clamped to the image; without a clipped pixel, the
   largest region of the brightest 1 % of the input, or the centre (the row label says which).
3. **log10 luminance**: the Rec.709 luminance of each linear image (aligned) in log10, one colour
   scale and one colour bar for all columns.
4. **error**: per pixel ``|log2(Y_pred / Y_ref)|`` in stops (``Y``: luminance of the aligned
   prediction and of the reference, both floored at :data:`ERROR_FLOOR`), one colour scale and one
   colour bar; the input and reference columns show a short text instead, and each map's axis
   label gives its mean over all and over the clipped pixels.

Display-domain outputs (e.g. Mertens or CF-Net fusions in ``[0, 1]``) have no radiance: rows 3 and
4 say "display output" for them. Without a reference nothing is aligned and row 4 is text only.

:func:`scene_figures_from_runs` draws these figures from the ``test_outputs/`` folders that
``hdrlab test --save_test_outputs true`` writes (:mod:`hdrlab.callbacks.per_sample_metrics`).

Importing this module imports neither torch nor matplotlib; drawing does.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdrlab.errors import ConfigError
from hdrlab.report.figures import FigureInfo, _plt, save_figure
from hdrlab.runs import TEST_OUTPUTS_FOLDER, output_stem

if TYPE_CHECKING:
    import torch

__all__ = [
    "CLIP_LEVEL",
    "ERROR_FLOOR",
    "ERROR_LABEL",
    "LOG_LUMINANCE_LABEL",
    "SceneFigureInfo",
    "clipped_fraction",
    "scene_figure",
    "scene_figures_from_runs",
    "zoom_box",
]

#: an input pixel is clipped when its max channel reaches this display value (top 8-bit code)
CLIP_LEVEL = 254.5 / 255.0
#: luminance floor of the error maps (radiance units, input clip level = 1)
ERROR_FLOOR = 1e-4
#: smallest luminance shown in the log10 maps (radiance units)
LOG_FLOOR = 1e-6
LOG_LUMINANCE_LABEL = "log10 luminance (aligned)"
ERROR_LABEL = "|log2 ratio| (stops)"
MIN_ZOOM = 16
ROW_LABELS = ("tone-mapped (display)", "zoom", "log10 luminance", "error")


@dataclass
class SceneFigureInfo(FigureInfo):
    """A written scene figure (:class:`~hdrlab.report.figures.FigureInfo`) and what it shows.

    Attributes:
        scene: the scene name (the figure's title).
        columns: column titles, left to right (input, reference when given, methods).
        rows: row labels, top to bottom.
        zoom: the zoom box ``(top, left, bottom, right)`` in pixels, bottom / right exclusive.
        zoom_source: ``"clipped"`` (largest clipped region), ``"brightest"`` or ``"centre"``.
        colorbars: the labels of the colour bars (log10 luminance, then error when drawn).
        log10_limits: the shared ``(vmin, vmax)`` of row 3.
        error_limit: the upper limit (stops) of row 4's shared scale (lower limit 0).
        num_axes: axes in the figure, colour bars included.
    """

    scene: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    zoom: tuple[int, int, int, int] = (0, 0, 0, 0)
    zoom_source: str = "clipped"
    colorbars: list[str] = field(default_factory=list)
    log10_limits: tuple[float, float] = (0.0, 1.0)
    error_limit: float = 0.0
    num_axes: int = 0


def _clip_mask(ldr: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` bool: the input's clipped pixels (max channel ``>= CLIP_LEVEL``)."""
    return ldr.amax(dim=0) >= CLIP_LEVEL


def clipped_fraction(ldr: torch.Tensor) -> float:
    """Fraction of the pixels of ``ldr`` (``[3, H, W]`` display values in ``[0, 1]``) that are clipped."""
    return float(_clip_mask(ldr).float().mean())


def _largest_component(mask: Any) -> tuple[int, int, int, int, int] | None:
    """Bounding box ``(left, top, width, height)`` and area of the largest 8-connected component of
    a ``[H, W]`` bool array; ``None`` when the mask is empty."""
    import cv2
    import numpy as np

    if not mask.any():
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    best = 1 + int(np.argmax(stats[1:count, cv2.CC_STAT_AREA]))
    left, top, width, height, area = (int(v) for v in stats[best])
    return left, top, width, height, area


def _pad_box(left: int, top: int, width: int, height: int, img_h: int, img_w: int,
             *, min_size: int = MIN_ZOOM, margin: float = 0.25) -> tuple[int, int, int, int]:
    """A box around ``(left, top, width, height)``: square with ``margin`` of its long side added,
    at least ``min_size`` px, shifted inside the image (a side never exceeds the image's)."""
    side = max(min_size, math.ceil(max(width, height) * (1.0 + margin)))
    box_h, box_w = min(img_h, max(side, height)), min(img_w, max(side, width))
    cy, cx = top + height / 2.0, left + width / 2.0
    y0 = round(cy - box_h / 2.0)
    x0 = round(cx - box_w / 2.0)
    y0 = min(max(0, y0), img_h - box_h)
    x0 = min(max(0, x0), img_w - box_w)
    return y0, x0, y0 + box_h, x0 + box_w


def zoom_box(ldr: torch.Tensor, *, min_size: int = MIN_ZOOM) -> tuple[tuple[int, int, int, int], str]:
    """The zoom box of a scene (module docstring, row 2).

    Args:
        ldr: ``[3, H, W]`` input LDR, display values in ``[0, 1]``.
        min_size: smallest side of the box in pixels (clamped to the image).

    Returns:
        ``((top, left, bottom, right), source)`` with bottom / right exclusive and ``source`` one of
        ``"clipped"`` (the largest clipped region, covered entirely), ``"brightest"`` (no clipped
        pixel: the largest region of the brightest 1 % of the pixels, or of the pixels above the
        darkest when fewer stand out) or ``"centre"`` (flat input).
    """
    import numpy as np

    _, img_h, img_w = ldr.shape
    peak = ldr.detach().float().amax(dim=0).cpu().numpy()
    found = _largest_component(peak >= CLIP_LEVEL)
    source = "clipped"
    if found is None:
        level, lowest = float(np.quantile(peak, 0.99)), float(peak.min())
        found = _largest_component(peak >= level if level > lowest else peak > lowest)  # None: flat input
        source = "brightest"
    if found is None:
        side_h, side_w = min(img_h, max(min_size, img_h // 4)), min(img_w, max(min_size, img_w // 4))
        y0, x0 = (img_h - side_h) // 2, (img_w - side_w) // 2
        return (y0, x0, y0 + side_h, x0 + side_w), "centre"
    left, top, width, height, _ = found
    return _pad_box(left, top, width, height, img_h, img_w, min_size=min_size), source


def _wrap(text: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _text_axis(ax: Any, text: str) -> None:
    """An axis with a short centred text instead of an image (frame kept, ticks off)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.85")
    ax.text(0.5, 0.5, _wrap(text, 18), ha="center", va="center", fontsize=8, color="0.35", transform=ax.transAxes)


def _image_axis(ax: Any, image: Any, **kw: Any) -> Any:
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(image, interpolation="nearest", **kw)


def _hwc(x: torch.Tensor) -> Any:
    return x.detach().float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()


def _check_image(name: str, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if x.dim() != 3 or x.shape[0] != 3:
        raise ConfigError(f"scene_figure: {name} must be [3, H, W], got shape {tuple(x.shape)}")
    if tuple(x.shape) != shape:
        raise ConfigError(f"scene_figure: {name} has shape {tuple(x.shape)}, the input {shape}")
    return x.detach().float().cpu()


def scene_figure(
    scene: str,
    *,
    input_ldr: torch.Tensor,
    reference: torch.Tensor | None,
    predictions: Mapping[str, torch.Tensor],
    domains: Mapping[str, str] | None = None,
    path: str | Path,
    pdf: bool = True,
    align: str | Mapping[str, str] = "median",
    dpi: int = 100,
) -> SceneFigureInfo:
    """Draw and save the comparison figure of one scene (module docstring).

    Args:
        scene: scene name, the figure's title.
        input_ldr: ``[3, H, W]`` LDR input, display values in ``[0, 1]``.
        reference: ``[3, H, W]`` ground-truth linear HDR (``>= 0``, input clip level 1), or ``None``.
        predictions: method label -> ``[3, H, W]`` output: linear HDR radiance (any scale), or a
            display image in ``[0, 1]`` for methods whose domain is ``"display"``. One column
            each, in this order; 2 to 8 methods stay readable (the figure widens with columns).
        domains: method label -> ``"linear"`` | ``"display"`` (default ``"linear"``).
        path: the PNG to write (its folder must exist); the PDF goes next to it when ``pdf``.
        pdf: also write ``path`` with suffix ``.pdf``.
        align: scale alignment of the linear predictions to the reference
            (:data:`hdrlab.metrics.alignment.ALIGN_MODES`), one mode or one per label.
        dpi: resolution of the PNG.

    Returns:
        :class:`SceneFigureInfo`: the written files and what the figure shows.

    Raises:
        ConfigError: an image that is not ``[3, H, W]`` or differs in size from the input, an
            unknown domain, no prediction.
    """
    import numpy as np
    import torch
    from matplotlib.patches import Rectangle

    from hdrlab import tonemap
    from hdrlab.camera import luminance
    from hdrlab.metrics.alignment import align_scale

    if not predictions:
        raise ConfigError("scene_figure needs at least one prediction")
    domains = dict(domains or {})
    shape = tuple(input_ldr.shape)
    ldr = _check_image("input_ldr", input_ldr, shape if input_ldr.dim() == 3 else (3, 0, 0))
    ref = None if reference is None else _check_image("reference", reference, shape).clamp_min(0.0)
    clipped = _clip_mask(ldr)
    unclipped = (~clipped)[None, None].float()
    box, source = zoom_box(ldr)
    top, left, bottom, right = box

    # one entry per column: (title, domain, tone-mapped image, aligned radiance or None)
    columns: list[tuple[str, str, torch.Tensor, torch.Tensor | None]] = [("input (LDR)", "input", ldr, None)]
    if ref is not None:
        columns.append(("reference (HDR)", "reference", tonemap.display(ref), ref))
    for label, pred in predictions.items():
        domain = domains.get(label, "linear")
        if domain not in ("linear", "display"):
            raise ConfigError(f"scene_figure: domain of {label!r} is {domain!r}; use 'linear' or 'display'")
        pred = _check_image(f"prediction {label!r}", pred, shape)
        pred = torch.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
        if domain == "display":
            columns.append((label, domain, pred.clamp(0.0, 1.0), None))
            continue
        mode = align.get(label, "median") if isinstance(align, Mapping) else align
        aligned = pred if ref is None else align_scale(pred[None], ref[None], mode=mode, mask=unclipped)[0]
        columns.append((label, domain, tonemap.display(aligned), aligned))

    def log10_lum(x: torch.Tensor) -> Any:
        return torch.log10(luminance(x).clamp_min(LOG_FLOOR))[0].numpy()

    logs = {i: log10_lum(rad) for i, (_, _, _, rad) in enumerate(columns) if rad is not None}
    if logs:
        low = min(float(np.quantile(v, 0.01)) for v in logs.values())
        high = max(float(np.quantile(v, 0.999)) for v in logs.values())
        vmin, vmax = math.floor(low * 2) / 2, math.ceil(high * 2) / 2
        vmax = max(vmax, vmin + 0.5)
    else:
        vmin, vmax = -3.0, 1.0
    errors: dict[int, Any] = {}
    if ref is not None:
        ref_lum = luminance(ref).clamp_min(ERROR_FLOOR)
        for i, (_, domain, _, rad) in enumerate(columns):
            if domain == "linear" and rad is not None:
                errors[i] = (torch.log2(luminance(rad).clamp_min(ERROR_FLOOR)) - torch.log2(ref_lum)).abs()[0].numpy()
    error_max = 1.0
    if errors:
        error_max = max(1.0, max(float(np.quantile(e, 0.99)) for e in errors.values()))
        error_max = min(8.0, math.ceil(error_max * 2) / 2)

    plt = _plt()
    ncols = len(columns)
    height, width = shape[1], shape[2]
    aspect = height / max(width, 1)
    cell = 2.1
    fig = plt.figure(figsize=(cell * ncols + 1.4, cell * aspect * 4 + 1.2), layout="constrained")
    axes = fig.subplots(4, ncols, squeeze=False)
    fig.suptitle(scene, fontsize=12, fontweight="bold")
    fraction = float(clipped.float().mean())
    zoom_text = {"clipped": f"largest clipped region ({100 * fraction:.1f}% clipped)",
                 "brightest": "brightest region (no clipped pixel)",
                 "centre": "centre (no clipped pixel)"}[source]
    row_labels = [ROW_LABELS[0], f"zoom: {zoom_text}", LOG_LUMINANCE_LABEL if ref is not None
                  else "log10 luminance (unaligned: no reference)", f"error: {ERROR_LABEL}"]
    log_image = error_image = None
    for c, (title, domain, shown, rad) in enumerate(columns):
        ax = axes[0][c]
        _image_axis(ax, _hwc(shown))
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                               edgecolor="#ff2a2a", linewidth=1.2))
        ax.set_title(_wrap(title) + ("\n(display output)" if domain == "display" else ""), fontsize=9)
        _image_axis(axes[1][c], _hwc(shown[:, top:bottom, left:right]))
        if c in logs:
            log_image = _image_axis(axes[2][c], logs[c], cmap="viridis", vmin=vmin, vmax=vmax)
        else:
            _text_axis(axes[2][c], {"input": "LDR input: display values, no radiance",
                                    "display": "display output: no radiance"}.get(domain, "no radiance"))
        if c in errors:
            error_image = _image_axis(axes[3][c], errors[c], cmap="magma", vmin=0.0, vmax=error_max)
            mean_all = float(errors[c].mean())
            clip_np = clipped.numpy()
            mean_clip = f"{float(errors[c][clip_np].mean()):.2f}" if clip_np.any() else "n/a"
            axes[3][c].set_xlabel(f"mean {mean_all:.2f} stops\nclipped {mean_clip}", fontsize=8)
        elif domain == "display":
            _text_axis(axes[3][c], "display output: no radiance error")
        elif domain == "input":
            _text_axis(axes[3][c], "input: no error map")
        elif domain == "reference":
            _text_axis(axes[3][c], "reference: error 0 by definition")
        else:
            _text_axis(axes[3][c], "no reference: no error map")
    axes[1][0].set_xlabel(f"rows {top}-{bottom - 1}, columns {left}-{right - 1}", fontsize=8)
    for r, label in enumerate(row_labels):
        axes[r][0].set_ylabel(_wrap(label, 18), fontsize=8)
    colorbars = []
    if log_image is not None:
        label = LOG_LUMINANCE_LABEL if ref is not None else "log10 luminance (unaligned)"
        fig.colorbar(log_image, ax=list(axes[2]), location="right", shrink=0.9, label=label)
        colorbars.append(label)
    if error_image is not None:
        fig.colorbar(error_image, ax=list(axes[3]), location="right", shrink=0.9, label=ERROR_LABEL,
                     extend="max")
        colorbars.append(ERROR_LABEL)
    num_axes = len(fig.axes)
    written = save_figure(fig, path, scene, pdf=pdf, dpi=dpi)
    return SceneFigureInfo(written.path, written.title, written.pdf, scene=scene,
                           columns=[title for title, *_ in columns], rows=row_labels, zoom=box,
                           zoom_source=source, colorbars=colorbars, log10_limits=(vmin, vmax),
                           error_limit=error_max if errors else 0.0, num_axes=num_axes)


@dataclass
class _RunOutputs:
    label: str
    folder: Path
    domain: str
    align: str
    stems: dict[str, str]  # scene name -> file stem


def _read_run_outputs(label: str, run_dir: Path) -> _RunOutputs | None:
    """The ``test_outputs/`` of a run folder (manifests of every rank merged); ``None`` when absent."""
    folder = Path(run_dir) / TEST_OUTPUTS_FOLDER
    if not folder.is_dir():
        return None
    domain, align, stems = "linear", "median", {}
    manifests = sorted(folder.glob("outputs*.json"))
    for manifest in manifests:
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        domain, align = data.get("domain", domain), data.get("align", align)
        stems.update({str(k): str(v) for k, v in (data.get("scenes") or {}).items()})
    if not manifests:  # files only: scene names are the prediction stems
        stems = {p.stem: output_stem(p.stem) for p in sorted(folder.glob("*.exr"))
                 if not p.stem.endswith("_reference")}
    stems = {name: stem for name, stem in stems.items() if (folder / f"{stem}.exr").is_file()}
    return _RunOutputs(label, folder, domain, align, stems) if stems else None


def scene_figures_from_runs(
    runs: Sequence[tuple[str, Path]],
    folder: str | Path,
    *,
    pdf: bool = True,
    max_scenes: int = 4,
    scenes: Sequence[str] | None = None,
) -> list[SceneFigureInfo]:
    """Scene figures (:func:`scene_figure`) from runs' ``test_outputs/`` folders.

    Args:
        runs: ``(label, run folder)`` pairs, one column each in this order; a run without
            ``test_outputs/`` (``hdrlab test --save_test_outputs true``) is left out.
        folder: where the figures go (``scene_<stem>.png`` / ``.pdf``; created).
        pdf: also write PDFs.
        max_scenes: without ``scenes``, draw the scenes all runs share with the largest clipped
            fraction of the input, at most this many.
        scenes: scene names to draw (those all runs share, in this order) instead.

    Returns:
        The written figures; ``[]`` when no run has test outputs or they share no scene. Input and
        reference come from the first run that has them (a scene without an input is skipped);
        each run's domain and scale alignment come from its ``outputs.json``.
    """
    from hdrlab import io as hdr_io

    found = [r for r in (_read_run_outputs(label, Path(run)) for label, run in runs) if r is not None]
    if not found:
        return []
    seen: dict[str, int] = {}
    for run in found:  # unique column titles
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({seen[run.label]})"
    shared = [name for name in found[0].stems if all(name in run.stems for run in found[1:])]
    if scenes is not None:
        shared = [name for name in scenes if name in shared]

    def first_file(name: str, suffix: str) -> Path | None:
        for run in found:
            path = run.folder / f"{run.stems[name]}{suffix}"
            if path.is_file():
                return path
        return None

    inputs: dict[str, torch.Tensor] = {}
    for name in shared:
        path = first_file(name, "_input.png")
        if path is not None:
            inputs[name] = hdr_io.read_ldr(path).image
    chosen = [name for name in shared if name in inputs]
    if scenes is None:
        chosen = sorted(chosen, key=lambda n: -clipped_fraction(inputs[n]))[:max(0, max_scenes)]
    if not chosen:
        return []
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name in chosen:
        ref_path = first_file(name, "_reference.exr")
        predictions = {run.label: hdr_io.read_hdr(run.folder / f"{run.stems[name]}.exr") for run in found}
        figures.append(scene_figure(
            name, input_ldr=inputs[name], reference=None if ref_path is None else hdr_io.read_hdr(ref_path),
            predictions=predictions, domains={run.label: run.domain for run in found},
            align={run.label: run.align for run in found}, path=out / f"scene_{found[0].stems[name]}.png", pdf=pdf,
        ))
    return figures
