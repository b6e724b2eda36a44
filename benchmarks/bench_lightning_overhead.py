"""Lightning overhead of ``hdrlab fit``: its training-step time over a plain PyTorch loop's.

For each method (SingleHDR joint stage, Le2023 + Debevec, CF-Net), at the tiny override
(``experiments/overrides/tiny.yaml``: width 1/8, patch 64, batch 2), single-threaded:

* **hdrlab fit**: the trainer, model and datamodule are built by hdrlab's own CLI path
  (``hdrlab.cli.build_cli(["fit", --config <experiment> --config tiny.yaml, --trainer.max_steps N,
  --wandb disabled, --run_dir <temp>], run=False)``) with every default logger (CSV), metric and
  callback on (run summary, throughput/memory monitor, image panels, ModelCheckpoint's per-step
  check, learning-rate monitor, non-finite guard, last-checkpoint), then ``trainer.fit`` runs with
  one extra timing callback. It records the wall time between consecutive ``on_train_batch_start``
  hooks (one full loop iteration: training_step with its ``self.log`` calls, backward, optimizer
  step, every callback hook, the logger flush, and the fetch of the next batch) and the time spent
  inside the training dataset's ``__getitem__`` and the collate function in that interval (the
  data module runs with ``num_workers=0``, so synthesis happens in the loop). The first
  ``--warmup`` iterations are dropped. ``num_train_scenes`` is raised so that all steps fall in one
  epoch (no validation inside the timed window).
* **plain loop**: a second model built by the same CLI call, the same batches drawn from its
  datamodule's train loader, then ``zero_grad`` -> ``method.compute_loss(batch)`` -> ``backward`` ->
  ``optimizer.step`` (the optimizer of ``method.configure_optimizers()``), timed per step after the
  same warm-up. Each batch is synthesised right before its step, outside the timed interval, as in
  the fit loop: a step then starts with the caches the synthesis left behind on both sides (batches
  collected up front made the plain steps about 0.7 % faster than the same steps in a loop).

Per run the median step time is taken; the reported time is the median over ``--repeats`` runs
(runs of the two kinds alternate, and which kind goes first alternates from one repeat to the next).
Ratios: ``step`` = (fit iteration - data time) / plain step, the Lightning + hdrlab-callback
overhead (goal <= 1.05); ``with_data`` = fit iteration / plain step, which adds the in-loop synthesis
(see bench_data.py for the data rates).

Both sides are timed twice: wall time (``time.perf_counter``; the ``*_s`` keys and ``ratio_step``) and
the process's CPU time (``time.process_time``, every thread of the process; the ``*_cpu_s`` keys and
``ratio_step_cpu``). Everything runs single-threaded in one process, so the CPU time holds the same
work without the time the process waits for a core: on a shared machine, where other processes take
the cores for seconds at a time, the wall-time ratio swings by +-20 % from run to run and the CPU-time
ratio is the steadier estimate of the overhead (what it leaves out: waits for the disk, e.g. a
checkpoint's fsync, none of which falls inside the timed steps).
``--profile`` prints the top of a cProfile of one extra fit run per method.

Knobs: ``--steps`` (timed steps per run, default 20), ``--warmup`` (default 5), ``--repeats``
(default 5), ``--methods``. About 2-3 minutes on 2 cores with the defaults.

Usage: ``python benchmarks/bench_lightning_overhead.py [--steps 20] [--warmup 5] [--repeats 5] [--profile]``
Writes ``benchmarks/results/lightning_overhead.json`` (``--json PATH`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HDRLAB_TORCH_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, ratio, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = "experiments/overrides/tiny.yaml"
METHODS: dict[str, list[str]] = {
    "singlehdr": ["experiments/singlehdr.yaml", "--model.init_args.stage", "joint"],
    "le2023_debevec": ["experiments/le2023_debevec.yaml"],
    "cfnet": ["experiments/cfnet.yaml"],
}


def _cli(method: str, steps: int, run_dir: Path) -> Any:
    """hdrlab's fit trainer, model and datamodule for ``method`` at the tiny override (nothing run)."""
    from hdrlab.cli import build_cli

    config, *extra = METHODS[method]
    args = ["--config", config, "--config", TINY, *extra,
            "--trainer.max_steps", str(steps), "--wandb", "disabled", "--run_dir", str(run_dir),
            # one epoch covers every step: no validation inside the timed window
            "--data.init_args.num_train_scenes", str(2 * steps + 8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_cli(args, run=False)


def _now() -> tuple[float, float]:
    """(wall time, process CPU time) in seconds."""
    return time.perf_counter(), time.process_time()


class _StepTimer:
    """Timing callback + dataset/collate wrappers (module docstring)."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []  # (wall, cpu) of each on_train_batch_start
        # (start, end) of each __getitem__ / collate call, as (wall, cpu) pairs
        self.data: list[tuple[tuple[float, float], tuple[float, float]]] = []

    def timed(self, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.data.append((start, _now()))
        return wrapper

    def instrument(self, datamodule: Any) -> None:
        original = datamodule.train_dataloader

        def train_dataloader() -> Any:
            loader = original()
            dataset = loader.dataset
            getitem = type(dataset).__getitem__
            dataset.__class__ = type(type(dataset).__name__, (type(dataset),),
                                     {"__getitem__": self.timed(getitem)})
            loader.collate_fn = self.timed(loader.collate_fn)
            return loader

        datamodule.train_dataloader = train_dataloader

    def callback(self) -> Any:
        import lightning as L

        timer = self

        class StepTimer(L.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                timer.starts.append(_now())

            def on_train_end(self, *args: Any) -> None:
                timer.starts.append(_now())

        return StepTimer()

    def steps(self, warmup: int, clock: int = 0) -> tuple[list[float], list[float]]:
        """(iteration times, data time inside each iteration) after ``warmup`` iterations, in wall
        time (``clock`` 0) or process CPU time (``clock`` 1)."""
        total, data = [], []
        for a, b in zip(self.starts[warmup:-1], self.starts[warmup + 1:]):
            total.append(b[clock] - a[clock])
            data.append(sum(e[clock] - s[clock] for s, e in self.data if a[0] <= s[0] and e[0] <= b[0]))
        return total, data


def fit_run(method: str, steps: int, warmup: int, *, profile: bool = False) -> dict[str, float]:
    """One ``hdrlab fit`` run; median iteration time, median data time, median iteration - data."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = _cli(method, warmup + steps, Path(tmp) / "run")
        timer = _StepTimer()
        timer.instrument(cli.datamodule)
        cli.trainer.callbacks.append(timer.callback())
        profiler = cProfile.Profile() if profile else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if profiler is not None:
                profiler.enable()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            if profiler is not None:
                profiler.disable()
        total, data = timer.steps(warmup)
        total_cpu, data_cpu = timer.steps(warmup, clock=1)
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
    return {"iteration": median(total), "data": median(data),
            "step": median(t - d for t, d in zip(total, data)), "n": len(total),
            "iteration_cpu": median(total_cpu), "data_cpu": median(data_cpu),
            "step_cpu": median(t - d for t, d in zip(total_cpu, data_cpu))}


def plain_run(method: str, steps: int, warmup: int) -> dict[str, float]:
    """The same steps as a plain PyTorch loop on the batches of the same datamodule (untimed fetch)."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = _cli(method, warmup + steps, Path(tmp) / "run")
        model, datamodule = cli.model, cli.datamodule
        datamodule.setup("fit")
        loader = iter(datamodule.train_dataloader())
        configured = model.configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        model.train()
        times, cpu_times = [], []
        for _ in range(warmup + steps):
            batch = next(loader)  # untimed, right before the step (module docstring)
            start, start_cpu = _now()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = model.compute_loss(batch)
            loss.backward()
            optimizer.step()
            end, end_cpu = _now()
            times.append(end - start)
            cpu_times.append(end_cpu - start_cpu)
    return {"step": median(times[warmup:]), "n": len(times) - warmup, "step_cpu": median(cpu_times[warmup:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped at the start of each run (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each kind (default 5)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--profile", action="store_true", help="cProfile one extra fit run per method")
    parser.add_argument("--json", type=Path, default=None, help="output JSON (default benchmarks/results/lightning_overhead.json)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    torch.set_num_threads(1)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}")
    results: dict[str, Any] = {"benchmark": "lightning_overhead", "machine": machine(),
                               "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
                               "repeats": args.repeats, "goal": "step ratio <= 1.05", "methods": {}}
    for method in args.methods:
        fits, plains = [], []
        for repeat in range(args.repeats):
            if repeat % 2 == 0:
                fits.append(fit_run(method, args.steps, args.warmup))
                plains.append(plain_run(method, args.steps, args.warmup))
            else:
                plains.append(plain_run(method, args.steps, args.warmup))
                fits.append(fit_run(method, args.steps, args.warmup))
        plain = median(p["step"] for p in plains)
        step = median(f["step"] for f in fits)
        iteration = median(f["iteration"] for f in fits)
        plain_cpu = median(p["step_cpu"] for p in plains)
        step_cpu = median(f["step_cpu"] for f in fits)
        entry = {
            "plain_step_s": plain, "fit_step_s": step, "fit_iteration_s": iteration,
            "fit_data_s": median(f["data"] for f in fits),
            "ratio_step": ratio(step, plain), "ratio_with_data": ratio(iteration, plain),
            "plain_step_cpu_s": plain_cpu, "fit_step_cpu_s": step_cpu,
            "ratio_step_cpu": ratio(step_cpu, plain_cpu),
            "runs": {"fit": fits, "plain": plains},
        }
        results["methods"][method] = entry
        print(f"{method:16s} plain {1e3 * plain:7.1f} ms  fit step {1e3 * step:7.1f} ms "
              f"(+ data {1e3 * entry['fit_data_s']:6.1f} ms)  ratio {entry['ratio_step']:.3f}x "
              f"(with data {entry['ratio_with_data']:.3f}x; goal <= 1.05x)  "
              f"CPU time: plain {1e3 * plain_cpu:7.1f} ms  fit step {1e3 * step_cpu:7.1f} ms  "
              f"ratio {entry['ratio_step_cpu']:.3f}x", flush=True)
        if args.profile:
            fit_run(method, args.steps, args.warmup, profile=True)
    path = write_result("lightning_overhead", results) if args.json is None else write_result(
        args.json.stem, results, directory=args.json.parent)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
