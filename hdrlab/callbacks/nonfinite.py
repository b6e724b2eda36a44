"""Non-finite training: what ``hdrlab fit --on_nonfinite stop|skip`` does when a loss or gradient
is NaN or infinite.

:class:`NonFiniteGuard` checks, for every optimizer step, the loss and its named terms as the
method logs them (``train/loss``, ``train/loss/<term>``: :meth:`hdrlab.methods.base.HDRMethod.training_step`)
after each backward pass, and the gradients before the optimizer step:

* ``stop`` (default): raises :class:`NonFiniteError`, one line naming the global step (the number of
  optimizer steps completed before the failing one) and the non-finite term(s) / parameter(s); the
  command line exits 1.
* ``skip``: drops that step's gradients (set to ``None``, so the optimizer leaves the weights and
  its state unchanged), warns with the step and the term(s), and counts the skips
  (``train/nonfinite_skips``; kept in checkpoints).

Weights that turn non-finite in an optimizer step despite finite gradients (an overflow) stop the
run in both modes. No checkpoint with non-finite weights or optimizer state is written: the guard
refuses such a save (:meth:`NonFiniteGuard.on_save_checkpoint`) and
:class:`~hdrlab.callbacks.run_artifacts.LastCheckpoint` checks :func:`nonfinite_state` before its
saves, including the one at an interruption. With ``16-mixed`` precision the gradient scaler
already skips steps with non-finite gradients, so only the loss terms are checked there.

Cost per optimizer step: two fused checks (:func:`_all_finite`: one kernel and one device
synchronisation each), one over the loss terms and the gradients before the step, one over the weights
the optimizer updated after it; names are looked up only when a check fails. The loss terms come from
the method (:attr:`hdrlab.methods.base.HDRMethod.last_train_terms`, set by its ``training_step``) or,
for a method that logs its own, from ``trainer.callback_metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch

from hdrlab.callbacks.steps import logging_batch
from hdrlab.errors import ConfigError, RunFailure

__all__ = ["MODES", "NonFiniteError", "NonFiniteGuard", "nonfinite_names", "nonfinite_state"]

#: the choices of ``--on_nonfinite``.
MODES = ("stop", "skip")
#: names listed in one message before "and N more".
_SHOWN = 4


class NonFiniteError(RunFailure):
    """Training produced a NaN / infinite loss, gradient or weight; the message names the global step
    and what went non-finite."""


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()):
            return True
        return bool(torch.isfinite(value).all())
    if isinstance(value, float):
        return math.isfinite(value)
    return True


#: elements concatenated into one :func:`torch.isfinite` call by :func:`_all_finite`'s fallback (bounds its copy).
_CHUNK = 1 << 22


def _fused_nonfinite(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """A one-element tensor, non-zero when one of ``tensors`` (floating point, on one device) holds a
    NaN or infinity, from one fused kernel: the gradient scaler's check (``inv_scale`` 1 leaves the
    values as they are); ``None`` where that kernel refuses them (device, dtype, PyTorch build)."""
    check = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)
    if check is None:
        return None
    device = tensors[0].device
    try:
        found = torch.zeros(1, device=device)
        with torch.no_grad():
            check(tensors, found, torch.ones(1, device=device))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    return found


def _concatenated_nonfinite(group: list[torch.Tensor]) -> list[torch.Tensor]:
    """Fallback of :func:`_fused_nonfinite`: flags (true: all finite) of chunks of at most
    :data:`_CHUNK` elements, each flattened and concatenated into one :func:`torch.isfinite` call."""
    flags: list[torch.Tensor] = []
    chunk: list[torch.Tensor] = []
    size = 0
    for t in group:
        chunk.append(t.reshape(-1))
        size += t.numel()
        if size >= _CHUNK:
            flags.append(torch.isfinite(torch.cat(chunk)).all())
            chunk, size = [], 0
    if chunk:
        flags.append(torch.isfinite(torch.cat(chunk)).all())
    return flags


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """All floating-point ``tensors`` finite, with one device synchronisation.

    One fused kernel checks them all (the gradient scaler's non-finite check, :func:`_fused_nonfinite`);
    where it refuses the list (several devices, a dtype it lacks), the tensors are grouped by device and
    dtype and each group is checked by that kernel or, failing that, flattened and concatenated (at
    most :data:`_CHUNK` elements per chunk) into a few :func:`torch.isfinite` calls. A model with
    hundreds of parameter tensors costs a few kernel launches per check, not two per tensor.
    """
    tensors = list(tensors)
    if not tensors:
        return True
    found = _fused_nonfinite(tensors)
    if found is not None:
        return not bool(found)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        if t.is_floating_point():
            groups.setdefault((t.device, t.dtype), []).append(t.detach())
    bad: list[torch.Tensor] = []  # non-zero: non-finite
    for group in groups.values():
        found = _fused_nonfinite(group)
        if found is not None:
            bad.append(found)
        else:
            bad += [~flag for flag in _concatenated_nonfinite(group)]
    if not bad:
        return True
    device = bad[0].device
    return not bool(torch.stack([b.reshape(()).to(device, torch.float32) for b in bad]).any())


def nonfinite_names(named: Iterable[tuple[str, Any]]) -> list[str]:
    """The names whose tensors (or nested dicts / lists of tensors) hold a NaN or infinity."""
    bad: list[str] = []

    def visit(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(f"{name}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f"{name}.{i}", item)
        elif not _finite(value):
            bad.append(name)

    for name, value in named:
        visit(name, value)
    return bad


def nonfinite_state(module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer] = ()) -> list[str]:
    """Parameters and buffers of ``module`` and optimizer state entries holding a NaN or infinity."""
    bad = nonfinite_names(module.state_dict().items())
    for i, optimizer in enumerate(optimizers):
        bad += [f"optimizer{i}.{name}" for name in nonfinite_names(optimizer.state_dict().get("state", {}).items())]
    return bad


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


class NonFiniteGuard(L.Callback):
    """Stop or skip optimizer steps whose loss or gradients are not finite (module docstring).

    Args:
        mode: ``"stop"`` or ``"skip"``.
    """

    def __init__(self, mode: str = "stop") -> None:
        if mode not in MODES:
            raise ConfigError(f"--on_nonfinite {mode!r} is not a choice; use stop or skip")
        self.mode = mode
        self.skipped = 0
        self._terms: list[tuple[str, Any]] = []  # (name, value) of the loss terms since the last optimizer step
        self._stepped: list[torch.Tensor] = []  # parameters of the optimizer steps of the current batch

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._terms, self._stepped = [], []

    @staticmethod
    def _loss_terms(trainer: L.Trainer, pl_module: L.LightningModule) -> list[tuple[str, Any]]:
        """``(logged name, value)`` of the loss and its terms of the current training step: the method's
        own record (:attr:`~hdrlab.methods.base.HDRMethod.last_train_terms`, consumed here) when it keeps
        one, else ``train/loss`` and ``train/loss/<term>`` of ``trainer.callback_metrics``."""
        terms = getattr(pl_module, "last_train_terms", None)
        if isinstance(terms, Mapping):
            pl_module.last_train_terms = None  # never read twice (e.g. a method that stops setting it)
            return list(terms.items())
        metrics = trainer.callback_metrics
        return [(key, value) for key, value in metrics.items() if key == "train/loss" or key.startswith("train/loss/")]

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # kept, not checked: checked with the gradients before the optimizer step (one synchronisation)
        self._terms += self._loss_terms(trainer, pl_module)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        pending, self._terms = self._terms, []
        stepped = [p for group in optimizer.param_groups for p in group["params"]]
        self._stepped += stepped  # their weights are checked at the batch end
        check_grads = str(trainer.precision) not in ("16-mixed", "16")  # the gradient scaler handles fp16 overflow
        grads = [p for p in stepped if p.grad is not None] if check_grads else []
        values = [v for _, v in pending if isinstance(v, torch.Tensor)] + [p.grad for p in grads]
        floats_finite = all(_finite(v) for _, v in pending if not isinstance(v, torch.Tensor))
        if floats_finite and _all_finite(values):
            return
        terms: list[str] = []
        for name, value in pending:
            if not _finite(value) and name not in terms:
                terms.append(name)
        params: list[str] = []
        if grads and not _all_finite(p.grad for p in grads):
            names = {id(p): n for n, p in pl_module.named_parameters()}
            params = [names.get(id(p), "?") for p in grads if not _finite(p.grad)]
        if not terms and not params:
            return
        what = "; ".join(part for part in (
            f"loss {_listing(terms)}" if terms else "",
            f"gradient of {_listing(params)}" if params else "") if part)
        step = trainer.global_step
        if self.mode == "stop":
            raise NonFiniteError(
                f"training stopped at global step {step}: non-finite {what}; lower the learning rate, check the "
                "data for NaN/inf, or run with --on_nonfinite skip to skip such steps")
        optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"--on_nonfinite skip: skipped the optimizer step at global step {step} (non-finite {what}); "
                       f"{self.skipped} step(s) skipped so far")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.mode == "skip" and logging_batch(trainer, stepped=True):  # hdrlab.callbacks.steps
            pl_module.log("train/nonfinite_skips", float(self.skipped))
        # the weights the optimizer step(s) of this batch updated (none while gradients accumulate)
        stepped, self._stepped = self._stepped, []
        if stepped and not _all_finite(stepped):
            ids = {id(p) for p in stepped}
            bad = [n for n, p in pl_module.named_parameters() if id(p) in ids and not _finite(p)]
            raise NonFiniteError(
                f"training stopped at global step {trainer.global_step}: weights {_listing(bad)} became non-finite "
                "in the optimizer step (finite gradients, an overflow); lower the learning rate")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        bad = nonfinite_names((f"state_dict.{k}", v) for k, v in (checkpoint.get("state_dict") or {}).items())
        for i, state in enumerate(checkpoint.get("optimizer_states") or []):
            bad += [f"optimizer{i}.{n}" for n in nonfinite_names((state.get("state") or {}).items())]
        if bad:
            raise NonFiniteError(
                f"refusing to write a checkpoint at global step {trainer.global_step}: non-finite {_listing(bad)}")
