"""Deep Recursive HDRI (Lee, An, Kang, ECCV 2018) as a method: two conditional GANs trained on
adjacent-EV pairs, a recursive stack at inference, merged into radiance.

Training (official ``solver.Solver.train``): a pair (lower exposure ``x``, higher ``y``, ``step_ev``
apart, official 1 EV) trains both directions: ``G_up: x -> y`` judged by ``D_up(. ++ x)`` and
``G_down: y -> x`` judged by ``D_down(. ++ y)``, all in ``[-1, 1]``. Objectives
(:class:`hdrlab.losses.deep_recursive.DeepRecursiveLoss`): ``L_G = L1 + 0.01 L_GAN(D(G(c), c), 0.9)``,
``L_D = 0.5 L_GAN(D(y, c), 0.9) + 0.5 L_GAN(D(G(c), c), 0.1)`` (least squares on sigmoid scores).
The first ``pretrain_epochs`` (official 10) train the generators with L1 alone; then every batch
makes one discriminator step and then one generator step, in that order, with a fresh generator
forward for the generator step (new dropout masks, the just-updated discriminator).

Evaluation: :class:`~hdrlab.models.generators.deep_recursive.DeepRecursiveGenerator` makes the
recursive stack (official -3 .. +3 EV) and ``merger`` merges it with the batch's CRF attached; the
default is the known-CRF Debevec merge (:class:`hdrlab.models.mergers.DebevecMerger` ``crf="known"``),
so the output is linear radiance relative to the input exposure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from hdrlab.data.batch import HDRBatch, example_bracket
from hdrlab.errors import ConfigError
from hdrlab.losses.deep_recursive import (
    DEEP_RECURSIVE_FAKE_LABEL,
    DEEP_RECURSIVE_GAN_WEIGHT,
    DEEP_RECURSIVE_REAL_LABEL,
    DeepRecursiveLoss,
)
from hdrlab.methods.stack_generator import StackGeneratorMethod
from hdrlab.models.generators.deep_recursive import (
    DEEP_RECURSIVE_DEFAULT_EV,
    DeepRecursiveGenerator,
    PatchDiscriminator,
    Requantize,
)
from hdrlab.models.mergers.base import StackMerger


def adjacent_pairs(batch: HDRBatch, *, step_ev: float = 1.0, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One (lower, higher) exposure pair ``step_ev`` apart per image, drawn uniformly.

    The pool is the batch's bracket plus the input ``ldr`` at ev 0 (unless the bracket has its own
    ev-0 member); the pairs are all pool members whose ev differ by exactly ``step_ev`` (official:
    adjacent VDS exposures, ``exposure_value = 1``). The bracket's ev set is shared by the batch.

    Args:
        batch: needs ``stack [B, N, 3, H, W]`` and ``ev [B, N]`` (data made with ``bracket_ev``) and ``ldr``.
        step_ev: EV distance of a pair.
        generator: CPU random generator (``None``: the global torch RNG).

    Returns:
        ``(lower, higher)``: two ``[B, 3, H, W]`` display-referred images in ``[0, 1]``.

    Raises:
        ConfigError: no bracket, or no two pool members ``step_ev`` apart.
    """
    if "stack" not in batch or "ev" not in batch:
        raise ConfigError("DeepRecursiveMethod trains on adjacent-EV pairs but the batch has no 'stack'/'ev': "
                          "set data.init_args.bracket_ev, e.g. [-3, -2, -1, 1, 2, 3]")
    images, ev = batch["stack"], batch["ev"].to(batch["stack"].dtype)
    values = [float(v) for v in ev[0].tolist()]
    if 0.0 not in values:
        images = torch.cat([images, batch["ldr"].unsqueeze(1)], dim=1)
        values.append(0.0)
    pairs = [(i, j) for i, a in enumerate(values) for j, b in enumerate(values) if abs((b - a) - step_ev) < 1e-6]
    if not pairs:
        raise ConfigError(f"DeepRecursiveMethod: the bracket ev {sorted(values)} (with the input at 0) has no two "
                          f"exposures {step_ev} EV apart; set data.init_args.bracket_ev, e.g. [-3, -2, -1, 1, 2, 3]")
    table = torch.tensor(pairs, dtype=torch.long)
    pick = table[torch.randint(len(pairs), (images.shape[0],), generator=generator)].to(images.device)
    rows = torch.arange(images.shape[0], device=images.device)
    return images[rows, pick[:, 0]], images[rows, pick[:, 1]]


