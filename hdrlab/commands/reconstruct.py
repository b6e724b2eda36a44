"""``hdrlab reconstruct``: real photos (PNG / JPEG / TIFF) to HDR (``.exr``) plus a tone-mapped preview.

    hdrlab reconstruct IN.(png|jpg|tif)|DIR -o OUT --ckpt RUN/checkpoints/last.ckpt
        [--merger debevec_known_crf|debevec|mertens|own] [--tile 512] [--overlap 64] [--gamma 2.2]
        [--memory_budget 4GiB] [--keep_scale]

The method is rebuilt from the run folder of ``hdrlab fit``: ``<run_dir>/config.yaml`` (next to
``<run_dir>/checkpoints/``), the ``OUT.config.yaml`` that ``hdrlab import-weights`` writes next to an
imported ``OUT.ckpt``, or ``--config``, gives the ``model`` section, instantiated through
jsonargparse exactly as LightningCLI did, and the checkpoint's ``state_dict`` (``torch.load(...,
weights_only=True)``) fills it. (LightningCLI runs store no hyper-parameters in the checkpoint
unless the method calls ``save_hyperparameters``, so ``load_from_checkpoint`` is not used.)

Checks before work: the options (``--memory_budget``, ``--device``: a device this machine has,
``-o``: not an existing file, writable), every input photo (each is decoded once before the first
is processed, so a bad file in a folder stops the command before anything is written), the
checkpoint (a damaged, truncated or unsafe file, or another method's weights: one line saying what
the file holds, :mod:`hdrlab.checkpoints`) and the tile options; the output folder is created after
all of them pass.

Kinds of method:

* **generator** methods (any method holding a :class:`~hdrlab.models.generators.base.StackGenerator`
  as ``.generator``, e.g. a ``TwoStage`` composite or Le2023Method): the generated stack is merged
  by ``--merger``: ``debevec_known_crf`` (default; Debevec & Malik log-domain merge linearised with
  the *assumed* CRF), ``debevec`` (CRF recovered from the generated stack), ``mertens`` (a display
  fusion, written linearised with the assumed inverse CRF, so it never exceeds the clip level),
  ``own`` (the method's own :class:`~hdrlab.models.mergers.base.StackMerger` ``.merger``, with the
  method's exposure selection when it has one (``generation_ev`` / ``selected_ev``); a display
  merger's output is linearised with the assumed inverse CRF, as ``inverse_display``).
* **direct** methods (``output_domain == "linear"``, no generator): ``predict_image`` on the photo.
  A method that declares ``whole_image_inference`` (it bounds its memory with patches of its own,
  e.g. ExpandNet's official inference) gets the whole photo, so its official pre- and
  post-processing apply unchanged, unless ``--tile`` or ``--memory_budget`` is given.

Camera response of real photos: unknown, assumed **sRGB-like gamma 2.2** (``--gamma``;
``x = y ** 2.2``) for the known-CRF merge, the ``crf_forward``/``crf_inverse`` of the batch and the
clip mask; methods that estimate the CRF (SingleHDR) use their own estimate.

Output scale: radiance relative to the input exposure (the photo clips at 1.0, the project
convention). A method whose predictions have an arbitrary scale (``output_scale = "relative"``, e.g.
ExpandNet's min-max mapped output) is multiplied by **one factor per image**: the median ratio of the
photo linearised with the assumed CRF (``x ** gamma``) to the prediction over the photo's unclipped
pixels (:func:`hdrlab.metrics.alignment.estimate_scale`, the metrics' alignment); the factor is
printed. ``--keep_scale`` writes the method's output as it is. Preview: ``hdrlab.tonemap.display`` (sRGB-encoded extended Reinhard, white 16).

Large images (documented default): the photo is padded (edge replication) to a multiple of
``--multiple`` (default: the stride the network declares: the generator's for generator methods,
the method's for direct ones, e.g. 64 for Le2023's 7-level U-Nets, 32 for SingleHDR) and, when a side
exceeds ``--tile`` (512; whole-image methods: no tiling unless given), the network runs on
overlapping tiles blended by
:func:`hdrlab.budget.tiling.tiled_forward` (``--overlap`` 64, raised-cosine ramps); the merge runs
once on the full generated stack (Mertens' pyramids are not tile-local).

Under a memory budget (``--memory_budget 4GiB``; units of :func:`hdrlab.budget.units.parse_size`)
the tile replaces ``--tile``: :func:`budget_tile_plan` fits the network pass's peak tensor memory as
``fixed + per_pixel * h w`` from two fake-tensor runs of the loaded network
(:func:`hdrlab.budget.estimate.inference_memory_model` on a fake copy: no allocation) and lets
:func:`hdrlab.budget.tiling.plan_tiles` pick the fewest tiles whose peak plus the full-image
blending buffers plus the CUDA allowance fits, each tile shrunk to the smallest multiple of
``--multiple`` that covers the image with that count (less recomputed overlap); the choice is
printed. The merge of a generated stack is part of the plan (:func:`merge_memory_cost`: the
same fake-tensor fit of the merge, its post-processing included): a merger that declares itself
``pixelwise`` merges row strips sized by the budget (:meth:`StackMerger.merge_in_strips`, equal to
the whole-image merge) when the whole merge does not fit; any other merger must fit on the whole
image. A budget too small for the smallest tile (``2 * overlap + multiple``) or for the merge
raises :class:`hdrlab.budget.plan.BudgetError` naming the budget that would work.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hdrlab.errors import ConfigError, HDRIOError

__all__ = [
    "LDR_SUFFIXES",
    "MERGERS",
    "budget_tile_plan",
    "build_parser",
    "find_inputs",
    "input_scale_factor",
    "load_method",
    "main",
    "merge_memory_cost",
    "method_generator",
    "method_tile_plan",
    "pad_to_multiple",
    "photo_batch",
    "reconstruct_image",
    "run_tiled",
    "stack_merge",
]

#: photo extensions read by ``reconstruct``
LDR_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: ``--merger`` choices for generator methods
MERGERS: tuple[str, ...] = ("debevec_known_crf", "debevec", "mertens", "own")
#: a pixel is clipped when its brightest channel is at 8-bit code 255 (docs/architecture.md)
CLIP_THRESHOLD = 254.5 / 255.0
#: ``--tile`` of methods without a whole-image inference of their own
DEFAULT_TILE = 512


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hdrlab reconstruct", description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="an LDR photo (.png/.jpg/.tif) or a folder of them")
    p.add_argument("-o", "--output", required=True, help="output folder (<stem>.exr and <stem>_preview.png)")
    p.add_argument("--ckpt", required=True, help="checkpoint of an 'hdrlab fit' run (e.g. RUN/checkpoints/last.ckpt)")
    p.add_argument("--config", default=None, help="the run's config.yaml (default: next to the checkpoints folder)")
    p.add_argument("--merger", default="debevec_known_crf", choices=MERGERS,
                   help="merge of a generated stack (generator methods only)")
    p.add_argument("--gamma", type=float, default=2.2, help="assumed camera response x = y ** gamma of the photos")
    p.add_argument("--tile", type=int, default=None,
                   help="run the network on tiles when a side exceeds this (default 512; methods with a "
                        "whole-image inference of their own: no tiling)")
    p.add_argument("--overlap", type=int, default=64, help="minimum overlap of neighbouring tiles (pixels)")
    p.add_argument("--multiple", type=int, default=None,
                   help="pad the photo to a multiple of this (default: the network's declared stride)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--keep_scale", action="store_true",
                   help="write the output of a method with an arbitrary output scale as it is (default: one "
                        "factor per image brings it to the photo's exposure)")
    p.add_argument("--memory_budget", default=None,
                   help="device memory budget, e.g. 4GiB or 512MiB (GB = 10^9 bytes); chooses the tile instead of --tile")
    return p


# --------------------------------------------------------------------------- loading
def _run_config_path(ckpt: Path, config: str | Path | None) -> Path:
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"--config {path} does not exist; give the run's config.yaml")
        return path
    imported = ckpt.with_name(f"{ckpt.stem}.config.yaml")  # written by hdrlab import-weights
    for candidate in (imported, ckpt.parent.parent / "config.yaml", ckpt.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no config.yaml found for {ckpt} (looked for {imported.name} and config.yaml in {ckpt.parent.parent} "
        f"and {ckpt.parent}); "
        "pass --config <run_dir>/config.yaml (runs with --trainer.fast_dev_run write none)"
    )


def load_method(ckpt: str | Path, *, config: str | Path | None = None, device: str = "cpu") -> Any:
    """Rebuild a trained :class:`~hdrlab.methods.base.HDRMethod` from an ``hdrlab fit`` run.

    Args:
        ckpt: Lightning checkpoint (``state_dict`` inside), read with ``weights_only=True``.
        config: the run's ``config.yaml`` (default: ``<ckpt>/../../config.yaml``).
        device: where to put the method.

    Returns:
        The method in eval mode. The options its classes declare in ``file_options`` (e.g. a
        composite's ``generator_ckpt`` / ``merger_ckpt``, pretrained flags) are cleared: every
        weight comes from ``ckpt``.

    Raises:
        ConfigError: missing files, a config without a ``model`` section, weights of another
            method or size (the message says which method the file holds).
        HDRIOError: a damaged, truncated or unsafe checkpoint file.
    """
    import yaml

    from hdrlab.checkpoints import check_state_dict, load_checkpoint

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ConfigError(f"--ckpt {ckpt} does not exist; give a checkpoint of an 'hdrlab fit' run")
    cfg_path = _run_config_path(ckpt, config)
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{cfg_path} is not a YAML config ({str(err).splitlines()[0][:200]}); give the run's "
                          "config.yaml with --config") from err
    model_cfg = (cfg or {}).get("model")
    checkpoint = load_checkpoint(ckpt, option="--ckpt")  # one line for damaged or unsafe files
    from hdrlab.methods.build import build_method  # imports Lightning: after the cheap checks

    method = build_method(model_cfg, name=str(cfg_path), files=False)
    state = check_state_dict(method, checkpoint, path=ckpt, option="--ckpt", config=cfg_path)
    try:
        method.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"--ckpt {ckpt} does not match the model of {cfg_path}: {str(err).splitlines()[0][:300]}") from err
    return method.to(device).eval()


def method_generator(method: Any) -> Any:
    """The method's :class:`StackGenerator` (``.generator``), or ``None`` for direct methods."""
    from hdrlab.models.generators.base import StackGenerator

    generator = getattr(method, "generator", None)
    return generator if isinstance(generator, StackGenerator) else None


def method_merger(method: Any) -> Any:
    """The method's own :class:`StackMerger` (``.merger``), or ``None``."""
    from hdrlab.models.mergers.base import StackMerger

    merger = getattr(method, "merger", None)
    return merger if isinstance(merger, StackMerger) else None


def network_multiple(method: Any, merger: str = "debevec_known_crf") -> int:
    """The padding multiple of the photo: the method's declared stride for direct methods and for
    ``--merger own`` (the lcm of its generator's and merger's), the generator's for the other mergers
    (which take any size)."""
    from hdrlab.methods.base import module_stride

    generator = method_generator(method)
    if generator is None or merger == "own":
        return module_stride(method)
    return module_stride(generator)


# --------------------------------------------------------------------------- image plumbing
def find_inputs(path: str | Path) -> list[Path]:
    """The photos to reconstruct: ``path`` itself or the sorted photos of folder ``path`` (not recursive)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in LDR_SUFFIXES)
        if not files:
            raise HDRIOError(f"{p}: no photos ({', '.join(LDR_SUFFIXES)}) in this folder")
        return files
    if not p.is_file():
        raise HDRIOError(f"{p}: no such file or folder")
    if p.suffix.lower() not in LDR_SUFFIXES:
        raise HDRIOError(f"{p}: reconstruct reads {', '.join(LDR_SUFFIXES)} photos, got {p.suffix!r}")
    return [p]


def pad_to_multiple(image: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``[B, C, H, W]`` at the bottom/right by edge replication to multiples of ``multiple``.

    Returns:
        ``(padded, (H, W))``; crop the result back with ``[..., :H, :W]``.
    """
    if multiple < 1:
        raise ConfigError(f"--multiple must be >= 1, got {multiple}")
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), mode="replicate")
    return image, (h, w)


