"""The ``hdrlab`` command line.

* ``hdrlab fit|validate|test|predict --config experiments/<x>.yaml [overrides]``: LightningCLI
  (``parser_mode="omegaconf+"``) over any :class:`~hdrlab.methods.base.HDRMethod` and any
  LightningDataModule, selected by ``class_path`` in the config (jsonargparse is the registry).
  Every run (fit, validate, test and predict alike) writes one folder,
  ``<runs_root>/<experiment>/<run_id>/``, where ``<experiment>`` is the stem of the first
  ``--config`` file that sets ``model`` (:func:`hdrlab.runs.experiment_name`; ``--experiment NAME``
  overrides it, ``--run_dir`` overrides the whole path):
  ``config.yaml``, ``metrics.csv``, ``checkpoints/last.ckpt``, ``wandb/``, ``previews/``,
  ``summary.json`` (``hdrlab test`` adds ``test_per_sample.csv``: one row of metrics per test
  image; with ``--save_test_outputs true`` also ``test_outputs/``: each test image's prediction,
  input and reference, :mod:`hdrlab.callbacks.per_sample_metrics`). Resume with the same ``--run_id`` (or ``--run_dir``) and ``--ckpt_path last``.
  ``--keep_best_by val/<metric>`` also keeps ``checkpoints/best.ckpt``, the checkpoint with the
  best value of that validation metric (``--keep_best_mode max|min``).
  ``hdrlab test --protocol kalantari2017`` scores with that protocol's metrics and alignment
  (:data:`hdrlab.metrics.PROTOCOLS`: it sets ``model.init_args.metrics`` and ``align``; linear-output
  methods only); without ``--protocol`` the method's own metrics are used.
* Optimisation: each method's official optimizer is its default (``model.init_args.optimizer``,
  ``lr``, ``weight_decay``, ...; schedule from the method's ``scheduler_config``). LightningCLI's
  top-level ``optimizer:`` / ``lr_scheduler:`` sections (``class_path`` + ``init_args``, or
  ``--optimizer torch.optim.SGD --optimizer.lr 0.1``) replace both when given; such a scheduler
  steps per epoch (``lightning.pytorch.cli.ReduceLROnPlateau`` takes a ``monitor``).
* Utility subcommands (``weights``, ``synth``, ``eval``, ``merge``, ``demo``, ...) live in
  :mod:`hdrlab.commands`, one module each with ``main(argv) -> int``, imported lazily.

Errors: every failure ends in one line ``hdrlab <subcommand>: error: ...`` on stderr without a
traceback (:func:`main`, :func:`classify_error`): exit 2 for usage and input errors
(:class:`hdrlab.errors.HDRLabError`, also when jsonargparse wraps one raised while building the
model or data; parse errors; file, checkpoint, image and binary-config errors), exit 1 for runtime
failures (out of memory, a full disk) and for bugs, which print ``internal error: <Type>: <message>``.
``hdrlab --debug <subcommand> ...`` or ``HDRLAB_DEBUG=1`` re-raises runtime failures and bugs with
their traceback. Checks run before work: ``--config`` files are text, ``--ckpt_path`` is a safe
Lightning checkpoint of the configured method (:mod:`hdrlab.checkpoints`), ``--memory_budget`` is
positive (``--memory_budget -4GiB`` is read as ``--memory_budget=-4GiB``); the run folder is created
once the model and data are built, and removed again while empty when the command fails.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from hdrlab.errors import ConfigError, HDRLabError, RunFailure
from hdrlab.runs import config_args, experiment_name

#: utility subcommand -> (module, one-line help). Explicit on purpose: no folder scanning.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("hdrlab.commands.weights", "list/verify optional pretrained trunks (VGG16/VGG19/AlexNet)"),
    "synth": ("hdrlab.commands.synth", "write procedural HDR scenes (.exr) and a contact sheet"),
    "eval": ("hdrlab.commands.evaluate", "score predicted HDR images against ground truth"),
    "merge": ("hdrlab.commands.merge", "merge a real bracket (Debevec/Robertson radiance or Mertens fusion)"),
    "demo": ("hdrlab.commands.demo", "the end-to-end demo on the embedded procedural data"),
    "reconstruct": ("hdrlab.commands.reconstruct", "real photos (png/jpg/tif) to HDR .exr plus a preview with a trained checkpoint"),
    "budget": ("hdrlab.commands.budget", "peak training memory of experiments and the plan for --memory_budget (no GPU needed)"),
    "compare": ("hdrlab.commands.compare", "compare runs/sweeps: grouped table (md+csv), plots, index.html"),
    "info": ("hdrlab.commands.info", "trainable parameters per sub-network and FLOPs of an experiment at full size"),
    "table": ("hdrlab.commands.table", "parameters and FLOPs of every shipped method next to the published figures (Markdown / JSON)"),
    "sweep": ("hdrlab.commands.sweep", "run a W&B sweep file online (logged in) or with the offline agent"),
    "recipe": ("hdrlab.commands.recipe", "run a multi-stage training recipe (e.g. SingleHDR's stage-wise training) as chained fits"),
    "import-weights": ("hdrlab.commands.import_weights", "convert an official pretrained release (CEVR, ...) into an hdrlab checkpoint"),
}
#: LightningCLI subcommands
TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _usage() -> str:
    lines = ["usage: hdrlab <subcommand> [options]", "", "training (LightningCLI; --help for options):"]
    lines += [f"  {name:<14} {name} a method: --config experiments/<x>.yaml [--key value ...]" for name in TRAINER_SUBCOMMANDS]
    lines += ["", "utilities:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'hdrlab <subcommand> --help' for the options of one subcommand."]
    return "\n".join(lines)


def _wandb_mode(choice: str) -> str | None:
    """``online`` / ``offline`` / ``None`` (no W&B logger) from the ``--wandb`` choice."""
    if choice == "disabled":
        return None
    if choice in ("online", "offline"):
        return choice
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return None
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "online" if "api.wandb.ai" in netrc.read_text() else "offline"
    except OSError:
        return "offline"


class _ParsedOnly(Exception):
    """Raised by :func:`build_cli` with ``parse_only=True`` once the arguments are parsed and checked."""

    def __init__(self, config: Any) -> None:
        super().__init__("parsed")
        self.config = config


#: ``--ckpt_path`` values Lightning resolves itself
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def build_cli(args: list[str] | None = None, *, run: bool = True, state: dict[str, Any] | None = None,
              forced_plan: Any = None, parse_only: bool = False) -> Any:
    """Build (and by default run) the LightningCLI. Imported lazily: Lightning is slow to import.

    Args:
        args: command-line arguments (``None``: ``sys.argv``).
        run: run the subcommand (``False``: build a fit-ready trainer, model and datamodule only).
        state: filled with ``run_dir``, ``config`` and the memory ``plan`` as soon as they are known
            (so a caller can resume the same run after a failure).
        forced_plan: a memory plan to apply instead of planning from ``--memory_budget``
            (the out-of-memory step-down).
        parse_only: parse and check the arguments (configs, keys, values, ``--memory_budget``,
            ``--ckpt_path``) and return the parsed config of the subcommand; nothing is built or written.
    """
    state = {} if state is None else state
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from hdrlab.callbacks.run_artifacts import (
        AtomicCheckpointIO,
        ImagePanelLogger,
        LastCheckpoint,
        ResumableCSVLogger,
        RunSummary,
        SampleBudget,
        ThroughputMemoryMonitor,
    )
    from hdrlab.methods.base import HDRMethod

    class HDRLabCLI(LightningCLI):
        """LightningCLI with hdrlab's run folder, loggers and callbacks (module docstring)."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--width", type=float, default=1.0,
                                help="channel multiplier shared by the experiment's networks (${width} in configs)")
            parser.add_argument("--pretrained_trunks", type=bool, default=True,
                                help="use ImageNet trunks for perceptual losses (${pretrained_trunks}); false = random")
            parser.add_argument("--runs_root", type=str, default="runs", help="parent of experiment folders")
            parser.add_argument("--experiment", type=str | None, default=None,
                                help="experiment folder name (default: the stem of the first --config file "
                                     "that sets model)")
            parser.add_argument("--run_id", type=str | None, default=None, help="run folder name (default: time-based)")
            parser.add_argument("--run_dir", type=str | None, default=None,
                                help="explicit run folder (overrides runs_root/experiment/run_id)")
            parser.add_argument("--max_samples", type=int | None, default=None,
                                help="training budget in samples seen (stops training when reached)")
            parser.add_argument("--checkpoint_every_n_steps", type=int, default=100,
                                help="write checkpoints/last.ckpt every N optimizer steps")
            parser.add_argument("--keep_best_by", type=str | None, default=None,
                                help="also keep checkpoints/best.ckpt: the checkpoint with the best value of this "
                                     "logged validation metric (e.g. val/display_psnr), as official code that "
                                     "keeps its best validation checkpoint does")
            parser.add_argument("--keep_best_mode", type=Literal["max", "min"], default="max",
                                help="whether a larger (max) or smaller (min) --keep_best_by value is better")
            parser.add_argument("--wandb", type=str, default="auto",
                                help="auto (online when logged in, else offline) | online | offline | disabled")
            parser.add_argument("--log_images_every_n_epochs", type=int, default=1)
            parser.add_argument("--memory_budget", type=str | None, default=None,
                                help="device memory budget, e.g. 4GiB / 512MiB / 8GB (=8e9 bytes): plans micro-batch, "
                                     "precision, activation checkpointing, accumulation and patch before training")
            parser.add_argument("--activation_checkpointing", type=bool, default=False,
                                help="set by the memory-budget plan (recorded in config.yaml)")
            parser.add_argument("--protocol", type=str | None, default=None,
                                help="test only: evaluation protocol setting the method's metrics and alignment "
                                     "(hdrlab | kalantari2017, hdrlab.metrics.PROTOCOLS); default: the method's own")
            parser.add_argument("--save_test_outputs", type=bool, default=False,
                                help="test only: also write each test image's prediction (<name>.exr, as scored), "
                                     "input (<name>_input.png) and reference (<name>_reference.exr) into "
                                     "<run_dir>/test_outputs/")
            parser.add_argument("--on_nonfinite", type=Literal["stop", "skip"], default="stop",
                                help="fit: a NaN/inf loss or gradient stops the run naming the step (stop) or "
                                     "skips that optimizer step (skip); hdrlab.callbacks.nonfinite")

        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            # the --config entries, read from the command line: under parser_mode="omegaconf+"
            # jsonargparse drops the parsed `config` key when any config holds a ${...} interpolation
            # (it re-parses a dump of the resolved config, and dumps leave config files out)
            argv = sys.argv[1:] if args is None else args
            self.config_entries = config_args(argv) if isinstance(argv, (list, tuple)) else None
            super().parse_arguments(parser, args)

        def _parse_ckpt_path(self) -> None:
            # Lightning replaces the config's model by the checkpoint's hyper-parameters: a checkpoint
            # of another method would silently run that method; and it loads the file unchecked
            sub = self.config.get("subcommand")
            cfg = self.config[sub] if sub else self.config
            ckpt_path = cfg.get("ckpt_path")
            self.checkpoint = None
            if ckpt_path is not None and str(ckpt_path) not in LIGHTNING_CKPT_NAMES:
                from hdrlab.checkpoints import describe_checkpoint, load_checkpoint

                given = state.pop("checkpoint", None)
                if given is not None and str(given[0]) == str(ckpt_path):
                    self.checkpoint = given[1]
                else:
                    self.checkpoint = load_checkpoint(ckpt_path, option="--ckpt_path")  # one line per bad file
                if not isinstance(self.checkpoint, dict) or "state_dict" not in self.checkpoint \
                        or "pytorch-lightning_version" not in self.checkpoint:
                    raise HDRLabError(f"--ckpt_path {ckpt_path} is {describe_checkpoint(self.checkpoint)}, not a "
                                      "Lightning checkpoint; give one written by 'hdrlab fit' or 'hdrlab "
                                      "import-weights'")
                hparams = self.checkpoint.get("hyper_parameters") if isinstance(self.checkpoint, dict) else None
                held = hparams.get("_class_path") if isinstance(hparams, dict) else None
                model = cfg.get("model")
                wanted = model.get("class_path") if model is not None and hasattr(model, "get") else None
                if held and wanted and str(held).rpartition(".")[2] != str(wanted).rpartition(".")[2]:
                    raise ConfigError(
                        f"--ckpt_path {ckpt_path} is {describe_checkpoint(self.checkpoint)}, but the config builds "
                        f"{wanted}; give the config of the method the file holds, or a checkpoint of "
                        f"{str(wanted).rpartition('.')[2]}")
            super()._parse_ckpt_path()

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            if cfg.get("run_dir"):
                run_dir = Path(cfg.run_dir)
            else:
                # jsonargparse's record of the --config entries when it kept one, else the command line's
                recorded = [c if c is None else getattr(c, "absolute", c) for c in cfg.get("config") or []]
                configs = recorded or self.config_entries or []
                experiment = cfg.get("experiment") or experiment_name(configs)
                run_id = cfg.get("run_id") or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
                run_dir = Path(cfg.runs_root) / experiment / run_id
            if cfg.get("wandb") not in ("auto", "online", "offline", "disabled"):
                raise HDRLabError(f"--wandb={cfg.get('wandb')!r}; use auto, online, offline or disabled")
            self.budget_plan = None
            if cfg.get("memory_budget") is not None:
                from hdrlab.checkpoints import check_memory_budget

                check_memory_budget(cfg.memory_budget)
            if parse_only:
                raise _ParsedOnly(cfg)
            if cfg.get("memory_budget") and (self.subcommand or "fit") == "fit":
                from hdrlab.budget.fit import plan_for_fit

                state["config"] = cfg.as_dict()
                plan = forced_plan or plan_for_fit(state["config"], cfg.memory_budget)  # BudgetError before training
                cfg.data.init_args.batch_size, cfg.data.init_args.patch_size = plan.batch, plan.patch
                cfg.trainer.accumulate_grad_batches, cfg.trainer.precision = plan.accumulate, plan.precision
                cfg.activation_checkpointing = plan.checkpointing
                print(f"memory budget: {plan.describe()}", file=sys.stderr)
                self.budget_plan = state["plan"] = plan
            if cfg.get("protocol") is not None:
                self._apply_protocol(cfg)
            # created by instantiate_trainer, once the model and data are built
            self.run_dir = state["run_dir"] = run_dir.resolve()

        def _apply_protocol(self, cfg: Any) -> None:
            """``--protocol``: the method's ``metrics`` and ``align`` become the protocol's (test only)."""
            from hdrlab.metrics.collection import get_protocol

            if self.subcommand != "test":
                raise ConfigError(f"--protocol applies to hdrlab test only, not hdrlab {self.subcommand}; "
                                  "drop it or run hdrlab test")
            protocol = get_protocol(cfg.protocol)
            init_args = cfg.model.get("init_args") if cfg.get("model") is not None else None
            if init_args is None or "metrics" not in init_args or "align" not in init_args:
                raise ConfigError(f"--protocol {protocol.name}: the model takes no metrics/align options "
                                  "(HDRMethod's); set model.init_args.metrics and align by hand")
            init_args.metrics = list(protocol.metrics)
            init_args.align = protocol.align

        def after_instantiate_classes(self) -> None:
            super().after_instantiate_classes()
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            if getattr(self, "checkpoint", None) is not None:
                from hdrlab.checkpoints import check_state_dict

                check_state_dict(self.model, self.checkpoint, path=cfg.ckpt_path, option="--ckpt_path")
                self.checkpoint = None  # Lightning reads the file again
            domain = getattr(self.model, "output_domain", "linear")
            if cfg.get("protocol") is not None and domain != "linear":
                raise ConfigError(f"--protocol {cfg.protocol}: {type(self.model).__name__} predicts display images "
                                  f"(output_domain={domain!r}) and is scored with display metrics; "
                                  "HDR protocols apply to linear-output methods only")

        def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            run_dir = self.run_dir
            if not run_dir.exists():
                from hdrlab.checkpoints import check_output_dir

                check_output_dir(run_dir, option="run folder (--run_dir / --runs_root)")
            # the folders this run creates, deepest first: removed again when the command fails empty-handed
            state["created_dirs"] = [p for p in [run_dir, *run_dir.parents] if not p.exists()]
            run_dir.mkdir(parents=True, exist_ok=True)
            trainer_cfg = self._get(self.config_init, "trainer", default={})
            loggers: list[Any] = []
            if trainer_cfg.get("logger") is not False:
                loggers.append(ResumableCSVLogger(save_dir=str(run_dir), name="", version=""))
                mode = _wandb_mode(cfg.get("wandb", "auto"))
                if mode is not None:
                    from lightning.pytorch.loggers import WandbLogger

                    loggers.append(WandbLogger(
                        save_dir=str(run_dir), offline=(mode == "offline"),
                        project=os.environ.get("WANDB_PROJECT", "hdrlab"),
                        group=os.environ.get("WANDB_RUN_GROUP") or run_dir.parent.name,
                        name=run_dir.name, log_model=False,
                    ))
            callbacks: list[Any] = [
                RunSummary(str(run_dir / "summary.json"), seed=cfg.get("seed_everything"),
                           extra={"run_dir": str(run_dir)}),
                ThroughputMemoryMonitor(),
                ImagePanelLogger(every_n_epochs=cfg.get("log_images_every_n_epochs", 1), run_dir=str(run_dir)),
            ]
            if (self.subcommand or "fit") == "fit":  # run=False builds a fit-ready trainer
                callbacks += [
                    ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="step{step:07d}",
                                    auto_insert_metric_name=False, save_last=True, save_top_k=1,
                                    every_n_train_steps=cfg.get("checkpoint_every_n_steps", 100),
                                    # always overwrite last.ckpt: a run folder resumed after a move
                                    # would otherwise get last-v1.ckpt next to a stale last.ckpt
                                    enable_version_counter=False),
                ]
                if cfg.get("keep_best_by"):
                    # save_last: also rewrite last.ckpt after a validation that improves the best,
                    # so the best score it records includes that validation (the step checkpoint is
                    # written before it); otherwise a resume forgets a best found at the step it
                    # resumes from
                    callbacks.append(ModelCheckpoint(
                        dirpath=str(run_dir / "checkpoints"), filename="best", monitor=cfg.keep_best_by,
                        mode=cfg.get("keep_best_mode", "max"), save_top_k=1, save_last=True,
                        auto_insert_metric_name=False, enable_version_counter=False))
                if loggers:
                    callbacks.append(LearningRateMonitor(logging_interval="step"))
                if self.budget_plan is not None:
                    from hdrlab.budget.fit import MemoryBudgetCallback

                    callbacks.append(MemoryBudgetCallback(self.budget_plan))
                if cfg.get("max_samples"):
                    callbacks.append(SampleBudget(cfg.max_samples))
                from hdrlab.callbacks.nonfinite import NonFiniteGuard

                callbacks.append(NonFiniteGuard(cfg.get("on_nonfinite") or "stop"))
                # after every callback that may stop the run, so it saves the step the run stops on
                callbacks.append(LastCheckpoint(str(run_dir / "checkpoints" / "last.ckpt")))
            if self.subcommand == "test":
                from hdrlab.callbacks.per_sample_metrics import PerSampleMetrics

                callbacks.append(PerSampleMetrics(str(run_dir / "test_per_sample.csv"),
                                                  save_outputs=bool(cfg.get("save_test_outputs", False))))
            if sys.stdout.isatty():
                callbacks.append(RichProgressBar())
            extra_callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
            config = {**trainer_cfg, **kwargs, "default_root_dir": str(run_dir),
                      "logger": loggers or False}
            config["callbacks"] = list(config.get("callbacks") or []) + callbacks
            plugins = config.get("plugins") or []
            config["plugins"] = (plugins if isinstance(plugins, list) else [plugins]) + [AtomicCheckpointIO()]
            return self._instantiate_trainer(config, extra_callbacks)

    threads = os.environ.get("HDRLAB_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    try:
        return _make(HDRLabCLI, HDRMethod, L.LightningDataModule, args, run)
    except _ParsedOnly as parsed:
        return parsed.config


def _make(cls: Any, model: Any, data: Any, args: Any, run: bool) -> Any:
    return cls(
        model,
        data,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        seed_everything_default=0,
        auto_configure_optimizers=True,
        save_config_kwargs={"config_filename": "config.yaml", "overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf+", "exit_on_error": False},
    )


def fit_with_oom_step_down(args: list[str] | None, state: dict[str, Any] | None = None) -> None:
    """``hdrlab fit``; with ``--memory_budget``, a CUDA out-of-memory error steps the plan down once
    (:func:`hdrlab.budget.plan.step_down`: autocast, then checkpointing, then a smaller micro-batch
    with more accumulation, then a smaller patch) and the run continues from its last checkpoint
    (written on the failure by :class:`~hdrlab.callbacks.run_artifacts.LastCheckpoint`).
    Only exercised here with an injected ``torch.OutOfMemoryError``: untested on real GPUs.
    ``state`` (:func:`build_cli`) is filled as the run goes.
    """
    state = {} if state is None else state
    try:
        build_cli(args, state=state)
        return
    except Exception as err:  # noqa: BLE001 - re-raised unless it is an out-of-memory error under a budget
        from hdrlab.budget.cuda import is_out_of_memory

        if state.get("plan") is None or not is_out_of_memory(err):
            raise
        first = err
    import torch

    from hdrlab.budget.methods import estimator_from_config
    from hdrlab.budget.plan import BudgetError, step_down

    estimator = estimator_from_config(state["config"], name="fit config")
    lower = step_down(state["plan"], stride=estimator.stride, estimator=estimator.candidate_estimator())
    if lower is None:
        raise BudgetError(f"out of memory with the most frugal plan ({state['plan'].describe()}); "
                          "raise --memory_budget", required_bytes=None) from first
    print(f"out of memory ({first}); stepping the plan down once and resuming from the last checkpoint: "
          f"{lower.describe()}", file=sys.stderr)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    rest = list(sys.argv[1:] if args is None else args)
    build_cli([*rest, "--run_dir", str(state["run_dir"]), "--ckpt_path", "last"], forced_plan=lower)


#: lines of jsonargparse's union-type reports that say nothing a user can act on
_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
          "- Expected a <class 'NoneType'>")


