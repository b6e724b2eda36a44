"""Method adapters for the memory estimator: an experiment config -> ``build_model`` / ``step`` / ``make_batch``.

:func:`method_estimator` turns experiment YAMLs (or a resolved fit-config dict,
:func:`estimator_from_config`) into a :class:`MethodEstimator` that feeds
:func:`hdrlab.budget.estimate.estimate_peak_memory` and :func:`hdrlab.budget.plan.plan_for_budget`:

* ``build_model``: the experiment's :class:`~hdrlab.methods.base.HDRMethod` built from its ``model``
  section (jsonargparse, as ``hdrlab fit``) under ``FakeTensorMode``, with every option the classes
  declare in ``file_options`` cleared (:func:`hdrlab.methods.build.without_files`): the parameter
  shapes, hence the memory, are unchanged.
* ``step``: ``method.compute_loss(batch)[0]`` (the training step's loss; backward and the optimizer
  step are the estimator's).
* ``make_batch``: ``method.example_batch(batch_size, patch, patch)`` (methods that need a bracket add
  ``stack`` / ``ev``).
* optimizer: the class returned by the method's ``configure_optimizers`` (Adam / AdamW / SGD); the
  estimator counts it with weight decay 0 (Adam's L2 weight decay adds one gradient-sized
  temporary inside ``optimizer.step``, after the activations are freed, so not at the peak of
  activation-bound steps).
* paper patch and effective batch: ``data.init_args.patch_size`` and
  ``data.init_args.batch_size x trainer.accumulate_grad_batches``.
* activation checkpointing: :func:`checkpoint_subnetworks`, applied to the method's trainable
  sub-networks only (frozen loss / metric networks keep their activations), the same function the
  training callback (:class:`hdrlab.budget.fit.MemoryBudgetCallback`) applies.

Network stride (patch sides the planner may use are multiples of it): what the method declares,
:attr:`hdrlab.methods.base.HDRMethod.stride` (:func:`network_stride`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from hdrlab.budget.estimate import MemoryEstimate, estimate_peak_memory
from hdrlab.budget.plan import (
    CUDA_OVERHEAD,
    CudaOverhead,
    InfeasibleCandidate,
    Plan,
    PlanCandidate,
    enable_activation_checkpointing,
    plan_for_budget,
)
from hdrlab.errors import ConfigError, HDRLabError
from hdrlab.methods.build import build_method, without_files
from hdrlab.runs import experiment_name

__all__ = [
    "LossStep",
    "MethodEstimator",
    "checkpoint_subnetworks",
    "estimator_from_config",
    "experiment_name",
    "load_experiment_config",
    "method_estimator",
    "network_stride",
    "optimizer_name",
    "small_tensor_constants",
    "trainable",
]

#: Fake tensors of at most this many elements built from Python data keep their values (see
#: :func:`small_tensor_constants`); exposure lists and pair indices are far smaller.
SMALL_CONSTANT_NUMEL = 4096


@contextlib.contextmanager
def small_tensor_constants(limit: int = SMALL_CONSTANT_NUMEL) -> Iterator[None]:
    """Let ``FakeTensorMode`` keep the values of small tensors made from Python data.

    Methods branch on small metadata tensors (``bool((ev == 0).any())``, ``ev.tolist()`` of an
    exposure bracket); on plain fake tensors that raises ``DataDependentOutputException``.
    ``FakeTensorMode`` propagates real values through ops whose inputs are all such constants,
    but only up to ``torch._subclasses.fake_tensor.CONSTANT_NUMEL_LIMIT`` (1) elements; this raises
    that limit while the step runs. Large tensors (images, activations) stay storage-free and
    their memory accounting is unchanged; random tensors are never constants.
    """
    from torch._subclasses import fake_tensor

    previous = fake_tensor.CONSTANT_NUMEL_LIMIT
    fake_tensor.CONSTANT_NUMEL_LIMIT = max(previous, int(limit))
    try:
        yield
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = previous


def network_stride(module: nn.Module) -> int:
    """Patch-side multiple a model needs: its declared ``stride`` (methods, generators, mergers,
    networks; :func:`hdrlab.methods.base.module_stride`), 1 when it declares none."""
    from hdrlab.methods.base import module_stride

    return module_stride(module)


def trainable(method: nn.Module) -> bool:
    """True when the method has trainable parameters (baselines have none)."""
    return any(p.requires_grad for p in method.parameters())


def optimizer_name(method: Any) -> str:
    """The estimator's optimizer name (``"adam"``, ``"adamw"``, ``"sgd"``) of ``method.configure_optimizers()``.

    Raises:
        ConfigError: an optimizer the estimator does not model.
    """
    conf = method.configure_optimizers()
    opt = conf.get("optimizer") if isinstance(conf, Mapping) else conf
    if isinstance(opt, (list, tuple)):
        opt = opt[0]
    names = {torch.optim.AdamW: "adamw", torch.optim.Adam: "adam", torch.optim.SGD: "sgd"}
    for cls, name in names.items():
        if type(opt) is cls:
            return name
    raise ConfigError(
        f"{type(method).__name__}.configure_optimizers returns {type(opt).__name__}, which the memory estimator "
        "does not model; use Adam, AdamW or SGD"
    )


def _section_optimizer_name(section: Any) -> str:
    """The estimator's optimizer name of a LightningCLI ``optimizer:`` section (``class_path`` or a bare name)."""
    path = section.get("class_path") if isinstance(section, Mapping) else str(section)
    name = str(path).rsplit(".", 1)[-1].lower()
    if name not in ("adam", "adamw", "sgd"):
        raise ConfigError(f"optimizer {path!r} is not modelled by the memory estimator; use Adam, AdamW or SGD")
    return name


