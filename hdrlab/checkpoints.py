"""Checkpoint files and command-line inputs checked before any work starts.

* :func:`load_checkpoint`: ``torch.load(..., weights_only=True)`` whose every failure (random
  bytes, a truncated file, a pickle that refers to code, a folder, a missing file) is one
  :class:`~hdrlab.errors.HDRIOError` naming the file; PyTorch's advice to retry with
  ``weights_only=False`` is never passed on (such files can run arbitrary code).
* :func:`describe_checkpoint`: which method a checkpoint holds, in a few words (its
  ``hyper_parameters`` class, the ``hdrlab_import`` record of ``hdrlab import-weights``, else the
  top-level modules of its ``state_dict``).
* :func:`check_state_dict`: a clear error when a checkpoint's weights do not fit a model, naming
  what the file holds instead of listing key names.
* :func:`check_output_dir`, :func:`check_device`, :func:`check_memory_budget`: option checks run
  before a command creates anything.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hdrlab.errors import ConfigError, HDRIOError

__all__ = [
    "check_device",
    "check_memory_budget",
    "check_output_dir",
    "check_state_dict",
    "describe_checkpoint",
    "describe_state",
    "load_checkpoint",
    "load_prefixed_weights",
]

#: ``--ckpt_path`` values Lightning resolves itself (not file names)
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def load_checkpoint(path: str | Path, *, option: str = "--ckpt") -> Any:
    """The object stored in checkpoint ``path``, read with ``weights_only=True`` on the CPU.

    Raises:
        HDRIOError: the file is missing, a folder, unreadable, or not a (safe) PyTorch checkpoint;
            the message names ``option`` and the file.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise HDRIOError(f"{option} {path} does not exist; give a checkpoint written by 'hdrlab fit' "
                         "(RUN/checkpoints/last.ckpt) or 'hdrlab import-weights'")
    if path.is_dir():
        raise HDRIOError(f"{option} {path} is a folder; give the checkpoint file inside it "
                         "(e.g. checkpoints/last.ckpt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except PermissionError as err:
        raise HDRIOError(f"{option} {path} cannot be read (permission denied); fix its permissions") from err
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, ImportError, IndexError, UnicodeDecodeError) as err:
        text = str(err)
        if "GLOBAL" in text or "Unsupported global" in text or "global" in text.split("\n")[0].lower():
            what = ("refers to Python code or classes that a weights-only load refuses (it may run arbitrary "
                    "code); only load checkpoints written by 'hdrlab fit' or 'hdrlab import-weights'")
        elif isinstance(err, EOFError) or "central directory" in text or "truncat" in text.lower() \
                or isinstance(err, OSError):
            what = "is truncated or damaged (not a complete PyTorch zip checkpoint); copy or write it again"
        else:
            what = "is not a PyTorch checkpoint; give a .ckpt written by 'hdrlab fit' or 'hdrlab import-weights'"
        raise HDRIOError(f"{option} {path} {what}") from err


def load_prefixed_weights(module: Any, path: str | Path, prefix: str, *, option: str, method: str) -> None:
    """Load the ``prefix*`` tensors of checkpoint ``path`` (a Lightning checkpoint's ``state_dict``
    or a plain state dict) into ``module``, strictly: how a method starts one of its networks from
    an earlier run (e.g. ``stage_checkpoints``).

    Raises:
        HDRIOError: the file cannot be read (:func:`load_checkpoint`).
        ConfigError: no ``prefix*`` tensor in it, or they do not fit ``module``; the message names
            ``option`` and ``method``.
    """
    state = load_checkpoint(path, option=option)
    if isinstance(state, Mapping):
        state = state.get("state_dict", state)
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} if isinstance(state, Mapping) else {}
    if not own:
        raise ConfigError(f"{option}: {path} holds no '{prefix}*' weights; pass a checkpoint of a {method} run")
    try:
        module.load_state_dict(own, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{option}: {path} does not match this {type(module).__name__} "
                          f"(same width and options?): {str(err)[:400]}") from err


def describe_state(state: Mapping[str, Any], *, top: int = 4) -> str:
    """A state dict in a few words: its tensor count and its top-level modules (``net.encoder``, ...)."""
    prefixes: list[str] = []
    for key in state:
        parts = str(key).split(".")
        prefix = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        if prefix not in prefixes:
            prefixes.append(prefix)
    shown = ", ".join(prefixes[:top]) + (f", ... ({len(prefixes)} modules)" if len(prefixes) > top else "")
    return f"weights of {len(state)} tensors under {shown or 'no module'}"


