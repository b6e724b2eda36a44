"""Peak tensor memory and FLOPs of a training step, an inference pass or a validation pass, without a GPU.

The step runs on **fake CPU tensors** (``torch._subclasses.fake_tensor.FakeTensorMode``: shapes
and dtypes only, no storage, no compute) under ``torch.distributed._tools.mem_tracker.MemTracker``,
which follows every storage's life time with the caching allocator's 512-byte rounding and
reports the peak split into parameters, buffers, gradients, optimizer states, activations,
temporaries and inputs. The same code on real tensors (:func:`measure_peak_memory`) gives the
reference the tests compare against (identical numbers; on a 9.8 M-parameter U-Net at batch 8,
256 px, 0.4 s instead of 25 s).

Training: two full steps (forward under autocast, backward, ``optimizer.step()`` with real Adam
state, ``zero_grad(set_to_none=True)``); the peak is taken over the **second** step, when the
optimizer state exists. FLOPs (forward + backward) come from ``torch.utils.flop_counter.FlopCounterMode``
on the first step. Precision: ``torch.autocast('cpu', bfloat16 | float16)``; CPU autocast casts the
same op classes (convolutions, matmuls) to 16 bit as CUDA's, so byte sizes carry over (the
forward footprint on fake CUDA tensors matched the fake CPU one; a fake CUDA backward needs a real
CUDA context, pytorch/pytorch#92627); fp16 runs without a
GradScaler (its state is a few scalars). CUDA context, cuDNN workspace and fragmentation are not
tensors and are added by :data:`hdrlab.budget.plan.CUDA_OVERHEAD`.

Models must be buildable without files under fake mode (no ``torch.load``): build them with
``pretrained=False``; the parameter shapes, hence the memory, are the same.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from hdrlab.budget.plan import PlanCandidate, autocast_context, enable_activation_checkpointing, normalize_precision
from hdrlab.budget.tiling import tiled_forward
from hdrlab.errors import ConfigError

__all__ = [
    "MEASURED_METRICS",
    "METRIC_NETWORKS",
    "MemoryEstimate",
    "PeakMemTracker",
    "build_metric_network",
    "cvvdp_memory_model",
    "estimate_inference_memory",
    "estimate_peak_memory",
    "estimate_validation_memory",
    "inference_memory_model",
    "make_optimizer",
    "measure_cvvdp_update_memory",
    "measure_peak_memory",
    "training_estimator",
]

#: MemTracker reference types -> our category names.
_CATEGORY = {
    "Parameter": "param",
    "Buffer": "buffer",
    "Gradient": "grad",
    "Optstate": "optimizer",
    "Activation": "activation",
    "Temp": "temp",
    "Other": "input",
}

#: Frozen networks :func:`estimate_validation_memory` knows (random weights; same memory as trained ones).
METRIC_NETWORKS = ("lpips_alex", "vgg16")
#: Metrics that cannot run on fake tensors; :func:`estimate_validation_memory` uses a measured model.
MEASURED_METRICS = ("cvvdp",)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak tensor memory of one step.

    Attributes:
        peak_bytes: peak of live tensor storage (bytes, allocator-rounded).
        by_category: the peak split into ``param``, ``buffer``, ``grad``, ``optimizer``,
            ``activation``, ``temp`` and ``input`` (inputs, targets and other external tensors).
        flops_per_step: FLOPs of forward + backward (training) or of the forward pass(es).
        mode: ``"train"``, ``"inference"`` or ``"validation"``.
        batch, patch, precision, checkpointing: the configuration measured (``patch`` is the
            square side for training, ``(H, W)`` otherwise).
        fake: True when measured on fake tensors (an estimate), False for real tensors.
        seconds: wall time of the measurement.
    """

    peak_bytes: int
    by_category: dict[str, int]
    flops_per_step: int
    mode: str
    batch: int
    patch: int | tuple[int, int]
    precision: str
    checkpointing: bool = False
    fake: bool = True
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


