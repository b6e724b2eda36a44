"""MEF-SSIM (Ma, Zeng, Wang, TIP 2015; hdrlab.losses.mef_ssim, UNVERIFIED against reference code):
provable properties, and the CF-Net ``structural_loss`` option (CFNetMethod, CFNetMerger) it backs."""

from __future__ import annotations

import pytest
import torch
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

from hdrlab.data import ProceduralDataModule
from hdrlab.data.datamodules import collate_hdr_batch
from hdrlab.errors import ConfigError
from hdrlab.losses import mef_ssim, mef_ssim_map
from hdrlab.losses.cfnet import STRUCTURAL_LOSSES, cfnet_loss, cfnet_ssim
from hdrlab.methods import CFNetMethod, TwoStage
from hdrlab.models.generators import Le2023Generator
from hdrlab.models.mergers import CFNetMerger

pytestmark = pytest.mark.usefixtures("single_thread")


def _textures(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g)
    y = 0.6 * x + 0.4 * torch.rand(2, 3, size, size, generator=g)
    return x, y


def _pytorch_msssim_cs(x: torch.Tensor, y: torch.Tensor, *, win_size: int = 11) -> torch.Tensor:
    """Per-image contrast-structure term of SSIM (pytorch_msssim's ``cs``, same Gaussian window)."""
    win = _fspecial_gauss_1d(win_size, 1.5).repeat(x.shape[1], 1, 1, 1)
    _, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False, K=(0.01, 0.03))
    return cs.mean(dim=1)


@pytest.mark.parametrize("num_sources", [1, 2, 3])
def test_identical_sources_give_the_ssim_contrast_structure_term(num_sources):
    """All sources equal x: desired contrast = c_x, desired structure = s_x, so MEF-SSIM is
    SSIM's cs term (pytorch_msssim, independent code) for any number of sources."""
    x, y = _textures()
    got = mef_ssim(y, torch.stack([x] * num_sources, dim=1))
    ref = _pytorch_msssim_cs(x, y)
    assert torch.allclose(got, ref, atol=2e-5), (got, ref)
    assert 0.5 < float(ref.min()) < 0.99  # a non-trivial value


def test_constant_sources_do_not_count_and_luminance_is_ignored():
    """A flat (zero-contrast) source has weight c^p = 0 and cannot raise the desired contrast, so
    adding it changes nothing; the fused image equal to the textured source plus any constant
    scores 1 (MEF-SSIM has no luminance term)."""
    x, y = _textures(1)
    flat = torch.full_like(x, 0.7)
    alone = mef_ssim(y, x[:, None])
    with_flat = mef_ssim(y, torch.stack([flat, x], dim=1))
    assert torch.allclose(alone, with_flat, atol=1e-5)
    ones = mef_ssim(x + 0.25, torch.stack([x, flat], dim=1))
    assert torch.allclose(ones, torch.ones(2), atol=1e-5)


def test_desired_contrast_is_the_maximum_over_sources():
    """Sources x and 0.5 x + 0.2 share the structure; the desired patch is the higher-contrast x:
    y = x scores 1, y = the low-contrast source scores less (its contrast is half the desired)."""
    x, _ = _textures(2)
    sources = torch.stack([0.5 * x + 0.2, x], dim=1)
    assert torch.allclose(mef_ssim(x, sources), torch.ones(2), atol=1e-5)
    low = mef_ssim(0.5 * x + 0.2, sources)
    assert float(low.max()) < 0.9
    # closed form per patch: Q = (2 * 0.5 c^2 + C2) / (c^2 + 0.25 c^2 + C2) = (c^2 + C2) / (1.25 c^2 + C2)
    cs_low = _pytorch_msssim_cs(x, 0.5 * x + 0.2)
    assert torch.allclose(low, cs_low, atol=2e-5)  # same value: the SSIM cs of x vs the low source


def test_region_wise_best_source_scores_one_away_from_the_seam():
    """Source A is textured on the left half and flat on the right, source B the opposite; taking
    each half from its textured source is the desired image, so every patch away from the seam is 1."""
    x, _ = _textures(3, size=48)
    left = torch.zeros(1, 1, 48, 48)
    left[..., :24] = 1.0
    a = x * left + 0.3 * (1 - left)
    b = x.flip(-1) * (1 - left) + 0.6 * left
    fused = x * left + x.flip(-1) * (1 - left)
    q = mef_ssim_map(fused, torch.stack([a, b], dim=1))  # [2, 3, 38, 38]; columns 0..13 and 24..37 avoid the seam
    assert torch.allclose(q[..., :13], torch.ones_like(q[..., :13]), atol=1e-4)
    assert torch.allclose(q[..., 25:], torch.ones_like(q[..., 25:]), atol=1e-4)
    # a fused image that averages the two sources scores lower
    assert float(mef_ssim(0.5 * (a + b), torch.stack([a, b], dim=1)).max()) < 0.9


def test_bounded_in_minus_one_one_and_anticorrelation_is_near_minus_one():
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        sources = torch.rand(2, 4, 3, 24, 24, generator=g)
        fused = torch.rand(2, 3, 24, 24, generator=g)
        q = mef_ssim_map(fused, sources)
        assert float(q.min()) >= -1.0 - 1e-5 and float(q.max()) <= 1.0 + 1e-5
    x, _ = _textures(5)
    assert float(mef_ssim(1.0 - x, torch.stack([x, x], dim=1)).max()) < -0.95


