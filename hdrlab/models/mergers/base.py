"""The stack-merger contract: :class:`StackMerger` and the arity description :class:`StackArity`.

A *merger* turns an :class:`hdrlab.stack.ExposureStack` (``images[B, N, 3, H, W]`` display values
in ``[0, 1]``, ``ev[B, N]``) into one image ``[B, 3, H, W]``:

* ``output_domain = "linear"``: scene radiance in the project convention -- relative to the
  reference exposure (``ev = 0`` has exposure time ``t = 1``), so a value of 1.0 is where the
  reference exposure clips (Debevec & Malik 1997);
* ``output_domain = "display"``: a fused display-referred image in ``[0, 1]`` (Mertens et al. 2009).

Every merger declares what its consumers (the :class:`~hdrlab.methods.two_stage.TwoStage`
composite, the memory planner, ``hdrlab reconstruct``, ``hdrlab info``) need, so that none of them
names a concrete merger:

* ``output_domain``: ``"linear"`` or ``"display"``;
* ``accepts``: the stacks it takes (:class:`StackArity`);
* ``select_rule``: how a composite picks its inputs from a generated stack (``"auto"``: by the
  arity, see :func:`hdrlab.methods.two_stage.resolve_select_rule`; or ``"all"`` / ``"extremes"`` /
  ``"triplet"`` / ``"nearest"``: the exposures nearest the merger's ``preferred_ev``);
* ``differentiable``: whether gradients flow from its output back to ``stack.images``;
* ``stride``: the multiple ``H`` and ``W`` must have (1: any size);
* ``preserves_size``: whether the output has the stack's ``H x W``;
* ``has_objective`` / :meth:`StackMerger.objective`: its own training objective (a learned merger's
  paper loss), which a composite uses instead of a generic output loss;
* ``file_options``: constructor options that name files (cleared when only shapes matter);
* ``pixelwise``: whether its output at a pixel depends only on the stack at that pixel, given
  image-wide state computed once from the whole stack (:meth:`StackMerger.merge_state`, e.g. a
  recovered camera response); such a merger can merge row strips
  (:meth:`StackMerger.merge_in_strips`, equal to the whole-image merge) so that a memory budget
  bounds the merge too. Pyramid fusions (Mertens) and learned convolutional mergers are not.

``forward(stack)`` validates the stack with :meth:`StackMerger.check_stack` (user errors raise
:class:`hdrlab.errors.ConfigError`) and then calls :meth:`StackMerger.merge`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Sequence

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.stack import ExposureStack


@dataclass(frozen=True)
class StackArity:
    """Which exposure stacks a merger accepts.

    Attributes:
        min_exposures: smallest number of exposures ``N``.
        max_exposures: largest ``N`` (``None``: unbounded).
        exactly: if set, ``N`` must equal it (learned fixed-arity mergers).
        reference: ``"middle"``: the reference exposure must be the middle one (``N // 2``);
            ``"any"``: no requirement.
    """

    min_exposures: int = 2
    max_exposures: int | None = None
    exactly: int | None = None
    reference: Literal["middle", "any"] = "any"

    def problem(self, num_exposures: int, reference: int) -> str | None:
        """The reason a stack of ``num_exposures`` with ``reference`` index is refused, or ``None``."""
        if self.exactly is not None and num_exposures != self.exactly:
            return f"needs exactly {self.exactly} exposures, got {num_exposures}"
        if num_exposures < self.min_exposures:
            return f"needs at least {self.min_exposures} exposures, got {num_exposures}"
        if self.max_exposures is not None and num_exposures > self.max_exposures:
            return f"accepts at most {self.max_exposures} exposures, got {num_exposures}"
        if self.reference == "middle" and reference != num_exposures // 2:
            return f"needs the reference exposure in the middle (index {num_exposures // 2}), got index {reference}"
        return None


class StackMerger(nn.Module, abc.ABC):
    """Base class of all mergers: ``ExposureStack -> Tensor[B, 3, H, W]`` in ``output_domain``.

    Subclasses set the class attributes and implement :meth:`merge`; callers use ``merger(stack)``.

    Attributes:
        output_domain: ``"linear"`` (radiance relative to the reference exposure) or ``"display"``
            (fused display image in ``[0, 1]``).
        accepts: the stacks the merger takes (:class:`StackArity`).
        select_rule: how a composite selects the merger's inputs from a generated stack
            (``"auto"``: by :attr:`accepts`; ``"all"``, ``"extremes"``, ``"triplet"``).
        differentiable: whether gradients flow from the output to ``stack.images``.
        has_objective: whether :meth:`objective` is the merger's own training loss.
        file_options: constructor options that name files to read (none by default).
        pixelwise: whether the output at a pixel depends only on the stack at that pixel, given
            :meth:`merge_state` of the whole stack (then :meth:`merge_in_strips` may be used).
            A subclass that declares it and has image-wide state overrides :meth:`merge_state`
            and :meth:`merge_part`.
    """

    output_domain: ClassVar[Literal["linear", "display"]]
    accepts: ClassVar[StackArity] = StackArity()
    select_rule: ClassVar[Literal["auto", "all", "extremes", "triplet", "nearest"]] = "auto"
    differentiable: ClassVar[bool] = True
    has_objective: ClassVar[bool] = False
    file_options: ClassVar[tuple[str, ...]] = ()
    pixelwise: ClassVar[bool] = False

    @property
    def stride(self) -> int:
        """Multiple ``H`` and ``W`` of a stack must have (1: any size)."""
        return 1

    @property
    def preserves_size(self) -> bool:
        """Whether the output has the stack's ``H x W`` (a composite needs it)."""
        return True

    @property
    def objective_supervised(self) -> bool:
        """Whether :meth:`objective` compares with ground truth (``batch["hdr"]``). An objective
        scored only against the stack itself cannot train the generator that made the stack."""
        return True

    def objective(self, stack: ExposureStack, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The merger's own training loss on ``stack`` (with ground truth from ``batch``, e.g.
        ``batch["hdr"] [B, 3, H, W]``), as ``(loss, {term: value})``; only when :attr:`has_objective`.

        Raises:
            ConfigError: the merger has no objective of its own.
        """
        raise ConfigError(
            f"{type(self).__name__} has no training objective of its own; train it with a generic output loss "
            "(TwoStage merger_loss 'hdr' for linear mergers, 'ssim' for display mergers)"
        )

    def check_stack(self, stack: ExposureStack) -> None:
        """Raise :class:`ConfigError` when ``stack`` is not one this merger can merge.

        Checks only shapes and metadata (no device synchronisation): the arity and reference
        rule of :attr:`accepts`. Subclasses extend it (e.g. a known-CRF merger needs ``stack.crf``).
        """
        if not isinstance(stack, ExposureStack):
            raise ConfigError(
                f"{type(self).__name__} merges an hdrlab.stack.ExposureStack, got {type(stack).__name__}; "
                "wrap the images with ExposureStack(images[B,N,3,H,W], ev[B,N]) or stack_from_times(...)"
            )
        problem = self.accepts.problem(stack.num_exposures, stack.reference)
        if problem is not None:
            raise ConfigError(
                f"{type(self).__name__} {problem}; pass a stack that satisfies {self.accepts}"
            )

    @abc.abstractmethod
    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """Merge a validated stack into ``[B, 3, H, W]`` in :attr:`output_domain`."""

    def forward(self, stack: ExposureStack) -> torch.Tensor:
        """Validate ``stack`` (:meth:`check_stack`) and merge it (:meth:`merge`) into ``[B, 3, H, W]``."""
        self.check_stack(stack)
        return self.merge(stack)

    def merge_state(self, stack: ExposureStack) -> Any:
        """Image-wide state of a :attr:`pixelwise` merge, computed once from the whole (validated)
        stack (e.g. a recovered response); ``None`` (the default): none."""
        return None

    def merge_part(self, stack: ExposureStack, state: Any) -> torch.Tensor:
        """Merge ``stack`` (a part, e.g. a strip of rows, of a larger stack) given the whole stack's
        :meth:`merge_state`. Default: :meth:`merge` (right for pixel-wise mergers without state)."""
        return self.merge(stack)

    def merge_in_strips(
        self,
        stack: ExposureStack,
        rows: int,
        *,
        post: Callable[[torch.Tensor, ExposureStack], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Merge a stack strip by strip (``rows`` rows each): the result equals ``self(stack)``
        (``post(self(stack), stack)``) for a :attr:`pixelwise` merger, with the merge's temporaries
        bounded by one strip.

        Args:
            stack: the whole stack ``images[B, N, 3, H, W]``.
            rows: rows per strip (``>= 1``; ``>= H``: one call on the whole stack).
            post: a per-pixel map applied to each strip's output, ``(out [B, 3, h, W], strip) -> [B, C, h, W]``.

        Raises:
            ConfigError: the merger is not pixel-wise, or ``rows < 1``.
        """
        if not self.pixelwise:
            raise ConfigError(
                f"{type(self).__name__} is not pixel-wise (pixelwise = False): it cannot merge row strips; "
                "merge the whole stack"
            )
        if rows < 1:
            raise ConfigError(f"merge strips need at least 1 row, got {rows}")
        self.check_stack(stack)
        state = self.merge_state(stack)
        height = stack.images.shape[-2]
        out = None
        for top in range(0, height, rows):
            part = replace(stack, images=stack.images[..., top : top + rows, :]) if rows < height else stack
            merged = self.merge_part(part, state)
            if post is not None:
                merged = post(merged, part)
            if rows >= height:
                return merged
            if out is None:
                out = merged.new_empty((*merged.shape[:-2], height, merged.shape[-1]))
            out[..., top : top + merged.shape[-2], :] = merged
            del merged
        return out

    def merge_bracket(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        times: torch.Tensor | Sequence[float],
        *,
        reference: int | None = None,
    ) -> torch.Tensor:
        """Merge a real bracket given by exposure times (see :func:`stack_from_times`).

        Args:
            images: ``N`` display images ``[3, H, W]`` in ``[0, 1]``, any order.
            times: ``N`` exposure times (e.g. EXIF seconds).
            reference: index of the reference exposure in the sorted bracket (default: middle).

        Returns:
            ``[3, H, W]`` in :attr:`output_domain`; a linear result is relative to the reference
            exposure (the reference's clipping level maps to about 1.0).
        """
        return self(stack_from_times(images, times, reference=reference))[0]


def stack_from_times(
    images: torch.Tensor | Sequence[torch.Tensor],
    times: torch.Tensor | Sequence[float],
    *,
    reference: int | None = None,
) -> ExposureStack:
    """Build a one-element :class:`ExposureStack` from a real bracket and its exposure times.

    The exposures are sorted by exposure time; ``ev = log2(t / t_ref)`` relative to the reference
    exposure, which is the middle one of the sorted bracket by default.

    Args:
        images: ``N`` display images ``[3, H, W]`` in ``[0, 1]`` (a list, or a tensor ``[N, 3, H, W]``).
        times: ``N`` positive exposure times (any unit, e.g. seconds).
        reference: index of the reference exposure in the *sorted* bracket (default ``N // 2``).

    Returns:
        ``ExposureStack(images[1, N, 3, H, W], ev[1, N], reference)``, ascending ev.
    """
    imgs = torch.stack(list(images)) if not isinstance(images, torch.Tensor) else images
    t = torch.as_tensor(times, dtype=torch.float64)
    if imgs.dim() != 4 or imgs.shape[1] != 3:
        raise ConfigError(f"stack_from_times: images must be N x [3, H, W], got shape {tuple(imgs.shape)}")
    if t.dim() != 1 or t.numel() != imgs.shape[0]:
        raise ConfigError(
            f"stack_from_times: got {imgs.shape[0]} images but {t.numel()} exposure times; give one time per image"
        )
    if not bool((t > 0).all()) or not bool(torch.isfinite(t).all()):
        raise ConfigError(f"stack_from_times: exposure times must be positive and finite, got {t.tolist()}")
    order = torch.argsort(t)
    t = t[order]
    n = t.numel()
    ref = n // 2 if reference is None else reference
    if not 0 <= ref < n:
        raise ConfigError(f"stack_from_times: reference={reference} is outside 0..{n - 1}")
    ev = torch.log2(t / t[ref]).to(torch.float32)
    return ExposureStack(images=imgs[order.to(imgs.device)].unsqueeze(0), ev=ev.unsqueeze(0).to(imgs.device), reference=ref)
