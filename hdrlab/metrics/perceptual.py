"""Learned / visual-model HDR metrics: LPIPS on the display mapping and ColorVideoVDP.

- ``lpips`` (Zhang et al. 2018, AlexNet trunk + the linear heads v0.1 shipped in the ``lpips``
  package): computed on :func:`hdrlab.tonemap.display` of the aligned images, scaled to
  ``[-1, 1]``. Lower is better. Region ``"all"`` is the standard spatially averaged score; other
  regions average LPIPS's spatial map (``spatial=True``, bilinearly upsampled to the image) over the
  region. The ImageNet AlexNet trunk must be in the torch hub cache
  (``hdrlab.weights.require_weights("alexnet-owt-7be5be79.pth")``); nothing is downloaded.
- ``cvvdp`` (Mantiuk et al. 2024, ColorVideoVDP, package ``cvvdp`` 0.5): JOD (10 = no visible
  difference, higher is better) of ``to_nits`` images on the ``standard_hdr_linear`` display
  (BT.709 linear, 1500 cd/m^2 peak, 10 lux): values above 1500 cd/m^2 are clipped by the display
  model, so highlight errors above it are invisible. No heatmap is computed (cvvdp 0.5.7 heatmaps
  fail with inputs that require grad). Regions use the reference-fill composite.
"""

from __future__ import annotations

import functools
import warnings

import torch

from hdrlab.camera import to_nits
from hdrlab.errors import ConfigError
from hdrlab.metrics.base import HDRImageMetric, reference_fill
from hdrlab.tonemap import display

__all__ = ["CVVDP", "LPIPS_TRUNK_FILES", "LPIPSMetric"]

#: torchvision trunk files needed by each LPIPS network (found in ``torch.hub.get_dir()/checkpoints``).
LPIPS_TRUNK_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


class LPIPSMetric(HDRImageMetric):
    """LPIPS distance on the project's display mapping (``lpips``); lower is better.

    Args:
        net: LPIPS trunk ``"alex"`` (default), ``"vgg"`` or ``"squeeze"``.
        pretrained: True (the only valid metric) requires the ImageNet trunk file in the torch hub
            cache and raises :class:`hdrlab.errors.WeightsMissingError` naming file and folder
            otherwise. False builds a **random** trunk for tests only: the numbers are **not** a
            valid LPIPS metric (a warning says so).
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    higher_is_better = False

    def __init__(self, *, net: str = "alex", pretrained: bool = True, region: str = "all",
                 align: str = "median", white_nits: float = 200.0, **kwargs) -> None:
        super().__init__(region=region, align=align, white_nits=white_nits, **kwargs)
        if net not in LPIPS_TRUNK_FILES:
            raise ConfigError(f"unknown LPIPS net {net!r}; choose one of {sorted(LPIPS_TRUNK_FILES)}")
        if pretrained:
            from hdrlab.weights import require_weights

            require_weights(LPIPS_TRUNK_FILES[net])
        else:
            warnings.warn(
                "LPIPSMetric(pretrained=False) uses a RANDOM trunk: for tests only, NOT a valid LPIPS metric",
                UserWarning,
                stacklevel=2,
            )
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation inside lpips
            self.net = lpips.LPIPS(
                net=net, pretrained=True, pnet_rand=not pretrained, spatial=region != "all", verbose=False
            )
        self.net.eval().requires_grad_(False)
        self.pretrained = pretrained

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        p = display(pred) * 2.0 - 1.0
        t = display(target) * 2.0 - 1.0
        with torch.no_grad():
            out = self.net(p, t)
        if self.region == "all":
            return out.flatten(1).mean(1)
        m = region.to(out.dtype)
        return (out * m).flatten(1).sum(1) / m.flatten(1).sum(1)


@functools.lru_cache(maxsize=4)
def _cvvdp_model(display_name: str, device: str):
    import pycvvdp

    return pycvvdp.cvvdp(display_name=display_name, device=torch.device(device), quiet=True)


class CVVDP(HDRImageMetric):
    """ColorVideoVDP quality in JOD (``cvvdp``) of absolute-luminance images; higher is better.

    Args:
        display_name: a cvvdp display with a **linear** EOTF (default ``"standard_hdr_linear"``;
            ``"standard_hdr_linear_zoom"`` has a 10 000 cd/m^2 peak).
        region / align / white_nits: see :class:`hdrlab.metrics.base.HDRImageMetric`.
    """

    def __init__(self, *, display_name: str = "standard_hdr_linear", region: str = "all",
                 align: str = "median", white_nits: float = 200.0, **kwargs) -> None:
        super().__init__(region=region, align=align, white_nits=white_nits, **kwargs)
        if "linear" not in display_name:
            raise ConfigError(
                f"cvvdp display {display_name!r} is not a linear-EOTF display; SDR displays clamp HDR "
                "input to [0,1]. Use 'standard_hdr_linear' (or '_dark' / '_zoom')."
            )
        self.display_name = display_name

    def _per_image(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        model = _cvvdp_model(self.display_name, str(pred.device))
        test = to_nits(reference_fill(pred, target, region), white_nits=self.white_nits)
        ref = to_nits(target, white_nits=self.white_nits)
        scores = []
        with torch.no_grad():
            for i in range(test.shape[0]):
                jod, _ = model.predict(test[i : i + 1].float(), ref[i : i + 1].float(), dim_order="BCHW")
                scores.append(jod.reshape(()).to(torch.float64))
        return torch.stack(scores)