class _NoHook:
    """Placeholder hook handle for frozen parameters."""

    def remove(self) -> None:
        return None


_NO_HOOK = _NoHook()


class PeakMemTracker(MemTracker):
    """``MemTracker`` that keeps only the global peak snapshot.

    The stock tracker also refreshes every tracked module's local peak on every dispatched op,
    which costs O(ops x modules) (CF-Net at width 1/8: 500 s for two steps, 19 M dictionary
    lookups); per-module peaks are not used here. Storage accounting, categories and the global
    peak are the stock ones. Frozen parameters get no gradient hook (the stock tracker raises
    "cannot register a hook on a tensor that doesn't require gradient").
    """

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True) -> tuple[int, int]:
        # Frozen parameters (metric / loss networks) cannot take gradient hooks; mark them as hooked.
        for param in module.parameters():
            if not param.requires_grad and self._param_to_grad_hook_handles.get(param, None) is None:
                self._param_to_grad_hook_handles[param] = (_NO_HOOK, _NO_HOOK)
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def _update_peak_stats(self, peak_state) -> None:  # noqa: ARG002 - signature of the base class
        for dev, snap in self._curr_mem_snap.items():
            total = snap[_TOTAL_KEY]
            if self._peak_mem.get(dev, 0) < total:
                self._peak_mem[dev] = total
                self._peak_mem_snap[dev] = dict(snap)


def _peak(tracker: MemTracker) -> tuple[int, dict[str, int]]:
    total, cats = 0, {name: 0 for name in _CATEGORY.values()}
    for snap in tracker.get_tracker_snapshot("peak").values():
        for key, value in snap.items():
            name = getattr(key, "value", key)
            if name == "Total":
                total += int(value)
            elif name in _CATEGORY:
                cats[_CATEGORY[name]] += int(value)
    return total, cats


def make_optimizer(name: str, params, *, foreach: bool = True, lr: float = 1e-4) -> torch.optim.Optimizer:
    """The optimizer whose state is counted: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).

    ``foreach=True`` is the CUDA default (multi-tensor kernels with their temporaries).
    """
    params = [p for p in params if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=foreach)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=foreach)
    raise ConfigError(f"optimizer {name!r} is unknown to the memory estimator; use 'adam', 'adamw' or 'sgd'")


def _loss_of(out: Any) -> torch.Tensor:
    if isinstance(out, Mapping):
        out = out["loss"]
    if not isinstance(out, torch.Tensor) or out.dim() != 0:
        raise ConfigError("the training step must return a scalar loss tensor (or a dict with 'loss')")
    return out


def _training_step_memory(
    build_model: Callable[[], nn.Module],
    step: Callable[[nn.Module, Any], torch.Tensor],
    make_batch: Callable[[int, int], Any],
    *,
    batch: int,
    patch: int,
    precision: str,
    checkpointing: bool,
    optimizer: str,
    foreach: bool,
    fake: bool,
) -> MemoryEstimate:
    precision = normalize_precision(precision)
    start = time.perf_counter()
    gc.collect()
    gc.disable()  # cycles freed by the collector at random moments would make real runs differ
    try:
        return _training_step_memory_inner(
            build_model, step, make_batch, batch=batch, patch=patch, precision=precision,
            checkpointing=checkpointing, optimizer=optimizer, foreach=foreach, fake=fake, start=start,
        )
    finally:
        gc.enable()


