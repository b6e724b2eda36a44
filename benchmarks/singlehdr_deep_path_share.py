"""How much of SingleHDR's hallucinated residual comes from its deep path? (procedural scenes)

The Hallucination-Net's output is ``R = ReLU(fuse(cat[y, B]))`` (:class:`HallucinationNet`): ``y``
is the decoder's last feature map (1x1 conv to 3 + BN + ReLU, the deep path through the VGG16
encoder and the decoder) and ``B`` is the linear input itself, fused by one 1x1 conv. A net whose
``y`` is zero still adds ``mask * ReLU(w B + b)``: a fixed per-pixel expansion of the input, the
same for every scene. This script scores, on the held-out protocol's 20 pinned test scenes with
their true inverse CRF (so only the Hallucination-Net matters), the share of the residual inside
the over-exposure mask that the deep path accounts for, against the fixed part ``R_(y=0)``::

    share = sum_mask |R - R_(y=0)| / (sum_mask |R - R_(y=0)| + sum_mask |R_(y=0)|)

in [0, 1]: 0 means the residual is a fixed function of the input's own pixel (no content
hallucinated from context), 1 means the fixed part is zero and everything comes through ``y``.
It also prints the 1x1 fuse's weights on ``B`` and its bias (the fixed part's ``w`` and ``b``).

Usage::

    python benchmarks/singlehdr_deep_path_share.py RUN/checkpoints/last.ckpt [...] [--width 0.125]
        [--scene_size 128] [--scenes 20]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import torch

from hdrlab.data import ProceduralDataModule
from hdrlab.models.direct.singlehdr import SingleHDRNet


def deep_path_share(net: SingleHDRNet, batches: Iterable[dict]) -> float:
    """Share of ``net``'s residual inside the mask that comes from the deep path ``y``.

    Args:
        net: a :class:`SingleHDRNet` (put in eval mode here).
        batches: dicts with ``ldr`` ``[B, 3, H, W]`` in [0, 1] and ``crf_inverse`` (the true
            inverse CRF, synthetic data).

    Returns:
        ``sum_mask |R - R_(y=0)| / (sum_mask |R - R_(y=0)| + sum_mask |R_(y=0)|)`` in [0, 1]
        (``nan`` if both are 0).
    """
    net.eval()
    zero_y = [False]

    def silence(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return torch.full_like(output, -1.0) if zero_y[0] else output  # ReLU(-1) = 0: y is zero

    hook = net.hallucination.head_bn.register_forward_hook(silence)
    fixed_sum = deep = 0.0
    try:
        for batch in batches:
            with torch.no_grad():
                full = net(batch["ldr"], inverse_crf=batch["crf_inverse"])
                zero_y[0] = True
                fixed = net(batch["ldr"], inverse_crf=batch["crf_inverse"])
                zero_y[0] = False
            inside = (full["mask"] > 0).to(full["residual"].dtype)
            fixed_sum += (fixed["residual"].abs() * inside).sum().item()
            deep += ((full["residual"] - fixed["residual"]).abs() * inside).sum().item()
    finally:
        hook.remove()
    total = deep + fixed_sum
    return deep / total if total > 0 else float("nan")


def load_net(checkpoint: Path, *, width: float) -> SingleHDRNet:
    """The :class:`SingleHDRNet` of a SingleHDR method checkpoint (weights only)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net = SingleHDRNet(width=width)
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    return net


def test_batches(*, scene_size: int, scenes: int) -> list[dict]:
    """The protocol's pinned held-out scenes (``procedural_20000000`` ...), rendered whole."""
    data = ProceduralDataModule(num_test_scenes=scenes, patch_size=scene_size, scene_size=scene_size, batch_size=4)
    data.setup("test")
    return list(data.test_dataloader())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="SingleHDR method checkpoints")
    parser.add_argument("--width", type=float, default=0.125, help="channel width the runs were trained at")
    parser.add_argument("--scene_size", type=int, default=128)
    parser.add_argument("--scenes", type=int, default=20)
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        if not path.is_file():
            parser.error(f"checkpoint {path} does not exist")
    batches = test_batches(scene_size=args.scene_size, scenes=args.scenes)
    for path in args.checkpoints:
        net = load_net(path, width=args.width)
        share = deep_path_share(net, batches)
        fuse = net.hallucination.input_fuse
        weights = fuse.weight[:, 3:, 0, 0].detach()  # rows: output channel; columns: B's channels
        print(f"{path}: deep-path share of the residual in the mask {share:.4f}; fuse weights on B "
              f"{[[round(v, 3) for v in row] for row in weights.tolist()]}, bias {[round(v, 3) for v in fuse.bias.tolist()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
