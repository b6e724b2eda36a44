"""``TwoStage(generator, merger)``: any single-image stack generator followed by any stack merger.

The composite reconstructs an HDR (or fused display) image from one LDR in two stages:

1. a :class:`~hdrlab.models.generators.base.StackGenerator` turns the input LDR ``[B, 3, H, W]``
   (display, ``[0, 1]``) into an :class:`~hdrlab.stack.ExposureStack` ``[B, N, 3, H, W]``;
2. an exposure-selection rule picks the members the merger takes (:func:`select_exposures`);
3. a :class:`~hdrlab.models.mergers.base.StackMerger` merges them into ``[B, 3, H, W]`` in its
   ``output_domain``.

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

Training modes:

* ``freeze_generator``: the generator runs without gradients (eval mode); the merger is trained
  on generated stacks with the merger's own loss (:data:`MERGER_LOSSES`: CF-Net's official SSIM
  loss for :class:`CFNetMerger`, ``1 - SSIM`` for other display mergers, the HDR reconstruction
  loss for linear mergers).
* ``freeze_merger``: the merger is frozen (eval mode); the generator is trained through it with the
  same output loss; the merger must be ``differentiable``.
* ``joint``: both train; the merger must be differentiable and have parameters.

Impossible combinations raise :class:`hdrlab.errors.ConfigError` at construction (a merger
without parameters cannot be trained, a non-differentiable merger passes no gradient, an arity
the merger refuses, ...).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from hdrlab import tonemap
from hdrlab.camera import CRF, lut_apply
from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.losses.cfnet import check_structural_loss, cfnet_loss, cfnet_ssim
from hdrlab.losses.domains import DOMAINS, MU_KALANTARI
from hdrlab.losses.reconstruction import LOSS_KINDS, reconstruction_loss
from hdrlab.methods.base import HDRMethod
from hdrlab.models.generators.base import StackGenerator
from hdrlab.models.mergers.base import StackMerger
from hdrlab.models.mergers.cfnet import CFNetMerger, CFNetOutput, downsample_pair_image
from hdrlab.stack import ExposureStack

__all__ = [
    "MERGER_LOSSES",
    "MODES",
    "SELECT_RULES",
    "TwoStage",
    "batch_crf",
    "find_state_prefix",
    "generation_ev",
    "load_submodule_state",
    "rescale_to_input",
    "resolve_select_rule",
    "select_exposures",
]

#: training modes of :class:`TwoStage`
MODES: tuple[str, ...] = ("freeze_generator", "freeze_merger", "joint")
#: exposure-selection rules (see :func:`select_exposures`)
SELECT_RULES: tuple[str, ...] = ("auto", "all", "extremes", "triplet", "evs")
#: output losses (see :class:`TwoStage`)
MERGER_LOSSES: tuple[str, ...] = ("auto", "hdr", "ssim", "cfnet")

#: ev values closer than this are the same exposure
_EV_TOLERANCE = 1e-4


# --------------------------------------------------------------------------- exposure selection
def resolve_select_rule(rule: str, merger: StackMerger) -> str:
    """The concrete selection rule for ``merger`` (``"auto"`` resolved by its declared arity).

    ``auto``: ``"extremes"`` for mergers of exactly 2 exposures and for :class:`CFNetMerger`
    (which reads only the darkest and brightest member, spec ``mergers.md`` §8), ``"triplet"`` for
    mergers of exactly 3 exposures (middle reference: Kalantari / Wu / AHDRNet style), ``"all"``
    otherwise (Debevec, Mertens: any ``N >= 2``).

    Raises:
        ConfigError: unknown rule.
    """
    if rule not in SELECT_RULES:
        raise ConfigError(f"TwoStage select={rule!r} is unknown; use one of {list(SELECT_RULES)}")
    if rule != "auto":
        return rule
    exactly = merger.accepts.exactly
    if exactly == 2 or isinstance(merger, CFNetMerger):
        return "extremes"
    if exactly == 3:
        return "triplet"
    return "all"


def generation_ev(
    generator_ev: Sequence[float], rule: str, select_ev: Sequence[float] | None = None
) -> tuple[float, ...]:
    """The ev set to ask the generator for under a (resolved) selection rule.

    Only the exposures that will be selected are generated (plus the ev-0 input, which a
    generator always returns): ``all`` -> the generator's set; ``extremes`` -> its lowest and
    highest ev; ``triplet`` -> lowest, 0, highest; ``evs`` -> ``select_ev``.

    Args:
        generator_ev: the generator's ascending ev set (``StackGenerator.ev``).
        rule: ``all`` / ``extremes`` / ``triplet`` / ``evs``.
        select_ev: the exposures of rule ``evs`` (log2 exposure relative to the input).

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
    if rule == "evs":
        if not select_ev:
            raise ConfigError("select='evs' needs select_ev, the list of exposures to merge, e.g. select_ev=[-2, 0, 2]")
        values = sorted({float(v) for v in select_ev})
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"select_ev={list(select_ev)} has non-finite values")
        return tuple(values)
    raise ConfigError(f"selection rule {rule!r} is not resolved; use one of {list(SELECT_RULES[1:])}")