class DeepRecursiveMethod(StackGeneratorMethod):
    """Deep Recursive HDRI: ``G_up``/``G_down`` + ``D_up``/``D_down`` trained adversarially, scored through a merger.

    Lightning manual optimisation (``automatic_optimization = False``): :meth:`configure_optimizers`
    returns ``[generator_optimizer, discriminator_optimizer]`` (official Adam, lr 2e-4, betas
    (0.5, 0.999) for both), and :meth:`training_step` runs :meth:`optimization_step`. The
    schedule is epoch based as the official code: epochs ``< pretrain_epochs`` are L1-only
    generator steps; afterwards, at adversarial epoch ``e`` (counted from 0 after pre-training),
    both learning rates are ``lr * lr_decay_factor ** ((e + 1) // lr_decay_every)`` (official:
    halved when ``(e + 1) % 20 == 0``). ``trainer.global_step`` counts optimizer steps (one per
    batch in pre-training, two afterwards): give budgets in epochs or samples.

    Logged: ``train/loss`` (generator objective, both directions), ``train/loss/l1``,
    ``train/loss/gan`` (weighted adversarial term), ``train/loss/discriminator`` (both
    directions) and ``train/adversarial`` (0 in pre-training, 1 after).

    Args:
        width: channel multiplier of the four networks (1.0 = official: 12,414,194 per generator,
            6,965,441 per discriminator).
        ev: inference ev set, whole multiples of ``step_ev`` (official -3 .. +3 EV).
        base_filters: ``f`` of the generators and discriminators (official 64).
        step_ev: EV distance of a training pair and of one recursive step (official 1).
        requantize: 8-bit re-quantisation between recursive steps (official ``"truncate"``,
            straight-through).
        working_size: ``None`` (recursion at the input size) or the square the official test
            resizes to (256); see :class:`DeepRecursiveGenerator`.
        dropout: decoder dropout (official 0.5).
        dropout_at_inference: official True (dropout on at test).
        batch_statistics: official True (BatchNorm normalises by the batch at test too).
        merger: stack merger for evaluation (default ``DebevecMerger(crf="known")``), frozen.
        pretrain_epochs: L1-only epochs before the adversarial phase (official 10).
        lr_decay_every: adversarial epochs per learning-rate decay (official 20).
        lr_decay_factor: the decay (official 0.5; the code comment says 10x, the code halves).
        gan_weight, real_label, fake_label: loss constants (official 0.01, 0.9, 0.1).
        optimizer, lr, betas, weight_decay: both optimisers (official Adam, 2e-4, (0.5, 0.999), 0).
        **kwargs: :class:`HDRMethod` options (metrics, align, ...); ``lr_milestones`` is refused.

    Deviations from the official code:

    * One optimiser over both generators and one over both discriminators (official: one Adam per
      network). Adam is per parameter and the directions share no parameters, so the updates are
      the same.
    * The discriminator step uses detached fakes. The official step backpropagates into the
      generators too but zeroes their gradients before the generator step, so the updates are the
      same.
    * Training pairs come from synthetic brackets (procedural radiance, sampled CRFs; the data's
      random crop and flips) instead of the VDS stacks resized to a shorter side of 256.
    * The official script crashes as released (TensorBoard loggers commented out); logging here is
      Lightning's.
    * Evaluation merges with a configurable merger (default known-CRF Debevec); the authors used
      the HDR Toolbox's Debevec & Malik with an estimated CRF (arguments not published).
    """

    output_domain = "linear"

    def __init__(
        self,
        *,
        width: float = 1.0,
        ev: Sequence[float] = DEEP_RECURSIVE_DEFAULT_EV,
        base_filters: int = 64,
        step_ev: float = 1.0,
        requantize: Requantize = "truncate",
        working_size: int | None = None,
        dropout: float = 0.5,
        dropout_at_inference: bool = True,
        batch_statistics: bool = True,
        merger: StackMerger | None = None,
        pretrain_epochs: int = 10,
        lr_decay_every: int = 20,
        lr_decay_factor: float = 0.5,
        gan_weight: float = DEEP_RECURSIVE_GAN_WEIGHT,
        real_label: float = DEEP_RECURSIVE_REAL_LABEL,
        fake_label: float = DEEP_RECURSIVE_FAKE_LABEL,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)
        if self.lr_milestones:
            raise ConfigError("DeepRecursiveMethod has its own epoch schedule (lr_decay_every, lr_decay_factor); "
                              "remove lr_milestones")
        if pretrain_epochs < 0:
            raise ConfigError(f"DeepRecursiveMethod.pretrain_epochs={pretrain_epochs} must be >= 0 (official 10)")
        if lr_decay_every < 1 or not 0.0 < lr_decay_factor <= 1.0:
            raise ConfigError(f"DeepRecursiveMethod: lr_decay_every={lr_decay_every} must be >= 1 and "
                              f"lr_decay_factor={lr_decay_factor} in (0, 1] (official 20 and 0.5)")
        self.save_hyperparameters(ignore=["merger"])
        self.automatic_optimization = False
        self.generator = DeepRecursiveGenerator(
            ev=ev, width=width, base_filters=base_filters, step_ev=step_ev, requantize=requantize,
            working_size=working_size, dropout=dropout, dropout_at_inference=dropout_at_inference,
            batch_statistics=batch_statistics)
        self.up_discriminator = PatchDiscriminator(base_filters=base_filters, width=width)
        self.down_discriminator = PatchDiscriminator(base_filters=base_filters, width=width)
        self.set_merger(merger)
        self.loss = DeepRecursiveLoss(gan_weight=gan_weight, real_label=real_label, fake_label=fake_label)
        self.step_ev = float(step_ev)
        self.pretrain_epochs = int(pretrain_epochs)
        self.lr_decay_every = int(lr_decay_every)
        self.lr_decay_factor = float(lr_decay_factor)

    # ------------------------------------------------------------------ structure
    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """``up_generator``, ``down_generator``, ``up_discriminator``, ``down_discriminator``."""
        return {"up_generator": self.generator.up, "down_generator": self.generator.down,
                "up_discriminator": self.up_discriminator, "down_discriminator": self.down_discriminator}

    def generator_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.generator.parameters() if p.requires_grad]

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in (self.up_discriminator, self.down_discriminator) for p in m.parameters() if p.requires_grad]

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """The base example batch plus a bracket ``stack``/``ev`` at the inference ev set (FakeTensor-safe)."""
        batch = super().example_batch(batch_size=batch_size, height=height, width=width, device=device)
        batch["stack"], batch["ev"] = example_bracket(batch["hdr"], [v for v in self.generator.ev if v != 0.0])
        return batch

    # ------------------------------------------------------------------ schedule
    def adversarial_phase(self) -> bool:
        """True once ``current_epoch >= pretrain_epochs`` (the L1-only pre-training is over)."""
        return self.current_epoch >= self.pretrain_epochs

    def scheduled_lr(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (counted from the start of pre-training, official schedule)."""
        adversarial_epoch = epoch - self.pretrain_epochs
        decays = (adversarial_epoch + 1) // self.lr_decay_every if adversarial_epoch >= 0 else 0
        return self.lr * self.lr_decay_factor**decays

    def on_train_epoch_start(self) -> None:
        """Set both optimisers' learning rate to :meth:`scheduled_lr` (idempotent, so resuming is exact)."""
        lr = self.scheduled_lr(self.current_epoch)
        for optimizer in self.optimizers():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """``[generator optimizer, discriminator optimizer]`` (:meth:`build_optimizer`: official Adam 2e-4, (0.5, 0.999))."""
        return [self.build_optimizer(self.generator_parameters()),
                self.build_optimizer(self.discriminator_parameters())]

    # ------------------------------------------------------------------ objectives
    def generator_terms(self, lower: torch.Tensor, higher: torch.Tensor, *, adversarial: bool
                        ) -> dict[str, torch.Tensor]:
        """Generator objective of both directions on a pair (``[B, 3, H, W]`` in [0, 1], ``higher``
        ``step_ev`` brighter): ``{"total", "l1"[, "gan"]}`` summed over up and down."""
        x, y = 2.0 * lower - 1.0, 2.0 * higher - 1.0
        fake_y, fake_x = self.generator.up(x), self.generator.down(y)
        up = self.loss.generator(fake_y, y, self.up_discriminator(fake_y, x) if adversarial else None)
        down = self.loss.generator(fake_x, x, self.down_discriminator(fake_x, y) if adversarial else None)
        return {k: up[k] + down[k] for k in up}

    def discriminator_loss(self, lower: torch.Tensor, higher: torch.Tensor) -> torch.Tensor:
        """``L_D`` of both directions on a pair (fakes generated without gradient), scalar."""
        x, y = 2.0 * lower - 1.0, 2.0 * higher - 1.0
        with torch.no_grad():
            fake_y, fake_x = self.generator.up(x), self.generator.down(y)
        up = self.loss.discriminator(self.up_discriminator(y, x), self.up_discriminator(fake_y, x))
        down = self.loss.discriminator(self.down_discriminator(x, y), self.down_discriminator(fake_x, y))
        return up + down

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator objective of the current phase on one random adjacent pair per image
        (used by the memory estimator; training runs :meth:`optimization_step`)."""
        lower, higher = adjacent_pairs(batch, step_ev=self.step_ev)
        terms = self.generator_terms(lower, higher, adversarial=self.adversarial_phase())
        return terms["total"], {k: v for k, v in terms.items() if k != "total"}

    def _backward(self, loss: torch.Tensor) -> None:
        if self._trainer is not None:
            self.manual_backward(loss)
        else:
            loss.backward()

    def optimization_step(self, batch: HDRBatch, generator_optimizer: Any, discriminator_optimizer: Any,
                          *, adversarial: bool | None = None) -> dict[str, torch.Tensor]:
        """One official training iteration on one adjacent pair per image.

        Adversarial phase: a discriminator step on ``L_D``, then a generator step on ``L_G`` (new
        generator forward, updated discriminators). Pre-training: the generator step on L1 alone.

        Args:
            batch: a batch with a bracket (``stack``/``ev``).
            generator_optimizer, discriminator_optimizer: the two optimisers of :meth:`configure_optimizers`.
            adversarial: phase override (``None``: :meth:`adversarial_phase`).

        Returns:
            Detached ``{"total", "l1"[, "gan", "discriminator"]}``.
        """
        adversarial = self.adversarial_phase() if adversarial is None else adversarial
        lower, higher = adjacent_pairs(batch, step_ev=self.step_ev)
        logged: dict[str, torch.Tensor] = {}
        if adversarial:
            discriminator_optimizer.zero_grad()
            d_loss = self.discriminator_loss(lower, higher)
            self._backward(d_loss)
            discriminator_optimizer.step()
            logged["discriminator"] = d_loss.detach()
        generator_optimizer.zero_grad()
        terms = self.generator_terms(lower, higher, adversarial=adversarial)
        self._backward(terms["total"])
        generator_optimizer.step()
        logged.update({k: v.detach() for k, v in terms.items()})
        return logged

    def training_step(self, batch: HDRBatch, batch_idx: int) -> torch.Tensor:
        generator_optimizer, discriminator_optimizer = self.optimizers()
        adversarial = self.adversarial_phase()
        terms = self.optimization_step(batch, generator_optimizer, discriminator_optimizer, adversarial=adversarial)
        batch_size = batch["ldr"].shape[0]
        self.samples_seen += batch_size * max(1, self.trainer.world_size if self._trainer else 1)
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            if name != "total":
                self.log(f"train/loss/{name}", value, batch_size=batch_size)
        self.log("train/adversarial", float(adversarial), batch_size=batch_size)
        self.log("train/samples_seen", float(self.samples_seen), batch_size=batch_size)
        return terms["total"]


__all__ = ["DeepRecursiveMethod", "adjacent_pairs"]
