"""hdrlab.models.generators: single LDR image -> multi-exposure LDR stack (plain ``nn.Module``s)."""

from hdrlab.models.generators.base import StackGenerator, check_ldr_batch, normalize_ev_set
from hdrlab.models.generators.cevr import CEVR_DEFAULT_EV, CEVRGenerator, CEVRNet
from hdrlab.models.generators.deep_recursive import (
    DEEP_RECURSIVE_DEFAULT_EV,
    DeepRecursiveGenerator,
    DeepRecursiveUNet,
    MirroredPReLU,
    PatchDiscriminator,
)
from hdrlab.models.generators.drtmo import DrTMOGenerator, DrTMONet
from hdrlab.models.generators.kim2021 import Kim2021Generator, Kim2021Net
from hdrlab.models.generators.le2023_multiexposure import (
    LE2023_DEFAULT_EV,
    Le2023Generator,
    Le2023MultiExposureNet,
    Le2023UNet,
    well_exposedness_mask,
)

__all__ = [
    "CEVR_DEFAULT_EV",
    "DEEP_RECURSIVE_DEFAULT_EV",
    "CEVRGenerator",
    "CEVRNet",
    "DeepRecursiveGenerator",
    "DeepRecursiveUNet",
    "DrTMOGenerator",
    "DrTMONet",
    "Kim2021Generator",
    "Kim2021Net",
    "MirroredPReLU",
    "PatchDiscriminator",
    "LE2023_DEFAULT_EV",
    "Le2023Generator",
    "Le2023MultiExposureNet",
    "Le2023UNet",
    "StackGenerator",
    "check_ldr_batch",
    "normalize_ev_set",
    "well_exposedness_mask",
]
