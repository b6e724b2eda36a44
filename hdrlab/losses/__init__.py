"""Losses: reconstruction in linear/log/mu-law/PU21 domains (masked variants), TV, SSIM, MEF-SSIM, VGG perceptual."""

from hdrlab.losses.domains import (
    DOMAINS,
    MU_KALANTARI,
    MU_KIM,
    MU_SINGLEHDR,
    linear_domain,
    log_domain,
    mu_law_domain,
    pu21_domain,
    to_domain,
)
from hdrlab.losses.mef_ssim import mef_ssim, mef_ssim_map
from hdrlab.losses.perceptual import VGGPerceptualLoss, vgg_relu_names
from hdrlab.losses.reconstruction import HDRReconstructionLoss, masked_mean, reconstruction_loss
from hdrlab.losses.structural import MSSSIMLoss, SSIMLoss, bounded_domain
from hdrlab.losses.total_variation import TotalVariationLoss

__all__ = [
    "DOMAINS",
    "MU_KALANTARI",
    "MU_KIM",
    "MU_SINGLEHDR",
    "HDRReconstructionLoss",
    "MSSSIMLoss",
    "SSIMLoss",
    "TotalVariationLoss",
    "VGGPerceptualLoss",
    "bounded_domain",
    "linear_domain",
    "log_domain",
    "masked_mean",
    "mef_ssim",
    "mef_ssim_map",
    "mu_law_domain",
    "pu21_domain",
    "reconstruction_loss",
    "to_domain",
    "vgg_relu_names",
]
