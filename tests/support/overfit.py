"""Shared overfit protocol of the method tests: memorise ONE fixed training example.

The batch is synthesised once (one procedural scene at a fixed seed, :class:`PairSynthesizer` with a
fixed generator, no flips) and the same tensors are used for every step; the score is
``psnr_mu`` (:class:`hdrlab.metrics.PSNRMu`, median alignment, region ``all``) of
``method.predict_image(batch)`` (or a display metric for display-domain methods), measured in
eval mode before and after training (or, with ``batch_statistics``, with BatchNorm normalising by the
fixed batch itself, as in the training steps; one choice per test, the same before and after).

Test-only settings a caller may change (each test states its own in its docstring): the scene
seed, the scene's ``emitter_range`` (the package default ``1e3 .. 1e5`` x diffuse puts almost all
of PSNR-mu's p99.9-normalised range into the highlight peaks), the learning rate, the stage and the
width. Class defaults are never changed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hdrlab.data.datamodules import collate_hdr_batch
from hdrlab.data.procedural import ProceduralSceneConfig, render_scene
from hdrlab.data.synthesis import PairSynthesizer, sample_generator
from hdrlab.metrics import PSNRMu

__all__ = ["OverfitResult", "fixed_batch", "highlight_stats", "overfit", "psnr_mu"]


def fixed_batch(
    *,
    scene_seed: int,
    sample_seed: int = 0,
    patch_size: int = 64,
    batch_size: int = 1,
    emitter_range: tuple[float, float] = (1e3, 1e5),
    clipped_fraction: tuple[float, float] = (0.02, 0.20),
    bracket_ev: list[float] | None = None,
) -> dict:
    """One batch synthesised once from procedural scene(s) ``scene_seed + i`` (i < ``batch_size``).

    Scenes are rendered at ``patch_size`` (the crop is the whole scene); the synthesis randomness
    (clipped fraction, CRF) comes from ``sample_generator(sample_seed, 0, i)``.

    Returns:
        An :class:`hdrlab.data.batch.HDRBatch` dict (``hdr [B,3,P,P]`` linear, ``ldr`` in [0, 1], ...).
    """
    config = ProceduralSceneConfig(emitter_range=emitter_range)
    synth = PairSynthesizer(patch_size=patch_size, clipped_fraction=clipped_fraction, flips=False,
                            bracket_ev=bracket_ev)
    samples = []
    for i in range(batch_size):
        scene = render_scene(scene_seed + i, height=patch_size, width=patch_size, config=config)
        samples.append(synth(scene, generator=sample_generator(sample_seed, 0, i), name=f"scene{scene_seed + i}"))
    return collate_hdr_batch(samples)


def highlight_stats(batch: dict) -> dict[str, float]:
    """Clipped-pixel fraction and the ground truth's peak / p99.9 relative to the clip level 1.0."""
    flat = batch["hdr"].flatten(1)
    k = max(1, int(round(0.999 * flat.shape[1])))
    return {
        "clip_fraction": float(batch["clip_mask"].float().mean()),
        "peak": float(flat.amax()),
        "p999": float(flat.kthvalue(k, dim=1).values.mean()),
    }


def psnr_mu(pred: torch.Tensor, batch: dict) -> float:
    """Mean ``psnr_mu`` (dB; median-aligned, region all) of ``pred`` against ``batch["hdr"]``."""
    return float(PSNRMu().per_image(pred, batch["hdr"], batch["clip_mask"]).mean())


@dataclass
class OverfitResult:
    """Scores (dB) before / after, the steps run, wall time (s) and the score every ``eval_every`` steps."""

    before: float
    after: float
    steps: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def gain(self) -> float:
        return self.after - self.before

    def __str__(self) -> str:
        trace = ", ".join(f"{s}:{v:.2f}" for s, v in self.history)
        return (f"{self.before:.2f} -> {self.after:.2f} dB ({self.gain:+.2f}) in {self.steps} steps, "
                f"{self.seconds:.1f} s [{trace}]")


def _optimizer(method) -> torch.optim.Optimizer:
    opt = method.configure_optimizers()
    return opt["optimizer"] if isinstance(opt, dict) else opt


def overfit(
    method,
    batch: dict,
    *,
    steps: int = 300,
    score: Callable[[torch.nn.Module, dict], float] | None = None,
    eval_every: int = 50,
    stop_gain: float | None = None,
    batch_statistics: bool = False,
) -> OverfitResult:
    """Train ``method`` on the same ``batch`` with its own ``compute_loss`` and ``configure_optimizers``.

    Args:
        method: an :class:`hdrlab.methods.HDRMethod`.
        batch: the fixed batch (:func:`fixed_batch`).
        steps: maximum optimizer steps.
        score: ``(method, batch) -> dB`` in eval mode under ``no_grad``; default ``psnr_mu`` of
            ``method.predict_image(batch)``.
        eval_every: scoring interval (steps) for the history and the early stop.
        stop_gain: stop at the first scoring with ``after - before >= stop_gain`` (None: run all steps).
        batch_statistics: score with BatchNorm in train mode (normalised by the fixed batch's own
            statistics, as in every training step) on a copy of the method, so the running
            statistics of the trained method are untouched; False: eval mode (running statistics).

    Returns:
        :class:`OverfitResult`; ``after`` is the score at the last step run.
    """
    score = score or (lambda m, b: psnr_mu(m.predict_image(b), b))

    def evaluate() -> float:
        with torch.no_grad():
            if batch_statistics:
                value = score(copy.deepcopy(method).train(), batch)
            else:
                method.eval()
                value = score(method, batch)
                method.train()
        return value

    start = time.perf_counter()
    before = evaluate()
    optimizer = _optimizer(method)
    history: list[tuple[int, float]] = []
    after, step = before, 0
    for step in range(1, steps + 1):
        loss, _ = method.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            after = evaluate()
            history.append((step, after))
            if stop_gain is not None and after - before >= stop_gain:
                break
    return OverfitResult(before=before, after=after, steps=step, seconds=time.perf_counter() - start, history=history)


def assert_gradients_reach_every_parameter(method, batches) -> None:
    """Every trainable parameter of ``method`` gets finite gradients on each batch of ``batches``
    (each must contain clipped pixels) and a non-zero gradient on at least one of them."""
    params = {n: p for n, p in method.named_parameters() if p.requires_grad}
    nonzero = dict.fromkeys(params, False)
    for batch in batches:
        assert float(batch["clip_mask"].sum()) > 0
        method.zero_grad()
        loss, _ = method.compute_loss(batch)
        loss.backward()
        for name, p in params.items():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            nonzero[name] |= bool(p.grad.abs().sum() > 0)
    assert all(nonzero.values()), [n for n, ok in nonzero.items() if not ok]
