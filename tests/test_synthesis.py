"""Tests of hdrlab.data.synthesis (training-pair synthesis) against independent references.

References: numpy ``np.interp`` of the sample's own CRF LUT (SingleHDR eq. 1:
``ldr = Q8(f(clip(H t)))``), closed-form ``min(hdr, 1)``, and the clip-mask definition of
``docs/architecture.md`` (max over channels ``>= 254.5/255``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdrlab.data.procedural import render_scene
from hdrlab.data.synthesis import (
    PairSynthesizer,
    fit_short_side,
    random_crop,
    random_flip,
    sample_generator,
    sample_seed,
)
from hdrlab.errors import ConfigError

PATCH = 48


@pytest.fixture(scope="module")
def scenes() -> list[torch.Tensor]:
    return [render_scene(seed, height=64, width=80) for seed in range(6)]


def _interp_lut(x: torch.Tensor, lut: torch.Tensor) -> np.ndarray:
    """Reference CRF application: per-channel numpy linear interpolation on linspace(0, 1, K)."""
    grid = np.linspace(0.0, 1.0, lut.shape[-1])
    x_np = x.double().numpy()
    lut_np = lut.double().numpy()
    lut_np = np.broadcast_to(lut_np, (3, lut_np.shape[-1]))
    return np.stack([np.interp(x_np[c], grid, lut_np[c]) for c in range(3)])


def test_sample_seed_is_stable_63_bit_and_key_sensitive():
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}
    assert len(seeds) == 27
    assert all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    a = torch.rand(4, generator=sample_generator(1, 2, 3))
    b = torch.rand(4, generator=sample_generator(1, 2, 3))
    assert torch.equal(a, b)


def test_fit_short_side_upscales_small_images_only():
    small = torch.rand(3, 20, 50)
    out = fit_short_side(small, 32)
    assert out.shape == (3, 32, 80)
    assert out.min() >= 0 and out.max() <= small.max() + 1e-6
    big = torch.rand(3, 40, 50)
    assert fit_short_side(big, 32) is big


def test_random_crop_is_a_window_of_the_source():
    image = torch.arange(3 * 30 * 40, dtype=torch.float32).reshape(3, 30, 40)
    crop = random_crop(image, 16, generator=sample_generator(0, 0, 0))
    assert crop.shape == (3, 16, 16)
    top, left = divmod(int(crop[0, 0, 0]), 40)
    assert torch.equal(crop, image[:, top : top + 16, left : left + 16])
    with pytest.raises(ConfigError, match="smaller than the patch"):
        random_crop(image, 64, generator=sample_generator(0, 0, 0))


def test_random_flip_returns_one_of_the_four_flips():
    image = torch.rand(3, 8, 9)
    candidates = [image, image.flip(-1), image.flip(-2), image.flip((-1, -2))]
    seen = set()
    for i in range(16):
        out = random_flip(image, generator=sample_generator(0, 0, i))
        seen.add(next(k for k, c in enumerate(candidates) if torch.equal(out, c)))
    assert seen == {0, 1, 2, 3}


def test_sample_keys_shapes_and_image_formation(scenes):
    synth = PairSynthesizer(patch_size=PATCH, clipped_fraction=(0.05, 0.15), bracket_ev=[2.0, -2.0, 0.0])
    sample = synth(scenes[0], generator=sample_generator(0, 0, 0), name="scene0")
    for key in ("hdr", "hdr_clipped", "ldr_float", "ldr"):
        assert sample[key].shape == (3, PATCH, PATCH) and sample[key].dtype == torch.float32, key
    assert sample["clip_mask"].shape == (1, PATCH, PATCH)
    c = sample["crf_forward"].shape[0]
    assert c in (1, 3) and sample["crf_forward"].shape == (c, 1024) == sample["crf_inverse"].shape
    assert sample["name"] == "scene0"
    assert sample["stack"].shape == (3, 3, PATCH, PATCH)
    assert sample["ev"].tolist() == [-2.0, 0.0, 2.0]

    hdr = sample["hdr"]
    assert torch.isfinite(hdr).all() and hdr.min() >= 0
    assert torch.equal(sample["hdr_clipped"], hdr.clamp(max=1.0))
    # ldr_float = f(hdr_clipped) and ldr = round(255 f(hdr_clipped)) / 255 with the sample's own LUT
    ref_float = _interp_lut(sample["hdr_clipped"], sample["crf_forward"])
    assert np.abs(sample["ldr_float"].double().numpy() - ref_float).max() < 1e-5
    ref_ldr = np.round(ref_float * 255.0) / 255.0
    diff = np.abs(sample["ldr"].double().numpy() - ref_ldr)
    assert diff.max() <= 1 / 255 + 1e-6  # a rounding tie may flip by one code
    assert (diff < 1e-6).mean() > 0.999
    assert np.allclose(sample["ldr"].numpy() * 255.0, np.round(sample["ldr"].numpy() * 255.0), atol=1e-3)
    # clip mask: max over channels of the input >= 254.5/255
    expected_mask = (sample["ldr"].amax(dim=0, keepdim=True) >= 254.5 / 255).float()
    assert torch.equal(sample["clip_mask"], expected_mask)
    # the ev-0 member of the bracket is the (noise-free) input itself
    assert torch.allclose(sample["stack"][1], sample["ldr"], atol=1 / 255 + 1e-6)


def test_clipped_fraction_inside_configured_range(scenes):
    lo, hi = 0.04, 0.12
    synth = PairSynthesizer(patch_size=PATCH, clipped_fraction=(lo, hi))
    fractions = []
    for index, scene in enumerate(scenes):
        sample = synth(scene, generator=sample_generator(3, 0, index), name=str(index))
        fractions.append(float(sample["clip_mask"].mean()))
        assert float((sample["hdr"].amax(dim=0) >= 1.0).float().mean()) <= float(sample["clip_mask"].mean()) + 1e-6
    assert all(lo - 0.01 <= f <= hi + 0.01 for f in fractions), fractions
    assert max(fractions) - min(fractions) > 0.01  # drawn from the range, not a constant


def test_reproducible_per_key_and_different_across_epochs(scenes):
    synth = PairSynthesizer(patch_size=PATCH, noise={"shot": 0.01, "read": 0.002}, jpeg_quality=(70, 95))
    a = synth(scenes[1], generator=sample_generator(7, 0, 5), name="a")
    b = synth(scenes[1], generator=sample_generator(7, 0, 5), name="a")
    c = synth(scenes[1], generator=sample_generator(7, 1, 5), name="a")
    for key in ("hdr", "ldr", "ldr_float", "crf_forward", "clip_mask"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["ldr"], c["ldr"])
    assert not torch.equal(a["hdr"], c["hdr"])


def test_noise_and_jpeg_perturb_the_input_moderately(scenes):
    clean = PairSynthesizer(patch_size=PATCH)
    dirty = PairSynthesizer(patch_size=PATCH, noise={"shot": 1e-3, "read": 5e-3}, jpeg_quality=(60, 60))
    a = clean(scenes[2], generator=sample_generator(0, 0, 2), name="x")
    b = dirty(scenes[2], generator=sample_generator(0, 0, 2), name="x")
    assert torch.equal(a["hdr"], b["hdr"])  # same geometry and exposure draws
    mae = float((a["ldr"] - b["ldr"]).abs().mean())
    assert 1e-4 < mae < 0.05, mae
    assert b["ldr"].min() >= 0 and b["ldr"].max() <= 1


def test_invalid_options_raise_config_error():
    with pytest.raises(ConfigError, match="clipped_fraction"):
        PairSynthesizer(clipped_fraction=(0.3, 0.1))
    with pytest.raises(ConfigError, match="jpeg_quality"):
        PairSynthesizer(jpeg_quality=(0, 200))
    with pytest.raises(ConfigError, match="noise"):
        PairSynthesizer(noise={"gain": 1.0})
    with pytest.raises(ConfigError, match=r"\[3, H, W\]"):
        PairSynthesizer(patch_size=8)(torch.rand(1, 16, 16), generator=sample_generator(0, 0, 0), name="x")


def test_emor_family_uses_the_real_emor_file(scenes, crf_dir):
    synth = PairSynthesizer(patch_size=PATCH, crf_family="emor", emor_path=str(crf_dir))
    sample = synth(scenes[3], generator=sample_generator(0, 0, 3), name="emor")
    lut = sample["crf_forward"]
    assert torch.all(lut.diff(dim=-1) >= -1e-6)
    assert abs(float(lut[..., 0])) < 1e-6 and abs(float(lut[..., -1]) - 1) < 1e-6


@pytest.mark.parametrize("ev", [[1.0, 1.0], [4.0], [-2.0, 0.0, 0.0]])
def test_bracket_needs_distinct_exposures(ev):
    with pytest.raises(ConfigError, match="at least 2 distinct exposures"):
        PairSynthesizer(patch_size=32, bracket_ev=ev)


@pytest.mark.parametrize("size", [(16, 16), (7, 9)])
def test_synthesize_stack_one_pass_equals_the_per_exposure_render(size):
    """synthesize_stack renders the bracket in one pass when it can; it must equal render_ldr per ev."""
    from hdrlab.camera import CRFSampler, render_ldr, synthesize_stack

    gen = torch.Generator().manual_seed(3)
    hdr = torch.rand(2, 3, *size, generator=gen) * 4
    crf = CRFSampler(family="mixed", split="train").sample(gen)
    ev = [-3.0, -1.5, 0.0, 0.5, 2.0]
    stack = synthesize_stack(hdr, ev, crf, bits=8)
    for n, e in enumerate(ev):
        expected = render_ldr(hdr, crf, ev=torch.full((2,), e), bits=8)["ldr"]
        assert torch.equal(stack.images[:, n], expected), (size, e)
