"""ExpandNet (Marnerides et al., Computer Graphics Forum 37(2), Eurographics 2018) as a method:
:class:`ExpandNetMethod`, the official network (:class:`hdrlab.models.direct.expandnet.ExpandNet`)
trained with the official loss (:func:`hdrlab.losses.expandnet.expandnet_loss`).

Official training (dmarnerides/hdr-expandnet ``train.py``, ``util.py``): for each HDR image a
Gaussian-positioned random crop (base 384x384) is resized to 256x256 (OpenCV bilinear) and min-max
mapped to [0, 1]; that is the **target**. The input is a randomly chosen tone mapping of it
(percentile exposure + gamma, or OpenCV Reinhard / Mantiuk / Drago / Durand with randomised
parameters), min-max mapped again. The network runs whole-image (global branch on the 256x256
input itself); loss ``L1 + 5 (1 - cos)``; Adam lr 7e-5 (PyTorch defaults otherwise: betas
(0.9, 0.999), eps 1e-8, no weight decay), batch 12, 10,000 epochs.

Here (:meth:`ExpandNetMethod.compute_loss`)::

    x      = map_range(batch["ldr"])       # per image, over channels and pixels -> [0, 1]
    target = map_range(batch["hdr"])       # per image -> [0, 1] (official target domain)
    L      = expandnet_loss(ExpandNet(x), target)

Prediction (:meth:`ExpandNetMethod.predict_image`) is the official ``expand.py`` path
(:func:`hdrlab.models.direct.expandnet.expandnet_inference`): input min-max mapping, global feature
once on a 256x256 resize, local/dilated branches on 256 px tiles with 20 px overlap, output min-max
mapping. The output is linear relative radiance in [0, 1] with an arbitrary scale (each image's
maximum is 1); hdrlab's median scale alignment in the metrics absorbs the scale.

Deviations from the official training:

* Data: hdrlab's data modules (procedural scenes / HDR folders, :class:`hdrlab.data.PairSynthesizer`
  exposure-with-clipping and camera CRFs, random flips) instead of the Gaussian-positioned crop,
  resize and the five random tone-mapping operators (which need OpenCV's contrib TMOs, some broken
  in recent OpenCV versions). The LDR therefore clips highlights, as a camera does, rather than
  being a global tone mapping of the whole range.
* Schedule: an "epoch" is the data module's, not one pass over the official HDR folder;
  ``experiments/expandnet.yaml`` sets batch 12 and 256x256 patches.
"""

from __future__ import annotations

from typing import Any

import torch

from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.losses.expandnet import EXPANDNET_LAMBDA, expandnet_loss
from hdrlab.methods.base import HDRMethod
from hdrlab.models.direct.expandnet import (
    PATCH_OVERLAP,
    PATCH_SIZE,
    ExpandNet,
    expandnet_inference,
    map_range,
)

__all__ = ["EXPANDNET_LR", "ExpandNetMethod"]

#: Official Adam learning rate (``train.py``).
EXPANDNET_LR = 7e-5


class ExpandNetMethod(HDRMethod):
    """ExpandNet: LDR -> relative linear HDR (module docstring for the equations and deviations).

    Args:
        width: channel multiplier of the network (1.0 = official, 456,899 parameters).
        lr: Adam learning rate (official 7e-5).
        loss_lambda: weight of the cosine term (official 5).
        patch_size: tile side of the patch-wise prediction (official ``expand.py`` default 256).
        overlap: even overlap of the tiles (official 20).
        **kwargs: :class:`HDRMethod` options (optimizer, betas, metrics, ...); defaults are the
            official Adam settings.
    """

    output_domain = "linear"
    #: the official output is min-max mapped to [0, 1] per image: its scale is arbitrary
    output_scale = "relative"
    #: the official inference runs on 256 px patches with the global feature computed once
    whole_image_inference = True

    def __init__(
        self,
        *,
        width: float = 1.0,
        lr: float = EXPANDNET_LR,
        loss_lambda: float = EXPANDNET_LAMBDA,
        patch_size: int = PATCH_SIZE,
        overlap: int = PATCH_OVERLAP,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        if loss_lambda < 0:
            raise ConfigError(f"ExpandNetMethod loss_lambda={loss_lambda} must be >= 0 (official 5)")
        if overlap < 0 or overlap % 2 or patch_size <= overlap:
            raise ConfigError(f"ExpandNetMethod patch_size={patch_size}, overlap={overlap}: overlap must be even "
                              "and >= 0 and patch_size larger than it (official 256 and 20)")
        self.save_hyperparameters()
        self.loss_lambda = float(loss_lambda)
        self.patch_size = int(patch_size)
        self.overlap = int(overlap)
        self.net = ExpandNet(width=width)

    def forward(self, ldr: torch.Tensor) -> torch.Tensor:
        """Whole-image network output ``[B, 3, H, W]`` in (0, 1) for ``ldr`` ``[B, 3, H, W]`` in [0, 1]
        (input min-max mapped first, no output mapping; the training path)."""
        return self.net(map_range(ldr))

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Official loss of ``ExpandNet(map_range(ldr))`` against ``map_range(hdr)``; terms ``l1``
        and ``cosine`` (already weighted by ``loss_lambda``)."""
        terms = expandnet_loss(self(batch["ldr"]), map_range(batch["hdr"]), loss_lambda=self.loss_lambda)
        total = terms.pop("total")
        return total, terms

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Official inference: relative linear HDR ``[B, 3, H, W]`` in [0, 1] (min 0, max 1 per
        image; arbitrary scale) from ``batch["ldr"]``."""
        return expandnet_inference(self.net, batch["ldr"], patch_size=self.patch_size, overlap=self.overlap)

    def global_branch(self, ldr: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the tiles of one large photo share, from its (downsampled) whole image ``ldr``
        ``[B, 3, h, w]``: the input's min and max (``[B, 1, 1, 1]`` each, for the input min-max
        mapping) and the global feature of the mapped image (``[B, C_g, 1, 1]``)."""
        lo = ldr.amin(dim=(1, 2, 3), keepdim=True)
        hi = ldr.amax(dim=(1, 2, 3), keepdim=True)
        return {"low": lo, "high": hi, "global": self.net.global_features(map_range(ldr))}

    def predict_tile(self, batch: HDRBatch, context: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One tile of a large photo (``hdrlab reconstruct``), sharing :meth:`global_branch`.

        The input is mapped with the whole image's min and max and the global feature is the whole
        image's; the output is the network's sigmoid output **without** the final min-max mapping,
        whose constants would need the whole prediction (per tile they would differ and leave
        seams). The two differ by one affine map per image: its scale is absorbed by the metrics'
        scale alignment, its offset (the prediction's minimum, usually small) is kept. Without
        ``context`` this is :meth:`predict_image`.
        """
        if context is None:
            return self.predict_image(batch)
        span = (context["high"] - context["low"]).clamp_min(torch.finfo(batch["ldr"].dtype).tiny)
        x = (batch["ldr"] - context["low"]) / span
        with torch.no_grad():
            return self.net.predict_patches(x, patch_size=self.patch_size, overlap=self.overlap,
                                            glob=context["global"])
