"""The offline W&B sweep agent: W&B's open-source engine (``sweeps``) driving local trials.

W&B sweeps need the server (sweep id, suggestions and run list live there), so without a
login hdrlab runs its own agent loop on the same engine W&B uses, with the same semantics:

* suggestions come from :func:`sweeps.next_run` (grid / random / bayes), early termination
  from :func:`sweeps.stop_runs` (hyperband), given :class:`sweeps.SweepRun` objects built with
  the pydantic aliases (``summaryMetrics=``, ``sampledHistory=``; the field names are silently
  dropped by ``sweeps`` 0.2 under pydantic 2);
* a trial is the sweep's expanded ``command`` (:func:`hdrlab.sweep.config.expand_command`),
  then the sweep's trial overrides (``hdrlab sweep FILE -- ARGS``, recorded in ``state.json``;
  :mod:`hdrlab.sweep.overrides`), then ``--run_dir <sweep_dir>/trials/<id>`` and, when
  ``<run_dir>/checkpoints/last.ckpt`` exists, ``--ckpt_path=<it>``; repository-relative files in
  the command (``experiments/x.yaml``) that do not exist relative to the current directory are
  found under the checkout holding the sweep file (:func:`hdrlab.sweep.overrides.resolve_path`);
  its metric is read from ``<run_dir>/metrics.csv`` (Lightning ``CSVLogger`` format; offline
  W&B writes no summary);
* each trial is a subprocess in its own session / process group with
  ``OMP_NUM_THREADS = HDRLAB_TORCH_THREADS = max(1, cores // workers)``, ``WANDB_MODE``
  (offline unless the environment says otherwise) and ``WANDB_RUN_GROUP = <sweep id>``.

Crash safety. ``<sweep_dir>/state.json`` is rewritten atomically (temp file, fsync,
``os.replace``, directory fsync) after every event, under an exclusive ``fcntl.flock`` on
``<sweep_dir>/.lock``. Each trial process inherits an exclusive flock on
``<run_dir>/.trial.lock`` and is started through a tiny ``/bin/sh`` wrapper that writes its
pid (= process group id) to ``.trial.pid`` before running the command and its exit code to
``.trial.exit`` after it. So after the agent is killed at any moment (even ``SIGKILL``
mid-write), a re-run knows for every trial, without trusting pids: lock held -> still running
(adopted and watched, never started twice); lock free with an exit file -> finished or
crashed; lock free without one -> interrupted, re-launched (from ``last.ckpt`` when present)
unless it already wrote ``summary.json``.
"""

from __future__ import annotations

import atexit
import csv
import datetime as _dt
import errno
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hdrlab.errors import ConfigError, HDRIOError, HDRLabError
from hdrlab.sweep.config import SweepSpec, expand_command, to_builtin
from hdrlab.sweep.overrides import (
    check_overrides,
    normalize_overrides,
    resolve_command_items,
    resolve_config_param,
    resolve_path,
    search_roots,
)

STATE_FORMAT = "hdrlab-sweep-state"
STATE_VERSION = 1
#: Trial states recorded in ``state.json``.
TRIAL_STATES: tuple[str, ...] = ("created", "running", "finished", "failed", "stopped")
TERMINAL_STATES: tuple[str, ...] = ("finished", "failed", "stopped")
#: hdrlab trial state -> ``sweeps.RunState`` value given to the engine. A failed trial is
#: ``crashed`` (grid counts it as taken, bayes imputes it); a hyperband-stopped trial keeps
#: its partial history as a ``finished`` run.
ENGINE_STATES: dict[str, str] = {
    "created": "pending",
    "running": "running",
    "finished": "finished",
    "failed": "crashed",
    "stopped": "finished",
}
LOG_TAIL_LINES = 50
#: Test hook: seconds to sleep between the two halves of a state write (before the rename).
SLOW_WRITE_ENV = "HDRLAB_SWEEP_TEST_SLOW_WRITE"

_TRIAL_WRAPPER = (
    'echo $$ > "$1.tmp" && mv -f "$1.tmp" "$1"; e="$2"; shift 2; "$@"; c=$?; '
    'echo $c > "$e.tmp" && mv -f "$e.tmp" "$e"; exit $c'
)
_ENV_REMOVED = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_RESUME")


