"""Shared inference of methods that train a stack generator on its own and merge its stack.

A paper whose network is a :class:`~hdrlab.models.generators.StackGenerator` trained alone (Le et
al. 2023, DrTMO, Deep Recursive HDRI, CEVR) is evaluated like the paper: the generated stack,
with the batch's CRF attached, merged by a frozen :class:`~hdrlab.models.mergers.StackMerger`
(default ``DebevecMerger(crf="known")``). :class:`StackGeneratorMethod` holds that path once; a
subclass builds ``self.generator`` and calls :meth:`set_merger` in its constructor, and overrides
:meth:`generate_stack` or :meth:`merge` where its paper post-processes the stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from hdrlab.camera import CRF
from hdrlab.data.batch import HDRBatch, batch_crf
from hdrlab.errors import ConfigError
from hdrlab.methods.base import HDRMethod
from hdrlab.models.mergers.base import StackMerger
from hdrlab.stack import ExposureStack

__all__ = ["StackGeneratorMethod"]


class StackGeneratorMethod(HDRMethod):
    """:class:`HDRMethod` whose prediction is ``merge(generate_stack(ldr))`` (module docstring).

    Subclasses set ``self.generator`` (a :class:`~hdrlab.models.generators.StackGenerator`) and call
    :meth:`set_merger`; ``output_domain`` follows the merger.
    """

    def set_merger(self, merger: StackMerger | None) -> None:
        """Freeze ``merger`` (default ``DebevecMerger(crf="known")``) as ``self.merger``; the method's
        ``output_domain`` becomes the merger's.

        Raises:
            ConfigError: ``merger`` is not a :class:`StackMerger`.
        """
        if merger is None:
            from hdrlab.models.mergers import DebevecMerger

            merger = DebevecMerger(crf="known")
        if not isinstance(merger, StackMerger):
            raise ConfigError(
                f"{type(self).__name__}.merger must be a hdrlab StackMerger, got {type(merger).__name__}; "
                "e.g. {class_path: hdrlab.models.mergers.DebevecMerger, init_args: {crf: known}}"
            )
        self.merger = merger.requires_grad_(False)
        self.output_domain = merger.output_domain

    def generate_stack(self, ldr: torch.Tensor, *, ev: Sequence[float] | None = None,
                       crf: CRF | None = None) -> ExposureStack:
        """Generated stack of ``ldr`` ``[B, 3, H, W]`` in [0, 1] (any size), ev set ``ev`` (default: the
        generator's; the input is added at ev 0), ``crf`` recorded as ``stack.crf``.

        Returns:
            ``ExposureStack(images [B, N, 3, H, W] in [0, 1], ev [B, N], reference = input index, crf)``.
        """
        return replace(self.generator(ldr, ev=ev), crf=crf)

    def predict_stack(self, batch: HDRBatch) -> ExposureStack:
        """The generated stack of ``batch["ldr"]`` with the batch's CRF attached."""
        crf = batch_crf(batch) if "crf_forward" in batch else None
        return self.generate_stack(batch["ldr"], crf=crf)

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """The merged stack ``[B, 3, H, W]`` in the merger's domain."""
        return self.merger(stack)

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Merged generated stack ``[B, 3, H, W]`` in the merger's domain (linear by default)."""
        return self.merge(self.predict_stack(batch))

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """``{"stack": [B, N, 3, H, W]}``: the generated stack (display [0, 1])."""
        with torch.no_grad():
            return {"stack": self.predict_stack(batch).images}

    def predict_step(self, batch: HDRBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"stack": ExposureStack, "pred": merged [B,3,H,W], "domain": str, "name": list[str]}``."""
        stack = self.predict_stack(batch)
        return {"stack": stack, "pred": self.merge(stack), "domain": self.output_domain, "name": batch.get("name")}
