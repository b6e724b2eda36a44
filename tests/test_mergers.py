"""Classical mergers (Debevec & Malik, Mertens) against OpenCV, closed forms and ground truth.

Synthetic brackets: a smooth log-radiance field with 5 % per-channel
multiplicative texture, channels 0.8 / 1 / 1.3, exposures 4 EV apart around the reference,
8-bit codes ``round(255 * clip(E t, 0, 1) ** (1 / 2.2))`` built with numpy (independent of hdrlab's
camera code). OpenCV (5.0.x, >= 4.12 weight table) is the reference implementation.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch

from hdrlab.camera import CRF, synthesize_stack
from hdrlab.errors import ConfigError
from hdrlab.io import read_hdr
from hdrlab.models.mergers import (
    DebevecMerger,
    MertensMerger,
    StackArity,
    StackMerger,
    collapse_laplacian_pyramid,
    debevec_weight,
    debevec_weight_table,
    fuse_mertens,
    gaussian_pyramid,
    grid_sample_points,
    laplacian_pyramid,
    merge_debevec,
    mertens_weights,
    pyr_down,
    pyr_up,
    pyramid_levels,
    recover_response_debevec,
    stack_from_times,
)
from hdrlab.models.mergers.mertens import contrast_measure, reflect101_index, saturation_measure
from hdrlab.stack import ExposureStack

EVS = (-4.0, -2.0, 0.0, 2.0)  # reference = index 2 (ev 0)
GAMMA = 2.2


def textured_hdr(height: int, width: int, *, seed: int = 0, amplitude: float = 3.0) -> np.ndarray:
    """Smooth textured radiance ``[H, W, 3]`` float64 (about 12 stops), relative to the reference exposure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=np.float64)[:, None, None]
    base = np.exp(amplitude * np.sin(3 * xx + 1) * np.cos(2 * yy) + 1.5 * xx - 1.5)
    hdr = np.stack([0.8 * base, base, 1.3 * base], axis=-1)
    return hdr * (1.0 + 0.05 * rng.standard_normal((height, width, 3)))


def gamma_bracket(hdr: np.ndarray, evs=EVS) -> list[np.ndarray]:
    """8-bit codes of a gamma-2.2 camera, one ``[H, W, 3]`` uint8 image per ev."""
    return [np.round(255 * np.clip(hdr * 2.0**ev, 0, 1) ** (1 / GAMMA)).astype(np.uint8) for ev in evs]


def recoverable(codes: list[np.ndarray]) -> np.ndarray:
    """Pixels neither clipped in the shortest nor black in the longest exposure ``[H, W]``."""
    return (codes[0].max(-1) < 255) & (codes[-1].min(-1) > 0)


def as_stack(codes: list[np.ndarray], evs=EVS, reference: int = 2, crf=None) -> ExposureStack:
    images = torch.from_numpy(np.stack(codes)).permute(0, 3, 1, 2).unsqueeze(0).float() / 255.0
    return ExposureStack(images=images, ev=torch.tensor([evs], dtype=torch.float32), reference=reference, crf=crf)


def rel_error(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(x / ref - 1.0)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[np.ndarray]]:
    hdr = textured_hdr(120, 160)
    return hdr, gamma_bracket(hdr)


@pytest.fixture(scope="module")
def times() -> np.ndarray:
    return (2.0 ** np.asarray(EVS)).astype(np.float32)


@pytest.fixture(scope="module")
def cv_response(scene, times) -> np.ndarray:
    return cv2.createCalibrateDebevec(samples=70, lambda_=10.0, random=False).process(scene[1], times)


# ------------------------------------------------------------------------------------ Debevec


def test_weight_tables_closed_form():
    hat = debevec_weight_table("hat")
    legacy = debevec_weight_table("opencv_legacy")
    assert hat[[0, 1, 64, 127, 128, 200, 254, 255]].tolist() == [1e-6, 1, 64, 127, 127, 55, 1, 1e-6]
    assert legacy[[0, 1, 127, 128, 254, 255]].tolist() == [1, 2, 128, 128, 2, 1]
    # continuous hat on display values agrees with the table at the codes and peaks at 127.5
    x = torch.arange(256, dtype=torch.float64) / 255.0
    assert torch.allclose(debevec_weight(255.0 * x, "hat"), hat, atol=1e-9)
    assert float(debevec_weight(torch.tensor(127.5))) == 127.5