class SweepLockedError(HDRLabError):
    """Another agent holds the sweep directory's lock file."""


# --------------------------------------------------------------------------- pure helpers


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string (seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch/OpenMP threads for each of ``workers`` concurrent trials.

    Args:
        workers: Concurrent trials (>= 1).
        cores: Usable CPU cores (default: this process's CPU affinity).

    Returns:
        ``max(1, cores // workers)``.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(cores) // max(1, int(workers)))


def read_metric_history(path: str | Path, metric: str) -> list[dict[str, Any]]:
    """The history of one metric from a Lightning ``CSVLogger`` ``metrics.csv``.

    Rows where the metric is blank (train-step rows) are skipped; unreadable values (a line
    being written) are skipped too.

    Args:
        path: The ``metrics.csv`` file (missing -> empty history).
        metric: Column name, e.g. ``val/psnr_mu``.

    Returns:
        One dict per logged value, in file order: ``{metric: float, "_step": int}`` plus
        ``"epoch"`` when the file has that column.
    """
    path = Path(path)
    if not path.is_file():
        return []
    history: list[dict[str, Any]] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            raw = row.get(metric)
            if raw is None or raw.strip() == "":
                continue
            try:
                entry: dict[str, Any] = {metric: float(raw)}
            except ValueError:
                continue
            for key, name in (("step", "_step"), ("epoch", "epoch")):
                try:
                    entry[name] = int(float(row.get(key) or ""))
                except ValueError:
                    pass
            history.append(entry)
    return history


def last_metric(history: list[dict[str, Any]], metric: str) -> float | None:
    """The last logged value of ``metric`` in a history (``None`` when never logged)."""
    return history[-1][metric] if history else None


def tail_lines(path: str | Path, n: int = LOG_TAIL_LINES) -> str:
    """The last ``n`` lines of a text file (``""`` when missing), decoded leniently."""
    path = Path(path)
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 256 * 1024))
        data = fh.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-n:])


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, data: Any, *, slow_write: float = 0.0) -> None:
    """Write JSON so that ``path`` always holds either the old or the new complete file.

    Writes ``.<name>.tmp`` next to ``path``, fsyncs it, ``os.replace``s it onto ``path`` and
    fsyncs the directory.

    Args:
        path: Destination file.
        data: JSON-serialisable data.
        slow_write: Test hook: seconds to sleep after writing half of the temp file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(data, indent=1, sort_keys=False, allow_nan=True) + "\n"
    with tmp.open("w") as fh:
        if slow_write > 0:
            fh.write(text[: len(text) // 2])
            fh.flush()
            time.sleep(slow_write)
            fh.write(text[len(text) // 2 :])
        else:
            fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def validate_state(data: Any, *, source: str = "state.json") -> dict[str, Any]:
    """Check the structure of a sweep state document.

    Args:
        data: Parsed ``state.json``.
        source: Name used in error messages.

    Returns:
        ``data`` unchanged.

    Raises:
        HDRIOError: Wrong format/version, missing keys, unknown trial states or duplicate ids.
    """
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise HDRIOError(f"{source} is not an hdrlab sweep state file (format != {STATE_FORMAT!r})")
    if data.get("version") != STATE_VERSION:
        raise HDRIOError(f"{source} has state version {data.get('version')!r}; this hdrlab reads {STATE_VERSION}")
    for key in ("sweep_id", "config", "trials"):
        if key not in data:
            raise HDRIOError(f"{source} lacks the key {key!r}; the file is damaged (use a new --sweep_dir)")
    seen: set[str] = set()
    for trial in data["trials"]:
        for key in ("id", "index", "params", "state", "run_dir", "launches"):
            if key not in trial:
                raise HDRIOError(f"{source}: a trial lacks the key {key!r}; the file is damaged")
        if trial["state"] not in TRIAL_STATES:
            raise HDRIOError(f"{source}: trial {trial['id']} has unknown state {trial['state']!r}")
        if trial["id"] in seen:
            raise HDRIOError(f"{source}: trial id {trial['id']} appears twice")
        seen.add(trial["id"])
    return data


def load_state(path: str | Path) -> dict[str, Any]:
    """Read and validate ``state.json``.

    Raises:
        HDRIOError: The file is missing, not JSON, or not a valid state document.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise HDRIOError(f"sweep state {path} does not exist") from err
    except json.JSONDecodeError as err:
        raise HDRIOError(f"sweep state {path} is not valid JSON ({err}); the sweep dir is damaged") from err
    return validate_state(data, source=str(path))


