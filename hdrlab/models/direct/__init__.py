"""Direct single-image LDR -> HDR networks: HDRCNN (Eilertsen et al. 2017), SingleHDR (Liu et al. 2020),
ExpandNet (Marnerides et al. 2018), DuHDR (She et al.)."""

from hdrlab.models.direct.duhdr import RFB, CRFNet, DifferentialNet, DuHDRNet, OONet
from hdrlab.models.direct.expandnet import ExpandNet, expandnet_inference, map_range
from hdrlab.models.direct.hdrcnn import HDRCNN, hdrcnn_blend
from hdrlab.models.direct.singlehdr import (
    DequantizationNet,
    HallucinationNet,
    LinearizationNet,
    RefinementNet,
    SingleHDRNet,
)

__all__ = [
    "CRFNet",
    "DequantizationNet",
    "DifferentialNet",
    "DuHDRNet",
    "ExpandNet",
    "HDRCNN",
    "HallucinationNet",
    "LinearizationNet",
    "OONet",
    "RFB",
    "RefinementNet",
    "SingleHDRNet",
    "expandnet_inference",
    "hdrcnn_blend",
    "map_range",
]
