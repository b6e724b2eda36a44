"""The shared frame of the learned three-exposure HDR mergers (Kalantari & Ramamoorthi 2017, Wu et al.
2018, AHDRNet / Yan et al. 2019): :class:`TripletMerger`.

All three take exactly three LDR exposures (low, middle = reference, high) and share the
conventions of the Kalantari data set and of the three official codes (Kalantari's ``ReadExpoTimes``,
``LDRtoHDR`` and ``RangeCompressor``; the same steps in AHDRNet's and Wu's data and loss code):

* exposure times ``t_i = 2 ** (ev_i - ev_min)``: the darkest image has ``t = 1``;
* the gamma model of the camera: ``H_i = clip(I_i, 0, 1) ** 2.2 / t_i`` (:func:`gamma_inputs`);
* the network's output ``N`` is radiance relative to the *darkest* exposure, in ``[0, 1]``
  (sigmoid / tanh output; the darkest exposure clips at 1);
* the loss compares ``T(N)`` with ``T(H_gt)``, ``T(x) = ln(1 + mu x) / ln(1 + mu)``, ``mu = 5000``
  (``loss_domain="mu_law"``, official; the ablation domains ``linear``, ``log``, ``pu21`` of
  :func:`hdrlab.losses.domains.to_domain` replace ``T`` in the same distance).

Project convention (:mod:`hdrlab.models.mergers.base`): :meth:`TripletMerger.merge` returns radiance
relative to the stack's *reference* exposure, ``N * 2 ** (ev_ref - ev_min)`` (the reference clips
near 1.0), and :meth:`TripletMerger.objective` maps the ground truth the other way:
``H_gt = clip(hdr * 2 ** (ev_min - 0), 0, 1)`` for ``batch["hdr"]`` relative to the ev-0 exposure
(the batch's input; the stack's ev are relative to it). The clip at 1 is where the darkest
exposure saturates: the network's output range ends there (procedural scenes can exceed it; the
Kalantari ground truth does not).

Selecting three exposures from a generated stack (``select_rule = "nearest"``): for each wanted ev of
``select_ev`` (default ``(-2, 0, 2)``, the Kalantari training spacing), the generator exposure
nearest to it (:func:`nearest_ev`); the three must be distinct.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from hdrlab.errors import ConfigError
from hdrlab.losses.domains import DOMAINS, MU_KALANTARI
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

__all__ = ["KALANTARI_GAMMA", "TripletMerger", "center_crop", "gamma_inputs", "nearest_ev"]

#: the gamma of the camera model shared by the three methods' code
KALANTARI_GAMMA = 2.2


def gamma_inputs(stack: ExposureStack, *, gamma: float = KALANTARI_GAMMA) -> tuple[torch.Tensor, torch.Tensor]:
    """The LDR and HDR-domain inputs of a three-exposure merger.

    Args:
        stack: ``ExposureStack(images[B, N, 3, H, W] in [0, 1], ev[B, N])``, ascending ev.
        gamma: camera gamma (official 2.2).

    Returns:
        ``(ldr [B, N, 3, H, W] = clip(images, 0, 1), hdr [B, N, 3, H, W] = ldr ** gamma / t)`` with
        ``t = 2 ** (ev - ev_min)`` (darkest exposure ``t = 1``).
    """
    ldr = stack.images.clamp(0.0, 1.0)
    t = torch.exp2(stack.ev - stack.ev[:, :1]).to(ldr.dtype)
    hdr = ldr**gamma / t.view(*t.shape, 1, 1, 1)
    return ldr, hdr


def nearest_ev(available: Sequence[float], wanted: Sequence[float]) -> tuple[float, ...]:
    """For each ev of ``wanted``, the member of ``available`` nearest to it (ties: the one nearer 0).

    Args:
        available: ev values a generator can produce.
        wanted: the ev values a merger prefers (e.g. ``(-2, 0, 2)``).

    Returns:
        Ascending tuple, one value per ``wanted`` entry.

    Raises:
        ConfigError: two wanted values map to the same available exposure.
    """
    have = sorted(float(v) for v in available)
    chosen = [min(have, key=lambda v: (abs(v - float(w)), abs(v))) for w in sorted(wanted)]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"the exposures nearest to {sorted(float(w) for w in wanted)} among the generator's ev {have} are "
            f"{chosen}, not distinct; give the generator more exposures or the merger another select_ev"
        )
    return tuple(chosen)


class TripletMerger(StackMerger):
    """Base of the learned mergers of three exposures with a middle reference (module docstring).

    Subclasses build their network in ``__init__`` and implement :meth:`forward_net` (the network on
    the official inputs) and :meth:`loss` (the paper's objective on the network-domain output).

    Args:
        select_ev: the exposures a composite takes from a generated stack (nearest available ones).
        gamma: camera gamma of the LDR -> HDR input mapping (official 2.2).
        mu: mu of the loss's mu-law (official 5000).
        loss_domain: where the paper's distance is taken (:data:`hdrlab.losses.domains.DOMAINS`):
            ``"mu_law"`` (official), ``"linear"``, ``"log"``, ``"pu21"``.
    """

    output_domain = "linear"
    accepts: ClassVar[StackArity] = StackArity(exactly=3, reference="middle")
    select_rule = "nearest"
    has_objective = True
    pixelwise = False  # convolutional: an output pixel sees a neighbourhood

    def __init__(self, *, select_ev: Sequence[float] = (-2.0, 0.0, 2.0), gamma: float = KALANTARI_GAMMA,
                 mu: float = MU_KALANTARI, loss_domain: str = "mu_law") -> None:
        super().__init__()
        values = tuple(sorted(float(v) for v in select_ev))
        name = type(self).__name__
        if len(values) != 3 or len(set(values)) != 3 or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{name}.select_ev={list(select_ev)} must be three distinct finite ev values, e.g. [-2, 0, 2]")
        if gamma <= 0 or mu <= 0:
            raise ConfigError(f"{name}: gamma={gamma} and mu={mu} must be > 0 (official 2.2 and 5000)")
        if loss_domain not in DOMAINS:
            raise ConfigError(f"{name}.loss_domain={loss_domain!r} is unknown; use one of {list(DOMAINS)} (official mu_law)")
        self.loss_domain = loss_domain
        self.select_ev = values
        self.gamma = float(gamma)
        self.mu = float(mu)

    @property
    def preferred_ev(self) -> tuple[float, ...]:
        """The ev values a composite selects from a generated stack (nearest available)."""
        return self.select_ev

    @property
    def term_domain(self) -> str:
        """Short name of the loss domain in logged term names (``mu`` for the official mu-law)."""
        return "mu" if self.loss_domain == "mu_law" else self.loss_domain

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def forward_net(self, ldr: torch.Tensor, hdr: torch.Tensor) -> torch.Tensor:
        """The network on ``ldr, hdr [B, 3, 3, H, W]`` (:func:`gamma_inputs`): radiance relative to
        the darkest exposure ``[B, 3, H', W']`` in ``[0, 1]``."""

    @abc.abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The paper's objective between network-domain radiance ``pred`` and ``target`` ``[B, 3, H', W']``."""

    # ------------------------------------------------------------------ shared
    def merge(self, stack: ExposureStack) -> torch.Tensor:
        """``[B, 3, H', W']`` radiance relative to the reference: ``forward_net * 2 ** (ev_ref - ev_min)``."""
        out = self.forward_net(*gamma_inputs(stack, gamma=self.gamma))
        scale = torch.exp2(stack.ev[:, stack.reference] - stack.ev[:, 0]).to(out.dtype)
        return out * scale.view(-1, 1, 1, 1)

    def network_target(self, stack: ExposureStack, hdr: torch.Tensor) -> torch.Tensor:
        """Ground truth ``hdr [B, 3, H, W]`` (relative to the ev-0 exposure) in the network's domain:
        ``clip(hdr * 2 ** ev_min, 0, 1)``."""
        scale = torch.exp2(stack.ev[:, 0]).to(hdr.dtype)
        return (hdr * scale.view(-1, 1, 1, 1)).clamp(0.0, 1.0)

    def objective_inputs(self, stack: ExposureStack, hdr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ldr, hdr_in, target)`` of one training step: :func:`gamma_inputs` of ``stack`` and
        :meth:`network_target` of the ground truth ``hdr``. Mergers that prepare the stack first (e.g.
        an alignment that also edits the label) override it."""
        return (*gamma_inputs(stack, gamma=self.gamma), self.network_target(stack, hdr))

    def objective(self, stack: ExposureStack, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`loss` between the network output on ``stack`` and ``batch["hdr"]`` in the network domain
        (:meth:`objective_inputs`; centre-cropped to the output when the network shrinks it)."""
        self.check_stack(stack)
        if "hdr" not in batch:
            raise ConfigError(f"{type(self).__name__}'s objective needs ground truth batch['hdr'] [B, 3, H, W]; "
                              "train it on data with HDR ground truth")
        ldr, hdr_in, target = self.objective_inputs(stack, batch["hdr"])
        pred = self.forward_net(ldr, hdr_in)
        return self.loss(pred, center_crop(target, pred.shape[-2:]))


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre ``size = (h, w)`` window of ``x [..., H, W]`` (``x`` itself when it already has that size)."""
    h, w = int(size[0]), int(size[1])
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    if top < 0 or left < 0:
        raise ConfigError(f"center_crop: {tuple(x.shape[-2:])} is smaller than the crop {(h, w)}")
    return x[..., top:top + h, left:left + w]