def input_scale_factor(hdr: torch.Tensor, ldr: torch.Tensor, *, gamma: float = 2.2) -> float | None:
    """The one factor that brings a prediction of arbitrary scale to the photo's exposure.

    ``median(ldr ** gamma / hdr)`` over the channel values of the photo's unclipped pixels (brightest
    channel below :data:`CLIP_THRESHOLD`) that are positive in both
    (:func:`hdrlab.metrics.alignment.estimate_scale`, mode ``median``); ``None`` when no pixel
    qualifies (every pixel clipped, or the prediction is zero wherever the photo is not).

    Args:
        hdr: ``[3, H, W]`` linear prediction.
        ldr: ``[3, H, W]`` the photo's display values in ``[0, 1]``.
        gamma: assumed camera response ``x = y ** gamma``.
    """
    from hdrlab.metrics.alignment import estimate_scale

    ldr = ldr.to(hdr)
    target = ldr.clamp(0.0, 1.0) ** gamma
    valid = (ldr.amax(dim=0, keepdim=True) < CLIP_THRESHOLD) & (hdr > 0) & (target > 0)
    if not bool(valid.any()):
        return None
    return float(estimate_scale(hdr, target, mode="median", mask=valid.any(dim=0, keepdim=True)))


def photo_batch(ldr: torch.Tensor, crf: Any) -> dict[str, Any]:
    """A batch dict for a real photo: ``ldr [B, 3, H, W]``, the assumed CRF's LUTs, the clip mask."""
    b = ldr.shape[0]
    return {
        "ldr": ldr,
        "crf_forward": crf.forward_lut.to(ldr.device).expand(b, -1, -1),
        "crf_inverse": crf.inverse_lut.to(ldr.device).expand(b, -1, -1),
        "clip_mask": (ldr.amax(dim=1, keepdim=True) >= CLIP_THRESHOLD).to(ldr.dtype),
        "name": ["photo"] * b,
    }


