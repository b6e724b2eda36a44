"""Building methods from configuration and filling networks from checkpoints.

* :func:`without_files`: a ``model`` config (``class_path`` / ``init_args``, nested) with every
  option that names a file cleared, as each class declares in its ``file_options`` (``None`` for
  paths, ``False`` for ``pretrained*`` flags). Shapes, hence parameter counts and memory, are
  unchanged; used where only shapes matter (``hdrlab budget``, ``hdrlab info``) or where the
  weights come from a checkpoint (``hdrlab reconstruct``).
* :func:`build_method`: the :class:`~hdrlab.methods.base.HDRMethod` of a ``model`` config, built
  through jsonargparse exactly as ``hdrlab fit`` does (``class_path`` is the only registry).
* :func:`find_state_prefix` / :func:`load_submodule_state`: one network's weights out of a method
  checkpoint (``generator_ckpt`` / ``merger_ckpt`` of a composite).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hdrlab.errors import ConfigError

__all__ = ["build_method", "declared_file_options", "find_state_prefix", "load_submodule_state", "without_files"]


def _subclass_named(name: str) -> type | None:
    """A loaded subclass of a method, generator or merger base class called ``name`` (jsonargparse
    accepts such short ``class_path`` values, e.g. ``TwoStage``)."""
    import hdrlab.methods  # noqa: F401 - registers the shipped classes
    from hdrlab.methods.base import HDRMethod
    from hdrlab.models.generators.base import StackGenerator
    from hdrlab.models.mergers.base import StackMerger

    pending: list[type] = [HDRMethod, StackGenerator, StackMerger]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending += cls.__subclasses__()
    return None


def declared_file_options(class_path: str) -> tuple[str, ...]:
    """The ``file_options`` the class at ``class_path`` (a dotted path, or the short name of a loaded
    method / generator / merger class) declares; empty when it declares none or cannot be found
    (then jsonargparse reports the bad path when the model is built)."""
    module_name, _, name = str(class_path).rpartition(".")
    cls: Any = None
    if module_name:
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError):
            cls = None
    if cls is None:
        cls = _subclass_named(name)
    return tuple(getattr(cls, "file_options", ()) or ())


def without_files(node: Any) -> Any:
    """Copy of a config tree whose ``class_path`` nodes have their declared file options cleared.

    Args:
        node: a ``model`` section (``{"class_path": ..., "init_args": {...}}``), nested sections
            (``generator``, ``merger``) included, or any list / dict holding such sections.

    Returns:
        The copy: a declared option set to a bool becomes ``False``, any other value ``None``.
    """
    if isinstance(node, Mapping):
        out = {key: without_files(value) for key, value in node.items()}
        if "class_path" in out and isinstance(out.get("init_args"), Mapping):
            args = dict(out["init_args"])
            for key in declared_file_options(out["class_path"]):
                if key in args:
                    args[key] = False if isinstance(args[key], bool) else None
            out["init_args"] = args
        return out
    if isinstance(node, list):
        return [without_files(v) for v in node]
    return node


def build_method(model_cfg: Mapping[str, Any], *, name: str = "config", files: bool = True) -> Any:
    """Instantiate the method of a ``model`` config (jsonargparse, as ``hdrlab fit``).

    Args:
        model_cfg: ``{"class_path": ..., "init_args": {...}}`` (interpolations resolved).
        name: label for messages (e.g. the config file).
        files: False clears the declared file options first (:func:`without_files`).

    Raises:
        ConfigError: the section cannot be parsed or the class refuses its arguments.
    """
    from jsonargparse import ArgumentParser

    from hdrlab.methods.base import HDRMethod

    if not isinstance(model_cfg, Mapping) or "class_path" not in model_cfg:
        raise ConfigError(f"{name} has no 'model: {{class_path: ..., init_args: ...}}' section")
    cfg = copy.deepcopy(dict(model_cfg)) if files else without_files(model_cfg)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(HDRMethod, "model", required=True)
    try:
        parsed = parser.parse_object({"model": cfg})
        return parser.instantiate_classes(parsed).model
    except ConfigError:
        raise
    except Exception as err:  # jsonargparse reports config problems with its own error types
        raise ConfigError(f"cannot build the model of {name}: {err}") from err


def find_state_prefix(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """Locate a module's parameters inside a larger (e.g. LightningModule) state dict.

    Finds ``(source_prefix, target_prefix)`` such that every key ``k`` of ``target`` starts with
    ``target_prefix`` and ``source_prefix + k[len(target_prefix):]`` is a key of ``state`` with the
    same shape. The longest matching key suffix wins (so ``generator.net.x`` in a composite's
    checkpoint, or ``net.x`` in a method that holds the bare network, both match).

    Args:
        state: the checkpoint's state dict.
        target: the module's own ``state_dict()``.

    Returns:
        ``(source_prefix, target_prefix)``.

    Raises:
        ConfigError: nothing matches (wrong checkpoint) or shapes differ (e.g. another ``width``).
    """
    if not target:
        raise ConfigError("the module to load has no parameters or buffers")
    keys = sorted(target)
    ref = max(keys, key=len)
    parts = ref.split(".")
    shape_problem = None
    for cut in range(len(parts)):  # shortest target prefix (= longest suffix) first
        target_prefix = ".".join(parts[:cut]) + ("." if cut else "")
        if not all(k.startswith(target_prefix) for k in keys):
            continue
        rest = ref[len(target_prefix):]
        sources = sorted({k[: len(k) - len(rest)] for k in state if k.endswith(rest) and
                          (len(k) == len(rest) or k[len(k) - len(rest) - 1] == ".")}, key=len)
        for source_prefix in sources:
            mapped = {k: source_prefix + k[len(target_prefix):] for k in keys}
            if not all(m in state for m in mapped.values()):
                continue
            bad = [k for k, m in mapped.items() if tuple(state[m].shape) != tuple(target[k].shape)]
            if bad:
                shape_problem = (bad[0], tuple(state[mapped[bad[0]]].shape), tuple(target[bad[0]].shape))
                continue
            return source_prefix, target_prefix
    if shape_problem is not None:
        key, have, want = shape_problem
        raise ConfigError(
            f"checkpoint tensor for {key!r} has shape {have} but the module expects {want}; "
            "build the module with the same architecture options (e.g. width) as the checkpoint's run"
        )
    raise ConfigError(
        f"no parameters of this module (e.g. {ref!r}) were found in the checkpoint; "
        "point the *_ckpt option at a checkpoint of a method that holds this network"
    )


def load_submodule_state(module: nn.Module, path: str | Path, *, name: str = "module") -> str:
    """Load ``module``'s weights from a method checkpoint (or a bare state dict) at ``path``.

    The file is read with ``torch.load(..., weights_only=True)``; a Lightning checkpoint's
    ``state_dict`` is searched for the module's keys with :func:`find_state_prefix`.

    Args:
        module: the network to fill (e.g. ``TwoStage.generator``).
        path: ``.ckpt`` / ``.pt`` file.
        name: the option name for error messages (``generator_ckpt``, ``merger_ckpt``).

    Returns:
        The prefix under which the weights were found in the checkpoint.

    Raises:
        ConfigError: missing file or no matching weights.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{name}={str(path)!r} does not exist; give the path of a method checkpoint (.ckpt)")
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConfigError(f"{name}={str(path)!r} holds no state dict; give a Lightning checkpoint or a saved state_dict")
    target = module.state_dict()
    try:
        source_prefix, target_prefix = find_state_prefix(state, target)
    except ConfigError as err:
        raise ConfigError(f"{name}={str(path)!r}: {err}") from None
    module.load_state_dict({k: state[source_prefix + k[len(target_prefix):]] for k in target})
    return source_prefix
