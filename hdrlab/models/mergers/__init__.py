"""Stack mergers: ``ExposureStack -> [B, 3, H, W]`` (see :mod:`hdrlab.models.mergers.base`).

* :class:`DebevecMerger`: Debevec & Malik 1997 radiance merge (recovered or known CRF), linear output.
* :class:`MertensMerger`: Mertens et al. 2009 exposure fusion, display output.
* :class:`CFNetMerger`: CF-Net (Deng et al. 2021) learned fusion of the extreme pair, display output.
* :class:`KimSynthesisMerger`: Kim et al. 2021 differentiable HDR synthesis layer, linear output.
* :class:`KalantariMerger` (Kalantari & Ramamoorthi 2017, Direct / WE / WIE), :class:`WuMerger` (Wu et
  al. 2018), :class:`AHDRNetMerger` (Yan et al. 2019): learned three-exposure mergers
  (:class:`TripletMerger`), linear output.
"""

from hdrlab.models.mergers.ahdrnet import AHDRNetMerger
from hdrlab.models.mergers.base import StackArity, StackMerger, stack_from_times
from hdrlab.models.mergers.cfnet import CFNet, CFNetMerger
from hdrlab.models.mergers.debevec import (
    DebevecMerger,
    debevec_weight,
    debevec_weight_table,
    grid_sample_points,
    log_domain_merge,
    merge_debevec,
    recover_response_debevec,
)
from hdrlab.models.mergers.kalantari import KalantariMerger, KalantariNet
from hdrlab.models.mergers.kim_synthesis import KimSynthesisMerger
from hdrlab.models.mergers.mertens import (
    MertensMerger,
    collapse_laplacian_pyramid,
    fuse_mertens,
    gaussian_pyramid,
    laplacian_pyramid,
    mertens_weights,
    pyr_down,
    pyr_up,
    pyramid_levels,
)
from hdrlab.models.mergers.triplet import TripletMerger, gamma_inputs, nearest_ev
from hdrlab.models.mergers.wu import WuMerger, WuNet

__all__ = [
    "AHDRNetMerger",
    "KalantariMerger",
    "KalantariNet",
    "KimSynthesisMerger",
    "TripletMerger",
    "WuMerger",
    "WuNet",
    "gamma_inputs",
    "nearest_ev",
    "CFNet",
    "CFNetMerger",
    "DebevecMerger",
    "MertensMerger",
    "StackArity",
    "StackMerger",
    "collapse_laplacian_pyramid",
    "debevec_weight",
    "debevec_weight_table",
    "fuse_mertens",
    "gaussian_pyramid",
    "grid_sample_points",
    "laplacian_pyramid",
    "log_domain_merge",
    "merge_debevec",
    "mertens_weights",
    "pyr_down",
    "pyr_up",
    "pyramid_levels",
    "recover_response_debevec",
    "stack_from_times",
]
