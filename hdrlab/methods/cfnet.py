"""CF-Net (Deng et al., IEEE TIP 2021, "Deep Coupled Feedback Network for Joint Exposure Fusion and
Image Super-Resolution") as a method: a learned merger of an extreme exposure pair with x2/x4 SR.

Training sample (from a procedural batch with ``bracket_ev``):

* HR under-exposed source ``HR^u = stack[:, 0]`` (lowest ev), HR over-exposed ``HR^o =
  stack[:, -1]`` (highest ev), both at the full patch size;
* fused ground truth ``HR_gt = hdrlab.tonemap.display(hdr)`` (the project's documented display
  mapping of the ground-truth radiance);
* LR inputs: the pair downsampled by ``scale`` (antialiased bicubic, the MATLAB ``imresize(1/s)``
  of the official data preparation; :func:`hdrlab.models.mergers.cfnet.downsample_pair_image`).

Loss (official ``train.py``): ``sum_b (1 - SSIM(I_sr^b, HR^b)) + sum_t (1 - SSIM(I_t^b, HR_gt))``
over both branches, ``pytorch_msssim.ssim`` (7x7 Gaussian window) -- :func:`hdrlab.losses.cfnet.cfnet_loss`,
applied by :meth:`hdrlab.models.mergers.CFNetMerger.objective` (the same path a ``TwoStage``
composite trains CF-Net with: pair selection, downsampling and loss exist once, in the merger).
Option ``structural_loss="mef_ssim"``: the feedback terms become ``1 - MEF-SSIM(I_t^b, {HR^u, HR^o})``
(the paper's MEF-SSIM, Ma et al. TIP 2015; implemented here, unverified against any reference code).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from hdrlab.data.batch import HDRBatch, bracket_stack, example_bracket
from hdrlab.errors import ConfigError
from hdrlab.losses.cfnet import check_structural_loss
from hdrlab.methods.base import HDRMethod
from hdrlab.models.mergers.cfnet import CFNet, CFNetMerger
from hdrlab.stack import ExposureStack

#: How to give CF-Net an exposure pair (appended to the message of a batch without one).
CFNET_PAIR_HINT = "CF-Net needs an exposure pair: set data.init_args.bracket_ev, e.g. [-4, 4]"


class CFNetMethod(HDRMethod):
    """CF-Net trained on the extreme pair of the batch's bracket; output: fused display image in [0, 1].

    The network, its pair selection (lowest / highest ev), the downsampling by ``scale`` and the
    official loss belong to :class:`~hdrlab.models.mergers.CFNetMerger` (``self.merger``,
    ``same_resolution=True``); this method feeds it the batch's bracket. ``predict_image``
    therefore has the input's size and is scored against ``tonemap.display(hdr)`` with the display
    metrics (``val/display_psnr``, ``val/display_ssim``).

    Args:
        scale: SR factor, 2 or 4 (official projection kernels (6, 2, 2) / (8, 4, 2)).
        width: channel multiplier (1.0 = official: 17,048,297 / 28,975,849 parameters for x2 / x4).
        num_groups: projection groups per SRB/CFB (official 6).
        num_cfbs: coupled feedback steps T (official 3).
        downsample: LR synthesis, ``"bicubic"`` (official, MATLAB-like antialiased) or ``"area"``.
        lr: Adam learning rate (official ``train.py``: 1e-6).
        lr_step_epochs: StepLR period in epochs (official 200); ``None`` disables it (then the
            base's step milestones apply, if any).
        lr_gamma: decay of the StepLR / milestones (official 0.5).
        structural_loss: ``"ssim"`` (official code: feedback outputs vs the fused ground truth) or
            ``"mef_ssim"`` (feedback outputs vs the HR source pair with MEF-SSIM, Ma et al. 2015, as
            the paper describes; :func:`hdrlab.losses.mef_ssim.mef_ssim`, UNVERIFIED). The SRB terms
            are plain SSIM either way.
        **kwargs: :class:`HDRMethod` options.

    Deviations from the official code:

    * Data: procedural radiance with synthetic brackets instead of SICE sequences; the fused
      ground truth is ``tonemap.display(hdr)`` (SICE's reference images are hand-picked fusions).
      The pair is the bracket's extreme members (e.g. ``bracket_ev: [-4, 4]``); the official pair
      selection from SICE is unverified.
    * LR images are made on the fly from the HR crop (PyTorch antialiased bicubic, clamped to
      [0, 1]; the official data are offline MATLAB ``imresize`` of modcropped images stored as
      8-bit, with offline 90-degree rotations; here the datamodule's flips).
    * Inputs/outputs are display [0, 1] (official: [-1, 1] in, [0, 255] out; SSIM at data range 1
      equals SSIM at 255 on the rescaled data). The prediction is not truncated to uint8.
    * The default loss is the released code's plain SSIM; the paper's MEF-SSIM is an option
      (``structural_loss="mef_ssim"``, implemented from the paper's description, unverified); the
      paper's per-step weights are not implemented (unit weights, as the code).
    """

    output_domain = "display"

    def __init__(
        self,
        *,
        scale: int = 2,
        width: float = 1.0,
        num_groups: int = 6,
        num_cfbs: int = 3,
        downsample: Literal["bicubic", "area"] = "bicubic",
        lr: float = 1e-6,
        lr_step_epochs: int | None = 200,
        lr_gamma: float = 0.5,
        structural_loss: Literal["ssim", "mef_ssim"] = "ssim",
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, lr_gamma=lr_gamma, **kwargs)
        check_structural_loss(structural_loss, owner="CFNetMethod")
        if downsample not in ("bicubic", "area"):
            raise ConfigError(f"CFNetMethod.downsample={downsample!r} is unknown; use 'bicubic' or 'area'")
        if lr_step_epochs is not None and lr_step_epochs < 1:
            raise ConfigError(f"CFNetMethod.lr_step_epochs={lr_step_epochs} must be >= 1 or null (official 200)")
        if lr_step_epochs is not None and self.lr_milestones:
            raise ConfigError(
                "CFNetMethod: lr_step_epochs and lr_milestones are both set; set lr_step_epochs: null to use milestones"
            )
        self.save_hyperparameters()
        self.merger = CFNetMerger(scale=scale, width=width, num_groups=num_groups, num_cfbs=num_cfbs,
                                  same_resolution=True, downsample=downsample, structural_loss=structural_loss)
        self.scale = int(scale)
        self.downsample = downsample
        self.structural_loss = structural_loss
        self.lr_step_epochs = lr_step_epochs
        # checkpoints written before the network moved into the merger hold "net.*" keys
        self._register_load_state_dict_pre_hook(_rename_legacy_keys)

    @property
    def net(self) -> CFNet:
        """The CF-Net network (``self.merger.net``)."""
        return self.merger.net

    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """``{"cfnet": CFNet}``."""
        return {"cfnet": self.merger.net}

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """The base example batch plus an extreme pair ``stack [B, 2, 3, H, W]`` at ev -4 / +4 (output size H x W).

        Built with plain tensor ops (:func:`hdrlab.data.batch.example_bracket`), so it works under
        ``FakeTensorMode``.
        """
        batch = super().example_batch(batch_size=batch_size, height=height, width=width, device=device)
        batch["stack"], batch["ev"] = example_bracket(batch["hdr"], [-4.0, 4.0])
        return batch

    def pair(self, batch: HDRBatch) -> ExposureStack:
        """The batch's bracket as a stack (the merger reads its lowest- and highest-ev members)."""
        return bracket_stack(batch, hint=CFNET_PAIR_HINT)

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CF-Net's loss (:meth:`CFNetMerger.objective`); terms ``sr`` and ``fusion``."""
        return self.merger.objective(self.pair(batch), batch)

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Fused display image ``[B, 3, H, W]`` in [0, 1] (``0.5 I_T^u + 0.5 I_T^o``)."""
        return self.merger(self.pair(batch))

    def extra_visuals(self, batch: HDRBatch) -> dict[str, torch.Tensor]:
        """``{"stack": [B, 2, 3, H, W]}``: the (full-resolution) input pair."""
        images = self.pair(batch).images
        return {"stack": torch.stack([images[:, 0], images[:, -1]], dim=1)}

    def scheduler_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """StepLR(``lr_step_epochs``, ``lr_gamma``) per epoch (official), else the base's milestones."""
        if self.lr_step_epochs is None:
            return super().scheduler_config(optimizer)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(self.lr_step_epochs), gamma=self.lr_gamma)
        return {"scheduler": scheduler, "interval": "epoch"}


def _rename_legacy_keys(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        state_dict[prefix + "merger." + key[len(prefix):]] = state_dict.pop(key)


__all__ = ["CFNET_PAIR_HINT", "CFNetMethod"]
