"""W&B sweep YAML: loading, validation with the ``sweeps`` engine, and ``command:`` macros.

A sweep file is standard W&B sweep YAML (``method``, ``metric``, ``parameters``,
``early_terminate``, ``command``, ...). The same file works with ``wandb sweep FILE`` and with
hdrlab's offline agent (:mod:`hdrlab.sweep.agent`).

Two traps of ``sweeps`` 0.2 are handled here (measured with ``sweeps`` 0.2.0):

* its JSON schema rejects keys the W&B server accepts (``run_cap``, Launch keys); they are
  stripped before validation and kept in :attr:`SweepSpec.server_keys`;
* invalid combinations that only :func:`sweeps.next_run` notices (grid search over a
  continuous parameter, bayes without ``metric``) are caught by a dry-run suggestion.

The ``command:`` macros are expanded exactly like ``wandb agent`` does
(``wandb/wandb_agent.py: Agent._command_run`` and ``wandb/sdk/launch/sweeps/utils.py``):
a list item that is exactly ``${name}`` is replaced by the items of that macro (an unknown
macro expands to nothing), ``${envvar:NAME}`` is replaced anywhere inside an item by the
environment variable (or ``NAME`` when unset), everything else is passed through ``str``.
The only deliberate difference: ``${interpreter}`` is the running interpreter
(``sys.executable``) instead of the literal ``python``.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from hdrlab.errors import ConfigError, HDRIOError

#: Keys the W&B server accepts in a sweep config that the ``sweeps`` 0.2 schema rejects.
SERVER_ONLY_KEYS: tuple[str, ...] = ("run_cap", "job", "image_uri", "scheduler")

#: ``wandb agent``'s default command when the sweep has no ``command:``.
DEFAULT_COMMAND: tuple[str, ...] = ("${env}", "${interpreter}", "${program}", "${args}")

#: Whole-item macros ``wandb agent`` knows (``${envvar:NAME}`` is handled separately).
KNOWN_MACROS: tuple[str, ...] = (
    "env",
    "interpreter",
    "program",
    "args",
    "args_no_equals",
    "args_no_hyphens",
    "args_no_boolean_flags",
    "args_json",
    "args_json_file",
    "args_append_hydra",
    "args_override_hydra",
)

_ENV_VAR_MACRO = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")


@dataclass(frozen=True)
class SweepSpec:
    """A loaded, validated sweep file.

    Attributes:
        path: The YAML file (``None`` for an in-memory config).
        raw: The config exactly as written (what ``wandb sweep`` receives).
        engine: The config given to the ``sweeps`` engine: server-only keys stripped, defaults
            filled in by :class:`sweeps.SweepConfig`.
        server_keys: The stripped server-only keys and their values (e.g. ``run_cap``).
    """

    path: Path | None
    raw: dict[str, Any]
    engine: dict[str, Any]
    server_keys: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The sweep's ``name``, else the file stem, else ``"sweep"``."""
        if self.raw.get("name"):
            return str(self.raw["name"])
        return self.path.stem if self.path is not None else "sweep"

    @property
    def method(self) -> str:
        """``grid``, ``random`` or ``bayes``."""
        return str(self.engine["method"])

    @property
    def metric_name(self) -> str | None:
        """The optimised metric's name (``metric.name``), or ``None`` without a metric."""
        metric = self.engine.get("metric")
        return str(metric["name"]) if metric else None

    @property
    def run_cap(self) -> int | None:
        """The server-side ``run_cap`` (maximum number of runs), if set."""
        cap = self.server_keys.get("run_cap")
        return int(cap) if cap is not None else None

    @property
    def command(self) -> list[Any]:
        """The ``command:`` list, or W&B's default command."""
        return list(self.raw.get("command") or DEFAULT_COMMAND)