def _training_step_memory_inner(build_model, step, make_batch, *, batch, patch, precision, checkpointing,
                                optimizer, foreach, fake, start) -> MemoryEstimate:
    with FakeTensorMode() if fake else contextlib.nullcontext():
        model = build_model().train()
        if checkpointing:
            enable_activation_checkpointing(model)
        data = make_batch(batch, patch)
        opt = make_optimizer(optimizer, model.parameters(), foreach=foreach)
        tracker = PeakMemTracker()
        tracker.track_external(model, opt, *[t for t in tree_flatten(data)[0] if isinstance(t, torch.Tensor)])
        flops = FlopCounterMode(display=False)

        def one_step() -> None:
            with autocast_context(precision):
                loss = _loss_of(step(model, data))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        with tracker:
            with flops:
                one_step()
        tracker.reset_mod_stats()  # required before re-entering (module stats keyed per pass)
        with tracker:  # re-entering starts the peak at the current (optimizer state allocated) level
            one_step()
        peak, cats = _peak(tracker)
    return MemoryEstimate(
        peak_bytes=peak,
        by_category=cats,
        flops_per_step=int(flops.get_total_flops()),
        mode="train",
        batch=batch,
        patch=patch,
        precision=precision,
        checkpointing=checkpointing,
        fake=fake,
        seconds=time.perf_counter() - start,
    )


def estimate_peak_memory(
    build_model: Callable[[], nn.Module],
    step: Callable[[nn.Module, Any], torch.Tensor],
    make_batch: Callable[[int, int], Any],
    *,
    batch: int,
    patch: int,
    precision: str = "32",
    checkpointing: bool = False,
    optimizer: str = "adam",
    foreach: bool = True,
) -> MemoryEstimate:
    """Peak tensor memory and FLOPs of one training step, on fake tensors (no allocation, no GPU).

    Args:
        build_model: returns the trainable module (a plain model or a LightningModule), built
            without loading files.
        step: ``(model, batch) -> scalar loss`` (forward + loss; backward and the optimizer step
            are done here). A dict with ``"loss"`` is accepted.
        make_batch: ``(batch, patch) -> batch`` (dict / tuple of tensors, e.g. an HDRBatch of
            ``[batch, 3, patch, patch]`` tensors).
        batch: micro-batch.
        patch: training patch side.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        checkpointing: apply :func:`hdrlab.budget.plan.enable_activation_checkpointing`.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        foreach: multi-tensor optimizer kernels (the CUDA default).

    Returns:
        :class:`MemoryEstimate` (``mode="train"``).
    """
    return _training_step_memory(
        build_model, step, make_batch, batch=batch, patch=patch, precision=precision,
        checkpointing=checkpointing, optimizer=optimizer, foreach=foreach, fake=True,
    )


def measure_peak_memory(
    build_model: Callable[[], nn.Module],
    step: Callable[[nn.Module, Any], torch.Tensor],
    make_batch: Callable[[int, int], Any],
    *,
    batch: int,
    patch: int,
    precision: str = "32",
    checkpointing: bool = False,
    optimizer: str = "adam",
    foreach: bool = True,
) -> MemoryEstimate:
    """The same step as :func:`estimate_peak_memory` on real CPU tensors (reference / calibration; slow)."""
    return _training_step_memory(
        build_model, step, make_batch, batch=batch, patch=patch, precision=precision,
        checkpointing=checkpointing, optimizer=optimizer, foreach=foreach, fake=False,
    )


def training_estimator(
    build_model: Callable[[], nn.Module],
    step: Callable[[nn.Module, Any], torch.Tensor],
    make_batch: Callable[[int, int], Any],
    *,
    optimizer: str = "adam",
    foreach: bool = True,
) -> Callable[[PlanCandidate], int]:
    """The planner's estimator: ``PlanCandidate -> peak tensor bytes`` via :func:`estimate_peak_memory`."""

    def estimate(candidate: PlanCandidate) -> int:
        return estimate_peak_memory(
            build_model, step, make_batch, batch=candidate.batch, patch=candidate.patch,
            precision=candidate.precision, checkpointing=candidate.checkpointing,
            optimizer=optimizer, foreach=foreach,
        ).peak_bytes

    return estimate


