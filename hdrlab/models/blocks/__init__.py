"""hdrlab.models.blocks."""

from hdrlab.models.blocks.conv import (
    check_spatial_multiple,
    conv2d_same,
    init_tf_glorot_,
    init_tf_truncated_normal_,
    pad_same,
    same_padding_amounts,
    scale_channels,
)
from hdrlab.models.blocks.features import sobel_edges, soft_histogram_maps
from hdrlab.models.blocks.resize import upsample2x_bilinear_tf_legacy
from hdrlab.models.blocks.unet import AvgPoolBilinearUNet

__all__ = [
    "AvgPoolBilinearUNet",
    "check_spatial_multiple",
    "conv2d_same",
    "init_tf_glorot_",
    "init_tf_truncated_normal_",
    "pad_same",
    "same_padding_amounts",
    "scale_channels",
    "sobel_edges",
    "soft_histogram_maps",
    "upsample2x_bilinear_tf_legacy",
]
