"""A callback that presses Ctrl-C: raises ``KeyboardInterrupt`` after a given optimizer step, to test
that interrupted runs (``hdrlab recipe`` stages) resume from their last checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L


class InterruptAtStep(L.Callback):
    """Raise ``KeyboardInterrupt`` at the end of the batch that completes optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
