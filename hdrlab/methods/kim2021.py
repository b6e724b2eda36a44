"""Kim, Lee, Kang (AAAI 2021), "End-to-End Differentiable Learning to HDR Image Synthesis for
Multi-exposure Images", as a method: recursive up/down stack generation trained through the
differentiable HDR synthesis layer.

Training (official ``solver.py``), per iteration, from the batch's 7-image bracket ``I_0..I_6``
(ev -3..3; index 3 is the input) and the HDR ground truth:

* **single_step** (teacher forcing): a random start index ``r`` in ``0..6``; every up step
  ``k = r+1..6`` maps the *ground-truth* ``I_{k-1}`` and its Canny edge map to ``k``, every down
  step ``k = r-1..0`` maps ``I_{k+1}`` to ``k``; GRU states are carried but detached.
  Losses per step: ``L_edge`` (structure nets), ``L_int`` (global nets) and, after ``refine_step``,
  ``L_exp`` (refinement nets).
* **recursive**: a start index ``r = 3 + {-1, 0, 1}``; the full stack is made by recursion
  (global outputs fed back before ``refine_step``, refined outputs after; predicted edges fed back;
  gradients through the recursion). Losses over the whole 7-stack (the start image included, as
  the official code): ``L_edge`` -> structure; ``L_int`` -> global; after ``refine_step``
  ``L_exp = L1`` (+ ``0.1 CoBi`` as a constant: the official code rebuilds it with
  ``torch.tensor`` from a list, so it carries no gradient) -> refinement; and ``L_HDR`` (mu-law
  L1 between :class:`~hdrlab.models.mergers.kim_synthesis.KimSynthesisMerger` of the predicted
  stack and ``batch["hdr"]``) -> all six networks.

**Gradient routing.** The official code calls ``backward`` once per loss and steps only that
loss's optimiser, updating parameters between backward passes of one graph (modern PyTorch
refuses this: an in-place modification error). Here every network group (structure, global,
refinement; both directions) gets the gradient of exactly the losses that step it in the
official code -- ``torch.autograd.grad`` of the group's loss sum with respect to the group's
parameters, all computed on the same graph before any update -- and one optimiser step applies
all of them (:meth:`Kim2021Method.routed_loss`). The differences to the official order: one
update per iteration instead of one per loss and per single step (later losses of an iteration
see the parameters of the iteration's start), named here on purpose.

Loss terms and reductions: :mod:`hdrlab.losses.kim2021`.

Optimiser: Adam with gradient centralisation (official ``adam_cent``: the L2 decay is added to a
gradient, then conv/linear weight gradients lose their mean over all but the first dimension),
betas (0.5, 0.999), weight decay 5e-5; learning rates: global 1e-4, structure 1e-4, refinement
1e-5 (:func:`adam_gc`: ``torch.optim.Adam`` with a gradient-centralising step pre-hook).

Evaluation/prediction: the generator recurses from the input (refined outputs fed back) to the
7-image stack, and the merger (default :class:`KimSynthesisMerger`) turns it into linear radiance
relative to the input exposure.

Deviations from the official code (besides the gradient routing above):

* Brackets are synthetic (procedural radiance, sampled CRFs, the data module's crops and flips)
  instead of VDS scenes resized to 256 x 256 with random zoom.
* Edge maps come from :func:`hdrlab.models.generators.kim2021.kim_edge_map` (kornia Canny)
  instead of skimage.
* One device; the official code splits the networks over two GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake

from hdrlab.data.batch import HDRBatch, example_bracket
from hdrlab.errors import ConfigError
from hdrlab.losses.kim2021 import ContextualBilateralLoss, exposure_loss, hdr_loss, intermediate_loss
from hdrlab.methods.base import HDRMethod
from hdrlab.models.generators.kim2021 import (
    KIM2021_DEFAULT_EV,
    KIM_REFERENCE_INDEX,
    Kim2021Generator,
    kim_edge_map,
    kim_style_index,
)
from hdrlab.models.mergers.base import StackMerger
from hdrlab.stack import ExposureStack
from hdrlab.weights import load_vgg_features

Phase = Literal["single_step", "recursive"]
PHASES: tuple[str, ...] = ("single_step", "recursive")
GROUPS: tuple[str, ...] = ("structure", "global", "refine")
STACK_SIZE = 2 * KIM_REFERENCE_INDEX + 1


@torch.no_grad()
def centralize_gradients(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
    """Gradient centralisation (Yong et al. 2020; official ``utils/Adam.py``, "adam_cent") as a step pre-hook.

    For every parameter of a group with ``l2_decay``: ``g += l2_decay * p`` (the L2 decay the official
    optimiser adds), then, for parameters with more than one dimension,
    ``g -= mean(g over all dims but the first)``. The group's own ``weight_decay`` must be 0 (the
    decay is applied here, before the centralisation, as in the official optimiser).
    """
    for group in optimizer.param_groups:
        decay = group.get("l2_decay", 0.0)
        for p in group["params"]:
            if p.grad is None:
                continue
            if decay:
                p.grad.add_(p, alpha=decay)
            if p.grad.dim() > 1:
                p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))


def adam_gc(groups: list[dict[str, Any]], *, lr: float, betas: tuple[float, float], weight_decay: float
            ) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``groups`` with :func:`centralize_gradients` as its step pre-hook
    (the decay moves into the hook as ``l2_decay``; a plain Adam, so the memory planner models it)."""
    groups = [{**g, "weight_decay": 0.0, "l2_decay": weight_decay} for g in groups]
    optimizer = torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=0.0)
    optimizer.register_step_pre_hook(centralize_gradients)
    return optimizer


