"""Stage-wise training inside one ``fit``: the stages of a paper's schedule run in order, each for
its share of the run's training budget.

Papers such as SingleHDR train their sub-networks one stage at a time (each with a fresh Adam at
its own learning rate) and then fine-tune them jointly. As separate runs that schedule is a recipe
(``hdrlab recipe``, which also keeps a best checkpoint per stage); :class:`StagewiseTraining` is the
same schedule as one run, so that ``hdrlab fit --config <experiment>`` trains the whole pipeline the
official way by default:

* the run's budget in samples is :func:`training_budget_samples` (``--max_samples``, else
  ``trainer.max_steps``/``max_epochs`` x batch size); stage ``k`` of ``n`` owns the samples
  ``[B * S_{k-1} / S_n, B * S_k / S_n)`` with ``S_k`` the cumulative shares
  (:func:`stage_boundaries`);
* at the first batch of a stage only that stage's sub-networks train (the others are frozen:
  ``requires_grad=False``, eval mode), the objective is that stage's, every optimizer's state is
  cleared (a fresh Adam, as a new official run) and its learning rate is the stage's;
* the active stage is saved in checkpoints, so a resumed run continues the stage it was in with
  its optimizer state.

A stage that ends up with no batch (a tiny budget) is skipped. A configured ``lr_scheduler`` runs
on top of the stage rates; schedules per stage need the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hdrlab.errors import ConfigError

__all__ = ["STAGEWISE", "StagewiseTraining", "stage_boundaries", "training_budget_samples"]

#: The ``stage`` value that selects the in-run schedule.
STAGEWISE = "stagewise"


def stage_boundaries(shares: Mapping[str, float], total: int) -> list[tuple[str, int]]:
    """``(stage, end)`` per stage in order: stage ``k`` trains while ``samples_seen < end_k``.

    Args:
        shares: stage name -> share (> 0), in schedule order.
        total: the run's budget in samples (> 0).

    Returns:
        The cumulative ends ``round(total * S_k / S_n)``; the last equals ``total``.
    """
    if not shares or any(float(v) <= 0 for v in shares.values()):
        raise ConfigError(f"stage shares must be positive numbers, got {dict(shares)}")
    if total <= 0:
        raise ConfigError(f"a stage-wise run needs a positive training budget, got {total} samples")
    norm = sum(float(v) for v in shares.values())
    ends, acc = [], 0.0
    for name, share in shares.items():
        acc += float(share)
        ends.append((name, int(round(total * acc / norm))))
    return ends


def training_budget_samples(trainer: Any, batch_size: int) -> int | None:
    """The run's training budget in samples (all processes together), or None when unbounded.

    The smallest of ``max_samples`` of a callback that declares one (``--max_samples``) and the
    trainer's step budget (``estimated_stepping_batches`` x ``accumulate_grad_batches`` x
    ``batch_size`` x ``world_size``, from ``max_steps`` or ``max_epochs``).
    """
    budgets = [int(cb.max_samples) for cb in getattr(trainer, "callbacks", ()) if getattr(cb, "max_samples", None)]
    try:
        steps = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - no dataloader length yet: the step budget is unknown
        steps = math.inf
    if steps is not None and math.isfinite(steps):
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        world = int(getattr(trainer, "world_size", 1) or 1)
        budgets.append(int(steps) * accumulate * int(batch_size) * world)
    return min(budgets) if budgets else None


class StagewiseTraining:
    """Mixin for an :class:`hdrlab.methods.HDRMethod` whose ``stage`` may be ``"stagewise"``.

    The host class declares :attr:`stage_trainable` (stage -> trained sub-network names) and
    :attr:`stage_learning_rates` (stage -> official Adam rate), provides :meth:`stage_networks`
    (default ``subnetworks()``) and a ``train()`` that keeps networks outside
    ``self.trainable_subnets`` in eval mode, calls
    :meth:`init_stagewise` in ``__init__`` and dispatches its objective on :attr:`active_stage`.
    """

    stage_trainable: Mapping[str, tuple[str, ...]] = {}
    stage_learning_rates: Mapping[str, float] = {}

    def init_stagewise(self, shares: Mapping[str, float], *, lr: float | None, idle_stage: str) -> None:
        """Set up the schedule (``stage == "stagewise"`` only).

        Args:
            shares: stage -> share of the budget, in order (e.g. official iterations).
            lr: one rate for every stage, or None for each stage's official rate.
            idle_stage: the stage :attr:`active_stage` reports outside a fit, whose networks are
                the trainable ones until the first batch (the host sets them): the largest step, so
                that parameter counts, memory estimates and ``compute_loss`` calls before training
                see it.
        """
        unknown = sorted(set(shares) - set(self.stage_trainable))
        if unknown:
            raise ConfigError(f"{type(self).__name__} stage_shares has unknown stages {unknown}; "
                              f"use some of {[s for s in self.stage_trainable if s != STAGEWISE]}")
        stage_boundaries(shares, 1)  # validates the shares
        self.stage_shares = dict(shares)
        self._stage_lr = lr
        self._idle_stage = idle_stage
        self._current_stage: str | None = None
        self._restored_stage: str | None = None

    def trainable_parameters(self) -> list[Any]:
        """In a stage-wise run: the parameters of every network some stage trains (the optimizer
        is built once; each stage's ``requires_grad`` selects what moves)."""
        if self.stage != STAGEWISE:
            return super().trainable_parameters()
        networks = self.stage_networks()
        names = dict.fromkeys(n for s in self.stage_shares for n in self.stage_trainable[s])
        return list({id(p): p for n in names for p in networks[n].parameters()}.values())

    def stage_networks(self) -> dict[str, Any]:
        """Every network a stage may train or freeze, by name."""
        return self.subnetworks()

    @property
    def active_stage(self) -> str:
        """The stage whose objective runs now: ``stage`` itself, or within a stage-wise run the
        scheduled stage (the idle stage before the first batch)."""
        if self.stage != STAGEWISE:
            return self.stage
        return self._current_stage or self._idle_stage

    def scheduled_stage(self, samples_seen: int, batch_size: int) -> str:
        """The stage that owns the next batch, from the run's budget (:func:`stage_boundaries`)."""
        total = training_budget_samples(self.trainer, batch_size)
        if total is None:
            raise ConfigError(f"{type(self).__name__} stage='stagewise' splits the run's budget over the stages, "
                              "but the run has none; set trainer.max_steps or --max_samples")
        for name, end in stage_boundaries(self.stage_shares, total):
            if samples_seen < end:
                return name
        return next(reversed(self.stage_shares))

    def enter_stage(self, name: str, *, fresh_optimizer: bool = True) -> None:
        """Train ``name``'s sub-networks only; with ``fresh_optimizer``, clear every optimizer's
        state and set the stage's learning rate (a new official run)."""
        self._current_stage = name
        self.trainable_subnets = tuple(self.stage_trainable[name])
        for sub_name, sub in self.stage_networks().items():
            sub.requires_grad_(sub_name in self.trainable_subnets)
            sub.zero_grad(set_to_none=True)
        self.train(self.training)
        if fresh_optimizer and self._trainer is not None:
            rate = self.stage_learning_rates[name] if self._stage_lr is None else self._stage_lr
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()
                for group in optimizer.param_groups:
                    group["lr"] = rate
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(f"{type(self).__name__}: stage {name!r} from sample {self.samples_seen} "
                           f"(sub-networks {list(self.trainable_subnets)}, lr {rate:g})")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.stage != STAGEWISE:
            return
        name = self.scheduled_stage(self.samples_seen, int(batch["ldr"].shape[0]))
        if name != self._current_stage:
            # resuming inside the stage the checkpoint was saved in keeps its optimizer state
            resumed = self._current_stage is None and self._restored_stage == name
            self.enter_stage(name, fresh_optimizer=not resumed)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.stage == STAGEWISE and self._current_stage is not None:
            checkpoint.setdefault("hdrlab", {})["stage"] = self._current_stage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.stage == STAGEWISE:
            self._restored_stage = checkpoint.get("hdrlab", {}).get("stage")

