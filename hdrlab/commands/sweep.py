"""``hdrlab sweep FILE``: run a W&B sweep file online (W&B agents) or offline (local agent).

Usage::

    hdrlab sweep sweeps/smoke.yaml [--offline] [--workers N] [--count K] [--project P]
                 [--entity E] [--retry_failed] [--sweep_dir DIR]

* Logged in to W&B and ``--offline`` not given: the sweep is created on the server and run by
  the standard agent; other machines join with ``wandb agent ENTITY/PROJECT/ID``.
* Otherwise: :class:`hdrlab.sweep.agent.OfflineSweepAgent` runs it locally in ``--sweep_dir``
  (default ``runs/sweeps/<sweep name>``); re-running the same command after an interruption
  continues the sweep; trial W&B runs are offline (``wandb sync <run_dir>/wandb/offline-run-*``
  uploads them later) and grouped by the sweep id.

Exit status: 0 when no trial failed, 1 when some failed (listed), 2 on user errors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hdrlab.sweep.agent import OfflineSweepAgent, summarize_state
from hdrlab.sweep.config import load_sweep
from hdrlab.sweep.online import is_logged_in, run_online_sweep


def build_parser() -> argparse.ArgumentParser:
    """The ``hdrlab sweep`` argument parser."""
    p = argparse.ArgumentParser(prog="hdrlab sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path, help="W&B sweep YAML (e.g. sweeps/smoke.yaml)")
    p.add_argument("--offline", action="store_true", help="use the local agent even when logged in to W&B")
    p.add_argument("--workers", type=int, default=1, help="trials run concurrently (torch threads = cores // workers)")
    p.add_argument(
        "--count",
        type=int,
        default=None,
        help="cap on trials (offline: total in the sweep dir across re-runs; online: per W&B agent)",
    )
    p.add_argument("--project", default="hdrlab", help="W&B project (online sweep; offline: WANDB_PROJECT of the trials)")
    p.add_argument("--entity", default=None, help="W&B entity (online sweeps; default: your default entity)")
    p.add_argument("--retry_failed", action="store_true", help="offline: re-run trials that crashed")
    p.add_argument("--sweep_dir", type=Path, default=None, help="offline: state and trial folders (default runs/sweeps/<name>)")
    p.add_argument("--poll_interval", type=float, default=0.5, help="offline: seconds between trial checks")
    return p


def format_trials_table(state: dict) -> str:
    """A Markdown table of the trials: id, state, launches, parameters, metric."""
    metric = (state.get("metric") or {}).get("name", "metric")
    lines = [f"| trial | state | launches | parameters | {metric} |", "|---|---|---|---|---|"]
    for t in state["trials"]:
        params = ", ".join(f"{k}={v}" for k, v in t["params"].items())
        value = t.get("metric")
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        lines.append(f"| {t['id']} | {t['state']} | {t['launches']} | {params} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run ``hdrlab sweep``; returns the exit status."""
    args = build_parser().parse_args(argv)
    spec = load_sweep(args.file)
    if not args.offline and is_logged_in():
        run_online_sweep(spec, project=args.project, entity=args.entity, count=args.count, workers=args.workers)
        return 0
    sweep_dir = args.sweep_dir or Path("runs") / "sweeps" / spec.name
    agent = OfflineSweepAgent(
        spec,
        sweep_dir=sweep_dir,
        workers=args.workers,
        count=args.count,
        retry_failed=args.retry_failed,
        poll_interval=args.poll_interval,
        project=args.project,
    )
    try:
        state = agent.run()
    except KeyboardInterrupt:
        print(f"[sweep] interrupted; its trials were stopped. Re-run the same command to continue ({sweep_dir}).")
        return 130
    summary = summarize_state(state)
    print(format_trials_table(state))
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    print(f"[sweep] {state['sweep_id']}: {counts}; state: {agent.state_path}")
    if summary["best"] is not None:
        best = summary["best"]
        print(f"[sweep] best ({summary['goal']} {summary['metric']}): {best['id']} = {best['metric']:.6g} {json.dumps(best['params'])}")
    failed = [t for t in state["trials"] if t["state"] == "failed"]
    if failed:
        print(f"[sweep] {len(failed)} trial(s) failed: {', '.join(t['id'] for t in failed)}; re-run with --retry_failed")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    from hdrlab.errors import HDRLabError

    try:
        raise SystemExit(main(sys.argv[1:]))
    except HDRLabError as err:
        print(f"hdrlab sweep: error: {err}", file=sys.stderr)
        raise SystemExit(2)