def kim_bracket(batch: HDRBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The 7-image bracket ev -3..3 (the batch's ``stack`` plus the input ``ldr`` at ev 0).

    A bracket of 6 exposures gets the input inserted at index 3 (ev 0).

    Returns:
        ``(images [B, 7, 3, H, W] in [0, 1], ev [B, 7])``.

    Raises:
        ConfigError: no bracket, or not the ev set ``-3, -2, -1, 1, 2, 3``.
    """
    if "stack" not in batch or "ev" not in batch:
        raise ConfigError("Kim2021Method trains on 7-image brackets but the batch has no 'stack'/'ev': "
                          "set data.init_args.bracket_ev: [-3, -2, -1, 1, 2, 3]")
    images, ev = batch["stack"], batch["ev"].to(batch["stack"].dtype)
    if ev.shape[1] == STACK_SIZE - 1:
        images = torch.cat([images[:, :3], batch["ldr"].unsqueeze(1), images[:, 3:]], dim=1)
        ev = torch.cat([ev[:, :3], ev.new_zeros(ev.shape[0], 1), ev[:, 3:]], dim=1)
    expected = torch.arange(-3, 4, dtype=ev.dtype, device=ev.device)
    if ev.shape[1] != STACK_SIZE or (not is_fake(ev) and not bool((ev == expected).all())):
        raise ConfigError(f"Kim2021Method needs the bracket ev -3..3, got {ev[0].tolist()}; "
                          "set data.init_args.bracket_ev: [-3, -2, -1, 1, 2, 3]")
    return images, ev


class Kim2021Method(HDRMethod):
    """Kim et al. (AAAI 2021): recursive stack generator + differentiable HDR synthesis (module docstring).

    Args:
        width: channel multiplier of the six networks (1.0 = official, 232,230,378 parameters).
        pretrained_trunks: ImageNet VGG19 for CoBi (False: random trunk).
        ev: inference ev set (official ``-3..3`` without 0).
        phases: training phases run per iteration, official both: ``("single_step", "recursive")``.
        refine_step: optimiser step after which ``L_exp`` and ``L_HDR`` join (official 10,000);
            before it the refinement networks are not trained and the global output is fed back.
        cobi: use the CoBi term of ``L_exp`` (official True; its VGG19 cost dominates on CPU).
        merger: the HDR synthesis layer (default ``KimSynthesisMerger()``).
        lr: learning rate of the global networks (official 1e-4).
        lr_structure: of the structure networks (official 1e-4).
        lr_refine: of the refinement networks (official 1e-5).
        gradient_centralization: Adam with gradient centralisation (official ``adam_cent``).
        optimizer: ``adam`` (official).
        betas: official (0.5, 0.999).
        weight_decay: official 5e-5 (L2, added to the gradient).
        **kwargs: :class:`HDRMethod` options (metrics, align, lr_milestones, ...).
    """

    output_domain = "linear"
    file_options = ("pretrained_trunks",)

    def __init__(
        self,
        *,
        width: float = 1.0,
        pretrained_trunks: bool = True,
        ev: Sequence[float] = KIM2021_DEFAULT_EV,
        phases: Sequence[Phase] = PHASES,
        refine_step: int = 10_000,
        cobi: bool = True,
        merger: StackMerger | None = None,
        lr: float = 1e-4,
        lr_structure: float = 1e-4,
        lr_refine: float = 1e-5,
        gradient_centralization: bool = True,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 5e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)
        phases = tuple(phases)
        unknown = [p for p in phases if p not in PHASES]
        if unknown or not phases:
            raise ConfigError(f"Kim2021Method.phases={list(phases)} is invalid; use a non-empty subset of {list(PHASES)}")
        if refine_step < 0:
            raise ConfigError(f"Kim2021Method.refine_step={refine_step} must be >= 0 (official 10000)")
        if lr_structure <= 0 or lr_refine <= 0:
            raise ConfigError("Kim2021Method.lr_structure and lr_refine must be > 0 (official 1e-4, 1e-5)")
        self.save_hyperparameters(ignore=["merger"])
        self.generator = Kim2021Generator(ev=ev, width=width)
        if merger is None:
            from hdrlab.models.mergers.kim_synthesis import KimSynthesisMerger

            merger = KimSynthesisMerger()
        if not isinstance(merger, StackMerger) or merger.output_domain != "linear" or not merger.differentiable:
            raise ConfigError(
                f"Kim2021Method.merger must be a differentiable linear StackMerger, got {type(merger).__name__}; "
                "e.g. {class_path: hdrlab.models.mergers.kim_synthesis.KimSynthesisMerger}")
        self.merger = merger.requires_grad_(False)
        self.cobi = ContextualBilateralLoss(load_vgg_features("vgg19", pretrained=pretrained_trunks)) if cobi else None
        self.phases = phases
        self.refine_step = int(refine_step)
        self.lr_structure, self.lr_refine = float(lr_structure), float(lr_refine)
        self.gradient_centralization = bool(gradient_centralization)

    # ------------------------------------------------------------------ structure
    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """The six networks: ``{up,down}_{global,structure,refine}``."""
        out = {}
        for name, direction in (("up", self.generator.net.up), ("down", self.generator.net.down)):
            out[f"{name}_global"] = direction.global_net
            out[f"{name}_structure"] = direction.structure_net
            out[f"{name}_refine"] = direction.refine_net
        return out

    def group_parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        """Trainable parameters per network group (``structure``, ``global``, ``refine``; both directions)."""
        nets = self.subnetworks()
        return {g: [p for d in ("up", "down") for p in nets[f"{d}_{g}"].parameters() if p.requires_grad]
                for g in GROUPS}

    def train(self, mode: bool = True) -> "Kim2021Method":
        """Keep the frozen VGG trunk in eval mode."""
        super().train(mode)
        if self.cobi is not None:
            self.cobi.eval()
        return self

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """The base example batch plus the bracket ev -3, -2, -1, 1, 2, 3."""
        batch = super().example_batch(batch_size=batch_size, height=height, width=width, device=device)
        batch["stack"], batch["ev"] = example_bracket(batch["hdr"], [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
        return batch

    # ------------------------------------------------------------------ optimisation
    def build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """Adam(GC) with one parameter group per network group and its official learning rate."""
        lrs = {"structure": self.lr_structure, "global": self.lr, "refine": self.lr_refine}
        groups = [{"params": ps, "lr": lrs[g]} for g, ps in self.group_parameters().items() if ps]
        if self.optimizer_name == "adam":
            if self.gradient_centralization:
                return adam_gc(groups, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
            return torch.optim.Adam(groups, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        return super().build_optimizer(groups)  # type: ignore[arg-type]

    @property
    def refining(self) -> bool:
        """Whether ``L_exp`` / ``L_HDR`` are active (optimiser steps past ``refine_step``)."""
        step = self.trainer.global_step if self._trainer is not None else self._manual_steps
        return step >= self.refine_step

    _manual_steps = 0

    def routed_loss(self, group_losses: dict[str, torch.Tensor], value: torch.Tensor) -> torch.Tensor:
        """A scalar whose value is ``value`` and whose gradient w.r.t. the parameters of group ``g`` is
        ``d group_losses[g] / d theta_g`` (module docstring, gradient routing).

        Without grad mode, and in shape-only runs (``FakeTensorMode``: the memory planner, which
        tracks one forward and one backward), ``value`` itself is returned (its backward reaches the
        same parameters through the same graph)."""
        if not torch.is_grad_enabled() or is_fake(value):
            return value
        params = self.group_parameters()
        surrogate = value.new_zeros(())
        for name, loss in group_losses.items():
            if not loss.requires_grad or not params[name]:
                continue
            grads = torch.autograd.grad(loss, params[name], retain_graph=True, allow_unused=True)
            for p, g in zip(params[name], grads):
                if g is not None:
                    surrogate = surrogate + (p * g.detach()).sum()
        return value.detach() + surrogate - surrogate.detach()

    # ------------------------------------------------------------------ training
    def single_step_losses(self, images: torch.Tensor, edges: torch.Tensor, start: int,
                           refining: bool) -> dict[str, torch.Tensor]:
        """Teacher-forced single steps from ``start`` (``images [B,7,3,H,W]`` in [-1,1], ``edges [B,7,1,H,W]``).

        Returns:
            sums over the steps: ``edge``, ``int`` and (when ``refining``) ``exp``.
        """
        zero = images.new_zeros(())
        out = {"edge": zero, "int": zero, "exp": zero}
        for up in (True, False):
            direction = self.generator.net.up if up else self.generator.net.down
            targets = range(start + 1, STACK_SIZE) if up else range(start - 1, -1, -1)
            hidden: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
            for k in targets:
                prev = k - 1 if up else k + 1
                refined, glob, edge, hidden = direction.step(images[:, prev], edges[:, prev],
                                                             kim_style_index(k, up=up), hidden)
                hidden = (hidden[0].detach(), hidden[1].detach())
                out["edge"] = out["edge"] + F.l1_loss(edge, edges[:, k])
                out["int"] = out["int"] + intermediate_loss(glob, images[:, k])
                if refining:
                    out["exp"] = out["exp"] + exposure_loss(refined, images[:, k], self.cobi)
        return out

    def recursive_losses(self, images: torch.Tensor, edges: torch.Tensor, ev: torch.Tensor, hdr: torch.Tensor,
                         start: int, refining: bool) -> dict[str, torch.Tensor]:
        """Full recursive stack from ``start``; returns ``edge``, ``int`` and (when ``refining``) ``exp``, ``hdr``."""
        feedback = "refined" if refining else "global"
        pred, pred_int, pred_edge = [None] * STACK_SIZE, [None] * STACK_SIZE, [None] * STACK_SIZE
        pred[start], pred_int[start], pred_edge[start] = images[:, start], images[:, start], edges[:, start]
        for up in (True, False):
            steps = STACK_SIZE - 1 - start if up else start
            if not steps:
                continue
            refined, glob, edge = self.generator.recurse(images[:, start], edges[:, start], steps, up=up,
                                                         start=start, feedback=feedback)
            for s in range(steps):
                k = start + (s + 1 if up else -(s + 1))
                pred[k], pred_int[k], pred_edge[k] = refined[s], glob[s], edge[s]
        stack, stack_int, stack_edge = (torch.stack(v, dim=1) for v in (pred, pred_int, pred_edge))
        out = {"edge": F.l1_loss(stack_edge, edges), "int": intermediate_loss(stack_int, images)}
        if refining:
            exp = F.l1_loss(stack, images)
            if self.cobi is not None:
                with torch.no_grad():  # official: rebuilt with torch.tensor, no gradient
                    exp = exp + 0.1 * torch.stack([self.cobi((stack[:, i] + 1) / 2, (images[:, i] + 1) / 2)
                                                   for i in range(STACK_SIZE)]).mean()
            out["exp"] = exp
            radiance = self.merger(ExposureStack(images=(stack + 1.0) / 2.0, ev=ev, reference=KIM_REFERENCE_INDEX))
            out["hdr"] = hdr_loss(radiance, hdr)
        return out

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both phases' losses, routed to their network groups (module docstring)."""
        bracket, ev = kim_bracket(batch)
        edges = torch.stack([kim_edge_map(bracket[:, i]) for i in range(STACK_SIZE)], dim=1)
        images = bracket * 2.0 - 1.0
        refining = self.refining
        zero = images.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        groups = {"structure": zero, "global": zero, "refine": zero}
        if "single_step" in self.phases:
            # shape-only runs (memory plans) take the longest chain: six up steps from index 0
            start = 0 if is_fake(images) else int(torch.randint(STACK_SIZE, ()))
            a = self.single_step_losses(images, edges, start, refining)
            groups = {"structure": groups["structure"] + a["edge"], "global": groups["global"] + a["int"],
                      "refine": groups["refine"] + a["exp"]}
            terms.update({f"single_{k}": v for k, v in a.items() if k != "exp" or refining})
        if "recursive" in self.phases:
            start = KIM_REFERENCE_INDEX + (0 if is_fake(images) else int(torch.randint(-1, 2, ())))
            b = self.recursive_losses(images, edges, ev, batch["hdr"], start, refining)
            h = b.get("hdr", zero)
            groups = {"structure": groups["structure"] + b["edge"] + h, "global": groups["global"] + b["int"] + h,
                      "refine": groups["refine"] + b.get("exp", zero) + h}
            terms.update({f"stack_{k}": v for k, v in b.items()})
        value = sum(terms.values(), zero)
        return self.routed_loss(groups, value), {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------------ inference
    def predict_stack(self, batch: HDRBatch) -> ExposureStack:
        """The generated stack of ``batch["ldr"]`` (input at ev 0), ``[B, 7, 3, H, W]`` in [0, 1]."""
        return self.generator(batch["ldr"])

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Merged generated stack ``[B, 3, H, W]``: linear radiance relative to the input exposure."""
        stack = self.predict_stack(batch)
        out = self.merger(stack)
        ref_ev = stack.ev[:, stack.reference].view(-1, 1, 1, 1)
        return out * torch.exp2(-ref_ev)

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """``{"stack": [B, 7, 3, H, W]}``: the generated stack."""
        with torch.no_grad():
            return {"stack": self.predict_stack(batch).images}


__all__ = ["adam_gc", "centralize_gradients", "Kim2021Method", "kim_bracket", "PHASES"]