def estimate_inference_memory(
    build_model: Callable[[], nn.Module],
    forward: Callable[..., torch.Tensor],
    *,
    image_hw: tuple[int, int],
    tile: int | None = None,
    overlap: int = 0,
    stride: int = 1,
    precision: str = "32",
    batch: int = 1,
    in_channels: int = 3,
    global_fn: Callable[[nn.Module, torch.Tensor], Any] | None = None,
    global_size: int = 512,
) -> MemoryEstimate:
    """Peak tensor memory of inference (``torch.no_grad``) on an image, whole or tiled.

    Args:
        build_model: returns the module (no file loading).
        forward: ``(model, image [B, C, h, w]) -> [B, C_out, s h, s w]``; with ``global_fn``
            called as ``forward(model, tile, global_out)``.
        image_hw: full image ``(H, W)``.
        tile: tile side for :func:`hdrlab.budget.tiling.tiled_forward` (None: whole image).
        overlap, stride, global_size: passed to ``tiled_forward``.
        precision: autocast precision.
        batch: images per pass.
        in_channels: image channels.
        global_fn: ``(model, thumbnail) -> global_out`` (tiled only).

    Returns:
        :class:`MemoryEstimate` (``mode="inference"``); includes the full-image input and the
        blended output.
    """
    precision = normalize_precision(precision)
    start = time.perf_counter()
    with FakeTensorMode():
        model = build_model().eval()
        image = torch.rand(batch, in_channels, *image_hw)
        tracker = PeakMemTracker()
        tracker.track_external(model, image)
        flops = FlopCounterMode(display=False)
        with tracker, flops, torch.no_grad(), autocast_context(precision):
            if tile is None:
                out = forward(model, image)
            else:
                gfn = None if global_fn is None else (lambda thumb: global_fn(model, thumb))

                def tile_forward(t: torch.Tensor, *g: Any) -> torch.Tensor:
                    tracker.reset_mod_stats()  # each tile is a new root call for MemTracker
                    return forward(model, t, *g)

                out = tiled_forward(
                    tile_forward, image, tile=tile, overlap=overlap, stride=stride,
                    global_fn=gfn, global_size=global_size,
                )
            del out
        peak, cats = _peak(tracker)
    return MemoryEstimate(
        peak_bytes=peak, by_category=cats, flops_per_step=int(flops.get_total_flops()), mode="inference",
        batch=batch, patch=tuple(image_hw), precision=precision, seconds=time.perf_counter() - start,
        extra={"tile": tile, "overlap": overlap},
    )


def inference_memory_model(
    build_model: Callable[[], nn.Module],
    forward: Callable[..., torch.Tensor],
    *,
    sizes: Sequence[int] = (128, 256),
    precision: str = "32",
    in_channels: int = 3,
) -> tuple[int, float]:
    """Affine model ``peak = fixed + per_pixel * H W`` of untiled inference from two fake runs.

    Args:
        build_model, forward, precision, in_channels: as :func:`estimate_inference_memory`.
        sizes: two square sides (multiples of the model's stride).

    Returns:
        ``(fixed_bytes, per_pixel_bytes)`` for :func:`hdrlab.budget.tiling.plan_tiles`.
    """
    a, b = sorted(sizes)[:2]
    pa = estimate_inference_memory(build_model, forward, image_hw=(a, a), precision=precision, in_channels=in_channels)
    pb = estimate_inference_memory(build_model, forward, image_hw=(b, b), precision=precision, in_channels=in_channels)
    per_pixel = (pb.peak_bytes - pa.peak_bytes) / (b * b - a * a)
    return max(0, math.floor(pa.peak_bytes - per_pixel * a * a)), per_pixel


class _LPIPSAlexTrunk(nn.Module):
    """LPIPS(alex) memory stand-in: the ``lpips`` package network, random trunk and random heads."""

    def __init__(self) -> None:
        super().__init__()
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision 'pretrained' deprecation inside lpips
            self.net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred.clamp(0, 1) * 2 - 1, target.clamp(0, 1) * 2 - 1)


