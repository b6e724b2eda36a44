"""Training loss of DrTMO (Endo, Kanamori, Mitani, SIGGRAPH Asia 2017): a masked L1 over 8 slots.

Official code (``train_network.py``): for an input frame ``i`` of a training stack, the target is
the next up-to-8 frames in the training direction, ``i+1 .. min(i+8, last)``; missing slots are
zero-padded, and a binary mask ``M`` (``1`` on valid slots, ``0`` on padded ones) multiplies the
prediction. The loss is Chainer's ``mean_absolute_error``:

    L = 1 / (S * 3 * H * W) * sum_{s, c, y, x} | M_s * y_hat_{s,c,y,x} - y_{s,c,y,x} |,   S = 8,

per sample (official batch 1; here also averaged over the batch). Masked slots contribute 0 (the
padded target is 0 there) but still count in the denominator, so a sample with ``v`` valid slots
weighs its error by ``v / 8`` relative to a full one. No GAN and no perceptual term.
"""

from __future__ import annotations

import torch
from torch import nn

from hdrlab.errors import ConfigError

#: slots each DrTMO model predicts
DRTMO_LOSS_SLOTS = 8


def slot_mask(valid: torch.Tensor | int, *, slots: int = DRTMO_LOSS_SLOTS, batch: int | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Binary slot mask ``[B, slots]``: 1 for the first ``valid`` slots of each sample, 0 after.

    Args:
        valid: number of valid slots, an int (shared, needs ``batch``) or a ``[B]`` tensor, in ``0..slots``.
        slots: slot count (official 8).
        batch: batch size when ``valid`` is an int.
        device: device of the mask when ``valid`` is an int.

    Returns:
        ``[B, slots]`` float mask.
    """
    if isinstance(valid, int):
        if batch is None:
            raise ConfigError("slot_mask: give batch= when valid is an int")
        valid = torch.full((batch,), valid, dtype=torch.long, device=device)
    if bool(((valid < 0) | (valid > slots)).any()):
        raise ConfigError(f"slot_mask: valid slot counts {valid.tolist()} must lie in 0..{slots}")
    return (torch.arange(slots, device=valid.device).unsqueeze(0) < valid.unsqueeze(1)).float()


def masked_slot_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |M * pred - target|`` over every element (official ``mean_absolute_error(M * y_hat, y)``).

    Args:
        pred: ``[B, S, 3, H, W]`` generated slots in ``[0, 1]``.
        target: ``[B, S, 3, H, W]`` target slots in ``[0, 1]``, zero on padded slots.
        mask: ``[B, S]`` (or broadcastable to ``pred``) binary slot mask; ``None``: every slot valid.

    Returns:
        Scalar loss (the denominator counts masked slots too).
    """
    if pred.shape != target.shape or pred.dim() != 5:
        raise ConfigError(f"masked_slot_l1 needs pred and target [B, S, 3, H, W] of one shape, got "
                          f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if mask is not None:
        if mask.dim() == 2:
            mask = mask[:, :, None, None, None]
        pred = pred * mask.to(pred.dtype)
    return (pred - target).abs().mean()


class DrTMOLoss(nn.Module):
    """The up and down models' masked L1 (:func:`masked_slot_l1`), summed.

    The two official models train separately (two Adam optimisers); their parameters are disjoint,
    so one optimiser on the sum gives each model exactly its own loss's gradient.
    """

    def forward(
        self,
        *,
        up_pred: torch.Tensor,
        up_target: torch.Tensor,
        down_pred: torch.Tensor,
        down_target: torch.Tensor,
        up_mask: torch.Tensor | None = None,
        down_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """All tensors ``[B, 8, 3, H, W]`` in slot order (increasing exposure up, decreasing down).

        Returns:
            ``{"total", "up_l1", "down_l1"}`` scalars.
        """
        up = masked_slot_l1(up_pred, up_target, up_mask)
        down = masked_slot_l1(down_pred, down_target, down_mask)
        return {"total": up + down, "up_l1": up, "down_l1": down}


__all__ = ["DRTMO_LOSS_SLOTS", "DrTMOLoss", "masked_slot_l1", "slot_mask"]
