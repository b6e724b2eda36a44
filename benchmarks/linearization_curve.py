"""How well can the camera curve be read from one procedural LDR? (SingleHDR stage 2.)

Two measurements on the held-out protocol's data (``experiments/singlehdr.yaml`` with the tiny
overrides, 1000 training scenes, data seed 0; 200 validation scenes; the 20 pinned test scenes):

- ``--ridge N``: ridge regression from hand features of the LDR (:func:`curve_features`) to the
  inverse CRF, fit on the first training batches holding at least ``N`` samples; the ridge
  strength is picked on the validation split. A simple reference for what a learned curve estimator should reach.
- ``--ckpt CKPT ...``: the Linearization-Net of SingleHDR checkpoints (BN in eval mode).

Each prints the RMSE of the predicted inverse CRF (1024 samples, display -> linear) against the true
one on the validation and test splits, next to two fixed curves': the basis mean (where the
Linearization-Net starts) and the mean training curve. Both estimators see the quantised LDR
(``ldr``); stage 2 trains on the un-quantised ``ldr_float`` and the full pipeline feeds it the
Dequantization-Net's output. ``docs/methods.md`` (SingleHDR, "Stage 2 at short budgets") quotes
both.

Usage::

    python benchmarks/linearization_curve.py --ridge 300 --ckpt RUN/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import sys

import torch

BINS = 32
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
RIDGE_STRENGTHS = (1e-2, 1e-1, 1.0, 10.0, 100.0)


def curve_features(ldr: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Hand features of display-referred LDRs that depend on the camera curve.

    Per colour: the normalised histogram of codes (``bins`` bins) and, per code bin, the sum of the
    absolute forward differences (vertical + horizontal, credited to the pixel after the step) over
    its pixels divided by (pixel count + 1); then 7 quantiles of
    the channel-mean luminance and the fractions of clipped (>= 0.99) and black (<= 0.01) values.

    Args:
        ldr: ``[B, 3, H, W]`` in ``[0, 1]``.
        bins: histogram bins per channel.

    Returns:
        ``[B, 6 * bins + 9]``.
    """
    x = ldr.clamp(0, 1)
    grad = torch.zeros_like(x)
    grad[..., 1:, :] += (x[..., 1:, :] - x[..., :-1, :]).abs()
    grad[..., :, 1:] += (x[..., :, 1:] - x[..., :, :-1]).abs()
    index = (x * bins).long().clamp(max=bins - 1)
    rows = []
    for b in range(x.shape[0]):
        parts = []
        for c in range(3):
            counts = torch.bincount(index[b, c].flatten(), minlength=bins).to(x.dtype)
            gsum = torch.bincount(index[b, c].flatten(), weights=grad[b, c].flatten(), minlength=bins).to(x.dtype)
            parts += [counts / counts.sum(), gsum / (counts + 1)]
        luma = x[b].mean(0).flatten()
        parts.append(torch.quantile(luma, torch.tensor(QUANTILES, dtype=x.dtype)))
        parts.append(torch.stack([(x[b] >= 0.99).to(x.dtype).mean(), (x[b] <= 0.01).to(x.dtype).mean()]))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def fit_ridge(features: torch.Tensor, targets: torch.Tensor, strength: float) -> tuple[torch.Tensor, ...]:
    """Ridge regression on standardised features with an unpenalised intercept.

    Args:
        features: ``[N, F]``.
        targets: ``[N, K]``.
        strength: L2 penalty on the weights of the standardised features.

    Returns:
        ``(mean, std, weights, intercept)`` for :func:`predict_ridge`.
    """
    mean, std = features.mean(0), features.std(0) + 1e-6
    z = (features - mean) / std
    intercept = targets.mean(0)
    weights = torch.linalg.solve(z.T @ z + strength * torch.eye(z.shape[1], dtype=z.dtype), z.T @ (targets - intercept))
    return mean, std, weights, intercept


def predict_ridge(model: tuple[torch.Tensor, ...], features: torch.Tensor) -> torch.Tensor:
    """``[N, F]`` features -> ``[N, K]`` predictions of :func:`fit_ridge`'s model."""
    mean, std, weights, intercept = model
    return (features - mean) / std @ weights + intercept


def rmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error over all samples and curve points."""
    return ((prediction - target) ** 2).mean().sqrt().item()


def _datamodule():
    from hdrlab.cli import build_cli

    args = ["--config", "experiments/singlehdr.yaml", "--config", "experiments/overrides/tiny.yaml",
            "--data.init_args.num_train_scenes", "1000", "--data.init_args.num_val_scenes", "200",
            "--data.init_args.num_test_scenes", "20", "--data.init_args.batch_size", "8",
            "--wandb", "disabled", "--run_dir", "/tmp/hdrlab_linearization_curve",
            "--model.init_args.stage", "linearization"]
    cli = build_cli(args, run=False)
    cli.datamodule.setup("fit")
    cli.datamodule.setup("test")
    return cli.model, cli.datamodule


def _collect(loader, limit: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    images, curves = [], []
    for batch in loader:
        images.append(batch["ldr"])
        curves.append(batch["crf_inverse"][:, 0].double())
        if limit is not None and sum(len(i) for i in images) >= limit:
            break
    return images, torch.cat(curves)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ridge", type=int, default=0, help="training samples for the ridge reference (0: skip)")
    parser.add_argument("--ckpt", nargs="*", default=[], help="SingleHDR checkpoints whose Linearization-Net to score")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, dm = _datamodule()
    splits = {"val": _collect(dm.val_dataloader()), "test": _collect(dm.test_dataloader())}
    train_images, train_curves = _collect(dm.train_dataloader(), args.ridge or 64)
    for label, curve in (("basis mean (the Linearization-Net's start)", model.net.linearization.inv_mean.double()),
                         (f"mean of {len(train_curves)} training curves", train_curves.mean(0))):
        print(f"{label}: " + ", ".join(f"{k} {rmse(curve.expand_as(c), c):.4f}" for k, (_, c) in splits.items()))
    if args.ridge:
        feats = {k: curve_features(torch.cat(i).double()) for k, (i, _) in splits.items()}
        train_feats = curve_features(torch.cat(train_images).double())
        best = min(RIDGE_STRENGTHS, key=lambda s: rmse(
            predict_ridge(fit_ridge(train_feats, train_curves, s), feats["val"]).clamp(0, 1), splits["val"][1]))
        ridge = fit_ridge(train_feats, train_curves, best)
        scores = {k: rmse(predict_ridge(ridge, f).clamp(0, 1), splits[k][1]) for k, f in feats.items()}
        print(f"ridge ({len(train_curves)} samples, strength {best:g}): val {scores['val']:.4f}, test {scores['test']:.4f}")
    for path in args.ckpt:
        model.load_subnetworks({"linearization": path})  # raises if the checkpoint lacks its weights
        net = model.net.linearization.eval()
        with torch.no_grad():
            scores = {k: rmse(torch.cat([net(x)[:, 0].double() for x in images]), curves)
                      for k, (images, curves) in splits.items()}
        print(f"{path}: val {scores['val']:.4f}, test {scores['test']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