def _chain(err: BaseException) -> list[BaseException]:
    seen, chain, node = set(), [], err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        chain.append(node)
        node = node.__cause__ or node.__context__
    return chain


def user_error_message(err: BaseException) -> str | None:
    """One short message for an error a user caused, or ``None`` for other errors.

    * an :class:`~hdrlab.errors.HDRLabError` anywhere in the exception chain (a constructor's
      ``ConfigError``, a missing pretrained file, ...), which jsonargparse wraps in its own errors:
      its message, plus the command-line switch that avoids a missing pretrained trunk;
    * a jsonargparse / argparse parse error (unknown key, bad value, missing config file): its
      message without the union-type boilerplate.
    """
    import argparse

    from hdrlab.errors import WeightsMissingError

    chain = _chain(err)
    for node in chain:
        if isinstance(node, HDRLabError):
            message = str(node)
            if isinstance(node, WeightsMissingError):
                message += " (or run with --pretrained_trunks false: random perceptual trunks, a deviation)"
            return message
    for node in chain:
        if isinstance(node, argparse.ArgumentError) or type(node).__module__.startswith("jsonargparse"):
            lines = [ln.strip() for ln in str(node).splitlines()]
            kept = [ln[2:] if ln.startswith("- ") else ln for ln in lines if ln and not ln.startswith(_NOISE)]
            return " ".join(kept)[:600] or str(node)
    return None


