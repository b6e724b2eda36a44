"""Random camera responses for training-data synthesis, with disjoint train / val / test streams.

Families (every sampled curve is non-decreasing with ``f(0) = 0``, ``f(1) = 1``):

* ``"gamma"``: ``f(x) = x^(1/g)``, ``g ~ U(1.6, 2.8)`` (``gamma_range``).
* ``"parametric"``: the sigmoid-gamma curve ``f(x) = (1 + a) u / (u + a)``, ``u = x^(1/g)``
  (:func:`hdrlab.camera.crf.sigmoid_gamma_curve`; HDRCNN's virtual-camera form, Eilertsen et al.
  2017), ``g ~ U(1.6, 2.8)``, shoulder ``a`` log-uniform in ``[0.5, 20]`` (``shoulder_range``):
  ``a = 20`` is close to a pure gamma, ``a = 0.5`` compresses highlights strongly.
* ``"emor"``: EMoR forward model ``f0 + sum_k w_k h_k`` (Grossberg & Nayar 2003) with
  ``w_k ~ N(0, sigma_k)``, ``sigma = (1.5, 0.8, 0.4, 0.25, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03)``
  (``emor_sigmas``). Choice: the first two cover the EMoR projections of the gamma curves
  1.6..2.8 (``w1`` in [-1.7, 2.5], ``w2`` in [-1.75, -0.6], measured on the CAVE files); higher
  components decay so that the spread stays camera-like. Drawn weights whose raw curve has a
  slope below ``emor_min_slope = 0.05`` anywhere (display units per linear unit; ``f0``'s smallest
  slope is 0.32) are rejected (up to ``emor_tries`` candidates, i.e. the Gaussian restricted to
  monotone, invertible curves; about half of the draws pass); the SingleHDR monotone fix
  (:func:`hdrlab.camera.make_monotone`) is then applied, which only renormalises an accepted curve
  (and repairs the first candidate if none passed).
* ``"mixed"``: one of the above, uniformly (``"emor"`` only when an :class:`EMoRBasis` is given).

Disjoint splits: a sample is a pure function of an integer *CRF index*. ``sample(generator)``
draws ``j`` from the caller's generator and uses index ``3 * j + s`` with ``s = 0, 1, 2`` for
train / val / test, so the three splits use disjoint index sets and therefore disjoint seed
streams (the index seeds a private ``torch.Generator`` together with ``seed``). ``pool_size``
limits ``j`` to ``0..pool_size-1`` (a finite CRF set per split, like SingleHDR's fixed DoRF test set).

Deviation (named): SingleHDR's 191/10 DoRF train/test split is not reproducible (no DoRF here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hdrlab.camera.crf import CRF, lut_grid, sigmoid_gamma_curve
from hdrlab.camera.emor import EMoRBasis
from hdrlab.camera.lut import make_monotone
from hdrlab.errors import ConfigError

FAMILIES = ("mixed", "gamma", "parametric", "emor")
SPLITS = ("train", "val", "test")
DEFAULT_EMOR_SIGMAS = (1.5, 0.8, 0.4, 0.25, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03)
_INDEX_LIMIT = 2**40


def _uniform(gen: torch.Generator, low: float, high: float, n: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


class CRFSampler:
    """Draws random monotone :class:`CRF` s of one family from one split's stream.

    Args:
        family: ``"mixed"``, ``"gamma"``, ``"parametric"`` or ``"emor"`` (see module docstring).
        split: ``"train"``, ``"val"`` or ``"test"``; the splits never share a CRF index.
        emor: loaded EMoR basis; required for ``family="emor"``, optional for ``"mixed"``.
        gamma_range: ``(low, high)`` of the uniform gamma ``g``.
        shoulder_range: ``(low, high)`` of the log-uniform shoulder ``a`` of the parametric family.
        emor_sigmas: standard deviations of the EMoR weights (length <= ``emor.k``).
        emor_tries: candidates drawn per EMoR sample for the monotone rejection step.
        emor_min_slope: smallest slope ``df/dx`` an accepted EMoR curve may have (keeps it invertible).
        per_channel: draw an independent curve (same family) per colour channel (``C = 3``).
        pool_size: number of distinct CRFs per split (``None``: practically unlimited).
        seed: base seed of the per-index private generators.
    """

    def __init__(
        self,
        *,
        family: str = "mixed",
        split: str = "train",
        emor: EMoRBasis | None = None,
        gamma_range: tuple[float, float] = (1.6, 2.8),
        shoulder_range: tuple[float, float] = (0.5, 20.0),
        emor_sigmas: Sequence[float] = DEFAULT_EMOR_SIGMAS,
        emor_tries: int = 64,
        emor_min_slope: float = 0.05,
        per_channel: bool = False,
        pool_size: int | None = None,
        seed: int = 0,
    ) -> None:
        if family not in FAMILIES:
            raise ConfigError(f"CRFSampler family={family!r} is unknown; use one of {FAMILIES}")
        if split not in SPLITS:
            raise ConfigError(f"CRFSampler split={split!r} is unknown; use one of {SPLITS}")
        if family == "emor" and emor is None:
            raise ConfigError("CRFSampler family='emor' needs emor=EMoRBasis.load(<folder with emor.txt>)")
        if not 0 < gamma_range[0] <= gamma_range[1]:
            raise ConfigError(f"CRFSampler gamma_range={gamma_range} must satisfy 0 < low <= high")
        if not 0 < shoulder_range[0] <= shoulder_range[1]:
            raise ConfigError(f"CRFSampler shoulder_range={shoulder_range} must satisfy 0 < low <= high")
        if emor is not None and len(emor_sigmas) > emor.k:
            raise ConfigError(
                f"CRFSampler: {len(emor_sigmas)} emor_sigmas but the EMoR basis holds k={emor.k}; "
                "load more components or pass fewer sigmas"
            )
        if pool_size is not None and pool_size < 1:
            raise ConfigError(f"CRFSampler pool_size={pool_size} must be >= 1 or None")
        self.family = family
        self.split = split
        self.emor = emor
        self.gamma_range = gamma_range
        self.shoulder_range = shoulder_range
        self.emor_sigmas = torch.tensor(list(emor_sigmas), dtype=torch.float32)
        self.emor_tries = emor_tries
        self.emor_min_slope = emor_min_slope
        self.per_channel = per_channel
        self.pool_size = pool_size
        self.seed = seed
        self.families = (
            ("gamma", "parametric", "emor") if emor is not None else ("gamma", "parametric")
        ) if family == "mixed" else (family,)

    # ------------------------------------------------------------------ indices
    @property
    def split_id(self) -> int:
        """0 / 1 / 2 for train / val / test: the residue of this split's CRF indices modulo 3."""
        return SPLITS.index(self.split)

    def draw_index(self, generator: torch.Generator) -> int:
        """A CRF index of this split (``3 * j + split_id``), ``j`` drawn from ``generator``."""
        limit = self.pool_size if self.pool_size is not None else _INDEX_LIMIT
        j = int(torch.randint(0, limit, (1,), generator=generator))
        return 3 * j + self.split_id

    def sample(self, generator: torch.Generator) -> CRF:
        """One random CRF of this sampler's family and split (``[1|3, 1024]`` tables)."""
        return self.crf_for_index(self.draw_index(generator))

    def crf_for_index(self, index: int) -> CRF:
        """The CRF with the given index (a pure function of ``index``, ``seed`` and the settings)."""
        if index % 3 != self.split_id:
            raise ConfigError(
                f"CRF index {index} does not belong to split {self.split!r} (index % 3 != {self.split_id})"
            )
        gen = torch.Generator().manual_seed((self.seed * 0x9E3779B1 + index) % (2**63))
        family = self.families[int(torch.randint(0, len(self.families), (1,), generator=gen))]
        n = 3 if self.per_channel else 1
        grid = lut_grid(dtype=torch.float64)
        if family == "gamma":
            g = _uniform(gen, *self.gamma_range, n)
            fwd = grid.pow(1.0 / g[:, None])
            name = f"gamma({', '.join(f'{v:.3f}' for v in g.tolist())})"
        elif family == "parametric":
            g = _uniform(gen, *self.gamma_range, n)
            lo, hi = torch.log(torch.tensor(self.shoulder_range, dtype=torch.float64))
            a = torch.exp(_uniform(gen, float(lo), float(hi), n))
            fwd = sigmoid_gamma_curve(grid, g[:, None], a[:, None])
            name = f"sigmoid_gamma(g={g.tolist()}, a={a.tolist()})"
        else:
            fwd = torch.stack([self._emor_curve(gen) for _ in range(n)]).double()
            name = "emor"
        return CRF.from_lut(make_monotone(fwd).float(), name=f"{name}#{index}")

    def _emor_curve(self, gen: torch.Generator) -> torch.Tensor:
        assert self.emor is not None
        sig = self.emor_sigmas
        w = torch.randn(self.emor_tries, len(sig), generator=gen) * sig
        curves = self.emor.curve(w.to(self.emor.mean.device)).cpu()
        slope = curves.diff(dim=-1).amin(dim=-1) * (curves.shape[-1] - 1)
        ok = (slope >= self.emor_min_slope).nonzero()
        return curves[int(ok[0, 0]) if len(ok) else 0]
