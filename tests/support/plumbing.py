"""A minimal trainable method used only to test the training plumbing (run folders, resume, DDP).

It is not a paper method: a few convolutions predicting a positive residual on the inverse-CRF input.
"""

from __future__ import annotations

import torch
from torch import nn

from hdrlab.methods.base import HDRMethod


class PlumbingMethod(HDRMethod):
    def __init__(self, *, width: float = 1.0, lr: float = 1e-3, oom_once_at_step: int | None = None,
                 oom_marker: str | None = None, scripted_val_scores: list[float] | None = None, **kwargs) -> None:
        """``oom_once_at_step``: raise an injected CUDA out-of-memory error at that step, once
        (``oom_marker`` is a file created when it fired), to test the memory-plan step-down.
        ``scripted_val_scores``: also log ``val/scripted`` = ``scripted_val_scores[global_step]`` at
        each validation, a known score sequence for checkpoint-selection tests."""
        super().__init__(lr=lr, **kwargs)
        self.oom_once_at_step = oom_once_at_step
        self.oom_marker = oom_marker
        self.scripted_val_scores = scripted_val_scores
        c = max(1, round(16 * width))
        self.net = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 3, 3, padding=1))

    def predict_image(self, batch):
        from hdrlab.camera import lut_apply

        lin = lut_apply(batch["ldr"], batch["crf_inverse"])
        return lin + nn.functional.softplus(self.net(batch["ldr"])) * batch["clip_mask"]

    def compute_loss(self, batch):
        if self.oom_once_at_step is not None and self.global_step == self.oom_once_at_step:
            from pathlib import Path

            marker = Path(self.oom_marker)
            if not marker.exists():
                marker.touch()
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        pred = self.predict_image(batch)
        l1 = (torch.log1p(pred) - torch.log1p(batch["hdr"])).abs().mean()
        return l1, {"log_l1": l1}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.scripted_val_scores is not None:
            self.log("val/scripted", float(self.scripted_val_scores[self.global_step]))
