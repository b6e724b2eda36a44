"""``hdrlab compare --reference``: per-scene wins against reference runs (:mod:`hdrlab.report.scenes`).

Run folders are written in the test as ``tests/test_compare.py`` builds them (``config.yaml``,
``metrics.csv``, ``summary.json``) plus a ``test_per_sample.csv`` with known values. References:
counts by hand, :mod:`statistics` for mean / sd and the tabulated t quantile t(0.975, 4) = 2.776445.
"""

from __future__ import annotations

import csv
import math
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_compare import lightning_config, write_run

from hdrlab.errors import ConfigError
from hdrlab.report.scenes import compare_scenes, load_references

SCENES = ("s1", "s2", "s3", "s4", "s5")
#: Reference values: pu21_psnr (higher is better), pu21_psnr_clipped, lpips (lower is better).
REF = {"pu21_psnr": [30.0, 31.0, 32.0, 33.0, 34.0], "pu21_psnr_clipped": [20.0, 21.0, 22.0, 23.0, 24.0],
       "lpips": [0.20, 0.30, 0.40, 0.50, 0.60]}
#: Run: pu21_psnr +1, -0.5, 0 (tie), +2, +0.5 -> 3 wins, 1 tie; lpips lower in s1, s2 (wins), higher in s3, tie s4, s5.
RUN = {"pu21_psnr": [31.0, 30.5, 32.0, 35.0, 34.5], "pu21_psnr_clipped": [19.0, 22.0, 22.5, "", 25.0],
       "lpips": [0.10, 0.25, 0.45, 0.50, 0.60]}


