"""hdrlab.models.generators: single LDR image -> multi-exposure LDR stack (plain ``nn.Module``s)."""

from hdrlab.models.generators.base import StackGenerator, check_ldr_batch, normalize_ev_set
from hdrlab.models.generators.le2023_multiexposure import (
    LE2023_DEFAULT_EV,
    Le2023Generator,
    Le2023MultiExposureNet,
    Le2023UNet,
    well_exposedness_mask,
)

__all__ = [
    "LE2023_DEFAULT_EV",
    "Le2023Generator",
    "Le2023MultiExposureNet",
    "Le2023UNet",
    "StackGenerator",
    "check_ldr_batch",
    "normalize_ev_set",
    "well_exposedness_mask",
]
