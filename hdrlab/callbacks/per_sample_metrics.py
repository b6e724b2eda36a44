"""Per-image test metrics: one CSV row per test image, for per-scene comparisons.

``hdrlab test`` adds :class:`PerSampleMetrics`, which writes ``<run_dir>/test_per_sample.csv``
(``test_per_sample.rank<r>.csv`` on rank ``r > 0`` under DDP). Columns:

- ``name``: the image / scene identifier of the batch (``batch["name"]``);
- ``clipped_fraction``: fraction of the input's pixels that are clipped (``batch["clip_mask"]``);
- the method's own metric columns without the stage prefix, computed on that image alone with the
  same metric classes, alignment and regions as the aggregated ``test/...`` values
  (``psnr_mu``, ``psnr_mu_clipped``, ``pu21_psnr``, ... for ``linear`` methods;
  ``display_psnr[_clipped]`` / ``display_ssim[_clipped]`` for ``display`` methods);
- for ``linear`` methods also the display columns, computed on
  ``hdrlab.tonemap.display(align(pred))`` against ``display(hdr)`` (``align`` = the method's scale
  alignment fitted on the unclipped pixels), so every method can be compared with a display-domain
  merger in the same columns;
- for ``linear`` methods also ``log2_ratio_clipped``: the signed mean ``log2(pred / hdr)`` in the
  clipped region after alignment (:class:`hdrlab.metrics.Log2Ratio`; > 0 over-, < 0
  under-hallucination), a diagnostic next to the scores.

A value is empty when the image has no pixel in the region. The file is written atomically at the
end of the test epoch (a killed run leaves no half-written table).

With ``save_outputs=True`` (``hdrlab test --save_test_outputs true``) it also writes, per test image,
into ``<folder of path>/test_outputs/`` (:data:`OUTPUTS_FOLDER`):

- ``<stem>.exr``: the method's prediction as it is scored, before any alignment: linear radiance for
  ``linear`` methods, the display image in ``[0, 1]`` for ``display`` methods (float32; NaN / Inf
  replaced by 0 / the float32 maximum and negatives clamped to 0, as EXR writing requires);
- ``<stem>_input.png``: the LDR input (8-bit, display values as given to the method);
- ``<stem>_reference.exr``: the ground-truth linear HDR (float32);

and at the end of the epoch ``outputs.json`` (``outputs.rank<r>.json`` on rank ``r > 0``):
``{"domain": "linear" | "display", "align": <the method's scale alignment>, "scenes": {name: stem}}``.
``stem`` is the scene name with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``
(:func:`output_stem`). Every file is written atomically (:mod:`hdrlab.io` writers).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from hdrlab import tonemap
from hdrlab.callbacks.run_artifacts import atomic_write_text
from hdrlab.metrics.alignment import align_scale
from hdrlab.metrics.bias import Log2Ratio
from hdrlab.metrics.display import build_display_metrics
from hdrlab.metrics.kalantari import darkest_relative_scale
from hdrlab.runs import TEST_OUTPUTS_FOLDER, output_stem

__all__ = ["OUTPUTS_FOLDER", "PerSampleMetrics", "output_stem", "per_sample_values", "save_sample_outputs"]

#: folder (next to ``test_per_sample.csv``) of the per-image outputs written with ``save_outputs=True``
OUTPUTS_FOLDER = TEST_OUTPUTS_FOLDER
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def save_sample_outputs(folder: Path, stem: str, pred: torch.Tensor, ldr: torch.Tensor, hdr: torch.Tensor) -> None:
    """Write one test image's prediction, input and reference into ``folder`` (module docstring).

    Args:
        folder: existing output folder.
        stem: file stem (:func:`output_stem`).
        pred: ``[3, H, W]`` prediction in the method's output domain (linear radiance or display ``[0, 1]``).
        ldr: ``[3, H, W]`` LDR input, display values in ``[0, 1]``.
        hdr: ``[3, H, W]`` ground-truth linear HDR, ``>= 0``.
    """
    from hdrlab import io as hdr_io

    def finite(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().cpu()
        return torch.nan_to_num(x, nan=0.0, posinf=_FLOAT32_MAX, neginf=0.0).clamp_min(0.0)

    hdr_io.write_exr(folder / f"{stem}.exr", finite(pred))
    hdr_io.write_png(folder / f"{stem}_input.png", finite(ldr).clamp_max(1.0))
    hdr_io.write_exr(folder / f"{stem}_reference.exr", finite(hdr))


def per_sample_values(collection: Any, pred: torch.Tensor, target: torch.Tensor,
                      clip_mask: torch.Tensor, *, prefix: str = "",
                      scale: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Score each image of a batch on its own.

    Args:
        collection: a ``torchmetrics.MetricCollection`` of hdrlab image metrics (reset between images).
        pred: ``[B, 3, H, W]`` prediction in the collection's domain.
        target: ``[B, 3, H, W]`` reference in the same domain.
        clip_mask: ``[B, 1, H, W]`` input clip mask.
        prefix: stripped from the metric keys.
        scale: optional ``[B]`` per-image factors for the metrics whose ``update`` takes ``scale``
            (the ``kalantari2017`` protocol's darkest-exposure scale,
            :func:`hdrlab.metrics.kalantari.darkest_relative_scale`); the collection hands it to
            those only.

    Returns:
        One ``{metric: value}`` dict per image (``nan`` where a region is empty).
    """
    rows = []
    for i in range(pred.shape[0]):
        collection.reset()
        extra = {} if scale is None else {"scale": scale[i:i + 1]}
        collection.update(pred[i:i + 1], target[i:i + 1], clip_mask=clip_mask[i:i + 1], **extra)
        values = collection.compute()
        rows.append({key.removeprefix(prefix): float(v) for key, v in values.items()})
    collection.reset()
    return rows


