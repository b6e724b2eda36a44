"""Share of a TwoStage training step spent inside its classical merger (forward + backward).

For ``experiments/le2023_debevec.yaml`` (known CRF, as shipped, and with ``crf: recover``) and
``experiments/le2023_mertens.yaml`` at
``experiments/overrides/tiny.yaml`` (width 1/8, 64 px patches, batch 2), one thread: the model and
datamodule are built by hdrlab's CLI path, as in ``benchmarks/bench_data.py``
(``hdrlab.cli.build_cli([--config <experiment> --config tiny.yaml, ...], run=False)``), and
``--steps`` training steps (``zero_grad``, ``method.compute_loss``, ``backward``, optimizer step)
are timed on batches collected from the training loader, after one warm-up step.

The merger's share of a step is measured by wrapping ``model.merger.forward``:

* **forward**: wall time of the wrapped call;
* **backward** (differentiable mergers, when the stack's images need gradients): from the moment
  autograd delivers the gradient of the merger's output (a tensor hook on the output) to the moment
  the gradient of its input images is complete (a tensor hook on ``stack.images``). Autograd runs
  the merger's backward nodes in that window on the backward thread; the rest of the step's graph
  (the generator) only starts once the images' gradient exists, so the window is the merger's.

``share = (merger forward + merger backward) / step``, medians over the steps (per-step shares,
median). Reports the absolute times too.

Usage: ``python benchmarks/bench_two_stage_merge.py [--steps 5] [--methods le2023_debevec le2023_debevec_recover le2023_mertens] [--json PATH]``
(no file is written without ``--json``).
"""

from __future__ import annotations

import argparse
import json
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
from common import machine, median  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = "experiments/overrides/tiny.yaml"
#: measured cases: name -> (experiment stem, extra CLI arguments). The shipped Debevec experiment
#: merges with the known CRF; ``le2023_debevec_recover`` is the same run with the response recovered
#: from every generated stack (``crf: recover``: a least-squares solve per batch element)
CASES: dict[str, tuple[str, list[str]]] = {
    "le2023_debevec": ("le2023_debevec", []),
    "le2023_debevec_recover": ("le2023_debevec", ["--model.init_args.merger.init_args.crf", "recover"]),
    "le2023_mertens": ("le2023_mertens", []),
}


class MergerTimer:
    """Wraps ``merger.forward`` and accumulates its forward and backward wall time per step."""

    def __init__(self, merger: torch.nn.Module) -> None:
        self.merger = merger
        self.inner = merger.forward
        self.forward_s = 0.0
        self.backward_s = 0.0
        self._grad_start: float | None = None
        merger.forward = self  # an instance attribute: nn.Module.__call__ finds it first

    def reset(self) -> None:
        self.forward_s = self.backward_s = 0.0
        self._grad_start = None

    def __call__(self, stack, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner(stack, *args, **kwargs)
        self.forward_s += time.perf_counter() - start
        if out.requires_grad and stack.images.requires_grad:
            out.register_hook(self._output_grad)
            stack.images.register_hook(self._input_grad)
        return out

    def _output_grad(self, grad: torch.Tensor) -> None:
        self._grad_start = time.perf_counter()

    def _input_grad(self, grad: torch.Tensor) -> None:
        if self._grad_start is not None:
            self.backward_s += time.perf_counter() - self._grad_start
            self._grad_start = None


def measure(config: Path, steps: int, extra: list[str] | None = None) -> dict[str, Any]:
    """Step time and merger forward/backward time (s, medians) of one experiment at the tiny override."""
    from hdrlab.cli import build_cli

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = build_cli(["--config", str(config.relative_to(ROOT)), "--config", TINY, "--wandb", "disabled",
                         "--run_dir", str(Path(tmp) / "run"),
                         "--data.init_args.num_train_scenes", str(2 * (steps + 1) + 2), *(extra or [])],
                        run=False)
        model, datamodule = cli.model, cli.datamodule
        datamodule.setup("fit")
        batches = []
        for batch in datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == steps + 1:
                break
        timer = MergerTimer(model.merger)
        optimizer = model.build_optimizer(model.trainable_parameters())
        model.train()
        step_s, fwd_s, bwd_s, shares = [], [], [], []
        for i, batch in enumerate(batches):
            timer.reset()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss, _ = model.compute_loss(batch)
            loss.backward()
            optimizer.step()
            elapsed = time.perf_counter() - start
            if i == 0:
                continue  # warm-up
            step_s.append(elapsed)
            fwd_s.append(timer.forward_s)
            bwd_s.append(timer.backward_s)
            shares.append((timer.forward_s + timer.backward_s) / elapsed)
    return {"merger": type(model.merger).__name__, "merger_differentiable": bool(model.merger.differentiable),
            "batch": int(batches[0]["ldr"].shape[0]), "step_s": median(step_s),
            "merger_forward_s": median(fwd_s), "merger_backward_s": median(bwd_s), "share": median(shares)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per method (default 5)")
    parser.add_argument("--methods", nargs="*", default=list(CASES), help=f"cases (default: {' '.join(CASES)})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    torch.set_num_threads(1)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results: dict[str, Any] = {"benchmark": "two_stage_merge", "machine": machine(),
                               "threads": torch.get_num_threads(), "steps": args.steps, "methods": {}}
    for name in args.methods:
        stem, extra = CASES[name]
        entry = measure(ROOT / "experiments" / f"{stem}.yaml", args.steps, extra)
        results["methods"][name] = entry
        print(f"{name:24s} step {entry['step_s'] * 1e3:8.1f} ms  merger fwd {entry['merger_forward_s'] * 1e3:7.1f} ms"
              f"  bwd {entry['merger_backward_s'] * 1e3:7.1f} ms  share {100 * entry['share']:5.1f} %", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