def to_sweep_run(trial: Mapping[str, Any], history: list[dict[str, Any]], metric: str | None) -> Any:
    """Build the :class:`sweeps.SweepRun` the engine sees for one trial.

    Uses the pydantic aliases (``summaryMetrics``, ``sampledHistory``) because ``sweeps`` 0.2
    silently drops the field names under pydantic 2.

    Args:
        trial: A trial record of ``state.json``.
        history: Its metric history (:func:`read_metric_history`).
        metric: The sweep metric name (``None`` without a metric section).

    Returns:
        A ``SweepRun`` with ``name = trial id``, ``config = {p: {"value": v}}``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sweeps import SweepRun

    summary = {}
    if metric is not None and history:
        summary = {metric: history[-1][metric]}
    return SweepRun(
        name=trial["id"],
        state=ENGINE_STATES[trial["state"]],
        config={k: {"value": v} for k, v in trial["params"].items()},
        summaryMetrics=summary,
        sampledHistory=list(history),
    )


def trial_environment(
    base: Mapping[str, str],
    *,
    threads: int,
    group: str,
    trial_id: str,
    run_dir: str | Path,
    wandb_mode: str,
    project: str | None = None,
) -> dict[str, str]:
    """The environment of one trial process.

    Args:
        base: The agent's environment.
        threads: ``OMP_NUM_THREADS`` and ``HDRLAB_TORCH_THREADS``.
        group: ``WANDB_RUN_GROUP`` (the sweep id).
        trial_id: ``HDRLAB_TRIAL_ID`` and ``WANDB_NAME``.
        run_dir: ``HDRLAB_RUN_DIR``.
        wandb_mode: ``WANDB_MODE`` unless ``base`` already sets one.
        project: ``WANDB_PROJECT`` unless ``base`` already sets one.

    Returns:
        A new dict. W&B sweep/run ids inherited from a surrounding ``wandb agent`` are removed,
        so every launch is a new (offline) W&B run in the group.
    """
    env = {k: v for k, v in base.items() if k not in _ENV_REMOVED}
    env["OMP_NUM_THREADS"] = str(threads)
    env["HDRLAB_TORCH_THREADS"] = str(threads)
    env.setdefault("WANDB_MODE", wandb_mode)
    if project:
        env.setdefault("WANDB_PROJECT", project)
    env["WANDB_RUN_GROUP"] = group
    env["WANDB_NAME"] = trial_id
    env["HDRLAB_SWEEP_GROUP"] = group
    env["HDRLAB_TRIAL_ID"] = trial_id
    env["HDRLAB_RUN_DIR"] = str(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def try_flock(path: str | Path) -> int | None:
    """Open ``path`` (created if needed) and take an exclusive non-blocking flock.

    Returns:
        The open fd holding the lock, or ``None`` when another open file holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def lock_is_held(path: str | Path) -> bool:
    """Whether some process (e.g. a trial and its children) holds the flock on ``path``."""
    if not Path(path).exists():
        return False
    fd = try_flock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def read_int_file(path: str | Path) -> int | None:
    """An integer written on the first line of a small file (``None`` if missing or partial)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


# --------------------------------------------------------------------------- the agent


class SweepDirLock:
    """Exclusive ``fcntl.flock`` on ``<sweep_dir>/.lock`` for one agent.

    Args:
        sweep_dir: The sweep directory (created if missing).

    Raises:
        SweepLockedError: On enter, when another process holds the lock.
    """

    def __init__(self, sweep_dir: str | Path) -> None:
        self.path = Path(sweep_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "SweepDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = try_flock(self.path)
        if fd is None:
            holder = read_int_file(self.path)
            who = f"pid {holder}" if holder else "another process"
            raise SweepLockedError(
                f"sweep dir {self.path.parent} is in use: {who} holds its lock file {self.path}; "
                "wait for that agent to finish (or stop it), or pass another --sweep_dir"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class _Running:
    """A trial process the agent watches (launched now, or adopted from a killed agent)."""

    trial_id: str
    pgid: int | None
    popen: subprocess.Popen | None
    lock_path: Path
    stop_sent_at: float | None = None


class OfflineSweepAgent:
    """Runs a sweep locally with W&B's engine; resumable after being killed at any moment.

    Args:
        spec: The validated sweep (:func:`hdrlab.sweep.config.load_sweep`).
        sweep_dir: Where ``state.json``, ``.lock`` and ``trials/<id>/`` live.
        workers: Trials run concurrently.
        count: Cap on the number of trials of this sweep dir (all invocations together, so a
            re-run after a kill does not add trials); ``None``: no cap besides ``run_cap`` and
            grid exhaustion (random/bayes then run until interrupted, like ``wandb agent``).
        retry_failed: Re-run crashed trials (each in a fresh run dir; the old one is kept as
            ``<id>.attempt<k>``).
        poll_interval: Seconds between checks of the running trials.
        kill_delay: Seconds between ``SIGTERM`` and ``SIGKILL`` when stopping a trial.
        wandb_mode: ``WANDB_MODE`` for trials unless the environment sets it.
        project: ``WANDB_PROJECT`` for trials unless the environment sets it (default: the
            sweep's ``project`` key).
        interpreter: What ``${interpreter}`` expands to (default ``sys.executable``).
        cores: CPU cores shared by the workers (default: CPU affinity of this process).
        log: Progress printer.
        overrides: Arguments appended to every trial's command after the sweep's own (``hdrlab
            sweep FILE -- ARGS``). Recorded in ``state.json`` on the first run; a re-run with
            ``None``/``[]`` keeps the recorded ones, one with different overrides is refused.
        config_roots: Where repository-relative files of trial commands are looked up when they
            do not exist relative to the current directory (default:
            :func:`hdrlab.sweep.overrides.search_roots` of the sweep file).
    """

    def __init__(
        self,
        spec: SweepSpec,
        *,
        sweep_dir: str | Path,
        workers: int = 1,
        count: int | None = None,
        retry_failed: bool = False,
        poll_interval: float = 0.5,
        kill_delay: float = 10.0,
        wandb_mode: str = "offline",
        project: str | None = None,
        interpreter: str | None = None,
        cores: int | None = None,
        log: Callable[[str], None] | None = None,
        overrides: Sequence[str] | None = None,
        config_roots: Sequence[str | Path] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if count is not None and count < 1:
            raise ConfigError(f"--count must be >= 1, got {count}")
        self.spec = spec
        self.sweep_dir = Path(sweep_dir).resolve()
        self.workers = workers
        self.count = count
        self.retry_failed = retry_failed
        self.poll_interval = poll_interval
        self.kill_delay = kill_delay
        self.wandb_mode = wandb_mode
        self.project = project or spec.raw.get("project")
        self.interpreter = interpreter or sys.executable
        self.threads = threads_per_worker(workers, cores)
        self.log = log or (lambda msg: print(msg, flush=True))
        self.state_path = self.sweep_dir / "state.json"
        self.state: dict[str, Any] = {}
        self._running: dict[str, _Running] = {}
        self._history_cache: dict[str, tuple[tuple[float, int], list[dict[str, Any]]]] = {}
        self._exhausted = False
        self._slow_write = float(os.environ.get(SLOW_WRITE_ENV, "0") or 0)
        self.config_roots = [Path(r) for r in config_roots] if config_roots is not None else search_roots(spec.path)
        self._given_overrides: list[str] | None = None
        if overrides:
            self._given_overrides = normalize_overrides(overrides, self.config_roots)
            check_overrides(
                self._given_overrides,
                spec.raw.get("parameters") or {},
                roots=self.config_roots,
                source=f"sweep file {spec.path}" if spec.path else f"sweep {spec.name}",
            )

    # ------------------------------------------------------------------ state

    def _save(self) -> None:
        self.state["updated_at"] = now_iso()
        self.state["seq"] = int(self.state.get("seq", 0)) + 1
        atomic_write_json(self.state_path, self.state, slow_write=self._slow_write)

    def _load_or_init(self) -> None:
        raw = json.loads(json.dumps(to_builtin(self.spec.raw)))
        # A temp file left by a write that was killed half-way is garbage: state.json is intact.
        self.state_path.with_name(f".{self.state_path.name}.tmp").unlink(missing_ok=True)
        if self.state_path.exists():
            self.state = load_state(self.state_path)
            if self.state["config"] != raw:
                raise ConfigError(
                    f"sweep dir {self.sweep_dir} was started with a different sweep config than "
                    f"{self.spec.path or 'the given one'}; restore that config or pass a new --sweep_dir"
                )
            stored = list(self.state.get("overrides") or [])
            given = self._given_overrides
            if given is not None and given != stored:
                raise ConfigError(
                    f"sweep dir {self.sweep_dir} was started with the trial overrides {_shown(stored)} but this "
                    f"command passes {_shown(given)}; re-run with the same overrides after `--` (or none: the "
                    "recorded ones are kept), or pass a new --sweep_dir for the new overrides"
                )
            self.state["overrides"] = stored
            return
        slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.spec.name)
        sweep_id = f"{slug}-{uuid.uuid4().hex[:8]}"
        self.state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "sweep_id": sweep_id,
            "group": sweep_id,
            "sweep_name": self.spec.name,
            "sweep_file": str(self.spec.path) if self.spec.path else None,
            "method": self.spec.method,
            "metric": self.spec.engine.get("metric"),
            "config": raw,
            "overrides": list(self._given_overrides or []),
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "seq": 0,
            "trials": [],
        }
        self._save()

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.state["trials"]

    @property
    def overrides(self) -> list[str]:
        """The trial overrides of this sweep dir (recorded in ``state.json``; before :meth:`run`: the given ones)."""
        if self.state:
            return list(self.state.get("overrides") or [])
        return list(self._given_overrides or [])

    def trial_argv(self, params: Mapping[str, Any], args_json_file: str | Path | None = None) -> list[str]:
        """A trial's command without the per-trial ``--run_dir`` / ``--ckpt_path``.

        The sweep's ``command`` expanded with ``params`` (repository-relative files resolved,
        :mod:`hdrlab.sweep.overrides`), then the trial overrides.

        Args:
            params: The trial's parameters (as suggested; only the rendering is resolved).
            args_json_file: What ``${args_json_file}`` becomes.

        Returns:
            The argv list.
        """
        program = self.spec.raw.get("program")
        argv = expand_command(
            resolve_command_items(self.spec.command, self.config_roots),
            resolve_config_param(params, self.config_roots),
            program=resolve_path(str(program), self.config_roots) if program is not None else None,
            interpreter=self.interpreter,
            args_json_file=str(args_json_file) if args_json_file is not None else None,
        )
        return argv + self.overrides

    def _trial(self, trial_id: str) -> dict[str, Any]:
        for trial in self.trials:
            if trial["id"] == trial_id:
                return trial
        raise KeyError(trial_id)

    def _history(self, trial: Mapping[str, Any]) -> list[dict[str, Any]]:
        metric = self.spec.metric_name
        if metric is None:
            return []
        path = Path(trial["run_dir"]) / "metrics.csv"
        try:
            st = path.stat()
            key = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            return []
        cached = self._history_cache.get(trial["id"])
        if cached and cached[0] == key:
            return cached[1]
        history = read_metric_history(path, metric)
        self._history_cache[trial["id"]] = (key, history)
        return history

    def _sweep_runs(self) -> list[Any]:
        return [to_sweep_run(t, self._history(t), self.spec.metric_name) for t in self.trials]

    # ------------------------------------------------------------------ trial files

    @staticmethod
    def _files(run_dir: Path) -> dict[str, Path]:
        return {
            "lock": run_dir / ".trial.lock",
            "pid": run_dir / ".trial.pid",
            "exit": run_dir / ".trial.exit",
            "log": run_dir / "trial.log",
            "ckpt": run_dir / "checkpoints" / "last.ckpt",
        }

    def _record_end(self, trial: dict[str, Any], code: int | None) -> None:
        """Record the end of a trial's process.

        ``code is None`` means the wrapper recorded no exit code (the trial was killed): the trial
        is resumed later, unless it had already written ``summary.json`` (success).
        """
        run_dir = Path(trial["run_dir"])
        if code is None and (run_dir / "summary.json").exists() and not trial.get("stop_requested"):
            code = 0  # killed after writing its success summary (e.g. while closing loggers)
        history = self._history(trial)
        trial["metric"] = last_metric(history, self.spec.metric_name) if self.spec.metric_name else None
        trial["history_len"] = len(history)
        trial["pid"] = None
        if trial.get("stop_requested"):
            trial["state"] = "stopped"
            trial["exit_code"] = code
            trial["finished_at"] = now_iso()
            self.log(f"[sweep] {trial['id']} stopped by hyperband after {len(history)} evaluations")
        elif code is None:
            trial["interrupted"] = int(trial.get("interrupted", 0)) + 1
            self.log(f"[sweep] {trial['id']} was interrupted; it will be resumed")
        elif code == 0:
            trial["state"] = "finished"
            trial["exit_code"] = 0
            trial["finished_at"] = now_iso()
            result = f": {self.spec.metric_name} = {trial['metric']}" if self.spec.metric_name else ""
            self.log(f"[sweep] {trial['id']} finished{result}")
        else:
            trial["state"] = "failed"
            trial["exit_code"] = code
            trial["finished_at"] = now_iso()
            trial["log_tail"] = tail_lines(self._files(run_dir)["log"])
            self.log(f"[sweep] {trial['id']} FAILED (exit {code}); log: {run_dir / 'trial.log'}")
        self._save()

    def _adopt_or_finish(self, trial: dict[str, Any]) -> bool:
        """Handle a non-terminal trial left by an earlier agent.

        Returns:
            ``True`` when the trial needs no launch (adopted as running, or its outcome was
            recorded); ``False`` when it must be (re)launched.
        """
        files = self._files(Path(trial["run_dir"]))
        if lock_is_held(files["lock"]):
            pgid = read_int_file(files["pid"])
            self._running[trial["id"]] = _Running(trial["id"], pgid, None, files["lock"])
            if trial["state"] != "running":
                trial["state"] = "running"
                self._save()
            self.log(f"[sweep] {trial['id']} is still running (pgid {pgid}); watching it")
            return True
        code = read_int_file(files["exit"])
        if code is not None:
            self._record_end(trial, code)
            return True
        if trial.get("stop_requested"):
            self._record_end(trial, None)
            return True
        return False

    def _launch(self, trial: dict[str, Any]) -> None:
        run_dir = Path(trial["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        files = self._files(run_dir)
        lock_fd = try_flock(files["lock"])
        if lock_fd is None:  # a process of this trial appeared meanwhile: watch it
            self._adopt_or_finish(trial)
            return
        try:
            code = read_int_file(files["exit"])
            if code is not None:
                self._record_end(trial, code)
                return
            params = trial["params"]
            json_file = run_dir / "args.json"
            argv = self.trial_argv(params, json_file)
            if "${args_json_file}" in [str(c) for c in self.spec.command]:
                atomic_write_json(json_file, resolve_config_param(params, self.config_roots))
            argv += ["--run_dir", str(run_dir)]
            resumed_from = None
            if files["ckpt"].exists():
                resumed_from = files["ckpt"]
                argv.append(f"--ckpt_path={files['ckpt']}")
            trial["state"] = "running"
            trial["launches"] = int(trial["launches"]) + 1
            trial["command"] = argv
            trial["started_at"] = now_iso()
            trial["resumed_from"] = str(resumed_from) if resumed_from else None
            atomic_write_json(
                run_dir / "sweep_trial.json",
                {
                    "sweep_id": self.state["sweep_id"],
                    "sweep_name": self.state["sweep_name"],
                    "trial_id": trial["id"],
                    "attempt": trial.get("attempt", 1),
                    "params": params,
                    "metric": self.state.get("metric"),
                    "command": argv,
                },
            )
            self._save()
            for stale in (files["pid"], files["exit"]):
                stale.unlink(missing_ok=True)
            env = trial_environment(
                os.environ,
                threads=self.threads,
                group=self.state["group"],
                trial_id=trial["id"],
                run_dir=run_dir,
                wandb_mode=self.wandb_mode,
                project=self.project,
            )
            with files["log"].open("ab") as log_fh:
                header = f"\n===== hdrlab sweep: {trial['id']} launch {trial['launches']} at {now_iso()}: {' '.join(argv)}\n"
                log_fh.write(header.encode())
                log_fh.flush()
                popen = subprocess.Popen(
                    ["/bin/sh", "-c", _TRIAL_WRAPPER, "hdrlab-trial", str(files["pid"]), str(files["exit"]), *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    pass_fds=(lock_fd,),
                )
        finally:
            os.close(lock_fd)
        self._running[trial["id"]] = _Running(trial["id"], popen.pid, popen, files["lock"])
        trial["pid"] = popen.pid
        self._save()
        how = f"resumed from {resumed_from}" if resumed_from else ("restarted" if trial["launches"] > 1 else "started")
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        self.log(f"[sweep] {trial['id']} {how} (launch {trial['launches']}, {self.threads} threads): {shown}")

    # ------------------------------------------------------------------ the loop

    def _poll(self) -> None:
        for trial_id, proc in list(self._running.items()):
            if proc.popen is not None:
                rc = proc.popen.poll()
                if rc is None:
                    continue
            elif lock_is_held(proc.lock_path):
                continue
            del self._running[trial_id]
            trial = self._trial(trial_id)
            self._record_end(trial, read_int_file(Path(trial["run_dir"]) / ".trial.exit"))

    def _early_terminate(self) -> None:
        if "early_terminate" not in self.spec.engine or not self._running:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sweeps import stop_runs

            to_stop = stop_runs(self.spec.engine, self._sweep_runs(), validate=False)
        now = time.monotonic()
        for run in to_stop:
            proc = self._running.get(run.name)
            if proc is None:
                continue
            trial = self._trial(run.name)
            if not trial.get("stop_requested"):
                trial["stop_requested"] = True
                info = run.early_terminate_info or {}
                trial["stop_reason"] = (info.get("lines") or ["hyperband"])[-1]
                self._save()
                self.log(f"[sweep] stopping {run.name}: {trial['stop_reason']}")
            if proc.stop_sent_at is None:
                proc.stop_sent_at = now
                self._kill(proc, signal.SIGTERM)
        for proc in self._running.values():
            if proc.stop_sent_at is not None and now - proc.stop_sent_at > self.kill_delay:
                self._kill(proc, signal.SIGKILL)

    def _kill(self, proc: _Running, sig: int) -> None:
        pgid = proc.pgid
        if pgid is None:
            pgid = read_int_file(proc.lock_path.with_name(".trial.pid"))
            proc.pgid = pgid
        if pgid is not None and (proc.popen is not None or lock_is_held(proc.lock_path)):
            _signal_group(pgid, sig)

    def _may_create(self) -> bool:
        if self._exhausted:
            return False
        caps = [c for c in (self.count, self.spec.run_cap) if c is not None]
        return not caps or len(self.trials) < min(caps)

    def _create_trial(self) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sweeps import next_run

            suggestion = next_run(self.spec.engine, self._sweep_runs(), validate=False)
        if suggestion is None:
            self._exhausted = True
            return None
        index = len(self.trials)
        trial_id = f"t{index:04d}"
        trial = {
            "id": trial_id,
            "index": index,
            "params": {k: to_builtin(v["value"]) for k, v in suggestion.config.items()},
            "state": "created",
            "run_dir": str(self.sweep_dir / "trials" / trial_id),
            "launches": 0,
            "attempt": 1,
            "pid": None,
            "created_at": now_iso(),
            "search_info": json.loads(json.dumps(to_builtin(suggestion.search_info or {}), default=str)),
        }
        self.trials.append(trial)
        self._save()
        return trial

    def _retry_failed_trials(self) -> None:
        for trial in self.trials:
            if trial["state"] != "failed":
                continue
            run_dir = Path(trial["run_dir"])
            attempt = int(trial.get("attempt", 1))
            if run_dir.exists():
                archive = run_dir.with_name(f"{run_dir.name}.attempt{attempt}")
                k = 1
                while archive.exists():
                    k += 1
                    archive = run_dir.with_name(f"{run_dir.name}.attempt{attempt}.{k}")
                run_dir.rename(archive)
            trial.setdefault("previous_attempts", []).append(
                {key: trial.get(key) for key in ("attempt", "exit_code", "log_tail", "finished_at", "launches")}
            )
            trial.update(state="created", attempt=attempt + 1, exit_code=None, log_tail=None, finished_at=None)
            self._save()
            self.log(f"[sweep] {trial['id']} will be retried (attempt {attempt + 1})")

    def _fill_slots(self) -> None:
        while len(self._running) < self.workers:
            pending = [t for t in self.trials if t["state"] not in TERMINAL_STATES and t["id"] not in self._running]
            if pending:
                trial = pending[0]
                if trial["launches"] and self._adopt_or_finish(trial):
                    continue
                self._launch(trial)
                continue
            if not self._may_create():
                return
            if self._create_trial() is None:
                return

    def terminate_trials(self) -> None:
        """SIGTERM (then SIGKILL) every running trial's process group; they resume on re-run."""
        procs = list(self._running.values())
        for proc in procs:
            self._kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + min(self.kill_delay, 5.0)
        while time.monotonic() < deadline and any(lock_is_held(p.lock_path) for p in procs):
            time.sleep(0.05)
        for proc in procs:
            self._kill(proc, signal.SIGKILL)
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        self._running.clear()

    def run(self) -> dict[str, Any]:
        """Run (or continue) the sweep until it is exhausted or capped and all trials ended.

        Returns:
            The final state document (also in ``<sweep_dir>/state.json``).

        Raises:
            SweepLockedError: Another agent works on this sweep dir.
            ConfigError: The sweep dir belongs to a different sweep config.
        """
        with SweepDirLock(self.sweep_dir):
            self._load_or_init()
            (self.sweep_dir / "trials").mkdir(exist_ok=True)
            self.log(
                f"[sweep] {self.state['sweep_id']} ({self.spec.method}, {self.workers} worker(s) x "
                f"{self.threads} thread(s)) in {self.sweep_dir}"
            )
            if self.overrides:
                kept = "" if self._given_overrides else " (recorded in state.json)"
                self.log(f"[sweep] trial overrides{kept}, appended to every trial's command: {' '.join(self.overrides)}")
            previous = _install_signal_handlers(self)
            atexit.register(self.terminate_trials)
            try:
                # Adopt trials still running from a killed agent (whatever --workers is now).
                for trial in self.trials:
                    if trial["state"] not in TERMINAL_STATES and trial["launches"]:
                        self._adopt_or_finish(trial)
                if self.retry_failed:
                    self._retry_failed_trials()
                while True:
                    self._poll()
                    self._early_terminate()
                    self._fill_slots()
                    if not self._running:
                        break
                    time.sleep(self.poll_interval)
            finally:
                self.terminate_trials()
                atexit.unregister(self.terminate_trials)
                _restore_signal_handlers(previous)
            return self.state


