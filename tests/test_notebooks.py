"""The analysis notebooks, executed on a small ``demo_out`` layout written in the test.

Jupyter is an optional extra of hdrlab (``pip install -e '.[notebook]'``), so the notebooks are
executed WITHOUT a kernel: the ``.ipynb`` JSON is parsed with :mod:`json` and the source of every
code cell is ``exec``-uted in order in one shared namespace. That runs the notebook's code exactly,
cell by cell, as a kernel would (no magics are used; outside a kernel the notebooks print their
Markdown and figure paths instead of displaying them). Parameters reach the notebooks through the
environment variables their parameter cell reads; here only ``HDRLAB_DEMO_DIR`` (the folder
``make demo`` writes, ``demo_out/``), ``HDRLAB_TABLE_CSV`` and ``HDRLAB_FIGURE_DIR``, so the
sweep and report folders are found where the demo leaves them.

The demo folder is built small and fast:

* ``sweep/``: format-exact fake run folders (``tests/test_compare.py``: LightningCLI
  ``config.yaml``, CSV-logger ``metrics.csv``, ``summary.json``, previews);
* ``report/``: ``hdrlab compare`` of that sweep through the real CLI; the notebook's table CSV must
  equal its ``table.csv`` byte for byte;
* part 1 (``gt/``, ``input/``, ``<method>/*.exr``, ``mertens/*.png``, ``results.json``): procedural
  scenes photographed through a test-split CRF as the demo does (``hdrlab.commands.demo``), the
  single-image outputs from hdrlab's baselines at 48 px, ``results.json`` from the demo's own
  scoring functions.

The committed notebooks carry their outputs (executed with nbconvert on ``make demo``'s folders);
their size and the absence of error outputs are checked too.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import cv2
import pytest
import torch
from test_compare import _grid, lightning_config, write_run

from hdrlab.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("compare_stage_combinations.ipynb", "ablation_analysis.ipynb")
#: the environment variables the parameter cells read besides the three the tests set
OTHER_PARAMS = ("HDRLAB_SWEEP_DIR", "HDRLAB_REPORT_DIR", "HDRLAB_METRIC", "HDRLAB_WANDB_SWEEP", "HDRLAB_REFERENCE",
                "HDRLAB_METHOD", "HDRLAB_FIG_DPI")
MAX_NOTEBOOK_BYTES = 1_500_000


def load_notebook(path: Path) -> dict[str, Any]:
    """Parse an ``.ipynb`` file (plain JSON)."""
    return json.loads(path.read_text())


def execute_notebook(path: Path, *, cells: int | None = None) -> dict[str, Any]:
    """Run the code cells of a notebook in order in one namespace (the first ``cells`` code cells, or
    all); returns that namespace."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    code = [(i, c) for i, c in enumerate(load_notebook(path)["cells"]) if c["cell_type"] == "code"]
    for i, cell in code[:cells]:
        exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102
    return namespace