def select_exposures(stack: ExposureStack, ev: Sequence[float] | None) -> ExposureStack:
    """The sub-stack whose members have the exposures ``ev`` (ascending; ``None``: the whole stack).

    The reference stays the ev-0 input when it is selected, otherwise the selected member closest
    to ev 0 (then the merge is relative to that member: see :func:`rescale_to_input`). All images
    of a batch share one ev set (generated stacks), read from the first row.

    Args:
        stack: ``ExposureStack(images[B, N, 3, H, W], ev[B, N])``.
        ev: exposures to keep.

    Returns:
        ``ExposureStack(images[B, K, 3, H, W], ev[B, K], reference)``.

    Raises:
        ConfigError: an exposure of ``ev`` is not in the stack.
    """
    if ev is None:
        return stack
    have = [float(v) for v in stack.ev[0].tolist()]
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


def batch_crf(batch: Mapping[str, Any]) -> CRF:
    """The batch's known camera response as a batched :class:`hdrlab.camera.CRF` (``[B, C, 1024]`` LUTs)."""
    for key in ("crf_forward", "crf_inverse"):
        if key not in batch:
            raise ConfigError(
                f"the batch has no {key!r}; a two-stage model needs the input's CRF LUTs "
                "(hdrlab.data batches carry them; for real photos assume one, e.g. CRF.gamma(2.2))"
            )
    return CRF(forward_lut=batch["crf_forward"], inverse_lut=batch["crf_inverse"], name="batch")


