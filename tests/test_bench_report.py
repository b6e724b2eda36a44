"""benchmarks/common.py ratio/median helpers and benchmarks/report.py table rendering (no timing)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import report  # noqa: E402


def test_median_and_ratio():
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    assert common.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        common.median([])
    assert common.ratio(3.0, 2.0) == 1.5
    assert common.ratio(1.0, 0.0) == math.inf
    assert math.isnan(common.ratio(0.0, 0.0))
    # ratio of medians: one slow outlier run does not move it
    assert common.median_ratio([1.0, 1.1, 9.0], [1.0, 1.0, 1.0]) == pytest.approx(1.1)


def test_write_result_roundtrip(tmp_path):
    path = common.write_result("x", {"a": 1.5}, directory=tmp_path / "results")
    assert path == tmp_path / "results" / "x.json"
    assert json.loads(path.read_text()) == {"a": 1.5}


def test_row_goal_and_formatting():
    assert report.Row("b", "c", 1.04, 1.05, "<=").met is True
    assert report.Row("b", "c", 1.06, 1.05, "<=").met is False
    assert report.Row("b", "c", 0.4, 0.5, ">=", unit="%").met is False
    assert report.Row("b", "c", 2.0, None).met is None
    assert report.fmt(0.456, "%") == "46%"
    assert report.fmt(1.2345, "x") == "1.23x"
    assert report.fmt(float("nan"), "x") == "n/a"


def test_render_table():
    rows = [report.Row("Overhead", "singlehdr", 1.10, 1.05, "<="),
            report.Row("Util", "cfnet (fp32)", 0.6, 0.5, ">=", unit="%"),
            report.Row("Info", "x", 2.0, None)]
    table = report.render_table(rows, machine="CPU, 2 cores")
    lines = table.splitlines()
    assert lines[0].startswith("Measured on CPU, 2 cores")
    assert "| Overhead | singlehdr | 1.10x | <= 1.05x | **no** |" in lines
    assert "| Util | cfnet (fp32) | 60% | >= 50% | yes |" in lines
    assert "| Info | x | 2.00x |  |  |" in lines


def test_replace_between_markers_and_insert():
    text = f"# T\n\n## Performance\n\n{report.START}\nold\n{report.END}\n\n## Documentation\n"
    out = report.replace_between_markers(text, "new\n")
    assert f"{report.START}\nnew\n{report.END}" in out and "old" not in out
    assert report.replace_between_markers(out, "new\n") == out  # idempotent
    bare = "# T\n\n## Set-up\n\n```bash\nmake demo\nmake test\n```\n\n## Documentation\n\ndocs\n"
    inserted = report.replace_between_markers(bare, "table\n")
    assert inserted.startswith("# T\n\n## Set-up\n\n```bash\nmake demo\nmake test\n```")
    assert inserted.index("## Performance") < inserted.index("## Documentation")


def test_collect_reads_present_files_and_skips_missing(tmp_path):
    common.write_result("lightning_overhead", {"machine": "M", "methods": {
        "singlehdr": {"ratio_step": 1.2, "ratio_with_data": 1.4}}}, directory=tmp_path)
    common.write_result("data", {"methods": {"cfnet": {"ratio": 7.0}, "hdrcnn": {"ratio": 1.8, "ratio_cached": 9.0}}},
                        directory=tmp_path)
    common.write_result("mergers", {"debevec": {"ratio": 0.8, "hdrlab_cpu_s": 1.0, "opencv_cpu_s": 2.0},
                                    "debevec_known_crf": {"ratio": 1.2, "max_rel_diff_vs_opencv": 7e-7},
                                    "mertens": {"ratio": 1.6, "max_abs_diff_vs_opencv": 2e-5}, "n": 3},
                        directory=tmp_path)
    common.write_result("two_stage_merge", {"methods": {"le2023_debevec": {"share": 0.086}}}, directory=tmp_path)
    common.write_result("scaling", {"methods": {"singlehdr": {
        "budget": "1536MiB", "loglog_slope": 1.02, "max_peak_over_budget": 0.63,
        "sides": [{"side": 512, "seconds": 1.0}, {"side": 4096, "seconds": 60.0}, {"side": 8192, "error": "x"}]}}},
        directory=tmp_path)
    rows, machine = report.collect(tmp_path)
    assert machine == "M"
    cases = {(r.benchmark.split(" ")[0], r.case): r.measured for r in rows}
    assert cases[("Lightning", "singlehdr")] in (1.2, 1.4)
    data = {(r.benchmark, r.case): r for r in rows if r.benchmark.startswith("Synthesis")}
    assert data[("Synthesis / consumption (samples/s), first epoch", "cfnet")].measured == 7.0  # no cached rate
    assert data[("Synthesis / consumption (samples/s), first epoch", "hdrcnn (scenes cached: 9.00x)")].met is False
    merges = {(r.benchmark, r.case): r for r in rows if r.benchmark.startswith(("Merge", "Mertens"))}
    assert merges[("Merge wall time (hdrlab / OpenCV)", "debevec (response recovered)")].met is True  # 0.8 <= 1.0
    assert merges[("Merge wall time (hdrlab / OpenCV)", "debevec (known response)")].met is False  # 1.2 > 1.0
    assert merges[("Merge wall time (hdrlab / OpenCV)", "mertens")].met is False  # 1.6 > 1.5
    assert merges[("Merge CPU time (hdrlab / OpenCV)", "debevec (response recovered)")].measured == 0.5
    known = [r for r in rows if r.benchmark.startswith("Debevec (known response) max")]
    assert len(known) == 1 and known[0].met is True
    share = [r for r in rows if r.benchmark.startswith("Merger share")]
    assert [(r.case, r.measured, r.unit, r.goal) for r in share] == [("le2023_debevec", 0.086, "%", None)]
    scaling = {r.benchmark: r for r in rows if r.benchmark.startswith("Reconstruct")}
    slope = scaling["Reconstruct time vs pixels (log-log slope)"]
    assert slope.case == "singlehdr (512-4096 px, 1536MiB)" and slope.met is True
    assert scaling["Reconstruct peak memory / budget (largest over sides)"].met is True
    assert merges[("Mertens max abs difference from OpenCV (1024x768)", "every pixel")].met is True
    assert not any(r.benchmark.startswith("FLOP") for r in rows)  # no flops.json: no rows
    rows, _ = report.collect(tmp_path / "missing")
    assert rows == []


def test_flops_rows_add_the_widest_cpu_sized_width():
    import bench_flops

    # width 1/8 counts scale by width^2: 1e9 at 1/8 -> 6.4e10 at 1, 1.6e10 at 1/2, 4e9 at 1/4
    assert bench_flops.wide_width(1e9, 4e10) == 0.5
    assert bench_flops.wide_width(1e9, 1e11) == 1.0
    assert bench_flops.wide_width(1e10, 4e10) == 0.25  # 4e10 at 1/4: within the cap
    assert bench_flops.wide_width(2e10, 4e10) is None  # 8e10 at 1/4
    rows = report.rows_flops({"methods": {
        "m": {"conv_heavy": True, "utilisation": {"fp32": 0.1, "bf16": 0.2},
              "wide": {"width": 0.5, "utilisation": {"fp32": 0.6, "channels_last": 0.7}}},
        "tiny_only": {"conv_heavy": True, "utilisation": {"fp32": 0.7}}}})
    cases = {(r.benchmark, r.case): r for r in rows}
    assert cases[("FLOP utilisation (step FLOP/s / fp32 GEMM rate)", "m (opt-in: bf16 20%)")].met is False
    wide = cases[("FLOP utilisation, widest CPU-sized width", "m at width 0.5 (opt-in: channels_last 70%)")]
    assert wide.measured == 0.6 and wide.met is True
    assert not any(r.case.startswith("tiny_only at") for r in rows)
