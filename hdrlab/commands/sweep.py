"""``hdrlab sweep FILE``: run a W&B sweep file online (W&B agents) or offline (local agent).

Usage::

    hdrlab sweep sweeps/smoke.yaml [--offline] [--workers N] [--count K] [--project P]
                 [--entity E] [--retry_failed] [--sweep_dir DIR] [-- TRIAL_ARG ...]

* Logged in to W&B and ``--offline`` not given: the sweep is created on the server and run by
  the standard agent; other machines join with ``wandb agent ENTITY/PROJECT/ID``.
* Otherwise: :class:`hdrlab.sweep.agent.OfflineSweepAgent` runs it locally in ``--sweep_dir``
  (default ``runs/sweeps/<sweep name>``); re-running the same command after an interruption
  continues the sweep; trial W&B runs are offline (``wandb sync <run_dir>/wandb/offline-run-*``
  uploads them later) and grouped by the sweep id.
* ``-- TRIAL_ARG ...`` (trial overrides): appended to every trial's command line after the
  sweep's own ``command`` (after ``${args}``), so LightningCLI gives them the last word, e.g.
  ``-- --config experiments/overrides/tiny.yaml --max_samples 800`` runs any sweep at CPU scale.
  Offline they are recorded in ``state.json``: a re-run without them (or with the same ones)
  keeps them, one with different ones is refused. Online they are appended to the sweep's
  ``command`` sent to W&B, so every ``wandb agent`` of the sweep gets them. Overrides setting
  ``--run_dir`` / ``--run_id`` / ``--ckpt_path`` or a swept axis of the sweep are refused.
* Offline, relative files in the trial commands (``experiments/x.yaml``) that do not exist
  relative to the current directory are taken from the checkout holding the sweep file's
  ``sweeps/`` folder (or the one holding the hdrlab package), so the command works from any
  directory; online, W&B agents run the command in their own directory: start them from the
  repository root. (:mod:`hdrlab.sweep.overrides`)
* Before the first trial, the command of every grid point (random / bayes: the first suggested
  point) is parsed through hdrlab's CLI parser (:mod:`hdrlab.sweep.check`): a misspelt parameter
  or a bad value fails at once, naming the point and the key, and nothing is written.
  ``--dry_run`` stops after that check and prints the commands.

Exit status: 0 when no trial failed, 1 when some failed (listed), 2 on user errors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import shlex

from hdrlab.checkpoints import check_output_dir
from hdrlab.sweep.agent import OfflineSweepAgent, summarize_state
from hdrlab.sweep.check import check_trial_commands, sweep_points
from hdrlab.sweep.config import load_sweep
from hdrlab.sweep.online import is_logged_in, run_online_sweep
from hdrlab.sweep.overrides import check_overrides, search_roots, split_overrides

OVERRIDES_HELP = """trial overrides:
  -- TRIAL_ARG ...      appended to every trial's command after the sweep's own (after ${args}),
                        so they win over the experiment files and the sweep's fixed values, e.g.
                        -- --config experiments/overrides/tiny.yaml --max_samples 800
                        offline: recorded in <sweep_dir>/state.json; re-running without them
                        keeps them, different ones are refused (use a new --sweep_dir).
                        online: appended to the sweep's command sent to W&B (all agents get them).
                        --run_dir/--run_id/--ckpt_path and swept axes of the sweep are refused.
relative paths:
  offline, experiments/... files of the trial commands that are not found relative to the
  current directory are taken from the checkout holding the sweep file's sweeps/ folder (or the
  hdrlab package), so any directory works; W&B agents (online) need the repository root."""


def build_parser() -> argparse.ArgumentParser:
    """The ``hdrlab sweep`` argument parser."""
    p = argparse.ArgumentParser(
        prog="hdrlab sweep",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s FILE [options] [-- TRIAL_ARG ...]",
        epilog=OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--dry_run", action="store_true",
                   help="check every point's command through the CLI parser and print the commands; run and "
                        "write nothing")
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
    own, overrides = split_overrides(argv)
    args = build_parser().parse_args(own)
    spec = load_sweep(args.file)
    online = not args.offline and not args.dry_run and is_logged_in()
    if online and overrides:
        check_overrides(overrides, spec.raw.get("parameters") or {}, roots=search_roots(spec.path),
                        source=f"sweep file {spec.path}")
    sweep_dir = args.sweep_dir or Path("runs") / "sweeps" / spec.name
    if not online:
        check_output_dir(sweep_dir, option="--sweep_dir")
    agent = OfflineSweepAgent(
        spec,
        sweep_dir=sweep_dir,
        workers=args.workers,
        count=args.count,
        retry_failed=args.retry_failed,
        poll_interval=args.poll_interval,
        project=args.project,
        overrides=overrides,
    )
    # every point's command through the CLI parser before the first trial (a typo fails here)
    parsed = check_trial_commands(spec, agent.trial_argv)
    if args.dry_run:
        for n, point in enumerate(sweep_points(spec), start=1):
            print(f"[sweep] point {n}: {shlex.join(agent.trial_argv(point))}")
        checked = f"{parsed} trainer command(s) parsed" if parsed else "no hdrlab trainer command to parse"
        print(f"[sweep] dry run of {spec.path}: {checked}; nothing was run or written")
        return 0
    if online:
        run_online_sweep(spec, project=args.project, entity=args.entity, count=args.count, workers=args.workers,
                         overrides=overrides or None)
        return 0
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