def _first_line(text: object, limit: int = 400) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    if type(err).__name__ == "OutOfMemoryError" or (isinstance(err, RuntimeError) and "out of memory" in str(err)):
        return True
    return False


def classify_error(err: BaseException) -> tuple[int, str] | None:
    """``(exit status, one-line message)`` of a failure the command line reports without a traceback.

    Exit 2 (usage or input errors): :class:`~hdrlab.errors.HDRLabError` and parse errors
    (:func:`user_error_message`), file errors (``OSError``: missing, permission denied, a folder
    where a file is meant, an existing file), unreadable checkpoints (pickle and PyTorch zip
    errors), images OpenCV / OpenEXR cannot decode, binary files read as text
    (``UnicodeDecodeError``) and values too large (``OverflowError``). Exit 1 (runtime failures):
    out of memory (``MemoryError``, CUDA out-of-memory) and a full disk. ``None``: anything else,
    a bug (:func:`main` reports it as an internal error).
    """
    import errno
    import pickle

    message = user_error_message(err)
    if message is not None:
        return 2, message
    chain = _chain(err)
    for node in chain:
        if isinstance(node, RunFailure):
            return 1, _first_line(node) or type(node).__name__
        if _is_out_of_memory(node):
            detail = _first_line(node) or "MemoryError"
            return 1, (f"out of memory ({detail}); lower the batch, patch or tile size, or give a "
                       "--memory_budget where the command takes one")
        if isinstance(node, OSError) and node.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {node.filename}" if node.filename else ""
            return 1, f"no space left on the device{where}; free some space or write to another folder"
    for node in chain:
        module = type(node).__module__ or ""
        text = _first_line(node)
        if isinstance(node, pickle.UnpicklingError) or "PytorchStreamReader" in str(node) \
                or module.startswith("_pickle") or "weights_only" in str(node):
            return 2, ("a checkpoint file is not a loadable PyTorch checkpoint (damaged, truncated, or refers to "
                       "code a weights-only load refuses); give a checkpoint written by 'hdrlab fit'")
        if isinstance(node, OSError):
            what = node.strerror or text or type(node).__name__
            files = " -> ".join(str(f) for f in (node.filename, node.filename2) if f)
            hint = {
                PermissionError: "check its permissions or choose another path",
                IsADirectoryError: "it is a folder: give a file path",
                NotADirectoryError: "a part of the path is a file, not a folder",
                FileExistsError: "it exists already: remove it or choose another path",
                FileNotFoundError: "check the path",
            }.get(type(node), "check the path")
            return 2, f"{files + ': ' if files else ''}{what}; {hint}"
        if module.startswith("cv2") and type(node).__name__ == "error":
            return 2, f"OpenCV cannot process an image ({text}); check that the file is a valid image"
        if module.startswith(("OpenEXR", "Imath")):
            return 2, f"OpenEXR cannot read or write a file ({text}); check that the file is a valid .exr"
        if isinstance(node, UnicodeDecodeError):
            return 2, (f"a file read as text holds binary data ({text}); give a UTF-8 text file (YAML configs "
                       "and sweep files are text)")
        if isinstance(node, OverflowError):
            return 2, f"a value is too large ({text}); give a smaller value"
    return None


