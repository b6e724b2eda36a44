"""The online path: a real W&B sweep, run by standard W&B agents.

When logged in to W&B (and ``--offline`` was not asked), ``hdrlab sweep FILE`` creates the
sweep on the server with :func:`wandb.sweep` and runs the standard agent, which executes the
sweep's ``command`` for every suggestion. More machines join the same sweep with the plain
W&B command line printed by :func:`scale_out_command`::

    wandb agent ENTITY/PROJECT/SWEEP_ID

Only the W&B server hands out suggestions here, so the offline agent's state file, lock and
resume logic do not apply (W&B re-queues nothing; a killed run stays killed on the server).
``--workers N > 1`` starts N ``wandb agent`` processes on this machine, each with
``max(1, cores // N)`` torch threads.

Trial overrides (``hdrlab sweep FILE -- ARGS``) are appended to the sweep's ``command`` in the
config sent to the server (:func:`sweep_config`), so every agent of the sweep, on this machine
or another, runs them after ``${args}``. They are sent as typed: W&B agents run the command in
their own working directory, so relative paths in it (``experiments/x.yaml``) must exist there
(start ``hdrlab sweep`` / ``wandb agent`` from the repository root); the offline agent's path
resolution does not apply to W&B agents.

This module is tested against a mocked W&B API only: it cannot be exercised live offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from hdrlab.errors import ConfigError
from hdrlab.sweep.agent import threads_per_worker
from hdrlab.sweep.config import SweepSpec
from hdrlab.sweep.overrides import missing_relative_paths

_OFFLINE_MODES = ("offline", "dryrun", "disabled")


def is_logged_in(environ: Mapping[str, str] | None = None) -> bool:
    """Whether W&B credentials are available, without prompting and without the network.

    ``WANDB_MODE`` set to ``offline``/``dryrun``/``disabled`` counts as not logged in. Otherwise
    an API key in ``WANDB_API_KEY`` or in the ``.netrc`` entry of W&B's base URL (what
    ``wandb login`` writes) counts as logged in.

    Args:
        environ: Environment to inspect (default ``os.environ``).

    Returns:
        ``True`` when the online path can be used.
    """
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_MODE", "").lower() in _OFFLINE_MODES:
        return False
    if environ.get("WANDB_API_KEY"):
        return True
    netrc_files = [Path(environ["NETRC"]).expanduser()] if environ.get("NETRC") else []
    netrc_files += [Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()]
    if not any(p.is_file() for p in netrc_files):
        return False  # no credentials anywhere: skip importing wandb (seconds)
    try:
        import wandb
        from wandb.sdk.lib import wbauth

        return bool(wbauth.read_netrc_auth(host=wandb.Settings().base_url))
    except Exception:  # noqa: BLE001 - a malformed netrc or a changed wandb API means "not logged in"
        return False


def sweep_path(sweep_id: str, *, project: str | None, entity: str | None) -> str:
    """``ENTITY/PROJECT/ID`` (or ``PROJECT/ID``, or ``ID``) as ``wandb agent`` accepts it."""
    return "/".join(part for part in (entity, project, sweep_id) if part)


def scale_out_command(sweep_id: str, *, project: str | None, entity: str | None, count: int | None = None) -> list[str]:
    """The ``wandb agent`` command another machine runs to join the sweep.

    Args:
        sweep_id: The id :func:`wandb.sweep` returned.
        project: W&B project.
        entity: W&B entity (user or team), if known.
        count: Optional ``--count`` per agent.

    Returns:
        The argv list, e.g. ``["wandb", "agent", "me/hdrlab/abc123"]``.
    """
    argv = ["wandb", "agent"]
    if count is not None:
        argv += ["--count", str(count)]
    return argv + [sweep_path(sweep_id, project=project, entity=entity)]


def sweep_config(spec: SweepSpec, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """The config sent to the W&B server: the file as written, trial overrides appended to ``command``.

    Args:
        spec: The validated sweep.
        overrides: Arguments appended to the sweep's ``command`` (W&B's default command when the
            file has none), after ``${args}``.

    Returns:
        A new dict (server-only keys such as ``run_cap`` included).
    """
    config = dict(spec.raw)
    if overrides:
        config["command"] = [*spec.command, *[str(a) for a in overrides]]
    return config


def create_sweep(spec: SweepSpec, *, project: str, entity: str | None = None,
                 overrides: Sequence[str] | None = None) -> str:
    """Create the sweep on the W&B server with :func:`sweep_config`.

    Args:
        spec: The validated sweep.
        project: W&B project.
        entity: W&B entity (default: the user's default entity).
        overrides: Trial overrides appended to the sweep's ``command``.

    Returns:
        The sweep id.
    """
    import wandb

    return wandb.sweep(sweep_config(spec, overrides), project=project, entity=entity)


def run_online_sweep(
    spec: SweepSpec,
    *,
    project: str,
    entity: str | None = None,
    count: int | None = None,
    workers: int = 1,
    cores: int | None = None,
    log: Any = None,
    overrides: Sequence[str] | None = None,
) -> str:
    """Create the sweep and run standard W&B agents on this machine.

    With ``workers == 1`` the agent runs in this process (:func:`wandb.agent` with no
    ``function``, so it executes the sweep's ``command`` like the ``wandb agent`` CLI);
    with more, ``workers`` ``python -m wandb agent`` processes run side by side, each in its own
    session. ``count`` is W&B's per-agent ``--count``.

    Args:
        spec: The validated sweep.
        project: W&B project.
        entity: W&B entity.
        count: Runs per agent (``None``: until the sweep is done).
        workers: Agents on this machine.
        cores: CPU cores to share (default: this process's affinity).
        log: Progress printer (default ``print``).
        overrides: Trial overrides appended to the sweep's ``command`` (:func:`sweep_config`).

    Returns:
        The sweep id.
    """
    import wandb

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    log = log or (lambda msg: print(msg, flush=True))
    missing = missing_relative_paths([*spec.command, *(overrides or [])])
    if missing:
        log(f"[sweep] note: {', '.join(missing)} do(es) not exist relative to {Path.cwd()}; W&B agents run the "
            "command in their working directory, so start them from the repository root")
    sweep_id = create_sweep(spec, project=project, entity=entity, overrides=overrides)
    if overrides:
        log(f"[sweep] trial overrides appended to the sweep's command: {' '.join(str(a) for a in overrides)}")
    threads = str(threads_per_worker(workers, cores))
    join = " ".join(scale_out_command(sweep_id, project=project, entity=entity))
    log(f"[sweep] W&B sweep {sweep_path(sweep_id, project=project, entity=entity)} created; more machines join with: {join}")
    if workers == 1:
        os.environ["OMP_NUM_THREADS"] = threads
        os.environ["HDRLAB_TORCH_THREADS"] = threads
        wandb.agent(sweep_id, project=project, entity=entity, count=count)
        return sweep_id
    env = dict(os.environ, OMP_NUM_THREADS=threads, HDRLAB_TORCH_THREADS=threads)
    argv = [sys.executable, "-m", "wandb"] + scale_out_command(sweep_id, project=project, entity=entity, count=count)[1:]
    procs = [subprocess.Popen(argv, env=env, start_new_session=True) for _ in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    failed = [c for c in codes if c != 0]
    if failed:
        log(f"[sweep] {len(failed)} of {workers} W&B agents exited with an error: {failed}")
    return sweep_id
