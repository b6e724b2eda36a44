"""Shared helpers of the ratio benchmarks: machine description, medians, ratios, result JSONs.

Every benchmark that feeds the README "Performance" table writes one JSON into
``benchmarks/results/<name>.json`` with :func:`write_result`; :mod:`benchmarks.report` renders the
table from those files. Nothing here times anything.
"""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import Any, Iterable

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """CPU model (from ``/proc/cpuinfo``) and logical core count, e.g. ``"AMD EPYC, 2 cores"``."""
    model, cores, named = platform.processor() or platform.machine(), 0, False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not named:
                model, named = value.strip(), True
            if key.strip() == "processor":
                cores += 1
    except OSError:
        pass
    return f"{model}, {cores or '?'} cores"


def median(values: Iterable[float]) -> float:
    """Median of ``values`` (raises ``ValueError`` on an empty sequence)."""
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; ``inf`` for a zero denominator (a positive numerator), ``nan`` for 0/0."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return numerator / denominator


def median_ratio(numerators: Iterable[float], denominators: Iterable[float]) -> float:
    """Ratio of the medians: ``median(numerators) / median(denominators)`` (robust to a slow outlier run)."""
    return ratio(median(numerators), median(denominators))


def write_result(name: str, payload: dict[str, Any], *, directory: Path | None = None) -> Path:
    """Write ``payload`` as ``<directory>/<name>.json`` (default ``benchmarks/results/``); returns the path."""
    directory = RESULTS if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
