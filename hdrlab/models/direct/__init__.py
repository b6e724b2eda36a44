"""Direct single-image LDR -> HDR networks: SingleHDR (Liu et al. 2020), ExpandNet (Marnerides et al. 2018)."""

from hdrlab.models.direct.expandnet import ExpandNet, expandnet_inference, map_range
from hdrlab.models.direct.singlehdr import (
    DequantizationNet,
    HallucinationNet,
    LinearizationNet,
    RefinementNet,
    SingleHDRNet,
)

__all__ = [
    "DequantizationNet",
    "ExpandNet",
    "HallucinationNet",
    "LinearizationNet",
    "RefinementNet",
    "SingleHDRNet",
    "expandnet_inference",
    "map_range",
]