def assert_labelled(fig: Any) -> None:
    """Every Axes of a matplotlib figure names what its x and y axes show."""
    assert fig.axes
    for ax in fig.axes:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_nbformat4_committed_with_outputs(name: str) -> None:
    path = NOTEBOOKS / name
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{name}: {path.stat().st_size} bytes"
    book = load_notebook(path)
    assert book["nbformat"] == 4 and book["nbformat_minor"] == 5
    assert book["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in book["cells"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) and 1 <= len(i) <= 64 for i in ids)
    kinds = [c["cell_type"] for c in book["cells"]]
    assert kinds[0] == "markdown" and kinds.count("code") >= 5
    code = [c for c in book["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert isinstance(cell["metadata"], dict) and isinstance(cell["source"], list)
        compile("".join(cell["source"]), name, "exec")
        assert not [o for o in cell["outputs"] if o["output_type"] == "error"]
    assert "parameters" in book["cells"][1]["metadata"]["tags"]
    # executed top to bottom in one kernel (nbconvert --execute), figures embedded as PNG
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    pngs = [o for c in code for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(pngs) >= 1


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_the_folders_make_demo_leaves(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HDRLAB_DEMO_DIR", "HDRLAB_TABLE_CSV", "HDRLAB_FIGURE_DIR", *OTHER_PARAMS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(NOTEBOOKS)  # where Jupyter and nbconvert start the kernel
    ns = execute_notebook(NOTEBOOKS / name, cells=1)
    assert ns["ROOT"] == REPO
    assert ns["DEMO_DIR"] == REPO / "demo_out"
    assert ns["SWEEP_DIR"] == REPO / "demo_out" / "sweep"
    assert ns["REPORT_DIR"] == REPO / "demo_out" / "report"
    if name.startswith("compare"):
        assert (ns["REFERENCE"], ns["METHOD"]) == ("inverse_crf", "le2023_debevec_demo")


def _run(name: str, demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Path]:
    table = tmp_path / f"{name}.csv"
    for var in OTHER_PARAMS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HDRLAB_DEMO_DIR", str(demo))
    monkeypatch.setenv("HDRLAB_TABLE_CSV", str(table))
    monkeypatch.setenv("HDRLAB_FIGURE_DIR", str(tmp_path / f"{name}_figures"))
    return execute_notebook(NOTEBOOKS / name), table


@pytest.mark.parametrize("name", NAMES)
def test_missing_demo_folder_says_run_make_demo_first(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="run make demo first"):
        _run(name, tmp_path / "no_demo_here", tmp_path, monkeypatch)
    assert "**run `make demo` first**" in capsys.readouterr().out


def _compare_csv(sweep: Path, out: Path) -> Path:
    assert cli_main(["compare", str(sweep), "--metric", "val/pu21_psnr", "-o", str(out)]) == 0
    return out / "table.csv"


def test_ablation_notebook_table_equals_compare_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    demo = tmp_path / "demo_out"
    sweep, expected = _grid(demo)  # 2 scenes x 2 loss domains x 3 seeds, one crash, one NaN run
    reference = _compare_csv(sweep, demo / "report")
    ns, table = _run("ablation_analysis.ipynb", demo, tmp_path, monkeypatch)
    assert table.read_bytes() == reference.read_bytes()
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        values = expected[(int(row["data.init_args.num_train_scenes"]), row["model.init_args.loss_domain"])]
        assert abs(float(row["val/pu21_psnr_mean"]) - statistics.mean(values)) < 1e-12
    # main effect of the dataset size: the mean over both loss domains of the finished runs
    effects = ns["main_effects"]["data.init_args.num_train_scenes"]
    for scenes in (15, 60):
        pooled = expected[(scenes, "log")] + expected[(scenes, "pu21")]
        mean, std = effects[("val/pu21_psnr", scenes)]
        assert mean == pytest.approx(statistics.mean(pooled), abs=1e-12)
        assert std == pytest.approx(statistics.stdev(pooled), abs=1e-12)
    figures = tmp_path / "ablation_analysis.ipynb_figures"
    for png in ("metric_vs_data.init_args.num_train_scenes.png", "validation_curves.png"):
        img = cv2.imread(str(figures / png))
        assert img is not None and img.shape[0] > 100, png
    assert_labelled(ns["curves_fig"])
    assert [ax.get_ylabel().split("\n")[0] for ax in ns["curves_fig"].axes] == ["validation PU21-PSNR [dB]"]
    printed = capsys.readouterr().out
    assert "## Linear (HDR radiance) outputs: HDR metrics" in printed  # format_domain_tables
    assert "Failed runs (2):" in printed and "W&B API not used" in printed
    assert "grouped table equals" in printed


BRACKET = (-4.0, -2.0, 0.0, 2.0, 4.0)


def write_part_one(demo: Path, *, scenes: int = 3, size: int = 48) -> None:
    """Part 1 of ``hdrlab demo`` at test size: the same folders, file names and scoring. The learned
    model's folder holds the linear iTMO's output (a stand-in: the notebook only reads the EXRs)."""
    from hdrlab import io
    from hdrlab.camera import CRFSampler, synthesize_stack
    from hdrlab.commands.demo import EVAL_METRICS, display_scores
    from hdrlab.commands.evaluate import evaluate_pairs, pair_files
    from hdrlab.data.procedural import render_scene
    from hdrlab.methods.baselines import linear_highlight_expansion
    from hdrlab.models.mergers import MertensMerger

    methods = ("inverse_crf", "linear_itmo", "le2023_debevec_demo")
    folders = {k: demo / k for k in ("gt", "input", *methods, "mertens")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    sampler, mertens = CRFSampler(family="mixed", split="test"), MertensMerger()
    for i in range(scenes):
        hdr = render_scene(i, height=size, width=size)
        crf = sampler.sample(torch.Generator().manual_seed(i))
        stack = synthesize_stack(hdr[None], list(BRACKET), crf)
        ldr = stack.images[:, stack.reference]
        itmo = linear_highlight_expansion(ldr, crf.inverse_lut[None])[0]
        outputs = {"inverse_crf": crf.inverse(ldr)[0], "linear_itmo": itmo, "le2023_debevec_demo": itmo * 1.1 + 0.01}
        io.write_exr(folders["gt"] / f"scene_{i:04d}.exr", hdr)
        io.write_png(folders["input"] / f"scene_{i:04d}.png", ldr[0])
        for method, image in outputs.items():
            io.write_exr(folders[method] / f"scene_{i:04d}.exr", image.clamp_min(0))
        with torch.no_grad():
            io.write_png(folders["mertens"] / f"scene_{i:04d}.png", mertens(stack)[0])
    radiance = {}
    for method in methods:
        pairs = pair_files(folders[method], folders["gt"])
        radiance[method] = {}
        for region in ("all", "clipped"):
            result = evaluate_pairs(pairs, list(EVAL_METRICS), align="median", region=region,
                                    clip_mask_from=folders["input"])
            radiance[method].update(result["mean"])
    display = display_scores(folders, [*methods, "mertens"])
    (demo / "results.json").write_text(json.dumps({"radiance": radiance, "display": display}))


def test_stage_notebook_on_a_demo_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """2 generators x (a linear and a display merger) x 2 seeds, plus one crashed run, in
    ``demo_out/sweep``; part 1 beside it. Then the ablation notebook on the same mixed-domain sweep."""
    from scipy import stats

    from hdrlab.commands.evaluate import evaluate_pairs, pair_files

    demo = tmp_path / "demo_out"
    sweep = demo / "sweep"
    generators = {"Le2023Generator": {"width": 0.125, "ev": [-2.0, 2.0]}, "SingleHDRGenerator": {"width": 0.125}}
    mergers = {"hdrlab.models.mergers.DebevecMerger": ["val/psnr_mu", "val/pu21_psnr"],
               "hdrlab.models.mergers.MertensMerger": ["val/display_psnr", "val/display_ssim"]}
    expected: dict[tuple[str, str], list[float]] = {}
    i = 0
    for g, (gen, gen_args) in enumerate(generators.items()):
        for m, (merger, cols) in enumerate(mergers.items()):
            for seed in range(2):
                run = sweep / "trials" / f"t{i:04d}"
                generator = {"class_path": f"hdrlab.models.generators.{gen}", "init_args": gen_args}
                cfg = lightning_config(seed=seed, run_dir=run, merger=merger, model_args={"generator": generator})
                value = 20.0 + 3 * g + m + 0.25 * seed + 0.125 * i
                status = "failed: RuntimeError: out of memory" if i == 5 else "finished"
                write_run(run, config=cfg, final={c: value for c in cols}, columns=cols, status=status,
                          scenes=("procedural_10000000",))
                if status == "finished":
                    expected.setdefault((gen, merger.rsplit(".", 1)[1]), []).append(value)
                i += 1
    reference = _compare_csv(sweep, demo / "report")
    write_part_one(demo)

    ns, table = _run("compare_stage_combinations.ipynb", demo, tmp_path, monkeypatch)
    assert table.read_bytes() == reference.read_bytes()
    comp = ns["comparison"]
    assert comp.params == ["model.init_args.generator.class_path", "model.init_args.merger.class_path"]
    for row in comp.rows:
        key = (row["model.init_args.generator.class_path"].rsplit(".", 1)[1],
               row["model.init_args.merger.class_path"].rsplit(".", 1)[1])
        score = "val/pu21_psnr" if key[1] == "DebevecMerger" else "val/display_psnr"
        assert row["n"] == len(expected[key])
        assert row[f"{score}_mean"] == pytest.approx(statistics.mean(expected[key]), abs=1e-12)
    figures = tmp_path / "compare_stage_combinations.ipynb_figures"
    heatmap = cv2.imread(str(figures / "stage_heatmap.png"))
    assert heatmap is not None and heatmap.shape[1] > 1.5 * heatmap.shape[0]  # linear | display panels
    printed = capsys.readouterr().out
    assert "| t0000 | Le2023Generator | DebevecMerger | finished | val/pu21_psnr = 20.000 |" in printed
    assert "## Display outputs: display metrics" in printed  # format_domain_tables
    assert "Failed runs (1):" in printed and "t0005" in printed
    assert "grouped table equals" in printed

    # part 1 per scene: the notebook's values are hdrlab eval's, their means part 1's results.json
    assert ns["HAVE_PART1"] and ns["part1_mean_gap"] < 1e-4
    ref, new = ({s: r["pu21_psnr_clipped"] for s, r in evaluate_pairs(
        pair_files(demo / m, demo / "gt"), ["pu21_psnr"], region="clipped", clip_mask_from=demo / "input",
    )["per_image"].items()} for m in ("inverse_crf", "le2023_debevec_demo"))
    diffs = {s: new[s] - ref[s] for s in ref if math.isfinite(ref[s]) and math.isfinite(new[s])}
    assert len(diffs) >= 2
    paired = ns["paired"]["radiance"]
    assert paired["diffs"] == pytest.approx(diffs, abs=1e-9)
    assert list(paired["diffs"].values()) == sorted(paired["diffs"].values())
    n, mean, sd = len(diffs), statistics.mean(diffs.values()), statistics.stdev(diffs.values())
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert paired["n"] == n and paired["mean"] == pytest.approx(mean, abs=1e-9)
    assert paired["ci95"] == pytest.approx((mean - half, mean + half), abs=1e-9)
    assert set(ns["per_scene"]["display"]) >= {"inverse_crf", "le2023_debevec_demo", "mertens"}
    figs = ns["per_scene_figures"]
    assert set(figs) == {"scatter", "paired_difference"}
    for name, fig in figs.items():
        assert_labelled(fig)
        img = cv2.imread(str(figures / f"per_scene_{name}.png"))
        assert img is not None and img.shape[0] > 100, name
    radiance_ax, display_ax = figs["scatter"].axes
    assert "PU21-PSNR [dB]" in radiance_ax.get_xlabel() and "radiance" in radiance_ax.get_xlabel()
    assert "display PSNR [dB]" in display_ax.get_ylabel() and "PU21" not in display_ax.get_ylabel()
    for ax in figs["scatter"].axes:  # the diagonal
        assert any(list(line.get_xdata()) == list(line.get_ydata()) for line in ax.get_lines())
    for ax in figs["paired_difference"].axes:  # the zero line, the mean and its interval
        assert any(set(line.get_ydata()) == {0.0} for line in ax.get_lines())
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(t.startswith("mean") for t in legend) and any(t.startswith("95% CI") for t in legend)
    assert "per-scene section skipped" not in capsys.readouterr().out

    # the ablation notebook on the same sweep: one validation-curve panel per score metric
    ns, _ = _run("ablation_analysis.ipynb", demo, tmp_path, monkeypatch)
    assert_labelled(ns["curves_fig"])
    ylabels = [ax.get_ylabel().split("\n")[0] for ax in ns["curves_fig"].axes]
    assert ylabels == ["validation PU21-PSNR [dB]", "validation display PSNR [dB]"]


def test_stage_notebook_without_part_one_skips_the_per_scene_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    demo = tmp_path / "demo_out"
    run = demo / "sweep" / "trials" / "t0000"
    write_run(run, config=lightning_config(seed=0, run_dir=run), final={"val/pu21_psnr": 20.0, "val/psnr_mu": 15.0})
    ns, table = _run("compare_stage_combinations.ipynb", demo, tmp_path, monkeypatch)
    assert table.is_file() and not ns["HAVE_PART1"] and ns["per_scene_figures"] == {}
    printed = capsys.readouterr().out
    assert "the per-scene section below is skipped. **Run `make demo` first**" in printed
    assert "no hdrlab compare report at" in printed

