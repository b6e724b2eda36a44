"""When per-step training values are worth logging.

Lightning hands ``on_step`` values to the loggers only at its logging steps (every
``trainer.log_every_n_steps`` optimizer-stepping batches, and when a stop is requested); between them a
``self.log`` call only refreshes ``trainer.callback_metrics``. Each call costs Python work (and, for a
float, a host-to-device copy), so hdrlab's per-step extras (the loss terms, ``train/samples_seen``,
``train/throughput``, ``train/peak_memory_mb``, ``train/nonfinite_skips``) are logged only on
:func:`logging_batch`: the logging steps, plus the last batch of an epoch and the batch that reaches
``max_steps`` or meets a sample budget (``--max_samples``), so that ``callback_metrics``
(``summary.json``, checkpoints) end with the final values.
"""

from __future__ import annotations

from typing import Any

__all__ = ["logging_batch"]


def logging_batch(trainer: Any, *, stepped: bool) -> bool:
    """Whether the training batch now running is a logging batch (module docstring).

    Args:
        trainer: the Lightning trainer (anything else, e.g. no trainer attached: ``True``).
        stepped: whether the batch's optimizer step already ran (``on_train_batch_end``: ``True``;
            ``training_step``: ``False``), for the ``max_steps`` test.
    """
    connector = getattr(trainer, "_logger_connector", None)
    fit_loop = getattr(trainer, "fit_loop", None)
    if connector is None or fit_loop is None:
        return True
    try:
        if connector.should_update_logs:
            return True
        if fit_loop.epoch_loop.batch_progress.is_last_batch:
            return True
        max_steps = trainer.max_steps
        if max_steps >= 0 and trainer.global_step + (0 if stepped else 1) >= max_steps:
            return True
        # the batch that meets a sample budget (--max_samples; the module counts this batch already)
        budgets = [int(cb.max_samples) for cb in trainer.callbacks if getattr(cb, "max_samples", None)]
        return bool(budgets) and getattr(trainer.lightning_module, "samples_seen", 0) >= min(budgets)
    except Exception:  # noqa: BLE001 - outside a fit loop (a trainer stub, another loop): log
        return True
