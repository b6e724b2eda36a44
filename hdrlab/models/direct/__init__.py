"""hdrlab.models.direct."""

from hdrlab.models.direct.singlehdr import (
    DequantizationNet,
    HallucinationNet,
    LinearizationNet,
    RefinementNet,
    SingleHDRNet,
)

__all__ = ["DequantizationNet", "HallucinationNet", "LinearizationNet", "RefinementNet", "SingleHDRNet"]