def build_metric_network(name: str) -> nn.Module:
    """A frozen metric / loss network with random weights (never downloads): ``pred, target -> score``.

    Args:
        name: ``"lpips_alex"`` (the ``lpips`` package's AlexNet LPIPS) or ``"vgg16"``
            (:class:`hdrlab.losses.perceptual.VGGPerceptualLoss`, relu1_2...relu4_3).

    Raises:
        ConfigError: unknown name.
    """
    if name == "lpips_alex":
        net: nn.Module = _LPIPSAlexTrunk()
    elif name == "vgg16":
        from hdrlab.losses.perceptual import VGGPerceptualLoss

        net = VGGPerceptualLoss(kind="vgg16", pretrained=False)
    else:
        raise ConfigError(f"metric network {name!r} is unknown; use one of {METRIC_NETWORKS}")
    return net.eval().requires_grad_(False)


def measure_cvvdp_update_memory(size: int, *, display_name: str = "standard_hdr_linear") -> MemoryEstimate:
    """Real peak tensor memory of one :class:`hdrlab.metrics.perceptual.CVVDP` ``update`` on CPU.

    ColorVideoVDP (``pycvvdp``) converts through NumPy and Python scalars and cannot run under
    ``FakeTensorMode``, so its memory is **measured**: a real ``update(pred, target)`` on a
    ``[1, 3, size, size]`` linear pair (radiance in ``[0, 4]``, ``pred = 1.1 * target``) under
    :class:`PeakMemTracker`. The ``pycvvdp`` model object is built (and cached) beforehand; its
    resident tensors are a few hundred bytes.

    Args:
        size: square side of the pair.
        display_name: cvvdp display (see :class:`hdrlab.metrics.perceptual.CVVDP`).

    Returns:
        :class:`MemoryEstimate` (``mode="validation"``, ``fake=False``): ``by_category["input"]``
        is the pair, the rest (``activation``/``temp``) the metric's own transient tensors.
    """
    from hdrlab.metrics.perceptual import CVVDP, _cvvdp_model

    _cvvdp_model(display_name, "cpu")  # build outside the measurement (module-level cache)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, size, size, generator=generator) * 4.0
    pred = target * 1.1
    metric = CVVDP(display_name=display_name)
    gc.collect()
    gc.disable()
    try:
        tracker = PeakMemTracker()
        tracker.track_external(pred, target)
        with tracker:
            metric.update(pred, target)
        peak, cats = _peak(tracker)
    finally:
        gc.enable()
    return MemoryEstimate(
        peak_bytes=peak, by_category=cats, flops_per_step=0, mode="validation", batch=1, patch=(size, size),
        precision="32", fake=False, seconds=time.perf_counter() - start, extra={"metric": "cvvdp"},
    )


@functools.lru_cache(maxsize=8)
def cvvdp_memory_model(
    *, sizes: tuple[int, int] = (128, 256), display_name: str = "standard_hdr_linear"
) -> tuple[int, float]:
    """Affine model ``transient = fixed + per_pixel * H W`` of one ColorVideoVDP image, measured.

    Two real CPU measurements (:func:`measure_cvvdp_update_memory`, about 2 s each) at the square
    ``sizes``; the transient excludes the input pair (the caller already holds it). Cached per
    process. This is a **measured-and-extrapolated** model, not a fake-tensor trace: cvvdp's
    pyramid depth grows with the image (one level per doubling), which the affine fit absorbs
    only approximately far outside the measured range (within 0.1 % at 192^2 here).

    Args:
        sizes: two square sides.
        display_name: cvvdp display.

    Returns:
        ``(fixed_bytes, per_pixel_bytes)``.
    """
    a, b = sorted(sizes)[:2]
    if a == b:
        raise ConfigError(f"cvvdp_memory_model needs two different sizes, got {sizes}")

    def transient(size: int) -> int:
        est = measure_cvvdp_update_memory(size, display_name=display_name)
        return est.peak_bytes - est.by_category["input"]

    ta, tb = transient(a), transient(b)
    per_pixel = (tb - ta) / (b * b - a * a)
    return max(0, math.floor(ta - per_pixel * a * a)), per_pixel


