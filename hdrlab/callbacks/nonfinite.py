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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch

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


#: elements concatenated into one :func:`torch.isfinite` call by :func:`_all_finite` (bounds its copy).
_CHUNK = 1 << 22


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """All floating-point ``tensors`` finite, with one device synchronisation.

    Tensors of one device and dtype are flattened and concatenated (at most :data:`_CHUNK` elements
    per chunk) so that a model with hundreds of parameter tensors costs a few kernel launches per
    check, not two per tensor.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        if t.is_floating_point():
            groups.setdefault((t.device, t.dtype), []).append(t.detach().reshape(-1))
    flags: list[torch.Tensor] = []
    for group in groups.values():
        chunk: list[torch.Tensor] = []
        size = 0
        for t in group:
            chunk.append(t)
            size += t.numel()
            if size >= _CHUNK:
                flags.append(torch.isfinite(torch.cat(chunk)).all())
                chunk, size = [], 0
        if chunk:
            flags.append(torch.isfinite(torch.cat(chunk)).all())
    if not flags:
        return True
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


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
        self._terms: list[str] = []  # non-finite loss terms since the last optimizer step

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    @staticmethod
    def _loss_terms(trainer: L.Trainer) -> list[str]:
        metrics = trainer.callback_metrics
        return [key for key, value in metrics.items()
                if (key == "train/loss" or key.startswith("train/loss/")) and not _finite(value)]

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for term in self._loss_terms(trainer):
            if term not in self._terms:
                self._terms.append(term)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        terms, self._terms = self._terms, []
        params: list[str] = []
        if str(trainer.precision) not in ("16-mixed", "16"):  # the gradient scaler handles fp16 overflow
            grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if not _all_finite(p.grad for p in grads):
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
        if self.mode == "skip":
            pl_module.log("train/nonfinite_skips", float(self.skipped))
        trained = [(n, p.detach()) for n, p in pl_module.named_parameters() if p.requires_grad]
        if not _all_finite(p for _, p in trained):
            bad = [n for n, p in trained if not _finite(p)]
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
