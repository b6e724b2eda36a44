"""FLOP utilisation of each shipped method's training step on this CPU, against its fp32 GEMM rate.

For every experiment in ``experiments/*.yaml`` that builds a method, at width 1/8 and batch 2 of
64x64 patches (``method.example_batch``), one thread (``torch.set_num_threads(1)``):

* **FLOPs of one training step**: ``torch.utils.flop_counter.FlopCounterMode`` around one real
  step (``method.compute_loss`` forward + ``backward``; the optimizer step is elementwise and not
  counted). The share of convolution FLOPs (forward and backward) is recorded; a method is
  "convolution-heavy" when it is >= 80 %.
* **step time**: median wall time of ``--steps`` steps (zero_grad, compute_loss, backward, the
  method's optimizer step) after one warm-up step, for three variants: ``fp32`` (as configured),
  ``channels_last`` (model and 4-D input tensors in ``torch.channels_last``) and ``bf16``
  (``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and loss). The FLOP count is
  the fp32 one for all three.
* **reference rate**: fp32 GEMM FLOP/s of ``torch.mm`` on 1024x1024 and 2048x2048 matrices (median
  of ``--gemm_repeats`` calls after a warm-up, the higher of the two), measured in the same run.

Utilisation = (step FLOPs / step time) / GEMM FLOP/s. Goal: >= 50 % for convolution-heavy methods.

Width 1/8 is what the tests and the demo train at; its convolutions have 4-16 channels and are
bound by per-operator overhead, not arithmetic. Each method is therefore also measured at the
widest CPU-sized width: the largest of 1, 1/2 and 1/4 whose step (estimated from the width-1/8
count, FLOPs ~ width^2) stays within ``--wide_cap`` FLOPs (default 4e10, about a second per step
here); methods already above the cap at 1/8 are measured at 1/8 only.
Knobs: ``--steps`` (default 3), ``--methods`` (experiment stems), ``--variants``. About 2-3 minutes
on 2 cores with the defaults.

Usage: ``python benchmarks/bench_flops.py [--steps 3] [--methods singlehdr cfnet] [--json PATH]``
Writes ``benchmarks/results/flops.json`` by default.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, ratio, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WIDTH, PATCH, BATCH = 0.125, 64, 2
VARIANTS = ("fp32", "channels_last", "bf16")
#: candidate widths of the wide measurement, widest first
WIDE_WIDTHS = (1.0, 0.5, 0.25)


def gemm_flops_per_s(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 10) -> float:
    """fp32 FLOP/s of ``torch.mm`` on ``n x n`` matrices (2 n^3 FLOPs per call, median time of
    ``repeats`` calls after a warm-up), the highest over ``sizes``: the machine's GEMM rate."""
    rates = []
    for size in sizes:
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(size, size, generator=g), torch.rand(size, size, generator=g)
        torch.mm(a, b)
        times = []
        for _ in range(repeats if size <= 1024 else max(3, repeats // 3)):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        rates.append(2 * size**3 / median(times))
    return max(rates)


def wide_width(tiny_flops: float, cap: float) -> float | None:
    """The widest of :data:`WIDE_WIDTHS` whose step FLOPs, estimated as ``tiny_flops (width / WIDTH)^2``,
    stay within ``cap``; ``None`` when none does."""
    for width in WIDE_WIDTHS:
        if tiny_flops * (width / WIDTH) ** 2 <= cap:
            return width
    return None


def _build(config: Path, width: float = WIDTH) -> Any:
    from hdrlab.commands.info import load_experiment_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = load_experiment_model([str(config)], width=width, pretrained_trunks=False)
    method.train()
    return method


def _batch(method: Any, channels_last: bool) -> dict[str, Any]:
    batch = method.example_batch(batch_size=BATCH, height=PATCH, width=PATCH)
    if channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) and v.dim() == 4
                 else v for k, v in batch.items()}
    return batch


