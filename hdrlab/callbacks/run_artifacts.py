"""Callbacks and the checkpoint plugin that make a run folder.

A run folder (``runs/<experiment>/<run_id>/``) holds ``config.yaml`` (LightningCLI),
``metrics.csv`` (CSVLogger), ``checkpoints/last.ckpt``, ``wandb/`` (offline unless logged in),
``previews/`` (:class:`ImagePanelLogger`) and ``summary.json`` (:class:`RunSummary`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from hdrlab import tonemap
from hdrlab.callbacks.steps import logging_batch

PACKAGES = ("hdrlab", "torch", "torchvision", "lightning", "torchmetrics", "kornia", "numpy",
            "opencv-python-headless", "OpenEXR", "wandb", "sweeps", "jsonargparse", "omegaconf")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``;
    the file gets the umask's mode (:func:`hdrlab.io.default_file_mode`), not ``mkstemp``'s 0600."""
    from hdrlab.io import default_file_mode

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (a kill never leaves a torn ``last.ckpt``);
    loaded with ``weights_only=True`` (a checkpoint cannot run pickled code). The checkpoint gets
    the umask's mode (:func:`hdrlab.io.default_file_mode`), not ``mkstemp``'s 0600."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        from hdrlab.io import default_file_mode

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = True) -> dict[str, Any]:
        if not Path(path).exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return pl_load(path, map_location=map_location, weights_only=True)


