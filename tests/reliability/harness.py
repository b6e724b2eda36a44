"""Run ``hdrlab`` as a user would and check how it fails.

:func:`run_cli` runs ``hdrlab ARGS`` without ``--debug`` in a working folder of the test's choice
and returns a :class:`Result`: in this process by default (:func:`hdrlab.cli.main` with stdout and
stderr captured, the environment and the working folder restored afterwards; an exception escaping
``main`` is written to stderr as the traceback a user would see), or with ``subprocess=True`` as
``python -m hdrlab ARGS`` in a new process (the console entry's whole path; ~5 s of imports each,
so a few cases per area use it). :func:`assert_clean_failure` asserts what every bad input must give: the expected
exit status (2: usage or input error, 1: runtime failure), stderr without a Python traceback and
naming the offending thing (each of ``names``, case-insensitive), stdout without a traceback, and
**nothing written**: the listing of ``watch`` folders (paths, sizes, modification times) is the same
after the run as before it.
"""

from __future__ import annotations

import os
import subprocess as _subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``folders``."""
    listing: dict[str, tuple[int, int]] = {}
    for root in folders:
        root = Path(root)
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            stat = path.stat()
            listing[str(path)] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns if path.is_file() else 0)
    return listing


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None,
            subprocess: bool = False) -> Result:
    """``hdrlab *args`` in ``cwd`` (default: the repository) with ``HDRLAB_DEBUG`` unset (module docstring)."""
    extra = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HDRLAB_TORCH_THREADS": "1", **(env or {})}
    if subprocess:
        environ = {k: v for k, v in os.environ.items() if k != "HDRLAB_DEBUG"}
        environ.update(extra)
        proc = _subprocess.run([sys.executable, "-m", "hdrlab", *map(str, args)], cwd=cwd or REPO,
                               capture_output=True, text=True, timeout=timeout, env=environ)
        return Result(proc.returncode, proc.stdout, proc.stderr)
    return _run_in_process([str(a) for a in args], cwd=Path(cwd or REPO), env=extra)


def _run_in_process(argv: list[str], *, cwd: Path, env: dict[str, str]) -> Result:
    import contextlib
    import io
    import traceback

    from hdrlab.cli import main

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ.pop("HDRLAB_DEBUG", None)
    os.environ.update(env)
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse usage errors
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except BaseException:  # noqa: BLE001 - what a user would see: a traceback and status 1
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Result(int(code or 0), out.getvalue(), err.getvalue())


def assert_clean_failure(result: Result, *, code: int, names: tuple[str, ...] = (),
                         before: dict[str, tuple[int, int]] | None = None,
                         watch: tuple[Path, ...] = ()) -> None:
    """The failure contract (module docstring)."""
    text = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode} != {code}\nstderr: {result.stderr[-2000:]}"
    assert "Traceback" not in text, f"traceback shown:\n{text[-3000:]}"
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert lines, "no message on stderr"
    message = lines[-1].lower()
    for name in names:
        assert name.lower() in result.stderr.lower(), f"{name!r} not named in: {result.stderr[-1500:]}"
    assert "error" in message or "refused" in message or "stopped" in message, f"last line is not an error: {message}"
    if before is not None:
        after = snapshot(*watch)
        assert after == before, f"written: {sorted(set(after) ^ set(before))[:10]}"