def test_grayscale_scores_the_rec709_luma_and_is_order_invariant():
    x, y = _textures(6)
    z = torch.rand_like(x)
    gray = mef_ssim(y, torch.stack([x, z], dim=1), grayscale=True)
    weights = torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)
    luma = lambda t: (t * weights).sum(1, keepdim=True)  # noqa: E731
    assert torch.allclose(gray, mef_ssim(luma(y), torch.stack([luma(x), luma(z)], dim=1)), atol=1e-6)
    swapped = mef_ssim(y, torch.stack([z, x], dim=1))
    assert torch.allclose(mef_ssim(y, torch.stack([x, z], dim=1)), swapped, atol=1e-6)


def test_gradients_are_finite_including_flat_and_cancelling_sources():
    x, _ = _textures(7, size=16)
    fused = torch.rand(2, 3, 16, 16, requires_grad=True)
    sources = torch.stack([x, 1.0 - x, torch.full_like(x, 0.5)], dim=1).requires_grad_(True)  # s_bar = 0
    score = mef_ssim(fused, sources)
    score.sum().backward()
    assert torch.isfinite(score).all()
    assert torch.isfinite(fused.grad).all() and float(fused.grad.abs().sum()) > 0
    assert torch.isfinite(sources.grad).all()


def test_bad_shapes_and_windows_are_config_errors():
    with pytest.raises(ConfigError, match=r"sources \[B, K, C, H, W\]"):
        mef_ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="win_size=11 must be odd and at most the image side 8"):
        mef_ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 3, 8, 8))


# ----------------------------------------------------------------------------- CF-Net option
def _pair_batch(size: int = 32) -> dict:
    dm = ProceduralDataModule(num_train_scenes=2, num_val_scenes=1, patch_size=size, batch_size=2,
                              bracket_ev=[-4.0, 4.0], seed=0, flips=False)
    dm.setup("fit")
    return collate_hdr_batch([dm.train_set[(0, 0)]])


def test_cfnet_loss_mef_ssim_terms_closed_form():
    """With every feedback output equal to the over source: SR terms as SSIM, fusion terms
    2 T (1 - MEF-SSIM(over, {under, over})), the fused GT unused."""
    g = torch.Generator().manual_seed(8)
    under, over = torch.rand(2, 3, 24, 24, generator=g) * 0.3, torch.rand(2, 3, 24, 24, generator=g)
    outs_u = [under, over, over, over]
    outs_o = [over, over, over, over]
    got = cfnet_loss(outs_u, outs_o, hr_under=under, hr_over=over, hr_fused=None, structural_loss="mef_ssim")
    sr = (1 - cfnet_ssim(under, under)) + (1 - cfnet_ssim(over, over))
    fusion = 6 * (1 - mef_ssim(over, torch.stack([under, over], 1)).mean())
    assert torch.allclose(got, sr + fusion, atol=1e-6)
    assert STRUCTURAL_LOSSES == ("ssim", "mef_ssim")
    with pytest.raises(ConfigError, match="structural_loss='msssim' is unknown; use 'ssim'"):
        cfnet_loss(outs_u, outs_o, hr_under=under, hr_over=over, hr_fused=over, structural_loss="msssim")
    with pytest.raises(ConfigError, match="needs hr_fused"):
        cfnet_loss(outs_u, outs_o, hr_under=under, hr_over=over, hr_fused=None)


def test_cfnet_method_default_is_official_ssim_and_unknown_value_is_config_error():
    assert CFNetMethod(width=0.125).structural_loss == "ssim"
    with pytest.raises(ConfigError, match="CFNetMethod: structural_loss='mefssim' is unknown"):
        CFNetMethod(width=0.125, structural_loss="mefssim")


def test_cfnet_method_trains_with_mef_ssim():
    """The option trains: the MEF-SSIM loss decreases over 20 Adam steps (tiny width, 32 px)."""
    torch.manual_seed(0)
    batch = _pair_batch(32)
    method = CFNetMethod(width=0.125, lr=5e-3, lr_step_epochs=None, structural_loss="mef_ssim")
    optimizer = method.configure_optimizers()
    losses = []
    for _ in range(20):
        loss, terms = method.compute_loss(batch)
        assert set(terms) == {"sr", "fusion"} and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    print(f"CF-Net MEF-SSIM loss {losses[0]:.3f} -> {losses[-1]:.3f}")  # measured 4.784 -> 4.53
    assert losses[-1] < 0.96 * losses[0]


def test_two_stage_structural_loss_option_and_its_checks():
    """The option belongs to CF-Net's merger; the composite only reads its declarations."""
    gen = lambda: Le2023Generator(width=0.125, ev=(-2.0, 2.0), levels=4)  # noqa: E731
    merger = CFNetMerger(width=0.125, structural_loss="mef_ssim")
    assert merger.has_objective and not merger.objective_supervised
    method = TwoStage(generator=gen(), merger=merger, mode="freeze_generator")
    assert method.merger_loss == "own"
    batch = _pair_batch(32)
    loss, terms = method.compute_loss(batch)
    assert set(terms) == {"sr", "fusion"} and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in method.generator.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in method.merger.parameters())
    assert CFNetMerger(width=0.125).structural_loss == "ssim"
    with pytest.raises(ConfigError, match="cannot train the generator"):
        TwoStage(generator=gen(), merger=CFNetMerger(width=0.125, structural_loss="mef_ssim"), mode="joint")
    with pytest.raises(ConfigError, match="CFNetMerger: structural_loss='ms' is unknown"):
        CFNetMerger(width=0.125, structural_loss="ms")
