"""DrTMO (Endo, Kanamori, Mitani, "Deep Reverse Tone Mapping", SIGGRAPH Asia 2017) as a method.

Training (official ``train_network.py``): the up model maps an input LDR to the 8 next brighter
exposures (``tau^k``, ``tau = sqrt 2``, ``k = 1..8``), the down model to the 8 next darker ones
(``tau^-k``); each is trained with the masked L1 of :mod:`hdrlab.losses.drtmo` against 8-bit
renders of the scene at those exposures. Here the targets are rendered from the batch's radiance
with the batch's CRF through the camera pipeline (:func:`hdrlab.camera.render_ldr`, the renderer
behind the data's ``bracket_ev`` brackets / :func:`hdrlab.data.batch.bracket_stack`):
``y_k = Q_8(f(clip(hdr * 2 ** (+-0.5 k))))``.

Inference (official ``main.py``): both models make the 17-image stack ``[down_8 .. down_1, x,
up_1 .. up_8]`` (ev -4 .. +4 in 0.5 EV steps), the generated images are cut to 8-bit codes
(``floor(255 y)``), the stack is truncated to the contiguous run without inversions larger than 64
levels (:func:`hdrlab.models.generators.drtmo.monotonic_run`), and the kept images are merged. The
kept images' official exposure times (1/1024 s for the darkest, x sqrt 2 each) are ``2 ** ev`` up to
one factor, so the merge uses the stack's ``ev`` (relative to the input) and its output is radiance
relative to the input exposure (the project's ``hdr`` convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import torch

from hdrlab.camera import CRF, render_ldr
from hdrlab.data.batch import HDRBatch, batch_crf
from hdrlab.errors import ConfigError
from hdrlab.losses.drtmo import DrTMOLoss
from hdrlab.methods.stack_generator import StackGeneratorMethod
from hdrlab.models.generators.drtmo import (
    DRTMO_DEFAULT_EV,
    DRTMO_EV_STEP,
    DRTMO_SLOTS,
    DRTMO_THRESHOLD,
    DrTMOGenerator,
    generated_codes,
    monotonic_run,
)
from hdrlab.models.mergers.base import StackMerger
from hdrlab.stack import ExposureStack

#: ev of the up model's slots (increasing exposure) and the down model's (decreasing)
UP_SLOT_EV: tuple[float, ...] = tuple(DRTMO_EV_STEP * k for k in range(1, DRTMO_SLOTS + 1))
DOWN_SLOT_EV: tuple[float, ...] = tuple(-v for v in UP_SLOT_EV)


def _is_fake(tensor: torch.Tensor) -> bool:
    """True for ``FakeTensorMode`` tensors (shape-only runs: FLOP counts, memory estimates)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(tensor, FakeTensor)


def _crf_row(crf: CRF | None, index: int) -> CRF | None:
    """Image ``index`` of a batched CRF (``[B, C, 1024]`` tables), or the CRF itself when unbatched."""
    if crf is None or crf.forward_lut.dim() != 3:
        return crf
    return CRF(forward_lut=crf.forward_lut[index:index + 1], inverse_lut=crf.inverse_lut[index:index + 1],
               name=getattr(crf, "name", "batch"))


