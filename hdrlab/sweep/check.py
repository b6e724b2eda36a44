"""Check a sweep's trial commands through hdrlab's command-line parser before any trial runs.

:func:`check_trial_commands` expands the command of every grid point (random / bayes sweeps: the
first suggested point) as the offline agent would (repository-relative paths resolved,
:mod:`hdrlab.sweep.overrides`; trial overrides appended) and parses each ``hdrlab
fit|validate|test|predict`` command with hdrlab's LightningCLI parser: unknown keys, bad values and
missing config files are found before the first trial, named with the grid point. Nothing is
instantiated or written; commands that do not run an hdrlab trainer subcommand are not parsed.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hdrlab.errors import ConfigError

__all__ = ["check_trial_commands", "cli_parser", "hdrlab_command", "sweep_points"]


class _Captured(Exception):
    def __init__(self, parser: Any) -> None:
        super().__init__("parser captured")
        self.parser = parser


def cli_parser() -> Any:
    """hdrlab's LightningCLI parser (every trainer subcommand), built without parsing anything."""
    from unittest import mock

    from lightning.pytorch.cli import LightningCLI

    from hdrlab.cli import build_cli

    def capture(self: Any, parser: Any, args: Any) -> None:
        raise _Captured(parser)

    with mock.patch.object(LightningCLI, "parse_arguments", capture):
        try:
            build_cli(["fit"])
        except _Captured as captured:
            return captured.parser
    raise RuntimeError("LightningCLI did not reach parse_arguments")


def hdrlab_command(argv: Sequence[str]) -> list[str] | None:
    """The arguments from the trainer subcommand on (``fit --config ...``) when ``argv`` runs
    ``python -m hdrlab <fit|validate|test|predict>`` or an ``hdrlab`` executable; else ``None``."""
    from hdrlab.cli import TRAINER_SUBCOMMANDS

    items = [str(a) for a in argv]
    for i, item in enumerate(items[:-1]):
        module = item == "hdrlab" and i > 0 and items[i - 1] == "-m"
        program = item.rsplit("/", 1)[-1] == "hdrlab" and (i == 0 or items[i - 1] != "-m")
        if (module or program) and items[i + 1] in TRAINER_SUBCOMMANDS:
            return items[i + 1:]
    return None


def sweep_points(spec: Any) -> list[dict[str, Any]]:
    """Every grid point of a grid sweep; the first suggested point of a random / bayes sweep."""
    import warnings

    from hdrlab.sweep.config import grid_points, to_builtin

    if spec.method == "grid":
        return grid_points(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps

        suggestion = sweeps.next_run(spec.engine, [], validate=False)
    return [] if suggestion is None else [{k: to_builtin(v["value"]) for k, v in suggestion.config.items()}]


def _parse_error(parser: Any, argv: list[str]) -> str | None:
    """``None`` when ``argv`` parses, else the parser's one-line complaint."""
    import argparse

    from hdrlab.cli import user_error_message

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit:
        lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
        return lines[-1] if lines else "rejected by the parser"
    except (argparse.ArgumentError, Exception) as exc:  # noqa: BLE001 - jsonargparse reports with its own types
        return user_error_message(exc) or f"{type(exc).__name__}: {exc}"
    return None


def check_trial_commands(spec: Any, trial_argv: Callable[[Mapping[str, Any]], list[str]], *,
                         source: str | None = None, parser: Any = None) -> int:
    """Parse the trainer command of every point of ``spec`` (module docstring).

    Args:
        spec: the :class:`~hdrlab.sweep.config.SweepSpec`.
        trial_argv: a point's full command (e.g. :meth:`OfflineSweepAgent.trial_argv`).
        source: the sweep's name in messages (default: its file).
        parser: a parser from :func:`cli_parser` (built on first need when ``None``).

    Returns:
        The number of commands parsed.

    Raises:
        ConfigError: a point's command does not parse; the message names the point, its
            parameters and the parser's complaint (the offending key or value).
    """
    points = sweep_points(spec)
    source = source or (f"sweep file {spec.path}" if spec.path else f"sweep {spec.name}")
    parsed = 0
    for n, point in enumerate(points, start=1):
        argv = hdrlab_command(trial_argv(point))
        if argv is None:
            continue
        if parser is None:
            parser = cli_parser()
        problem = _parse_error(parser, argv)
        if problem is not None:
            shown = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ConfigError(f"{source}: point {n} of {len(points)} ({shown[:300]}) does not parse: {problem[:400]}; "
                              "fix that parameter (its name or value) in the sweep file or the trial overrides "
                              "after `--`; no trial was started")
        parsed += 1
    return parsed
