"""Le et al., WACV 2023 ("Single-Image HDR Reconstruction by Multi-Exposure Generation") as a method.

Training is weakly supervised from exposure brackets (official ``EDNet``): a pair ``(x, t_x)``
(lower exposure) and ``(y, t_y)`` (higher) of the same scene gives

* up branch:   ``y_hat = N2(E_x * t_y / t_x)``, ``E_x = ReLU(x + N1(x * M(x)))``;
* down branch: ``x_hat = N3(E_y * t_x / t_y)``, ``E_y = ReLU(y + N1(y * M(y)))``;

and the loss ``L = 100 L_r + 1 L_h + 1e-5 L_tv + 0.1 L_p`` (:class:`hdrlab.losses.le2023.Le2023Loss`),
each term summed over both branches. No HDR ground truth is used for training.

Evaluation: the generator predicts a stack (official ev set +-2 EV in 0.5 EV steps around the
input), which a configurable merger turns into an image; the default is the known-CRF Debevec
merge (:class:`hdrlab.models.mergers.DebevecMerger` ``crf="known"`` with the batch's CRF), so the
method's output is linear radiance relative to the input exposure (the ``hdr`` convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from hdrlab.data.batch import HDRBatch, example_bracket
from hdrlab.errors import ConfigError
from hdrlab.losses.le2023 import Le2023Loss, MaskedPerceptualLoss
from hdrlab.losses.perceptual import PoolFeatures
from hdrlab.methods.stack_generator import StackGeneratorMethod
from hdrlab.models.generators.le2023_multiexposure import (
    LE2023_DEFAULT_EV,
    Le2023Generator,
    Le2023MultiExposureNet,
    well_exposedness_mask,
)
from hdrlab.models.mergers.base import StackMerger
from hdrlab.weights import load_vgg_features

PairSampling = Literal["all_pairs", "input_pairs"]
PAIR_SAMPLING_MODES: tuple[str, ...] = ("all_pairs", "input_pairs")


def exposure_pool(batch: HDRBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The exposures a training pair is drawn from: the batch's bracket plus the input at ev 0.

    The input ``ldr`` is inserted at ev 0 unless the bracket already holds an ev-0 member (then the
    bracket's own ev-0 render is used, as in the official 9-image stacks).

    Args:
        batch: needs ``stack [B, N, 3, H, W]`` (display [0, 1]), ``ev [B, N]`` (ascending, shared
            by the batch) and ``ldr [B, 3, H, W]``.

    Returns:
        ``(images [B, M, 3, H, W] in [0, 1], ev [B, M])`` sorted by ascending ev.

    Raises:
        ConfigError: the batch has no bracket.
    """
    if "stack" not in batch or "ev" not in batch:
        raise ConfigError(
            "Le2023Method trains on exposure brackets but the batch has no 'stack'/'ev': "
            "set data.init_args.bracket_ev, e.g. [-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2]"
        )
    images, ev = batch["stack"], batch["ev"].to(batch["stack"].dtype)
    if bool((ev == 0).any(dim=1).all()):
        return images, ev
    ldr = batch["ldr"].unsqueeze(1)
    zero = ev.new_zeros(ev.shape[0], 1)
    images, ev = torch.cat([images, ldr], dim=1), torch.cat([ev, zero], dim=1)
    order = ev.argsort(dim=1)
    images = torch.take_along_dim(images, order.view(*order.shape, 1, 1, 1), dim=1)
    return images, torch.take_along_dim(ev, order, dim=1)