def test_grid_sample_points_match_opencv_rule():
    pts = grid_sample_points(120, 160, 70)  # x_points 9, y_points 7 (OpenCV calibrate.cpp grid rule)
    assert pts.shape == (63, 2)
    assert pts[0].tolist() == [120 // 7 // 2, 160 // 9 // 2]
    assert grid_sample_points(1000, 1500, 70).shape == (70, 2)
    with pytest.raises(ConfigError, match="samples"):
        grid_sample_points(1000, 10, 1)


def test_recover_response_matches_opencv(scene, times, cv_response):
    ours = recover_response_debevec(scene[1], torch.from_numpy(times), samples=70, smoothness=10.0)
    assert ours.shape == (256, 3) and ours.dtype == torch.float64
    assert float(ours[128].sub(1).abs().max()) < 1e-9  # gauge g(128) = 0
    d = np.abs(np.log(ours.numpy()) - np.log(cv_response[:, 0, :]))[1:255]
    print(f"ln response vs OpenCV: max {d.max():.4f}, median {np.median(d):.4f}")
    assert d.max() <= 0.01 and np.median(d) <= 0.005
    # the true gamma-2.2 curve: r(255) / r(128) = (255/128) ** 2.2 = 4.55
    ratio = (ours[255] / ours[128]).numpy()
    assert np.all(np.abs(ratio / (255 / 128) ** GAMMA - 1) < 0.03), ratio


def test_recover_response_random_sampling_is_seeded(scene, times):
    a = recover_response_debevec(scene[1], times, sampling="random", generator=torch.Generator().manual_seed(3))
    b = recover_response_debevec(scene[1], times, sampling="random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    grid = recover_response_debevec(scene[1], times)
    assert float((a.log() - grid.log())[20:236].abs().max()) < 0.05


def test_recover_response_rejects_float_images(scene, times):
    with pytest.raises(ConfigError, match="uint8"):
        recover_response_debevec([c.astype(np.float32) for c in scene[1]], times)
    with pytest.raises(ConfigError, match="exposure times"):
        recover_response_debevec(scene[1], times[:3])


def test_merge_debevec_matches_opencv_with_same_response(scene, times, cv_response):
    cv_hdr = cv2.createMergeDebevec().process(scene[1], times, cv_response)
    ours = merge_debevec(scene[1], times, cv_response).numpy()
    rel = rel_error(ours, cv_hdr)
    print(f"merge vs OpenCV (same response): max rel {rel.max():.2e}")
    assert rel.max() < 1e-5
    # OpenCV's default linear response r(z) = z (r(0) = 1)
    cv_lin = cv2.createMergeDebevec().process(scene[1], times)
    assert rel_error(merge_debevec(scene[1], times).numpy(), cv_lin).max() < 1e-5


def test_merge_debevec_closed_form_weights():
    # codes 100 at t=1 and 255 at t=2, linear response: ln E = sum w (ln r - ln t) / sum w
    imgs = [np.full((2, 2, 1), 100, np.uint8), np.full((2, 2, 1), 255, np.uint8)]
    t = [1.0, 2.0]
    for kind, (w0, w1) in {"hat": (100.0, 1e-6), "opencv_legacy": (101.0, 1.0)}.items():
        expected = np.exp((w0 * np.log(100.0) + w1 * (np.log(255.0) - np.log(2.0))) / (w0 + w1))
        got = merge_debevec(imgs, t, weights=kind)
        assert torch.allclose(got, torch.tensor(expected, dtype=torch.float32), rtol=1e-6)
    # all codes 255 (every weight is the 1e-6 floor): OpenCV's unweighted log-mean, 255/2 for t = 1, 4
    sat = [np.full((2, 2, 3), 255, np.uint8)] * 2
    assert torch.allclose(merge_debevec(sat, [1.0, 4.0]), torch.tensor(127.5))
    cv_sat = cv2.createMergeDebevec().process(sat, np.float32([1.0, 4.0]))
    assert np.allclose(cv_sat, 127.5, rtol=1e-5)


def test_merge_debevec_per_channel_weights_differ_where_channels_disagree(scene, times, cv_response):
    mean_w = merge_debevec(scene[1], times, cv_response).numpy()
    per_c = merge_debevec(scene[1], times, cv_response, channel_weights="per_channel").numpy()
    ok = recoverable(scene[1])
    rel_gt = rel_error(per_c[ok] / np.median(per_c[ok] / scene[0][ok]), scene[0][ok])
    assert np.median(rel_gt) < 0.02
    assert np.abs(per_c / mean_w - 1).max() > 1e-4  # a genuinely different estimator


def test_merge_debevec_own_response_vs_opencv_and_ground_truth(scene, times, cv_response):
    hdr, codes = scene
    cv_hdr = cv2.createMergeDebevec().process(codes, times, cv_response)
    response = recover_response_debevec(codes, times)
    ours = merge_debevec(codes, times, response).numpy()
    rel = rel_error(ours, cv_hdr)
    print(f"recover+merge vs OpenCV: median {np.median(rel):.4f}, p99 {np.percentile(rel, 99):.4f}")
    assert np.median(rel) < 0.01
    ok = recoverable(codes)
    scale = np.median(ours[ok] / hdr[ok])  # a recovered CRF is defined up to scale
    rel_gt = rel_error(ours[ok] / scale, hdr[ok])
    print(f"recover+merge vs ground truth: median {np.median(rel_gt):.4f}, p99 {np.percentile(rel_gt, 99):.4f}")
    assert np.median(rel_gt) < 0.02


def test_debevec_merger_recover_ground_truth(scene):
    hdr, codes = scene
    out = DebevecMerger(crf="recover")(as_stack(codes))
    assert out.shape == (1, 3, 120, 160) and out.dtype == torch.float32
    out = out[0].permute(1, 2, 0).numpy()
    ok = recoverable(codes)
    scale = np.median(out[ok] / hdr[ok])
    rel = rel_error(out[ok] / scale, hdr[ok])
    print(f"DebevecMerger(recover): white-normalised scale {scale:.4f}, median {np.median(rel):.4f}")
    assert np.median(rel) < 0.02
    # white normalisation (r(255) = 1 in the reference exposure) lands near the true scale
    assert abs(scale - 1.0) < 0.05


def test_debevec_merger_recover_matches_functional_merge(scene, times):
    """Class = recover + OpenCV-style merge, rescaled to the reference exposure and r(255) = 1."""
    codes = scene[1]
    merger = DebevecMerger(crf="recover", fallback="opencv")
    out = merger(as_stack(codes))[0].permute(1, 2, 0).numpy()
    response = recover_response_debevec(codes, times)
    ref = merge_debevec(codes, times, response / response[255]).numpy()
    assert rel_error(out, ref).max() < 1e-4


def test_debevec_merger_known_crf_ground_truth(scene):
    hdr = scene[0]
    hdr_t = torch.from_numpy(hdr).permute(2, 0, 1).unsqueeze(0).float()
    stack = synthesize_stack(hdr_t, list(EVS), CRF.gamma(GAMMA))
    assert stack.reference == 2
    out = DebevecMerger(crf="known")(stack)[0].permute(1, 2, 0).numpy()
    codes = [np.round(stack.images[0, n].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for n in range(4)]
    ok = recoverable(codes)
    rel = rel_error(out[ok], hdr[ok])  # no scale fit: the known CRF fixes the scale
    print(f"DebevecMerger(known): median {np.median(rel):.4f}, p99 {np.percentile(rel, 99):.4f}, pixels {ok.mean():.3f}")
    assert np.median(rel) < 0.02


def test_debevec_merger_on_real_hdr(real_hdr_dir):
    """A real radiance map (OpenEXR sample 'Desk'), bracketed with a gamma-2.2 camera and merged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdr = read_hdr(real_hdr_dir / "openexr-images" / "ScanLines" / "Desk.exr")
    small = cv2.resize(hdr.permute(1, 2, 0).numpy(), (161, 219), interpolation=cv2.INTER_AREA).astype(np.float64)
    small = np.maximum(small, 0) / np.percentile(small, 90)  # the input exposure clips its top 10 %
    codes = gamma_bracket(small)
    ok = recoverable(codes) & (small.min(-1) > 0)
    for mode in ("recover", "known"):
        stack = as_stack(codes, crf=CRF.gamma(GAMMA))
        out = DebevecMerger(crf=mode)(stack)[0].permute(1, 2, 0).numpy()
        scale = np.median(out[ok] / small[ok]) if mode == "recover" else 1.0
        rel = rel_error(out[ok] / scale, small[ok])
        print(f"Desk.exr {mode}: median rel {np.median(rel):.4f} on {ok.mean():.3f} of pixels (scale {scale:.3f})")
        assert np.median(rel) < 0.02


def test_debevec_fallback_for_pixels_clipped_everywhere():
    codes = [np.full((4, 4, 3), 255, np.uint8)] * 3
    evs = (-2.0, 0.0, 2.0)
    stack = as_stack(codes, evs=evs, reference=1, crf=CRF.gamma(GAMMA))
    # extreme: the clipping level of the shortest exposure, crf^-1(1) / 2**-2 = 4
    out = DebevecMerger(crf="known")(stack)
    assert torch.allclose(out, torch.tensor(4.0), rtol=1e-5)
    # OpenCV rule: unweighted log-mean over exposures, exp(mean(-ln t)) = 1
    out = DebevecMerger(crf="known", fallback="opencv")(stack)
    assert torch.allclose(out, torch.tensor(1.0), rtol=1e-5)
    black = as_stack([np.zeros((4, 4, 3), np.uint8)] * 3, evs=evs, reference=1, crf=CRF.gamma(GAMMA))
    out = DebevecMerger(crf="known")(black)  # the longest exposure: floor / 4
    assert torch.all(out < 1e-8)


def test_debevec_saturation_bound_raises_merges_below_a_saturated_exposure(scene):
    """A stack whose reference clips but whose under-exposure is too dark (as a generated one can
    be): Debevec's weights drop the clipped sample and merge below the clipping level; with
    ``saturation_bound`` the merge is raised to the bound ``1 / t`` the clipped sample implies."""
    crf = CRF.gamma(GAMMA)
    evs = (-2.0, 0.0)
    dark = np.full((4, 4, 3), round(255 * (0.5 / 4) ** (1 / GAMMA)), np.uint8)  # says E = 0.5
    clipped = np.full((4, 4, 3), 255, np.uint8)  # says E >= 1
    stack = as_stack([dark, clipped], evs=evs, reference=1, crf=crf)
    plain = DebevecMerger(crf="known")(stack)
    assert torch.allclose(plain, torch.tensor(0.5), rtol=0.02)
    bounded = DebevecMerger(crf="known", saturation_bound=True)(stack)
    assert torch.allclose(bounded, torch.tensor(1.0), rtol=1e-5)
    # consistent brackets are untouched: the bound never binds where an unclipped sample agrees
    hdr_t = torch.from_numpy(scene[0]).permute(2, 0, 1).unsqueeze(0).float()
    real = synthesize_stack(hdr_t, list(EVS), crf)
    a, b = DebevecMerger(crf="known")(real), DebevecMerger(crf="known", saturation_bound=True)(real)
    changed = (b > a * (1 + 1e-6)).float().mean()
    print(f"saturation bound: {float(changed):.4f} of values raised on a consistent bracket")
    assert float(changed) < 0.01 and torch.all(b >= a * (1 - 1e-6))
    # gradients still reach the images wherever the bound does not bind
    images = real.images.clone().requires_grad_(True)
    out = DebevecMerger(crf="known", saturation_bound=True)(
        ExposureStack(images=images, ev=real.ev, reference=real.reference, crf=crf))
    out.log().mean().backward()
    assert torch.isfinite(images.grad).all() and float((images.grad != 0).float().mean()) > 0.3


@pytest.mark.parametrize("mode", ["known", "recover"])
def test_debevec_gradients_flow_to_images(scene, mode):
    stack = as_stack(scene[1], crf=CRF.gamma(GAMMA))
    images = stack.images.clone().requires_grad_(True)
    stack = ExposureStack(images=images, ev=stack.ev, reference=stack.reference, crf=stack.crf)
    out = DebevecMerger(crf=mode)(stack)
    out.log().mean().backward()
    grad = images.grad
    assert torch.isfinite(grad).all()
    assert float(grad.abs().sum()) > 0 and float((grad != 0).float().mean()) > 0.3


def test_debevec_known_crf_batched_matches_single(scene):
    hdr_t = torch.from_numpy(scene[0][:40, :48]).permute(2, 0, 1).float()
    batch = torch.stack([hdr_t, 0.5 * hdr_t])
    stack = synthesize_stack(batch, list(EVS), CRF.gamma(GAMMA))
    merger = DebevecMerger(crf="known")
    out = merger(stack)
    single = merger(synthesize_stack(0.5 * hdr_t, list(EVS), CRF.gamma(GAMMA)))
    assert torch.allclose(out[1], single[0], rtol=1e-5)


# ------------------------------------------------------------------------------------ contract


def test_check_stack_errors(scene):
    one = as_stack(scene[1][:1], evs=(0.0,), reference=0)
    for merger in (DebevecMerger(), MertensMerger()):
        with pytest.raises(ConfigError, match="at least 2 exposures"):
            merger(one)
        with pytest.raises(ConfigError, match="ExposureStack"):
            merger(torch.zeros(1, 3, 3, 8, 8))
    with pytest.raises(ConfigError, match="stack.crf"):
        DebevecMerger(crf="known")(as_stack(scene[1]))
    with pytest.raises(ConfigError, match="crf="):
        DebevecMerger(crf="gamma")
    with pytest.raises(ConfigError, match="exposure_weight"):
        MertensMerger(exposure_weight=-1.0)
    assert DebevecMerger.output_domain == "linear" and MertensMerger.output_domain == "display"
    assert DebevecMerger.differentiable and MertensMerger.differentiable
    assert isinstance(DebevecMerger(), StackMerger)


def test_stack_arity_rules():
    assert StackArity(exactly=3, reference="middle").problem(3, 1) is None
    assert "exactly 3" in StackArity(exactly=3).problem(5, 2)
    assert "middle" in StackArity(reference="middle").problem(3, 0)
    assert "at most 4" in StackArity(max_exposures=4).problem(5, 2)


def test_stack_from_times_sorts_and_references_middle():
    imgs = [torch.full((3, 2, 2), v) for v in (0.9, 0.1, 0.5)]
    stack = stack_from_times(imgs, [4.0, 0.25, 1.0])
    assert stack.images[0, :, 0, 0, 0].tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert stack.ev[0].tolist() == [-2.0, 0.0, 2.0] and stack.reference == 1
    with pytest.raises(ConfigError, match="3 images but 2 exposure times"):
        stack_from_times(imgs, [1.0, 2.0])
    with pytest.raises(ConfigError, match="positive"):
        stack_from_times(imgs, [1.0, 0.0, 2.0])


# ------------------------------------------------------------------------------------ Mertens


@pytest.mark.parametrize("size", [(97, 131), (64, 64), (1, 5), (3, 2), (2, 7)])
def test_pyr_down_matches_opencv(size):
    x = np.random.default_rng(1).random((*size, 3)).astype(np.float32)
    ours = pyr_down(torch.from_numpy(x).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    ref = cv2.pyrDown(x)
    assert ours.shape == ref.shape and np.abs(ours - ref.reshape(ours.shape)).max() < 1e-6


@pytest.mark.parametrize("size", [(97, 131), (64, 64), (1, 5), (3, 2)])
def test_pyr_up_matches_opencv_for_odd_and_even_targets(size):
    x = np.random.default_rng(2).random((*size, 3)).astype(np.float32)
    h, w = size
    for dh in (2 * h - 1, 2 * h):
        for dw in (2 * w - 1, 2 * w):
            ref = cv2.pyrUp(x, dstsize=(dw, dh)).reshape(dh, dw, 3)
            ours = pyr_up(torch.from_numpy(x).permute(2, 0, 1), (dh, dw)).permute(1, 2, 0).numpy()
            assert np.abs(ours - ref).max() < 1e-6, (dh, dw)
    with pytest.raises(ConfigError, match="2n or 2n-1"):
        pyr_up(torch.zeros(1, 4, 4), (10, 8))


def test_reflect101_index_matches_opencv_border_interpolate():
    for n in (1, 2, 3, 5):
        ours = reflect101_index(n, 3, 3).tolist()
        ref = [cv2.borderInterpolate(p, n, cv2.BORDER_REFLECT_101) for p in range(-3, n + 3)]
        assert ours == ref, n


def test_pyramid_levels_and_perfect_reconstruction():
    assert pyramid_levels(97, 131) == 6 and pyramid_levels(64, 64) == 6 and pyramid_levels(1, 9) == 0
    assert [pyramid_levels(2**k, 3000) for k in range(1, 12)] == list(range(1, 12))
    x = torch.rand(2, 3, 45, 37, dtype=torch.float64)
    lap = laplacian_pyramid(x, pyramid_levels(45, 37))
    assert [tuple(p.shape[-2:]) for p in lap][-1] == (2, 2)  # 45->23->12->6->3->2, 37->19->10->5->3->2
    assert len(gaussian_pyramid(x, 5)) == 6
    assert torch.allclose(collapse_laplacian_pyramid(lap), x, atol=1e-12)


def test_mertens_measures_match_opencv(scene):
    img = scene[1][1].astype(np.float32) / 255.0  # RGB channel order; OpenCV weights channels as stored
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    ref_c = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT_101))
    assert np.abs(contrast_measure(x)[0, 0].numpy() - ref_c).max() < 1e-5
    ref_s = np.sqrt(((img - img.mean(-1, keepdims=True)) ** 2).sum(-1))
    assert np.abs(saturation_measure(x)[0, 0].numpy() - ref_s).max() < 1e-6
    w = mertens_weights(torch.from_numpy(np.stack(scene[1])).permute(0, 3, 1, 2).unsqueeze(0).float() / 255)
    assert torch.allclose(w.sum(dim=1), torch.ones(1, 1, 120, 160))


@pytest.mark.parametrize("size", [(97, 131), (64, 90)])
@pytest.mark.parametrize("exposure_weight", [0.0, 1.0])
def test_fuse_mertens_matches_opencv(size, exposure_weight):
    codes = gamma_bracket(textured_hdr(*size, seed=size[0]))
    ref = cv2.createMergeMertens(1.0, 1.0, exposure_weight).process(codes)
    stack = as_stack(codes)
    ours = fuse_mertens(stack.images, exposure_weight=exposure_weight)[0].permute(1, 2, 0).numpy()
    err = np.abs(ours - ref).max()
    print(f"Mertens {size} we={exposure_weight}: max abs {err:.2e} (OpenCV range {ref.min():.3f}..{ref.max():.3f})")
    assert err < 1e-4
    merger = MertensMerger(exposure_weight=exposure_weight, clip=False)
    assert np.abs(merger(stack)[0].permute(1, 2, 0).numpy() - ref).max() < 1e-4
    clipped = MertensMerger(exposure_weight=exposure_weight)(stack)[0].permute(1, 2, 0).numpy()
    assert np.abs(clipped - np.clip(ref, 0, 1)).max() < 1e-4


def test_mertens_paper_defaults_and_gradients(scene):
    merger = MertensMerger()
    assert (merger.contrast_weight, merger.saturation_weight, merger.exposure_weight) == (1.0, 1.0, 1.0)
    codes = [c.copy() for c in scene[1][:3]]
    codes[1][:8, :8] = 128  # grey pixels: saturation exactly 0, sqrt must not give NaN gradients
    images = as_stack(codes, evs=(-4.0, -2.0, 0.0), reference=1).images.clone().requires_grad_(True)
    out = MertensMerger(clip=False)(ExposureStack(images=images, ev=torch.tensor([[-4.0, -2.0, 0.0]]), reference=1))
    out.square().mean().backward()
    assert torch.isfinite(images.grad).all() and float(images.grad.abs().sum()) > 0


def test_fuse_mertens_batched_and_autograd_paths_agree():
    codes_a, codes_b = gamma_bracket(textured_hdr(40, 56, seed=1)), gamma_bracket(textured_hdr(40, 56, seed=2))
    a, b = as_stack(codes_a).images, as_stack(codes_b).images
    with torch.no_grad():  # in-place fast path
        batched = fuse_mertens(torch.cat([a, b]))
        single = [fuse_mertens(a), fuse_mertens(b)]
    assert batched.shape == (2, 3, 40, 56) and batched.is_contiguous()
    assert torch.allclose(batched[0], single[0][0], atol=1e-6) and torch.allclose(batched[1], single[1][0], atol=1e-6)
    graded = fuse_mertens(a.clone().requires_grad_(True))  # out-of-place autograd path
    assert torch.allclose(graded.detach(), single[0], atol=1e-6)
    for codes, ours in ((codes_a, batched[0]), (codes_b, batched[1])):
        ref = cv2.createMergeMertens(1.0, 1.0, 1.0).process(codes)
        assert np.abs(ours.permute(1, 2, 0).numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("size", [(37, 53), (40, 57), (3, 9)])
def test_fuse_mertens_fast_path_blocks_match_autograd_path(size, monkeypatch):
    from hdrlab.models.mergers import mertens as mertens_module

    codes_a, codes_b = gamma_bracket(textured_hdr(*size, seed=3)), gamma_bracket(textured_hdr(*size, seed=4))
    images = torch.cat([as_stack(codes_a).images, as_stack(codes_b).images])
    monkeypatch.setattr(mertens_module, "UP_BLOCK_ROWS", 6)  # several blocks, an odd last one
    monkeypatch.setattr(mertens_module, "WEIGHT_BLOCK_PIXELS", 2 * 3 * size[1] * 5)
    for exposure_weight in (0.0, 1.0):
        with torch.no_grad():
            fast = fuse_mertens(images, exposure_weight=exposure_weight)
        graded = fuse_mertens(images.clone().requires_grad_(True), exposure_weight=exposure_weight).detach()
        assert fast.shape == (2, 3, *size) and fast.is_contiguous()
        assert torch.allclose(fast, graded, atol=2e-6), float((fast - graded).abs().max())
        for codes, ours in ((codes_a, fast[0]), (codes_b, fast[1])):
            ref = cv2.createMergeMertens(1.0, 1.0, exposure_weight).process(codes)
            assert np.abs(ours.permute(1, 2, 0).numpy() - ref.reshape(ours.shape[1], ours.shape[2], 3)).max() < 1e-4


def test_fuse_mertens_fast_path_work_buffers_are_reused_safely():
    """The fast path keeps its large work stacks per thread and shape: outputs never alias them, a second
    call leaves the first output alone, inference mode gets its own buffers, fake tensors none at all."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hdrlab.models.mergers import mertens as mertens_module

    a = as_stack(gamma_bracket(textured_hdr(37, 53, seed=5))).images
    b = as_stack(gamma_bracket(textured_hdr(37, 53, seed=6))).images
    reference = [fuse_mertens(x.clone().requires_grad_(True)).detach() for x in (a, b)]
    with torch.no_grad():
        first = fuse_mertens(a)
        second = fuse_mertens(b)
    with torch.inference_mode():
        third = fuse_mertens(a)
    with torch.no_grad():
        fourth = fuse_mertens(b)
    for got, ref in ((first, reference[0]), (second, reference[1]), (third, reference[0]), (fourth, reference[1])):
        assert torch.allclose(got, ref, atol=2e-6)
    cached = [t for bufs in mertens_module._WORK_CACHE.buffers.values() for t in bufs]
    assert len(mertens_module._WORK_CACHE.buffers) == 2  # no-grad and inference-mode buffers
    for out in (first, second, third, fourth):
        assert all(out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr() for t in cached)
    keys = set(mertens_module._WORK_CACHE.buffers)
    with FakeTensorMode() as mode, torch.no_grad():
        fake = fuse_mertens(mode.from_tensor(torch.empty(1, 3, 3, 41, 60)))
    assert fake.shape == (1, 3, 41, 60) and set(mertens_module._WORK_CACHE.buffers) == keys
    with torch.no_grad():
        meta = fuse_mertens(torch.empty(1, 3, 3, 41, 60, device="meta"))
    assert meta.shape == (1, 3, 41, 60) and set(mertens_module._WORK_CACHE.buffers) == keys


def test_fuse_mertens_work_buffer_cache_is_bounded(monkeypatch):
    from hdrlab.models.mergers import mertens as mertens_module

    images = as_stack(gamma_bracket(textured_hdr(37, 53, seed=7))).images
    with torch.no_grad():
        expected = fuse_mertens(images)
        monkeypatch.setattr(mertens_module, "_WORK_CACHE_BYTES", 1000)  # smaller than one buffer set
        mertens_module._WORK_CACHE.buffers.clear()
        assert torch.equal(fuse_mertens(images), expected)
        assert not mertens_module._WORK_CACHE.buffers
        monkeypatch.setattr(mertens_module, "_WORK_CACHE_BYTES", 256 << 20)
        for size in ((37, 53), (38, 53), (39, 53)):
            fuse_mertens(torch.rand(1, 3, 3, *size))
    assert len(mertens_module._WORK_CACHE.buffers) == mertens_module._WORK_CACHE_SIZE
    assert {key[4] for key in mertens_module._WORK_CACHE.buffers} == {38, 39}  # least recently used dropped


def test_pyr_down_up_keep_leading_dims():
    x = torch.rand(2, 4, 3, 17, 22)
    down = pyr_down(x)
    assert down.shape == (2, 4, 3, 9, 11)
    ref = cv2.pyrDown(x[1, 2].permute(1, 2, 0).numpy())
    assert np.abs(down[1, 2].permute(1, 2, 0).numpy() - ref).max() < 1e-6
    up = pyr_up(down, (17, 22))
    assert up.shape == x.shape
    ref_up = cv2.pyrUp(down[0, 3].permute(1, 2, 0).contiguous().numpy(), dstsize=(22, 17))
    assert np.abs(up[0, 3].permute(1, 2, 0).numpy() - ref_up).max() < 1e-6


# ------------------------------------------------------------------ fast paths (solver, blocks, benchmark bracket)


def _bench_bracket(height: int, width: int) -> list[np.ndarray]:
    """benchmarks/bench_mergers.py's bracket (smooth ~10-stop radiance, gamma 2.2, EV -2/0/+2), duplicated."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=np.float64)[:, None, None]
    base = np.exp(2.5 * np.sin(3 * xx + 1) * np.cos(2 * yy) + 1.5 * xx - 1.5)
    hdr = np.stack([0.8 * base, base, 1.3 * base], axis=-1) * (1 + 0.05 * rng.standard_normal((height, width, 3)))
    return [np.round(255 * np.clip(hdr * 2.0**ev, 0, 1) ** (1 / 2.2)).astype(np.uint8) for ev in (-2.0, 0.0, 2.0)]


def test_fuse_mertens_matches_opencv_at_1024x768_on_benchmark_bracket():
    codes = _bench_bracket(768, 1024)
    ref = cv2.createMergeMertens(1.0, 1.0, 1.0).process(codes)
    # OpenCV's own float conversion, code * float32(1/255) (see the mertens module docstring)
    images = torch.from_numpy(np.stack(codes)).permute(0, 3, 1, 2).unsqueeze(0).float() * np.float32(1.0 / 255.0)
    stack = ExposureStack(images=images, ev=torch.tensor([[-2.0, 0.0, 2.0]]), reference=1)
    with torch.no_grad():
        ours = MertensMerger(clip=False)(stack)[0].permute(1, 2, 0).numpy()
    assert float(np.abs(ours - ref).max()) <= 1e-4


def _dense_lstsq_response(z, log_t, table, smoothness):
    from hdrlab.models.mergers.debevec import debevec_system

    a, b = debevec_system(z, log_t, table, smoothness)
    return torch.linalg.lstsq(a, b.unsqueeze(-1), driver="gelsd").solution[..., :256, 0]


@pytest.mark.parametrize("kind,smoothness", [("hat", 10.0), ("opencv_legacy", 10.0), ("hat", 1.0)])
def test_normal_equation_solve_matches_dense_lstsq(scene, times, kind, smoothness):
    from hdrlab.models.mergers.debevec import solve_response_normal_equations

    codes = torch.from_numpy(np.stack(scene[1]))
    pts = grid_sample_points(120, 160, 70)
    z = codes[:, pts[:, 0], pts[:, 1], :].long().permute(2, 1, 0)
    log_t = torch.log(torch.from_numpy(times).double()).expand(3, -1)
    table = debevec_weight_table(kind)
    g, ok = solve_response_normal_equations(z, log_t, table, smoothness)
    ref = _dense_lstsq_response(z, log_t, table, smoothness)
    assert bool(ok.all())
    assert float((g - ref).abs().max()) < 1e-6
    assert float(g[:, 128].abs().max()) == 0.0  # the gauge is exact


def test_smoothness_gram_equals_dense_product():
    from hdrlab.models.mergers.debevec import smoothness_gram

    table = debevec_weight_table("hat")
    k = torch.arange(254)
    rows = torch.zeros(254, 256, dtype=torch.float64)
    for offset, coeff in ((0, 1.0), (1, -2.0), (2, 1.0)):
        rows[k, k + offset] = coeff * 10.0 * table[k + 1]
    dense = rows.T @ rows
    dense[128, 128] += 1.0
    assert torch.allclose(smoothness_gram(table, 10.0), dense, rtol=1e-12, atol=1e-9)


def test_solve_response_falls_back_to_lstsq_when_rank_deficient(scene, times):
    from hdrlab.models.mergers.debevec import solve_response, solve_response_normal_equations

    codes = torch.from_numpy(np.stack(scene[1]))
    pts = grid_sample_points(120, 160, 70)
    z = codes[:, pts[:, 0], pts[:, 1], :].long().permute(2, 1, 0)
    log_t = torch.log(torch.from_numpy(times).double()).expand(3, -1)
    table = debevec_weight_table("hat")
    _, ok = solve_response_normal_equations(z, log_t, table, 0.0)  # lambda = 0: unseen codes are free
    assert not bool(ok.all())
    g = solve_response(z, log_t, table, 0.0)
    # the minimum-norm solution (gelsd), up to its own rounding in the near-null directions
    assert torch.allclose(g, _dense_lstsq_response(z, log_t, table, 0.0), atol=1e-4)


def test_debevec_recover_blocked_no_grad_equals_autograd_path(scene, monkeypatch):
    from hdrlab.models.mergers import debevec as debevec_module

    stack = as_stack(scene[1])
    merger = DebevecMerger(crf="recover")
    monkeypatch.setattr(debevec_module, "BLOCK_ELEMENTS", 4 * 160 * 4 * 3)  # blocks of 4 rows
    with torch.no_grad():
        blocked = merger(stack)
    images = stack.images.clone().requires_grad_(True)
    graded = merger(ExposureStack(images=images, ev=stack.ev, reference=stack.reference))
    assert torch.allclose(blocked, graded.detach(), rtol=1e-6)
    # the lookup equals lut_apply's piecewise-linear ln response at 255 x
    from hdrlab.camera.lut import lut_apply

    log_r = merger.recover_log_response(stack)
    x = torch.linspace(0, 1, 1001).view(1, 1, 1, 1001).expand(1, 3, 1, 1001)
    ref = lut_apply(x, log_r)
    intercept, slope = debevec_module._lerp_tables(log_r, torch.zeros(1, 1), torch.float32)
    p = x * 255.0
    idx = p.to(torch.int32) + (torch.arange(3, dtype=torch.int32) * 256).view(1, 3, 1, 1)
    got = intercept[idx.long()] + p * slope[idx.long()]
    assert torch.allclose(got, ref, atol=1e-4)
