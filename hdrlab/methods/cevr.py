"""CEVR (Chen et al., ICCV 2023) trained on its own from exposure brackets, scored through a merger.

Official training (github skchen1993/2023_CEVR ``train_strategy/train_warmupLoss.py``, deleted in
commit e3d0c92; flags of its only recorded run, ``--LR_CosAnneal --FloatLoss --Float_eff=0.1
--batch_size=4 --num_epoch=1250``; see :mod:`hdrlab.models.generators.cevr` for the full summary):

* two networks trained separately: B (``s >= 0``) on targets EV {0, 1, 2, 3}, D (``s <= 0``) on
  {-3, ..., 0}, source always the EV-0 image, one uniformly drawn target per sample;
* loss ``sum|f(x,s) - y| + 0.1 sum|f(f(x,s/2),s/2) - y|``, the cycle term only once the test PSNR
  (mean over images and non-zero targets, unclamped outputs) exceeded 28 dB;
* Adam lr 2e-4 (betas 0.9/0.999, no weight decay), CosineAnnealingWarmRestarts(T_0 = 10 epochs,
  T_mult = 2, eta_min = 0) stepped every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from hdrlab.data.batch import HDRBatch, example_bracket
from hdrlab.errors import ConfigError
from hdrlab.losses.cevr import CEVRLoss, Reduction, cycle_prediction
from hdrlab.methods.stack_generator import StackGeneratorMethod
from hdrlab.models.generators.cevr import CEVR_DEFAULT_EV, CEVRGenerator
from hdrlab.models.mergers.base import StackMerger

__all__ = ["CEVRMethod", "CEVR_TRAIN_BRACKET", "exposure_pool_with_input", "sgdr_factor", "sample_half_targets"]

#: The VDS training brackets (integer EV -3 ... 3 around the input; the input itself is EV 0).
CEVR_TRAIN_BRACKET: tuple[float, ...] = (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)


def exposure_pool_with_input(batch: HDRBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's bracket plus the input ``ldr`` at ev 0 (unless the bracket has an ev-0 member).

    Returns:
        ``(images [B, M, 3, H, W] in [0, 1], ev [B, M])`` sorted by ascending ev.

    Raises:
        ConfigError: the batch has no bracket.
    """
    if "stack" not in batch or "ev" not in batch:
        raise ConfigError("CEVRMethod trains on exposure brackets but the batch has no 'stack'/'ev': "
                          "set data.init_args.bracket_ev, e.g. [-3, -2, -1, 1, 2, 3]")
    images, ev = batch["stack"], batch["ev"].to(batch["stack"].dtype)
    if bool((ev == 0).any(dim=1).all()):
        return images, ev
    images = torch.cat([images, batch["ldr"].unsqueeze(1)], dim=1)
    ev = torch.cat([ev, ev.new_zeros(ev.shape[0], 1)], dim=1)
    order = ev.argsort(dim=1)
    images = torch.take_along_dim(images, order.view(*order.shape, 1, 1, 1), dim=1)
    return images, torch.take_along_dim(ev, order, dim=1)