def estimate_validation_memory(
    build_model: Callable[[], nn.Module],
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    image_hw: tuple[int, int],
    precision: str = "32",
    batch: int = 1,
    in_channels: int = 3,
    metric_networks: Sequence[str] = METRIC_NETWORKS,
) -> MemoryEstimate:
    """Peak tensor memory of validation at full resolution: forward, then the frozen metric networks.

    The model and the metric networks are resident together (as in a LightningModule); the
    prediction and the target stay alive while each network scores them under ``torch.no_grad``.

    Args:
        build_model, forward: as :func:`estimate_inference_memory` (untiled).
        image_hw: validation image size.
        precision: autocast precision of the model forward (metrics run in fp32).
        batch: images per validation batch.
        in_channels: image channels.
        metric_networks: names from :data:`METRIC_NETWORKS` and :data:`MEASURED_METRICS`.
            ``"cvvdp"`` (ColorVideoVDP) cannot be traced on fake tensors: its transient memory
            comes from :func:`cvvdp_memory_model` (real CPU measurements at two small sizes,
            extrapolated affinely in the pixel count), added to the traced resident memory
            (model, other networks, input, prediction, target) at the moment it runs, after the
            traced networks, one image at a time as :class:`hdrlab.metrics.perceptual.CVVDP` does.

    Returns:
        :class:`MemoryEstimate` (``mode="validation"``); ``extra["networks"]`` lists the networks,
        ``extra["cvvdp_bytes"]`` the modelled cvvdp peak (resident + transient) when requested.
    """
    precision = normalize_precision(precision)
    unknown = [n for n in metric_networks if n not in METRIC_NETWORKS + MEASURED_METRICS]
    if unknown:
        raise ConfigError(f"metric network(s) {unknown} unknown; use names from {METRIC_NETWORKS + MEASURED_METRICS}")
    with_cvvdp = "cvvdp" in metric_networks
    cvvdp_model = cvvdp_memory_model() if with_cvvdp else None  # real measurement, outside fake mode
    start = time.perf_counter()
    resident = 0
    with FakeTensorMode():
        model = build_model().eval()
        nets = [build_metric_network(name) for name in metric_networks if name in METRIC_NETWORKS]
        image = torch.rand(batch, in_channels, *image_hw)
        tracker = PeakMemTracker()
        tracker.track_external(model, *nets, image)
        flops = FlopCounterMode(display=False)
        with tracker, flops, torch.no_grad():
            with autocast_context(precision):
                pred = forward(model, image)
            pred = pred.float()
            target = torch.rand_like(pred)
            for net in nets:
                score = net(pred, target)
                del score
            if with_cvvdp:
                resident = sum(int(snap[_TOTAL_KEY]) for snap in tracker.get_tracker_snapshot("current").values())
            del pred, target
        peak, cats = _peak(tracker)
    extra: dict[str, Any] = {"networks": list(metric_networks)}
    if cvvdp_model is not None:
        fixed, per_pixel = cvvdp_model
        cvvdp_bytes = resident + math.ceil(fixed + per_pixel * image_hw[0] * image_hw[1])
        extra.update(cvvdp_bytes=cvvdp_bytes, cvvdp_model=(fixed, per_pixel))
        if cvvdp_bytes > peak:
            cats = {**cats, "activation": cats["activation"] + cvvdp_bytes - peak}
            peak = cvvdp_bytes
    return MemoryEstimate(
        peak_bytes=peak, by_category=cats, flops_per_step=int(flops.get_total_flops()), mode="validation",
        batch=batch, patch=tuple(image_hw), precision=precision, seconds=time.perf_counter() - start,
        extra=extra,
    )