class DrTMOMethod(StackGeneratorMethod):
    """DrTMO up/down models trained on rendered brackets, scored through a merger of the generated stack.

    Loss: ``L = L1_up + L1_down`` (:class:`hdrlab.losses.drtmo.DrTMOLoss`), each the official masked
    L1 over 8 slots; logged as ``up_l1`` and ``down_l1``. The two official models have their own
    Adam optimisers; here one Adam holds both (disjoint parameters, so each model gets exactly its own
    loss's gradient and Adam's per-parameter state is the same).

    Evaluation/prediction: :class:`DrTMOGenerator` makes the stack ``ev`` (official
    :data:`DRTMO_DEFAULT_EV`, +-4 EV in 0.5 EV steps, + the input), optionally cut to official 8-bit
    codes (``quantize``) and truncated (``truncate``, threshold 64), with the batch's CRF attached; the
    ``merger`` (default ``DebevecMerger(crf="known")``) merges each image's kept run. BatchNorm
    uses batch statistics at inference by default (official), so an image's prediction depends on
    the other images of its batch unless the batch holds one image (official batch 1) or
    ``batch_stats_at_inference=False``.

    Args:
        width: channel multiplier of both models (1.0 = official, 2 x 174,497,795 parameters).
        levels: encoder depth (official 9; inputs are padded to multiples of ``2 ** levels``).
        ev: inference ev set (non-zero multiples of 0.5 within +-4; official :data:`DRTMO_DEFAULT_EV`).
        dropout: decoder dropout rate (official 0.5, training only).
        batch_stats_at_inference: BatchNorm normalises by the batch in eval mode (official True).
        merger: stack merger for evaluation (default ``DebevecMerger(crf="known")``).
        truncate: apply the official monotonicity truncation before merging (official True).
        threshold: truncation threshold in 8-bit levels (official 64).
        quantize: cut generated images to ``floor(255 y) / 255`` before truncation and merge
            (official: ``astype(uint8)``); False merges the continuous outputs.
        bits: bit depth of the rendered training targets (official 8-bit PNG stacks).
        optimizer: ``adam`` (official).
        lr: Adam learning rate (official alpha 2e-4).
        betas: Adam betas (official beta1 0.5, Chainer's beta2 0.999).
        **kwargs: :class:`HDRMethod` options (metrics, align, weight_decay, lr_milestones, ...).

    Deviations from the official code:

    * Targets are rendered from the batch's radiance at the 8 slot exposures of the batch's input,
      so every slot is valid (mask all ones); the official targets are the next frames of a fixed
      9-image stack (+-2 EV), and frames past its end are masked. The input is the batch's ``ldr``
      (ev 0) instead of every stack member in turn; procedural radiance and sampled CRFs replace the
      rendered panorama views and the five DoRF curves.
    * The merge is the project's known-CRF Debevec merge (configurable) on the stack's ``ev``;
      the official code calls OpenCV ``MergeDebevec`` with no response (linear codes, hat weights)
      and the absolute times 1/1024 s x sqrt 2 ** i (the same relative times; only a global scale
      differs, which the metrics' alignment removes).
    * Data augmentation, crops and batch size come from the datamodule (official: whole 512 x 512
      images, batch 1, no augmentation). Inputs are padded to multiples of ``2 ** levels`` (official: multiples of 512 only); the declared
      ``stride`` is 1.
    """

    output_domain = "linear"

    def __init__(
        self,
        *,
        width: float = 1.0,
        levels: int = 9,
        ev: Sequence[float] = DRTMO_DEFAULT_EV,
        dropout: float = 0.5,
        batch_stats_at_inference: bool = True,
        merger: StackMerger | None = None,
        truncate: bool = True,
        threshold: float = DRTMO_THRESHOLD,
        quantize: bool = True,
        bits: int = 8,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, betas=betas, **kwargs)
        if threshold < 0:
            raise ConfigError(f"DrTMOMethod.threshold={threshold} must be >= 0 (official 64 levels)")
        if not 1 <= bits <= 16:
            raise ConfigError(f"DrTMOMethod.bits={bits} must lie in 1..16 (official 8)")
        self.save_hyperparameters(ignore=["merger"])
        self.generator = DrTMOGenerator(ev=ev, width=width, levels=levels, dropout=dropout,
                                        batch_stats_at_inference=batch_stats_at_inference)
        self.set_merger(merger)
        if truncate and (self.merger.accepts.exactly is not None or self.merger.accepts.reference == "middle"):
            raise ConfigError(
                f"DrTMOMethod: {type(self.merger).__name__} needs a fixed stack layout, but truncate=True makes "
                "stacks of varying length; set truncate: false or use a merger that accepts any stack"
            )
        self.loss = DrTMOLoss()
        self.truncate = bool(truncate)
        self.threshold = float(threshold)
        self.quantize = bool(quantize)
        self.bits = int(bits)

    # ------------------------------------------------------------------ structure
    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """``up`` and ``down`` (:class:`~hdrlab.models.generators.drtmo.DrTMONet`)."""
        return {"up": self.generator.up, "down": self.generator.down}

    # ------------------------------------------------------------------ training
    def slot_targets(self, batch: HDRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Rendered 8-slot targets of the batch's scene: ``(up, down)``, each ``[B, 8, 3, H, W]`` in ``[0, 1]``.

        Slot ``k`` (0-based) is ``Q_bits(f(clip(hdr * 2 ** (+-0.5 (k + 1)))))`` with the batch's CRF
        ``f`` (:func:`hdrlab.camera.render_ldr`); constants (no gradient).
        """
        crf = batch_crf(batch)
        with torch.no_grad():
            render = lambda ev: render_ldr(batch["hdr"], crf, ev=ev, bits=self.bits,  # noqa: E731
                                           straight_through=False)["ldr"]
            up = torch.stack([render(v) for v in UP_SLOT_EV], dim=1)
            down = torch.stack([render(v) for v in DOWN_SLOT_EV], dim=1)
        return up, down

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Official masked L1 of both models on the batch's input ``ldr`` (all 8 slots valid)."""
        up_target, down_target = self.slot_targets(batch)
        ldr = batch["ldr"]
        terms = self.loss(
            up_pred=self.generator.slots(ldr, up=True), up_target=up_target,
            down_pred=self.generator.slots(ldr, up=False), down_target=down_target,
        )
        return terms["total"], {"up_l1": terms["up_l1"], "down_l1": terms["down_l1"]}

    # ------------------------------------------------------------------ inference
    def generate_stack(self, ldr: torch.Tensor, *, ev: Sequence[float] | None = None,
                       crf: CRF | None = None) -> ExposureStack:
        """Generated stack of ``ldr`` ``[B, 3, H, W]`` in [0, 1] (any size), ev set ``ev`` (default: the
        ``ev`` init argument + the input at ev 0), cut to official codes when ``quantize``, ``crf`` attached.

        Returns:
            ``ExposureStack(images [B, N, 3, H, W] in [0, 1], ev [B, N], reference = input index, crf)``.
        """
        stack = self.generator(ldr, ev=ev)
        if self.quantize:
            stack = replace(stack, images=generated_codes(stack) / 255.0)
        return replace(stack, crf=crf)

    def kept_runs(self, stack: ExposureStack) -> list[tuple[int, int]]:
        """Per image, the inclusive ``(first, last)`` members kept by the official truncation
        (the whole stack when ``truncate`` is off)."""
        if not self.truncate:
            return [(0, stack.num_exposures - 1)] * stack.images.shape[0]
        first, last = monotonic_run(generated_codes(stack), stack.reference, threshold=self.threshold)
        return list(zip(first.tolist(), last.tolist()))

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """Merge each image's kept run: ``[B, 3, H, W]`` in the merger's domain.

        A run of the input alone is merged as the input twice at ev 0 (the merge of one exposure).
        Under ``FakeTensorMode`` (FLOP counts) the whole stack is merged: the run depends on values.
        """
        if not self.truncate or _is_fake(stack.images):
            return self.merger(stack)
        outputs = []
        for b, (first, last) in enumerate(self.kept_runs(stack)):
            index = list(range(first, last + 1)) if last > first else [stack.reference] * 2
            row = ExposureStack(images=stack.images[b:b + 1], ev=stack.ev[b:b + 1],
                                reference=stack.reference, crf=_crf_row(stack.crf, b))
            outputs.append(self.merger(row.select(index, reference=stack.reference - first if last > first else 0)))
        return torch.cat(outputs, dim=0)

    def predict_step(self, batch: HDRBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"stack": ExposureStack, "kept": [(first, last)], "pred": [B,3,H,W], "domain": str, "name": list[str]}``."""
        stack = self.predict_stack(batch)
        return {"stack": stack, "kept": self.kept_runs(stack), "pred": self.merge(stack),
                "domain": self.output_domain, "name": batch.get("name")}


__all__ = ["DOWN_SLOT_EV", "DrTMOMethod", "UP_SLOT_EV"]
