"""Is single-core pair synthesis fast enough to feed the project's tiny training setting?

Measures in one run, single-threaded (``torch.set_num_threads(1)``):

* synthesis rate (samples/s) of :class:`hdrlab.data.ProceduralHDRDataset` at patch 64 and 256
  (scene size = patch size, default :class:`hdrlab.data.PairSynthesizer` options: mixed CRFs,
  8 bits, no noise/JPEG) under two scene-cache policies:

  - ``cache off`` (``cache=False``): every item renders its procedural scene;
  - ``default`` (``cache="auto"``, the :class:`ProceduralDataModule` default): the train set is a
    fixed set of scenes, rendered lazily on first use and kept (exact: the same items). Its first
    epoch costs the same as ``cache off``; the rate reported is the steady state from the second
    epoch on (scenes cached, only the synthesis runs);

* the consumption rate of two reference training steps at batch 2, patch 64, each a plain
  PyTorch loop of forward + L1 loss + backward + Adam:

  - the project's real tiny setting: ``hdrlab.models.direct.SingleHDRNet(width=0.125)``, L1 on its
    ``hdr`` output;
  - a tiny conv U-Net (channels 8-16-32), a much cheaper lower bound on the step time;

and reports, per policy and reference, the ratio synthesis rate / consumption rate (requirement:
>= 3, i.e. one worker feeds the loop with margin) and the data-time fraction of a single-process
loop (synthesis time / (synthesis + step time) per batch; requirement alternative: <= 10 %).
Rates use the process CPU time (one thread, so the single-core rate, robust to other load on
the machine); wall-clock rates are in the JSON too. Prints a table; ``--json PATH`` also writes
the numbers. About 40-60 s with the default ``--seconds 4``.

Usage: ``python benchmarks/bench_synthesis.py [--json out.json] [--seconds 4]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from hdrlab.data.datasets import ProceduralHDRDataset
from hdrlab.data.synthesis import PairSynthesizer
from hdrlab.models.direct import SingleHDRNet


class TinyUNet(nn.Module):
    """Two-level conv U-Net, widths 8-16-32 (3x3 convs, ReLU, avg-pool down, bilinear up)."""

    def __init__(self, *, widths: tuple[int, int, int] = (8, 16, 32)) -> None:
        super().__init__()
        a, b, c = widths

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())

        self.enc1, self.enc2, self.mid = block(3, a), block(a, b), block(b, c)
        self.dec2, self.dec1 = block(c + b, b), block(b + a, a)
        self.head = nn.Conv2d(a, 3, 1)
        self.down = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.down(e1))
        m = self.mid(self.down(e2))
        d2 = self.dec2(torch.cat([self.up(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return x + self.head(d1)


def _timed(fn, *, minimum: int, seconds: float) -> tuple[float, float, int]:
    """Run ``fn(i)`` for at least ``minimum`` calls and ``seconds`` of wall time.

    Returns:
        ``(calls per wall second, calls per CPU second of this process, calls)``. With one
        thread the CPU-time rate is the single-core rate, unaffected by other processes.
    """
    count, wall, cpu = 0, time.perf_counter(), time.process_time()
    while count < minimum or time.perf_counter() - wall < seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu), count


def synthesis_rates(patch: int, seconds: float, *, cached_scenes: int = 16) -> dict[str, float]:
    """Samples/s with the scene cache off (every item renders) and under the default policy (steady state)."""
    synth = PairSynthesizer(patch_size=patch)
    cold = ProceduralHDRDataset(num_scenes=1_000_000, height=patch, width=patch, synthesizer=synth, cache=False)
    cold[0]  # warm-up: imports, CRF sampler
    wall, cpu, n = _timed(lambda i: cold[i + 1], minimum=3, seconds=seconds)
    default = ProceduralHDRDataset(num_scenes=cached_scenes, height=patch, width=patch, synthesizer=synth)
    if not default.cache:
        raise RuntimeError("the default scene-cache policy should cache this small dataset")
    for i in range(cached_scenes):  # epoch 0: lazy rendering fills the cache
        default[i]
    wall_w, cpu_w, n_w = _timed(
        lambda i: default[(i % cached_scenes, 1 + i // cached_scenes)], minimum=3, seconds=seconds / 2
    )
    return {"wall": wall, "cpu": cpu, "n": n, "cached_wall": wall_w, "cached_cpu": cpu_w, "cached_n": n_w}


def step_rates(model: nn.Module, output: str | None, seconds: float, *, batch: int = 2, patch: int = 64) -> tuple[float, float, int]:
    """Training steps per second (wall, CPU) of ``model`` (fwd + L1 + bwd + Adam); ``output`` = dict key or None."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(batch, 3, patch, patch, generator=generator), torch.rand(batch, 3, patch, patch, generator=generator)

    def step(_: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        prediction = model(x) if output is None else model(x)[output]
        loss = (prediction - y).abs().mean()
        loss.backward()
        optimizer.step()

    for i in range(3):
        step(i)
    return _timed(step, minimum=5, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per item (default 4)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batch, patch = 2, 64

    s64 = synthesis_rates(64, args.seconds)
    s256 = synthesis_rates(256, args.seconds)
    torch.manual_seed(0)
    singlehdr = SingleHDRNet(width=0.125)
    steps = {
        "singlehdr_w0.125": step_rates(singlehdr, "hdr", args.seconds, batch=batch, patch=patch),
        "tiny_unet": step_rates(TinyUNet(), None, args.seconds, batch=batch, patch=patch),
    }
    results: dict[str, object] = {
        "threads": torch.get_num_threads(),
        "clock": "process CPU time (single thread); *_wall = wall clock",
        "synthesis_samples_per_s": {
            "patch64_cache_off": s64["cpu"],
            "patch64_default_cached": s64["cached_cpu"],
            "patch256_cache_off": s256["cpu"],
            "patch256_default_cached": s256["cached_cpu"],
        },
        "synthesis_samples_per_s_wall": {
            "patch64_cache_off": s64["wall"],
            "patch64_default_cached": s64["cached_wall"],
            "patch256_cache_off": s256["wall"],
            "patch256_default_cached": s256["cached_wall"],
        },
        "params": {"singlehdr_w0.125": sum(p.numel() for p in singlehdr.parameters()),
                   "tiny_unet": sum(p.numel() for p in TinyUNet().parameters())},
        "measured_counts": {"patch64": s64["n"], "patch64_cached": s64["cached_n"], "patch256": s256["n"],
                            "patch256_cached": s256["cached_n"]},
        "references": {},
    }
    rows = []
    for name, (wall, cpu, count) in steps.items():
        consumption = cpu * batch
        entry = {"train_steps_per_s": cpu, "train_steps_per_s_wall": wall, "steps_measured": count,
                 "samples_consumed_per_s": consumption}
        for policy, rate in (("cache_off", s64["cpu"]), ("default", s64["cached_cpu"])):
            entry[f"synthesis_over_consumption_{policy}"] = rate / consumption
            entry[f"data_time_fraction_{policy}"] = (batch / rate) / (batch / rate + 1.0 / cpu)
        results["references"][name] = entry  # type: ignore[index]
        rows.append((name, consumption, entry))
    width = 50
    print(f"{'single core, CPU-time rates, patch 64, batch 2':<{width}}  {'cache off':>9}  {'default':>9}")
    print(f"{'synthesis samples/s (patch 64)':<{width}}  {s64['cpu']:9.1f}  {s64['cached_cpu']:9.1f}")
    print(f"{'synthesis samples/s (patch 256)':<{width}}  {s256['cpu']:9.1f}  {s256['cached_cpu']:9.1f}")
    for name, consumption, entry in rows:
        print(f"{name + f': samples consumed/s = {consumption:.1f}':<{width}}")
        print(f"{'  synthesis / consumption (target >= 3)':<{width}}  {entry['synthesis_over_consumption_cache_off']:9.2f}"
              f"  {entry['synthesis_over_consumption_default']:9.2f}")
        print(f"{'  data-time fraction, one process (%)':<{width}}  {100 * entry['data_time_fraction_cache_off']:9.1f}"
              f"  {100 * entry['data_time_fraction_default']:9.1f}")
    print("(default = ProceduralHDRDataset(cache='auto'), steady state from epoch 2; its first epoch runs at the "
          "cache-off rate; wall-clock rates in the JSON)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