def read_sweep_yaml(path: str | Path) -> dict[str, Any]:
    """Read a sweep YAML file into a dict.

    Args:
        path: The ``.yaml`` file.

    Returns:
        The parsed mapping, unchanged.

    Raises:
        HDRIOError: The file is missing, unreadable, binary, not YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"sweep file {path} does not exist; pass a W&B sweep YAML such as sweeps/smoke.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise HDRIOError(f"sweep file {path} is not a text (YAML) file: byte {err.start} is not UTF-8; pass a W&B "
                         "sweep YAML such as sweeps/smoke.yaml") from err
    except OSError as err:
        raise HDRIOError(f"sweep file {path} cannot be read ({err.strerror or err}); check its permissions") from err
    except yaml.YAMLError as err:
        hint = ""
        if "${" in path.read_text() and "expected ','" in str(err):
            hint = " (write `command:` as a block list, one `- ${macro}` per line: flow lists break on `${`)"
        raise HDRIOError(f"sweep file {path} is not valid YAML{hint}: {err}") from err
    if not isinstance(data, dict):
        raise HDRIOError(f"sweep file {path} must hold a mapping (method, metric, parameters, command)")
    return data


def split_server_keys(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the keys the ``sweeps`` 0.2 schema rejects from the rest.

    Args:
        config: A W&B sweep config.

    Returns:
        ``(engine_config, server_keys)``; both are shallow copies.
    """
    engine = {k: v for k, v in config.items() if k not in SERVER_ONLY_KEYS}
    server = {k: v for k, v in config.items() if k in SERVER_ONLY_KEYS}
    return engine, server


def command_macros(command: Sequence[Any]) -> list[str]:
    """The whole-item ``${name}`` macros used in a ``command:`` list, in order.

    Args:
        command: The sweep's ``command`` list.

    Returns:
        Macro names without ``${`` and ``}`` (``envvar`` macros are not listed).
    """
    names = []
    for item in command:
        text = str(item)
        if text.startswith("${") and text.endswith("}"):
            names.append(text[2:-1])
    return names


def validate_sweep_config(config: Mapping[str, Any], *, source: str = "sweep config") -> SweepSpec:
    """Validate a W&B sweep config with the ``sweeps`` engine.

    Server-only keys (:data:`SERVER_ONLY_KEYS`) are stripped first; the remaining config must
    pass :class:`sweeps.SweepConfig` (JSON schema + min/max checks) and yield a first suggestion
    from :func:`sweeps.next_run` (this catches grid search over continuous parameters).
    ``command:`` items that are whole ``${...}`` macros must be macros ``wandb agent`` knows
    (an unknown one would silently expand to nothing).

    Args:
        config: The parsed sweep YAML.
        source: What to call the config in error messages (usually the file name).

    Returns:
        A :class:`SweepSpec` (``path`` is ``None``).

    Raises:
        ConfigError: The config is invalid; the message names the file, the key and the fix.
    """
    import jsonschema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps

    engine, server = split_server_keys(config)
    if "run_cap" in server and not (isinstance(server["run_cap"], int) and server["run_cap"] > 0):
        raise ConfigError(f"{source}: run_cap must be a positive integer, got {server['run_cap']!r}")
    command = config.get("command")
    if command is not None:
        if not isinstance(command, list):
            raise ConfigError(f"{source}: command must be a YAML list (one item per line, `- ${{args}}`)")
        unknown = [m for m in command_macros(command) if m not in KNOWN_MACROS and not m.startswith("envvar:")]
        if unknown:
            raise ConfigError(
                f"{source}: command uses unknown macro(s) {', '.join('${' + m + '}' for m in unknown)}; "
                f"known: {', '.join('${' + m + '}' for m in KNOWN_MACROS)}"
            )
        if "program" in command_macros(command) and not config.get("program"):
            raise ConfigError(f"{source}: command uses ${{program}} but the file has no `program:` key")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            filled = dict(sweeps.SweepConfig(engine))
            sweeps.next_run(filled, [], validate=False)
            if "early_terminate" in filled:
                sweeps.stop_runs(filled, [], validate=False)
    except (jsonschema.ValidationError, ValueError, KeyError, TypeError) as err:
        message = getattr(err, "message", None) or str(err)
        raise ConfigError(f"{source}: invalid sweep config for the sweeps engine: {message}") from err
    return SweepSpec(path=None, raw=dict(config), engine=filled, server_keys=server)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML file.

    Args:
        path: The sweep file.

    Returns:
        The validated :class:`SweepSpec`.

    Raises:
        HDRIOError: The file cannot be read as YAML.
        ConfigError: The sweep config is invalid.
    """
    path = Path(path)
    spec = validate_sweep_config(read_sweep_yaml(path), source=f"sweep file {path}")
    return SweepSpec(path=path, raw=spec.raw, engine=spec.engine, server_keys=spec.server_keys)


def to_builtin(value: Any) -> Any:
    """Convert numpy scalars/arrays (what ``sweeps`` suggests) to plain Python, recursively.

    Args:
        value: A suggested parameter value.

    Returns:
        The same value with ``np.float64`` -> ``float`` etc., safe for JSON and ``str``.
    """
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return to_builtin(value.tolist())
    return value


def command_arg_formats(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every ``${args...}`` rendering of a trial's parameters, as ``wandb agent`` builds them.

    Args:
        params: Parameter name -> value (plain values, not ``{"value": v}``).

    Returns:
        Macro name -> list of command items: ``args`` (``--p=v``), ``args_no_equals``
        (``--p v``), ``args_no_hyphens`` (``p=v``), ``args_no_boolean_flags`` (``--p=v``;
        booleans as bare ``--p`` when true, omitted when false), ``args_json`` (one JSON
        string), ``args_append_hydra`` (``+p=v``), ``args_override_hydra`` (``++p=v``).
    """
    out: dict[str, list[str]] = {
        "args": [],
        "args_no_equals": [],
        "args_no_hyphens": [],
        "args_no_boolean_flags": [],
        "args_append_hydra": [],
        "args_override_hydra": [],
    }
    as_dict: dict[str, Any] = {}
    for name, value in params.items():
        value = to_builtin(value)
        flag = f"{name}={value}"
        out["args"].append("--" + flag)
        out["args_no_hyphens"].append(flag)
        out["args_no_equals"] += [f"--{name}", str(value)]
        out["args_append_hydra"].append("+" + flag)
        out["args_override_hydra"].append("++" + flag)
        if isinstance(value, bool):
            if value:
                out["args_no_boolean_flags"].append("--" + name)
        else:
            out["args_no_boolean_flags"].append("--" + flag)
        as_dict[name] = value
    out["args_json"] = [json.dumps(as_dict)]
    return out


