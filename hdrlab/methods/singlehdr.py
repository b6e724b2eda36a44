"""SingleHDR (Liu et al., "Single-Image HDR Reconstruction by Learning to Reverse the Camera
Pipeline", CVPR 2020) as a LightningModule: the official stage-wise training in one run (default),
one stage at a time, or the joint fine-tuning.

The network is :class:`hdrlab.models.direct.SingleHDRNet` (Dequantization-Net -> Linearization-Net
-> Hallucination-Net -> Refinement-Net); the official training objectives are in
:mod:`hdrlab.losses.singlehdr`; :class:`SingleHDRMethod` selects one of them by ``stage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MeanSquaredError

from hdrlab.camera import EMoRBasis, lut_apply
from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.losses.domains import DOMAINS, MU_SINGLEHDR
from hdrlab.losses.singlehdr import (
    SingleHDRPerceptualLoss,
    dequantization_loss,
    hallucination_loss,
    image_loss_mask,
    joint_loss,
    linearization_loss,
)
from hdrlab.checkpoints import load_prefixed_weights
from hdrlab.methods.base import HDRMethod
from hdrlab.methods.stagewise import STAGEWISE, StagewiseTraining
from hdrlab.models.blocks.conv import pad_to_multiple
from hdrlab.models.direct.singlehdr import (
    NUM_EMOR_WEIGHTS,
    OVEREXPOSURE_THRESHOLD,
    SingleHDRNet,
    fallback_inverse_crf_basis,
)

__all__ = ["STAGES", "SUBNETWORKS", "STAGE_TRAINABLE", "STAGE_LEARNING_RATES", "OFFICIAL_STAGE_SHARES",
           "SingleHDRMethod"]

Stage = Literal["stagewise", "dequantization", "linearization", "hallucination", "refinement", "joint"]
#: Training stages, in pipeline order (``joint`` = official stage 4, end-to-end fine-tuning).
STAGES: tuple[str, ...] = ("dequantization", "linearization", "hallucination", "refinement", "joint")
#: Sub-network attribute names of :class:`SingleHDRNet`.
SUBNETWORKS: tuple[str, ...] = ("dequantization", "linearization", "hallucination", "refinement")
#: Sub-networks trained in each stage (all others are frozen: ``requires_grad=False``, eval mode).
STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "dequantization": ("dequantization",),
    "linearization": ("linearization",),
    "hallucination": ("hallucination",),
    "refinement": ("refinement",),
    "joint": SUBNETWORKS,
}
#: Official Adam learning rates: 1e-4 for stages 1-3, 1e-5 for the joint fine-tuning (the
#: refinement-only stage, an hdrlab addition, uses the fine-tuning rate).
STAGE_LEARNING_RATES: dict[str, float] = {
    "dequantization": 1e-4,
    "linearization": 1e-4,
    "hallucination": 1e-4,
    "refinement": 1e-5,
    "joint": 1e-5,
}
#: The official schedule as shares of one stage-wise run: 500k iterations for each of stages 1-3,
#: then 100k of joint fine-tuning, all at batch 8 (``training_code/train_*.py``, ``finetune_real_dataset.py``).
OFFICIAL_STAGE_SHARES: dict[str, float] = {
    "dequantization": 500_000,
    "linearization": 500_000,
    "hallucination": 500_000,
    "joint": 100_000,
}



# --------------------------------------------------------------------------------------------
# LightningModule
# --------------------------------------------------------------------------------------------


class SingleHDRMethod(StagewiseTraining, HDRMethod):
    """SingleHDR (Liu et al., CVPR 2020): LDR -> linear HDR by reversing the camera pipeline.

    ``stage`` selects what one run trains (module docstring for the equations):

    * ``stagewise`` (default, the official training): stages 1-3 and then the joint fine-tuning in
      one run, each for its share of the run's budget (``stage_shares``, official 500k : 500k :
      500k : 100k iterations), each starting a fresh Adam at its official rate and training only its
      sub-networks (:class:`hdrlab.methods.stagewise.StagewiseTraining`). The separate-runs form of
      the same schedule, with a best checkpoint kept per stage, is the recipe
      ``experiments/recipes/singlehdr_stagewise.yaml``.
    * ``dequantization`` (official stage 1): Dequantization-Net, input ``ldr`` -> target
      ``ldr_float``, L2, per-image mask.
    * ``linearization`` (official stage 2): Linearization-Net on the *un-quantised* ``ldr_float``
      (as the official code), targets ``hdr_clipped`` (image L2) and ``crf_inverse`` (curve L2,
      weight 0.1), per-image mask.
    * ``hallucination`` (official stage 3): Hallucination-Net on the true ``hdr_clipped`` ->
      target ``hdr``; ``T``-domain L1 + 0.001 VGG16 pool1-3 + 0.1 TV, per-image mask.
    * ``refinement`` (hdrlab addition): Refinement-Net alone on the frozen upstream pipeline with
      the stage-4 loss. The official code has no such stage - its Refinement-Net is trained only
      in the joint fine-tuning; use it as a warm-up before ``joint``.
    * ``joint`` (official stage 4): all four sub-networks end to end on ``ldr``,
      ``mean |T(n(R)) - T(n(H))|`` with per-image mean-0.5 normalisation, BN in train mode.

    Frozen sub-networks have ``requires_grad=False`` and are kept in eval mode (BN statistics
    do not move). Stages 1-3 run only their own sub-network in ``compute_loss``;
    :meth:`predict_image` always runs the whole pipeline (in a ``stagewise`` run also before its
    joint stage, so validation curves score the pipeline as trained so far).

    Stage-wise training chains runs with ``stage_checkpoints`` (sub-network name -> checkpoint of
    an earlier run of this method), e.g. for ``joint``:
    ``{dequantization: runs/.../deq.ckpt, linearization: ..., hallucination: ..., refinement: ...}``.

    Deviations from the official code (all named here; also ``docs/methods.md``):

    * Data: procedural scenes / HDR folders with hdrlab's synthesis (exposure chosen for a
      clipped fraction, CRFs from :class:`hdrlab.camera.CRFSampler`) instead of HDR-Synth with
      the DoRF train/test split (the DoRF curve file is not available, so the RandomState(730)
      split is not reproducible) and HDR-Real for stage 4. The per-image mask of stage 4 is not
      applied (HDR-Real patches were pre-filtered with the same rule).
    * Weights: no ``crf_net_v2.npy`` (Linearization trunk) and no VGG16-Places365 (Hallucination
      encoder); ``pretrained_encoder=True`` starts the encoder from torchvision's ImageNet VGG16
      instead. The perceptual loss uses torchvision's ImageNet VGG16 (official: tensorflow-vgg
      ``vgg16.npy``, the same ImageNet model in caffe layout) with torchvision's input
      normalisation.
    * Loss weights follow the code (deq 1; lin image 1, curve 0.1; hal L1 1, perceptual 0.001,
      TV 0.1); the paper's weight "10" could not be matched in the code. The mask threshold is
      the code's tau = 0.88 (paper: 0.95).
    * Without ``emor_path`` the inverse-CRF basis is :func:`fallback_inverse_crf_basis`
      (``v ** 2.2`` mean + 11 orthonormal sines), not EMoR.
    * ``normalize_mean`` floors the mean at 1e-8; :meth:`predict_image` reflect-pads inputs to
      multiples of 32 (official test code: bicubic resize to multiples of 64 + symmetric pad 32).
    * Schedule (official: Adam, batch 8, 256^2 patches, 500k iterations per stage 1-3, 100k
      joint): the batch, patch and total of 1.6M iterations live in ``experiments/singlehdr.yaml``;
      the ``stagewise`` run splits its total by :data:`OFFICIAL_STAGE_SHARES` and otherwise trains
      as the separate official runs (a fresh Adam per stage, the Refinement-Net from scratch in the
      joint stage), on one data stream instead of four.

    Args:
        stage: what to train (see above).
        stage_shares: ``stagewise`` only: stage -> share of the run's budget, in order (None =
            :data:`OFFICIAL_STAGE_SHARES`; e.g. ``{refinement: 1, joint: 1}`` adds hdrlab's warm-up).
        width: channel multiplier of all four sub-networks (1 = official).
        emor_path: folder holding ``emor.txt`` / ``invemor.txt`` (or one of the files): the
            official K = 11 inverse-EMoR basis. None: :func:`fallback_inverse_crf_basis`.
        pretrained_trunks: ImageNet VGG16 for the stage-3 perceptual loss (False: random trunk).
        pretrained_encoder: start the Hallucination-Net encoder from torchvision's ImageNet
            VGG16 (needs ``width=1`` and the weights file; official: VGG16-Places365).
        threshold: tau of the over-exposure mask (official 0.88).
        lr: Adam learning rate; None = official rate of the stage (:data:`STAGE_LEARNING_RATES`;
            in a ``stagewise`` run: of each stage, else one rate for all).
        crf_weight: stage-2 curve term weight (official 0.1).
        perceptual_weight: stage-3 perceptual weight (official 0.001).
        tv_weight: stage-3 TV weight (official 0.1).
        mu: strength of the tone curve ``T`` (official 10).
        loss_domain: domain of the HDR loss terms (stage 3's L1/P/TV and the joint/refinement L1):
            ``"mu_law"`` (official ``T`` with ``mu``), or the hdrlab options ``"linear"``, ``"log"``
            (``log(x + 1/255)``), ``"pu21"`` (:func:`hdrlab.losses.to_domain`; in the joint loss
            after the mean-0.5 normalisation, so ``pu21`` sees 0.5 -> 100 cd/m^2).
        use_image_mask: apply the official per-image loss mask in stages 1-3.
        prediction: ``"refined"`` (official ``test_real_refinement.py``: ``hdr``) or
            ``"hallucinated"`` (official ``test_real.py``: ``A``, stages 1-3 only).
        crf_source: inverse CRF used at evaluation / prediction: ``"predicted"`` (the
            Linearization-Net, the method) or ``"known"`` (the batch's true ``crf_inverse``, an
            hdrlab ablation that isolates the Linearization-Net's error from the Hallucination-
            and Refinement-Nets'; synthetic data only, training is unchanged).
        stage_checkpoints: sub-network name -> Lightning checkpoint of this method whose
            ``net.<name>.*`` weights initialise that sub-network (loaded with ``weights_only=True``).
        linearization_bn_momentum: PyTorch BN momentum of the Linearization-Net (official slim
            decay 0.999 = 0.001). Its running statistics average over about ``1 / momentum``
            steps, a sizeable part of a short CPU budget; raise it for runs of a few thousand steps.
        **kwargs: :class:`HDRMethod` options (``betas``, ``metrics``, ``align``, ...).
    """

    output_domain = "linear"
    file_options = ("emor_path", "stage_checkpoints", "pretrained_trunks", "pretrained_encoder")
    stage_trainable = STAGE_TRAINABLE
    stage_learning_rates = STAGE_LEARNING_RATES

    def __init__(
        self,
        *,
        stage: Stage = "stagewise",
        stage_shares: dict[str, float] | None = None,
        width: float = 1.0,
        emor_path: str | None = None,
        pretrained_trunks: bool = True,
        pretrained_encoder: bool = False,
        threshold: float = OVEREXPOSURE_THRESHOLD,
        lr: float | None = None,
        crf_weight: float = 0.1,
        perceptual_weight: float = 1e-3,
        tv_weight: float = 0.1,
        mu: float = MU_SINGLEHDR,
        loss_domain: Literal["linear", "log", "mu_law", "pu21"] = "mu_law",
        use_image_mask: bool = True,
        prediction: Literal["refined", "hallucinated"] = "refined",
        crf_source: Literal["predicted", "known"] = "predicted",
        stage_checkpoints: dict[str, str] | None = None,
        linearization_bn_momentum: float = 0.001,
        **kwargs: Any,
    ) -> None:
        if stage not in (STAGEWISE, *STAGES):
            raise ConfigError(f"SingleHDRMethod stage={stage!r} is unknown; choose one of {[STAGEWISE, *STAGES]}")
        if stage_shares is not None and stage != STAGEWISE:
            raise ConfigError(f"SingleHDRMethod stage_shares applies to stage='stagewise' only (stage={stage!r}); "
                              "drop stage_shares or set stage: stagewise")
        shares = dict(OFFICIAL_STAGE_SHARES if stage_shares is None else stage_shares)
        if prediction not in ("refined", "hallucinated"):
            raise ConfigError(f"SingleHDRMethod prediction={prediction!r}; use 'refined' or 'hallucinated'")
        if crf_source not in ("predicted", "known"):
            raise ConfigError(f"SingleHDRMethod crf_source={crf_source!r}; use 'predicted' or 'known'")
        first = next(iter(shares)) if stage == STAGEWISE else stage
        super().__init__(lr=STAGE_LEARNING_RATES.get(first, 1e-4) if lr is None else lr, **kwargs)
        self.stage = stage
        if stage == STAGEWISE:
            self.init_stagewise(shares, lr=lr, idle_stage="joint")
        self.emor_path = emor_path
        self.crf_weight, self.perceptual_weight, self.tv_weight = float(crf_weight), float(perceptual_weight), float(tv_weight)
        self.mu = float(mu)
        if loss_domain not in DOMAINS:
            raise ConfigError(f"SingleHDRMethod loss_domain={loss_domain!r} is unknown; use one of {list(DOMAINS)} "
                              "('mu_law' = the official T)")
        self.loss_domain = loss_domain
        self.use_image_mask = bool(use_image_mask)
        self.prediction = prediction
        self.crf_source = crf_source
        self._curve_metrics: dict[str, MeanSquaredError] = {}
        if emor_path is not None:
            emor = EMoRBasis.load(emor_path, k=NUM_EMOR_WEIGHTS)
            inv_mean, inv_basis = emor.inv_mean, emor.inv_basis
        else:
            inv_mean, inv_basis = fallback_inverse_crf_basis()
        self.net = SingleHDRNet(
            width=width, inv_mean=inv_mean, inv_basis=inv_basis, threshold=threshold,
            pretrained_encoder=pretrained_encoder, linearization_bn_momentum=linearization_bn_momentum,
        )  # fmt: skip
        self.perceptual = (
            SingleHDRPerceptualLoss(pretrained=pretrained_trunks)
            if self.perceptual_weight > 0 and (stage == "hallucination" or (stage == STAGEWISE and "hallucination" in shares))
            else None
        )
        # a stage-wise run shows its joint stage until the first batch (its optimizer holds every scheduled
        # sub-network: StagewiseTraining.trainable_parameters)
        self.trainable_subnets = STAGE_TRAINABLE["joint" if stage == STAGEWISE else stage]
        for name, sub in self.subnetworks().items():
            sub.requires_grad_(name in self.trainable_subnets)
        if stage_checkpoints:
            self.load_subnetworks(stage_checkpoints)
        self._joint_from_scratch = stage == "joint" and not stage_checkpoints

    def on_fit_start(self) -> None:
        """Warn once when stage 4 (joint) starts from scratch: the official training is stage-wise,
        and on procedural scenes the stage-4 loss alone collapses to an all-zero output."""
        super().on_fit_start()
        if self._joint_from_scratch and self.trainer.ckpt_path is None:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                "SingleHDR stage 'joint' is training all four sub-networks from scratch; this is the official "
                "fine-tuning stage, and from scratch on procedural scenes it collapses to an all-zero output. "
                "Train stage-wise instead: the default stage 'stagewise', or the recipe "
                "experiments/recipes/singlehdr_stagewise.yaml (or pass model.init_args.stage_checkpoints)")

    # ------------------------------------------------------------------ structure
    def subnetworks(self) -> dict[str, nn.Module]:
        """The four sub-networks by name (trainable or frozen in this stage)."""
        return {name: getattr(self.net, name) for name in SUBNETWORKS}

    def train(self, mode: bool = True) -> SingleHDRMethod:
        """Set the mode; frozen sub-networks (and the loss trunk) always stay in eval mode."""
        super().train(mode)
        for name, sub in self.subnetworks().items():
            if name not in self.trainable_subnets:
                sub.eval()
        return self

    def load_subnetworks(self, checkpoints: Mapping[str, str]) -> None:
        """Initialise sub-networks from checkpoints of earlier (stage) runs of this method.

        Args:
            checkpoints: sub-network name -> path of a Lightning checkpoint (``state_dict`` with
                ``net.<name>.*`` keys) or of a plain state dict.

        Raises:
            ConfigError: unknown sub-network name or the checkpoint lacks its weights.
            HDRIOError: the file cannot be read.
        """
        unknown = sorted(set(checkpoints) - set(SUBNETWORKS))
        if unknown:
            raise ConfigError(f"stage_checkpoints has unknown sub-networks {unknown}; use {list(SUBNETWORKS)}")
        for name, path in checkpoints.items():
            load_prefixed_weights(getattr(self.net, name), path, f"net.{name}.", option=f"stage_checkpoints[{name!r}]",
                                  method="SingleHDRMethod")

    # ------------------------------------------------------------------ losses
    def _image_mask(self, batch: HDRBatch) -> torch.Tensor | None:
        return image_loss_mask(batch["ldr"]) if self.use_image_mask else None

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective of :attr:`active_stage` (module docstring) and its weighted terms."""
        net, stage = self.net, self.active_stage
        if stage == "dequantization":
            loss = dequantization_loss(net.dequantization(batch["ldr"]), batch["ldr_float"], mask=self._image_mask(batch))
            return loss, {"l2": loss}
        if stage == "linearization":
            image = batch["ldr_float"]
            curve = net.linearization(image)
            terms = linearization_loss(
                lut_apply(image, curve), batch["hdr_clipped"], curve, batch["crf_inverse"],
                crf_weight=self.crf_weight, mask=self._image_mask(batch),
            )  # fmt: skip
        elif stage == "hallucination":
            hallucinated = net.hallucination(batch["hdr_clipped"])["hallucinated"]
            terms = hallucination_loss(
                hallucinated, batch["hdr"], perceptual=self.perceptual, perceptual_weight=self.perceptual_weight,
                tv_weight=self.tv_weight, mu=self.mu, mask=self._image_mask(batch), domain=self.loss_domain,
            )  # fmt: skip
        elif stage == "refinement":
            with torch.no_grad():
                dequantized = net.dequantization(batch["ldr"])
                linearized = lut_apply(dequantized, net.linearization(dequantized))
                hallucinated = net.hallucination(linearized)["hallucinated"]
            loss = joint_loss(net.refinement(hallucinated, linearized, dequantized), batch["hdr"], mu=self.mu,
                              domain=self.loss_domain)
            return loss, {"l1": loss}
        else:
            loss = joint_loss(net(batch["ldr"])["hdr"], batch["hdr"], mu=self.mu, domain=self.loss_domain)
            return loss, {"l1": loss}
        total = terms.pop("total")
        return total, terms

    # ------------------------------------------------------------------ prediction
    def forward(self, ldr: torch.Tensor, *, inverse_crf: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All intermediates of :class:`SingleHDRNet` for ``ldr`` ``[B, 3, H, W]`` in [0, 1]
        (any H, W: reflect-padded to multiples of 32 and cropped back); ``inverse_crf`` optionally
        given (see :meth:`global_branch`)."""
        padded, (h, w) = pad_to_multiple(ldr, SingleHDRNet.stride)
        out = self.net(padded, inverse_crf=inverse_crf)
        return {k: (v[..., :h, :w] if v.dim() == 4 else v) for k, v in out.items()}

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Linear HDR ``[B, 3, H, W]`` (>= 0, 1.0 = input clipping point) from ``batch["ldr"]``:
        the refined ``hdr`` (default) or the hallucinated ``A`` (``prediction="hallucinated"``)."""
        return self.predict_tile(batch, None)

    def global_branch(self, ldr: torch.Tensor) -> torch.Tensor:
        """The camera's inverse CRF ``[B, 1, 1024]`` estimated once on a (downsampled) full image:
        tiles of a large photo share it instead of each estimating its own."""
        padded, _ = pad_to_multiple(ldr, SingleHDRNet.stride)
        return self.net.linearization(self.net.dequantization(padded))

    # ------------------------------------------------------------------ evaluation
    def curve_metric(self, stage: str) -> MeanSquaredError:
        """RMSE of the Linearization-Net's inverse CRF against the batch's true one (``stage``:
        ``val`` / ``test``), built on first use on this device."""
        if stage not in self._curve_metrics:
            self._curve_metrics[stage] = MeanSquaredError(squared=False).to(self.device)
        return self._curve_metrics[stage]

    def _eval_step(self, batch: HDRBatch, batch_idx: int, stage: str) -> dict[str, torch.Tensor]:
        """The shared image metrics, plus ``<stage>/crf_rmse`` when the batch carries its true
        inverse CRF (synthetic data): the RMSE, pooled over the 1024 samples of every curve, of
        the Linearization-Net's inverse CRF (whatever ``crf_source``). A ``linearization`` run
        scores it on what that stage trains on, the un-quantised ``ldr_float`` (its
        Dequantization-Net is not trained yet); every other stage on the pipeline's own input,
        the dequantised ``ldr`` (:meth:`global_branch`). Stage 2's quantity, e.g. to keep its
        best checkpoint by (``hdrlab fit --keep_best_by val/crf_rmse --keep_best_mode min``)."""
        out = super()._eval_step(batch, batch_idx, stage)
        if "crf_inverse" in batch:
            target = batch["crf_inverse"].float()
            if self.stage == "linearization" and "ldr_float" in batch:
                curve = self.net.linearization(batch["ldr_float"])  # as compute_loss
            else:
                curve = self.global_branch(batch["ldr"])
            self.curve_metric(stage).update(curve.float().expand_as(target), target)
        return out

    def _eval_epoch_end(self, stage: str) -> None:
        super()._eval_epoch_end(stage)
        metric = self._curve_metrics.get(stage)
        if metric is not None and metric.update_count > 0:
            self.log(f"{stage}/crf_rmse", metric.compute(), sync_dist=True)
            metric.reset()

    def predict_tile(self, batch: HDRBatch, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.crf_source == "known":
            if "crf_inverse" not in batch:
                raise ConfigError("SingleHDRMethod crf_source='known' needs the batch's true inverse CRF "
                                  "('crf_inverse': synthetic data only); use crf_source='predicted' for photos")
            context = batch["crf_inverse"].to(batch["ldr"].dtype)
        out = self(batch["ldr"], inverse_crf=context)
        return out["hdr"] if self.prediction == "refined" else out["hallucinated"]
