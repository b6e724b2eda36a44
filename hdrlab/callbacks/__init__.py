"""hdrlab.callbacks: run-folder callbacks (:mod:`~hdrlab.callbacks.run_artifacts`), per-sample test
metrics (:mod:`~hdrlab.callbacks.per_sample_metrics`) and the non-finite guard
(:mod:`~hdrlab.callbacks.nonfinite`, ``hdrlab fit --on_nonfinite``)."""

from hdrlab.callbacks.nonfinite import NonFiniteError, NonFiniteGuard

__all__ = ["NonFiniteError", "NonFiniteGuard"]
