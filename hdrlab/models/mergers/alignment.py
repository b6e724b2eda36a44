"""Optical-flow alignment of a three-exposure bracket to its middle (reference) exposure, a stand-in
for the pre-processing of Kalantari & Ramamoorthi 2017 (official MATLAB ``ComputeOpticalFlow.m``,
``PrepareInputFeatures.m``), reusable by any merger of ``[low, reference, high]`` LDR images.

Official pipeline (paraphrased), with the gamma camera model ``LDR -> HDR: clip(I)^g / t`` and
``HDR -> LDR: clip(H t)^(1/g)`` (``g = 2.2``):

1. Exposure-adjust each pair to its brighter member: ``low`` is re-exposed to the reference's
   exposure; the reference is re-exposed to ``high``'s exposure (:func:`reexpose`).
2. Flows ``ref -> low`` and ``ref -> high`` (Ce Liu's ``Coarse2FineTwoFrames``, default parameters
   alpha 0.012, ratio 0.75, minWidth 20, 7/1/30 iterations), i.e. the flow ``f`` with
   ``target(x) ~ source(x + f(x))`` for ``target`` the (adjusted) reference.
3. Warp ``low`` and ``high`` to the reference (bicubic ``interp2``, clamped to ``[0, 1]``); samples
   that fall outside the frame are invalid (NaN).
4. Fill invalid pixels with the reference re-exposed to that image's exposure.

Here (:func:`align_to_reference`):

* Flow (step 2): OpenCV's DIS optical flow (Kroeger et al. ECCV 2016, ``cv2.DISOpticalFlow``,
  ``PRESET_MEDIUM``) on the 8-bit luma of the exposure-adjusted pair. Deviation: Liu's
  coarse-to-fine variational flow is not available in Python. DIS is chosen over Farneback because
  it is also coarse-to-fine and ends with a variational refinement (the closest OpenCV relative of
  Liu's method), and is fast on CPU. It runs on detached values (NumPy), one pair per call, so the
  flow itself carries no gradient.
* Warp (step 3): ``torch.nn.functional.grid_sample`` (bicubic, ``align_corners=True``, clamped to
  ``[0, 1]``), so gradients flow from the aligned images back to ``low`` and ``high``; a sample is
  invalid when ``x + f`` leaves ``[0, W - 1] x [0, H - 1]`` (MATLAB ``interp2``'s NaN region).
* Fill (step 4): as the official code, with the differentiable :func:`reexpose` of the reference.

The flow needs real pixel values: shape-only runs (``FakeTensorMode``, meta tensors) raise
:class:`~hdrlab.errors.ConfigError`.

Shapes: images ``[B, 3, 3, H, W]`` in ``[0, 1]`` (low, reference, high), exposure times ``t [B, 3]``
(any common unit). Flows ``[B, 2, H, W]`` in pixels, channel 0 = x (width), 1 = y (height).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from torch._subclasses.fake_tensor import is_fake

from hdrlab.errors import ConfigError

__all__ = ["align_to_reference", "estimate_flow", "reexpose", "warp_with_flow"]

#: smallest value raised to ``1 / gamma`` (keeps the derivative of the power finite at 0)
_POW_FLOOR = 1e-12


def reexpose(ldr: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *, gamma: float = 2.2) -> torch.Tensor:
    """An LDR image at another exposure with the gamma model (official ``LDRtoLDR``):
    ``clip(clip(ldr, 0, 1)^gamma * t_to / t_from, 0, 1)^(1 / gamma)``.

    Args:
        ldr: ``[B, ..., H, W]`` in ``[0, 1]``.
        t_from: exposure time of ``ldr``, broadcastable to ``ldr`` (e.g. ``[B, 1, 1, 1]``).
        t_to: the wanted exposure time, broadcastable likewise.
        gamma: camera gamma (official 2.2).
    """
    radiance = ldr.clamp(0.0, 1.0) ** gamma * (t_to / t_from)
    return radiance.clamp(_POW_FLOOR, 1.0) ** (1.0 / gamma)


def _luma_u8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` RGB in [0, 1] -> ``[H, W]`` uint8 luma (OpenCV's BT.601 weights)."""
    rgb = (image.detach().float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy()), cv2.COLOR_RGB2GRAY)


