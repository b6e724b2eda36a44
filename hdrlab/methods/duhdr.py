"""DuHDR (She et al., "Single-image HDR reconstruction by dual learning the camera imaging process") as
a LightningModule: stage-wise paired training (Algorithm 1) and unpaired fine-tuning on LDR-only
batches (Algorithm 2).

The network is :class:`hdrlab.models.direct.duhdr.DuHDRNet` (primal Dnet -> INnet -> ITnet -> OOnet,
duals Nnet, Q, clipping); the objectives are in :mod:`hdrlab.losses.duhdr`; ``stage`` picks one.
Official code: DoomsdayLeaf/DualHDR (TF1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call

from hdrlab.camera import EMoRBasis, lut_apply
from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.losses.domains import DOMAINS, MU_SINGLEHDR
from hdrlab.losses.duhdr import (
    dnet_loss,
    itnet_loss,
    linearization_dual_loss,
    oonet_loss,
    unpaired_dnet_loss,
    unpaired_itnet_loss,
    unpaired_linearization_loss,
    unpaired_oonet_loss,
)
from hdrlab.losses.singlehdr import SingleHDRPerceptualLoss, image_loss_mask
from hdrlab.checkpoints import load_prefixed_weights
from hdrlab.methods.base import HDRMethod
from hdrlab.methods.stagewise import STAGEWISE, StagewiseTraining
from hdrlab.models.blocks.conv import pad_to_multiple
from hdrlab.models.direct.duhdr import DuHDRNet, fallback_crf_basis
from hdrlab.models.direct.singlehdr import NUM_EMOR_WEIGHTS, OVEREXPOSURE_THRESHOLD, fallback_inverse_crf_basis

__all__ = ["STAGES", "SUBNETWORKS", "STAGE_TRAINABLE", "STAGE_LEARNING_RATES", "OFFICIAL_STAGE_SHARES",
           "UNPAIRED_TERMS", "DuHDRMethod"]

Stage = Literal["stagewise", "dequantization", "linearization", "hallucination", "refinement", "joint", "unpaired"]
#: Training stages (Algorithm 1 in pipeline order, then Algorithm 2's ``unpaired`` fine-tuning).
STAGES: tuple[str, ...] = ("dequantization", "linearization", "hallucination", "refinement", "joint", "unpaired")
#: Networks with parameters, by :class:`DuHDRNet` attribute (primal four, then the learnable duals).
SUBNETWORKS: tuple[str, ...] = ("dequantization", "linearization", "hallucination", "refinement", "crf", "quantization")
#: Networks each stage trains (the rest: ``requires_grad=False``, eval mode). ``refinement`` adds
#: ``quantization`` when its dual weight is > 0 (see :class:`DuHDRMethod`).
STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "dequantization": ("dequantization",),
    "linearization": ("linearization", "crf"),
    "hallucination": ("hallucination",),
    "refinement": ("refinement",),
    "joint": ("dequantization", "linearization", "hallucination", "refinement"),
    "unpaired": ("dequantization", "linearization", "crf", "hallucination", "refinement"),
}
#: Official Adam rates (spec: Dnet/INnet/ITnet individual 1e-4; joint/dual scripts and OOnet 1e-5).
STAGE_LEARNING_RATES: dict[str, float] = {
    "dequantization": 1e-4,
    "linearization": 1e-4,
    "hallucination": 1e-4,
    "refinement": 1e-5,
    "joint": 1e-5,
    "unpaired": 1e-5,
}
#: Algorithm 1 as shares of one stage-wise run: the official iterations (``deq_epoch`` 500k,
#: ``linear_epoch`` 100k, ``hal_epoch`` 500k, ``ref_epoch`` 10k, then 10k of joint fine-tuning).
OFFICIAL_STAGE_SHARES: dict[str, float] = {
    "dequantization": 500_000,
    "linearization": 100_000,
    "hallucination": 500_000,
    "refinement": 10_000,
    "joint": 10_000,
}
#: Loss terms of the ``unpaired`` stage (Algorithm 2) and the network each one trains.
UNPAIRED_TERMS: dict[str, tuple[str, ...]] = {
    "dnet": ("dequantization",),  # Eq. 6
    "dnm": ("linearization", "crf"),  # Eq. 14
    "itn": ("hallucination",),  # Eq. 20
    "oo": ("refinement",),  # Eq. 25
}


class DuHDRMethod(StagewiseTraining, HDRMethod):
    """DuHDR: LDR -> linear HDR with dual (camera-forward) networks; paired and unpaired training.

    ``stage`` (equations in :mod:`hdrlab.losses.duhdr`):

    * ``stagewise`` (default): Algorithm 1 in one run - the stages below from ``dequantization``
      to ``joint``, each for its share of the run's budget (``stage_shares``, official iterations
      500k : 100k : 500k : 10k : 10k), each with a fresh Adam at its official rate and only its
      networks trainable (:class:`hdrlab.methods.stagewise.StagewiseTraining`). As separate runs
      with a checkpoint per stage: ``experiments/recipes/duhdr_stagewise.yaml``.
    * ``dequantization`` (Alg. 1 line 4, Eqs. 4-5): Dnet on ``ldr`` -> ``ldr_float``, masked L2, plus
      ``dn_dual_weight`` (paper 10) x ``L2(Q(D(x)), x)`` through the 8-bit + JPEG quantiser with a
      straight-through gradient. ``dn_dual_weight=0`` is the individual training (Eq. 4).
    * ``linearization`` (line 5, Eqs. 11-13): INnet on ``ldr_float`` -> ``hdr_clipped`` and Nnet on
      ``hdr_clipped`` -> ``ldr_float`` (Eq. 11, weight ``crf_weight``), plus ``dnm_dual_weight``
      (paper 0.01) x ``L2(N(I(I_n)), I_n)``. Trains INnet and Nnet.
    * ``hallucination`` (line 6, Eq. 17 / official ``train_dual_hal_synth.py``): ITnet on
      ``hdr_clipped`` with ``iterations`` passes, masked ``L1 + 0.001 P + 0.1 TV`` in the ``T`` domain
      plus ``itn_dual_weight`` (10) x log-L2 of the soft-clipped result against its input.
    * ``refinement`` (line 9): OOnet on the frozen primal chain, official OOnet loss; with
      ``oo_dual_weight > 0`` also the learnable Q U-Net through ``Q_learned(N(C(O)))`` (official 0).
    * ``joint`` (line 11): the four primal networks end to end with the OOnet loss.
    * ``unpaired`` (Algorithm 2): LDR-only batches (no ``hdr`` key needed). Eq. 6 trains Dnet,
      Eq. 14 INnet and Nnet, Eq. 20 ITnet, Eq. 25 OOnet; inputs of each term are detached from the
      networks upstream and Nnet enters Eq. 25 with detached parameters, so every network gets the
      gradient of its own Algorithm-2 objective only (the two loops of Algorithm 2 run as one
      simultaneous step). The learnable Q U-Net is frozen (Algorithm 2 uses the quantiser ``Q``).

    Validation / test batches without ``hdr`` (e.g. :class:`hdrlab.data.unpaired.UnpairedLDRDataModule`)
    log ``<stage>/cycle_l2`` (Eq. 25 on the full chain) and no HDR metric; batches with ``hdr`` get the
    shared HDR metrics as every method.

    Deviations (besides the network's, :mod:`hdrlab.models.direct.duhdr`):

    * Data: hdrlab's synthesis (procedural scenes / HDR folders, :class:`hdrlab.camera.CRFSampler`)
      instead of HDR-Synth + HDR-Real TFRecords; unpaired data is any folder of LDR photos.
    * Dual terms the official scripts compute but cannot minimise (the quantiser has no gradient in
      TF) are minimised here with a straight-through quantiser, as the paper's Eqs. 5-6 intend.
    * lambda: paper values where the code has none or an unusable one (``dn_dual_weight`` 10,
      ``dnm_dual_weight`` 0.01); the official joint Deq-Lin script uses 10 on the cycle term and
      restores a scope ``icrf_feature_net`` that does not exist - not copied. The paper's
      ``lambda_dnm_dn`` = 0.005 (Dnet loss inside Eq. 13) has no effect in the ``linearization``
      stage (Dnet frozen) and is not used.
    * ``main.py`` selects indi/joint for every mode from ``--deq_joint_train`` and the ITnet script
      reads undefined ``hall_*`` arguments - stage selection here is explicit.
    * ITnet's ``iterations`` apply in training and prediction alike (official eval script
      ``test_eye_dual_hal.py`` runs 1 + 3 passes adding to Clip(previous) - not copied).
    * Without ``emor_path`` INnet/Nnet use the documented fallback bases (``v^2.2`` / ``v^(1/2.2)``
      means + 11 orthonormal sines), not EMoR.

    Args:
        stage: what to train (see above).
        stage_shares: ``stagewise`` only: stage -> share of the run's budget, in order (None =
            :data:`OFFICIAL_STAGE_SHARES`).
        width: channel multiplier of every network (1 = official).
        iterations: ITnet passes (official training script 3).
        emor_path: folder with ``emor.txt``/``invemor.txt`` (K = 11 forward and inverse bases).
        pretrained_trunks: ImageNet VGG16 for the ITnet perceptual loss (False: random trunk).
        pretrained_encoder: ITnet encoder from torchvision's ImageNet VGG16 (official: Places365).
        threshold: tau of ITnet's mask (code 0.88; paper 0.95).
        lr: Adam learning rate; None = the stage's official rate (:data:`STAGE_LEARNING_RATES`; in a
            ``stagewise`` run: of each stage, else one rate for all).
        dn_dual_weight: lambda_dn_dual (paper 10).
        crf_weight: weight of Nnet's own loss, Eq. 11 (1).
        dnm_dual_weight: lambda_dnm_dual (paper 0.01).
        perceptual_weight: lambda_prec (0.001).
        tv_weight: ITnet TV weight (0.1).
        itn_dual_weight: lambda_itn_dual (10).
        oo_dual_weight: weight of OOnet's dual term (official 0).
        unpaired_weights: weights of the Algorithm-2 terms ``dnet``/``dnm``/``itn``/``oo`` (default 1
            each; each only scales its own network's gradient).
        jpeg: the quantiser adds JPEG 90..100 (official) besides 8-bit rounding.
        rfb, diff, rfb_bn_always_inference: OOnet options (:class:`hdrlab.models.direct.duhdr.OONet`).
        crf_input_size: Nnet's official resolution-bound head (None: global pooling).
        mu: strength of ``T`` (10).
        loss_domain: domain of the HDR loss terms (``"mu_law"`` = official ``T``).
        use_image_mask: the official per-image mask in the Dnet and ITnet stages.
        prediction: ``"refined"`` (OOnet output) or ``"hallucinated"`` (ITnet output).
        stage_checkpoints: network name -> checkpoint of an earlier run whose ``net.<name>.*``
            weights initialise it.
        init_checkpoint: checkpoint of an earlier run whose ``net.*`` weights initialise the whole
            model (e.g. the paired model that ``unpaired`` fine-tunes); applied before ``stage_checkpoints``.
        linearization_bn_momentum: BN momentum of INnet and Nnet (slim decay 0.999 = 0.001).
        **kwargs: :class:`HDRMethod` options.
    """

    output_domain = "linear"
    file_options = ("emor_path", "stage_checkpoints", "init_checkpoint", "pretrained_trunks", "pretrained_encoder")

    def __init__(
        self,
        *,
        stage: Stage = "stagewise",
        stage_shares: dict[str, float] | None = None,
        width: float = 1.0,
        iterations: int = 3,
        emor_path: str | None = None,
        pretrained_trunks: bool = True,
        pretrained_encoder: bool = False,
        threshold: float = OVEREXPOSURE_THRESHOLD,
        lr: float | None = None,
        dn_dual_weight: float = 10.0,
        crf_weight: float = 1.0,
        dnm_dual_weight: float = 0.01,
        perceptual_weight: float = 1e-3,
        tv_weight: float = 0.1,
        itn_dual_weight: float = 10.0,
        oo_dual_weight: float = 0.0,
        unpaired_weights: dict[str, float] | None = None,
        jpeg: bool = True,
        rfb: bool = True,
        diff: bool = True,
        rfb_bn_always_inference: bool = False,
        crf_input_size: int | None = None,
        mu: float = MU_SINGLEHDR,
        loss_domain: Literal["linear", "log", "mu_law", "pu21"] = "mu_law",
        use_image_mask: bool = True,
        prediction: Literal["refined", "hallucinated"] = "refined",
        stage_checkpoints: dict[str, str] | None = None,
        init_checkpoint: str | None = None,
        linearization_bn_momentum: float = 0.001,
        **kwargs: Any,
    ) -> None:
        if stage not in (STAGEWISE, *STAGES):
            raise ConfigError(f"DuHDRMethod stage={stage!r} is unknown; choose one of {[STAGEWISE, *STAGES]}")
        if stage_shares is not None and stage != STAGEWISE:
            raise ConfigError(f"DuHDRMethod stage_shares applies to stage='stagewise' only (stage={stage!r}); "
                              "drop stage_shares or set stage: stagewise")
        shares = dict(OFFICIAL_STAGE_SHARES if stage_shares is None else stage_shares)
        if stage == STAGEWISE and "unpaired" in shares:
            raise ConfigError("DuHDRMethod stage_shares cannot include 'unpaired' (LDR-only data); run it after, "
                              "with experiments/duhdr_unpaired.yaml and init_checkpoint")
        if prediction not in ("refined", "hallucinated"):
            raise ConfigError(f"DuHDRMethod prediction={prediction!r}; use 'refined' or 'hallucinated'")
        if loss_domain not in DOMAINS:
            raise ConfigError(f"DuHDRMethod loss_domain={loss_domain!r} is unknown; use one of {list(DOMAINS)}")
        weights = {name: 1.0 for name in UNPAIRED_TERMS}
        unknown = sorted(set(unpaired_weights or {}) - set(weights))
        if unknown:
            raise ConfigError(f"DuHDRMethod unpaired_weights has unknown terms {unknown}; use {list(UNPAIRED_TERMS)}")
        weights.update({k: float(v) for k, v in (unpaired_weights or {}).items()})
        first = next(iter(shares)) if stage == STAGEWISE else stage
        super().__init__(lr=STAGE_LEARNING_RATES.get(first, 1e-4) if lr is None else lr, **kwargs)
        self.stage = stage
        self.emor_path = emor_path
        self.dn_dual_weight, self.crf_weight, self.dnm_dual_weight = float(dn_dual_weight), float(crf_weight), float(dnm_dual_weight)
        self.perceptual_weight, self.tv_weight = float(perceptual_weight), float(tv_weight)
        self.itn_dual_weight, self.oo_dual_weight = float(itn_dual_weight), float(oo_dual_weight)
        self.unpaired_weights = weights
        self.mu, self.loss_domain = float(mu), loss_domain
        self.use_image_mask = bool(use_image_mask)
        self.prediction = prediction
        if emor_path is not None:
            emor = EMoRBasis.load(emor_path, k=NUM_EMOR_WEIGHTS)
            inv_mean, inv_basis, crf_mean, crf_basis = emor.inv_mean, emor.inv_basis, emor.mean, emor.basis
        else:
            inv_mean, inv_basis = fallback_inverse_crf_basis()
            crf_mean, crf_basis = fallback_crf_basis()
        self.net = DuHDRNet(
            width=width, inv_mean=inv_mean, inv_basis=inv_basis, crf_mean=crf_mean, crf_basis=crf_basis,
            threshold=threshold, iterations=iterations, rfb=rfb, diff=diff,
            rfb_bn_always_inference=rfb_bn_always_inference, crf_input_size=crf_input_size, jpeg=jpeg,
            pretrained_encoder=pretrained_encoder, linearization_bn_momentum=linearization_bn_momentum,
        )  # fmt: skip
        self.perceptual = (
            SingleHDRPerceptualLoss(pretrained=pretrained_trunks)
            if self.perceptual_weight > 0 and (stage == "hallucination" or (stage == STAGEWISE and "hallucination" in shares))
            else None
        )
        self.stage_trainable = dict(STAGE_TRAINABLE)
        if self.oo_dual_weight > 0:
            self.stage_trainable["refinement"] = (*STAGE_TRAINABLE["refinement"], "quantization")
        if stage == STAGEWISE:  # shows its joint stage until the first batch (StagewiseTraining)
            self.init_stagewise(shares, lr=lr, idle_stage="joint")
        trainable = self.stage_trainable["joint" if stage == STAGEWISE else stage]
        self.trainable_subnets = trainable
        for name, sub in self.subnetworks_all().items():
            sub.requires_grad_(name in trainable)
        if init_checkpoint:
            self.load_network(init_checkpoint)
        if stage_checkpoints:
            self.load_subnetworks(stage_checkpoints)
        self._from_scratch = stage in ("joint", "refinement", "unpaired") and not (init_checkpoint or stage_checkpoints)

    def on_fit_start(self) -> None:
        """Warn once when a stage that fine-tunes trained networks (Algorithm 1 lines 9-11,
        Algorithm 2) starts from scratch: train stage-wise first."""
        super().on_fit_start()
        if self._from_scratch and self.trainer.ckpt_path is None:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"DuHDR stage {self.stage!r} starts from untrained networks; the paper trains Dnet, INnet and ITnet "
                "on their own first. Train stage-wise: the default stage 'stagewise', or hdrlab recipe "
                "experiments/recipes/duhdr_stagewise.yaml "
                "(or pass model.init_args.stage_checkpoints / init_checkpoint)")

    # ------------------------------------------------------------------ structure
    stage_learning_rates = STAGE_LEARNING_RATES

    def stage_networks(self) -> dict[str, nn.Module]:
        return self.subnetworks_all()

    def subnetworks_all(self) -> dict[str, nn.Module]:
        """All six networks with parameters by name (trainable or frozen in this stage)."""
        return {name: getattr(self.net, name) for name in SUBNETWORKS}

    def subnetworks(self) -> dict[str, nn.Module]:
        """The networks this stage trains."""
        return {name: getattr(self.net, name) for name in self.trainable_subnets}

    def train(self, mode: bool = True) -> DuHDRMethod:
        """Set the mode; frozen networks (and the loss trunk) always stay in eval mode."""
        super().train(mode)
        for name, sub in self.subnetworks_all().items():
            if name not in self.trainable_subnets:
                sub.eval()
        return self

    def load_network(self, path: str) -> None:
        """Initialise the whole :class:`DuHDRNet` from the ``net.*`` weights of a checkpoint.

        Raises:
            HDRIOError: unreadable file. ConfigError: no ``net.*`` weights or a mismatch.
        """
        load_prefixed_weights(self.net, path, "net.", option="init_checkpoint", method="DuHDRMethod")

    def load_subnetworks(self, checkpoints: Mapping[str, str]) -> None:
        """Initialise networks from checkpoints of earlier (stage) runs (``net.<name>.*`` weights).

        Raises:
            ConfigError: unknown network name or the checkpoint lacks its weights. HDRIOError: unreadable file.
        """
        unknown = sorted(set(checkpoints) - set(SUBNETWORKS))
        if unknown:
            raise ConfigError(f"stage_checkpoints has unknown networks {unknown}; use {list(SUBNETWORKS)}")
        for name, path in checkpoints.items():
            load_prefixed_weights(getattr(self.net, name), path, f"net.{name}.", option=f"stage_checkpoints[{name!r}]",
                                  method="DuHDRMethod")

    # ------------------------------------------------------------------ losses
    def _image_mask(self, batch: HDRBatch) -> torch.Tensor | None:
        return image_loss_mask(batch["ldr"]) if self.use_image_mask else None

    def _require(self, batch: HDRBatch, *keys: str) -> None:
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ConfigError(f"DuHDRMethod stage={self.active_stage!r} needs batch keys {missing}; use a paired data module "
                              "(ProceduralDataModule / HDRFolderDataModule), or stage='unpaired' for LDR-only data")

    def unpaired_terms(self, ldr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Algorithm 2's four objectives on an LDR batch ``[B, 3, H, W]`` (unweighted; each term's
        gradient reaches only the networks named in :data:`UNPAIRED_TERMS`)."""
        net = self.net
        dequantized = net.dequantization(ldr)
        terms = {"dnet": unpaired_dnet_loss(net.quantize(dequantized), ldr)}
        c = dequantized.detach()
        linear = lut_apply(c, net.linearization(c))
        cycled = lut_apply(linear, net.crf(linear))
        terms["dnm"] = unpaired_linearization_loss(cycled, c)
        b = linear.detach()
        hal = net.hallucinate(b)
        terms["itn"] = unpaired_itnet_loss(net.clipping(hal["hallucinated"]), b)
        hdr = net.refinement(hal["hallucinated"].detach(), b, c)
        clipped = net.clipping(hdr)
        # Nnet enters Eq. 25 as a fixed function: detached parameters, private copies of the BN statistics
        fixed = {k: v.detach() for k, v in net.crf.named_parameters()}
        fixed.update({k: v.clone() for k, v in net.crf.named_buffers()})
        curve = functional_call(net.crf, fixed, (clipped,))
        terms["oo"] = unpaired_oonet_loss(net.quantize(lut_apply(clipped, curve)), ldr)
        return terms

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective of :attr:`active_stage` and its weighted terms."""
        net, stage = self.net, self.active_stage
        ldr = batch["ldr"]
        if stage == "unpaired":
            terms = {k: self.unpaired_weights[k] * v for k, v in self.unpaired_terms(ldr).items()}
            return sum(terms.values()), terms  # type: ignore[return-value]
        if stage == "dequantization":
            self._require(batch, "ldr_float")
            dequantized = net.dequantization(ldr)
            requantized = net.quantize(dequantized) if self.dn_dual_weight > 0 else None
            terms = dnet_loss(dequantized, batch["ldr_float"], requantized, ldr, dual_weight=self.dn_dual_weight,
                              mask=self._image_mask(batch))
        elif stage == "linearization":
            self._require(batch, "ldr_float", "hdr_clipped")
            display, clipped = batch["ldr_float"], batch["hdr_clipped"]
            linear = lut_apply(display, net.linearization(display))
            forward_gt = lut_apply(clipped, net.crf(clipped)) if self.crf_weight > 0 else None
            cycled = lut_apply(linear, net.crf(linear)) if self.dnm_dual_weight > 0 else None
            terms = linearization_dual_loss(linear, clipped, forward_gt, cycled, display, crf_weight=self.crf_weight,
                                            dual_weight=self.dnm_dual_weight)
        elif stage == "hallucination":
            self._require(batch, "hdr_clipped", "hdr")
            clipped = batch["hdr_clipped"]
            hallucinated = net.hallucinate(clipped)["hallucinated"]
            reclipped = net.clipping(hallucinated) if self.itn_dual_weight > 0 else None
            terms = itnet_loss(
                hallucinated, batch["hdr"], reclipped, clipped, perceptual=self.perceptual,
                perceptual_weight=self.perceptual_weight, tv_weight=self.tv_weight, dual_weight=self.itn_dual_weight,
                mu=self.mu, mask=self._image_mask(batch), domain=self.loss_domain,
            )  # fmt: skip
        elif stage == "refinement":
            self._require(batch, "hdr")
            with torch.no_grad():
                dequantized = net.dequantization(ldr)
                linear = lut_apply(dequantized, net.linearization(dequantized))
                hallucinated = net.hallucinate(linear)["hallucinated"]
            hdr = net.refinement(hallucinated, linear, dequantized)
            dual = None
            if self.oo_dual_weight > 0:
                clipped = net.clipping(hdr)
                dual = net.quantization(lut_apply(clipped, net.crf(clipped)))
            terms = oonet_loss(hdr, batch["hdr"], dual_ldr=dual, ldr=ldr, dual_weight=self.oo_dual_weight, mu=self.mu,
                               domain=self.loss_domain)
        else:
            self._require(batch, "hdr")
            terms = oonet_loss(net(ldr)["hdr"], batch["hdr"], mu=self.mu, domain=self.loss_domain)
        total = terms.pop("total")
        return total, terms

    # ------------------------------------------------------------------ prediction
    def forward(self, ldr: torch.Tensor, *, inverse_crf: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All intermediates of :class:`DuHDRNet` for ``ldr`` ``[B, 3, H, W]`` in [0, 1] (any H, W:
        reflect-padded to multiples of 32 and cropped back)."""
        padded, (h, w) = pad_to_multiple(ldr, DuHDRNet.stride)
        out = self.net(padded, inverse_crf=inverse_crf)
        return {k: (v[..., :h, :w] if v.dim() == 4 else v) for k, v in out.items()}

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """Linear HDR ``[B, 3, H, W]`` (>= 0, 1.0 = input clipping point) from ``batch["ldr"]``."""
        return self.predict_tile(batch, None)

    def global_branch(self, ldr: torch.Tensor) -> torch.Tensor:
        """INnet's inverse CRF ``[B, 1, 1024]`` estimated once on a (downsampled) full image."""
        padded, _ = pad_to_multiple(ldr, DuHDRNet.stride)
        return self.net.linearization(self.net.dequantization(padded))

    def predict_tile(self, batch: HDRBatch, context: torch.Tensor | None = None) -> torch.Tensor:
        out = self(batch["ldr"], inverse_crf=context)
        return out["hdr"] if self.prediction == "refined" else out["hallucinated"]

    # ------------------------------------------------------------------ evaluation
    def cycle_l2(self, ldr: torch.Tensor, hdr: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 25 on the whole chain, ``L2(Q(N(C(H_OO))), x)``: the LDR-only validation score
        (``hdr``: the chain's output for ``ldr`` when already computed)."""
        hdr = self(ldr)["hdr"] if hdr is None else hdr
        return unpaired_oonet_loss(self.net.camera(hdr)["ldr"], ldr)

    def _eval_step(self, batch: HDRBatch, batch_idx: int, stage: str) -> dict[str, torch.Tensor]:
        """HDR metrics when the batch has ``hdr``; otherwise only ``<stage>/cycle_l2`` (LDR-only data)."""
        if "hdr" in batch:
            return super()._eval_step(batch, batch_idx, stage)
        ldr = batch["ldr"]
        out = self(ldr)
        self.log(f"{stage}/cycle_l2", self.cycle_l2(ldr, out["hdr"]), batch_size=ldr.shape[0], sync_dist=True)
        pred = out["hdr"] if self.prediction == "refined" else out["hallucinated"]
        return {"pred": pred.detach()}

    def _eval_epoch_end(self, stage: str) -> None:
        collection = self._metrics.get(stage)
        if collection is None or not any(m.update_count > 0 for m in collection.values()):
            return  # LDR-only evaluation: nothing to compute
        super()._eval_epoch_end(stage)
