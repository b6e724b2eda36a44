"""VGG perceptual (feature reconstruction) loss, Johnson et al. 2016, on a frozen torchvision trunk.

``loss = sum_l w_l * mean |phi_l(n(f(pred))) - phi_l(n(f(target)))|^k`` with ``phi_l`` the ReLU
activations named ``relu<block>_<conv>`` of torchvision's VGG16/VGG19 ``features``
(:func:`hdrlab.weights.load_vgg_features`), ``f`` the input domain mapping to ``[0, 1]`` RGB and
``n`` the ImageNet normalisation of torchvision's weights: ``(x - (0.485, 0.456, 0.406)) /
(0.229, 0.224, 0.225)`` on RGB in ``[0, 1]``. The trunk is frozen (``requires_grad_(False)``) and
always kept in eval mode; gradients flow to the inputs only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.losses.structural import bounded_domain
from hdrlab.weights import load_vgg_features

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PoolFeatures", "VGGPerceptualLoss", "vgg_relu_names"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def vgg_relu_names(features: nn.Sequential) -> dict[str, int]:
    """Map ``relu<block>_<conv>`` names to indices in a VGG ``features`` Sequential.

    Blocks are counted by max-pool layers, convolutions within a block from 1.

    Args:
        features: torchvision ``vgg*.features``.

    Returns:
        e.g. ``{"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, ...}``.
    """
    names, block, conv = {}, 1, 0
    for i, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU):
            names[f"relu{block}_{conv}"] = i
        elif isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


class VGGPerceptualLoss(nn.Module):
    """Frozen-VGG feature loss.

    Args:
        kind: ``"vgg16"`` or ``"vgg19"``.
        layers: ReLU layer names (see :func:`vgg_relu_names`).
        weights: one weight per layer (None = all 1).
        pretrained: load the ImageNet trunk (required for a meaningful loss; raises
            :class:`hdrlab.errors.WeightsMissingError` when the file is missing). False uses a
            random trunk (tests only).
        input_domain: how inputs become ``[0, 1]`` RGB: ``"mu_law"`` (linear HDR -> mu-law, default),
            ``"display"`` (linear HDR -> :func:`hdrlab.tonemap.display`) or ``"identity"``
            (inputs already display-referred in ``[0, 1]``).
        mu: mu of the mu-law input domain.
        distance: ``"l1"`` or ``"l2"`` on features.
    """

    def __init__(
        self,
        *,
        kind: str = "vgg16",
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        weights: Sequence[float] | None = None,
        pretrained: bool = True,
        input_domain: str = "mu_law",
        mu: float = 5000.0,
        distance: str = "l1",
    ) -> None:
        super().__init__()
        bounded_domain(torch.zeros(1, 3, 1, 1), input_domain)
        if distance not in ("l1", "l2"):
            raise ConfigError(f"VGGPerceptualLoss distance must be 'l1' or 'l2', got {distance!r}")
        features = load_vgg_features(kind, pretrained=pretrained)
        index = vgg_relu_names(features)
        unknown = [name for name in layers if name not in index]
        if unknown or not layers:
            raise ConfigError(f"unknown {kind} layers {unknown or list(layers)}; available: {', '.join(index)}")
        weights = [1.0] * len(layers) if weights is None else [float(w) for w in weights]
        if len(weights) != len(layers):
            raise ConfigError(f"VGGPerceptualLoss got {len(weights)} weights for {len(layers)} layers")
        self.layer_index = [index[name] for name in layers]
        self.layers, self.layer_weights = tuple(layers), weights
        self.features = features[: max(self.layer_index) + 1].eval().requires_grad_(False)
        self.input_domain, self.mu, self.distance = input_domain, float(mu), distance
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Keep the frozen trunk in eval mode whatever the parent's mode."""
        super().train(mode)
        self.features.eval()
        return self

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (bounded_domain(x, self.input_domain, mu=self.mu) - self.mean) / self.std
        taps: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            taps[i] = x
        return [taps[i] for i in self.layer_index]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: pred, target ``[B, 3, H, W]`` in the ``input_domain``'s input space. Returns: scalar."""
        loss = pred.new_zeros(())
        for w, a, b in zip(self.layer_weights, self._taps(pred), self._taps(target.detach()), strict=True):
            d = a - b
            loss = loss + w * (d.abs().mean() if self.distance == "l1" else (d * d).mean())
        return loss


class PoolFeatures(nn.Module):
    """Outputs of the first ``count`` ``nn.MaxPool2d`` layers of a sequential trunk (e.g. VGG19 pool1..pool3).

    Args:
        trunk: an ``nn.Sequential`` such as ``torchvision.models.vgg19(weights=...).features``
            (weights are the caller's business; nothing is loaded here).
        count: number of pooling outputs to return (official 3).
    """

    def __init__(self, *, trunk: nn.Sequential, count: int = 3) -> None:
        super().__init__()
        pools = [i for i, layer in enumerate(trunk) if isinstance(layer, nn.MaxPool2d)]
        if len(pools) < count:
            raise ConfigError(f"PoolFeatures needs {count} MaxPool2d layers in the trunk, found {len(pools)}")
        self.trunk = trunk[: pools[count - 1] + 1]
        self.taps = frozenset(pools[:count])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` (already normalised) -> list of ``count`` feature maps."""
        features = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in self.taps:
                features.append(x)
        return features
