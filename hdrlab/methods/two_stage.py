"""``TwoStage(generator, merger)``: any single-image stack generator followed by any stack merger.

The composite reconstructs an HDR (or fused display) image from one LDR in two stages:

1. a :class:`~hdrlab.models.generators.base.StackGenerator` turns the input LDR ``[B, 3, H, W]``
   (display, ``[0, 1]``) into an :class:`~hdrlab.stack.ExposureStack` ``[B, N, 3, H, W]``;
2. an exposure-selection rule picks the members the merger takes (:func:`select_exposures`);
   only those are generated;
3. a :class:`~hdrlab.models.mergers.base.StackMerger` merges them into ``[B, 3, H, W]`` in its
   ``output_domain``.

The composite names no concrete generator or merger: it reads what they declare (the merger's
``accepts``, ``select_rule``, ``output_domain``, ``differentiable``, ``preserves_size``,
``has_objective`` / ``objective``, ``objective_supervised``; the generator's ``ev`` and
``output_ev``; both modules' ``stride``), so a new generator or merger works here without an
edit to this file.

The stack carries the batch's known camera response (``crf_forward`` / ``crf_inverse`` LUTs as a
:class:`hdrlab.camera.CRF`), so known-CRF mergers (``DebevecMerger(crf="known")``) linearise
exactly the way the input was rendered.

Domains (never silently mixed):

* linear mergers (Debevec): radiance relative to the *input* exposure (the input clips at 1.0);
  when the selected stack's reference is not the ev-0 input (e.g. the extreme pair), the merge
  (relative to its reference, ``t_ref = 1``) is multiplied by ``2 ** -ev_ref``
  (:func:`rescale_to_input`). ``output_domain = "linear"``, scored with the HDR metrics.
* display mergers (Mertens, CF-Net): a fused display image in ``[0, 1]``, ``output_domain =
  "display"``, scored against ``hdrlab.tonemap.display(hdr)`` with the display metric columns;
  or, with ``inverse_display=True``, mapped back to linear with the batch's inverse CRF,
  ``x = f^-1(y)`` (so at most the input's clip level 1.0), and scored with the HDR metrics.

Output loss (``merger_loss``, :data:`MERGER_LOSSES`): ``own`` is the merger's own objective
(``merger.objective(stack, batch)``, e.g. CF-Net's official loss; ``cfnet`` is an alias);
``hdr`` a reconstruction loss against ``batch["hdr"]`` (linear mergers); ``ssim`` is
``1 - SSIM`` against ``display(hdr)`` (display mergers; 7x7 window, non-negative SSIM);
``auto`` picks ``own`` when the merger has an objective, else ``hdr`` / ``ssim`` by its domain.

Training modes:

* ``freeze_generator``: the generator runs without gradients (eval mode); the merger is trained
  on generated stacks.
* ``freeze_merger``: the merger is frozen (eval mode); the generator is trained through it; the
  merger must be ``differentiable``.
* ``joint``: both train; the merger must be differentiable and have parameters.
* ``auto``: ``joint`` when the merger has parameters (a learned merger; it trains too, also when
  ``merger_ckpt`` loads trained weights: use ``freeze_merger`` to keep those fixed), else
  ``freeze_merger`` (classical mergers): one setting valid for every merger of a generator x merger grid.

Impossible combinations raise :class:`hdrlab.errors.ConfigError` at construction (a merger
without parameters cannot be trained, a non-differentiable merger passes no gradient, an arity
the merger refuses, an objective without ground truth cannot train the generator, ...).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from hdrlab import tonemap
from hdrlab.camera import lut_apply
from hdrlab.data.batch import HDRBatch, batch_crf
from hdrlab.errors import ConfigError
from hdrlab.losses.domains import DOMAINS, MU_KALANTARI
from hdrlab.losses.reconstruction import LOSS_KINDS, reconstruction_loss
from hdrlab.losses.structural import SSIMLoss
from hdrlab.methods.base import HDRMethod
from hdrlab.methods.build import load_submodule_state
from hdrlab.models.generators.base import StackGenerator
from hdrlab.models.mergers.base import StackMerger
from hdrlab.models.mergers.triplet import nearest_ev
from hdrlab.stack import ExposureStack

__all__ = [
    "MERGER_LOSSES",
    "MODES",
    "SELECT_RULES",
    "TwoStage",
    "generation_ev",
    "rescale_to_input",
    "resolve_select_rule",
    "select_exposures",
]

#: training modes of :class:`TwoStage`
MODES: tuple[str, ...] = ("freeze_generator", "freeze_merger", "joint")
#: exposure-selection rules (see :func:`select_exposures`)
SELECT_RULES: tuple[str, ...] = ("auto", "all", "extremes", "triplet", "nearest", "evs")
#: output losses (module docstring); ``cfnet`` is an alias of ``own``
MERGER_LOSSES: tuple[str, ...] = ("auto", "own", "hdr", "ssim", "cfnet")

#: ev values closer than this are the same exposure
_EV_TOLERANCE = 1e-4


# --------------------------------------------------------------------------- exposure selection
def resolve_select_rule(rule: str, merger: StackMerger) -> str:
    """The concrete selection rule for ``merger`` (``"auto"`` resolved by its declarations).

    ``auto``: the merger's own ``select_rule`` when it declares one (e.g. CF-Net reads only the
    darkest and brightest member: ``"extremes"``; the learned three-exposure mergers: ``"nearest"``,
    the generator exposures nearest their ``preferred_ev``); otherwise by its arity: ``"extremes"`` for
    mergers of exactly 2 exposures, ``"triplet"`` for exactly 3 (middle reference: Kalantari /
    Wu / AHDRNet style), ``"all"`` otherwise (Debevec, Mertens: any ``N >= 2``).

    Raises:
        ConfigError: unknown rule.
    """
    if rule not in SELECT_RULES:
        raise ConfigError(f"TwoStage select={rule!r} is unknown; use one of {list(SELECT_RULES)}")
    if rule != "auto":
        return rule
    declared = getattr(merger, "select_rule", "auto")
    if declared != "auto":
        return declared
    exactly = merger.accepts.exactly
    if exactly == 2:
        return "extremes"
    if exactly == 3:
        return "triplet"
    return "all"


def generation_ev(
    generator_ev: Sequence[float], rule: str, select_ev: Sequence[float] | None = None,
    preferred_ev: Sequence[float] | None = None,
) -> tuple[float, ...]:
    """The ev set to ask the generator for under a (resolved) selection rule.

    Only the exposures that will be selected are generated (plus the ev-0 input, which a
    generator always returns): ``all`` -> the generator's set; ``extremes`` -> its lowest and
    highest ev; ``triplet`` -> lowest, 0, highest; ``nearest`` -> for each ev of ``select_ev``
    (default: the merger's ``preferred_ev``) the nearest of the generator's ev and the input's 0
    (:func:`hdrlab.models.mergers.triplet.nearest_ev`); ``evs`` -> ``select_ev``.

    Args:
        generator_ev: the generator's ascending ev set (``StackGenerator.ev``).
        rule: ``all`` / ``extremes`` / ``triplet`` / ``nearest`` / ``evs``.
        select_ev: the exposures of rule ``evs`` (log2 exposure relative to the input), or the
            wanted exposures of rule ``nearest``.
        preferred_ev: the merger's wanted exposures for rule ``nearest`` without ``select_ev``.

    Returns:
        Ascending ev tuple (without duplicates).

    Raises:
        ConfigError: ``evs`` without a list, a triplet without exposures on both sides of 0.
    """
    evs = sorted(float(v) for v in generator_ev)
    if rule == "all":
        return tuple(evs)
    if rule == "extremes":
        if len(evs) < 2:
            raise ConfigError(f"select='extremes' needs a generator ev set of >= 2 values, got {evs}")
        return (evs[0], evs[-1])
    if rule == "triplet":
        if not (evs[0] < 0.0 < evs[-1]):
            raise ConfigError(
                f"select='triplet' needs generator exposures below and above the input (ev 0), got {evs}; "
                "give the generator e.g. ev=[-2, 2]"
            )
        return (evs[0], 0.0, evs[-1])
    if rule == "nearest":
        wanted = select_ev or preferred_ev
        if not wanted:
            raise ConfigError("select='nearest' needs the wanted exposures: select_ev, or a merger that declares preferred_ev")
        return nearest_ev(sorted({*evs, 0.0}), wanted)  # the ev-0 input is always in the stack
    if rule == "evs":
        if not select_ev:
            raise ConfigError("select='evs' needs select_ev, the list of exposures to merge, e.g. select_ev=[-2, 0, 2]")
        values = sorted({float(v) for v in select_ev})
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"select_ev={list(select_ev)} has non-finite values")
        return tuple(values)
    raise ConfigError(f"selection rule {rule!r} is not resolved; use one of {list(SELECT_RULES[1:])}")


def select_exposures(
    stack: ExposureStack, ev: Sequence[float] | None, *, have: Sequence[float] | None = None
) -> ExposureStack:
    """The sub-stack whose members have the exposures ``ev`` (ascending; ``None``: the whole stack).

    The reference stays the ev-0 input when it is selected, otherwise the selected member closest
    to ev 0 (then the merge is relative to that member: see :func:`rescale_to_input`). All images
    of a batch share one ev set (generated stacks).

    Args:
        stack: ``ExposureStack(images[B, N, 3, H, W], ev[B, N])``.
        ev: exposures to keep.
        have: the stack's ev values when known statically (a generator's ``output_ev``); ``None``
            reads them from the first row of ``stack.ev`` (not possible under ``FakeTensorMode``).

    Returns:
        ``ExposureStack(images[B, K, 3, H, W], ev[B, K], reference)``.

    Raises:
        ConfigError: an exposure of ``ev`` is not in the stack.
    """
    if ev is None:
        return stack
    have = [float(v) for v in (stack.ev[0].tolist() if have is None else have)]
    index = []
    for want in sorted(float(v) for v in ev):
        hits = [i for i, v in enumerate(have) if abs(v - want) < _EV_TOLERANCE]
        if not hits:
            raise ConfigError(f"exposure ev={want:g} is not in the generated stack (ev {have}); pick from those")
        index.append(hits[0])
    if index == list(range(len(have))):
        return stack
    if stack.reference in index:
        reference = index.index(stack.reference)
    else:
        reference = min(range(len(index)), key=lambda k: abs(have[index[k]]))
    return stack.select(index, reference=reference)


def rescale_to_input(radiance: torch.Tensor, stack: ExposureStack) -> torch.Tensor:
    """Rescale a linear merge from the stack's reference exposure to the input's (ev 0).

    A merger's radiance is relative to the reference member (``t_ref = 1``), i.e. ``R * 2**ev_ref``
    for input-relative radiance ``R``; this returns ``radiance * 2 ** -ev_ref`` (identity when the
    reference is the input).

    Args:
        radiance: ``[B, 3, H, W]`` linear merge.
        stack: the merged stack (``ev[B, N]``, ``reference``).

    Returns:
        ``[B, 3, H, W]`` radiance on the input's scale (the input clips at 1.0).
    """
    ev_ref = stack.ev[:, stack.reference].to(radiance.dtype)
    return radiance * torch.exp2(-ev_ref).view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- the composite
def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


class TwoStage(HDRMethod):
    """Generator x merger composite (module docstring).

    Args:
        generator: the stack generator (a plain ``nn.Module``, e.g. ``Le2023Generator``).
        merger: the stack merger (e.g. ``DebevecMerger(crf="known")``, ``CFNetMerger``, ``MertensMerger``).
        mode: ``freeze_generator`` | ``freeze_merger`` | ``joint`` (which stage trains) | ``auto``
            (``joint`` for a merger with parameters, else ``freeze_merger``).
        generator_ckpt: optional method checkpoint to load the generator's weights from.
        merger_ckpt: optional method checkpoint to load the merger's weights from.
        select: exposure-selection rule, :data:`SELECT_RULES`: ``auto`` (the merger's declared
            rule or its arity, :func:`resolve_select_rule`), ``all``, ``extremes`` (lowest + highest
            ev), ``triplet`` (lowest, 0, highest), ``nearest`` (the generator's exposures nearest
            ``select_ev`` or the merger's ``preferred_ev``), ``evs`` (the list ``select_ev``). Only selected
            exposures are generated.
        select_ev: exposures (log2 ratio to the input) for ``select="evs"`` / ``"nearest"``.
        inverse_display: map a display merger's output back to linear with the batch's inverse CRF
            (``output_domain = "linear"``, HDR metrics); only for display mergers.
        merger_loss: ``auto`` | ``own`` | ``hdr`` | ``ssim`` (``cfnet`` = ``own``), module docstring.
        structural_loss: accepted so that run configs written before the option moved to the merger
            load (they hold its default); ``None`` (default) or the merger's own ``structural_loss``
            value, anything else is an error naming the merger option to set.
        loss_kind: ``l1`` / ``l2`` of the ``hdr`` loss.
        loss_domain: domain of the ``hdr`` loss (``linear``, ``log``, ``mu_law``, ``pu21``).
        loss_mu: mu of the ``mu_law`` domain.
        lr: learning rate (default 1e-4; experiment YAMLs set the trained network's official one).
        **kwargs: :class:`HDRMethod` options (optimizer, betas, weight_decay, metrics, align, ...).
    """

    file_options = ("generator_ckpt", "merger_ckpt")

    def __init__(
        self,
        *,
        generator: StackGenerator,
        merger: StackMerger,
        mode: Literal["freeze_generator", "freeze_merger", "joint", "auto"] = "freeze_generator",
        generator_ckpt: str | None = None,
        merger_ckpt: str | None = None,
        select: Literal["auto", "all", "extremes", "triplet", "nearest", "evs"] = "auto",
        select_ev: Sequence[float] | None = None,
        inverse_display: bool = False,
        merger_loss: Literal["auto", "own", "hdr", "ssim", "cfnet"] = "auto",
        loss_kind: Literal["l1", "l2"] = "l1",
        loss_domain: Literal["linear", "log", "mu_law", "pu21"] = "log",
        loss_mu: float = MU_KALANTARI,
        structural_loss: str | None = None,
        lr: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        if not isinstance(generator, StackGenerator):
            raise ConfigError(f"TwoStage.generator must be a StackGenerator, got {type(generator).__name__}")
        if not isinstance(merger, StackMerger):
            raise ConfigError(f"TwoStage.merger must be a StackMerger, got {type(merger).__name__}")
        if mode not in (*MODES, "auto"):
            raise ConfigError(f"TwoStage mode={mode!r} is unknown; use one of {[*MODES, 'auto']}")
        if mode == "auto":
            mode = "joint" if _has_parameters(merger) else "freeze_merger"
        if loss_kind not in LOSS_KINDS:
            raise ConfigError(f"TwoStage loss_kind={loss_kind!r} is unknown; use one of {list(LOSS_KINDS)}")
        if loss_domain not in DOMAINS:
            raise ConfigError(f"TwoStage loss_domain={loss_domain!r} is unknown; use one of {list(DOMAINS)}")
        self.generator = generator
        self.merger = merger
        self.mode = mode
        self.inverse_display = bool(inverse_display)
        self.loss_kind, self.loss_domain, self.loss_mu = loss_kind, loss_domain, float(loss_mu)
        merger_name = type(merger).__name__
        generator_name = type(generator).__name__
        trains_generator = mode in ("freeze_merger", "joint")

        # ---- which stage trains: impossible combinations are user errors
        if mode in ("freeze_generator", "joint") and not _has_parameters(merger):
            raise ConfigError(
                f"TwoStage(mode={mode!r}) trains the merger, but {merger_name} has no trainable parameters; "
                "use mode='freeze_merger' to train the generator through it, or only validate/test"
            )
        if trains_generator:
            if not merger.differentiable:
                raise ConfigError(
                    f"TwoStage(mode={mode!r}) needs gradients through the merger, but {merger_name} is not "
                    "differentiable; use mode='freeze_generator' with a trainable merger or a differentiable merger"
                )
            if not _has_parameters(generator):
                raise ConfigError(f"TwoStage(mode={mode!r}) trains the generator, but {generator_name} has no parameters")
        if not merger.preserves_size:
            raise ConfigError(
                f"TwoStage needs a merger whose output has the input's size, but {merger_name} changes it; "
                "configure the merger to keep the input's size (its same-resolution option)"
            )

        # ---- domains
        if merger.output_domain == "linear" and self.inverse_display:
            raise ConfigError(
                f"inverse_display=True maps a display image back to linear, but {merger_name} already outputs "
                "linear radiance; set inverse_display: false"
            )
        self.output_domain = "linear" if (merger.output_domain == "linear" or self.inverse_display) else "display"

        # ---- loss
        if structural_loss is not None and structural_loss != getattr(merger, "structural_loss", None):
            raise ConfigError(
                f"TwoStage structural_loss={structural_loss!r} is an option of the merger; set "
                f"model.init_args.merger.init_args.structural_loss (for a merger that has it) and drop it here"
            )
        self.merger_loss = self._resolve_loss(merger_loss, merger, trains_generator)
        self._ssim_loss = SSIMLoss(domain="identity", win_size=7, nonnegative=True)

        # ---- exposure selection (checked against the merger's arity now, not at the first batch)
        self.select = resolve_select_rule(select, merger)
        self.generation_ev = generation_ev(generator.ev, self.select, select_ev, getattr(merger, "preferred_ev", None))
        self.stack_ev = generator.output_ev(self.generation_ev)
        self.selected_ev = None if self.select == "all" else tuple(self.generation_ev)
        keep = tuple(generator.ev) if self.selected_ev is None else self.selected_ev
        reference = min(range(len(keep)), key=lambda i: abs(keep[i]))
        problem = merger.accepts.problem(len(keep), reference)
        if problem is not None:
            raise ConfigError(
                f"{merger_name} {problem} (selection {self.select!r} of the generator's ev {list(generator.ev)} "
                f"gives ev {list(keep)}); choose another select rule or generator ev set"
            )

        # ---- weights from method checkpoints
        if generator_ckpt:
            load_submodule_state(self.generator, generator_ckpt, name="generator_ckpt")
        if merger_ckpt:
            load_submodule_state(self.merger, merger_ckpt, name="merger_ckpt")

        # ---- freezing
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    @staticmethod
    def _resolve_loss(name: str, merger: StackMerger, trains_generator: bool) -> str:
        """The concrete output loss (``own`` / ``hdr`` / ``ssim``) for ``merger``; raises on mismatches."""
        merger_name = type(merger).__name__
        if name not in MERGER_LOSSES:
            raise ConfigError(f"TwoStage merger_loss={name!r} is unknown; use one of {list(MERGER_LOSSES)}")
        given = name
        if name == "cfnet":
            name = "own"
        if name == "auto":
            name = "own" if merger.has_objective else ("hdr" if merger.output_domain == "linear" else "ssim")
        if name == "own":
            if not merger.has_objective:
                raise ConfigError(
                    f"merger_loss={given!r} needs a merger with its own objective, but {merger_name} has none; "
                    f"use {'hdr' if merger.output_domain == 'linear' else 'ssim'!r}"
                )
            if trains_generator and not merger.objective_supervised:
                raise ConfigError(
                    f"{merger_name}'s objective is scored against the generated stack only (no ground truth), "
                    "so it cannot train the generator; use mode 'freeze_generator' or a supervised objective"
                )
        elif name == "hdr" and merger.output_domain != "linear":
            raise ConfigError(
                f"merger_loss='hdr' compares radiance, but {merger_name} outputs a display image; "
                "use merger_loss='ssim' (or 'own' for a merger with its own objective)"
            )
        elif name == "ssim" and merger.output_domain != "display":
            raise ConfigError(f"merger_loss='ssim' is a display loss, but {merger_name} outputs radiance; use 'hdr'")
        return name

    # ------------------------------------------------------------------ structure
    def frozen_modules(self) -> list[nn.Module]:
        """The stage(s) not trained in this mode (kept in eval mode: BatchNorm statistics frozen)."""
        return {"freeze_generator": [self.generator], "freeze_merger": [self.merger], "joint": []}[self.mode]

    def train(self, mode: bool = True) -> TwoStage:
        """Lightning's train/eval switch; frozen stages always stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    # ------------------------------------------------------------------ the two stages
    def generate_stack(self, batch: Mapping[str, Any]) -> ExposureStack:
        """Stage 1 + selection: ``batch["ldr"] [B, 3, H, W]`` -> selected stack with the batch CRF.

        Returns:
            ``ExposureStack(images[B, K, 3, H, W] in [0, 1], ev[B, K], reference, crf=batch CRF)``.
        """
        ldr = batch["ldr"]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode != "freeze_generator"):
            stack = self.generator(ldr, ev=self.generation_ev)
        stack = select_exposures(stack, self.selected_ev, have=self.stack_ev)
        return dataclasses.replace(stack, crf=batch_crf(batch))

    def merge_stack(self, stack: ExposureStack) -> torch.Tensor:
        """Stage 2 in the merger's domain: linear radiance on the input's scale, or a display image.

        Returns:
            ``[B, 3, H, W]``.
        """
        out = self.merger(stack)
        if self.merger.output_domain == "linear":
            out = rescale_to_input(out, stack)
        return out

    # ------------------------------------------------------------------ HDRMethod
    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """``[B, 3, H, W]`` in :attr:`output_domain` (linear radiance, input clip = 1, or display [0, 1])."""
        pred = self.merge_stack(self.generate_stack(batch))
        if self.inverse_display:
            pred = lut_apply(pred.clamp(0.0, 1.0), batch["crf_inverse"])
        return pred

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output loss (``merger_loss``, module docstring) and its named terms."""
        stack = self.generate_stack(batch)
        if self.merger_loss == "own":
            return self.merger.objective(stack, batch)
        pred = self.merge_stack(stack)
        if self.merger_loss == "ssim":
            loss = self._ssim_loss(pred.clamp(0.0, 1.0), tonemap.display(batch["hdr"]))
            return loss, {"ssim": loss}
        loss = reconstruction_loss(pred, batch["hdr"], kind=self.loss_kind, domain=self.loss_domain, mu=self.loss_mu)
        return loss, {f"{self.loss_kind}_{self.loss_domain}": loss}

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """``{"stack": [B, K, 3, H, W]}``: the selected generated stack."""
        return {"stack": self.generate_stack(batch).images}
