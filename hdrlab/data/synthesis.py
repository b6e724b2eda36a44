"""Training-pair synthesis: one linear HDR image -> one (LDR input, HDR target) sample.

The image-formation model follows the camera-pipeline synthesis of SingleHDR (Liu et al.,
CVPR 2020, section 3 / official ``training_code``): expose ``H * t``, (optional noise), clip to
``[0, 1]``, apply a camera response ``f``, quantise to ``bits``, (optional JPEG):

    ldr = Q_bits(f(clip(H * 2^ev, 0, 1)))                                 (SingleHDR eq. 1)

Differences to SingleHDR, on purpose:

* the exposure is not drawn from a fixed list ``2^linspace(-3, 3)`` but chosen per sample so
  that a clipped fraction ``c ~ U(lo, hi)`` of the pixels saturates
  (:func:`hdrlab.camera.auto_exposure_ev`), which gives every sample a controlled amount of
  missing highlight content and fixes the radiance scale of the target: ``hdr`` is radiance
  times the input exposure, so the input clips exactly where ``hdr >= 1``
  (``docs/architecture.md``);
* the CRF comes from :class:`hdrlab.camera.CRFSampler` (EMoR / gamma / sRGB / ... families)
  instead of the DoRF list;
* the HDR is not normalised to mean 0.5 and not resized by a random scale.

Randomness: every random choice is drawn from the ``torch.Generator`` the caller passes; use
:func:`sample_generator` ``(seed, epoch, index)`` so a sample is exactly reproducible (resume)
and differs across epochs.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hdrlab.errors import ConfigError

__all__ = [
    "PairSynthesizer",
    "sample_seed",
    "sample_generator",
    "random_crop",
    "random_flip",
    "fit_short_side",
    "clip_mask",
]

_SEED_MASK = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Hash-combine ``(seed, epoch, index)`` into a 63-bit non-negative integer seed.

    BLAKE2b over the three signed 64-bit little-endian integers; stable across processes,
    platforms and Python versions (unlike ``hash``).

    Args:
        seed: experiment seed.
        epoch: training epoch (use a fixed value for pinned validation/test sets).
        index: sample index in the dataset.

    Returns:
        An ``int`` in ``[0, 2**63)``.
    """
    digest = hashlib.blake2b(struct.pack("<qqq", int(seed), int(epoch), int(index)), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _SEED_MASK


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """CPU ``torch.Generator`` seeded with :func:`sample_seed` ``(seed, epoch, index)``."""
    generator = torch.Generator()
    generator.manual_seed(sample_seed(seed, epoch, index))
    return generator


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float drawn uniformly from ``[low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """One int drawn uniformly from ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def fit_short_side(image: Tensor, size: int) -> Tensor:
    """Upscale ``image`` (bilinear, aspect kept) so that its short side is at least ``size``.

    Images already large enough are returned unchanged. Upscaling (not padding) is used so
    that no artificial flat border enters the clipped-fraction statistics.

    Args:
        image: ``[C, H, W]`` float, any domain (linear radiance here).
        size: minimum short side in pixels.

    Returns:
        ``[C, H', W']`` with ``min(H', W') >= size`` (values stay non-negative: bilinear
        interpolation is a convex combination).
    """
    height, width = image.shape[-2:]
    if min(height, width) >= size:
        return image
    scale = size / min(height, width)
    new_h, new_w = max(size, math.ceil(height * scale)), max(size, math.ceil(width * scale))
    return F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]


def random_crop(image: Tensor, size: int, *, generator: torch.Generator) -> Tensor:
    """Crop a random ``size x size`` window (uniform top-left corner).

    Args:
        image: ``[C, H, W]`` with ``H, W >= size`` (see :func:`fit_short_side`).
        size: patch side in pixels.
        generator: source of randomness.

    Returns:
        ``[C, size, size]`` view of ``image``.
    """
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ConfigError(f"random_crop: image {height}x{width} is smaller than the patch {size}; call fit_short_side first")
    top = _randint(generator, 0, height - size)
    left = _randint(generator, 0, width - size)
    return image[..., top : top + size, left : left + size]


def random_flip(image: Tensor, *, generator: torch.Generator) -> Tensor:
    """Flip ``image [C, H, W]`` left-right and (independently) up-down, each with p = 0.5."""
    horizontal, vertical = (torch.rand(2, generator=generator) < 0.5).tolist()
    dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
    return image.flip(dims) if dims else image


def clip_mask(ldr: Tensor, *, bits: int = 8) -> Tensor:
    """Clip mask of an input LDR (``docs/architecture.md``): max channel ``>= (L - 0.5) / L``.

    ``L = 2**bits - 1``, i.e. the pixel has the top code in some channel (``254.5/255`` for 8 bits).

    Args:
        ldr: ``[3, H, W]`` display values in ``[0, 1]``.
        bits: bit depth of the codes.

    Returns:
        ``[1, H, W]`` float32, 1 where clipped, else 0.
    """
    levels = float(2**bits - 1)
    return (ldr.amax(dim=-3, keepdim=True) >= (levels - 0.5) / levels).float()


class PairSynthesizer:
    """Turn a linear HDR image into one synthetic single-image HDR training sample.

    Pipeline per call (all randomness from the given generator, in this order):

    1. upscale if the short side is below ``patch_size`` (:func:`fit_short_side`; bilinear,
       never padding), random ``patch_size`` crop, random left-right / up-down flips;
    2. draw a clipped fraction ``c ~ U(clipped_fraction)`` and expose the patch with
       ``ev = auto_exposure_ev(patch, clipped_fraction=c)``: ``hdr = patch * 2^ev``;
    3. draw a CRF from ``CRFSampler(family=crf_family, split=crf_split)``;
    4. render the input with :func:`hdrlab.camera.render_ldr`: clip at 1, CRF, quantise to
       ``bits``, optional linear-domain sensor noise (:func:`hdrlab.camera.add_sensor_noise`,
       per-sample strengths ``shot ~ U(0, noise['shot'])`` (variance gain) and
       ``read ~ U(0, noise['read'])`` (std), drawn per image as in SingleHDR) and optional JPEG
       with quality ``~ U{jpeg_quality}``; the clip mask is computed on the final input
       (:func:`clip_mask`);
    5. with ``bracket_ev``, also render the bracket ``synthesize_stack(hdr, ev, crf, bits)``.

    Args:
        patch_size: side of the square output patch in pixels.
        clipped_fraction: ``(lo, hi)`` range of the fraction of input pixels to saturate.
        crf_family: CRF family for :class:`hdrlab.camera.CRFSampler` (e.g. ``"mixed"``).
        crf_split: ``"train"``, ``"val"`` or ``"test"`` CRF stream (disjoint CRF sets).
        bits: quantisation bit depth of the input.
        noise: ``None`` or ``{"shot": max_sigma, "read": max_sigma}``.
        jpeg_quality: ``None`` or ``(lo, hi)`` inclusive JPEG quality range.
        flips: random flips on/off.
        bracket_ev: ``None`` or the ev list (relative to the input, ev 0) of a synthetic bracket.
        emor_path: optional ``emor.txt`` file or its folder; with it the ``"mixed"`` family also
            draws EMoR curves (``EMoRBasis.load``), ``crf_family="emor"`` requires it.

    Output of ``__call__`` (one unbatched sample; keys of :class:`hdrlab.data.batch.HDRBatch`):
        ``hdr [3,P,P]`` linear, ``hdr_clipped [3,P,P]``, ``ldr_float [3,P,P]``, ``ldr [3,P,P]``,
        ``crf_forward [C,1024]``, ``crf_inverse [C,1024]``, ``clip_mask [1,P,P]``,
        ``stack [N,3,P,P]`` / ``ev [N]`` (with ``bracket_ev``), ``exposure_ev`` (float tensor
        ``[]``: the ev applied to the source radiance), ``name`` (str).
    """

    def __init__(
        self,
        *,
        patch_size: int = 256,
        clipped_fraction: tuple[float, float] = (0.02, 0.20),
        crf_family: str = "mixed",
        crf_split: str = "train",
        bits: int = 8,
        noise: dict[str, float] | None = None,
        jpeg_quality: tuple[int, int] | None = None,
        flips: bool = True,
        bracket_ev: Sequence[float] | None = None,
        emor_path: str | None = None,
    ) -> None:
        if patch_size < 1:
            raise ConfigError(f"PairSynthesizer.patch_size must be >= 1, got {patch_size}")
        lo, hi = (float(v) for v in clipped_fraction)
        if not 0.0 <= lo <= hi < 1.0:
            raise ConfigError(
                f"PairSynthesizer.clipped_fraction must be (lo, hi) with 0 <= lo <= hi < 1, got {clipped_fraction}"
            )
        if noise is not None and set(noise) - {"shot", "read"}:
            raise ConfigError(f"PairSynthesizer.noise takes the keys 'shot' and 'read', got {sorted(noise)}")
        if jpeg_quality is not None:
            q_lo, q_hi = (int(v) for v in jpeg_quality)
            if not 1 <= q_lo <= q_hi <= 100:
                raise ConfigError(f"PairSynthesizer.jpeg_quality must be (lo, hi) within 1..100, got {jpeg_quality}")
            jpeg_quality = (q_lo, q_hi)
        self.patch_size = int(patch_size)
        self.clipped_fraction = (lo, hi)
        self.crf_family = crf_family
        self.crf_split = crf_split
        self.bits = int(bits)
        self.noise = dict(noise) if noise is not None else None
        self.jpeg_quality = jpeg_quality
        self.flips = bool(flips)
        self.bracket_ev = sorted(float(e) for e in bracket_ev) if bracket_ev is not None else None
        if self.bracket_ev is not None and (len(self.bracket_ev) < 2 or len(set(self.bracket_ev)) < len(self.bracket_ev)):
            raise ConfigError(f"PairSynthesizer.bracket_ev {list(bracket_ev)} needs at least 2 distinct exposures "
                              "(a repeated ev brackets nothing); give distinct values, e.g. [-4, 4]")
        self.emor_path = emor_path
        self._sampler: Any = None

    # -- lazily built, so that a synthesizer is cheap to create and pickles for workers --
    def _crf_sampler(self) -> Any:
        if self._sampler is None:
            from hdrlab.camera.emor import EMoRBasis
            from hdrlab.camera.sampling import CRFSampler

            emor = EMoRBasis.load(self.emor_path) if self.emor_path is not None else None
            self._sampler = CRFSampler(family=self.crf_family, split=self.crf_split, emor=emor)
        return self._sampler

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sampler"] = None
        return state

    def crop(self, hdr: Tensor, *, generator: torch.Generator) -> Tensor:
        """Geometric part of the pipeline: fit, random crop, flips -> ``[3, P, P]`` linear."""
        if hdr.dim() != 3 or hdr.shape[0] != 3:
            raise ConfigError(f"PairSynthesizer expects an HDR image [3, H, W], got shape {tuple(hdr.shape)}")
        patch = random_crop(fit_short_side(hdr.float(), self.patch_size), self.patch_size, generator=generator)
        if self.flips:
            patch = random_flip(patch, generator=generator)
        return patch.contiguous()

    def __call__(self, hdr: Tensor, *, generator: torch.Generator, name: str) -> dict[str, Any]:
        """Synthesize one sample from ``hdr [3, H, W]`` (linear, non-negative, any scale).

        Args:
            hdr: source radiance map ``[3, H, W]`` float.
            generator: source of all randomness (see :func:`sample_generator`).
            name: scene identifier stored under ``"name"``.

        Returns:
            The sample dict described in the class docstring.
        """
        from hdrlab.camera import auto_exposure_ev, render_ldr

        patch = self.crop(hdr, generator=generator).clamp_min(0.0)
        fraction = _uniform(generator, *self.clipped_fraction)
        ev = float(auto_exposure_ev(patch, clipped_fraction=fraction))
        exposed = patch * (2.0**ev)
        crf = self._crf_sampler().sample(generator)
        noise = None
        if self.noise is not None:
            noise = {
                "shot": _uniform(generator, 0.0, float(self.noise.get("shot", 0.0))),
                "read": _uniform(generator, 0.0, float(self.noise.get("read", 0.0))),
            }
        quality = _randint(generator, *self.jpeg_quality) if self.jpeg_quality is not None else None
        if noise is not None:
            noise["generator"] = generator  # the noise realisation is keyed to the sample too
        out = render_ldr(exposed[None], crf, ev=0.0, bits=self.bits, noise=noise, jpeg_quality=quality, straight_through=False)
        ldr = out["ldr"][0].float()
        sample: dict[str, Any] = {
            "hdr": exposed,
            "hdr_clipped": exposed.clamp(max=1.0),
            "ldr_float": out["ldr_float"][0].float(),
            "ldr": ldr,
            "crf_forward": crf.forward_lut.detach().float().clone(),
            "crf_inverse": crf.inverse_lut.detach().float().clone(),
            "clip_mask": clip_mask(ldr, bits=self.bits),
            "exposure_ev": torch.tensor(ev, dtype=torch.float32),
            "name": name,
        }
        if self.bracket_ev is not None:
            from hdrlab.camera import synthesize_stack

            ev_list = torch.tensor([self.bracket_ev], dtype=torch.float32)
            stack = synthesize_stack(exposed[None], ev_list, crf, bits=self.bits)
            sample["stack"] = stack.images[0].float()
            sample["ev"] = stack.ev[0].float()
        return sample
