"""The report of ``hdrlab compare`` (:mod:`hdrlab.report`, :func:`hdrlab.sweep.compare.write_report`).

Run folders are written in the test in the layout ``hdrlab fit`` produces (as in the demo sweep):
Lightning's CSV logger ``metrics.csv`` with ``train/samples_seen``, ``train/throughput``,
``lr-AdamW`` and the validation columns on separate rows; previews in
:func:`hdrlab.callbacks.run_artifacts.build_panel`'s layout (square tiles, 2-pixel gaps).
References: :mod:`statistics` for mean and sample std, :mod:`html.parser` for the page structure,
a real headless Chromium for the rendering when one is installed.
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from test_compare import lightning_config

from hdrlab.report.curves import curve_specs, read_history
from hdrlab.report.figures import split_panel, stage_panels
from hdrlab.report.tables import (
    best_rows,
    config_differences,
    metric_domain,
    results_tables,
    split_metric,
    table_markdown,
)
from hdrlab.sweep.compare import compare_runs, discover_runs, read_run, write_report

REPO = Path(__file__).resolve().parents[1]
MERGERS = "hdrlab.models.mergers."


def write_fit_run(run_dir: Path, *, config: dict[str, Any], final: dict[str, float], status: str = "finished",
                  scenes: tuple[str, ...] = ("procedural_10000000",), tiles: int = 7, tile: int = 24) -> Path:
    """A run folder as ``hdrlab fit`` writes it: 4 training logs (20 samples each), validation at
    steps 19 and 39 (first values 1.0 lower than ``final``), lr rows, summary, previews."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    val = list(final)
    header = ["epoch", "lr-AdamW", "step", "train/loss", "train/samples_seen", "train/throughput"] + val
    blank = [""] * len(val)
    rows = []
    for k, step in enumerate((9, 19, 29, 39)):
        rows.append(["", "0.0001", str(step), "", "", ""] + blank)
        rows.append([str(k // 2), "", str(step), f"{1.0 - 0.1 * k:.3f}", f"{20.0 * (k + 1)}", f"{1.0 + k:.3f}"] + blank)
        if step in (19, 39):
            rows.append([str(k // 2), "", str(step), "", "", ""]
                        + [repr(final[c] - (1.0 if step == 19 else 0.0)) for c in val])
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    summary = {"status": status, "seed": config["seed_everything"], "samples_seen": 80, "metrics": dict(final)}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "previews").mkdir()
    rng = np.random.default_rng(len(str(run_dir)))
    for scene in scenes:
        strip = np.full((tile, tiles * tile + 2 * (tiles - 1), 3), 255, np.uint8)
        for i in range(tiles):
            strip[:, i * (tile + 2): i * (tile + 2) + tile] = rng.integers(0, 255, (tile, tile, 3), dtype=np.uint8)
        cv2.imwrite(str(run_dir / "previews" / f"step0000040_{scene}.png"), strip)
    return run_dir


HDR = ("val/pu21_psnr", "val/pu21_psnr_clipped", "val/psnr_mu", "val/lpips", "val/log2_ratio")
DISPLAY = ("val/display_psnr", "val/display_psnr_clipped", "val/display_ssim")


def mixed_sweep(root: Path, *, wide: bool = False) -> Path:
    """Debevec (log: 2 seeds, pu21: 1 seed) with HDR metrics; Mertens (1 seed) and CFNet (2 seeds)
    with display metrics; one crashed CFNet run. ``wide``: the Debevec runs log every HDR metric
    on every region too (a 25-column table)."""
    sweep = root / "sweep"
    plan = [  # merger, loss_domain, seed, metrics
        ("DebevecMerger", "log", 0, dict(zip(HDR, (20.0, 10.0, 15.0, 0.3, -0.5)))),
        ("DebevecMerger", "log", 1, dict(zip(HDR, (21.0, 11.0, 16.0, 0.2, -0.3)))),
        ("DebevecMerger", "pu21", 0, dict(zip(HDR, (25.0, 9.0, 14.0, 0.4, 0.1)))),
        ("MertensMerger", "log", 0, dict(zip(DISPLAY, (15.0, 12.0, 0.6)))),
        ("CFNetMerger", "log", 0, dict(zip(DISPLAY, (17.0, 13.0, 0.7)))),
        ("CFNetMerger", "log", 1, dict(zip(DISPLAY, (18.0, 13.5, 0.72)))),
        ("CFNetMerger", "log", 2, dict(zip(DISPLAY, (99.0, 99.0, 0.99)))),
    ]
    for i, (merger, domain, seed, metrics) in enumerate(plan):
        run = sweep / "trials" / f"t{i:04d}"
        if wide and "pu21_psnr" in str(metrics):
            metrics = {**{f"val/{m}{r}": 0.5 + 0.1 * seed for m in ("ms_ssim", "cvvdp", "psnr_l", "pu21_ssim")
                          for r in ("", "_clipped", "_unclipped")}, **metrics}
        cfg = lightning_config(seed=seed, run_dir=run, merger=MERGERS + merger, model_args={"loss_domain": domain})
        write_fit_run(run, config=cfg, final=metrics, status="failed: RuntimeError: boom" if i == 6 else "finished",
                      scenes=("procedural_10000000", "procedural_10000001"))
    return sweep


def _comparison(sweep: Path):
    return compare_runs([read_run(p) for p in discover_runs([sweep])], metric="val/pu21_psnr")


def test_metric_names_domains_and_directions() -> None:
    assert split_metric("val/pu21_psnr_clipped") == ("pu21_psnr", "clipped")
    assert split_metric("val/display_ssim_unclipped") == ("display_ssim", "unclipped")
    assert split_metric("val/psnr_mu") == ("psnr_mu", "all")
    assert [metric_domain(m) for m in ("val/pu21_psnr", "val/display_psnr_clipped", "val/loss")] == \
        ["linear", "display", "other"]
    assert best_rows([20.0, 25.0, float("nan")], "max") == {1}
    assert best_rows([0.3, 0.2, 0.2], "min") == {1, 2}  # ties all marked
    assert best_rows([-0.4, 0.1], "zero") == {1}
    assert best_rows([1.0], "max") == set() and best_rows([1.0, 2.0], None) == set()


def test_one_table_per_domain_with_mean_std_only_for_n_above_one(tmp_path: Path) -> None:
    comp = _comparison(mixed_sweep(tmp_path))
    tables = {t.domain: t for t in results_tables(comp)}
    assert list(tables) == ["linear", "display"]
    lin, disp = tables["linear"], tables["display"]
    # main metric first, its regions next to it; no display metric in the linear table and vice versa
    assert lin.columns == ["val/pu21_psnr", "val/pu21_psnr_clipped", "val/psnr_mu", "val/lpips", "val/log2_ratio"]
    assert disp.columns == ["val/display_psnr", "val/display_psnr_clipped", "val/display_ssim"]
    assert lin.main_metric == "val/pu21_psnr" and disp.main_metric == "val/display_psnr"
    assert lin.labels == [["log", "DebevecMerger"], ["pu21", "DebevecMerger"]] and lin.n == [2, 1]
    assert disp.labels == [["log", "CFNetMerger"], ["log", "MertensMerger"]] and disp.n == [2, 1]  # crash left out
    log_row, pu21_row = lin.cells
    assert log_row["val/pu21_psnr"].mean == pytest.approx(20.5)
    assert log_row["val/pu21_psnr"].std == pytest.approx(statistics.stdev([20.0, 21.0]), abs=1e-12)
    assert log_row["val/pu21_psnr"].text() == f"20.500 ± {statistics.stdev([20.0, 21.0]):.3f}"
    assert pu21_row["val/pu21_psnr"].text() == "25.000"  # n = 1: the value, no ± nan
    # best per column by direction: PSNR higher, LPIPS lower, log2 ratio closest to 0
    assert lin.best["val/pu21_psnr"] == {1} and lin.best["val/pu21_psnr_clipped"] == {0}
    assert lin.best["val/lpips"] == {0} and lin.best["val/log2_ratio"] == {1}
    md = table_markdown(lin)
    assert md.splitlines()[0] == ("| model.loss_domain | model.merger | n | PU21-PSNR ↑ | PU21-PSNR (clipped) ↑ "
                                  "| PSNR-μ ↑ | LPIPS ↓ | log2 ratio →0 |")
    assert "| pu21 | DebevecMerger | 1 | **25.000** | 9.000 |" in md
    assert "mean ± sample std" in lin.note()
    single = compare_runs([read_run(tmp_path / "sweep" / "trials" / "t0000")])
    (only,) = results_tables(single)
    assert only.n == [1] and "n = 1 for every row" in only.note() and "±" not in table_markdown(only)


def test_config_differences_keep_seeds_and_drop_run_identity(tmp_path: Path) -> None:
    comp = _comparison(mixed_sweep(tmp_path))
    diff = config_differences(comp.records)
    assert "seed_everything" in diff.keys and "model.init_args.merger.class_path" in diff.keys
    assert "model.init_args.loss_domain" in diff.keys
    assert not {"run_dir", "run_id"} & set(diff.keys)
    assert "trainer.max_steps" not in diff.keys  # equal everywhere
    # a swapped merger's own init args: present in some runs only
    i = diff.keys.index("model.init_args.merger.init_args.sigma")
    assert diff.present[i] == [False, False, False, True, False, False, False]


def test_curves_are_against_samples_seen_and_never_mix_domains(tmp_path: Path) -> None:
    sweep = mixed_sweep(tmp_path)
    hist = read_history(sweep / "trials" / "t0000" / "metrics.csv")
    assert hist.x_is_samples
    assert hist.series["val/pu21_psnr"] == [(40.0, 19.0), (80.0, 20.0)]  # validation rows at steps 19 and 39
    assert [x for x, _ in hist.series["lr-AdamW"]] == [20.0, 40.0, 60.0, 80.0]
    assert [x for x, _ in hist.series["train/throughput"]] == [20.0, 40.0, 60.0, 80.0]
    no_samples = tmp_path / "plain.csv"
    no_samples.write_text("epoch,step,train/loss,val/a\n0,4,0.5,\n0,9,,1.5\n")
    plain = read_history(no_samples)
    assert not plain.x_is_samples and plain.series == {"train/loss": [(4.0, 0.5)], "val/a": [(9.0, 1.5)]}
    runs = [("debevec", 0, False, hist), ("mertens", 1, False, read_history(sweep / "trials" / "t0003" / "metrics.csv"))]
    specs = {s.slug: s for s in curve_specs(runs, val_metrics=[("val/pu21_psnr", "t1"), ("val/display_psnr", "t2")])}
    assert set(specs) == {"train_loss", "val_pu21_psnr", "val_display_psnr", "learning_rate", "throughput"}
    assert [line.label for line in specs["val_pu21_psnr"].lines] == ["debevec"]
    assert [line.label for line in specs["val_display_psnr"].lines] == ["mertens"]
    assert all(s.x_is_samples for s in specs.values())
    assert not specs["train_loss"].log_y  # losses of one scale: linear axis
    big = tmp_path / "big.csv"
    big.write_text("epoch,step,train/loss,train/samples_seen\n0,4,40.0,10\n0,9,30.0,20\n")
    wide = {s.slug: s for s in curve_specs(runs + [("stagewise", 2, False, read_history(big))], val_metrics=[])}
    assert wide["train_loss"].log_y  # 30-40 beside the mixed sweep's small losses: log axis


def test_heatmap_only_with_several_generators_and_several_mergers(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    i = 0
    for gen in ("Le2023Generator", "SingleHDRGenerator"):
        for merger in ("MertensMerger", "CFNetMerger"):
            for seed in range(2):
                run = sweep / "trials" / f"t{i:04d}"
                generator = {"class_path": f"hdrlab.models.generators.{gen}", "init_args": {"width": 0.125}}
                cfg = lightning_config(seed=seed, run_dir=run, merger=MERGERS + merger, model_args={"generator": generator})
                write_fit_run(run, config=cfg, final={"val/display_psnr": 20.0 + i, "val/display_ssim": 0.5})
                i += 1
    comp = _comparison(sweep)
    (panel,) = stage_panels(comp)
    assert panel.is_grid and panel.domain == "display" and panel.metric == "val/display_psnr"
    assert panel.count == [[2, 2], [2, 2]]
    written = write_report(comp, tmp_path / "report")
    names = [p.name for p in written["plots"]]
    assert "stage_heatmap.png" in names and "main_metric_bars.png" not in names
    heat = next(f for f in written["figures"] if f.path.name == "stage_heatmap.png")
    assert "val/display_psnr" in heat.title and "pu21" not in heat.title
    # one generator only: bars, not a heatmap (written into the same folder: the old heatmap is removed)
    one = _comparison(mixed_sweep(tmp_path / "one"))
    assert not any(p.is_grid for p in stage_panels(one))
    written = write_report(one, tmp_path / "report", pdf=False)
    names = [p.name for p in written["plots"]]
    assert "main_metric_bars.png" in names and "stage_heatmap.png" not in names and written["pdfs"] == []
    assert not list((tmp_path / "report").glob("stage_heatmap.*")) and not list((tmp_path / "report").glob("*.pdf"))
    bars = next(f for f in written["figures"] if f.path.name == "main_metric_bars.png")
    assert "linear: val/pu21_psnr" in bars.title and "display: val/display_psnr" in bars.title


def test_preview_grid_is_scenes_by_groups_with_equal_tiles(tmp_path: Path) -> None:
    strip = np.zeros((24, 7 * 24 + 12, 3))
    tiles = split_panel(strip)
    assert tiles is not None and len(tiles) == 7 and all(t.shape == (24, 24, 3) for t in tiles)
    assert split_panel(np.zeros((16, 48, 3))) is None  # not build_panel's layout
    comp = _comparison(mixed_sweep(tmp_path))
    written = write_report(comp, tmp_path / "report", pdf=False)
    grid = cv2.imread(str(tmp_path / "report" / "preview_grid.png"))
    # 2 scenes (rows) x (input, reference, 4 groups) columns of 1.9-inch tiles at 100 dpi
    assert grid.shape[0] == pytest.approx(2 * 190 + 90, abs=2) and grid.shape[1] == pytest.approx(6 * 190 + 60, abs=2)
    fig = next(f for f in written["figures"] if f.path.name == "preview_grid.png")
    assert "rows = scenes" in fig.title


class ReportParser(HTMLParser):
    """Collects images, links, figures (with captions) and tables (header rows, body cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.figures: list[dict[str, Any]] = []
        self.tables: list[dict[str, Any]] = []
        self.styles = 0
        self.title = ""
        self._stack: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._stack.append(tag)
        if tag == "img":
            self.images.append(a)
            if self.figures and "figure" in self._stack:
                self.figures[-1]["images"].append(a)
            self._stack.pop()  # void element
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "figure":
            self.figures.append({"caption": "", "images": []})
        elif tag == "table":
            self.tables.append({"class": a.get("class", ""), "head": [], "body": []})
        elif tag == "tr" and self.tables:
            part = "head" if "thead" in self._stack else "body"
            self.tables[-1][part].append([])
        elif tag in ("td", "th", "figcaption", "title"):
            self._text = []
            if tag in ("td", "th") and self.tables:
                part = "head" if "thead" in self._stack else "body"
                self.tables[-1][part][-1].append({"tag": tag, "colspan": int(a.get("colspan") or 1), "text": ""})
        elif tag == "style":
            self.styles += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "figcaption", "title") and self._text is not None:
            text = "".join(self._text).strip()
            if tag == "figcaption":
                self.figures[-1]["caption"] = text
            elif tag == "title":
                self.title = text
            else:
                part = "head" if "thead" in self._stack else "body"
                self.tables[-1][part][-1][-1]["text"] = text
            self._text = None
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def validate_report_html(index: Path) -> ReportParser:
    """Structural checks of a report page; returns the parsed page."""
    parser = ReportParser()
    parser.feed(index.read_text())
    assert parser.title and parser.styles == 1  # embedded stylesheet
    assert parser.images, "no figure"
    for img in parser.images:
        assert (index.parent / img["src"]).is_file(), img["src"]
        assert img.get("alt"), f"{img['src']} has no alt text"
    for href in parser.links:
        if not href.startswith("#"):
            assert (index.parent / html.unescape(href)).is_file(), href
    for fig in parser.figures:
        assert fig["caption"], "a figure without a title"
        assert len(fig["images"]) == 1
    assert len(parser.figures) == len(parser.images)
    assert parser.tables
    for table in parser.tables:
        assert table["head"] and all(c["tag"] == "th" for row in table["head"] for c in row), "no header row"
        assert table["body"], "a table without rows"
        width = {len(row) for row in table["body"]}
        assert len(width) == 1, "ragged table"
        for j in range(width.pop()):
            assert any(row[j]["text"] not in ("", "—") for row in table["body"]), f"column {j} is empty"
    return parser


def test_report_html_is_structurally_valid(tmp_path: Path) -> None:
    comp = _comparison(mixed_sweep(tmp_path))
    written = write_report(comp, tmp_path / "report")
    page = validate_report_html(written["html"])
    results = [t for t in page.tables if "results" in t["class"]]
    assert len(results) == 2
    lin, disp = results
    lin_head = " ".join(c["text"] for row in lin["head"] for c in row)
    disp_head = " ".join(c["text"] for row in disp["head"] for c in row)
    assert "PU21-PSNR" in lin_head and "display" not in lin_head
    assert "display PSNR" in disp_head and "PU21" not in disp_head
    assert lin["head"][1][0]["text"] == "all" and lin["head"][1][1]["text"] == "clipped"  # region sub-header
    for table in results:  # "±" only in rows with n > 1
        n_col = [c["text"] for c in table["head"][0]].index("n")
        for row in table["body"]:
            assert ("±" in " ".join(c["text"] for c in row[n_col + 1:])) == (row[n_col]["text"] != "1")
    captions = [f["caption"] for f in page.figures]
    assert any("Validation val/pu21_psnr" in c for c in captions)
    assert any("Validation val/display_psnr" in c for c in captions)
    assert any(c.startswith("Training loss") for c in captions) and any(c.startswith("Learning rate") for c in captions)
    assert any("throughput" in c for c in captions)
    config = next(t for t in page.tables if "config" in t["class"])
    keys = [row[0]["text"] for row in config["body"]]
    assert "seed_everything" in keys and "run_dir" not in keys
    text = written["html"].read_text()
    assert "overflow-x: auto" in text and "t0006" in text  # scroll wrapper; the failed run is listed
    for pdf in written["pdfs"]:
        assert pdf.read_bytes().startswith(b"%PDF")
    md = written["md"].read_text()
    assert "## Linear (HDR radiance) outputs" in md and "## Display outputs" in md and "## Config differences" in md


def test_compare_stays_fast_without_torch(tmp_path: Path) -> None:
    """The report reads a run's output domain from its metrics: no method import (torch: ~4 s)."""
    sweep = mixed_sweep(tmp_path)
    code = ("import sys; from hdrlab.cli import main; "
            f"assert main(['compare', {str(sweep)!r}, '-o', {str(tmp_path / 'r')!r}]) == 0; "
            "print('TORCH', 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TORCH False" in proc.stdout
    assert "| model.loss_domain | model.merger | n | PU21-PSNR ↑" in proc.stdout


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no `chromium` or `chromium-browser` binary on PATH: the headless rendering check needs one "
                    "(the structural HTML checks run regardless)")
    comp = _comparison(mixed_sweep(tmp_path, wide=True))  # a linear table wider than the page
    assert len(results_tables(comp)[0].columns) > 15
    index = write_report(comp, tmp_path / "report", pdf=False)["html"]
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}", "--window-size=1280,2000",
         "--hide-scrollbars", index.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2000, 1280)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert gray.std() > 10 and (gray < 128).mean() > 0.01  # not blank: text, tables and figures drawn
    # the page does not overflow horizontally (the wide table scrolls inside its wrapper): the right
    # 40 px, beyond the centred 1160 px column, stay white
    assert (gray[:, -40:] > 245).mean() > 0.99


def test_figure_labels_break_at_separators_not_inside_names() -> None:
    from hdrlab.report.figures import _wrap

    assert _wrap("baseline_inverse_crf/baseline", 28) == "baseline_inverse_crf/\nbaseline"
    assert _wrap("le2023_debevec/saturation_bound", 28) == "le2023_debevec/\nsaturation_bound"
    assert _wrap("a_rather_long_name_without_slashes", 12) == "a_rather_\nlong_name_\nwithout_\nslashes"
    assert _wrap("x" * 25, 10) == "x" * 10 + "\n" + "x" * 10 + "\n" + "x" * 5
    assert _wrap("short", 28) == "short"