def run_tiled(fn: Callable[..., torch.Tensor], image: torch.Tensor, *, tile: int, overlap: int,
              multiple: int, global_fn: Callable[[torch.Tensor], Any] | None = None,
              global_size: int = 512) -> torch.Tensor:
    """``fn`` on the whole padded image, or on blended tiles when a side exceeds ``tile``.

    Args:
        fn: ``[1, 3, h, w] -> [1, K, h, w]`` (h, w multiples of ``multiple``); with ``global_fn`` it
            is called as ``fn(tile, global_out)``.
        image: ``[1, 3, H, W]``, H and W multiples of ``multiple``.
        global_fn: an image-wide branch run once on a downsampled full image (longest side
            ``global_size``) when tiling, shared by all tiles; untiled images use ``fn(image, None)``.

    Returns:
        ``[1, K, H, W]``.
    """
    from hdrlab.budget.tiling import tiled_forward

    if max(image.shape[-2:]) <= tile:
        return fn(image) if global_fn is None else fn(image, None)
    tile = max(multiple, tile // multiple * multiple)
    return tiled_forward(fn, image, tile=tile, overlap=min(overlap, tile - multiple), stride=multiple,
                         global_fn=global_fn, global_size=global_size)


# --------------------------------------------------------------------------- tiles under a budget
def _fake_copy_builder(module: torch.nn.Module) -> Callable[[], torch.nn.Module]:
    """``build_model`` for :mod:`hdrlab.budget.estimate`: a fake-tensor copy of a loaded module."""
    import copy

    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeCopyMode, unset_fake_temporarily

    def build() -> torch.nn.Module:
        mode = detect_fake_mode()  # the estimator's active FakeTensorMode
        with unset_fake_temporarily(), FakeCopyMode(mode):
            return copy.deepcopy(module)

    return build


def budget_tile_plan(
    module: torch.nn.Module,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    image_hw: tuple[int, int],
    budget_bytes: int,
    *,
    overlap: int = 64,
    multiple: int = 64,
    out_channels: int = 3,
    precision: str = "32",
    merge: Any = None,
) -> Any:
    """Fewest (tightest) tiles whose modelled inference peak fits ``budget_bytes``.

    Args:
        module: the loaded network (real weights; only a fake copy runs).
        forward: ``(module, tile [1, 3, h, w]) -> [1, out_channels, h, w]``.
        image_hw: padded image ``(H, W)``, multiples of ``multiple``.
        budget_bytes: device budget (bytes).
        overlap: minimum tile overlap.
        multiple: network stride (tile sides are multiples of it).
        out_channels: channels of ``forward``'s output (3 K for a K-image stack).
        precision: autocast precision of the estimate.
        merge: :class:`hdrlab.budget.tiling.MergeCost` of a merge after the network pass (None: none).

    Returns:
        :class:`hdrlab.budget.tiling.TilePlan` (``tile=None``: the whole image fits; ``merge_rows``:
        strips of a pixel-wise merge).

    Raises:
        BudgetError: not even the smallest tile (``2 * overlap + multiple``), or the merge, fits.
    """
    from hdrlab.budget.estimate import inference_memory_model
    from hdrlab.budget.tiling import plan_tiles

    fixed, per_pixel = inference_memory_model(
        _fake_copy_builder(module), forward, sizes=(2 * multiple, 4 * multiple), precision=precision
    )
    return plan_tiles(
        image_hw, budget_bytes, per_pixel, fixed_bytes=fixed, overlap=overlap, stride=multiple,
        out_channels=out_channels, merge=merge,
    )


def stack_merge(method: Any, merger: str = "debevec_known_crf") -> tuple[Any, Callable[..., Any],
                                                                          Callable[[torch.Tensor, Any], torch.Tensor]]:
    """What :func:`reconstruct_image` runs on a generated stack for ``--merger``.

    Returns:
        ``(module, prepare, post)``: the :class:`~hdrlab.models.mergers.base.StackMerger`;
        ``prepare(images [1, N, 3, H, W], evs, crf)``, the stack it merges (``own``: the method's
        exposure selection, ``selected_ev``); ``post(out, stack)``, the per-pixel map of its output
        to non-negative input-relative linear radiance (linear mergers: :func:`rescale_to_input`;
        display mergers: the stack's assumed inverse CRF).

    Raises:
        ConfigError: an unknown choice, or ``own`` for a method without a merger.
    """
    from hdrlab.camera import lut_apply
    from hdrlab.methods.two_stage import rescale_to_input, select_exposures
    from hdrlab.models.mergers import DebevecMerger, MertensMerger

    if merger not in MERGERS:
        raise ConfigError(f"--merger {merger!r} is unknown; use one of {list(MERGERS)}")
    selected = None
    if merger == "own":
        module = method_merger(method)
        if module is None:
            raise ConfigError(f"--merger own needs a method with a merger of its own (.merger); "
                              f"{type(method).__name__} has none: pick debevec_known_crf, debevec or mertens")
        selected = getattr(method, "selected_ev", None)
    elif merger == "mertens":
        module = MertensMerger()
    else:
        module = DebevecMerger(crf="known" if merger == "debevec_known_crf" else "recover")

    def prepare(images: torch.Tensor, evs: Sequence[float], crf: Any) -> Any:
        stack = _generated_stack(images, evs, crf)
        return stack if selected is None else select_exposures(stack, selected, have=evs)

    def post(out: torch.Tensor, stack: Any) -> torch.Tensor:
        if module.output_domain == "linear":
            return rescale_to_input(out, stack).clamp_min_(0.0)
        return lut_apply(out.clamp(0.0, 1.0), stack.crf.inverse_lut).clamp_min_(0.0)

    return module, prepare, post


def _generated_stack(images: torch.Tensor, evs: Sequence[float], crf: Any) -> Any:
    """``ExposureStack`` of a generator's ``[1, N, 3, H, W]`` output (reference: the exposure nearest ev 0)."""
    from hdrlab.stack import ExposureStack

    ev = torch.tensor(list(evs), dtype=images.dtype, device=images.device).unsqueeze(0)
    reference = min(range(len(evs)), key=lambda i: abs(evs[i]))
    return ExposureStack(images=images, ev=ev, reference=reference, crf=crf)


def merge_memory_cost(method: Any, merger: str = "debevec_known_crf", *, gamma: float = 2.2,
                      multiple: int = 64, precision: str = "32") -> Any:
    """:class:`hdrlab.budget.tiling.MergeCost` of the merge :func:`reconstruct_image` runs after the
    generator's pass: ``prepare``, the merger and ``post`` of :func:`stack_merge` on fake ``h x w``
    stacks at two sizes (:func:`hdrlab.budget.estimate.inference_memory_model`; the stack, the
    temporaries and the output are counted), with the merger's ``pixelwise`` declaration.
    """
    from hdrlab.budget.estimate import inference_memory_model
    from hdrlab.budget.tiling import MergeCost
    from hdrlab.camera import CRF
    from hdrlab.models.generators.base import normalize_ev_set

    generator = method_generator(method)
    ev = tuple(getattr(method, "generation_ev", generator.ev)) if merger == "own" else tuple(generator.ev)
    evs = list(normalize_ev_set(ev, include_input=generator.include_input))
    n = len(evs)
    module, prepare, post = stack_merge(method, merger)

    def forward(m: Any, t: torch.Tensor) -> torch.Tensor:
        stack = prepare(t.unflatten(1, (n, 3)), evs, CRF.gamma(gamma))  # the CRF is built fake here
        return post(m(stack), stack)

    fixed, per_pixel = inference_memory_model(
        _fake_copy_builder(module), forward, sizes=(2 * multiple, 4 * multiple), precision=precision,
        in_channels=3 * n,
    )
    return MergeCost(per_pixel, fixed, pixelwise=bool(getattr(module, "pixelwise", False)), in_channels=3 * n,
                     out_channels=3)


def method_tile_plan(method: Any, image_hw: tuple[int, int], budget_bytes: int, *, merger: str = "debevec_known_crf",
                     gamma: float = 2.2, overlap: int = 64, multiple: int = 64) -> Any:
    """:func:`budget_tile_plan` for the network pass :func:`reconstruct_image` tiles, and for generator
    methods the merge after it (:func:`merge_memory_cost`; ``plan.merge_rows``: merge strips).

    Direct methods: ``predict_image`` on a photo batch; generator methods: the generator's stack
    (``--merger own`` uses the TwoStage's generation exposures).
    """
    from hdrlab.camera import CRF
    from hdrlab.models.generators.base import normalize_ev_set

    generator = method_generator(method)
    if generator is None:
        return budget_tile_plan(
            method, lambda m, t: m.predict_image(photo_batch(t, CRF.gamma(gamma))), image_hw, budget_bytes,
            overlap=overlap, multiple=multiple, out_channels=3,
        )
    ev = tuple(getattr(method, "generation_ev", generator.ev)) if merger == "own" else tuple(generator.ev)
    n = len(normalize_ev_set(ev, include_input=generator.include_input))
    merge = merge_memory_cost(method, merger, gamma=gamma, multiple=multiple)
    return budget_tile_plan(
        generator, lambda g, t: g(t, ev=ev).images.flatten(1, 2), image_hw, budget_bytes,
        overlap=overlap, multiple=multiple, out_channels=3 * n, merge=merge,
    )


# --------------------------------------------------------------------------- reconstruction
def reconstruct_image(
    method: Any, ldr: torch.Tensor, *, merger: str = "debevec_known_crf", gamma: float = 2.2,
    tile: int = 512, overlap: int = 64, multiple: int = 64, merge_rows: int | None = None,
) -> torch.Tensor:
    """HDR radiance of one photo (module docstring).

    Args:
        method: a trained method in eval mode.
        ldr: ``[3, H, W]`` display values in ``[0, 1]``.
        merger: ``--merger`` choice (generator methods).
        gamma: assumed camera response ``x = y ** gamma``.
        tile, overlap, multiple: tiling (see :func:`run_tiled`).
        merge_rows: merge the generated stack in strips of this many rows (a budget plan's
            ``merge_rows``; the merger must declare ``pixelwise``); None: in one call.

    Returns:
        ``[3, H, W]`` non-negative linear radiance, input clip level 1.0.
    """
    from hdrlab.camera import CRF
    from hdrlab.models.generators.base import normalize_ev_set

    if merger not in MERGERS:
        raise ConfigError(f"--merger {merger!r} is unknown; use one of {list(MERGERS)}")
    device = next((p.device for p in method.parameters()), torch.device("cpu"))
    crf = CRF.gamma(gamma).to(device)
    x = ldr.to(device).unsqueeze(0).float()
    padded, (h, w) = pad_to_multiple(x, multiple)
    generator = method_generator(method)
    with torch.no_grad():
        if generator is None:
            if method.output_domain != "linear":
                raise ConfigError(
                    f"{type(method).__name__} outputs a {method.output_domain} image and has no stack generator; "
                    "reconstruct needs a linear (HDR) method or a generator method"
                )
            out = run_tiled(lambda t, g: method.predict_tile(photo_batch(t, crf), g), padded,
                            tile=tile, overlap=overlap, multiple=multiple, global_fn=method.global_branch)
            return out[0, :, :h, :w].clamp_min(0.0)

        module, prepare, post = stack_merge(method, merger)  # checks --merger own before any work
        if merge_rows is not None and not getattr(module, "pixelwise", False):
            raise ConfigError(f"merge strips need a pixel-wise merger; {type(module).__name__} is not: "
                              "merge the whole stack (merge_rows=None)")
        ev = tuple(getattr(method, "generation_ev", generator.ev)) if merger == "own" else tuple(generator.ev)
        evs = list(normalize_ev_set(ev, include_input=generator.include_input))  # what the generator returns
        n = len(evs)
        images = run_tiled(lambda t: generator(t, ev=ev).images.flatten(1, 2), padded,
                           tile=tile, overlap=overlap, multiple=multiple)
        images = images[..., :h, :w].unflatten(1, (n, 3)).clamp(0.0, 1.0)
        stack = prepare(images, evs, crf)
        del images  # a selected sub-stack is a copy: the full stack is freed
        if merge_rows is not None and merge_rows < stack.images.shape[-2]:
            out = module.merge_in_strips(stack, merge_rows, post=post)
        else:
            out = post(module(stack), stack)
        return out[0]


def main(argv: Sequence[str]) -> int:
    """``hdrlab reconstruct`` (module docstring). Returns 0 on success."""
    from hdrlab.checkpoints import check_device, check_memory_budget, check_output_dir
    from hdrlab.io import read_ldr, write_exr, write_png

    args = build_parser().parse_args(list(argv))
    # every check before any work: nothing is written unless all inputs and options are valid
    if not (args.gamma > 0 and math.isfinite(args.gamma)):
        raise ConfigError(f"--gamma must be positive, got {args.gamma}")
    budget = check_memory_budget(args.memory_budget)
    device = check_device(args.device)
    out_dir = check_output_dir(args.output, option="-o")
    inputs = find_inputs(args.input)
    for path in inputs:  # a bad photo of a folder fails before the first one is processed
        read_ldr(path)
    method = load_method(args.ckpt, config=args.config, device=str(device))
    if args.multiple is None:
        args.multiple = network_multiple(method, args.merger)
    if args.multiple < 1:
        raise ConfigError(f"--multiple must be >= 1, got {args.multiple}")
    whole_image = bool(getattr(method, "whole_image_inference", False)) and method_generator(method) is None
    if args.tile is None:
        args.tile = DEFAULT_TILE
    elif whole_image:
        whole_image = False  # an explicit --tile tiles every method
    if args.tile < args.multiple:
        raise ConfigError(f"--tile {args.tile} must be at least --multiple {args.multiple}")
    from hdrlab import tonemap  # imports torchvision: after the checks

    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "generator" if method_generator(method) is not None else "direct"
    print(f"hdrlab reconstruct: {type(method).__name__} ({kind}), merger={args.merger if kind == 'generator' else '-'}, "
          f"assumed CRF gamma {args.gamma:g}, {len(inputs)} image(s)")
    for path in inputs:
        ldr = read_ldr(path).image
        # whole-image methods: one tile as large as the padded photo
        tile = math.ceil(max(ldr.shape[-2:]) / args.multiple) * args.multiple if whole_image and budget is None else args.tile
        if budget is not None:
            from hdrlab.budget.units import format_size

            h, w = ldr.shape[-2:]
            hw = (math.ceil(h / args.multiple) * args.multiple, math.ceil(w / args.multiple) * args.multiple)
            plan = method_tile_plan(method, hw, budget, merger=args.merger, gamma=args.gamma,
                                    overlap=args.overlap, multiple=args.multiple)
            tile = max(hw) if plan.tile is None else plan.tile
            merge_rows = plan.merge_rows
            strips = "" if merge_rows is None else f", merge in {merge_rows}-row strips"
            print(f"  {path.name}: budget {format_size(budget)} -> "
                  f"{'whole image' if plan.tile is None else f'tile {plan.tile}'} ({plan.tiles} tile(s){strips}, "
                  f"estimated tensor peak {format_size(plan.estimated_bytes)})")
        else:
            merge_rows = None
        hdr = reconstruct_image(method, ldr, merger=args.merger, gamma=args.gamma, tile=tile,
                                overlap=args.overlap, multiple=args.multiple, merge_rows=merge_rows).cpu()
        note = ""
        if getattr(method, "output_scale", "input") == "relative" and not args.keep_scale:
            factor = input_scale_factor(hdr, ldr, gamma=args.gamma)
            if factor is None:
                note = " (every pixel clipped: output scale left as the method gives it)"
            else:
                hdr = hdr * factor
                note = f" (output scale x{factor:.4g} to the photo's exposure)"
        exr = write_exr(out_dir / f"{path.stem}.exr", hdr)
        png = write_png(out_dir / f"{path.stem}_preview.png", tonemap.display(hdr))
        print(f"  {path.name}: {hdr.shape[-1]}x{hdr.shape[-2]}, max {float(hdr.max()):.3g}{note} -> {exr.name}, "
              f"{png.name}")
    return 0
