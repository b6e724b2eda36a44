"""Run folder naming: ``<runs_root>/<experiment>/<run_id>/``, the one rule for the experiment name.

Light on purpose (PyYAML only): the CLI, the sweep tools and ``hdrlab budget`` import it.

The experiment name (:func:`experiment_name`) is the stem of the first ``--config`` file that sets
``model``; an explicit ``--experiment NAME`` overrides it and ``--run_dir`` overrides the whole path
(both are handled by :mod:`hdrlab.cli`). :func:`config_args` recovers the ``--config`` values from a
command line, because under ``parser_mode="omegaconf+"`` jsonargparse drops its own record of them
(the parsed ``config`` key) whenever a config holds an ``${...}`` interpolation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_EXPERIMENT", "TEST_OUTPUTS_FOLDER", "config_args", "experiment_name", "output_stem"]

#: The experiment name when no config file names one.
DEFAULT_EXPERIMENT = "default"
#: Folder of a run with the per-image test outputs (``hdrlab test --save_test_outputs true``).
TEST_OUTPUTS_FOLDER = "test_outputs"


def output_stem(name: str) -> str:
    """File stem of a scene name in ``test_outputs/``: every character outside ``[A-Za-z0-9._-]``
    becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name)) or "_"


def _sets_model(path: Path) -> bool:
    """Whether the YAML file ``path`` has a top-level ``model`` key (unreadable files: no)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "model" in data


def experiment_name(configs: Sequence[str | Path | None], default: str = DEFAULT_EXPERIMENT) -> str:
    """The experiment name of a run given its ``--config`` entries, in command-line order.

    The rule (the folder is ``<runs_root>/<experiment>/<run_id>/``):

    1. the stem of the first config file with a top-level ``model`` key (the file that picks the
       method: ``--config experiments/le2023_debevec.yaml --config experiments/overrides/tiny.yaml``
       is ``le2023_debevec``, and so is the same with the two files swapped);
    2. else the stem of the first file that is not directly in a folder named ``overrides``;
    3. else ``default``.

    ``None`` entries (a config given as inline text on the command line, as jsonargparse records
    it) are skipped, and so are non-existent or unreadable files for rule 1.

    Args:
        configs: The config files (``str``, :class:`~pathlib.Path` or anything whose ``str`` is the
            path, e.g. jsonargparse's ``Path_fsr``), later ones overriding earlier ones.
        default: The name when no file gives one.

    Returns:
        The experiment name.
    """
    paths = [Path(str(c)) for c in configs if c is not None]
    for path in paths:
        if _sets_model(path):
            return path.stem
    for path in paths:
        if path.parent.name != "overrides":
            return path.stem
    return default


def _inline_config_files(text: str) -> list[str]:
    """Files named by a ``config:`` key of inline config text (jsonargparse applies them first)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    nested = data.get("config") if isinstance(data, dict) else None
    if nested is None:
        return []
    values: list[Any] = nested if isinstance(nested, list) else [nested]
    return [str(v) for v in values if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]


def config_args(argv: Sequence[str]) -> list[str | None]:
    """The ``--config`` / ``-c`` entries of a LightningCLI command line, as jsonargparse records them.

    A value naming an existing file is that path; any other value is inline config text and gives
    ``None``, preceded by the files its ``config:`` key names (jsonargparse applies those first).
    Handles ``--config X``, ``--config=X``, ``-c X``, ``-c=X`` and ``-cX``; stops at ``--``.

    Args:
        argv: The command line without the program name (a subcommand may come first).

    Returns:
        The entries in command-line order, ready for :func:`experiment_name`.
    """
    values: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            break
        if token in ("--config", "-c"):
            if i + 1 < len(tokens):
                values.append(tokens[i + 1])
            i += 2
            continue
        if token.startswith("--config="):
            values.append(token[len("--config="):])
        elif token.startswith("-c") and not token.startswith("--"):
            values.append(token[3:] if token.startswith("-c=") else token[2:])
        i += 1
    entries: list[str | None] = []
    for value in values:
        if os.path.isfile(value):
            entries.append(value)
        else:
            entries += [*_inline_config_files(value), None]
    return entries
