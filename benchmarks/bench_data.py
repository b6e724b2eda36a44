"""Data synthesis rate over training consumption rate, per method, at the tiny override.

bench_synthesis.py measures the procedural dataset alone against reference steps; this benchmark
measures each method's own pipeline. For every trainable experiment in ``experiments/*.yaml``
with ``experiments/overrides/tiny.yaml`` (width 1/8, patch 64, batch 2), one thread:

* the trainer-free model and datamodule are built by hdrlab's CLI path
  (``hdrlab.cli.build_cli([--config <experiment> --config tiny.yaml, --run_dir <temp>], run=False)``);
* **synthesis rate**: samples/s of the datamodule's training dataset (``train_dataloader().dataset``,
  ``__getitem__`` of ``--samples`` items after one warm-up item, in the first epoch: every item
  renders its scene and synthesises its pair or bracket, the worst case of the scene cache), and
  the same items again (**cached**: later epochs, scenes from the dataset's scene cache, the
  synthesis of the pair or bracket redone);
* **consumption rate**: samples/s of the method's training step (``zero_grad``,
  ``method.compute_loss``, ``backward``, optimizer step) on ``--steps`` batches collected from the
  same loader, after one warm-up step: batch size / median step time.

Ratio = synthesis / consumption (goal >= 5: one data worker feeds the step with margin), for the
first epoch and for the cached epochs.
Knobs: ``--samples`` (default 8), ``--steps`` (default 3), ``--methods`` (experiment stems).
About 2-3 minutes on 2 cores.

Usage: ``python benchmarks/bench_data.py [--samples 8] [--steps 3] [--methods singlehdr cfnet] [--json PATH]``
Writes ``benchmarks/results/data.json`` by default.
"""

from __future__ import annotations

import argparse
import os
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


def measure(config: Path, samples: int, steps: int) -> dict[str, Any]:
    """Synthesis and consumption rates (samples/s) of one experiment at the tiny override."""
    from hdrlab.cli import build_cli

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = build_cli(["--config", str(config.relative_to(ROOT)), "--config", TINY, "--wandb", "disabled",
                         "--run_dir", str(Path(tmp) / "run"),
                         "--data.init_args.num_train_scenes", str(max(samples + 1, 2 * (steps + 1)) + 2)],
                        run=False)
        model, datamodule = cli.model, cli.datamodule
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        dataset = loader.dataset
        dataset[0]  # warm-up
        start = time.perf_counter()
        for i in range(1, samples + 1):
            dataset[i]
        synthesis = samples / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(1, samples + 1):  # the same items again: scenes from the dataset's scene cache
            dataset[i]
        synthesis_cached = samples / (time.perf_counter() - start)
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == steps + 1:
                break
        optimizer = model.build_optimizer(model.trainable_parameters())
        model.train()
        times = []
        for batch in batches:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = model.compute_loss(batch)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        batch_size = int(batches[0]["ldr"].shape[0])
        consumption = batch_size / median(times[1:])
    return {"synthesis_samples_per_s": synthesis, "synthesis_cached_samples_per_s": synthesis_cached,
            "scene_cache": bool(getattr(dataset, "cache", False)),
            "consumption_samples_per_s": consumption, "batch": batch_size, "ratio": ratio(synthesis, consumption),
            "ratio_cached": ratio(synthesis_cached, consumption)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8, help="timed dataset items per method (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per method (default 3)")
    parser.add_argument("--methods", nargs="*", default=None, help="experiment stems (default: every experiment)")
    parser.add_argument("--json", type=Path, default=None, help="output JSON (default benchmarks/results/data.json)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    torch.set_num_threads(1)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}")
    configs = sorted((ROOT / "experiments").glob("*.yaml"))
    if args.methods:
        configs = [c for c in configs if c.stem in args.methods]
    results: dict[str, Any] = {"benchmark": "data", "machine": machine(), "threads": torch.get_num_threads(),
                               "samples": args.samples, "steps": args.steps,
                               "goal": "synthesis / consumption >= 5", "methods": {}, "failed": {}}
    for config in configs:
        try:
            entry = measure(config, args.samples, args.steps)
        except Exception as err:
            results["failed"][config.stem] = f"{type(err).__name__}: {err}"[:300]
            print(f"{config.stem:22s} skipped: {results['failed'][config.stem]}", flush=True)
            continue
        results["methods"][config.stem] = entry
        print(f"{config.stem:22s} synthesis {entry['synthesis_samples_per_s']:7.1f}/s  consumption "
              f"{entry['consumption_samples_per_s']:7.1f}/s  ratio {entry['ratio']:6.2f}x, scenes cached "
              f"{entry['ratio_cached']:6.2f}x (goal >= 5x)", flush=True)
    path = write_result("data", results) if args.json is None else write_result(
        args.json.stem, results, directory=args.json.parent)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
