"""A learned stack merger trained on its own, on the batch's exposure bracket: :class:`BracketMergerMethod`.

The batch carries a bracket ``stack [B, N, 3, H, W]`` (display ``[0, 1]``) with ``ev [B, N]``
relative to the exposure of ``batch["hdr"]`` (synthesised brackets: ``data.init_args.bracket_ev``,
e.g. ``[-2, 0, 2]``; real brackets: :class:`hdrlab.data.KalantariDataModule`). The merger
declares everything else: its own objective (``merger.objective``), the exposures it accepts and
the ones it prefers (``preferred_ev``), its stride. The paper methods (Kalantari 2017, Wu 2018,
AHDRNet) are thin subclasses that build their merger and set the official optimiser.

Prediction: the merger's linear output, rescaled from the stack's reference exposure to the ev-0
exposure (:func:`hdrlab.methods.two_stage.rescale_to_input`), scored with the HDR metrics against
``batch["hdr"]``. A bracket whose size is not a multiple of the merger's ``stride`` (e.g. a full
1000 x 1500 Kalantari image for Wu et al.'s stride 8) is replicate-padded at the bottom and right
and the prediction cropped back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from hdrlab.data.batch import HDRBatch, bracket_stack, example_bracket
from hdrlab.errors import ConfigError
from hdrlab.methods.base import HDRMethod
from hdrlab.methods.two_stage import rescale_to_input, select_exposures
from hdrlab.models.mergers.base import StackMerger
from hdrlab.models.mergers.triplet import nearest_ev
from hdrlab.stack import ExposureStack

__all__ = ["BracketMergerMethod"]


class BracketMergerMethod(HDRMethod):
    """Train and score ``self.merger`` on the batch's bracket (module docstring).

    Subclasses create ``self.merger`` (a :class:`StackMerger` with ``has_objective``) in ``__init__``
    after calling ``super().__init__(**kwargs)``.
    """

    output_domain = "linear"
    merger: StackMerger

    def pair_hint(self) -> str:
        """How to give the method a bracket (appended to the error of a batch without one)."""
        ev = list(getattr(self.merger, "preferred_ev", (-2.0, 0.0, 2.0)))
        return f"{type(self).__name__} needs an exposure bracket: set data.init_args.bracket_ev, e.g. {ev}"

    def check_merger(self) -> None:
        """Raise :class:`ConfigError` when ``self.merger`` cannot be trained on its own."""
        if not isinstance(getattr(self, "merger", None), StackMerger) or not self.merger.has_objective:
            raise ConfigError(f"{type(self).__name__} needs a StackMerger with its own objective in self.merger")

    def stack(self, batch: HDRBatch) -> ExposureStack:
        """The batch's bracket as a stack, reduced to the merger's preferred exposures when it has more
        members than the merger takes (the nearest available ones, read from ``batch["ev"][0]``)."""
        stack = bracket_stack(batch, hint=self.pair_hint())
        exactly = self.merger.accepts.exactly
        preferred = getattr(self.merger, "preferred_ev", None)
        if exactly is not None and stack.num_exposures > exactly and preferred is not None:
            stack = select_exposures(stack, nearest_ev(stack.ev[0].tolist(), preferred))
        return stack

    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """``{<merger class name>: merger}``."""
        return {type(self.merger).__name__: self.merger}

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """The base example batch plus a bracket at the merger's preferred exposures (default -2, 0, 2)."""
        batch = super().example_batch(batch_size=batch_size, height=height, width=width, device=device)
        batch["stack"], batch["ev"] = example_bracket(batch["hdr"], getattr(self.merger, "preferred_ev", (-2.0, 0.0, 2.0)))
        return batch

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The merger's own objective on the batch's bracket."""
        return self.merger.objective(self.stack(batch), batch)

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Linear radiance ``[B, 3, H, W]`` relative to the ev-0 exposure (``batch["hdr"]``'s scale);
        sizes that are not a multiple of the merger's ``stride`` are padded and cropped back."""
        stack = self.stack(batch)
        height, width = stack.images.shape[-2:]
        stride = self.merger.stride
        pad_h, pad_w = -height % stride, -width % stride
        merged = stack
        if pad_h or pad_w:
            images = F.pad(stack.images.flatten(0, 1), (0, pad_w, 0, pad_h), mode="replicate")
            merged = dataclasses.replace(stack, images=images.unflatten(0, stack.images.shape[:2]))
        return rescale_to_input(self.merger(merged), stack)[..., :height, :width]

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """``{"stack": [B, K, 3, H, W]}``: the merged bracket."""
        return {"stack": self.stack(batch).images}
