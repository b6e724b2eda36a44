"""Training objectives of DuHDR (She et al., "Single-image HDR reconstruction by dual learning the
camera imaging process"), per stage, from the paper's equations and the official TF scripts
(DoomsdayLeaf/DualHDR: ``train_dequantization_net.py``, ``Joint_Deq_Lin/train_joint_deq_lin.py``,
``Dual_Hal/train_dual_hal_synth.py``, ``Dual_Ref/train_dual_refinement.py``).

Notation (images ``[B, 3, H, W]`` float32): ``x`` quantised LDR input; ``I_n`` = ``ldr_float``
(display, before quantisation); ``I_clip`` = ``hdr_clipped`` (linear in [0, 1]); ``H`` linear HDR;
``D`` Dnet, ``I`` INnet, ``N`` Nnet, ``It`` ITnet, ``O`` OOnet, ``Q`` quantisation dual, ``C``
clipping dual; ``T(v) = log(1 + 10 v)/log 11``; ``L2`` = mean squared error; ``m_b`` the per-image
mask of :func:`hdrlab.losses.singlehdr.image_loss_mask`; ``lg(v) = log(v + 1/255)``.

Paired objectives (Algorithm 1)::

    Dnet   (Eq. 4-5)   mean_b m_b L2(D(x), I_n) + lambda_dn_dual L2(Q(D(x)), x)
    INnet/Nnet (Eq. 11-13)
                       L2(I(I_n), I_clip) + lambda_n L2(N(I_clip), I_n) + lambda_dnm_dual L2(N(I(I_n)), I_n)
    ITnet  (Eq. 17; synth script)
                       mean_b m_b [|T(Y) - T(H)| + 0.001 P + 0.1 TV] + lambda_itn_dual L2(lg(C(Y)), lg(I_clip))
    OOnet  (code; Eq. 24 is an L2)
                       mean |T(n(O)) - T(n(H))| + lambda_oo_dual L2(Q_learned(N(C(O))), x)

Unpaired objectives (Algorithm 2, LDR ``x`` only; each term trains only its own networks)::

    Eq. 6   L2(Q(D(x)), x)                       -> Dnet
    Eq. 14  L2(N(I(D(x))), D(x))                 -> INnet, Nnet
    Eq. 20  L2(C(It(I(D(x)))), I(D(x)))          -> ITnet (iterated)
    Eq. 25  L2(Q(N(C(O(...)))), x)               -> OOnet

lambda values (paper / official code, the default of each named below):

* ``lambda_dn_dual`` = 10 (paper Fig. 6a; the official scripts compute the term but never minimise it).
* ``lambda_n`` = 1: Nnet's individual loss Eq. 11 (not in the official individual INnet script).
* ``lambda_dnm_dual`` = 0.01 (paper Fig. 6b; official joint script uses 10 on ``L2(N(I(D x)), D x)``).
* ``lambda_dnm_dn`` = 0.005 (paper) weighs the Dnet loss inside Eq. 13; it is used only when Dnet
  trains together with INnet (the ``joint`` paired stage does not use it; see the method).
* ``lambda_prec`` = 0.001, TV 0.1 (code = paper), ``lambda_itn_dual`` = 10 (code = paper).
* ``lambda_oo_dual`` = 0 (official; the paper gives none).
"""

from __future__ import annotations

import torch

from hdrlab.losses.singlehdr import (
    SingleHDRPerceptualLoss,
    dequantization_loss,
    hallucination_loss,
    joint_loss,
)

__all__ = [
    "LOG_EPS",
    "l2",
    "log_l2",
    "dnet_loss",
    "linearization_dual_loss",
    "itnet_loss",
    "oonet_loss",
    "unpaired_dnet_loss",
    "unpaired_linearization_loss",
    "unpaired_itnet_loss",
    "unpaired_oonet_loss",
]

LOG_EPS = 1.0 / 255.0
"""Offset of the log domain of ITnet's dual term (official ``log(x + 1/255)``)."""


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (official ``get_l2_loss``); scalar."""
    return ((a - b) ** 2).mean()


def log_l2(a: torch.Tensor, b: torch.Tensor, *, eps: float = LOG_EPS) -> torch.Tensor:
    """``L2(log(a + eps), log(b + eps))`` with both clamped at 0 first; scalar."""
    return l2(torch.log(a.clamp_min(0.0) + eps), torch.log(b.clamp_min(0.0) + eps))


def dnet_loss(
    dequantized: torch.Tensor,
    target: torch.Tensor,
    requantized: torch.Tensor | None,
    ldr: torch.Tensor,
    *,
    dual_weight: float = 10.0,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Dnet, paper Eq. 5 (Eq. 4 with ``dual_weight=0``): ``mean_b m_b L2(D(x), I_n) + l L2(Q(D(x)), x)``.

    Args:
        dequantized: ``D(x)`` display in [0, 1].
        target: ``I_n`` = ``ldr_float``.
        requantized: ``Q(D(x))`` (None drops the dual term).
        ldr: ``x``.
        dual_weight: ``lambda_dn_dual`` (paper 10; unused by the official code).
        mask: ``[B]`` per-image mask or None.

    Returns:
        ``{"l2", "dual"?, "total"}`` (weighted).
    """
    terms = {"l2": dequantization_loss(dequantized, target, mask=mask)}
    if requantized is not None and dual_weight > 0:
        terms["dual"] = dual_weight * l2(requantized, ldr)
    terms["total"] = sum(terms.values())  # type: ignore[assignment]
    return terms