def describe_checkpoint(source: str | Path | Mapping[str, Any]) -> str:
    """Which method a checkpoint holds, e.g. ``"an hdrlab.methods.HDRCNNMethod checkpoint"``.

    Args:
        source: a checkpoint file or an already loaded checkpoint object.

    Returns:
        From the first that exists: the ``_class_path`` of its ``hyper_parameters`` (runs of
        ``hdrlab fit``), the ``method`` / ``format`` of its ``hdrlab_import`` record, or
        :func:`describe_state` of its ``state_dict`` (or of the file itself when it is a bare state
        dict); ``"an unreadable file (...)"`` when it cannot be loaded.
    """
    if isinstance(source, (str, Path)):
        try:
            checkpoint = load_checkpoint(source, option="checkpoint")
        except HDRIOError as err:
            return f"an unreadable file ({err})"
    else:
        checkpoint = source
    if not isinstance(checkpoint, Mapping):
        return f"a {type(checkpoint).__name__}, not a checkpoint dictionary"
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, Mapping) and hparams.get("_class_path"):
        return f"a {hparams['_class_path']} checkpoint"
    record = checkpoint.get("hdrlab_import")
    if isinstance(record, Mapping) and (record.get("method") or record.get("format")):
        return f"a {record.get('method') or record.get('format')} checkpoint (official {record.get('format')} weights)"
    state = checkpoint.get("state_dict")
    if isinstance(state, Mapping):
        return f"a checkpoint with {describe_state(state)}"
    if checkpoint and all(hasattr(v, "shape") for v in checkpoint.values()):
        return f"a bare state dict with {describe_state(checkpoint)}"
    return f"a dictionary with the keys {', '.join(map(str, list(checkpoint)[:6]))}"


def check_state_dict(model: Any, checkpoint: Mapping[str, Any], *, path: str | Path, option: str = "--ckpt",
                     config: str | Path | None = None) -> Mapping[str, Any]:
    """The ``state_dict`` of ``checkpoint`` when it fits ``model`` (same keys, same shapes).

    Raises:
        HDRIOError: no ``state_dict``;
        ConfigError: the weights belong to another method or another size; the message says what
            the file holds (:func:`describe_checkpoint`) and what the model is.
    """
    state = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise HDRIOError(f"{option} {path} holds no 'state_dict' ({describe_checkpoint(checkpoint)}); give a "
                         "Lightning checkpoint written by 'hdrlab fit' or 'hdrlab import-weights'")
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in target if k in state and tuple(getattr(state[k], "shape", ())) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return state
    model_name = type(model).__name__
    source = f" (built from {config})" if config is not None else ""
    holds = describe_checkpoint(checkpoint)
    if shapes and not (missing or unexpected):
        first = shapes[0]
        raise ConfigError(f"{option} {path} is {holds} whose {len(shapes)} tensor shape(s) differ from "
                          f"{model_name}{source} (e.g. {first}: {tuple(state[first].shape)} vs "
                          f"{tuple(target[first].shape)}); it was trained at another size: give the config "
                          "(width, ...) of the run that wrote it")
    raise ConfigError(f"{option} {path} is {holds}, not weights of {model_name}{source} "
                      f"({len(missing)} of its {len(target)} tensors missing, {len(unexpected)} unknown); give a "
                      f"checkpoint of {model_name} or the config of the method the file holds")


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing parent."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | Path, *, option: str = "-o") -> Path:
    """Refuse an output folder that is an existing file or cannot be created or written.

    Nothing is created: the checks are ``is_dir`` / ``os.access`` on ``path`` or its nearest
    existing parent; a folder without any write permission bit counts as read-only even where
    the user could write it anyway (root).

    Raises:
        HDRIOError: the message names ``option`` and the path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HDRIOError(f"{option} {path} is an existing file, not a folder; give a folder path "
                         "(it is created when missing)")
    base = nearest_existing(path)
    if not base.is_dir():
        raise HDRIOError(f"{option} {path}: {base} is a file, so the folder cannot be created; "
                         "give another folder path")
    # a folder without any write permission bit is read-only by intent, also for root (whom
    # os.access lets write anywhere)
    if not os.access(base, os.W_OK | os.X_OK) or not base.stat().st_mode & 0o222:
        where = "" if base == Path(os.path.abspath(path)) else f" ({base} cannot hold new folders)"
        raise HDRIOError(f"{option} {path} is not writable{where}; give a folder you may write to")
    return path


def check_device(text: str, *, option: str = "--device") -> Any:
    """``torch.device(text)`` when that device exists on this machine.

    Raises:
        ConfigError: an unknown device name or a GPU index this machine does not have; the
            message lists the devices that exist.
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    existing = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    if torch.backends.mps.is_available():
        existing.append("mps")
    shown = ", ".join(existing)
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ConfigError(f"{option} {text!r} is not a device; use one of: {shown}") from err
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if count == 0:
            raise ConfigError(f"{option} {text}: this machine has no CUDA GPU; use one of: {shown}")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{option} {text}: this machine has {count} CUDA GPU(s); use one of: {shown}")
        return device
    if device.type == "mps" and "mps" in existing:
        return device
    raise ConfigError(f"{option} {text}: no such device on this machine; use one of: {shown}")


def check_memory_budget(text: str | None, *, option: str = "--memory_budget") -> int | None:
    """Bytes of a ``--memory_budget`` value (``None`` stays ``None``).

    Raises:
        ConfigError: a zero or negative size (``--memory_budget=-4GiB``) or one that cannot be parsed.
    """
    if text is None:
        return None
    from hdrlab.budget.units import parse_size

    stripped = str(text).strip()
    if stripped.startswith("-"):
        raise ConfigError(f"{option} {stripped} must be positive; give e.g. {option} 4GiB or 512MiB")
    return parse_size(stripped)


def is_disk_full(err: BaseException) -> bool:
    """An ``OSError`` meaning no space (or quota) left on the device."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
