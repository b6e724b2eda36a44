"""A minimal trainable method used only to test the training plumbing (run folders, resume, DDP).

It is not a paper method: a few convolutions predicting a positive residual on the inverse-CRF input.
"""

from __future__ import annotations

import torch
from torch import nn

from hdrlab.methods.base import HDRMethod


class PlumbingMethod(HDRMethod):
    def __init__(self, *, width: float = 1.0, lr: float = 1e-3, **kwargs) -> None:
        super().__init__(lr=lr, **kwargs)
        c = max(1, round(16 * width))
        self.net = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 3, 3, padding=1))

    def predict_image(self, batch):
        from hdrlab.camera import lut_apply

        lin = lut_apply(batch["ldr"], batch["crf_inverse"])
        return lin + nn.functional.softplus(self.net(batch["ldr"])) * batch["clip_mask"]

    def compute_loss(self, batch):
        pred = self.predict_image(batch)
        l1 = (torch.log1p(pred) - torch.log1p(batch["hdr"])).abs().mean()
        return l1, {"log_l1": l1}
