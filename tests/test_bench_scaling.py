"""benchmarks/bench_scaling.py pure logic: log-log slope, tile work, tight tiles, JSON rows (no timing)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_scaling as bs  # noqa: E402

from hdrlab.budget.tiling import tile_spans  # noqa: E402

MIB = 2**20


def test_loglog_slope_of_power_laws():
    xs = [512**2, 1024**2, 2048**2, 4096**2]
    for exponent in (1.0, 2.0, 0.5):
        assert bs.loglog_slope(xs, [3.0 * x**exponent for x in xs]) == pytest.approx(exponent)
    # a constant offset (e.g. per-call setup) bends the curve below 1
    assert bs.loglog_slope(xs, [5.0 + 1e-6 * x for x in xs]) < 1.0
    # least squares, not the end points: symmetric noise on a line of slope 1 leaves slope 1
    noisy = [x * f for x, f in zip(xs, (1.1, 1 / 1.1, 1 / 1.1, 1.1))]
    assert bs.loglog_slope(xs, noisy) == pytest.approx(1.0)
    # closed form for two points
    assert bs.loglog_slope([1.0, math.e], [2.0, 2.0 * math.e**1.5]) == pytest.approx(1.5)


@pytest.mark.parametrize("xs, ys", [([1.0], [1.0]), ([1.0, 2.0], [1.0]), ([1.0, 1.0], [1.0, 2.0]),
                                    ([0.0, 2.0], [1.0, 2.0]), ([1.0, 2.0], [1.0, -2.0])])
def test_loglog_slope_refuses_degenerate_input(xs, ys):
    with pytest.raises(ValueError):
        bs.loglog_slope(xs, ys)


def test_effective_overlap_follows_run_tiled():
    assert bs.effective_overlap(928, 64, 32) == 64
    assert bs.effective_overlap(128, 64, 64) == 64  # min(64, 128 - 64)
    assert bs.effective_overlap(96, 64, 32) == 64  # min(64, 96 - 32)
    assert bs.effective_overlap(480, 40, 32) == 64  # rounded up to the stride


def test_tile_work_counts_tiles_and_overlap():
    assert bs.tile_work(512, None, 64, 32) == (1, 512 * 512)
    assert bs.tile_work(512, 512, 64, 32) == (1, 512 * 512)  # a tile as large as the image: untiled
    tiles, work = bs.tile_work(1024, 928, 64, 32)  # 2 x 2 tiles of 928 over 1024
    assert tiles == 4 and work == (2 * 928) ** 2
    assert work / 1024**2 == pytest.approx(3.285, abs=1e-3)
    for side, tile, stride in [(2048, 864, 32), (4096, 480, 32), (2048, 576, 64)]:
        spans = tile_spans(side, tile, 64, stride=stride)
        tiles, work = bs.tile_work(side, tile, 64, stride)
        assert tiles == len(spans) ** 2 and work == (len(spans) * tile) ** 2 and work > side * side


def test_tight_tile_keeps_the_count_and_covers_the_image():
    assert bs.tight_tile(512, None) is None
    assert bs.tight_tile(1024, 928, 64, 32) == 544  # (1024 + 64) / 2
    for side, tile, stride in [(1024, 928, 32), (2048, 864, 32), (4096, 480, 32), (2048, 576, 64), (2048, 896, 64)]:
        tight = bs.tight_tile(side, tile, 64, stride)
        n = len(tile_spans(side, tile, 64, stride=stride))
        spans = tile_spans(side, tight, bs.effective_overlap(tight, 64, stride), stride=stride)
        assert tight % stride == 0 and tight <= tile and len(spans) == n
        assert spans[0][0] == 0 and spans[-1][1] == side
        assert all(a[1] - b[0] >= 64 for a, b in zip(spans, spans[1:]))
        if tight - stride >= 2 * 64:  # one stride smaller needs more tiles
            assert len(tile_spans(side, tight - stride, 64, stride=stride)) > n


def _child(tile, seconds, peak_mib, **extra):
    return {"multiple": 32, "tile": tile, "planned_tiles": extra.pop("planned_tiles", 1 if tile is None else 4),
            "seconds": seconds, "cpu_seconds": [s * 0.9 for s in seconds], "peak_bytes": peak_mib * MIB,
            "network_peak_bytes": peak_mib * MIB // 2, "estimated_bytes": 100 * MIB, "plan_seconds": 2.0, **extra}


def test_side_entry_row_and_budget_check():
    row = bs.side_entry(1024, _child(928, [4.0, 2.0, 3.0], 600), 512 * MIB)
    assert row["side"] == 1024 and row["pixels"] == 1024**2 and row["tiles"] == 4 and row["tile"] == 928
    assert row["seconds"] == 3.0 and row["s_per_mpix"] == pytest.approx(3.0 / 1.048576)
    assert row["cpu_seconds"] == pytest.approx(2.7) and row["repeats"] == 3
    assert row["peak_mb"] == 600 and row["budget_mb"] == 512 and row["under_budget"] is False
    assert row["peak_over_budget"] == pytest.approx(600 / 512) and row["network_peak_mb"] == 300
    assert row["work_ratio"] == pytest.approx(3.285, abs=1e-3) and row["tight_tile"] == 544
    assert row["s_per_work_mpix"] == pytest.approx(3.0 / (4 * 928**2 / 1e6))
    assert "planned_tiles" not in row  # agrees with the spans actually run
    whole = bs.side_entry(512, _child(None, [1.0], 100), 512 * MIB)
    assert whole["tiles"] == 1 and whole["tile"] is None and whole["under_budget"] is True
    assert whole["work_ratio"] == 1.0 and whole["tight_tile"] is None
    err = bs.side_entry(4096, {"error": "does not fit", "required_mb": 4807.0, "plan_seconds": 1.0}, 512 * MIB)
    assert err == {"side": 4096, "pixels": 4096**2, "budget_mb": 512.0, "error": "does not fit",
                   "required_mb": 4807.0, "plan_seconds": 1.0}


def test_side_entry_records_the_merge_plan():
    row = bs.side_entry(2048, _child(576, [70.0], 1500, planned_tiles=16, largest_tile=576, merge_rows=700,
                                     merge_bytes=1000 * MIB), 1792 * MIB)
    assert row["merge_rows"] == 700 and row["merge_estimated_mb"] == 1000 and row["largest_tile"] == 576
    assert row["tight_tile"] == row["tile"] == 576 and row["under_budget"] is True
    old = bs.side_entry(1024, _child(928, [4.0], 600), 512 * MIB)  # a child of the old schema
    assert old["merge_rows"] is None and old["merge_estimated_mb"] == 0 and old["largest_tile"] is None


def test_method_summary_slopes_and_budget():
    rows = [bs.side_entry(s, _child(None if s == 512 else 480, [1e-6 * s * s], 50), 512 * MIB)
            for s in (512, 1024, 2048)]
    rows.append(bs.side_entry(4096, {"error": "x"}, 512 * MIB))
    summary = bs.method_summary(rows)
    assert summary["loglog_slope"] == pytest.approx(1.0) and summary["loglog_slope_cpu"] == pytest.approx(1.0)
    assert summary["loglog_slope_work"] < 1.0  # tiled sides process more pixels than they have
    assert summary["loglog_slope_tiled"] == pytest.approx(1.0)  # 1024 and 2048
    assert summary["all_under_budget"] is True and summary["max_peak_over_budget"] == pytest.approx(50 / 512)
    empty = bs.method_summary([rows[-1]])
    assert empty["loglog_slope"] is None and empty["all_under_budget"] is None


def test_parse_methods():
    assert bs.parse_methods(None) == bs.DEFAULT_METHODS
    assert bs.parse_methods(["singlehdr=2GiB", "le2023_debevec", "cfnet"]) == {
        "singlehdr": "2GiB", "le2023_debevec": bs.DEFAULT_METHODS["le2023_debevec"], "cfnet": "1536MiB"}