def estimate_flow(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """DIS optical flow ``f [B, 2, H, W]`` with ``target(x) ~ source(x + f(x))`` (detached).

    Args:
        target: ``[B, 3, H, W]`` in ``[0, 1]`` (the image to align to).
        source: ``[B, 3, H, W]`` in ``[0, 1]``, at the same exposure as ``target``.

    Returns:
        Flow in pixels on ``target``'s device and dtype; channel 0 is x, channel 1 is y.
    """
    if target.shape != source.shape or target.dim() != 4 or target.shape[1] != 3:
        raise ConfigError(
            f"estimate_flow: target and source must both be [B, 3, H, W], got {tuple(target.shape)} and {tuple(source.shape)}"
        )
    if is_fake(target) or target.device.type == "meta":
        raise ConfigError(
            "estimate_flow runs OpenCV on real pixel values and cannot trace a shape-only (FakeTensor / meta) run; "
            "use alignment='none' to count sizes and FLOPs"
        )
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flows = []
    for b in range(target.shape[0]):
        flow = dis.calc(_luma_u8(target[b]), _luma_u8(source[b]), None)  # [H, W, 2] (x, y)
        flows.append(torch.from_numpy(np.ascontiguousarray(flow)).permute(2, 0, 1))
    return torch.stack(flows).to(device=target.device, dtype=target.dtype)


def warp_with_flow(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` at ``x + flow(x)`` (bicubic, clamped to [0, 1]); differentiable in ``image``.

    Args:
        image: ``[B, C, H, W]``.
        flow: ``[B, 2, H, W]`` pixels (x, y), treated as a constant.

    Returns:
        ``(warped [B, C, H, W], invalid [B, 1, H, W] bool)``: ``invalid`` marks samples outside the frame.
    """
    b, _, h, w = image.shape
    flow = flow.detach().to(image.dtype)
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=image.dtype),
                            torch.arange(w, device=image.device, dtype=image.dtype), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    invalid = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    grid = torch.stack([2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0], dim=-1)
    warped = F.grid_sample(image, grid, mode="bicubic", padding_mode="border", align_corners=True)
    return warped.clamp(0.0, 1.0), invalid.unsqueeze(1)


def align_to_reference(
    images: torch.Tensor, times: torch.Tensor, *, gamma: float = 2.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Align ``low`` and ``high`` to the middle exposure (module docstring, steps 1-4).

    Args:
        images: ``[B, 3, 3, H, W]`` LDR in ``[0, 1]``, ascending exposure (low, reference, high).
        times: ``[B, 3]`` exposure times, ascending.
        gamma: camera gamma of the exposure adjustment (official 2.2).

    Returns:
        ``(aligned [B, 3, 3, H, W], invalid [B, 2, 1, H, W] bool)``: the reference is passed
        through; ``invalid[:, 0]`` / ``invalid[:, 1]`` mark the pixels of low / high that were
        filled with the re-exposed reference.
    """
    if images.dim() != 5 or images.shape[1] != 3 or images.shape[2] != 3:
        raise ConfigError(f"align_to_reference needs images [B, 3, 3, H, W] (low, reference, high), got {tuple(images.shape)}")
    if times.shape != images.shape[:2]:
        raise ConfigError(f"align_to_reference needs times [B, 3] = {tuple(images.shape[:2])}, got {tuple(times.shape)}")
    low, ref, high = images.unbind(1)
    t = times.to(images.dtype).view(-1, 3, 1, 1, 1)
    t_low, t_ref, t_high = t.unbind(1)
    with torch.no_grad():
        flow_low = estimate_flow(reexpose(ref, t_ref, t_ref, gamma=gamma), reexpose(low, t_low, t_ref, gamma=gamma))
        flow_high = estimate_flow(reexpose(ref, t_ref, t_high, gamma=gamma), reexpose(high, t_high, t_high, gamma=gamma))
    warped_low, invalid_low = warp_with_flow(low, flow_low)
    warped_high, invalid_high = warp_with_flow(high, flow_high)
    aligned_low = torch.where(invalid_low, reexpose(ref, t_ref, t_low, gamma=gamma), warped_low)
    aligned_high = torch.where(invalid_high, reexpose(ref, t_ref, t_high, gamma=gamma), warped_high)
    return torch.stack([aligned_low, ref, aligned_high], dim=1), torch.stack([invalid_low, invalid_high], dim=1)