def debug_enabled() -> bool:
    """``HDRLAB_DEBUG`` is set to something other than ``""`` / ``0`` / ``false``."""
    return os.environ.get("HDRLAB_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _split_memory_budget(argv: list[str]) -> list[str]:
    """``--memory_budget -4GiB`` as ``--memory_budget=-4GiB``, so that argparse does not read the
    negative value as an option (and the value's own check reports it)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if item == "--memory_budget" and nxt is not None and nxt[:1] == "-" and nxt[1:2].isdigit():
            out.append(f"{item}={nxt}")
            i += 2
            continue
        out.append(item)
        i += 1
    return out


def _ckpt_path_arg(argv: list[str]) -> str | None:
    """The last ``--ckpt_path`` value of a command line (``None`` when not given)."""
    value = None
    for i, item in enumerate(argv):
        if item == "--ckpt_path" and i + 1 < len(argv):
            value = argv[i + 1]
        elif item.startswith("--ckpt_path="):
            value = item.split("=", 1)[1]
    return value


def _check_config_files(argv: list[str], state: dict[str, Any]) -> None:
    """Each ``--config`` file of a trainer command exists and is UTF-8 text, and a ``--ckpt_path``
    file is a loadable checkpoint (one line otherwise), before Lightning is imported. The loaded
    checkpoint is kept in ``state["checkpoint"]`` for :func:`build_cli`."""
    ckpt_path = _ckpt_path_arg(argv)
    if ckpt_path not in (None, "", "null", "None") and ckpt_path not in LIGHTNING_CKPT_NAMES:
        from hdrlab.checkpoints import load_checkpoint

        state["checkpoint"] = (ckpt_path, load_checkpoint(ckpt_path, option="--ckpt_path"))
    for entry in config_args(argv):
        path = Path(str(entry))
        if not path.is_file():
            continue  # jsonargparse reports missing files and inline YAML itself
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"--config {path} is not a text (YAML) file: byte {err.start} is not UTF-8; "
                              "give an experiment YAML such as experiments/<x>.yaml") from err
        except OSError as err:
            raise ConfigError(f"--config {path} cannot be read ({err.strerror or err}); check its permissions") from err


def _run(name: str, rest: list[str], from_sys: bool) -> int:
    if name in TRAINER_SUBCOMMANDS:
        state: dict[str, Any] = {}
        _check_config_files(rest, state)
        args: list[str] | None = [name, *rest]
        if from_sys:  # LightningCLI reads sys.argv itself (and warns when given both)
            sys.argv[1:] = [name, *rest]
            args = None
        try:
            if name == "fit":
                fit_with_oom_step_down(args, state=state)
            else:
                build_cli(args, state=state)
        except BaseException:
            _remove_if_empty(state.get("created_dirs") or [])
            raise
        return 0
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


def _remove_if_empty(created: list[Path]) -> None:
    """The folders a failed run created (deepest first), as long as they are empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    """``hdrlab [--debug] <subcommand> ...``; returns the exit status.

    Every failure ends in one line ``hdrlab <subcommand>: error: ...`` on stderr: exit 2 for
    usage and input errors, 1 for runtime failures (out of memory, a full disk)
    (:func:`classify_error`); any other exception is a bug, reported as ``hdrlab <subcommand>:
    internal error: <Type>: <message>`` with exit 1. ``--debug`` (before the subcommand) or
    ``HDRLAB_DEBUG=1`` re-raises runtime failures and bugs with their traceback.
    """
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled()
    while argv and argv[0] == "--debug":
        debug = True
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], _split_memory_budget(argv[1:])
    if name not in TRAINER_SUBCOMMANDS and name not in SUBCOMMANDS:
        print(f"hdrlab: unknown subcommand {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return _run(name, rest, from_sys)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (module docstring)
        known = classify_error(err)
        if known is not None and (known[0] == 2 or not debug):
            code, message = known
            print(f"hdrlab {name}: error: {_first_line(message, 1000)}", file=sys.stderr)
            return code
        if debug:
            raise
        print(f"hdrlab {name}: internal error: {type(err).__name__}: {_first_line(err)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