class _AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when opened again; a resumed run
    must keep its history, so this one adopts the existing header and appends."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/metrics.csv`` and appending to it when a run resumes."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class SampleBudget(L.Callback):
    """Stop training once ``max_samples`` training samples were seen (all processes together).

    Budgets in samples make runs with different dataset sizes and batch sizes comparable.
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = int(max_samples)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed from a checkpoint that already met the budget trains no further batch
        self.on_train_batch_end(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if getattr(pl_module, "samples_seen", 0) >= self.max_samples:
            trainer.should_stop = True


class ThroughputMemoryMonitor(L.Callback):
    """Logs ``train/throughput`` (samples/s, smoothed) and ``train/peak_memory_mb`` (CUDA max allocated,
    or the process's max resident set size on CPU).

    The smoothed rate is updated every batch (a clock read); the two values are logged on the logging
    batches only (:func:`hdrlab.callbacks.steps.logging_batch`), the only ones whose values reach the
    loggers: no ``self.log`` call, no memory query on the others."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._rate: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._t0 is None:
            return
        size = batch["ldr"].shape[0]
        rate = size / max(time.perf_counter() - self._t0, 1e-9)
        self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
        if not logging_batch(trainer, stepped=True):
            return
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        pl_module.log_dict({"train/throughput": float(self._rate), "train/peak_memory_mb": float(peak)},
                           batch_size=size)


def _uint8(x: torch.Tensor) -> np.ndarray:
    return tonemap.to_uint8(x.clamp(0, 1))


def build_panel(visuals: dict[str, Any], index: int = 0) -> np.ndarray:
    """One row of uint8 tiles for validation image ``index``.

    Tiles: input LDR | prediction | ground truth | error map | (generated stack) | prediction
    brackets at -4, -2, 0, +2, +4 EV | false-colour log luminance of the prediction (linear outputs).
    Display-domain predictions are shown as they are, next to the display mapping of the ground truth.
    """
    ldr, hdr, pred = visuals["ldr"][index], visuals["hdr"][index], visuals["pred"][index]
    linear = visuals.get("domain", "linear") == "linear"
    if linear:
        pred_view, gt_view = tonemap.display(pred[None])[0], tonemap.display(hdr[None])[0]
    else:
        pred_view, gt_view = pred, tonemap.display(hdr[None])[0]
    err = (pred_view - gt_view).abs().mean(0, keepdim=True)
    err_map = tonemap.false_color_log_luminance((err + 1e-4)[None].expand(1, 3, -1, -1), stops=(-10, 0))[0]
    tiles = [ldr, pred_view, gt_view, err_map]
    if "stack" in visuals:
        tiles += list(visuals["stack"][index])
    if linear:
        tiles += list(tonemap.exposure_brackets(pred[None], (-4, -2, 0, 2, 4))[0])
        tiles.append(tonemap.false_color_log_luminance(pred[None])[0])
    h = ldr.shape[-2]
    gap = np.full((h, 2, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for tile in tiles:
        row += [_uint8(tile), gap]
    return np.concatenate(row[:-1], axis=1)


class ImagePanelLogger(L.Callback):
    """Writes uint8 panels of the first validation images to ``<run_dir>/previews/`` and to W&B.

    Args:
        every_n_epochs: log every N validation epochs.
        run_dir: the run folder (``None``: the trainer's ``default_root_dir``).
    """

    def __init__(self, *, every_n_epochs: int = 1, run_dir: str | None = None) -> None:
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.run_dir = run_dir
        self._count = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        visuals = getattr(pl_module, "visuals", None)
        if trainer.sanity_checking or not visuals or not trainer.is_global_zero:
            return
        self._count += 1
        if (self._count - 1) % self.every_n_epochs:
            return
        from hdrlab import io
        from hdrlab.runs import output_stem

        panels = [build_panel(visuals, i) for i in range(len(visuals["name"]))]
        folder = Path(self.run_dir or trainer.default_root_dir) / "previews"
        folder.mkdir(parents=True, exist_ok=True)
        for name, panel in zip(visuals["name"], panels):
            # names of nested data sets hold "/" (e.g. "LuminanceChroma/Garden")
            io.write_png(folder / f"step{trainer.global_step:07d}_{output_stem(name)}.png", panel)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key="val/panels", images=panels, caption=list(visuals["name"]),
                                 step=trainer.global_step)


def git_sha() -> str:
    """The commit of the checkout holding the ``hdrlab`` package (whatever the working directory),
    else of the working directory's repository, or ``"unknown"`` (e.g. an installed package)."""
    import hdrlab

    for folder in (Path(hdrlab.__file__).resolve().parents[1], None):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                 check=True, cwd=folder)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def count_parameters(module: torch.nn.Module) -> int:
    """Trainable parameters (frozen loss/metric networks and buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """Trainable parameters in total and per sub-network.

    Args:
        module: a LightningModule; an :class:`~hdrlab.methods.base.HDRMethod` names its
            sub-networks with ``subnetworks()``.

    Returns:
        ``{"total": n, <sub-network>: n, ...}`` (sub-networks in ``subnetworks()`` order).
    """
    counts = {"total": count_parameters(module)}
    subnetworks = getattr(module, "subnetworks", None)
    if callable(subnetworks):
        counts.update({str(name): count_parameters(sub) for name, sub in subnetworks().items()})
    return counts


def parameter_hparams(counts: dict[str, int]) -> dict[str, int]:
    """``{"trainable_parameters/<name>": n}``: the flat keys logged to every logger."""
    return {f"trainable_parameters/{name}": int(n) for name, n in counts.items()}


class RunSummary(L.Callback):
    """Writes ``summary.json``: git SHA, package versions, seed, determinism flags, samples seen,
    steps, wall time, parameter counts, status and the last logged metrics.

    ``wall_time_s`` of a fit is the run's whole training wall time: the time of this process plus
    the time stored in the checkpoint it resumed from (saved with every checkpoint, so a resumed
    run counts every earlier process up to its checkpoint); ``wall_time_process_s`` is this
    process alone. Time spent after the last checkpoint of an interrupted process is not counted.

    When training starts it also logs the trainable parameter counts (total and per sub-network,
    :func:`parameter_counts`) to every logger of the run as ``trainable_parameters/<name>``
    hyperparameters (CSV: ``hparams.yaml``; W&B: the run config and its summary).

    Args:
        path: where to write (``<run_dir>/summary.json``).
        seed: the run's seed (``seed_everything``).
        extra: more JSON-able facts (command line, memory plan, ...).
    """

    def __init__(self, path: str, *, seed: int | None = None, extra: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.seed = seed
        self.extra = dict(extra or {})
        self._start = time.perf_counter()
        self._stage = ""
        self._resumed_wall = 0.0  # wall time of earlier processes of this run (from the checkpoint)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._start = time.perf_counter()
        self._stage = stage
        self._resumed_wall = 0.0

    def _wall(self) -> float:
        return self._resumed_wall + time.perf_counter() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self._wall()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_wall = float(state_dict.get("wall_time_s", 0.0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = parameter_hparams(parameter_counts(pl_module))
        for logger in trainer.loggers:
            logger.log_hyperparams(params)
            if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
                logger.experiment.summary.update(params)
            logger.save()

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            v = float(value)
            metrics[key] = v if math.isfinite(v) else None
        summary = {
            "status": status,
            "stage": self._stage,
            "git_sha": git_sha(),
            "versions": package_versions(),
            "seed": self.seed,
            "deterministic": {
                "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "cudnn_deterministic": torch.backends.cudnn.deterministic,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
            },
            "samples_seen": int(getattr(pl_module, "samples_seen", 0)),
            "global_step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
            "wall_time_s": round(self._wall(), 3),
            "wall_time_process_s": round(time.perf_counter() - self._start, 3),
            "trainable_parameters": count_parameters(pl_module),
            "trainable_parameters_per_subnetwork": {k: v for k, v in parameter_counts(pl_module).items() if k != "total"},
            "model": type(pl_module).__name__,
            "argv": sys.argv,
            "metrics": metrics,
            **self.extra,
        }
        atomic_write_text(self.path, json.dumps(summary, indent=2, default=str) + "\n")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "finished")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage == "validate":
            self._write(trainer, pl_module, "finished")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "finished")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._write(trainer, pl_module, f"failed: {type(exception).__name__}: {exception}")


class LastCheckpoint(L.Callback):
    """Saves ``last.ckpt`` at the step training stops on and when it is interrupted (Ctrl-C, an
    exception), so ``--ckpt_path last`` resumes, and readers score, the weights it ended with.

    Lightning's step checkpoints (every ``checkpoint_every_n_steps``) and epoch-end checkpoints
    miss a run stopped by its sample budget (:class:`SampleBudget`) or ``max_steps`` in the
    middle of an epoch, between two step checkpoints: ``last.ckpt`` then held the weights of up to
    ``checkpoint_every_n_steps - 1`` steps earlier. Weights or optimizer state holding a NaN or
    infinity are never saved (:func:`hdrlab.callbacks.nonfinite.nonfinite_state`): the previous
    ``last.ckpt`` stays. A stop by budget or ``max_steps`` is saved
    from the batch end that stops it (the moment step checkpoints are taken, so a longer run
    continues from it exactly); this callback must therefore come after the callbacks that set
    ``trainer.should_stop`` in ``on_train_batch_end``. Stops requested later (``max_time``,
    early stopping) are saved at the epoch end they reach: the weights are the final ones, a
    continuation starts the next epoch.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.state.fn == "fit" and trainer.global_step > 0 and trainer.global_step != self._saved_step:
            from hdrlab.callbacks.nonfinite import nonfinite_state

            bad = nonfinite_state(trainer.lightning_module, trainer.optimizers)
            if bad:  # the previous last.ckpt (finite) stays
                from lightning.pytorch.utilities import rank_zero_warn

                rank_zero_warn(f"not writing {self.path} at global step {trainer.global_step}: non-finite "
                               f"{', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
                return
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_step = trainer.global_step

    @staticmethod
    def _stop_requested(trainer: L.Trainer) -> bool:
        # not while min_steps / min_epochs keep the run going despite should_stop
        return trainer.should_stop and getattr(trainer.fit_loop, "_can_stop_early", True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._stop_requested(trainer) or 0 <= trainer.max_steps <= trainer.global_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last epoch; or a stop requested after this callback's batch end (Lightning's Timer,
        # EarlyStopping): saved at the epoch end it reaches, with the weights it stopped with
        last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
        if self._stop_requested(trainer) or last_epoch:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._saved_step = -1  # always write the interrupt state
        self._save(trainer)