def linearization_dual_loss(
    linearized: torch.Tensor,
    target_linear: torch.Tensor,
    forward_of_target: torch.Tensor | None,
    cycled: torch.Tensor | None,
    target_display: torch.Tensor,
    *,
    crf_weight: float = 1.0,
    dual_weight: float = 0.01,
) -> dict[str, torch.Tensor]:
    """INnet + Nnet, paper Eqs. 11-13: ``L2(I(I_n), I_clip) + l_n L2(N(I_clip), I_n) + l_dual L2(N(I(I_n)), I_n)``.

    Args:
        linearized: ``I(I_n)`` linear.
        target_linear: ``I_clip`` = ``hdr_clipped``.
        forward_of_target: ``N(I_clip)`` display (None drops Eq. 11).
        cycled: ``N(I(I_n))`` display (None drops the dual term of Eq. 13).
        target_display: ``I_n``.
        crf_weight: weight of Eq. 11 (Nnet's individual loss; 1).
        dual_weight: ``lambda_dnm_dual`` (paper 0.01; official joint script 10).

    Returns:
        ``{"inet", "nnet"?, "dual"?, "total"}`` (weighted).
    """
    terms = {"inet": l2(linearized, target_linear)}
    if forward_of_target is not None and crf_weight > 0:
        terms["nnet"] = crf_weight * l2(forward_of_target, target_display)
    if cycled is not None and dual_weight > 0:
        terms["dual"] = dual_weight * l2(cycled, target_display)
    terms["total"] = sum(terms.values())  # type: ignore[assignment]
    return terms


def itnet_loss(
    hallucinated: torch.Tensor,
    target: torch.Tensor,
    reclipped: torch.Tensor | None,
    clipped_target: torch.Tensor,
    *,
    perceptual: SingleHDRPerceptualLoss | None = None,
    perceptual_weight: float = 1e-3,
    tv_weight: float = 0.1,
    dual_weight: float = 10.0,
    mu: float = 10.0,
    mask: torch.Tensor | None = None,
    domain: str = "mu_law",
) -> dict[str, torch.Tensor]:
    """ITnet, official ``train_dual_hal_synth.py`` (paper Eq. 17):
    ``mean_b m_b [L1 + 0.001 P + 0.1 TV](T(Y), T(H)) + l_itn_dual L2(lg(C(Y)), lg(I_clip))``.

    The primal part is :func:`hdrlab.losses.singlehdr.hallucination_loss`; the dual term replaces the
    paper's "normal area loss" by the code's log-domain clip consistency.

    Args:
        hallucinated: ``Y`` (last ITnet pass) linear >= 0.
        target: ``H``.
        reclipped: ``C(Y)`` (None drops the dual term).
        clipped_target: ITnet's input ``I_clip``.
        perceptual, perceptual_weight, tv_weight, mu, mask, domain: as ``hallucination_loss``.
        dual_weight: ``lambda_itn_dual`` (code and paper 10).

    Returns:
        ``{"l1", "perceptual"?, "tv", "dual"?, "total"}`` (weighted).
    """
    terms = hallucination_loss(
        hallucinated, target, perceptual=perceptual, perceptual_weight=perceptual_weight, tv_weight=tv_weight,
        mu=mu, mask=mask, domain=domain,
    )  # fmt: skip
    if reclipped is not None and dual_weight > 0:
        terms["dual"] = dual_weight * log_l2(reclipped, clipped_target)
        terms["total"] = terms["total"] + terms["dual"]
    return terms


def oonet_loss(
    hdr: torch.Tensor,
    target: torch.Tensor,
    *,
    dual_ldr: torch.Tensor | None = None,
    ldr: torch.Tensor | None = None,
    dual_weight: float = 0.0,
    mu: float = 10.0,
    domain: str = "mu_law",
) -> dict[str, torch.Tensor]:
    """OOnet / whole-network fine-tuning (official ``train_dual_refinement.py``):
    ``mean |T(n(O)) - T(n(H))| + l_oo_dual L2(dual_ldr, x)``.

    The paper's Eq. 24 writes an L2 on ``O - H``; the code's mean-0.5-normalised ``T``-domain L1 is kept.

    Returns:
        ``{"l1", "dual"?, "total"}`` (weighted).
    """
    terms = {"l1": joint_loss(hdr, target, mu=mu, domain=domain)}
    if dual_ldr is not None and ldr is not None and dual_weight > 0:
        terms["dual"] = dual_weight * l2(dual_ldr, ldr)
    terms["total"] = sum(terms.values())  # type: ignore[assignment]
    return terms


def unpaired_dnet_loss(requantized: torch.Tensor, ldr: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``L2(Q(D(x)), x)``; scalar."""
    return l2(requantized, ldr)


def unpaired_linearization_loss(cycled: torch.Tensor, dequantized: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``L2(N(I(D x)), D x)``; scalar."""
    return l2(cycled, dequantized)


def unpaired_itnet_loss(reclipped: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """Eq. 20: ``L2(C(It(I_clip)), I_clip)``; scalar."""
    return l2(reclipped, linear)


def unpaired_oonet_loss(reldr: torch.Tensor, ldr: torch.Tensor) -> torch.Tensor:
    """Eq. 25: ``L2(Q(N(C(O))), x)``; scalar."""
    return l2(reldr, ldr)

