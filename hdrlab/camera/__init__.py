"""The differentiable camera pipeline: CRFs (LUT, gamma, sRGB, parametric, EMoR, DoRF), exposure,
clipping, quantisation, sensor noise, JPEG, bracket synthesis, auto exposure and photometric units.

Conventions (``docs/architecture.md``): linear radiance ``[B, 3, H, W]`` (input clips at 1.0),
display LDR in ``[0, 1]``, ``ev = log2(t / t_input)``, LUTs of ``LUT_SIZE = 1024`` samples on
``linspace(0, 1, 1024)``.
"""

from hdrlab.camera.crf import (
    CRF,
    gamma_curve,
    inverse_gamma_curve,
    inverse_sigmoid_gamma_curve,
    inverse_srgb_curve,
    lut_grid,
    sigmoid_gamma_curve,
    srgb_curve,
)
from hdrlab.camera.dorf import DoRFCurve, load_dorf
from hdrlab.camera.emor import EMoRBasis, read_emor_sections
from hdrlab.camera.lut import (
    LUT_SIZE,
    curve_apply,
    invert_monotone_curve,
    lut_apply,
    make_monotone,
    resample_curve,
)
from hdrlab.camera.pipeline import (
    add_sensor_noise,
    auto_exposure_ev,
    clip_exposure,
    drtmo_evs,
    expose,
    jpeg_compress,
    linearize,
    quantize,
    render_ldr,
    synthesize_stack,
)
from hdrlab.camera.sampling import CRFSampler
from hdrlab.camera.units import REC709_WEIGHTS, from_nits, luminance, to_nits

__all__ = [
    "CRF",
    "CRFSampler",
    "DoRFCurve",
    "EMoRBasis",
    "LUT_SIZE",
    "REC709_WEIGHTS",
    "add_sensor_noise",
    "auto_exposure_ev",
    "clip_exposure",
    "curve_apply",
    "drtmo_evs",
    "expose",
    "from_nits",
    "gamma_curve",
    "inverse_gamma_curve",
    "inverse_sigmoid_gamma_curve",
    "inverse_srgb_curve",
    "invert_monotone_curve",
    "jpeg_compress",
    "linearize",
    "load_dorf",
    "lut_apply",
    "lut_grid",
    "luminance",
    "make_monotone",
    "quantize",
    "read_emor_sections",
    "render_ldr",
    "resample_curve",
    "sigmoid_gamma_curve",
    "srgb_curve",
    "synthesize_stack",
    "to_nits",
]