def expand_env_macros(item: Any, environ: Mapping[str, str]) -> Any:
    """Replace every ``${envvar:NAME}`` inside one command item.

    Args:
        item: One ``command:`` item (any type; only strings containing the macro change).
        environ: The environment to read (``NAME`` itself is used when unset, like wandb).

    Returns:
        The item with the macros replaced.
    """
    text = str(item)
    matches = list(_ENV_VAR_MACRO.finditer(text))
    if not matches:
        return item
    for m in matches[::-1]:
        text = f"{text[: m.start()]}{environ.get(m.group(1), m.group(1))}{text[m.end():]}"
    return text


def expand_command(
    command: Sequence[Any] | None,
    params: Mapping[str, Any],
    *,
    program: str | None = None,
    interpreter: str | None = None,
    args_json_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Expand a sweep ``command:`` for one trial, with ``wandb agent``'s macro semantics.

    Args:
        command: The ``command:`` list (``None`` -> :data:`DEFAULT_COMMAND`).
        params: The trial's parameters, name -> plain value.
        program: The sweep's ``program`` key (for ``${program}``).
        interpreter: What ``${interpreter}`` becomes (default: ``sys.executable``; wandb uses
            ``"python"``).
        args_json_file: The path ``${args_json_file}`` becomes (the caller writes the file).
        environ: Environment for ``${envvar:NAME}`` (default ``os.environ``).

    Returns:
        The argv list, every item a ``str``.
    """
    import os

    environ = os.environ if environ is None else environ
    items = [expand_env_macros(c, environ) for c in (list(command) if command else list(DEFAULT_COMMAND))]
    macros: dict[str, list[str]] = command_arg_formats(params)
    macros["interpreter"] = [interpreter or sys.executable]
    macros["env"] = ["/usr/bin/env"]
    if program is not None:
        macros["program"] = [str(program)]
    if args_json_file is not None:
        macros["args_json_file"] = [str(args_json_file)]
    argv: list[str] = []
    for item in items:
        text = str(item)
        if text.startswith("${") and text.endswith("}"):
            argv += macros.get(text[2:-1]) or []
        else:
            argv.append(text)
    return argv


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every parameter set of a grid sweep, in the order the ``sweeps`` engine suggests them.

    Useful to check each grid point's expanded command (e.g. through the CLI parser) without
    running anything.

    Args:
        spec: A validated sweep with ``method: grid``.

    Returns:
        One ``{name: plain value}`` dict per grid point.

    Raises:
        ConfigError: The sweep is not a grid sweep (random/bayes never end).
    """
    if spec.method != "grid":
        raise ConfigError(f"{spec.name}: grid_points needs method: grid, not {spec.method} (it never ends)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps

        runs: list[Any] = []
        while (suggestion := sweeps.next_run(spec.engine, runs, validate=False)) is not None:
            suggestion.state = "finished"
            suggestion.name = f"grid-{len(runs)}"
            runs.append(suggestion)
    return [{k: to_builtin(v["value"]) for k, v in run.config.items()} for run in runs]
