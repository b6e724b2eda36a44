"""Trial overrides (``hdrlab sweep FILE -- ARGS``) and repository-relative paths in trial commands.

Overrides. ``hdrlab sweep FILE [options] -- ARG ...`` appends ``ARG ...`` to every trial's command
line, after the sweep's whole ``command`` (so after ``${args}``): LightningCLI applies arguments in
order, so an override has the last word over the experiment files and over the sweep's fixed
parameters (``max_samples: {value: 320000}`` -> ``--max_samples 800``). Two kinds are refused
(:func:`check_overrides`), because the result could only be wrong:

* ``--run_dir`` / ``--run_id`` / ``--ckpt_path``: the agent gives every trial its own run folder
  and resumes it from its own checkpoint;
* a key that is a *swept axis* of the sweep (a parameter with several ``values`` or a
  distribution), given as a flag or inside an override ``--config`` file: coming last it would
  give every trial the same value, i.e. repeat the same trial. ``config`` (a ``--config`` axis,
  as in ``sweeps/losses.yaml``) is exempt: ``--config`` files add up instead of replacing.

Paths. Sweep commands name files relative to the repository (``--config experiments/x.yaml``),
as ``wandb agent`` run from the repository root expects. The offline agent rewrites such a
relative *file* path when it does not exist relative to the current directory but does under a
search root (:func:`search_roots`: the folder above the sweep file's folder, i.e. the checkout
holding ``sweeps/``; the sweep file's folder; the source checkout holding the ``hdrlab``
package), so ``cd /tmp && hdrlab sweep /path/to/repo/sweeps/smoke.yaml --offline`` works. What is
rewritten: literal ``command:`` items that look like file paths (contain ``/`` or end in
``.yaml``/``.yml``/``.json``/``.py``), ``--config=PATH`` items, the ``program`` key and the ``config``
parameter (a path, or the ``config`` key of a mapping value). Paths that exist relative to the
current directory are left alone (so running from the repository root changes nothing).
Override paths are stored absolute (:func:`normalize_overrides`), so a resume from another
directory gets the same files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from hdrlab.errors import ConfigError
from hdrlab.sweep.compare import flatten_config

#: Flags the agent sets per trial; an override may not set them.
RESERVED_FLAGS: tuple[str, ...] = ("--run_dir", "--run_id", "--ckpt_path")
#: LightningCLI's config-file flags.
CONFIG_FLAGS: tuple[str, ...] = ("--config", "-c")
#: File suffixes that make an item without ``/`` count as a path.
PATH_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json", ".py")


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split ``hdrlab sweep`` arguments at the first ``--``.

    Args:
        argv: The subcommand's arguments.

    Returns:
        ``(own arguments, overrides)``; overrides is ``None`` without ``--`` (an empty list after
        a bare trailing ``--``).
    """
    argv = list(argv)
    if "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def checkout_root() -> Path | None:
    """The source checkout holding the ``hdrlab`` package (``None`` when installed elsewhere)."""
    import hdrlab

    root = Path(hdrlab.__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() or (root / "experiments").is_dir() else None


def search_roots(sweep_file: str | Path | None) -> list[Path]:
    """Where repository-relative paths of a sweep's trial commands are looked up, in order.

    Args:
        sweep_file: The sweep YAML (``None`` for an in-memory config).

    Returns:
        Absolute folders: the sweep file's folder's parent (the checkout holding ``sweeps/``),
        the sweep file's folder, then :func:`checkout_root`; duplicates removed.
    """
    roots: list[Path] = []
    if sweep_file is not None:
        folder = Path(sweep_file).resolve().parent
        roots += [folder.parent, folder]
    root = checkout_root()
    if root is not None:
        roots.append(root)
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def _looks_like_path(text: str) -> bool:
    if not text or text.startswith(("-", "{")) or "\n" in text or "${" in text:
        return False
    return "/" in text or text.endswith(PATH_SUFFIXES)


def resolve_path(value: str, roots: Iterable[Path], cwd: str | Path | None = None) -> str:
    """A relative file path, rewritten to an absolute one under a search root when needed.

    Args:
        value: One command item or option value.
        roots: :func:`search_roots`.
        cwd: The directory the trial runs in (default: the current one).

    Returns:
        ``value`` unchanged when it is not a relative path-like item, when it exists relative to
        ``cwd`` or when no root holds it as a file; else ``str(root / value)`` for the first root
        that does.
    """
    if not isinstance(value, str) or not _looks_like_path(value) or Path(value).is_absolute():
        return value
    base = Path(cwd) if cwd is not None else Path.cwd()
    try:
        if (base / value).exists():
            return value
        for root in roots:
            candidate = Path(root) / value
            if candidate.is_file():
                return str(candidate)
    except OSError:  # e.g. a name too long for the file system: not a path
        return value
    return value


def _map_item(item: Any, fn: Any) -> Any:
    """Apply ``fn`` to a bare item or to the value of a ``--config=VALUE`` item."""
    text = str(item)
    if text.startswith("${") and text.endswith("}"):
        return item  # a whole-item macro: expanded later
    for flag in CONFIG_FLAGS:
        if text.startswith(flag + "="):
            value = text[len(flag) + 1 :]
            new = fn(value)
            return item if new == value else f"{flag}={new}"
    new = fn(text)
    return item if new == text else new


def resolve_command_items(items: Sequence[Any], roots: Iterable[Path], cwd: str | Path | None = None) -> list[Any]:
    """:func:`resolve_path` over the literal items of a ``command:`` list (macros untouched)."""
    roots = list(roots)
    return [_map_item(item, lambda v: resolve_path(v, roots, cwd)) for item in items]


def resolve_config_param(params: Mapping[str, Any], roots: Iterable[Path], cwd: str | Path | None = None) -> dict[str, Any]:
    """A copy of a trial's parameters whose ``config`` parameter names a resolved file.

    ``config`` may be a path or a mapping with a ``config`` key (``sweeps/losses.yaml``); other
    parameters are unchanged. Use the result only to render the command: the engine and
    ``state.json`` keep the suggested values.
    """
    out = dict(params)
    value = out.get("config")
    roots = list(roots)
    if isinstance(value, str):
        out["config"] = resolve_path(value, roots, cwd)
    elif isinstance(value, Mapping) and isinstance(value.get("config"), str):
        out["config"] = {**value, "config": resolve_path(value["config"], roots, cwd)}
    return out


def normalize_overrides(overrides: Sequence[str], roots: Iterable[Path], cwd: str | Path | None = None) -> list[str]:
    """Overrides with every relative file path made absolute (relative to ``cwd``, else a root).

    Args:
        overrides: The arguments after ``--``, as typed.
        roots: :func:`search_roots`.
        cwd: The directory the user typed them in (default: the current one).

    Returns:
        The list to record in ``state.json`` and append to trial commands.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    roots = list(roots)

    def absolute(value: str) -> str:
        if not _looks_like_path(value) or Path(value).is_absolute():
            return value
        try:
            if (base / value).is_file():
                return os.path.normpath(base.resolve() / value)
        except OSError:
            return value
        return resolve_path(value, roots, base)

    return [str(_map_item(str(item), absolute)) for item in overrides]


def _config_keys(value: str, roots: list[Path]) -> dict[str, Any]:
    """Dotted keys set by one ``--config`` value (a file or YAML text); ``{}`` when unreadable."""
    path = Path(resolve_path(value, roots))
    try:
        text = path.read_text() if path.is_file() else value
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return {}
    return flatten_config(data) if isinstance(data, Mapping) else {}


def override_keys(overrides: Sequence[str], roots: Iterable[Path] = ()) -> dict[str, str]:
    """The config keys an override list sets, each with where it is set.

    Args:
        overrides: The arguments after ``--``.
        roots: :func:`search_roots` (to read relative ``--config`` files).

    Returns:
        Dotted key (no leading dashes) -> ``"--key"`` or ``"--config FILE"``.
    """
    roots = list(roots)
    keys: dict[str, str] = {}
    items = [str(a) for a in overrides]
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            i += 1
            continue
        name, has_value, value = arg.partition("=")
        if not has_value and i + 1 < len(items) and not items[i + 1].startswith("--"):
            value, has_value = items[i + 1], "="
            i += 1
        i += 1
        if name in CONFIG_FLAGS:
            if has_value:
                for key in _config_keys(value, roots):
                    keys.setdefault(key, f"--config {value}")
            continue
        keys.setdefault(name.lstrip("-"), name)
    return keys


def swept_axes(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The parameters of a sweep that take more than one value.

    Args:
        parameters: The sweep's ``parameters:`` section.

    Returns:
        Name -> a short description (``values [1, 2]`` or ``distribution ...``).
    """
    axes: dict[str, str] = {}
    for name, spec in (parameters or {}).items():
        if not isinstance(spec, Mapping):
            continue
        if "values" in spec and isinstance(spec["values"], list) and len(spec["values"]) > 1:
            axes[str(name)] = f"values {spec['values']}"
        elif "value" not in spec and "values" not in spec and "parameters" not in spec:
            shown = ", ".join(f"{k} {spec[k]}" for k in ("distribution", "min", "max", "mu", "sigma") if k in spec)
            axes[str(name)] = shown or "a distribution"
    return axes


def check_overrides(
    overrides: Sequence[str],
    parameters: Mapping[str, Any],
    *,
    roots: Iterable[Path] = (),
    source: str = "the sweep",
) -> None:
    """Refuse overrides that would break a sweep (module docstring).

    Args:
        overrides: The arguments after ``--``.
        parameters: The sweep's ``parameters:`` section.
        roots: :func:`search_roots` (to read relative ``--config`` files).
        source: The sweep's name in messages (usually its file).

    Raises:
        ConfigError: An override sets a reserved flag or a swept axis; the message names both
            and the fix.
    """
    items = [str(a) for a in overrides]
    for flag in RESERVED_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in items):
            raise ConfigError(
                f"trial overrides may not set {flag}: the sweep agent gives every trial its own run folder "
                f"(--run_dir <sweep_dir>/trials/<id>) and resumes it from its own checkpoint; drop {flag} after `--`"
            )
    axes = swept_axes(parameters)
    keys = override_keys(items, roots)
    for key, where in keys.items():
        axis = key.removesuffix(".class_path")
        if axis in axes and axis != "config":
            via = "" if where == f"--{key}" else f" (via {where})"
            raise ConfigError(
                f"trial override {key}{via} sets a swept axis of {source} ({axis}: {axes[axis]}); appended last "
                f"it would give every trial the same {axis} and repeat the same trial. Leave {axis} out of the "
                "overrides (pass that file's other settings as flags instead); to run fewer trials use --count"
            )


def missing_relative_paths(items: Sequence[Any], cwd: str | Path | None = None) -> list[str]:
    """Path-like relative items (and ``--config=`` values) that do not exist relative to ``cwd``."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    missing: list[str] = []

    def check(value: str) -> str:
        if _looks_like_path(value) and not Path(value).is_absolute() and not (base / value).exists():
            missing.append(value)
        return value

    for item in items:
        _map_item(item, check)
    return missing
