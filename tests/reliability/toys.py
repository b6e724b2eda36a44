"""Toy methods for the reliability battery (not paper methods)."""

from __future__ import annotations

import torch

from tests.support.plumbing import PlumbingMethod


class NonFiniteAtStep(PlumbingMethod):
    """:class:`PlumbingMethod` whose ``log_l1`` loss term is NaN from global step ``nan_at_step`` on
    (``nan_until_step``: up to that step, exclusive), for ``--on_nonfinite`` tests."""

    def __init__(self, *, nan_at_step: int = 3, nan_until_step: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_at_step = int(nan_at_step)
        self.nan_until_step = nan_until_step

    def compute_loss(self, batch):
        loss, terms = super().compute_loss(batch)
        step = self.global_step
        if step >= self.nan_at_step and (self.nan_until_step is None or step < self.nan_until_step):
            loss = loss * torch.tensor(float("nan"))
            terms = {**terms, "log_l1": loss}
        return loss, terms


class KillAtStep(PlumbingMethod):
    """:class:`PlumbingMethod` that SIGKILLs its own process (``kill -9``: no cleanup, no last
    checkpoint) at the end of global step ``$HDRLAB_TEST_KILL_AT_STEP``, after the callbacks' batch
    end (so after a step checkpoint taken at that step). With ``HDRLAB_TEST_KILL_AGENT=1`` it first
    kills the sweep agent (the parent of its ``/bin/sh`` trial wrapper) and then its process group."""

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        import os
        import signal

        at = os.environ.get("HDRLAB_TEST_KILL_AT_STEP")
        if at is None or self.global_step != int(at):
            return
        if os.environ.get("HDRLAB_TEST_KILL_AGENT") == "1":
            with open(f"/proc/{os.getppid()}/stat") as f:
                agent = int(f.read().rsplit(")", 1)[1].split()[1])
            os.kill(agent, signal.SIGKILL)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
