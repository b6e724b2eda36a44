"""Reference baselines without learning: what a method must beat.

* :class:`InverseCRFBaseline` -- **no hallucination**: the input through its true inverse camera
  response, ``x = f^-1(ldr)`` (``batch["crf_inverse"]``). Clipped pixels stay at the clip level
  1.0; every well-exposed pixel is exact up to quantisation.
* :class:`LinearITMOBaseline` -- **a simple expansion operator**: the inverse CRF followed by a
  piecewise-linear boost of the near-clipped highlights, in the spirit of the classic linear
  inverse tone-mapping operators (Akyuz et al., "Do HDR displays support LDR content?",
  SIGGRAPH 2007: linear expansion of the LDR range; Meylan, Daly & Susstrunk, "The reproduction of
  specular highlights on high dynamic range displays", CIC 2006: a second, steeper linear
  segment above a highlight threshold). Form used here (radiance convention of
  ``docs/architecture.md``, input clip = 1)::

      x = f^-1(ldr)                                  (linear, <= 1)
      m = max_c ldr                                  (display value of the brightest channel)
      w = clamp((m - tau) / (1 - tau), 0, 1)         (0 below the highlight threshold tau, 1 at clipping)
      y = x * (1 + (peak - 1) * w)

  i.e. pixels with ``max_c ldr <= tau`` are unchanged (exactly the inverse CRF) and the gain rises
  linearly in display value to ``peak`` at the clip level, so a clipped pixel maps to ``peak``
  (default 4.0: 2 stops above the clip). Deviation from Akyuz (a global ``k * L`` on the whole
  image, which median-aligned metrics cannot distinguish from the inverse CRF) and from Meylan
  (their two segments are in display luminance for a display's peak); the gain is applied to all
  three channels so hue is kept.

Both are :class:`HDRMethod` s usable with ``hdrlab validate`` / ``hdrlab test``; they have no
trainable parameters, so ``fit`` raises :class:`ConfigError`.
"""

from __future__ import annotations

from typing import Any

import torch

from hdrlab.camera import lut_apply
from hdrlab.data.batch import HDRBatch
from hdrlab.errors import ConfigError
from hdrlab.methods.base import HDRMethod

__all__ = ["InverseCRFBaseline", "LinearITMOBaseline", "highlight_gain", "inverse_crf", "linear_highlight_expansion"]


def inverse_crf(ldr: torch.Tensor, crf_inverse: torch.Tensor) -> torch.Tensor:
    """Linearise an LDR with its inverse camera response LUT.

    Args:
        ldr: ``[B, 3, H, W]`` display values in ``[0, 1]``.
        crf_inverse: ``[B, C, K]`` (or ``[C, K]``) samples of ``f^-1`` on ``linspace(0, 1, K)``, ``C`` in {1, 3}.

    Returns:
        ``[B, 3, H, W]`` linear radiance in ``[0, 1]`` (input clip level = 1).
    """
    return lut_apply(ldr, crf_inverse)


def highlight_gain(ldr: torch.Tensor, *, threshold: float = 0.9, peak: float = 4.0) -> torch.Tensor:
    """Per-pixel gain ``1 + (peak - 1) * clamp((max_c ldr - tau) / (1 - tau), 0, 1)``.

    Args:
        ldr: ``[B, 3, H, W]`` display values in ``[0, 1]``.
        threshold: tau, the display value where the boost starts, in ``[0, 1)``.
        peak: gain at the clip level (``>= 1``).

    Returns:
        ``[B, 1, H, W]`` gain in ``[1, peak]``.
    """
    ramp = ((ldr.amax(dim=1, keepdim=True) - threshold) / (1.0 - threshold)).clamp(0.0, 1.0)
    return 1.0 + (peak - 1.0) * ramp


def linear_highlight_expansion(
    ldr: torch.Tensor, crf_inverse: torch.Tensor, *, threshold: float = 0.9, peak: float = 4.0
) -> torch.Tensor:
    """The linear iTMO of :class:`LinearITMOBaseline`: ``f^-1(ldr) * highlight_gain(ldr)``.

    Returns:
        ``[B, 3, H, W]`` linear radiance in ``[0, peak]``.
    """
    return inverse_crf(ldr, crf_inverse) * highlight_gain(ldr, threshold=threshold, peak=peak)


class _FixedBaseline(HDRMethod):
    """A method without parameters: evaluation only."""

    output_domain = "linear"

    def compute_loss(self, batch: HDRBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise ConfigError(
            f"{type(self).__name__} has no trainable parameters, so there is nothing to fit; "
            "run 'hdrlab validate' or 'hdrlab test' with it instead of 'hdrlab fit'"
        )

    def configure_optimizers(self) -> Any:
        raise ConfigError(
            f"{type(self).__name__} has no trainable parameters, so there is nothing to fit; "
            "run 'hdrlab validate' or 'hdrlab test' with it instead of 'hdrlab fit'"
        )


class InverseCRFBaseline(_FixedBaseline):
    """No hallucination: ``pred = f^-1(ldr)`` with the batch's true inverse CRF (linear, ``<= 1``).

    Args:
        **kwargs: :class:`HDRMethod` options (metrics, align, ...).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """``[B, 3, H, W]`` linear radiance ``f^-1(batch["ldr"])``."""
        return inverse_crf(batch["ldr"], batch["crf_inverse"])


class LinearITMOBaseline(_FixedBaseline):
    """Inverse CRF + linear highlight boost (module docstring, :func:`linear_highlight_expansion`).

    Args:
        threshold: display value tau above which highlights are boosted (default 0.9).
        peak: radiance gain at the clip level (default 4.0 = 2 stops).
        **kwargs: :class:`HDRMethod` options.
    """

    def __init__(self, *, threshold: float = 0.9, peak: float = 4.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"LinearITMOBaseline.threshold={threshold} must be in [0, 1), e.g. 0.9")
        if peak < 1.0:
            raise ConfigError(f"LinearITMOBaseline.peak={peak} must be >= 1 (1 = no boost), e.g. 4.0")
        self.threshold = float(threshold)
        self.peak = float(peak)

    def predict_image(self, batch: HDRBatch) -> torch.Tensor:
        """``[B, 3, H, W]`` linear radiance in ``[0, peak]``."""
        return linear_highlight_expansion(batch["ldr"], batch["crf_inverse"], threshold=self.threshold, peak=self.peak)
