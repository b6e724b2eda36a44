"""Stack mergers: ``ExposureStack -> [B, 3, H, W]`` (see :mod:`hdrlab.models.mergers.base`).

* :class:`DebevecMerger`: Debevec & Malik 1997 radiance merge (recovered or known CRF), linear output.
* :class:`MertensMerger`: Mertens et al. 2009 exposure fusion, display output.
* :class:`CFNetMerger`: CF-Net (Deng et al. 2021) learned fusion of the extreme pair, display output.
"""

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

__all__ = [
    "KimSynthesisMerger",
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
