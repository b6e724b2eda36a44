"""``HDRMethod``: the LightningModule every paper method and the composite derive from.

It owns what all methods share — metrics, the loss-logging names, visual panels for image
logging, ``predict_step``, the optimizer and the samples-seen counter — so a method only says
how it computes its loss and how it predicts:

* :meth:`HDRMethod.compute_loss` ``(batch) -> (loss, {term: value})``;
* :meth:`HDRMethod.predict_image` ``(batch) -> [B, 3, H, W]`` in :attr:`output_domain`.

Declarations read by consumers (``hdrlab budget`` / ``info`` / ``reconstruct``, the sweep tools),
which never name a concrete method:

* :attr:`HDRMethod.output_domain` (``linear`` / ``display``);
* :attr:`HDRMethod.stride`: the multiple training crops and inference inputs must have; by default
  the least common multiple of the ``stride`` its child modules declare (a generator's, a merger's,
  a network's), 1 when none does;
* :attr:`HDRMethod.file_options`: constructor options that name files (checkpoints, curve files,
  pretrained flags); cleared when only shapes matter (FakeTensor builds) or weights come from a
  checkpoint, see :func:`hdrlab.methods.build.without_files`;
* the optimizer (``optimizer``, ``lr``, ``betas``, ``weight_decay``) and the schedule
  (:meth:`HDRMethod.scheduler_config`; step milestones by default) are configured here, once.

Logged names (a contract used by sweeps and reports): ``train/loss``, ``train/loss/<term>``,
``train/samples_seen``, ``val/<metric>`` and ``val/<metric>_clipped`` (``test/...`` in test).
``train/loss`` is logged at every step (progress bar); the terms and ``train/samples_seen`` at the
steps whose values reach the loggers (:func:`hdrlab.callbacks.steps.logging_batch`: every
``trainer.log_every_n_steps``, an epoch's last batch, the batch that reaches ``max_steps``).
A ``linear`` method is scored against ``batch["hdr"]`` with the HDR metrics of
:func:`hdrlab.metrics.build_metrics`; a ``display`` method against
``hdrlab.tonemap.display(batch["hdr"])`` with display-domain metrics (``val/display_psnr``,
``val/display_ssim``), never mixed with the HDR columns.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Sequence

import lightning as L
import torch
from torchmetrics import MetricCollection

from hdrlab import tonemap
from hdrlab.callbacks.steps import logging_batch
from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.metrics import build_metrics
from hdrlab.metrics.kalantari import darkest_relative_scale
from hdrlab.metrics.display import build_display_metrics

OUTPUT_DOMAINS = ("linear", "display")
#: optimizer choices of :class:`HDRMethod` (``optimizer=``)
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
}


def module_stride(module: torch.nn.Module) -> int:
    """The spatial multiple a module declares (its int ``stride`` attribute), else 1. PyTorch's own
    layers (``nn.MaxPool2d``, ...) have a ``stride`` of their own meaning and declare nothing."""
    if type(module).__module__.startswith("torch."):
        return 1
    stride = getattr(module, "stride", 1)
    return int(stride) if isinstance(stride, int) and not isinstance(stride, bool) and stride >= 1 else 1


class HDRMethod(L.LightningModule, ABC):
    """Shared training/evaluation logic (module docstring).

    Args:
        optimizer: ``adam`` (``torch.optim.Adam``, L2 weight decay), ``adamw`` (decoupled weight
            decay) or ``sgd`` (momentum ``betas[0]``); each experiment sets its paper's.
        lr: learning rate.
        betas: Adam betas.
        weight_decay: weight decay.
        lr_milestones: when the learning rate is multiplied by ``lr_gamma`` (empty: constant
            learning rate): whole numbers are optimizer steps; fractions in (0, 1) are fractions
            of the fit's planned steps (:meth:`planned_steps`, rounded to the nearest step), so a
            schedule scales with a ``--max_samples`` budget (e.g. ``[0.2, 0.4, 0.6, 0.8]``).
        lr_gamma: multiplicative decay at each milestone.
        metrics: HDR metric names for linear-domain methods (see :data:`hdrlab.metrics.METRICS`).
        align: scale alignment of the HDR metrics (``none`` / ``median`` / ``lsq_log``).
        white_nits: cd/m^2 of radiance 1.0 for PU21 / ColorVideoVDP.
        num_visuals: images of the first validation batch kept for image logging.
    """

    #: ``"linear"`` (radiance) or ``"display"``; subclasses may set it per instance.
    output_domain: str = "linear"
    #: constructor options that name files to read (module docstring)
    file_options: ClassVar[tuple[str, ...]] = ()
    #: scale of linear predictions: ``"input"`` (radiance relative to the input exposure, the
    #: input's clip level is 1.0) or ``"relative"`` (an arbitrary scale per image, e.g. an output
    #: min-max mapped to [0, 1]); consumers that write radiance (``hdrlab reconstruct``) rescale
    #: ``"relative"`` predictions by one factor per image
    output_scale: ClassVar[str] = "input"
    #: ``predict_image`` bounds its own memory on any image size (it runs on internal patches), so
    #: ``hdrlab reconstruct`` gives it the whole photo unless a tile or a memory budget is asked for
    whole_image_inference: ClassVar[bool] = False

    def __init__(
        self,
        *,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_milestones: Sequence[int | float] = (),
        lr_gamma: float = 0.5,
        metrics: Sequence[str] = ("psnr_mu", "psnr_l", "pu21_psnr", "pu21_ssim"),
        align: str = "median",
        white_nits: float = 200.0,
        num_visuals: int = 2,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"{type(self).__name__}.lr must be > 0, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"{type(self).__name__}.optimizer={optimizer!r} is unknown; use one of {list(OPTIMIZERS)}")
        self.optimizer_name = optimizer
        self.lr = float(lr)
        self.betas = tuple(betas)
        self.weight_decay = float(weight_decay)
        for milestone in lr_milestones:
            whole = isinstance(milestone, int) and not isinstance(milestone, bool) and milestone >= 0
            if not (whole or (isinstance(milestone, float) and 0.0 < milestone < 1.0)):
                raise ConfigError(f"{type(self).__name__}.lr_milestones: {milestone!r} is neither a step (whole "
                                  "number >= 0) nor a fraction of the planned steps in (0, 1)")
        self.lr_milestones = list(lr_milestones)
        self.lr_gamma = float(lr_gamma)
        self.metric_names = list(metrics)
        self.align = align
        self.white_nits = float(white_nits)
        self.num_visuals = int(num_visuals)
        self.samples_seen = 0
        #: the loss and its terms of the latest training step, detached, by their logged names
        #: (``train/loss``, ``train/loss/<term>``): what :class:`~hdrlab.callbacks.NonFiniteGuard` checks
        self.last_train_terms: dict[str, torch.Tensor] | None = None
        self.visuals: dict[str, Any] = {}
        self._metrics: dict[str, MetricCollection] = {}

    @property
    def stride(self) -> int:
        """Multiple that ``H`` and ``W`` of training crops and inputs must have: the least common
        multiple of the strides the child modules declare (:func:`module_stride`); 1 when none does."""
        return math.lcm(1, *(module_stride(child) for child in self.children()))

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of one batch and its named (already weighted) terms."""

    @abstractmethod
    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Prediction ``[B, 3, H, W]`` in :attr:`output_domain` from ``batch["ldr"]`` (and what else it needs)."""

    def global_branch(self, ldr: torch.Tensor) -> Any:
        """Image-wide quantities that tiles of one image must share (e.g. SingleHDR's inverse CRF),
        computed once on a downsampled full image ``ldr [B, 3, h, w]``; ``None`` when the method has none."""
        return None

    def predict_tile(self, batch: HDRBatch, context: Any = None) -> torch.Tensor:
        """:meth:`predict_image` on one tile, given the :meth:`global_branch` output of the whole image."""
        return self.predict_image(batch)

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """Optional extra tensors for image panels (e.g. a generated stack ``[B, N, 3, H, W]``)."""
        return {}

    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """Named trainable sub-networks (for ``hdrlab info`` and memory budgets).

        Default: every direct child module with trainable parameters. Frozen loss and metric
        networks are excluded by construction (no trainable parameters).
        """
        return {name: child for name, child in self.named_children()
                if any(p.requires_grad for p in child.parameters())}

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """A batch with the keys and shapes this method consumes, for FLOP counting and memory
        estimation (values are synthetic: an sRGB-like gamma CRF, 5% clipped pixels).

        Methods that consume more (e.g. an exposure stack) extend it.
        """
        from hdrlab.camera import CRF

        g = torch.Generator().manual_seed(0)
        hdr = torch.rand(batch_size, 3, height, width, generator=g) * 1.05
        crf = CRF.gamma(2.2)
        ldr = crf(hdr.clamp(0, 1))
        clip = (hdr.amax(1, keepdim=True) >= 1).float()
        lut = lambda t: t.expand(batch_size, -1, -1).clone()  # noqa: E731
        batch = {"hdr": hdr, "hdr_clipped": hdr.clamp(max=1), "ldr_float": ldr, "ldr": ldr,
                 "crf_forward": lut(crf.forward_lut[None]), "crf_inverse": lut(crf.inverse_lut[None]),
                 "clip_mask": clip, "name": [f"example_{i}" for i in range(batch_size)]}
        return {k: (v.to(device) if isinstance(v, torch.Tensor) and device is not None else v) for k, v in batch.items()}

    # ------------------------------------------------------------------ metrics
    def build_metric_collection(self, prefix: str) -> MetricCollection:
        """A new collection of this method's metric columns (HDR metrics for ``linear``, display
        metrics for ``display``) with keys ``{prefix}<metric>[_clipped]``."""
        if self.output_domain == "linear":
            return build_metrics(self.metric_names, align=self.align, white_nits=self.white_nits, prefix=prefix)
        if self.output_domain == "display":
            return build_display_metrics(prefix=prefix)
        raise ConfigError(f"{type(self).__name__}.output_domain={self.output_domain!r}; use {OUTPUT_DOMAINS}")

    def metric_collection(self, stage: str) -> MetricCollection:
        """The metric collection of ``stage`` (``val`` / ``test``), built on first use on this device."""
        if stage not in self._metrics:
            self._metrics[stage] = self.build_metric_collection(f"{stage}/").to(self.device)
        return self._metrics[stage]

    def target_for_metrics(self, batch: HDRBatch) -> torch.Tensor:
        """The reference in this method's output domain: ``hdr`` or ``display(hdr)``."""
        return batch["hdr"] if self.output_domain == "linear" else tonemap.display(batch["hdr"])

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: HDRBatch, batch_idx: int) -> torch.Tensor:
        loss, terms = self.compute_loss(batch)
        batch_size = batch["ldr"].shape[0]
        self.samples_seen += batch_size * max(1, self.trainer.world_size if self._trainer else 1)
        logged = {"train/loss": loss.detach(), **{f"train/loss/{name}": value.detach() if isinstance(value, torch.Tensor)
                                                  else value for name, value in terms.items()}}
        self.last_train_terms = logged
        # the progress bar shows the loss of every step; the terms and the sample count reach the
        # loggers at Lightning's logging steps only, so they are logged there (hdrlab.callbacks.steps)
        self.log("train/loss", logged["train/loss"], prog_bar=True, batch_size=batch_size)
        if logging_batch(self._trainer, stepped=False):
            extras = {name: value for name, value in logged.items() if name != "train/loss"}
            extras["train/samples_seen"] = float(self.samples_seen)
            self.log_dict(extras, batch_size=batch_size)
        return loss

    def _eval_step(self, batch: HDRBatch, batch_idx: int, stage: str) -> dict[str, torch.Tensor]:
        pred = self.predict_image(batch).float()
        # scale: the darkest-exposure-relative factor of the kalantari2017 metrics; the collection
        # passes it only to metrics whose update takes it
        extra = {"scale": darkest_relative_scale(batch)} if self.output_domain == "linear" else {}
        self.metric_collection(stage).update(pred, self.target_for_metrics(batch).float(),
                                             clip_mask=batch["clip_mask"], **extra)
        if stage == "val" and batch_idx == 0:
            k = self.num_visuals
            self.visuals = {
                "name": list(batch["name"][:k]),
                "ldr": batch["ldr"][:k].detach().cpu(),
                "hdr": batch["hdr"][:k].detach().cpu(),
                "pred": pred[:k].detach().cpu(),
                "clip_mask": batch["clip_mask"][:k].detach().cpu(),
                "domain": self.output_domain,
                **{key: v[:k].detach().cpu() for key, v in self.extra_visuals(batch).items()},
            }
        return {"pred": pred.detach()}

    def _eval_epoch_end(self, stage: str) -> None:
        collection = self.metric_collection(stage)
        values = collection.compute()
        finite = {k: v for k, v in values.items() if torch.isfinite(v)}
        self.log_dict(finite, sync_dist=True)
        collection.reset()

    def validation_step(self, batch: HDRBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: HDRBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Updates the test metrics; returns ``{"pred": [B,3,H,W]}`` (in ``output_domain``) for
        callbacks such as :class:`~hdrlab.callbacks.PerSampleMetrics`."""
        return self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: HDRBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"pred": [B,3,H,W] in output_domain, "domain": str, "name": list[str]}``."""
        return {"pred": self.predict_image(batch), "domain": self.output_domain, "name": batch.get("name")}

    # ------------------------------------------------------------------ optimisation
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """``optimizer`` over ``params`` with ``lr``, ``betas`` and ``weight_decay``."""
        cls = OPTIMIZERS[self.optimizer_name]
        if cls is torch.optim.SGD:
            return cls(params, lr=self.lr, momentum=self.betas[0], weight_decay=self.weight_decay)
        return cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)

    def scheduler_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Lightning's ``lr_scheduler`` entry for ``optimizer``, or ``None`` for a constant rate.

        Default: ``MultiStepLR(lr_milestones, lr_gamma)`` stepped per optimizer step when milestones
        are set. Methods with an official schedule (StepLR per epoch, ReduceLROnPlateau) override it.
        """
        if not self.lr_milestones:
            return None
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=self.milestone_steps(), gamma=self.lr_gamma)
        return {"scheduler": scheduler, "interval": "step"}

    def milestone_steps(self) -> list[int]:
        """``lr_milestones`` as optimizer steps: fractions become ``round(f * planned_steps())``."""
        if all(isinstance(m, int) for m in self.lr_milestones):
            return [int(m) for m in self.lr_milestones]
        planned = self.planned_steps()
        return [m if isinstance(m, int) else round(m * planned) for m in self.lr_milestones]

    def planned_steps(self) -> int:
        """Optimizer steps the current fit will take.

        With a sample budget (``hdrlab fit --max_samples``, the
        :class:`~hdrlab.callbacks.run_artifacts.SampleBudget` callback): ``ceil(max_samples /
        (batch_size * accumulate_grad_batches * world_size))``, the data module's ``batch_size``,
        at most ``trainer.max_steps`` when that is set; otherwise Lightning's
        ``trainer.estimated_stepping_batches``.

        Raises:
            ConfigError: no finite number of steps is known (no budget, no ``max_steps``, no epochs).
        """
        import math

        from hdrlab.callbacks.run_artifacts import SampleBudget

        trainer = self.trainer
        budget = next((c for c in trainer.callbacks if isinstance(c, SampleBudget)), None)
        batch = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None else None
        if budget is not None and isinstance(batch, int) and batch > 0:
            steps = math.ceil(budget.max_samples / (batch * trainer.accumulate_grad_batches * trainer.world_size))
            return min(steps, trainer.max_steps) if trainer.max_steps > 0 else steps
        steps = trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ConfigError(f"{type(self).__name__}.lr_milestones holds fractions of the planned steps, but the fit "
                              "has no finite length: give --max_samples, trainer.max_steps or trainer.max_epochs")
        return int(steps)

    def configure_optimizers(self) -> Any:
        """:meth:`build_optimizer` over the trainable parameters, with :meth:`scheduler_config`."""
        params = self.trainable_parameters()
        if not params:
            raise ConfigError(f"{type(self).__name__} has no trainable parameters (everything frozen?)")
        optimizer = self.build_optimizer(params)
        scheduler = self.scheduler_config(optimizer)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------ checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hdrlab"] = {
            "samples_seen": int(self.samples_seen),
            "torch_rng_state": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("hdrlab", {})
        self.samples_seen = int(state.get("samples_seen", 0))
        if "torch_rng_state" in state:
            torch.set_rng_state(state["torch_rng_state"])