def sample_half_targets(ev: torch.Tensor, *, up: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """One target index per row, uniform over the members with ``ev >= 0`` (``up``) or ``ev <= 0``.

    The ev-0 member (the input) is a candidate, as in the official half datasets.

    Args:
        ev: ``[B, M]`` pool exposure values (each row holds 0).
        up: the B half (``ev >= 0``) or the D half (``ev <= 0``).
        generator: CPU random generator (None: the global torch RNG).

    Returns:
        ``[B]`` long indices into ``M``.
    """
    allowed = (ev >= 0) if up else (ev <= 0)
    scores = torch.rand(ev.shape, generator=generator).to(ev.device)
    return torch.where(allowed, scores, torch.full_like(scores, -1.0)).argmax(dim=1)


def sgdr_factor(step: int, *, period: int, mult: int = 2) -> float:
    """Learning-rate factor of CosineAnnealingWarmRestarts(T_0=``period``, T_mult=``mult``, eta_min=0).

    ``0.5 * (1 + cos(pi * t_cur / T_i))`` with the restart cycle ``i`` containing ``step``.
    """
    if period <= 0 or mult < 1:
        raise ConfigError(f"sgdr period={period} must be > 0 and mult={mult} >= 1")
    if mult == 1:
        t_cur, t_i = step % period, period
    else:
        n = int(math.floor(math.log(step / period * (mult - 1) + 1, mult)))
        t_cur = step - period * (mult**n - 1) // (mult - 1)
        t_i = period * mult**n
        while t_cur < 0:  # float rounding of the log at a restart boundary
            t_i //= mult
            t_cur += t_i
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * mult
    return 0.5 * (1.0 + math.cos(math.pi * t_cur / t_i))


class CEVRMethod(StackGeneratorMethod):
    """CEVR generator (two EV-conditioned networks) trained from brackets; evaluated by merging its stack.

    Each training step trains both networks on the batch: for every image one target of the
    ``ev >= 0`` half of the pool (bracket + input at ev 0) for the B network and one of the
    ``ev <= 0`` half for the D network (:func:`sample_half_targets`), with :class:`CEVRLoss` on
    each; the two losses are summed (the parameters are disjoint, so with Adam this equals the
    official two separate runs up to the shared target draw and batch).

    Cycle warm-up: the cycle term is off until a validation epoch whose mean PSNR (dB, per image
    and non-zero bracket member, unclamped outputs against the bracket, both networks) exceeds
    ``cycle_warmup_psnr``; the switch is the persistent buffer ``cycle_active`` (kept in
    checkpoints). ``cycle_warmup_psnr=None`` keeps the cycle term on from the start.

    Logged terms: ``l1`` and ``cycle`` weighted, summed over both networks; validation logs
    ``val/exposure_psnr`` (the warm-up statistic).

    Args:
        width: channel multiplier of both networks (1.0 = official, 6,583,184 parameters).
        pretrained_encoder: ImageNet VGG16-BN encoders (official True; the local
            ``vgg16_bn-6c64b313.pth``, never downloaded).
        ev: inference ev set (official :data:`CEVR_DEFAULT_EV`, -3 ... 3 in 0.5 steps).
        merger: stack merger for evaluation (default ``DebevecMerger(crf="known")``).
        loss_weights: overrides of ``{"l1": 1, "cycle": 0.1}``.
        reduction: ``"sum"`` (official) or ``"mean"``.
        cycle_warmup_psnr: the official ``warmup_thr`` 28 dB; None = cycle term always on.
        optimizer: ``adam`` (official).
        lr: official 2e-4.
        restart_steps: SGDR first period in optimizer steps (official: 10 epochs; 960 steps
            assuming VDS's 96 training stacks x 4 targets per half at batch 4); None = constant
            rate (or ``lr_milestones``).
        restart_mult: SGDR period multiplier (official 2).
        **kwargs: :class:`HDRMethod` options.

    Deviations from the official code:

    * Brackets are synthetic (procedural radiance, sampled CRFs) instead of the VDS stacks; the
      source of a pair is the data's input at ev 0.
    * The B and D networks train in one run on the same batches (official: two runs).
    * The warm-up statistic is computed on this run's validation data (official: the VDS test set).
    * SGDR period counted in optimizer steps (official: in epochs of its dataset, stepped with
      the fractional epoch).
    * The authors' merge of the generated stack is not part of the code; a configurable merger
      (default known-CRF Debevec) scores it.
    """

    output_domain = "linear"
    file_options = ("pretrained_encoder",)

    def __init__(
        self,
        *,
        width: float = 1.0,
        pretrained_encoder: bool = True,
        ev: Sequence[float] = CEVR_DEFAULT_EV,
        merger: StackMerger | None = None,
        loss_weights: Mapping[str, float] | None = None,
        reduction: Reduction = "sum",
        cycle_warmup_psnr: float | None = 28.0,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 2e-4,
        restart_steps: int | None = 960,
        restart_mult: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, **kwargs)
        if restart_steps is not None and self.lr_milestones:
            raise ConfigError("CEVRMethod: restart_steps and lr_milestones are both set; "
                              "set restart_steps: null to use step milestones")
        if restart_steps is not None:
            sgdr_factor(0, period=int(restart_steps), mult=int(restart_mult))  # validates
        self.save_hyperparameters(ignore=["merger"])
        self.generator = CEVRGenerator(ev=ev, width=width, pretrained_encoder=pretrained_encoder)
        self.set_merger(merger)
        self.loss = CEVRLoss(weights=loss_weights, reduction=reduction)
        self.cycle_warmup_psnr = cycle_warmup_psnr
        self.register_buffer("cycle_active", torch.tensor(cycle_warmup_psnr is None))
        self.restart_steps = None if restart_steps is None else int(restart_steps)
        self.restart_mult = int(restart_mult)
        self._psnr_sum = 0.0
        self._psnr_count = 0

    # ------------------------------------------------------------------ structure
    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """``increase`` (B network, ev > 0) and ``decrease`` (D network, ev < 0)."""
        return {"increase": self.generator.increase, "decrease": self.generator.decrease}

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """The base example batch plus a bracket ``stack``/``ev`` at the training bracket (-3 ... 3 EV)."""
        batch = super().example_batch(batch_size=batch_size, height=height, width=width, device=device)
        batch["stack"], batch["ev"] = example_bracket(batch["hdr"], CEVR_TRAIN_BRACKET)
        return batch

    # ------------------------------------------------------------------ training
    def half_losses(self, batch: HDRBatch, *, up: bool, cycle: bool,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:class:`CEVRLoss` of the B (``up``) or D network on one drawn target per image."""
        images, ev = exposure_pool_with_input(batch)
        index = sample_half_targets(ev, up=up, generator=generator)
        rows = torch.arange(images.shape[0], device=images.device)
        target, step = images[rows, index], ev[rows, index]
        net = self.generator.increase if up else self.generator.decrease
        x = batch["ldr"]
        pred = net(x, step)
        return self.loss(pred=pred, target=target, cycle=cycle_prediction(net, x, step) if cycle else None)

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both networks' official loss, summed; terms weighted and summed over the networks."""
        self._check_size(batch["ldr"])
        cycle = bool(self.cycle_active)
        total_up, up = self.half_losses(batch, up=True, cycle=cycle)
        total_down, down = self.half_losses(batch, up=False, cycle=cycle)
        named = {name: self.loss.weights[name] * (up[name] + down[name]) for name in up}
        return total_up + total_down, named

    def _check_size(self, ldr: torch.Tensor) -> None:
        stride = self.generator.stride
        if ldr.shape[-1] % stride or ldr.shape[-2] % stride:
            raise ConfigError(f"CEVRMethod training crops {tuple(ldr.shape[-2:])} must be multiples of {stride}; "
                              f"set data.init_args.patch_size to a multiple of {stride} (official 256)")

    # ------------------------------------------------------------------ validation / warm-up
    def exposure_psnr(self, batch: HDRBatch) -> torch.Tensor:
        """Per-image PSNR (dB) of the unclamped B/D outputs against every non-zero bracket member:
        ``[B * K]`` (official ``avg_psnr``: ``-10 log10(mse + 1e-8)``, MSE over ``3*H*W``)."""
        images, ev = exposure_pool_with_input(batch)
        x = batch["ldr"]
        scores = []
        for k in range(images.shape[1]):
            step = ev[:, k]
            if not bool((step != 0).all()):
                continue
            up = bool((step > 0).all())
            net = self.generator.increase if up else self.generator.decrease
            mse = (net(x, step) - images[:, k]).square().flatten(1).mean(dim=1)
            scores.append(-10.0 * torch.log10(mse + 1e-8))
        return torch.cat(scores) if scores else x.new_zeros(0)

    def validation_step(self, batch: HDRBatch, batch_idx: int) -> None:
        """Merged-stack metrics (base) and the warm-up PSNR over the bracket."""
        super().validation_step(batch, batch_idx)
        if "stack" in batch:
            scores = self.exposure_psnr(batch)
            self._psnr_sum += float(scores.sum())
            self._psnr_count += scores.numel()

    def on_validation_epoch_end(self) -> None:
        """Log ``val/exposure_psnr``; switch the cycle term on once it exceeds ``cycle_warmup_psnr``."""
        super().on_validation_epoch_end()
        if self._psnr_count:
            mean = self._psnr_sum / self._psnr_count
            self.log("val/exposure_psnr", mean, sync_dist=True)
            if self.cycle_warmup_psnr is not None and mean > self.cycle_warmup_psnr and not self.trainer.sanity_checking:
                self.cycle_active.fill_(True)
        self._psnr_sum, self._psnr_count = 0.0, 0

    def scheduler_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """SGDR (cosine with warm restarts, period ``restart_steps`` x ``restart_mult``^i) per optimizer step."""
        if self.restart_steps is None:
            return super().scheduler_config(optimizer)
        period, mult = self.restart_steps, self.restart_mult
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: sgdr_factor(step, period=period, mult=mult))
        return {"scheduler": scheduler, "interval": "step"}
