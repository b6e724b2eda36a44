"""A stand-in trial program for the offline sweep agent's tests (no torch, starts in ~50 ms).

It behaves like ``hdrlab fit`` as far as the agent can tell: it takes W&B-style ``--key=value``
(or ``--key value``) parameters plus ``--run_dir DIR`` and ``--ckpt_path=FILE``, applied in order
like LightningCLI (the last one wins); ``--config FILE`` / ``--config=FILE`` applies the YAML
mapping of FILE at that position, and ``--config={'config': 'FILE', ...}`` (a W&B rendered mapping)
FILE then the other keys; a config file that does not exist relative to the current directory
fails the trial with exit code 4, as LightningCLI would. It writes its argv, cwd and parsed
parameters to ``argv.json``, trains ``--epochs`` fake epochs of ``--sleep`` seconds, writes a
Lightning-``CSVLogger``-shaped ``metrics.csv`` (columns ``epoch``, ``step``, ``train/loss``,
``val/score``; train rows leave ``val/score`` blank), a fake ``checkpoints/last.ckpt`` after
every epoch (atomically) and ``summary.json`` on success.
Given ``--ckpt_path`` it resumes after the checkpoint's epoch.

Metric: ``val/score = quality * (epoch + 1) + x + 10 * y`` (parameters default to 0, quality 1).

Environment:
    STUB_LEDGER: file to which one line per event is appended: ``<trial> start <launch info>``
        and ``<trial> completed`` (the kill-and-resume test counts these).
    STUB_CRASH: comma-separated trial ids (``HDRLAB_TRIAL_ID``) that crash with exit code 3
        after printing a traceback-like message.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import sys
import time
from pathlib import Path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _ledger(line: str) -> None:
    ledger = os.environ.get("STUB_LEDGER")
    if ledger:
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _apply_config(params: dict[str, str], value: str) -> None:
    import yaml

    if value.startswith("{"):
        mapping = ast.literal_eval(value)
        if "config" in mapping:
            _apply_config(params, mapping["config"])
        params.update({k: str(v) for k, v in mapping.items() if k != "config"})
        return
    path = Path(value)
    if not path.is_file():
        print(f"stub_trial: config file {value} not found (cwd {Path.cwd()})", flush=True)
        raise SystemExit(4)
    params.update({k: str(v) for k, v in (yaml.safe_load(path.read_text()) or {}).items()})


def parse(argv: list[str]) -> tuple[dict[str, str], Path, Path | None]:
    params: dict[str, str] = {}
    run_dir: Path | None = None
    ckpt: Path | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--run_dir":
            run_dir = Path(argv[i + 1])
            i += 2
            continue
        if arg == "--config":
            _apply_config(params, argv[i + 1])
            i += 2
            continue
        if arg.startswith("--ckpt_path="):
            ckpt = Path(arg.split("=", 1)[1])
        elif arg.startswith("--config="):
            _apply_config(params, arg.split("=", 1)[1])
        elif arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            params[key] = value
        elif arg.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            params[arg[2:]] = argv[i + 1]
            i += 2
            continue
        i += 1
    if run_dir is None:
        raise SystemExit("stub_trial: --run_dir is required")
    return params, run_dir, ckpt


def main(argv: list[str]) -> int:
    params, run_dir, ckpt = parse(argv)
    trial = os.environ.get("HDRLAB_TRIAL_ID", run_dir.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / "argv.json", json.dumps({"argv": argv, "cwd": os.getcwd(), "params": params}))
    epochs = int(params.get("epochs", 3))
    sleep = float(params.get("sleep", 0.1))
    quality = float(params.get("quality", 1.0))
    x = float(params.get("x", 0.0))
    y = float(params.get("y", 0.0))
    start = 0
    if ckpt is not None:
        start = json.loads(ckpt.read_text())["epoch"]
    _ledger(f"{trial} start epoch={start} ckpt={ckpt is not None} threads={os.environ.get('HDRLAB_TORCH_THREADS')}")
    _atomic_write(
        run_dir / "env.json",
        json.dumps({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "HDRLAB_TORCH_THREADS", "WANDB_MODE", "WANDB_RUN_GROUP", "WANDB_SWEEP_ID", "WANDB_PROJECT")}),
    )
    print(f"stub trial {trial}: params={params} start_epoch={start}", flush=True)
    if trial in os.environ.get("STUB_CRASH", "").split(","):
        print("Traceback (most recent call last):\n  File \"stub_trial.py\", line 1\nRuntimeError: stub crash on purpose", flush=True)
        return 3

    rows: list[dict[str, str]] = []
    metrics = run_dir / "metrics.csv"
    if ckpt is not None and metrics.exists():
        with metrics.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < start]
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    score = quality * epochs + x + 10 * y
    for epoch in range(start, epochs):
        time.sleep(sleep)
        score = quality * (epoch + 1) + x + 10 * y
        rows.append({"epoch": str(epoch), "step": str(epoch * 2 + 1), "train/loss": f"{1.0 / (epoch + 1):.4f}", "val/score": ""})
        rows.append({"epoch": str(epoch), "step": str(epoch * 2 + 1), "train/loss": "", "val/score": f"{score:.6f}"})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["epoch", "step", "train/loss", "val/score"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(metrics, buf.getvalue())
        _atomic_write(run_dir / "checkpoints" / "last.ckpt", json.dumps({"epoch": epoch + 1}))
        print(f"epoch {epoch}: val/score={score}", flush=True)
    _atomic_write(run_dir / "summary.json", json.dumps({"val/score": score, "epochs": epochs}))
    _ledger(f"{trial} completed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