def _step(method: Any, optimizer: torch.optim.Optimizer, batch: dict[str, Any], bf16: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        loss, _ = method.compute_loss(batch)
    loss.float().backward()
    optimizer.step()


def count_step_flops(method: Any) -> tuple[int, float]:
    """(FLOPs of forward + backward of one step, share of convolution FLOPs)."""
    batch = _batch(method, False)
    method.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        loss, _ = method.compute_loss(batch)
        loss.backward()
    method.zero_grad(set_to_none=True)
    total = int(counter.get_total_flops())
    conv = sum(v for op, v in counter.get_flop_counts().get("Global", {}).items() if "convolution" in str(op))
    return total, ratio(conv, total)


def step_time(method: Any, variant: str, steps: int) -> float:
    """Median wall time of ``steps`` training steps of ``variant`` after one warm-up step."""
    if variant == "channels_last":
        method.to(memory_format=torch.channels_last)
    optimizer = method.build_optimizer(method.trainable_parameters())
    batch = _batch(method, variant == "channels_last")
    _step(method, optimizer, batch, variant == "bf16")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _step(method, optimizer, batch, variant == "bf16")
        times.append(time.perf_counter() - start)
    if variant == "channels_last":
        method.to(memory_format=torch.contiguous_format)
    return median(times)


def _time_variants(entry: dict[str, Any], method: Any, flops: int, gemm: float, variants: list[str], steps: int) -> None:
    """Fill ``entry["step_s"]`` and ``entry["utilisation"]`` per variant (``variant_errors`` for the
    variants the method does not support)."""
    for variant in variants:
        try:
            seconds = step_time(method, variant, steps)
        except Exception as err:  # a variant the method does not support
            entry.setdefault("variant_errors", {})[variant] = f"{type(err).__name__}: {err}"[:200]
            continue
        entry["step_s"][variant] = seconds
        entry["utilisation"][variant] = ratio(flops / seconds, gemm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (default 3)")
    parser.add_argument("--gemm_repeats", type=int, default=10)
    parser.add_argument("--methods", nargs="*", default=None, help="experiment stems (default: every experiment)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--wide_cap", type=float, default=4e10,
                        help="FLOPs per step of the wide measurement at most (default 4e10; 0: no wide measurement)")
    parser.add_argument("--json", type=Path, default=None, help="output JSON (default benchmarks/results/flops.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    configs = sorted((ROOT / "experiments").glob("*.yaml"))
    if args.methods:
        configs = [c for c in configs if c.stem in args.methods]
    gemm = gemm_flops_per_s(repeats=args.gemm_repeats)
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}; "
          f"fp32 GEMM (torch.mm): {gemm / 1e9:.1f} GFLOP/s")
    results: dict[str, Any] = {"benchmark": "flops", "machine": machine(), "threads": torch.get_num_threads(),
                               "width": WIDTH, "patch": PATCH, "batch": BATCH, "steps": args.steps,
                               "gemm_flops_per_s": gemm, "goal": "utilisation >= 50% (convolution-heavy)",
                               "methods": {}, "failed": {}}
    for config in configs:
        name = config.stem
        try:
            torch.manual_seed(0)
            method = _build(config)
            flops, conv_share = count_step_flops(method)
            entry: dict[str, Any] = {"step_flops": flops, "conv_share": conv_share, "conv_heavy": conv_share >= 0.8,
                                     "step_s": {}, "utilisation": {}}
            _time_variants(entry, method, flops, gemm, args.variants, args.steps)
            results["methods"][name] = entry
            shown = "  ".join(f"{v} {100 * u:5.1f}%" for v, u in entry["utilisation"].items())
            print(f"{name:22s} {flops / 1e9:7.2f} GFLOP/step  conv {100 * conv_share:5.1f}%  {shown}", flush=True)
            width = wide_width(flops, args.wide_cap) if args.wide_cap > 0 else None
            if width is not None:
                del method
                torch.manual_seed(0)
                method = _build(config, width)
                wide_flops, _ = count_step_flops(method)
                wide: dict[str, Any] = {"width": width, "step_flops": wide_flops, "step_s": {}, "utilisation": {}}
                _time_variants(wide, method, wide_flops, gemm, args.variants, args.steps)
                entry["wide"] = wide
                shown = "  ".join(f"{v} {100 * u:5.1f}%" for v, u in wide["utilisation"].items())
                print(f"{'':22s} {wide_flops / 1e9:7.2f} GFLOP/step at width {width:g}: {shown}", flush=True)
        except Exception as err:
            results["failed"][name] = f"{type(err).__name__}: {err}"[:300]
            print(f"{name:22s} skipped: {results['failed'][name]}", flush=True)
            if "--debug" in sys.argv:
                traceback.print_exc()
    path = write_result("flops", results) if args.json is None else write_result(
        args.json.stem, results, directory=args.json.parent)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