# --------------------------------------------------------------------------- checkpoint loading
def find_state_prefix(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """Locate a module's parameters inside a larger (e.g. LightningModule) state dict.

    Finds ``(source_prefix, target_prefix)`` such that every key ``k`` of ``target`` starts with
    ``target_prefix`` and ``source_prefix + k[len(target_prefix):]`` is a key of ``state`` with the
    same shape. The longest matching key suffix wins (so ``generator.net.x`` in a composite's
    checkpoint, or ``net.x`` in a method that holds the bare network, both match).

    Args:
        state: the checkpoint's state dict.
        target: the module's own ``state_dict()``.

    Returns:
        ``(source_prefix, target_prefix)``.

    Raises:
        ConfigError: nothing matches (wrong checkpoint) or shapes differ (e.g. another ``width``).
    """
    if not target:
        raise ConfigError("the module to load has no parameters or buffers")
    keys = sorted(target)
    ref = max(keys, key=len)
    parts = ref.split(".")
    shape_problem = None
    for cut in range(len(parts)):  # shortest target prefix (= longest suffix) first
        target_prefix = ".".join(parts[:cut]) + ("." if cut else "")
        if not all(k.startswith(target_prefix) for k in keys):
            continue
        rest = ref[len(target_prefix):]
        sources = sorted({k[: len(k) - len(rest)] for k in state if k.endswith(rest) and
                          (len(k) == len(rest) or k[len(k) - len(rest) - 1] == ".")}, key=len)
        for source_prefix in sources:
            mapped = {k: source_prefix + k[len(target_prefix):] for k in keys}
            if not all(m in state for m in mapped.values()):
                continue
            bad = [k for k, m in mapped.items() if tuple(state[m].shape) != tuple(target[k].shape)]
            if bad:
                shape_problem = (bad[0], tuple(state[mapped[bad[0]]].shape), tuple(target[bad[0]].shape))
                continue
            return source_prefix, target_prefix
    if shape_problem is not None:
        key, have, want = shape_problem
        raise ConfigError(
            f"checkpoint tensor for {key!r} has shape {have} but the module expects {want}; "
            "build the module with the same architecture options (e.g. width) as the checkpoint's run"
        )
    raise ConfigError(
        f"no parameters of this module (e.g. {ref!r}) were found in the checkpoint; "
        "point the *_ckpt option at a checkpoint of a method that holds this network"
    )


def load_submodule_state(module: nn.Module, path: str | Path, *, name: str = "module") -> str:
    """Load ``module``'s weights from a method checkpoint (or a bare state dict) at ``path``.

    The file is read with ``torch.load(..., weights_only=True)``; a Lightning checkpoint's
    ``state_dict`` is searched for the module's keys with :func:`find_state_prefix`.

    Args:
        module: the network to fill (e.g. ``TwoStage.generator``).
        path: ``.ckpt`` / ``.pt`` file.
        name: the option name for error messages (``generator_ckpt``, ``merger_ckpt``).

    Returns:
        The prefix under which the weights were found in the checkpoint.

    Raises:
        ConfigError: missing file or no matching weights.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{name}={str(path)!r} does not exist; give the path of a method checkpoint (.ckpt)")
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConfigError(f"{name}={str(path)!r} holds no state dict; give a Lightning checkpoint or a saved state_dict")
    target = module.state_dict()
    try:
        source_prefix, target_prefix = find_state_prefix(state, target)
    except ConfigError as err:
        raise ConfigError(f"{name}={str(path)!r}: {err}") from None
    module.load_state_dict({k: state[source_prefix + k[len(target_prefix):]] for k in target})
    return source_prefix


# --------------------------------------------------------------------------- the composite
def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


class TwoStage(HDRMethod):
    """Generator x merger composite (module docstring).

    Args:
        generator: the stack generator (a plain ``nn.Module``, e.g. ``Le2023Generator``).
        merger: the stack merger (e.g. ``DebevecMerger(crf="known")``, ``CFNetMerger``, ``MertensMerger``).
        mode: ``freeze_generator`` | ``freeze_merger`` | ``joint`` (which stage trains).
        generator_ckpt: optional method checkpoint to load the generator's weights from.
        merger_ckpt: optional method checkpoint to load the merger's weights from.
        select: exposure-selection rule, :data:`SELECT_RULES`: ``auto`` (by the merger's arity, see
            :func:`resolve_select_rule`), ``all``, ``extremes`` (lowest + highest ev), ``triplet``
            (lowest, 0, highest), ``evs`` (the list ``select_ev``). Only selected exposures are generated.
        select_ev: exposures (log2 ratio to the input) for ``select="evs"``.
        inverse_display: map a display merger's output back to linear with the batch's inverse CRF
            (``output_domain = "linear"``, HDR metrics); only for display mergers.
        merger_loss: ``auto`` (``cfnet`` for CF-Net, ``ssim`` for other display mergers, ``hdr`` for
            linear mergers), ``hdr`` (reconstruction loss vs ``hdr``, linear mergers), ``ssim``
            (``1 - SSIM`` vs ``display(hdr)``, display mergers; pytorch-msssim, 7x7 window) or
            ``cfnet`` (CF-Net's official loss, :func:`hdrlab.losses.cfnet.cfnet_loss`, its SRB outputs
            supervised by the full-resolution under/over members and every feedback step by
            ``display(hdr)``).
        structural_loss: structural term of the ``cfnet`` loss: ``"ssim"`` (official code) or
            ``"mef_ssim"`` (each feedback step scored with MEF-SSIM, Ma et al. 2015, against the
            selected under/over pair instead of ``display(hdr)``; unverified, see
            :mod:`hdrlab.losses.mef_ssim`). ``"mef_ssim"`` needs ``merger_loss`` ``cfnet`` (or ``auto``
            with a CF-Net merger) and ``mode="freeze_generator"``: without ground truth, a trained
            generator could make its own sources trivially easy to fuse.
        loss_kind: ``l1`` / ``l2`` of the ``hdr`` loss.
        loss_domain: domain of the ``hdr`` loss (``linear``, ``log``, ``mu_law``, ``pu21``).
        loss_mu: mu of the ``mu_law`` domain.
        lr: Adam learning rate (default 1e-4; experiment YAMLs set the trained network's official one).
        **kwargs: :class:`HDRMethod` options (betas, weight_decay, metrics, align, ...).
    """

    def __init__(
        self,
        *,
        generator: StackGenerator,
        merger: StackMerger,
        mode: Literal["freeze_generator", "freeze_merger", "joint"] = "freeze_generator",
        generator_ckpt: str | None = None,
        merger_ckpt: str | None = None,
        select: Literal["auto", "all", "extremes", "triplet", "evs"] = "auto",
        select_ev: Sequence[float] | None = None,
        inverse_display: bool = False,
        merger_loss: Literal["auto", "hdr", "ssim", "cfnet"] = "auto",
        loss_kind: Literal["l1", "l2"] = "l1",
        loss_domain: Literal["linear", "log", "mu_law", "pu21"] = "log",
        loss_mu: float = MU_KALANTARI,
        structural_loss: Literal["ssim", "mef_ssim"] = "ssim",
        lr: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        if not isinstance(generator, StackGenerator):
            raise ConfigError(f"TwoStage.generator must be a StackGenerator, got {type(generator).__name__}")
        if not isinstance(merger, StackMerger):
            raise ConfigError(f"TwoStage.merger must be a StackMerger, got {type(merger).__name__}")
        if mode not in MODES:
            raise ConfigError(f"TwoStage mode={mode!r} is unknown; use one of {list(MODES)}")
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

        # ---- which stage trains: impossible combinations are user errors
        if mode in ("freeze_generator", "joint") and not _has_parameters(merger):
            raise ConfigError(
                f"TwoStage(mode={mode!r}) trains the merger, but {merger_name} has no trainable parameters; "
                "use mode='freeze_merger' to train the generator through it, or only validate/test"
            )
        if mode in ("freeze_merger", "joint"):
            if not merger.differentiable:
                raise ConfigError(
                    f"TwoStage(mode={mode!r}) needs gradients through the merger, but {merger_name} is not "
                    "differentiable; use mode='freeze_generator' with a trainable merger or a differentiable merger"
                )
            if not _has_parameters(generator):
                raise ConfigError(f"TwoStage(mode={mode!r}) trains the generator, but {generator_name} has no parameters")
        if isinstance(merger, CFNetMerger) and not merger.same_resolution:
            raise ConfigError(
                "TwoStage needs CFNetMerger(same_resolution=True): the composite's output must match the input "
                "size (the pair is downsampled by the scale and super-resolved back)"
            )

        # ---- domains
        if merger.output_domain == "linear" and self.inverse_display:
            raise ConfigError(
                f"inverse_display=True maps a display image back to linear, but {merger_name} already outputs "
                "linear radiance; set inverse_display: false"
            )
        self.output_domain = "linear" if (merger.output_domain == "linear" or self.inverse_display) else "display"

        # ---- loss
        if merger_loss not in MERGER_LOSSES:
            raise ConfigError(f"TwoStage merger_loss={merger_loss!r} is unknown; use one of {list(MERGER_LOSSES)}")
        if merger_loss == "auto":
            if isinstance(merger, CFNetMerger):
                merger_loss = "cfnet"
            else:
                merger_loss = "hdr" if merger.output_domain == "linear" else "ssim"
        if merger_loss == "hdr" and merger.output_domain != "linear":
            raise ConfigError(
                f"merger_loss='hdr' compares radiance, but {merger_name} outputs a display image; "
                "use merger_loss='ssim' (or 'cfnet' for CF-Net)"
            )
        if merger_loss in ("ssim", "cfnet") and merger.output_domain != "display":
            raise ConfigError(f"merger_loss={merger_loss!r} is a display loss, but {merger_name} outputs radiance; use 'hdr'")
        if merger_loss == "cfnet" and not isinstance(merger, CFNetMerger):
            raise ConfigError(f"merger_loss='cfnet' needs a CFNetMerger, got {merger_name}; use 'ssim'")
        self.merger_loss = merger_loss
        self.structural_loss = check_structural_loss(structural_loss, owner="TwoStage")
        if structural_loss == "mef_ssim" and merger_loss != "cfnet":
            raise ConfigError(
                f"TwoStage structural_loss='mef_ssim' applies to CF-Net's loss, but merger_loss is {merger_loss!r} "
                f"({merger_name}); use a CFNetMerger with merger_loss 'cfnet' (or 'auto'), or structural_loss 'ssim'"
            )
        if structural_loss == "mef_ssim" and mode != "freeze_generator":
            raise ConfigError(
                f"TwoStage structural_loss='mef_ssim' scores CF-Net against the generated pair (no ground truth), "
                f"so it cannot train the generator (mode={mode!r}); use mode 'freeze_generator' or structural_loss 'ssim'"
            )

        # ---- exposure selection (checked against the merger's arity now, not at the first batch)
        self.select = resolve_select_rule(select, merger)
        self.generation_ev = generation_ev(generator.ev, self.select, select_ev)
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
        if self.mode == "freeze_generator":
            with torch.no_grad():
                stack = self.generator(ldr, ev=self.generation_ev)
        else:
            stack = self.generator(ldr, ev=self.generation_ev)
        stack = select_exposures(stack, self.selected_ev)
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

    def cfnet_outputs(self, stack: ExposureStack) -> CFNetOutput:
        """All of CF-Net's outputs (both branches, SRB + T feedback steps) for its official loss."""
        merger = self.merger
        merger.check_stack(stack)
        scale = merger.net.scale
        under = downsample_pair_image(stack.images[:, 0], scale=scale, mode=merger.downsample)
        over = downsample_pair_image(stack.images[:, -1], scale=scale, mode=merger.downsample)
        return merger.net(under, over)

    # ------------------------------------------------------------------ HDRMethod
    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """``[B, 3, H, W]`` in :attr:`output_domain` (linear radiance, input clip = 1, or display [0, 1])."""
        pred = self.merge_stack(self.generate_stack(batch))
        if self.inverse_display:
            pred = lut_apply(pred.clamp(0.0, 1.0), batch["crf_inverse"])
        return pred

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output loss in the merger's domain (class docstring, ``merger_loss``)."""
        stack = self.generate_stack(batch)
        if self.merger_loss == "cfnet":
            out = self.cfnet_outputs(stack)
            target = tonemap.display(batch["hdr"]) if self.structural_loss == "ssim" else None
            loss = cfnet_loss(out.under, out.over, hr_under=stack.images[:, 0].detach(),
                              hr_over=stack.images[:, -1].detach(), hr_fused=target,
                              structural_loss=self.structural_loss)
            return loss, {f"cfnet_{self.structural_loss}": loss}
        pred = self.merge_stack(stack)
        if self.merger_loss == "ssim":
            loss = 1.0 - cfnet_ssim(pred.clamp(0.0, 1.0), tonemap.display(batch["hdr"]))
            return loss, {"ssim": loss}
        loss = reconstruction_loss(pred, batch["hdr"], kind=self.loss_kind, domain=self.loss_domain, mu=self.loss_mu)
        return loss, {f"{self.loss_kind}_{self.loss_domain}": loss}

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """``{"stack": [B, K, 3, H, W]}``: the selected generated stack."""
        return {"stack": self.generate_stack(batch).images}