def checkpoint_subnetworks(method: nn.Module) -> list[str]:
    """Activation checkpointing in the repeated blocks of every trainable sub-network.

    Applies :func:`hdrlab.budget.plan.enable_activation_checkpointing` (default blocks:
    ``ModuleList`` members and multi-layer ``Sequential``s; batch-norm statistics updated once per
    step) to each entry of ``method.subnetworks()`` (plain modules: the module itself).

    Returns:
        Qualified names (``<subnetwork>.<block>``) of the checkpointed blocks.
    """
    subnets = method.subnetworks() if hasattr(method, "subnetworks") else {"": method}
    names: list[str] = []
    for sub_name, sub in subnets.items():
        names += [f"{sub_name}.{n}" if sub_name else n for n in enable_activation_checkpointing(sub)]
    return names


def load_experiment_config(configs: Sequence[str | Path], *, width: float = 1.0) -> dict[str, Any]:
    """Merge experiment YAMLs (later override earlier), set ``width``, resolve interpolations.

    Args:
        configs: YAML paths.
        width: the shared channel multiplier (1.0 = full size).

    Returns:
        A plain, resolved dict (``model``, ``data``, ``trainer``, ``width``, ``pretrained_trunks``).

    Raises:
        ConfigError: missing file or no ``model`` section.
    """
    merged = OmegaConf.create({})
    for path in configs:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist; give an experiment YAML (experiments/*.yaml)")
        merged = OmegaConf.merge(merged, OmegaConf.load(str(path)))
    merged.width = float(width)
    merged.pretrained_trunks = False
    if "model" not in merged:
        raise ConfigError(f"{configs[-1]} has no 'model' section; give an experiment config (experiments/*.yaml)")
    return OmegaConf.to_container(merged, resolve=True)


def _resolved(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a fit config the estimator reads, interpolations resolved.

    Only ``model``, ``data.init_args.{patch_size, batch_size}``, ``trainer.{accelerator,
    accumulate_grad_batches}``, the top-level ``optimizer`` section (LightningCLI's, which replaces
    the method's own), ``width`` and ``pretrained_trunks`` are kept, so a parsed fit config
    (``Namespace.as_dict()`` with paths, callbacks, ...) is accepted as well.
    """
    data = dict(config.get("data") or {})
    init_args = dict(data.get("init_args") or {})
    trainer = dict(config.get("trainer") or {})
    picked = {
        "model": copy.deepcopy(config.get("model")),
        "data": {"init_args": {k: init_args[k] for k in ("patch_size", "batch_size") if k in init_args}},
        "trainer": {k: trainer[k] for k in ("accelerator", "accumulate_grad_batches") if k in trainer},
        "width": config.get("width", 1.0),
        "pretrained_trunks": False,
        "optimizer": copy.deepcopy(config.get("optimizer")),
    }
    if picked["trainer"].get("accelerator") is not None:
        picked["trainer"]["accelerator"] = str(picked["trainer"]["accelerator"])
    return OmegaConf.to_container(OmegaConf.create(picked), resolve=True)


class LossStep(nn.Module):
    """``forward(batch) = method.compute_loss(batch)[0]``: the training step as one module call.

    ``MemTracker`` refuses a root-level module called twice in one step (Le2023's N1 runs once per
    pair member); under this wrapper every network is a sub-module of one root call. Parameters,
    buffers and the optimizer's view of them are the method's.

    Args:
        method: an :class:`~hdrlab.methods.base.HDRMethod`.
    """

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any) -> torch.Tensor:
        return self.method.compute_loss(batch)[0]


@dataclass
class MethodEstimator:
    """Everything the planner needs about one experiment's training step.

    Attributes:
        name: experiment name (config stem).
        method: the method's class name.
        build_model: ``() -> LossStep(HDRMethod)`` (no file loading; call under ``FakeTensorMode``).
        step: ``(loss_step, batch) -> scalar loss`` (``method.compute_loss(batch)[0]``).
        make_batch: ``(batch, patch) -> batch dict`` of ``[batch, 3, patch, patch]`` tensors (+ bracket).
        paper_patch: ``data.init_args.patch_size``.
        effective_batch: ``batch_size x accumulate_grad_batches`` of the config.
        stride: :func:`network_stride`.
        optimizer: :func:`optimizer_name`.
        trainable: False for parameter-free baselines (nothing to plan).
    """

    name: str
    method: str
    build_model: Callable[[], nn.Module]
    step: Callable[[nn.Module, Any], torch.Tensor]
    make_batch: Callable[[int, int], Any]
    paper_patch: int
    effective_batch: int
    stride: int
    optimizer: str
    trainable: bool = True
    seconds: list[float] = field(default_factory=list)

    def estimate(self, *, batch: int, patch: int, precision: str = "32", checkpointing: bool = False) -> MemoryEstimate:
        """Peak tensor memory of one training step (fake tensors), :func:`estimate_peak_memory`.

        Checkpointing goes through :func:`checkpoint_subnetworks` (the estimator's own switch is
        left off so the frozen loss networks stay as in training).
        """
        if not self.trainable:
            raise ConfigError(f"{self.name} ({self.method}) has no trainable parameters: there is no training step")

        def build() -> nn.Module:
            model = self.build_model()
            if checkpointing:
                checkpoint_subnetworks(model.method if isinstance(model, LossStep) else model)
            return model

        with small_tensor_constants():
            result = estimate_peak_memory(
                build, self.step, self.make_batch, batch=batch, patch=patch, precision=precision,
                checkpointing=False, optimizer=self.optimizer,
            )
        self.seconds.append(result.seconds)
        return dataclasses.replace(result, checkpointing=checkpointing)

    def candidate_estimator(self) -> Callable[[PlanCandidate], int]:
        """``PlanCandidate -> tensor peak bytes`` for :func:`hdrlab.budget.plan.plan_for_budget`.

        A candidate the training step cannot run (any error other than a user error,
        :class:`~hdrlab.errors.HDRLabError`: e.g. batch norm's "Expected more than 1 value per
        channel" at batch 1 and a patch of one stride) raises
        :class:`~hdrlab.budget.plan.InfeasibleCandidate` naming the candidate and the error.
        """

        def estimate(c: PlanCandidate) -> int:
            try:
                return self.estimate(batch=c.batch, patch=c.patch, precision=c.precision,
                                     checkpointing=c.checkpointing).peak_bytes
            except HDRLabError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure of the step makes the candidate infeasible
                first = (str(err).strip().splitlines() or [""])[0][:200]
                raise InfeasibleCandidate(
                    f"{self.name} cannot train at batch {c.batch}, patch {c.patch} "
                    f"({type(err).__name__}: {first})") from err

        return estimate

    def plan(
        self,
        budget_bytes: int,
        *,
        min_patch: int = 64,
        allow_precisions: Sequence[str] = ("bf16-mixed", "16-mixed"),
        cuda_overhead: CudaOverhead = CUDA_OVERHEAD,
    ) -> Plan:
        """:func:`plan_for_budget` at the paper patch and effective batch (raises ``BudgetError`` if nothing fits).

        ``min_patch`` is rounded up to a multiple of the stride and capped at the paper patch.
        """
        lowest = min(self.paper_patch, max(self.stride, math.ceil(min_patch / self.stride) * self.stride))
        return plan_for_budget(
            self.candidate_estimator(), budget_bytes=budget_bytes, paper_patch=self.paper_patch,
            effective_batch=self.effective_batch, stride=self.stride, min_patch=lowest,
            allow_precisions=allow_precisions, cuda_overhead=cuda_overhead,
        )


def estimator_from_config(
    config: Mapping[str, Any],
    *,
    name: str = "experiment",
    patch: int | None = None,
    batch: int | None = None,
) -> MethodEstimator:
    """A :class:`MethodEstimator` from a fit config (``model``, ``data``, ``trainer``; interpolations allowed).

    Args:
        config: experiment / fit config as a dict.
        name: label for messages.
        patch: override of the paper patch (e.g. a reduced size for quick checks).
        batch: override of the effective batch.

    Raises:
        ConfigError: no model section, missing patch/batch, or a patch that is not a multiple of the stride.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = _resolved(config)
    if not isinstance(cfg.get("model"), Mapping):
        raise ConfigError(f"{name} has no 'model' section; give an experiment config (experiments/*.yaml)")
    model_cfg = without_files(cfg["model"])
    data_args = ((cfg.get("data") or {}).get("init_args") or {})
    trainer_cfg = cfg.get("trainer") or {}
    paper_patch = int(patch if patch is not None else data_args.get("patch_size", 0) or 0)
    micro = int(data_args.get("batch_size", 0) or 0)
    accumulate = int(trainer_cfg.get("accumulate_grad_batches", 1) or 1)
    effective = int(batch if batch is not None else micro * accumulate)
    if paper_patch < 1 or effective < 1:
        raise ConfigError(
            f"{name}: data.init_args.patch_size and data.init_args.batch_size must be set (got {paper_patch}, {micro})"
        )

    def build_model() -> nn.Module:
        return build_method(model_cfg, name=name)

    with FakeTensorMode():
        probe = build_model()
        method_name = type(probe).__name__
        stride = network_stride(probe)
        is_trainable = trainable(probe)
        optimizer = optimizer_name(probe) if is_trainable else "adam"
    section = cfg.get("optimizer")
    if is_trainable and section:
        optimizer = _section_optimizer_name(section)
    del probe
    if is_trainable and paper_patch % stride:
        raise ConfigError(f"{name}: patch_size {paper_patch} is not a multiple of {method_name}'s network stride {stride}")

    built: list[Any] = []

    def build_and_keep() -> nn.Module:
        built[:] = [build_model()]
        return LossStep(built[0])

    def make_batch(b: int, p: int) -> Any:
        return built[0].example_batch(batch_size=b, height=p, width=p)

    def step(model: Any, data: Any) -> torch.Tensor:
        return model(data)

    return MethodEstimator(
        name=name, method=method_name, build_model=build_and_keep, step=step, make_batch=make_batch,
        paper_patch=paper_patch, effective_batch=effective, stride=stride, optimizer=optimizer,
        trainable=is_trainable,
    )


def method_estimator(
    configs: Sequence[str | Path],
    *,
    width: float = 1.0,
    patch: int | None = None,
    batch: int | None = None,
) -> MethodEstimator:
    """A :class:`MethodEstimator` for experiment YAMLs at a channel ``width`` (1.0 = full size).

    Args:
        configs: experiment YAMLs (later override earlier, e.g. ``experiments/overrides/tiny.yaml``).
        width: shared channel multiplier.
        patch, batch: overrides of the config's patch / effective batch.

    Example:
        >>> est = method_estimator(["experiments/singlehdr.yaml"])  # doctest: +SKIP
        >>> est.plan(parse_size("4GiB")).describe()  # doctest: +SKIP
    """
    cfg = load_experiment_config(configs, width=width)
    return estimator_from_config(cfg, name=experiment_name(configs), patch=patch, batch=batch)