def write_per_sample(run_dir: Path, values: dict[str, list], scenes: tuple[str, ...] = SCENES) -> None:
    cols = list(values)
    with (run_dir / "test_per_sample.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "clipped_fraction"] + cols)
        for i, scene in enumerate(scenes):
            w.writerow([scene, 0.1] + [values[c][i] for c in cols])


def make_run(root: Path, name: str, values: dict[str, list] | None, *, seed: int = 0,
             scenes: tuple[str, ...] = SCENES) -> Path:
    run = write_run(root / name, config=lightning_config(seed=seed, run_dir=root / name), final={"val/pu21_psnr": 30.0})
    if values is not None:
        write_per_sample(run, values, scenes)
    return run


def test_wins_ties_direction_and_ci(tmp_path: Path) -> None:
    ref = make_run(tmp_path / "refs", "base", REF)
    run = make_run(tmp_path / "exp", "r1", RUN, seed=1)
    other = make_run(tmp_path / "exp", "r2", None, seed=2)  # no test_per_sample.csv: skipped
    comp = compare_scenes([run, other], load_references({"base": ref}))
    assert [r.label for r in comp.runs] == ["r1"]
    assert comp.metrics[:2] == ["pu21_psnr", "pu21_psnr_clipped"]

    p = comp.paired[("r1", "base", "pu21_psnr")]
    assert (p.wins, p.ties, p.losses, p.n) == (3, 1, 1, 5)
    diffs = [1.0, -0.5, 0.0, 2.0, 0.5]
    assert [d for _, d in p.diffs] == pytest.approx(diffs)
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = 2.776445105 * sd / math.sqrt(5)  # t(0.975, df=4), tabulated
    assert p.mean == pytest.approx(0.6) and p.low == pytest.approx(mean - half, abs=1e-8)
    assert p.high == pytest.approx(mean + half, abs=1e-8)
    assert p.wins_text() == "3 / 5 (1)"

    # an empty value (no clipped pixel in s4) leaves that scene out
    c = comp.paired[("r1", "base", "pu21_psnr_clipped")]
    assert c.n == 4 and (c.wins, c.ties, c.losses) == (3, 0, 1)  # diffs -1, +1, +0.5, +1

    # lower is better: smaller LPIPS wins
    lp = comp.paired[("r1", "base", "lpips")]
    assert (lp.wins, lp.ties, lp.losses) == (2, 2, 1)
    assert lp.mean == pytest.approx(statistics.mean([-0.1, -0.05, 0.05, 0.0, 0.0]))


def test_mismatched_scenes_and_missing_reference_csv(tmp_path: Path) -> None:
    ref = make_run(tmp_path / "refs", "base", REF)
    run = make_run(tmp_path / "exp", "r1", {k: v[:4] + ["1"] for k, v in RUN.items()},
                   scenes=("s1", "s2", "s3", "s4", "s9"))
    with pytest.raises(ConfigError) as err:
        compare_scenes([run], load_references({"base": ref}))
    msg = str(err.value)
    assert "\n" not in msg and "missing in run r1" in msg and "s5" in msg and "missing in reference base" in msg
    assert "s9" in msg
    bare = make_run(tmp_path / "refs", "bare", None)
    with pytest.raises(ConfigError, match="bare=.*test_per_sample.csv does not exist"):
        load_references({"bare": bare})


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self.ids.append(a.get("id", ""))
        if tag == "img":
            self.imgs.append(a["src"])


def test_compare_command_writes_scene_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hdrlab.commands.compare import main

    ref = make_run(tmp_path / "refs", "base", REF)
    untrained = make_run(tmp_path / "refs", "untrained", {k: list(v) for k, v in REF.items()})
    make_run(tmp_path / "exp", "r1", RUN, seed=1)
    make_run(tmp_path / "exp", "r2", {k: list(v) for k, v in REF.items()}, seed=2)
    out = tmp_path / "report"
    assert main([str(tmp_path / "exp"), "-o", str(out), "--no_pdf",
                 "--reference", f"no_hallucination={ref}", "--reference", f"untrained={untrained}"]) == 0
    capsys.readouterr()
    page = (out / "index.html").read_text()
    parser = _Page()
    parser.feed(page)
    assert "scene-wins" in parser.ids and "Per-scene wins against references" in page
    assert "3 / 5 (1)" in page and "0 / 5 (5)" in page  # r1 and r2 (identical to the reference: all ties)
    for src in parser.imgs:
        assert (out / src).is_file(), src
    assert {"scene_diff_pu21_psnr.png", "scene_diff_pu21_psnr_clipped.png"} <= set(parser.imgs)
    rows = list(csv.DictReader((out / "per_scene.csv").open()))
    assert list(rows[0]) == ["scene", "metric", "reference:no_hallucination", "reference:untrained", "r1", "r2"]
    assert len(rows) == 3 * len(SCENES)
    first = next(r for r in rows if r["scene"] == "s4" and r["metric"] == "pu21_psnr")
    assert float(first["r1"]) == 35.0 and float(first["reference:no_hallucination"]) == 33.0
    assert "| r1 | 3 / 5 (1) |" in (out / "per_scene.md").read_text()

    # no run with test_per_sample.csv: the section is left out silently, stale outputs removed
    for csv_file in (tmp_path / "exp").glob("*/test_per_sample.csv"):
        csv_file.unlink()
    assert main([str(tmp_path / "exp"), "-o", str(out), "--no_pdf", "--reference", f"base={ref}"]) == 0
    assert "scene-wins" not in (out / "index.html").read_text()
    assert not (out / "per_scene.csv").exists() and not list(out.glob("scene_diff_*"))
    # a reference without the CSV: one error line
    with pytest.raises(ConfigError, match="does not exist"):
        main([str(tmp_path / "exp"), "-o", str(out), "--reference", f"x={tmp_path / 'exp' / 'r1'}"])
    with pytest.raises(ConfigError, match="NAME=RUN_DIR"):
        main([str(tmp_path / "exp"), "--reference", "nothing"])


def test_log2_ratio_closer_to_zero_wins(tmp_path: Path) -> None:
    ref = make_run(tmp_path / "refs", "base", {"log2_ratio_clipped": [-1.0, 0.5, 0.2, -0.3, 2.0]})
    run = make_run(tmp_path / "exp", "r1", {"log2_ratio_clipped": [0.5, -0.5, -0.4, 0.1, 1.0]})
    p = compare_scenes([run], load_references({"base": ref})).paired[("r1", "base", "log2_ratio_clipped")]
    assert (p.wins, p.ties, p.losses) == (3, 1, 1)  # |0.5|<|-1|, tie, |-0.4|>|0.2|, |0.1|<|-0.3|, 1<2