def sample_exposure_pairs(
    ev: torch.Tensor, *, mode: PairSampling = "all_pairs", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one (lower, higher) exposure pair per batch element from an ascending ev pool.

    * ``"all_pairs"`` (official): uniform over all index pairs ``i <= j`` of the pool, identical
      pairs included (``M (M + 1) / 2`` pairs: 45 for a 9-image stack, as the DrTMO CSVs).
    * ``"input_pairs"``: the input (the ev-0 member) with a uniformly drawn member (itself included).

    Args:
        ev: ``[B, M]`` ascending exposure values of the pool.
        mode: ``"all_pairs"`` or ``"input_pairs"``.
        generator: CPU random generator (``None``: the global torch RNG).

    Returns:
        ``(lower [B], higher [B])`` long indices into ``M`` with ``ev[lower] <= ev[higher]``.
    """
    bsz, num = ev.shape
    if mode == "all_pairs":
        pairs = torch.triu_indices(num, num)  # [2, M(M+1)/2], rows i <= j
        pick = torch.randint(pairs.shape[1], (bsz,), generator=generator)
        return pairs[0, pick].to(ev.device), pairs[1, pick].to(ev.device)
    if mode == "input_pairs":
        reference = (ev == 0).float().argmax(dim=1)
        other = torch.randint(num, (bsz,), generator=generator).to(ev.device)
        return torch.minimum(reference, other), torch.maximum(reference, other)
    raise ConfigError(f"pair_sampling={mode!r} is unknown; use one of {PAIR_SAMPLING_MODES}")


class Le2023Method(StackGeneratorMethod):
    """Le et al. (WACV 2023) stack generator, trained weakly from brackets, scored through a merger.

    Training pairs come from :func:`exposure_pool` (the data's ``bracket_ev`` bracket plus the
    input) with :func:`sample_exposure_pairs` (official: all pairs ``i <= j``, identical pairs
    included, exposure ratio ``t_y / t_x = 2 ** (ev_y - ev_x)``); N1 runs once per pair member
    (two calls, as two official ``EDNet.forward`` calls).

    Loss reductions (official, ``hdrlab.losses.le2023``; the balance depends on the patch size):

    * ``recon`` (x100): mean over all ``B*3*H*W`` of ``|pred - target| * M_target``;
    * ``hdr`` (x1): mean of ``|log(E_a t_b/t_a + 1/255) - log(E_b + 1/255)|``, both directions;
    * ``tv`` (x1e-5): anisotropic L1 TV **summed** over C, H, W, mean over the batch -- it grows
      with ``H*W``; 1e-5 is tuned for 256x256 crops (use ``loss_weights={"tv": 1e-5*(256/P)**2}``
      at a ``P x P`` patch to keep the official balance);
    * ``perceptual`` (x0.1): VGG19 pool1..pool3 of the masked images, spatial-mean MAE summed
      over channels and layers, mean over the batch.

    Logged terms are the weighted sums over both branches. Validation also logs ``val/loss``
    (pairs drawn with a generator seeded by the batch index, so it is repeatable) for the
    official ReduceLROnPlateau schedule.

    Evaluation/prediction: ``Le2023Generator`` makes the stack ``ev`` (+ the input at ev 0) and
    ``merger`` merges it with the batch's CRF attached (``stack.crf``); the output domain is the
    merger's (``linear`` for the default known-CRF Debevec merge). The merger is frozen (it is
    an evaluation device, not trained here).

    Args:
        width: channel multiplier of N1/N2/N3 (1.0 = official, 62,194,875 parameters).
        pretrained_trunks: ImageNet VGG19 for the perceptual loss (False: random trunk).
        ev: inference ev set (official :data:`LE2023_DEFAULT_EV`, +-2 EV in 0.5 EV steps).
        clip_threshold: tau of the soft well-exposedness mask (0.95).
        levels: U-Net depth (official 7; inputs are padded to a multiple of ``2**(levels-1)``).
        merger: stack merger for evaluation (default ``DebevecMerger(crf="known")``).
        pair_sampling: ``"all_pairs"`` (official) or ``"input_pairs"``.
        loss_weights: overrides of the official weights (keys ``recon``, ``hdr``, ``tv``, ``perceptual``).
        perceptual: compute ``L_p`` (official True). False drops the VGG19 term entirely (it
            dominates the CPU cost at small widths; a CPU-sized setting, never the default).
        optimizer: ``adamw`` (official).
        lr: AdamW learning rate (official 1e-4).
        weight_decay: AdamW weight decay (official 1e-4).
        plateau_factor: ReduceLROnPlateau factor on ``val/loss`` (official 0.5).
        plateau_patience: ReduceLROnPlateau patience in validation epochs (official 4); ``None``
            disables it (then the base's step milestones apply, if any).
        **kwargs: :class:`HDRMethod` options (metrics, align, betas, lr_milestones, ...).

    Deviations from the official code:

    * Augmentation is the datamodule's (random crop, flips); the official ShiftScaleRotate
      (+-179 degrees, p 0.5) is not applied. Brackets are synthetic (procedural radiance, sampled
      CRFs) instead of DrTMO's rendered 9-image stacks.
    * Plain BatchNorm (official: SyncBatchNorm on 4 GPUs, global batch 64); fp32 instead of AMP.
    * The authors merge the generated stack with Photomatix; here a configurable merger
      (default known-CRF Debevec) scores the stack.
    * Inputs whose sides are not multiples of ``2**(levels-1)`` are replicate-padded and the
      stack cropped back by the generator (the official code requires 512x512 inputs).
    """

    output_domain = "linear"
    file_options = ("pretrained_trunks",)

    def __init__(
        self,
        *,
        width: float = 1.0,
        pretrained_trunks: bool = True,
        ev: Sequence[float] = LE2023_DEFAULT_EV,
        clip_threshold: float = 0.95,
        levels: int = 7,
        merger: StackMerger | None = None,
        pair_sampling: PairSampling = "all_pairs",
        loss_weights: dict[str, float] | None = None,
        perceptual: bool = True,
        optimizer: Literal["adam", "adamw", "sgd"] = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        plateau_factor: float = 0.5,
        plateau_patience: int | None = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)
        if pair_sampling not in PAIR_SAMPLING_MODES:
            raise ConfigError(f"Le2023Method.pair_sampling={pair_sampling!r} is unknown; use one of {PAIR_SAMPLING_MODES}")
        if plateau_patience is not None and self.lr_milestones:
            raise ConfigError(
                "Le2023Method: plateau_patience and lr_milestones are both set; "
                "set plateau_patience: null to use step milestones"
            )
        if not 0.0 < plateau_factor < 1.0:
            raise ConfigError(f"Le2023Method.plateau_factor={plateau_factor} must lie in (0, 1) (official 0.5)")
        self.save_hyperparameters(ignore=["merger"])
        self.generator = Le2023Generator(ev=ev, width=width, clip_threshold=clip_threshold, levels=levels)
        self.set_merger(merger)
        perceptual_loss = None
        if perceptual:
            trunk = load_vgg_features("vgg19", pretrained=pretrained_trunks)
            perceptual_loss = MaskedPerceptualLoss(feature_extractor=PoolFeatures(trunk=trunk, count=3))
            perceptual_loss.requires_grad_(False)
        self.loss = Le2023Loss(perceptual=perceptual_loss, weights=loss_weights)
        self.pair_sampling = pair_sampling
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = plateau_patience

    # ------------------------------------------------------------------ structure
    @property
    def net(self) -> Le2023MultiExposureNet:
        """The three U-Nets (:class:`~hdrlab.models.generators.Le2023MultiExposureNet`)."""
        return self.generator.net

    def subnetworks(self) -> dict[str, torch.nn.Module]:
        """``hdr_encoder`` (N1), ``up_exposure`` (N2), ``down_exposure`` (N3)."""
        return {"hdr_encoder": self.net.hdr_encoder, "up_exposure": self.net.up_exposure,
                "down_exposure": self.net.down_exposure}

    def train(self, mode: bool = True) -> "Le2023Method":
        """Keep the frozen VGG trunk in eval mode whatever the method's mode."""
        super().train(mode)
        if self.loss.perceptual is not None:
            self.loss.perceptual.eval()
        return self

    def example_batch(self, *, batch_size: int = 1, height: int = 512, width: int = 512,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """The base example batch plus a bracket ``stack``/``ev`` at the inference ev set.

        The bracket is rendered with plain tensor ops (``crf(clamp(hdr * 2**ev))``, 8-bit
        rounding), so it can be built under ``FakeTensorMode`` (FLOP counting).
        """
        batch = super().example_batch(batch_size=batch_size, height=height, width=width, device=device)
        batch["stack"], batch["ev"] = example_bracket(batch["hdr"], [v for v in self.generator.ev if v != 0.0])
        return batch

    # ------------------------------------------------------------------ training
    def pair_losses(
        self, batch: HDRBatch, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Draw one exposure pair per image and evaluate :class:`Le2023Loss` on it (``total`` + raw terms)."""
        images, ev = exposure_pool(batch)
        lo, hi = sample_exposure_pairs(ev, mode=self.pair_sampling, generator=generator)
        rows = torch.arange(images.shape[0], device=images.device)
        x, y = images[rows, lo], images[rows, hi]
        ratio = torch.exp2(ev[rows, hi] - ev[rows, lo])  # t_y / t_x >= 1
        y_hat, hdr_x = self.net(x, ratio, up=True)
        x_hat, hdr_y = self.net(y, 1.0 / ratio, up=False)
        threshold = self.net.clip_threshold
        return self.loss(
            x=x, y=y, x_hat=x_hat, y_hat=y_hat, hdr_x=hdr_x, hdr_y=hdr_y,
            mask_x=well_exposedness_mask(x, threshold=threshold),
            mask_y=well_exposedness_mask(y, threshold=threshold),
            ratio_y_over_x=ratio,
        )

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Official weighted loss on one random pair per image; terms weighted and summed over branches."""
        terms = self.pair_losses(batch)
        weights = self.loss.weights
        named = {name: weights[name] * (terms[f"up_{name}"] + terms[f"down_{name}"])
                 for name in ("recon", "hdr", "tv", "perceptual") if f"up_{name}" in terms}
        return terms["total"], named

    def validation_step(self, batch: HDRBatch, batch_idx: int) -> None:
        """Merged-stack metrics (base) and ``val/loss`` on repeatable pairs (seeded by ``batch_idx``)."""
        super().validation_step(batch, batch_idx)
        if "stack" in batch:
            pairs = torch.Generator().manual_seed(int(batch_idx))
            loss = self.pair_losses(batch, generator=pairs)["total"]
            self.log("val/loss", loss, batch_size=batch["ldr"].shape[0], sync_dist=True)

    def scheduler_config(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """ReduceLROnPlateau(factor, patience) on ``val/loss`` per epoch (official), else the base's milestones."""
        if self.plateau_patience is None:
            return super().scheduler_config(optimizer)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=int(self.plateau_patience))
        # strict=False: epochs without validation (val_check_interval, fast_dev_run) only warn.
        return {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch", "strict": False}


__all__ = ["Le2023Method", "exposure_pool", "sample_exposure_pairs", "PAIR_SAMPLING_MODES"]