class PerSampleMetrics(L.Callback):
    """Write one row of metrics per test image to ``path`` (module docstring).

    Args:
        path: CSV file written at the end of the test epoch.
        save_outputs: also write each image's prediction, input and reference into
            ``<folder of path>/test_outputs/`` (module docstring).
    """

    def __init__(self, path: str, *, save_outputs: bool = False) -> None:
        self.path = Path(path)
        self.save_outputs = bool(save_outputs)
        self.outputs_dir = self.path.parent / OUTPUTS_FOLDER
        self._stems: dict[str, str] = {}
        self._rows: list[dict[str, Any]] = []
        self._own: Any = None
        self._display: Any = None
        self._bias: Any = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []
        self._stems = {}
        self._own = pl_module.build_metric_collection("").to(pl_module.device)
        self._display = (build_display_metrics(prefix="").to(pl_module.device)
                         if pl_module.output_domain == "linear" else None)
        self._bias = (Log2Ratio(region="clipped", align=pl_module.align)
                      if pl_module.output_domain == "linear" else None)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, dict) or "pred" not in outputs:
            return
        pred = outputs["pred"].float()
        clip_mask = batch["clip_mask"]
        scale = darkest_relative_scale(batch) if pl_module.output_domain == "linear" else None
        rows = per_sample_values(self._own, pred, pl_module.target_for_metrics(batch).float(), clip_mask, scale=scale)
        if self._display is not None:
            aligned = align_scale(pred, batch["hdr"].float(), mode=pl_module.align, mask=clip_mask < 0.5)
            shown = tonemap.display(aligned.clamp_min(0.0))
            extra = per_sample_values(self._display, shown, tonemap.display(batch["hdr"].float()), clip_mask)
            rows = [{**own, **disp} for own, disp in zip(rows, extra)]
        if self._bias is not None:
            bias = self._bias.per_image(pred, batch["hdr"].float(), clip_mask).tolist()
            rows = [{**row, "log2_ratio_clipped": value} for row, value in zip(rows, bias)]
        names = batch.get("name") or [f"{batch_idx}_{i}" for i in range(pred.shape[0])]
        fractions = clip_mask.float().mean(dim=(1, 2, 3)).tolist()
        for name, fraction, row in zip(names, fractions, rows):
            self._rows.append({"name": name, "clipped_fraction": fraction, **row})
        if self.save_outputs:
            self.outputs_dir.mkdir(parents=True, exist_ok=True)
            for i, name in enumerate(names):
                stem = self._stems[str(name)] = output_stem(name)
                save_sample_outputs(self.outputs_dir, stem, pred[i], batch["ldr"][i], batch["hdr"][i])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._rows:
            return
        rank = trainer.global_rank if trainer.world_size > 1 else 0
        if self.save_outputs and self._stems:
            manifest = {"domain": pl_module.output_domain, "align": getattr(pl_module, "align", "median"),
                        "scenes": self._stems}
            name = "outputs.json" if rank == 0 else f"outputs.rank{rank}.json"
            atomic_write_text(self.outputs_dir / name, json.dumps(manifest, indent=2) + "\n")
        path = self.path
        if rank > 0:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        columns = list(self._rows[0])
        for row in self._rows[1:]:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self._rows:
            writer.writerow({key: ("" if isinstance(value, float) and not math.isfinite(value) else value)
                             for key, value in row.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(buffer.getvalue())
        os.replace(tmp, path)
