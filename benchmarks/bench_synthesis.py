"""Is single-core pair synthesis fast enough to feed a small training loop?

Measures in one run, with ``torch.set_num_threads(1)``:

* synthesis rate (samples/s) of :class:`hdrlab.data.ProceduralHDRDataset` at patch 64 and 256,
  including procedural scene rendering (scene size = patch size), default
  :class:`hdrlab.data.PairSynthesizer` options (mixed CRFs, 8 bits, no noise/JPEG), and the
  same from cached scenes (``cache=True``: rendering done once, later epochs only synthesise);
* the consumption rate of a reference training step: a plain PyTorch loop of a tiny conv
  U-Net (channels 8-16-32, fwd + L1 + bwd + Adam) at batch 2, patch 64;

and reports the ratio synthesis / consumption at patch 64 (target >= 3x: one worker feeds the
loop) and the data-time fraction of a single-process loop (synthesis time / (synthesis +
step time) per batch). Rates use the process CPU time (one thread, so the single-core rate,
robust to other load on the machine); wall-clock rates are in the JSON too. Prints a table;
``--json PATH`` also writes the numbers.

Usage: ``python benchmarks/bench_synthesis.py [--json out.json] [--seconds 5]``
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


def synthesis_rates(patch: int, seconds: float) -> dict[str, float]:
    """Samples/s with scene rendering ("cold": every item renders its scene) and from cached scenes."""
    synth = PairSynthesizer(patch_size=patch)
    cold = ProceduralHDRDataset(num_scenes=1_000_000, height=patch, width=patch, synthesizer=synth)
    cold[0]  # warm-up: imports, CRF sampler
    wall, cpu, n = _timed(lambda i: cold[i + 1], minimum=3, seconds=seconds)
    warm = ProceduralHDRDataset(num_scenes=8, height=patch, width=patch, synthesizer=synth, cache=True)
    for i in range(8):
        warm[i]
    wall_w, cpu_w, n_w = _timed(lambda i: warm[(i % 8, 1 + i // 8)], minimum=3, seconds=seconds / 2)
    return {"wall": wall, "cpu": cpu, "n": n, "cached_wall": wall_w, "cached_cpu": cpu_w, "cached_n": n_w}


def step_rates(seconds: float, *, batch: int = 2, patch: int = 64) -> tuple[float, float, int]:
    """Training steps per second (wall, CPU) of the tiny U-Net (fwd + L1 + bwd + Adam)."""
    torch.manual_seed(0)
    model = TinyUNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.rand(batch, 3, patch, patch), torch.rand(batch, 3, patch, patch)

    def step(_: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = (model(x) - y).abs().mean()
        loss.backward()
        optimizer.step()

    for i in range(3):
        step(i)
    return _timed(step, minimum=5, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per item (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batch, patch = 2, 64

    s64 = synthesis_rates(64, args.seconds)
    s256 = synthesis_rates(256, args.seconds)
    steps_wall, steps_cpu, n_steps = step_rates(args.seconds, batch=batch, patch=patch)
    consumption = steps_cpu * batch
    ratio = s64["cpu"] / consumption
    ratio_cached = s64["cached_cpu"] / consumption
    fraction = (batch / s64["cpu"]) / (batch / s64["cpu"] + 1.0 / steps_cpu)
    fraction_cached = (batch / s64["cached_cpu"]) / (batch / s64["cached_cpu"] + 1.0 / steps_cpu)
    results = {
        "threads": torch.get_num_threads(),
        "clock": "process CPU time (single thread); *_wall = wall clock",
        "synthesis_samples_per_s_patch64": s64["cpu"],
        "synthesis_samples_per_s_patch256": s256["cpu"],
        "synthesis_cached_scenes_samples_per_s_patch64": s64["cached_cpu"],
        "synthesis_cached_scenes_samples_per_s_patch256": s256["cached_cpu"],
        "train_steps_per_s_batch2_patch64": steps_cpu,
        "train_samples_consumed_per_s": consumption,
        "synthesis_over_consumption_patch64": ratio,
        "synthesis_cached_over_consumption_patch64": ratio_cached,
        "data_time_fraction_single_process": fraction,
        "data_time_fraction_single_process_cached": fraction_cached,
        "synthesis_samples_per_s_patch64_wall": s64["wall"],
        "synthesis_samples_per_s_patch256_wall": s256["wall"],
        "train_steps_per_s_wall": steps_wall,
        "tiny_unet_params": sum(p.numel() for p in TinyUNet().parameters()),
        "measured_counts": {"patch64": s64["n"], "patch256": s256["n"], "steps": n_steps},
    }
    rows = [
        ("synthesis incl. rendering, patch 64 (samples/s)", s64["cpu"], s64["cached_cpu"]),
        ("synthesis incl. rendering, patch 256 (samples/s)", s256["cpu"], s256["cached_cpu"]),
        (f"train step B={batch} P={patch}: samples consumed/s", consumption, consumption),
        ("synthesis / consumption at patch 64 (target >= 3)", ratio, ratio_cached),
        ("data-time fraction, one process (%)", 100 * fraction, 100 * fraction_cached),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'single core, CPU-time rates':<{width}}  {'rendered':>9}  {'cached':>9}")
    for name, value, cached in rows:
        print(f"{name:<{width}}  {value:9.2f}  {cached:9.2f}")
    print("(cached = scenes rendered once, ProceduralHDRDataset(cache=True); wall-clock rates in the JSON)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
