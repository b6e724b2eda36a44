"""A toy stack generator and a toy merger defined outside the package, to prove that a new stage
plugs into hdrlab through its declarations alone (``tests/test_seams.py``; ``docs/adding_a_method.md``).

* :class:`ToyGenerator`: stride 8 (one 8x8 strided conv and its transpose: other sizes would not
  round-trip), one learned residual shared by every exposure, then ``clamp(y * 2 ** (ev / 2.2))``.
* :class:`ToyMerger`: accepts exactly 2 exposures, linear output, differentiable, one learned
  exposure weight and a 1x1 colour mix, and its own objective (log-radiance L1 against ``hdr``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hdrlab.errors import ConfigError
from hdrlab.models.generators.base import StackGenerator
from hdrlab.models.mergers.base import StackArity, StackMerger
from hdrlab.stack import ExposureStack

GAMMA = 2.2


class ToyGenerator(StackGenerator):
    """LDR ``[B, 3, H, W]`` (``H, W`` multiples of 8) -> stack of ``clamp(y * 2 ** (ev / 2.2))``,
    ``y = ldr + up(relu(down(ldr)))``.

    Args:
        ev: exposures to generate (the input is added at ev 0).
        width: channels of the hidden layer (``round(8 * width)``, at least 1).
    """

    def __init__(self, *, ev: Sequence[float] = (-2.0, 2.0), width: float = 1.0) -> None:
        super().__init__(ev=ev)
        hidden = max(1, round(8 * width))
        self.down = nn.Conv2d(3, hidden, 8, stride=8)
        self.up = nn.ConvTranspose2d(hidden, 3, 8, stride=8)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def stride(self) -> int:
        return 8

    def generate(self, ldr: torch.Tensor, ev: tuple[float, ...]) -> torch.Tensor:
        if ldr.shape[-1] % 8 or ldr.shape[-2] % 8:
            raise ConfigError(f"ToyGenerator needs H, W multiples of 8, got {tuple(ldr.shape[-2:])}")
        base = ldr + self.up(torch.relu(self.down(ldr)))
        gains = torch.tensor([2.0 ** (v / GAMMA) for v in ev], dtype=ldr.dtype, device=ldr.device)
        return (base.unsqueeze(1) * gains.view(1, -1, 1, 1, 1)).clamp(0.0, 1.0)


class ToyMerger(StackMerger):
    """Exactly 2 exposures -> linear radiance relative to the reference member: a learned convex
    blend of ``images_i ** 2.2 / 2 ** (ev_i - ev_ref)`` followed by a 1x1 colour mix."""

    output_domain = "linear"
    accepts = StackArity(exactly=2)
    differentiable = True
    has_objective = True

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))
        self.mix = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.mix.bias.zero_()

    def merge(self, stack: ExposureStack) -> torch.Tensor:
        ev = stack.ev - stack.ev[:, stack.reference : stack.reference + 1]
        linear = stack.images.clamp(0.0, 1.0) ** GAMMA / torch.exp2(ev).view(*ev.shape, 1, 1, 1)
        weights = torch.softmax(self.logits, dim=0).view(1, -1, 1, 1, 1)
        return torch.relu(self.mix((weights * linear).sum(dim=1)))

    def objective(self, stack: ExposureStack, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``mean |log(R + 1e-3) - log(H + 1e-3)|`` with ``R`` on the input's scale."""
        radiance = self(stack) * torch.exp2(-stack.ev[:, stack.reference]).view(-1, 1, 1, 1)
        loss = (torch.log(radiance + 1e-3) - torch.log(batch["hdr"] + 1e-3)).abs().mean()
        return loss, {"toy_log_l1": loss}