def _shown(overrides: Sequence[str]) -> str:
    """Overrides as the user would type them after ``--`` (``none`` when empty)."""
    return f"`-- {' '.join(overrides)}`" if overrides else "none"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _install_signal_handlers(agent: OfflineSweepAgent) -> dict[int, Any]:
    def handler(signum: int, frame: Any) -> None:
        agent.log(f"[sweep] signal {signal.Signals(signum).name}: stopping trials (re-run the command to resume)")
        agent.terminate_trials()
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def summarize_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Counts per trial state and the best finished/stopped trial.

    Args:
        state: A state document.

    Returns:
        ``{"counts": {state: n}, "best": trial or None, "metric": name, "goal": goal}``.
    """
    counts = {s: 0 for s in TRIAL_STATES}
    for trial in state["trials"]:
        counts[trial["state"]] += 1
    metric = state.get("metric") or {}
    goal = metric.get("goal", "minimize")
    scored = [
        t
        for t in state["trials"]
        if t["state"] in ("finished", "stopped") and isinstance(t.get("metric"), (int, float)) and math.isfinite(t["metric"])
    ]
    best = None
    if scored:
        best = (max if goal == "maximize" else min)(scored, key=lambda t: t["metric"])
    return {"counts": counts, "best": best, "metric": metric.get("name"), "goal": goal}
